//! Provider webhooks: each is verified exactly as its provider specifies, turned into sync
//! commands whose dedup key is the provider's delivery id, published, and only then
//! answered. A request that fails verification gets 401 and publishes nothing.

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::payloads::SlackRequest;
use crate::signatures::{self, SignatureError};
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use common::events::{Envelope, Resource, SyncScope};
use db::connections;
use serde::Serialize;
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/webhooks/hubspot", post(hubspot))
        .route("/api/webhooks/slack", post(slack))
        .route("/api/webhooks/gmail", post(gmail))
        .route("/api/webhooks/calendar", post(calendar))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Queued {
    /// Sync commands published (one per matching connected user and event).
    pub published: usize,
    /// Of those, already in JetStream from an earlier delivery.
    pub duplicates: usize,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

async fn publish(state: &AppState, commands: Vec<Envelope>) -> Result<Json<Queued>, ApiError> {
    let published = state
        .bus
        .publish_all(&commands)
        .await
        .map_err(ApiError::Unavailable)?;
    Ok(Json(Queued {
        published: published.len(),
        duplicates: published.iter().filter(|p| p.duplicate).count(),
    }))
}

/// The URL HubSpot called: our public origin plus the path and query we received.
fn called_url(state: &AppState, uri: &axum::http::Uri) -> String {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    format!("{}{path}", state.config.public_url.trim_end_matches('/'))
}

#[utoipa::path(
    post,
    path = "/api/webhooks/hubspot",
    tag = "webhooks",
    request_body(content = Object, description = "HubSpot's array of webhook events"),
    responses(
        (status = 200, description = "Verified; one sync command per event and user is in JetStream (deduplicated on eventId)", body = Queued),
        (status = 400, description = "Body is not HubSpot's event array", body = ErrorBody),
        (status = 401, description = "Signature missing, wrong or (v3) timestamp more than 5 minutes away", body = ErrorBody),
        (status = 501, description = "HubSpot is not configured", body = ErrorBody),
        (status = 503, description = "JetStream unavailable; HubSpot retries", body = ErrorBody),
    )
)]
pub async fn hubspot(
    State(state): State<AppState>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Queued>, ApiError> {
    let secret = &state.config.hubspot_client_secret;
    if secret.is_empty() {
        return Err(ApiError::NotConfigured(
            "HUBSPOT_CLIENT_SECRET is not set".into(),
        ));
    }
    let url = called_url(&state, &uri);
    if let Some(signature) = header(&headers, "x-hubspot-signature-v3") {
        let timestamp = header(&headers, "x-hubspot-request-timestamp")
            .ok_or(SignatureError::MissingHeader("X-HubSpot-Request-Timestamp"))?;
        let now_ms = chrono::Utc::now().timestamp_millis();
        signatures::hubspot_v3(
            secret,
            method.as_str(),
            &url,
            &body,
            timestamp,
            signature,
            now_ms,
        )?;
    } else {
        // Without v3 there is no signed timestamp: taking v1/v2 by default would let anyone
        // who captured a delivery strip its v3 headers and replay it after the dedup window.
        if !state.config.hubspot_accept_legacy_signatures {
            return Err(SignatureError::Refused(
                "missing X-HubSpot-Signature-v3 header (v1/v2 signatures are not accepted)",
            )
            .into());
        }
        let signature = header(&headers, "x-hubspot-signature")
            .ok_or(SignatureError::MissingHeader("X-HubSpot-Signature"))?;
        match header(&headers, "x-hubspot-signature-version") {
            Some("v2") => signatures::hubspot_v2(secret, method.as_str(), &url, &body, signature),
            Some("v1") | None => signatures::hubspot_v1(secret, &body, signature),
            Some(_) => Err(SignatureError::Mismatch),
        }?;
    }

    let changes = crate::payloads::hubspot(&body).map_err(ApiError::BadRequest)?;
    let mut commands = Vec::new();
    for change in changes {
        for user in connections::users_by_account(&state.db, "hubspot", &change.portal).await? {
            commands.push(actions::sync::command(
                user,
                Resource::Hubspot,
                "webhook",
                format!("hubspot:{}", change.event_id),
                SyncScope::HubspotObject {
                    object_type: change.object_type.into(),
                    id: change.object_id.clone(),
                    deleted: change.deleted,
                },
            ));
        }
    }
    publish(&state, commands).await
}

#[utoipa::path(
    post,
    path = "/api/webhooks/slack",
    tag = "webhooks",
    request_body(content = Object, description = "Slack Events API request"),
    responses(
        (status = 200, description = "Verified; `url_verification` answered with its challenge, events queued (deduplicated on event_id, retries included)"),
        (status = 400, description = "Not a Slack Events API body", body = ErrorBody),
        (status = 401, description = "Signature missing, wrong or more than 5 minutes old or ahead", body = ErrorBody),
        (status = 501, description = "SLACK_SIGNING_SECRET is not set", body = ErrorBody),
        (status = 503, description = "JetStream unavailable; Slack retries", body = ErrorBody),
    )
)]
pub async fn slack(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let secret = &state.config.slack_signing_secret;
    if secret.is_empty() {
        return Err(ApiError::NotConfigured(
            "SLACK_SIGNING_SECRET is not set".into(),
        ));
    }
    let timestamp = header(&headers, "x-slack-request-timestamp")
        .ok_or(SignatureError::MissingHeader("X-Slack-Request-Timestamp"))?;
    let signature = header(&headers, "x-slack-signature")
        .ok_or(SignatureError::MissingHeader("X-Slack-Signature"))?;
    signatures::slack(
        secret,
        timestamp,
        &body,
        signature,
        chrono::Utc::now().timestamp(),
    )?;

    match crate::payloads::slack(&body).map_err(ApiError::BadRequest)? {
        // Answered only now, after the signature checked out.
        SlackRequest::UrlVerification(challenge) => {
            Ok(Json(serde_json::json!({ "challenge": challenge })).into_response())
        }
        SlackRequest::Event {
            team,
            event_id,
            event,
        } => {
            if let Some(retry) = header(&headers, "x-slack-retry-num") {
                tracing::debug!(retry, event.id = %event_id, "Slack retry; deduplicated by event_id");
            }
            let mut commands = Vec::new();
            for user in connections::users_by_account(&state.db, "slack", &team).await? {
                commands.push(actions::sync::command(
                    user,
                    Resource::Slack,
                    "webhook",
                    format!("slack:{event_id}"),
                    SyncScope::SlackEvent {
                        event: event.clone(),
                    },
                ));
            }
            Ok(publish(&state, commands).await?.into_response())
        }
        // app_rate_limited and others need no action.
        SlackRequest::Other => Ok(StatusCode::OK.into_response()),
    }
}

