//! Document intake, shared by the gateway's HTTP handler and `ctl demo load`: check each
//! document against the limits, then publish them all and answer once JetStream has them.

use crate::bus::{Bus, BusError, Published};
use crate::events::{DocumentInput, Envelope, Event};
use crate::ids::{DocumentId, UserId};
use serde::Serialize;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_batch: usize,
    pub max_body_bytes: usize,
}

pub const MAX_EXTERNAL_ID: usize = 512;
pub const MAX_TITLE: usize = 1_000;
pub const MAX_METADATA_BYTES: usize = 64 * 1024;

/// A rejected input, naming the field at fault (`documents[3].external_id`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Checks one document; `at` names it in errors.
pub fn validate(doc: &DocumentInput, at: &str, limits: &Limits) -> Result<(), FieldError> {
    let field = |name: &str| format!("{at}.{name}");
    if doc.external_id.trim().is_empty() {
        return Err(FieldError::new(field("external_id"), "must not be empty"));
    }
    if doc.external_id.len() > MAX_EXTERNAL_ID {
        return Err(FieldError::new(
            field("external_id"),
            format!("longer than {MAX_EXTERNAL_ID} bytes"),
        ));
    }
    if doc.title.len() > MAX_TITLE {
        return Err(FieldError::new(
            field("title"),
            format!("longer than {MAX_TITLE} bytes"),
        ));
    }
    if doc.body.len() > limits.max_body_bytes {
        return Err(FieldError::new(
            field("body"),
            format!("longer than {} bytes", limits.max_body_bytes),
        ));
    }
    if doc.title.trim().is_empty() && doc.body.trim().is_empty() {
        return Err(FieldError::new(
            field("body"),
            "title and body are both empty",
        ));
    }
    if !(doc.metadata.is_object() || doc.metadata.is_null()) {
        return Err(FieldError::new(field("metadata"), "must be a JSON object"));
    }
    if doc.metadata.to_string().len() > MAX_METADATA_BYTES {
        return Err(FieldError::new(
            field("metadata"),
            format!("larger than {MAX_METADATA_BYTES} bytes"),
        ));
    }
    Ok(())
}

pub fn validate_batch(docs: &[DocumentInput], limits: &Limits) -> Result<(), FieldError> {
    if docs.is_empty() {
        return Err(FieldError::new(
            "documents",
            "must hold at least one document",
        ));
    }
    if docs.len() > limits.max_batch {
        return Err(FieldError::new(
            "documents",
            format!("at most {} documents per request", limits.max_batch),
        ));
    }
    for (i, doc) in docs.iter().enumerate() {
        validate(doc, &format!("documents[{i}]"), limits)?;
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Accepted {
    /// The document's id (stable for user + source + external id).
    pub id: DocumentId,
    pub external_id: String,
    /// JetStream already had this exact content (a retried request).
    pub duplicate: bool,
}

/// Publishes validated documents; returns only after every PubAck.
pub async fn submit(
    bus: &Bus,
    user: UserId,
    docs: Vec<DocumentInput>,
) -> Result<Vec<Accepted>, BusError> {
    let accepted: Vec<(DocumentId, String)> = docs
        .iter()
        .map(|d| {
            (
                DocumentId::derive(user, &d.source, &d.external_id),
                d.external_id.clone(),
            )
        })
        .collect();
    let envelopes: Vec<Envelope> = docs
        .into_iter()
        .map(|d| {
            let mut d = d;
            if d.metadata.is_null() {
                d.metadata = serde_json::json!({});
            }
            Envelope::new(user, Event::DocumentSubmitted(d))
        })
        .collect();
    let published: Vec<Published> = bus.publish_all(&envelopes).await?;
    Ok(accepted
        .into_iter()
        .zip(published)
        .map(|((id, external_id), p)| Accepted {
            id,
            external_id,
            duplicate: p.duplicate,
        })
        .collect())
}
