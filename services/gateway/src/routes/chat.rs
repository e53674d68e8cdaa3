//! Chat: a user message becomes a turn, stored in Postgres and published to JetStream for the
//! agent (in tool-executor); the gateway runs no model and no tool. It relays the turn's events
//! from the TURNS stream, so any replica can serve any turn, and a client that reconnects with
//! `Last-Event-ID` gets exactly the events after it. A disconnect is not a cancel.

use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody, parse_json};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use common::UserId;
use common::chat::{TurnEvent, TurnEventBody};
use common::events::{Envelope, Event, TurnRequested};
use common::intake::{self, FieldError};
use db::chat::{Started, Turn};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

pub const MAX_MESSAGE_CHARS: usize = 16_000;
const MAX_IDEMPOTENCY_KEY: usize = 200;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/chat/stream", post(chat_stream))
        .route("/api/chat/message", post(chat_message))
        .route("/api/chat/turns/{id}/events", get(turn_events))
        .route("/api/chat/turns/{id}/cancel", post(cancel_turn))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    /// Continue this conversation; a new one is started when absent.
    pub conversation_id: Option<Uuid>,
    /// What the user asks, in plain words.
    pub message: String,
}

/// The Idempotency-Key header, if any, checked.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let invalid = |reason: &str| ApiError::Invalid(FieldError::new("Idempotency-Key", reason));
    let key = value
        .to_str()
        .map_err(|_| invalid("must be visible ASCII"))?
        .trim();
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(invalid("must be 1-200 characters"));
    }
    Ok(Some(key.to_owned()))
}

/// The event to resume after: `Last-Event-ID`, or `?after=`.
fn resume_after(headers: &HeaderMap, after: Option<u64>) -> Result<u64, ApiError> {
    match headers.get("last-event-id") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                ApiError::Invalid(FieldError::new(
                    "Last-Event-ID",
                    "must be an event id this API sent",
                ))
            }),
        None => Ok(after.unwrap_or(0)),
    }
}

/// The turn in Postgres, and whether this request created it.
async fn store(
    state: &AppState,
    user: UserId,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Turn, bool), ApiError> {
    let request: ChatRequest = parse_json(body)?;
    let key = idempotency_key(headers)?;
    let mut message = request.message;
    intake::clean_text(&mut message);
    let message = message.trim().to_owned();
    if message.is_empty() {
        return Err(ApiError::Invalid(FieldError::new(
            "message",
            "must not be empty",
        )));
    }
    if message.chars().count() > MAX_MESSAGE_CHARS {
        return Err(ApiError::Invalid(FieldError::new(
            "message",
            "longer than 16000 characters",
        )));
    }
    // A retry of a turn this key started is not a new one; anything else is counted.
    let retry = match key.as_deref() {
        Some(k) => db::chat::turn_by_key(&state.db, user, k).await?.is_some(),
        None => false,
    };
    if !retry {
        let limits = &state.config;
        db::quota::new_turn(
            &state.db,
            user,
            limits.chat_max_turns_per_user,
            limits.model_tokens_per_user_per_day,
        )
        .await?
        .map_err(ApiError::Quota)?;
    }
    let started = db::chat::start_turn(
        &state.db,
        user,
        request.conversation_id,
        key.as_deref(),
        &message,
    )
    .await
    .map_err(|e| match e {
        db::DbError::NotFound => ApiError::NotFound("no such conversation".into()),
        e => e.into(),
    })?;
    match started {
        Started::New(turn) => Ok((turn, true)),
        Started::Existing(turn) => Ok((turn, false)),
        Started::KeyReused => Err(ApiError::Conflict(
            "this Idempotency-Key was used for a different message".into(),
        )),
        Started::TaskConversation => Err(ApiError::Conflict(
            "this conversation belongs to a task and takes no new messages; start a new conversation".into(),
        )),
    }
}