#[utoipa::path(
    post,
    path = "/api/webhooks/gmail",
    tag = "webhooks",
    request_body(content = Object, description = "Pub/Sub push: `message.data` is base64 of `{emailAddress, historyId}`"),
    responses(
        (status = 200, description = "Token verified; a history sync is in JetStream (deduplicated on messageId)", body = Queued),
        (status = 400, description = "Not a Pub/Sub push of a Gmail notification", body = ErrorBody),
        (status = 401, description = "OIDC token missing, not RS256, unknown key, wrong audience/issuer/email, or expired", body = ErrorBody),
        (status = 501, description = "GMAIL_PUSH_SERVICE_ACCOUNT is not set", body = ErrorBody),
        (status = 502, description = "Google's signing keys could not be fetched; Pub/Sub retries", body = ErrorBody),
        (status = 503, description = "JetStream unavailable; Pub/Sub retries", body = ErrorBody),
    )
)]
pub async fn gmail(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Queued>, ApiError> {
    if !state.push.configured() {
        return Err(ApiError::NotConfigured(
            "GMAIL_PUSH_SERVICE_ACCOUNT is not set".into(),
        ));
    }
    state
        .push
        .verify(header(&headers, "authorization"))
        .await
        .map_err(|e| match e {
            // Not the sender's fault: Pub/Sub retries a 5xx later.
            crate::google_jwt::JwtError::KeysUnavailable => {
                tracing::warn!("Google's signing keys could not be fetched; Gmail push deferred");
                ApiError::BadGateway(e.to_string())
            }
            e => {
                tracing::info!(reason = %e, "Gmail push refused");
                SignatureError::Refused("push token rejected").into()
            }
        })?;
    let note = crate::payloads::gmail_push(&body).map_err(ApiError::BadRequest)?;
    let message_id = &note.message_id;
    tracing::debug!(history.id = %note.history_id, "Gmail notification");
    let mut commands = Vec::new();
    for user in connections::users_by_mailbox(&state.db, &note.email_address).await? {
        commands.push(actions::sync::command(
            user,
            Resource::Gmail,
            "webhook",
            format!("gmail-push:{message_id}"),
            SyncScope::Changes,
        ));
    }
    publish(&state, commands).await
}

#[utoipa::path(
    post,
    path = "/api/webhooks/calendar",
    tag = "webhooks",
    responses(
        (status = 200, description = "Channel token matched; `exists`/`not_exists` queued an incremental sync, `sync` acknowledged", body = Queued),
        (status = 401, description = "Unknown channel or token mismatch", body = ErrorBody),
        (status = 503, description = "JetStream unavailable; Google retries", body = ErrorBody),
    )
)]
pub async fn calendar(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Queued>, ApiError> {
    let channel_id = header(&headers, "x-goog-channel-id")
        .ok_or(SignatureError::MissingHeader("X-Goog-Channel-ID"))?;
    let token = header(&headers, "x-goog-channel-token")
        .ok_or(SignatureError::MissingHeader("X-Goog-Channel-Token"))?;
    let channel = db::sync_state::channel(&state.db, channel_id)
        .await?
        .filter(|c| c.resource == "calendar")
        .ok_or(SignatureError::Refused("unknown channel"))?;
    // Google stops a channel at its expiration; anything claiming to come from one after
    // that is not Google.
    if channel.expires_at <= chrono::Utc::now() {
        return Err(SignatureError::Refused("channel expired").into());
    }
    let matches: bool = channel
        .token_hash
        .as_deref()
        .is_some_and(|h| db::sessions::hash(token).ct_eq(h).into());
    if !matches {
        return Err(SignatureError::Refused("channel token does not match").into());
    }
    let state_header = header(&headers, "x-goog-resource-state").unwrap_or("exists");
    if state_header == "sync" {
        // The handshake Google sends when a channel is created: nothing changed yet.
        return Ok(Json(Queued {
            published: 0,
            duplicates: 0,
        }));
    }
    let number = header(&headers, "x-goog-message-number").unwrap_or("0");
    let command = actions::sync::command(
        channel.user_id,
        Resource::Calendar,
        "webhook",
        format!("calendar:{channel_id}:{number}"),
        SyncScope::Changes,
    );
    publish(&state, vec![command]).await
}
