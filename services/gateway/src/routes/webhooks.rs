//! Webhook intake. `POST /api/webhooks/generic/{endpoint}` takes deliveries signed per the
//! Standard Webhooks specification with that endpoint's secret (the endpoint belongs to one
//! user and source, so exactly one secret is tried). Anything unsigned, tampered, stale or
//! for an unknown endpoint gets 401 and publishes nothing.

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::signatures::{self, SignatureError};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use common::events::{Envelope, Event, WebhookReceived};
use common::intake;
use common::normalize::webhook_to_document;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/webhooks/generic/{endpoint}", post(generic_webhook))
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, SignatureError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .ok_or(SignatureError::MissingHeader(name))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookAccepted {
    /// The delivery's `webhook-id`.
    pub id: String,
    /// This delivery was already accepted (a retry).
    pub duplicate: bool,
}

#[utoipa::path(
    post,
    path = "/api/webhooks/generic/{endpoint}",
    tag = "webhooks",
    params(("endpoint" = Uuid, Path, description = "The endpoint's id, as `ctl webhook create` prints it")),
    request_body(content = Object, description = "Any JSON event; a `data` object with `external_id`, `title`, `body` becomes that document"),
    responses(
        (status = 202, description = "Verified and durably in JetStream", body = WebhookAccepted),
        (status = 400, description = "Body not JSON", body = ErrorBody),
        (status = 401, description = "Unsigned, tampered, unknown or stale: nothing published", body = ErrorBody),
        (status = 422, description = "The document it stands for breaks a limit; `field` names it. Nothing was published", body = ErrorBody),
        (status = 503, description = "JetStream unavailable; the sender should retry", body = ErrorBody),
    )
)]
pub async fn generic_webhook(
    State(state): State<AppState>,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<WebhookAccepted>), ApiError> {
    let id = header(&headers, "webhook-id")?;
    let timestamp = header(&headers, "webhook-timestamp")?;
    let signatures = header(&headers, "webhook-signature")?;
    signatures::check_timestamp(timestamp, chrono::Utc::now().timestamp())?;
    // Unknown and malformed endpoints look the same to the sender.
    let endpoint = Uuid::parse_str(&endpoint).map_err(|_| SignatureError::NoMatch)?;
    let ring = state.providers.as_ref().map(|p| p.ring.as_ref());
    let endpoint = state
        .endpoints
        .get(&state.db, ring, endpoint)
        .await
        .map_err(|e| ApiError::Internal(Box::new(e)))?
        .ok_or(SignatureError::NoMatch)?;
    signatures::standard_webhooks(&endpoint.secret, id, timestamp, &body, signatures)?;
    let (user, source) = (endpoint.user, endpoint.source);

    let payload: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("body is not JSON: {e}")))?;
    let hook = WebhookReceived {
        source,
        webhook_id: id.to_owned(),
        received_at: chrono::Utc::now(),
        payload,
    };
    // Refuse now what ingest could not store, rather than accept it and dead-letter it later.
    let limits = state.limits();
    intake::admit(
        webhook_to_document(&hook, limits.max_body_bytes),
        "body",
        &limits,
    )
    .map_err(ApiError::Invalid)?;
    let envelope = Envelope::new(user, Event::WebhookReceived(hook));
    let published = state
        .bus
        .publish(&envelope)
        .await
        .map_err(ApiError::Unavailable)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(WebhookAccepted {
            id: id.to_owned(),
            duplicate: published.duplicate,
        }),
    ))
}
