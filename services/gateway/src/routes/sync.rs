//! On-demand sync: `POST /api/sync/{resource}` queues a sync command for ingest.

use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use common::events::Resource;
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
    let scope = actions::sync::scope(
        resource,
        actions::sync::Narrowing {
            channel: request.channel,
            object_type: request.object_type,
            object_id: request.object_id,
        },
    )?;
    let request_id =
        actions::sync::request(&state.db, &state.bus, user, resource, scope, "manual").await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(SyncQueued {
            resource: name,
            request_id,
        }),
    ))
}
