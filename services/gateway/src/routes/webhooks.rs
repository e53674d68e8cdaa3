//! Webhook intake. `POST /api/webhooks/generic/{endpoint}` takes deliveries signed per the
//! Standard Webhooks specification with that endpoint's secret (the endpoint belongs to one
//! user and source, so exactly one secret is tried). Anything unsigned, tampered, stale or
//! for an unknown endpoint gets 401 and publishes nothing.

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use common::events::{Envelope, Event, WebhookReceived};
use common::intake;
use common::normalize::webhook_to_document;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use utoipa::ToSchema;
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/webhooks/generic/{endpoint}", post(generic_webhook))
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("webhook-timestamp is not a number")]
    BadTimestamp,
    #[error("webhook-timestamp is more than 5 minutes from now")]
    Stale,
    #[error("secret is not valid base64")]
    BadSecret,
    #[error("no signature matches")]
    NoMatch,
}

impl SignatureError {
    fn reason(&self) -> &'static str {
        match self {
            SignatureError::MissingHeader(h) => match *h {
                "webhook-id" => "missing webhook-id header",
                "webhook-timestamp" => "missing webhook-timestamp header",
                _ => "missing webhook-signature header",
            },
            SignatureError::BadTimestamp => "webhook-timestamp is not a number",
            SignatureError::Stale => "webhook-timestamp is more than 5 minutes from now",
            SignatureError::BadSecret | SignatureError::NoMatch => "no signature matches",
        }
    }
}

/// Checks the timestamp window: `timestamp` must be within five minutes of `now`.
pub fn check_timestamp(timestamp: &str, now: i64) -> Result<(), SignatureError> {
    use crate::signatures::{self, SignatureError as Window};
    signatures::check_window(timestamp, now, 1).map_err(|e| match e {
        Window::BadTimestamp => SignatureError::BadTimestamp,
        _ => SignatureError::Stale,
    })
}

/// Verifies a Standard Webhooks signature: base64 HMAC-SHA256 over `{id}.{timestamp}.{body}`
/// with the base64 key after `whsec_`; the header may hold several space-separated `v1,<sig>`.
pub fn verify_signature(
    secret: &str,
    id: &str,
    timestamp: &str,
    body: &[u8],
    signatures: &str,
) -> Result<(), SignatureError> {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .map_err(|_| SignatureError::BadSecret)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| SignatureError::BadSecret)?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    for candidate in signatures.split_whitespace() {
        let Some(("v1", sig)) = candidate.split_once(',') else {
            continue;
        };
        let Ok(sig) = STANDARD.decode(sig) else {
            continue;
        };
        // verify_slice compares in constant time.
        if mac.clone().verify_slice(&sig).is_ok() {
            return Ok(());
        }
    }
    Err(SignatureError::NoMatch)
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
    let reject = |e: SignatureError| ApiError::WebhookRejected(e.reason());
    let id = header(&headers, "webhook-id").map_err(reject)?;
    let timestamp = header(&headers, "webhook-timestamp").map_err(reject)?;
    let signatures = header(&headers, "webhook-signature").map_err(reject)?;
    check_timestamp(timestamp, chrono::Utc::now().timestamp()).map_err(reject)?;
    // Unknown and malformed endpoints look the same to the sender.
    let unknown = ApiError::WebhookRejected("no signature matches");
    let endpoint = Uuid::parse_str(&endpoint).map_err(|_| unknown)?;
    let ring = state.providers.as_ref().map(|p| p.ring.as_ref());
    let endpoint = state
        .endpoints
        .get(&state.db, ring, endpoint)
        .await
        .map_err(|e| ApiError::Internal(Box::new(e)))?
        .ok_or(ApiError::WebhookRejected("no signature matches"))?;
    verify_signature(&endpoint.secret, id, timestamp, &body, signatures).map_err(reject)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    // The test vector published with the Standard Webhooks specification.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: &str = "1614265330";
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn published_test_vector_verifies() {
        assert_eq!(verify_signature(SECRET, ID, TS, BODY, SIG), Ok(()));
        check_timestamp(TS, 1614265330 + 10).unwrap();
    }

    #[test]
    fn one_of_several_signatures_is_enough() {
        let header = format!("v1,bm90IGl0 v2,abc {SIG}");
        assert_eq!(verify_signature(SECRET, ID, TS, BODY, &header), Ok(()));
    }

    #[test]
    fn tampering_anywhere_fails() {
        let tampered_body = br#"{"test": 2432232315}"#;
        assert_eq!(
            verify_signature(SECRET, ID, TS, tampered_body, SIG),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify_signature(SECRET, "msg_other", TS, BODY, SIG),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify_signature(SECRET, ID, "1614265331", BODY, SIG),
            Err(SignatureError::NoMatch)
        );
        let other_secret = "whsec_bm90IHRoZSBzZWNyZXQgYXQgYWxsISE=";
        assert_eq!(
            verify_signature(other_secret, ID, TS, BODY, SIG),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify_signature(SECRET, ID, TS, BODY, "v1,"),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn timestamps_outside_five_minutes_are_stale_both_ways() {
        let ts: i64 = TS.parse().unwrap();
        assert_eq!(check_timestamp(TS, ts + 301), Err(SignatureError::Stale));
        assert_eq!(check_timestamp(TS, ts - 301), Err(SignatureError::Stale));
        assert_eq!(check_timestamp(TS, ts + 300), Ok(()));
        assert_eq!(
            check_timestamp("soon", ts),
            Err(SignatureError::BadTimestamp)
        );
    }
}
