//! On-demand sync: `POST /api/sync/{resource}` queues a sync command for ingest.

use super::sign_in::sync_command;
use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use common::events::{Resource, SyncScope};
use db::connections;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/sync/{resource}", post(sync_now))
}

/// Narrows an on-demand sync; empty means everything changed since the last run.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    /// Slack: one channel id.
    pub channel: Option<String>,
    /// HubSpot: `contacts`, `companies`, `deals` or `notes` (with `object_id`).
    pub object_type: Option<String>,
    pub object_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SyncQueued {
    pub resource: String,
    pub request_id: String,
}

#[utoipa::path(
    post,
    path = "/api/sync/{resource}",
    tag = "connections",
    security(("bearer" = []), ("session" = [])),
    params(("resource" = String, Path, description = "`gmail`, `calendar`, `hubspot` or `slack`")),
    request_body(content = Option<SyncRequest>, description = "Optional: one Slack channel or one HubSpot object"),
    responses(
        (status = 202, description = "Sync queued in JetStream", body = SyncQueued),
        (status = 404, description = "Unknown resource or not connected", body = ErrorBody),
        (status = 422, description = "Scope does not fit the resource", body = ErrorBody),
        (status = 503, description = "JetStream unavailable", body = ErrorBody),
    )
)]
pub async fn sync_now(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<SyncQueued>), ApiError> {
    let resource = Resource::parse(&name)
        .ok_or_else(|| ApiError::NotFound(format!("no resource named {name}")))?;
    let request: SyncRequest = if body.iter().all(u8::is_ascii_whitespace) {
        SyncRequest::default()
    } else {
        crate::error::parse_json(&body)?
    };
    let invalid = |field: &str, reason: &str| {
        ApiError::Invalid(common::intake::FieldError::new(
            field.to_owned(),
            reason.to_owned(),
        ))
    };
    let scope = match (resource, request) {
        (
            Resource::Slack,
            SyncRequest {
                channel: Some(channel),
                object_type: None,
                object_id: None,
            },
        ) => SyncScope::SlackChannel { channel },
        (
            Resource::Hubspot,
            SyncRequest {
                channel: None,
                object_type: Some(object_type),
                object_id: Some(id),
            },
        ) => {
            if !["contacts", "companies", "deals", "notes"].contains(&object_type.as_str()) {
                return Err(invalid(
                    "object_type",
                    "must be contacts, companies, deals or notes",
                ));
            }
            // It becomes part of a HubSpot API path: digits only, as HubSpot's ids are.
            if id.is_empty() || id.len() > 20 || !id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid("object_id", "must be a HubSpot object id (digits)"));
            }
            SyncScope::HubspotObject {
                object_type,
                id,
                deleted: false,
            }
        }
        (
            _,
            SyncRequest {
                channel: None,
                object_type: None,
                object_id: None,
            },
        ) => SyncScope::Changes,
        (_, _) => {
            return Err(invalid(
                "body",
                "channel is for slack; object_type with object_id for hubspot",
            ));
        }
    };
    let connected = connections::list(&state.db, user)
        .await?
        .into_iter()
        .any(|c| c.provider == resource.provider() && c.status != "revoked");
    if !connected {
        return Err(ApiError::NotFound(format!(
            "{} is not connected",
            resource.provider()
        )));
    }
    let request_id = uuid::Uuid::new_v4().to_string();
    let command = sync_command(user, resource, "manual", request_id.clone(), scope);
    state
        .bus
        .publish(&command)
        .await
        .map_err(ApiError::Unavailable)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(SyncQueued {
            resource: name,
            request_id,
        }),
    ))
}