/// Publishes the turn for the agent (again, for an existing one: JetStream keeps one); a new
/// turn that cannot be published is discarded.
async fn queue(state: &AppState, user: UserId, turn: &Turn, new: bool) -> Result<(), ApiError> {
    if !turn.is_finished() {
        // Published again for an existing turn: JetStream keeps one (same message id).
        let envelope = Envelope::new(
            user,
            Event::TurnRequested(TurnRequested {
                turn_id: turn.id,
                conversation_id: turn.conversation_id,
            }),
        );
        if let Err(e) = state.bus.publish(&envelope).await {
            if new && let Err(undo) = db::chat::discard_turn(&state.db, turn).await {
                tracing::warn!(error = %undo, turn.id = %turn.id, "turn not queued and not discarded");
            }
            return Err(ApiError::Unavailable(e));
        }
    }
    if new {
        metrics::counter!("chat_turns_started_total").increment(1);
    }
    Ok(())
}

/// Starts (or finds) the turn and its events after `after`.
async fn open(
    state: &AppState,
    user: UserId,
    headers: &HeaderMap,
    body: &[u8],
    after: u64,
) -> Result<(Turn, EventStream), ApiError> {
    let (turn, new) = store(state, user, headers, body).await?;
    if new && after == 0 {
        // A turn this request starts: listen before it is queued, then queue it.
        let live = common::chat::Live::subscribe(&state.bus, user, turn.id)
            .await
            .map_err(|e| ApiError::BadGateway(format!("event stream unavailable: {e}")))?;
        queue(state, user, &turn, new).await?;
        let events = live.events(state.bus.clone(), user, turn.id);
        return Ok((turn, Box::pin(events)));
    }
    queue(state, user, &turn, new).await?;
    let events = events(state, user, &turn, after).await?;
    Ok((turn, events))
}

type EventStream = std::pin::Pin<Box<dyn Stream<Item = TurnEvent> + Send>>;

/// The turn's events after `after`, ending with its last. A finished turn whose events have
/// left the stream is told from Postgres.
async fn events(
    state: &AppState,
    user: UserId,
    turn: &Turn,
    after: u64,
) -> Result<std::pin::Pin<Box<dyn Stream<Item = TurnEvent> + Send>>, ApiError> {
    if turn.is_finished() {
        let stored = common::chat::stored(&state.bus, user, turn.id)
            .await
            .map_err(|e| ApiError::BadGateway(format!("event stream unavailable: {e}")))?;
        let mut events: Vec<TurnEvent> = stored;
        if !events.iter().any(TurnEvent::is_terminal) {
            let seq = events.last().map(|e| e.seq).unwrap_or(0) + 1;
            events.push(TurnEvent {
                seq,
                turn_id: turn.id,
                body: turn.ending(),
            });
        }
        let events: Vec<TurnEvent> = events.into_iter().filter(|e| e.seq > after).collect();
        return Ok(Box::pin(futures::stream::iter(events)));
    }
    let follow = common::chat::follow(&state.bus, user, turn.id)
        .await
        .map_err(|e| ApiError::BadGateway(format!("event stream unavailable: {e}")))?;
    Ok(Box::pin(
        follow.filter(move |e| futures::future::ready(e.seq > after)),
    ))
}

fn sse_event(event: TurnEvent) -> SseEvent {
    let data = match serde_json::to_value(&event.body) {
        Ok(serde_json::Value::Object(mut map)) => map.remove("data").unwrap_or_default(),
        _ => serde_json::Value::Null,
    };
    SseEvent::default()
        .id(event.seq.to_string())
        .event(event.body.name())
        .json_data(data)
        .unwrap_or_else(|_| SseEvent::default().comment("unserializable event"))
}

