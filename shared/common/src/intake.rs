//! Document intake: the one boundary every document crosses before it is stored, whether it
//! came from the API, a transcript, a webhook or a provider sync. [`admit`] decides what the
//! database can hold: text Postgres cannot store (U+0000 in `text` and `jsonb`) is removed,
//! and what cannot be repaired (an empty id, a date outside 0001-9999, metadata nested deeper
//! than any query reads, sizes over the limits) is refused naming the field. The gateway
//! calls it before answering 2xx and the ingest consumer calls it again before writing, so a
//! document accepted once is always storable. [`submit`] publishes admitted documents and
//! returns once JetStream has them all.

use crate::bus::{Bus, BusError, Published};
use crate::events::{DocumentInput, Envelope, Event, Lane};
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
/// Deepest metadata nesting kept: filters and rules read a few levels, never more.
pub const MAX_METADATA_DEPTH: usize = 8;
/// Dates are kept within what RFC 3339 can write with four digits (and Postgres can store).
pub const MIN_YEAR: i32 = 1;
pub const MAX_YEAR: i32 = 9999;

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

/// Removes what Postgres cannot hold from a string: U+0000 (valid JSON, refused by `text`).
pub fn clean_text(text: &mut String) {
    if text.contains('\0') {
        text.retain(|c| c != '\0');
    }
}

/// [`clean_text`] for every string in a JSON value, object keys included.
pub fn clean_json(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::String(s) => clean_text(s),
        Value::Array(items) => items.iter_mut().for_each(clean_json),
        Value::Object(map) => {
            if map.keys().any(|k| k.contains('\0')) {
                let entries = std::mem::take(map);
                for (mut k, v) in entries {
                    clean_text(&mut k);
                    map.insert(k, v);
                }
            }
            map.values_mut().for_each(clean_json);
        }
        _ => {}
    }
}

/// Refuses a date outside the years 1 to 9999, naming `field`.
pub fn check_date(field: &str, at: chrono::DateTime<chrono::Utc>) -> Result<(), FieldError> {
    use chrono::Datelike;
    if (MIN_YEAR..=MAX_YEAR).contains(&at.year()) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("must be between the years {MIN_YEAR} and {MAX_YEAR}"),
        ))
    }
}

fn depth(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Makes one document storable or refuses it; `at` names it in errors
/// (`documents[3]` gives `documents[3].external_id`). Idempotent: admitting an admitted
/// document changes nothing.
pub fn admit(
    mut doc: DocumentInput,
    at: &str,
    limits: &Limits,
) -> Result<DocumentInput, FieldError> {
    clean_text(&mut doc.external_id);
    clean_text(&mut doc.title);
    clean_text(&mut doc.body);
    if doc.metadata.is_null() {
        doc.metadata = serde_json::json!({});
    }
    clean_json(&mut doc.metadata);
    validate(&doc, at, limits)?;
    Ok(doc)
}

/// [`admit`] for a request's batch, naming documents `documents[i]`.
pub fn admit_batch(
    docs: Vec<DocumentInput>,
    limits: &Limits,
) -> Result<Vec<DocumentInput>, FieldError> {
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
    docs.into_iter()
        .enumerate()
        .map(|(i, doc)| admit(doc, &format!("documents[{i}]"), limits))
        .collect()
}

fn validate(doc: &DocumentInput, at: &str, limits: &Limits) -> Result<(), FieldError> {
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
    if let Some(at) = doc.occurred_at {
        check_date(&field("occurred_at"), at)?;
    }
    if !doc.metadata.is_object() {
        return Err(FieldError::new(field("metadata"), "must be a JSON object"));
    }
    if depth(&doc.metadata) > MAX_METADATA_DEPTH {
        return Err(FieldError::new(
            field("metadata"),
            format!("nested deeper than {MAX_METADATA_DEPTH} levels"),
        ));
    }
    if doc.metadata.to_string().len() > MAX_METADATA_BYTES {
        return Err(FieldError::new(
            field("metadata"),
            format!("larger than {MAX_METADATA_BYTES} bytes"),
        ));
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
    /// The lane it is indexed in.
    pub lane: Lane,
}

/// The lane of each document of a request: all bulk when the sender says so; otherwise
/// interactive up to what is left of the user's share (`share` minus the documents of theirs
/// still waiting to be indexed), bulk after that. One tenant's flood therefore queues behind
/// its own share, never ahead of another tenant's next document.
pub fn lanes(count: usize, bulk: bool, share: u64, waiting: u64) -> Vec<Lane> {
    let interactive = if bulk {
        0
    } else {
        share.saturating_sub(waiting) as usize
    };
    (0..count)
        .map(|i| {
            if i < interactive {
                Lane::Interactive
            } else {
                Lane::Bulk
            }
        })
        .collect()
}

/// Publishes admitted documents, each in its lane; returns only after every PubAck.
pub async fn submit(
    bus: &Bus,
    user: UserId,
    docs: Vec<DocumentInput>,
    lanes: &[Lane],
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
        .enumerate()
        .map(|(i, d)| {
            let lane = lanes.get(i).copied().unwrap_or_default();
            Envelope::new(user, Event::DocumentSubmitted(d)).in_lane(lane)
        })
        .collect();
    let published: Vec<Published> = bus.publish_all(&envelopes).await?;
    Ok(accepted
        .into_iter()
        .zip(published)
        .zip(envelopes.iter().map(|e| e.lane))
        .map(|(((id, external_id), p), lane)| Accepted {
            id,
            external_id,
            duplicate: p.duplicate,
            lane,
        })
        .collect())
}
