//! `GET /api/documents/{id}`: one stored document of the user's, for a person to read what a
//! citation, a search hit or a quote points at, with the link that opens it at its provider.

use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody};
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use common::DocumentId;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/documents/{id}", get(get_document))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DocumentView {
    pub id: Uuid,
    pub source: String,
    pub kind: String,
    pub external_id: String,
    pub title: String,
    pub body: String,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    pub occurred_at: Option<DateTime<Utc>>,
    /// Where it opens at its provider (Gmail thread, Calendar event, HubSpot record), if known.
    pub link: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/documents/{id}",
    tag = "search",
    params(("id" = Uuid, Path, description = "The document (as in search hits, citations and insight items)")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "The document as stored", body = DocumentView),
        (status = 401, body = ErrorBody),
        (status = 404, description = "No such document of yours", body = ErrorBody),
    )
)]
pub async fn get_document(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<Uuid>,
) -> Result<Json<DocumentView>, ApiError> {
    let doc = db::documents::get(&state.db, DocumentId(id))
        .await?
        // Another user's document is not there for this one.
        .filter(|d| d.user_id == user.0)
        .ok_or_else(|| ApiError::NotFound("no such document".into()))?;
    let portal = if doc.source == "hubspot" {
        db::connections::hubspot_portal(&state.db, user).await?
    } else {
        None
    };
    let link = db::documents::link(&doc, portal.as_deref());
    Ok(Json(DocumentView {
        id: doc.id,
        source: doc.source,
        kind: doc.kind,
        external_id: doc.external_id,
        title: doc.title,
        body: doc.body,
        metadata: doc.metadata,
        occurred_at: doc.occurred_at.map(|d| d.with_timezone(&Utc)),
        link,
    }))
}
