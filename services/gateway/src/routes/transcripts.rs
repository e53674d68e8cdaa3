//! `POST /api/ingest/transcripts`: meeting transcripts (Gong, Fathom, Zoom...) with speakers
//! and timestamps. Stored as one `transcript` document whose turns are paragraphs, which the
//! embedding service chunks by speaker turn.

use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody, parse_json};
use crate::routes::ingest::IngestResponse;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use common::events::DocumentInput;
use common::ids::Source;
use common::intake::{self, FieldError};
use serde::Deserialize;
use utoipa::ToSchema;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/ingest/transcripts", post(ingest_transcript))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TranscriptRequest {
    /// The recorder (`gong`, `fathom`, `zoom`...); default `transcripts`.
    pub source: Option<String>,
    /// The recorder's id for the call.
    pub external_id: String,
    pub title: String,
    /// When the meeting started.
    pub occurred_at: Option<DateTime<Utc>>,
    /// Who attended (names or emails).
    #[serde(default)]
    pub participants: Vec<String>,
    /// What was said, in order.
    pub turns: Vec<Turn>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Turn {
    pub speaker: String,
    /// Seconds from the start of the recording.
    pub start_secs: f64,
    pub end_secs: Option<f64>,
    pub text: String,
}

fn clock(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Most participants kept in a transcript's metadata.
const MAX_PARTICIPANTS: usize = 500;

impl TranscriptRequest {
    /// Limits first, then work: the request's size is checked before anything is built, and
    /// building is linear in the number of turns.
    pub fn into_input(self, max_body_bytes: usize) -> Result<DocumentInput, FieldError> {
        let source = Source::parse(self.source.as_deref().unwrap_or("transcripts"))
            .map_err(|r| FieldError::new("source", r))?;
        if self.turns.is_empty() {
            return Err(FieldError::new("turns", "at least one turn"));
        }
        let text_bytes: usize = self
            .turns
            .iter()
            .map(|t| t.text.len() + t.speaker.len() + 16)
            .sum();
        if text_bytes > max_body_bytes {
            return Err(FieldError::new(
                "turns",
                format!("longer than {max_body_bytes} bytes"),
            ));
        }
        if self.participants.len() > MAX_PARTICIPANTS {
            return Err(FieldError::new(
                "participants",
                format!("at most {MAX_PARTICIPANTS}"),
            ));
        }
        let mut last = f64::MIN;
        let mut paragraphs = Vec::with_capacity(self.turns.len());
        let mut speakers: Vec<String> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, turn) in self.turns.iter().enumerate() {
            if turn.speaker.trim().is_empty() {
                return Err(FieldError::new(
                    format!("turns[{i}].speaker"),
                    "must not be empty",
                ));
            }
            if !turn.start_secs.is_finite() || turn.start_secs < last {
                return Err(FieldError::new(
                    format!("turns[{i}].start_secs"),
                    "must not go back in time",
                ));
            }
            last = turn.start_secs;
            if seen.insert(turn.speaker.as_str()) {
                speakers.push(turn.speaker.clone());
            }
            let text = turn.text.split_whitespace().collect::<Vec<_>>().join(" ");
            paragraphs.push(format!(
                "[{}] {}: {text}",
                clock(turn.start_secs),
                turn.speaker.trim()
            ));
        }
        let duration = self
            .turns
            .last()
            .map(|t| t.end_secs.unwrap_or(t.start_secs))
            .unwrap_or_default();
        Ok(DocumentInput {
            source,
            kind: Source::parse("transcript").expect("valid kind"),
            external_id: self.external_id,
            title: self.title,
            body: paragraphs.join("\n\n"),
            metadata: serde_json::json!({
                "participants": self.participants,
                "speakers": speakers,
                "turns": self.turns.len(),
                "duration_secs": duration,
            }),
            occurred_at: self.occurred_at,
        })
    }
}

#[utoipa::path(
    post,
    path = "/api/ingest/transcripts",
    tag = "ingest",
    request_body = TranscriptRequest,
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 202, description = "The transcript is durably in JetStream", body = IngestResponse),
        (status = 400, description = "Not JSON", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 422, description = "A field is invalid; `field` names it. Nothing was published", body = ErrorBody),
        (status = 503, description = "JetStream unavailable; retry later", body = ErrorBody),
    )
)]
pub async fn ingest_transcript(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    body: Bytes,
) -> Result<(StatusCode, Json<IngestResponse>), ApiError> {
    let request: TranscriptRequest = parse_json(&body)?;
    let doc = request
        .into_input(state.config.max_document_bytes)
        .map_err(ApiError::Invalid)?;
    let doc = intake::admit(doc, "transcript", &state.limits()).map_err(|mut e| {
        // Name the request's own fields: the body is built from `turns`.
        e.field = match e.field.trim_start_matches("transcript.") {
            "body" => "turns".to_owned(),
            other => other.to_owned(),
        };
        ApiError::Invalid(e)
    })?;
    let lanes = crate::routes::ingest::lanes_for(&state, user, 1, false).await?;
    let accepted = intake::submit(&state.bus, user, vec![doc], &lanes)
        .await
        .map_err(ApiError::Unavailable)?;
    Ok((StatusCode::ACCEPTED, Json(accepted.into())))
}
