//! The gateway's one error type. Clients see `{code, detail}` only; internal failures are
//! logged once, here, and shown as a generic message.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::BusError;
use common::intake::FieldError;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Invalid(FieldError),
    #[error("{0}")]
    BadRequest(String),
    /// A rule that does not parse: 422 naming the line, the column and what was expected.
    #[error("the rule does not parse: {0}")]
    RuleSyntax(rules::ParseError),
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    NotConfigured(String),
    #[error("{0}")]
    Conflict(String),
    #[error("webhook rejected: {0}")]
    WebhookRejected(String),
    #[error("{0}")]
    BadGateway(String),
    #[error("too many requests; retry in {} s", retry_secs(.0))]
    RateLimited(std::time::Duration),
    /// A per-user bound (active rules, firings, tokens, turns, streams, backtests).
    #[error("{0}")]
    Quota(db::quota::Exceeded),
    #[error("busy with other requests; retry shortly")]
    Busy,
    #[error("event bus unavailable: {0}")]
    Unavailable(#[source] BusError),
    #[error("event stream unavailable: {0}")]
    StreamUnavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("database unavailable: {0}")]
    DatabaseUnavailable(#[source] db::DbError),
    #[error("internal error: {0}")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// An error as clients receive it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable code.
    pub code: &'static str,
    /// What went wrong, for people.
    pub detail: String,
    /// The offending field, when one is to blame (`documents[2].external_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Where in the field's text the problem is (a rule that does not parse).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<Position>,
    /// The per-user bound reached (`quota_exceeded`): `rules.active`,
    /// `rules.backtests_per_minute`, `model.tokens_per_day`, `chat.turns_in_flight`,
    /// `chat.streams`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<&'static str>,
    /// When that bound frees up by itself (RFC 3339); absent when it frees as the user's own
    /// things end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resets_at: Option<String>,
}

/// A place in a text, counted from 1, and what was expected there.
#[derive(Debug, Serialize, ToSchema)]
pub struct Position {
    pub line: usize,
    pub column: usize,
    pub expected: String,
    pub found: String,
}

impl From<db::DbError> for ApiError {
    fn from(e: db::DbError) -> Self {
        if e.is_unavailable() {
            ApiError::DatabaseUnavailable(e)
        } else {
            ApiError::Internal(Box::new(e))
        }
    }
}

impl From<actions::ActionError> for ApiError {
    fn from(e: actions::ActionError) -> Self {
        use actions::ActionError as A;
        match e {
            A::Invalid(field) => ApiError::Invalid(field),
            A::NotFound(what) => ApiError::NotFound(what),
            A::Busy => ApiError::Busy,
            A::Unavailable(e) => ApiError::Unavailable(e),
            A::Stream(e) => ApiError::StreamUnavailable(e),
            A::RuleSyntax(e) => ApiError::RuleSyntax(e),
            A::Quota(e) => ApiError::Quota(e),
            A::Db(e) => e.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, field) = match &self {
            ApiError::Invalid(e) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_input",
                Some(e.field.clone()),
            ),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request", None),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", None),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", None),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", None),
            ApiError::NotConfigured(_) => (StatusCode::NOT_IMPLEMENTED, "not_configured", None),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict", None),
            ApiError::WebhookRejected(_) => (StatusCode::UNAUTHORIZED, "invalid_signature", None),
            ApiError::BadGateway(_) => (StatusCode::BAD_GATEWAY, "provider_unavailable", None),
            ApiError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited", None),
            ApiError::Quota(_) => (StatusCode::TOO_MANY_REQUESTS, "quota_exceeded", None),
            ApiError::Busy => (StatusCode::SERVICE_UNAVAILABLE, "busy", None),
            ApiError::RuleSyntax(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "rule_syntax",
                Some("text".to_owned()),
            ),
            ApiError::Unavailable(_)
            | ApiError::DatabaseUnavailable(_)
            | ApiError::StreamUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable", None)
            }
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None),
        };
        let detail = match &self {
            ApiError::Unavailable(e) => {
                tracing::warn!(error = %e, "publish failed; answering 503");
                "the event bus is unavailable; nothing was accepted, retry later".to_owned()
            }
            ApiError::DatabaseUnavailable(e) => {
                tracing::warn!(error = %e, "database unreachable; answering 503");
                "the database is unavailable; nothing was accepted, retry later".to_owned()
            }
            ApiError::Internal(e) => {
                tracing::error!(error = %e, "internal error");
                "internal error".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = (
            status,
            Json(ErrorBody {
                code,
                detail,
                field,
                position: match &self {
                    ApiError::RuleSyntax(e) => Some(Position {
                        line: e.line,
                        column: e.column,
                        expected: e.expected.clone(),
                        found: e.found.clone(),
                    }),
                    _ => None,
                },
                limit: match &self {
                    ApiError::Quota(q) => Some(q.limit),
                    _ => None,
                },
                resets_at: match &self {
                    ApiError::Quota(q) => q.resets_at.map(|t| t.to_rfc3339()),
                    _ => None,
                },
            }),
        )
            .into_response();
        let retry_after = match &self {
            ApiError::RateLimited(wait) => Some(retry_secs(wait)),
            ApiError::Quota(q) => q.retry_after_secs(),
            ApiError::Unavailable(_)
            | ApiError::DatabaseUnavailable(_)
            | ApiError::StreamUnavailable(_) => Some(5),
            ApiError::Busy => Some(1),
            _ => None,
        };
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

/// Whole seconds to wait, rounded up, at least 1.
fn retry_secs(wait: &std::time::Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// Parses a JSON body, naming the field at fault when it does not fit.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::BadRequest(format!("request body is not valid JSON: {inner}"))
        } else {
            let field = if path == "." { "body".to_owned() } else { path };
            ApiError::Invalid(FieldError::new(field, inner.to_string()))
        }
    })
}
