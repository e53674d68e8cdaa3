//! The gateway's routes, one module per resource, each with its own `router()`; the top
//! router in `lib.rs` only merges them. The edge concerns (auth, errors, limits, headers,
//! signatures) live beside this folder, not in it.

pub mod approvals;
pub mod chat;
pub mod connections;
pub mod console;
pub mod conversations;
pub mod curation;
pub mod documents;
pub mod export;
pub mod ingest;
pub mod insights;
pub mod ops;
pub mod previews;
pub mod provider_hooks;
pub mod rules;
pub mod search;
pub mod sign_in;
pub mod sync;
pub mod tasks;
pub mod tokens;
pub mod transcripts;
pub mod webhooks;

use crate::error::ApiError;
use common::intake::FieldError;

/// A list's `limit` parameter: 100 when absent, 1 to 500 when given.
pub fn list_limit(limit: Option<u64>) -> Result<u64, ApiError> {
    let limit = limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::Invalid(FieldError::new(
            "limit",
            "must be between 1 and 500",
        )));
    }
    Ok(limit)
}
