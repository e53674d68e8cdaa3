//! What a user can ask of the system, whoever asks: the gateway's handlers, the agent's tools,
//! the rules engine and `ctl` call the same functions, so a search or a sync request means
//! the same thing from every door. Each function checks its own input and names the field at
//! fault; each caller turns [`ActionError`] into its own answer (an HTTP status, a tool
//! result, a command-line message).

pub mod connections;
pub mod glossary;
pub mod query;
pub mod rules;
pub mod search;
pub mod sync;

use common::BusError;
use common::intake::FieldError;

#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// The request is wrong; `field` names what.
    #[error("{0}")]
    Invalid(FieldError),
    #[error("{0}")]
    NotFound(String),
    /// Too much already in flight; try again shortly.
    #[error("busy with other requests; retry shortly")]
    Busy,
    /// JetStream did not take it: nothing was queued.
    #[error("event bus unavailable: {0}")]
    Unavailable(#[source] BusError),
    /// A rule that does not parse: where, and what was expected.
    #[error("{0}")]
    RuleSyntax(::rules::ParseError),
    /// A stream could not be read (JetStream down or the stream missing).
    #[error("event stream unreadable: {0}")]
    Stream(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A per-user bound was reached: which, and when it frees up.
    #[error(transparent)]
    Quota(#[from] db::quota::Exceeded),
    #[error(transparent)]
    Db(#[from] db::DbError),
}

impl ActionError {
    pub fn invalid(field: &str, reason: &str) -> Self {
        Self::Invalid(FieldError::new(field, reason))
    }
}

pub type Result<T> = std::result::Result<T, ActionError>;