/// The turn's events, ended when the turn can no longer finish: after each quiet spell the
/// turn is looked up, and a turn that is gone ends the stream, one that finished without its
/// last event reaching the stream ends it with that ending, and one still unfinished past
/// every deadline it could meet ends it with `turn_stalled`.
fn watched(state: &AppState, user: UserId, turn: &Turn, events: EventStream) -> EventStream {
    let quiet = Duration::from_secs(state.config.chat_stream_check_secs.max(1));
    // The longest a turn can run: each model round at its deadline, retried.
    let model = Duration::from_secs(state.config.chat_model_timeout_secs.max(1));
    let longest = model
        * (state.config.chat_max_tool_rounds.max(1) + 1)
        * (state.config.chat_max_retries + 1);
    let db = state.db.clone();
    let turn_id = turn.id;
    let created = turn.created_at;
    struct Watch {
        events: EventStream,
        last: u64,
        ended: bool,
    }
    let watch = Watch {
        events,
        last: 0,
        ended: false,
    };
    Box::pin(futures::stream::unfold(watch, move |mut w| {
        let db = db.clone();
        async move {
            loop {
                if w.ended {
                    return None;
                }
                match tokio::time::timeout(quiet, w.events.next()).await {
                    Ok(Some(event)) => {
                        w.last = event.seq;
                        w.ended = event.is_terminal();
                        return Some((event, w));
                    }
                    Ok(None) => return None,
                    Err(_) => {}
                }
                let ending = match db::chat::turn(&db, user, turn_id).await {
                    Ok(None) => return None,
                    Ok(Some(t)) if t.is_finished() => t.ending(),
                    Ok(Some(_))
                        if chrono::Utc::now() - created
                            > chrono::Duration::from_std(longest)
                                .unwrap_or(chrono::TimeDelta::MAX) =>
                    {
                        common::chat::TurnEventBody::Error {
                            code: "turn_stalled".into(),
                            message: "the turn did not finish in the time it could take; ask again"
                                .into(),
                        }
                    }
                    // Still running, or the database is briefly away: keep listening.
                    Ok(Some(_)) | Err(_) => continue,
                };
                w.ended = true;
                let event = TurnEvent {
                    seq: w.last + 1,
                    turn_id,
                    body: ending,
                };
                return Some((event, w));
            }
        }
    }))
}

/// A place for one more of the user's open event streams on this replica.
fn stream_slot(state: &AppState, user: UserId) -> Result<common::slots::Place, ApiError> {
    let bound = state.config.chat_max_streams_per_user;
    state.streams.take(user, bound).ok_or_else(|| {
        ApiError::Quota(db::quota::Exceeded::new(
            "chat.streams",
            bound,
            None,
            format!("at most {bound} open event streams for each user; close one (or wait for its turn to end) first"),
        ))
    })
}

