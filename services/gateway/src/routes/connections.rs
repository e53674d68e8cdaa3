//! The user's provider connections: their status and sync progress, and disconnecting.

use super::sign_in::provider;
use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use chrono::Utc;
use common::events::Resource;
use db::connections;
use db::sync_state::{self, ResourceStatus};
use serde::Serialize;
use utoipa::ToSchema;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/connections", get(list_connections))
        .route("/api/connections/{provider}", delete(disconnect))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Connection {
    /// `google`, `hubspot` or `slack`.
    pub provider: String,
    pub account_id: String,
    /// Email, portal domain or workspace name.
    pub account_name: String,
    /// `connected`, `syncing`, `revoked` (connect again) or `error`.
    pub status: String,
    pub scopes: String,
    pub last_sync_at: Option<chrono::DateTime<Utc>>,
    pub last_error: Option<String>,
    pub resources: Vec<ResourceState>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResourceState {
    /// `gmail`, `calendar`, `hubspot` or `slack`.
    pub resource: String,
    /// A run is reading, or a continuation of its pass is queued.
    pub syncing: bool,
    pub last_sync_at: Option<chrono::DateTime<Utc>>,
    pub last_error: Option<String>,
    /// New or changed items stored, over all syncs.
    pub items_synced: i64,
    /// The sync pass under way (absent when none is): present from a pass's first run until
    /// a run finds nothing left to read, across continuations and retries.
    pub progress: Option<SyncProgress>,
}

/// How far a sync pass has come.
#[derive(Debug, Serialize, ToSchema)]
pub struct SyncProgress {
    pub started_at: chrono::DateTime<Utc>,
    /// Items read so far (stored, unchanged, deleted or skipped).
    pub done: i64,
    /// The provider's estimate of all the pass reads, never below `done`: Gmail's
    /// `resultSizeEstimate` and HubSpot's search `total`; `null` for Calendar and Slack,
    /// which give no count.
    pub total: Option<i64>,
}

impl From<ResourceStatus> for ResourceState {
    fn from(r: ResourceStatus) -> Self {
        Self {
            resource: r.resource,
            syncing: r.syncing,
            last_sync_at: r.last_sync_at,
            last_error: r.last_error,
            items_synced: r.items_synced,
            progress: r.pass.map(|p| SyncProgress {
                started_at: p.started_at,
                done: p.done,
                total: p.total,
            }),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Connections {
    pub connections: Vec<Connection>,
}

#[utoipa::path(
    get,
    path = "/api/connections",
    tag = "connections",
    security(("bearer" = []), ("session" = [])),
    responses((status = 200, description = "Each connected provider's status", body = Connections))
)]
pub async fn list_connections(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
) -> Result<Json<Connections>, ApiError> {
    let resources = sync_state::statuses(&state.db, user).await?;
    let connections = connections::list(&state.db, user)
        .await?
        .into_iter()
        .map(|c| {
            let mine: Vec<ResourceState> = resources
                .iter()
                .filter(|r| {
                    Resource::parse(&r.resource).is_some_and(|x| x.provider() == c.provider)
                })
                .cloned()
                .map(ResourceState::from)
                .collect();
            let syncing = mine.iter().any(|r| r.syncing);
            let status = if c.status == "connected" && syncing {
                "syncing".to_owned()
            } else {
                c.status
            };
            let last_sync_at = mine.iter().filter_map(|r| r.last_sync_at).max();
            let last_error = c
                .last_error
                .or_else(|| mine.iter().find_map(|r| r.last_error.clone()));
            Connection {
                provider: c.provider,
                account_id: c.account_id,
                account_name: c.account_name,
                status,
                scopes: c.scopes,
                last_sync_at,
                last_error,
                resources: mine,
            }
        })
        .collect();
    Ok(Json(Connections { connections }))
}

#[utoipa::path(
    delete,
    path = "/api/connections/{provider}",
    tag = "connections",
    security(("bearer" = []), ("session" = [])),
    params(("provider" = String, Path, description = "`google`, `hubspot` or `slack`")),
    responses(
        (status = 204, description = "Push channels stopped and the grant revoked at the provider (best effort: an unreachable provider is logged, not an error); tokens, sync state and channels deleted; indexed data stays"),
        (status = 404, description = "Not connected", body = ErrorBody),
    )
)]
pub async fn disconnect(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let which = provider(&name)?;
    actions::connections::disconnect(
        &state.db,
        state.providers.as_ref(),
        &state.config,
        user,
        which,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