fn sse_response(turn: &Turn, events: EventStream, slot: common::slots::Place) -> Response {
    // The slot is held as long as the response's stream lives.
    let stream = events.map(move |e| {
        let _held = &slot;
        Ok::<_, Infallible>(sse_event(e))
    });
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        ("x-turn-id", turn.id.to_string()),
        ("x-conversation-id", turn.conversation_id.to_string()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    headers.insert(
        axum::http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    response
}

#[utoipa::path(
    post,
    path = "/api/chat/stream",
    tag = "chat",
    request_body = ChatRequest,
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Retrying with the same key streams the same turn instead of starting another"),
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this event (a reconnecting client)"),
    ),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, content_type = "text/event-stream", description = "The turn as Server-Sent Events, `id` numbering them within the turn. Headers `X-Turn-Id` and `X-Conversation-Id` name the turn. Events (`event:` name, `data:` JSON):\n\
- `delta` `{text}`: more answer text; `[n]` markers cite sources and are whole when sent;\n\
- `tool_call` `{id, name, arguments}`: the model asked for a tool;\n\
- `tool_result` `{id, name, ok, summary}`: it ran;\n\
- `approval_required` `{approval_id, tool, arguments, reason, expires_at}`: a write waits for the user;\n\
- `citation` `{n, document_id, title, source, kind, external_id, occurred_at, link}`: a source cited as `[n]`, sent once when first cited;\n\
- `done` `{text, citations, usage: {input_tokens, output_tokens, model_calls}, status}`: the whole answer; the stream ends;\n\
- `error` `{code, message}` (`cancelled`, `model_unavailable`, `model_unauthorized`, `model_refused`): the turn ended without an answer; the stream ends."),
        (status = 401, body = ErrorBody),
        (status = 404, description = "No such conversation", body = ErrorBody),
        (status = 409, description = "The Idempotency-Key was used for another message, or the conversation is a task's (it takes no new messages)", body = ErrorBody),
        (status = 422, description = "`message`, `Idempotency-Key` or `Last-Event-ID` invalid; `field` names it", body = ErrorBody),
        (status = 429, description = "A per-user bound: turns in flight (`chat.turns_in_flight`), the model's daily tokens (`model.tokens_per_day`) or open event streams (`chat.streams`); `limit` and `resets_at` say which and when", body = ErrorBody),
        (status = 503, description = "JetStream or Postgres unavailable; nothing was started", body = ErrorBody),
    )
)]
pub async fn chat_stream(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let after = resume_after(&headers, None)?;
    let slot = stream_slot(&state, user)?;
    let (turn, events) = open(&state, user, &headers, &body, after).await?;
    let events = watched(&state, user, &turn, events);
    Ok(sse_response(&turn, events, slot))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ResumeParams {
    /// Resume after this event id (for clients that cannot set `Last-Event-ID`).
    pub after: Option<u64>,
}

#[utoipa::path(
    get,
    path = "/api/chat/turns/{id}/events",
    tag = "chat",
    params(
        ("id" = Uuid, Path, description = "The turn"),
        ResumeParams,
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this event"),
    ),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, content_type = "text/event-stream", description = "The turn's events after the one given, as for `POST /api/chat/stream`"),
        (status = 404, description = "No such turn", body = ErrorBody),
        (status = 429, description = "The user's open event streams are at `CHAT_MAX_STREAMS_PER_USER` (`limit`: `chat.streams`)", body = ErrorBody),
    )
)]
pub async fn turn_events(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<Uuid>,
    Query(params): Query<ResumeParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let after = resume_after(&headers, params.after)?;
    let slot = stream_slot(&state, user)?;
    let turn = db::chat::turn(&state.db, user, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such turn".into()))?;
    let events = events(&state, user, &turn, after).await?;
    let events = watched(&state, user, &turn, events);
    Ok(sse_response(&turn, events, slot))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ToolUse {
    pub id: String,
    pub name: String,
    #[schema(value_type = Object)]
    pub arguments: serde_json::Value,
    pub ok: Option<bool>,
    pub summary: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TurnReply {
    pub turn_id: Uuid,
    pub conversation_id: Uuid,
    /// `done`, `failed`, `cancelled`, or `running` when the answer took longer than this
    /// request may wait (follow `events_url`).
    pub status: String,
    pub text: String,
    #[schema(value_type = Vec<Object>)]
    pub citations: Vec<common::chat::Citation>,
    pub tool_calls: Vec<ToolUse>,
    #[schema(value_type = Object)]
    pub usage: Option<common::chat::Usage>,
    pub error: Option<ErrorBodyOwned>,
    pub events_url: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBodyOwned {
    pub code: String,
    pub message: String,
}

#[utoipa::path(
    post,
    path = "/api/chat/message",
    tag = "chat",
    request_body = ChatRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retrying with the same key returns the same turn")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "The finished turn", body = TurnReply),
        (status = 202, description = "Still running after the request's time: follow `events_url`", body = TurnReply),
        (status = 404, description = "No such conversation", body = ErrorBody),
        (status = 409, description = "The Idempotency-Key was used for another message, or the conversation is a task's (it takes no new messages)", body = ErrorBody),
        (status = 422, description = "`message` or `Idempotency-Key` invalid", body = ErrorBody),
        (status = 429, description = "A per-user bound: turns in flight (`chat.turns_in_flight`) or the model's daily tokens (`model.tokens_per_day`); `limit` and `resets_at` say which and when", body = ErrorBody),
        (status = 503, description = "JetStream or Postgres unavailable; nothing was started", body = ErrorBody),
    )
)]
pub async fn chat_message(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (turn, mut events) = open(&state, user, &headers, &body, 0).await?;
    let mut reply = TurnReply {
        turn_id: turn.id,
        conversation_id: turn.conversation_id,
        status: "running".into(),
        text: String::new(),
        citations: Vec::new(),
        tool_calls: Vec::new(),
        usage: None,
        error: None,
        events_url: format!("/api/chat/turns/{}/events", turn.id),
    };
    let budget = Duration::from_secs(state.config.request_timeout_secs)
        .saturating_sub(Duration::from_secs(2))
        .max(Duration::from_secs(1));
    let deadline = tokio::time::Instant::now() + budget;
    loop {
        let next = tokio::time::timeout_at(deadline, events.next()).await;
        let Ok(Some(event)) = next else {
            break;
        };
        match event.body {
            TurnEventBody::Delta { text } => reply.text.push_str(&text),
            TurnEventBody::ToolCall {
                id,
                name,
                arguments,
            } => reply.tool_calls.push(ToolUse {
                id,
                name,
                arguments,
                ok: None,
                summary: None,
            }),
            TurnEventBody::ToolResult {
                id, ok, summary, ..
            } => {
                if let Some(t) = reply.tool_calls.iter_mut().find(|t| t.id == id) {
                    t.ok = Some(ok);
                    t.summary = Some(summary);
                }
            }
            TurnEventBody::Citation(c) => reply.citations.push(c),
            TurnEventBody::ApprovalRequired { .. } => {}
            TurnEventBody::Done(done) => {
                reply.status = done.status;
                reply.text = done.text;
                reply.citations = done.citations;
                reply.usage = Some(done.usage);
                return Ok((StatusCode::OK, Json(reply)).into_response());
            }
            TurnEventBody::Error { code, message } => {
                reply.status = if code == "cancelled" {
                    "cancelled".into()
                } else {
                    "failed".into()
                };
                reply.error = Some(ErrorBodyOwned { code, message });
                return Ok((StatusCode::OK, Json(reply)).into_response());
            }
        }
    }
    Ok((StatusCode::ACCEPTED, Json(reply)).into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Cancelling {
    pub turn_id: Uuid,
    pub status: &'static str,
}

#[utoipa::path(
    post,
    path = "/api/chat/turns/{id}/cancel",
    tag = "chat",
    params(("id" = Uuid, Path, description = "The turn")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 202, description = "The agent stops the turn; its stream ends with `error` `cancelled`", body = Cancelling),
        (status = 404, description = "No such turn", body = ErrorBody),
        (status = 409, description = "The turn has already finished", body = ErrorBody),
    )
)]
pub async fn cancel_turn(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<Uuid>,
) -> Result<(StatusCode, Json<Cancelling>), ApiError> {
    if !db::chat::request_cancel(&state.db, user, id).await? {
        return match db::chat::turn(&state.db, user, id).await? {
            Some(_) => Err(ApiError::Conflict("the turn has already finished".into())),
            None => Err(ApiError::NotFound("no such turn".into())),
        };
    }
    // Tell a running agent at once; one that has not started reads the flag when it does.
    let subject = state.bus.ns.subject(&common::chat::cancel_subject(id));
    if let Err(e) = state.bus.client.publish(subject, Bytes::new()).await {
        tracing::warn!(error = %e, "cancel signal not sent; the agent sees the flag at its next step");
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(Cancelling {
            turn_id: id,
            status: "cancelling",
        }),
    ))
}
