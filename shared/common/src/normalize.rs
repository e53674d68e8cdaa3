//! Generic webhooks to documents. A sender may post a document directly (`data` holding
//! `external_id`, `title`, `body`); any other JSON event becomes a document whose text is the
//! event's fields, so it is still searchable. The gateway runs it to check a delivery against
//! the document limits before accepting it; ingest runs it again to store the document.

use crate::events::{DocumentInput, WebhookReceived};
use crate::ids::Source;
use chrono::{DateTime, Utc};
use serde_json::Value;

/// The document a delivery stands for. A flattened body stops growing one byte past
/// `max_body_bytes`, so a deeply nested payload costs no more than the limit it will fail.
pub fn webhook_to_document(hook: &WebhookReceived, max_body_bytes: usize) -> DocumentInput {
    let payload = &hook.payload;
    let data = payload.get("data").unwrap_or(payload);
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
    let event_type = text(payload, "type");
    let external_id = text(data, "external_id")
        .or_else(|| text(data, "id"))
        .unwrap_or_else(|| hook.webhook_id.clone());
    let title = text(data, "title")
        .or_else(|| event_type.clone())
        .unwrap_or_else(|| format!("{} event", hook.source));
    let body = text(data, "body").unwrap_or_else(|| flatten(data, max_body_bytes + 1));
    let kind = text(data, "kind")
        .and_then(|k| Source::parse(&k).ok())
        .unwrap_or_else(|| Source::parse("event").expect("valid kind"));
    let occurred_at = text(data, "occurred_at")
        .or_else(|| text(payload, "timestamp"))
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc))
        .or(Some(hook.received_at));
    DocumentInput {
        source: hook.source.clone(),
        kind,
        external_id,
        title,
        body,
        metadata: serde_json::json!({
            "webhook_id": hook.webhook_id,
            "event_type": event_type,
            "metadata": data.get("metadata").cloned().unwrap_or(Value::Null),
        }),
        occurred_at,
    }
}

/// `key: value` lines for every scalar in the JSON, nested keys joined with dots; at most
/// `budget` bytes (cut on a character boundary).
fn flatten(value: &Value, budget: usize) -> String {
    fn walk(prefix: &str, v: &Value, out: &mut String, budget: usize) {
        if out.len() >= budget {
            return;
        }
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out, budget);
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(&format!("{prefix}[{i}]"), v, out, budget);
                }
            }
            Value::Null => {}
            scalar => {
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(prefix);
                out.push_str(": ");
                match scalar {
                    Value::String(s) => out.push_str(s),
                    other => out.push_str(&other.to_string()),
                }
            }
        }
    }
    let mut out = String::new();
    walk("", value, &mut out, budget);
    if out.len() > budget {
        let mut cut = budget;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(payload: Value) -> WebhookReceived {
        WebhookReceived {
            source: Source::parse("zendesk").unwrap(),
            webhook_id: "msg_1".into(),
            received_at: Utc::now(),
            payload,
        }
    }

    #[test]
    fn document_shaped_payloads_keep_their_fields() {
        let doc = webhook_to_document(
            &hook(serde_json::json!({
                "type": "ticket.created",
                "data": {"external_id": "T-9", "title": "Login broken", "body": "Cannot sign in", "kind": "ticket"}
            })),
            1024,
        );
        assert_eq!(
            (
                doc.external_id.as_str(),
                doc.title.as_str(),
                doc.body.as_str()
            ),
            ("T-9", "Login broken", "Cannot sign in")
        );
        assert_eq!(doc.kind.as_str(), "ticket");
    }

    #[test]
    fn any_other_json_becomes_searchable_text() {
        let doc = webhook_to_document(
            &hook(serde_json::json!({"test": 2432232314u64, "user": {"name": "Ann"}})),
            1024,
        );
        assert_eq!(doc.external_id, "msg_1", "falls back to the webhook id");
        assert!(doc.body.contains("test: 2432232314"));
        assert!(doc.body.contains("user.name: Ann"));
        assert_eq!(doc.kind.as_str(), "event");
    }

    #[test]
    fn nested_payloads_flatten_no_further_than_the_limit() {
        // Every leaf repeats its whole path: unbounded, the text grows with depth × leaves.
        let mut value = serde_json::json!({"leaf": "x"});
        for i in 0..120 {
            let mut level = serde_json::Map::new();
            for j in 0..20 {
                level.insert(format!("leaf{j}"), Value::from("x"));
            }
            level.insert(format!("key{i}"), value);
            value = Value::Object(level);
        }
        let doc = webhook_to_document(&hook(value), 10_000);
        assert_eq!(
            doc.body.len(),
            10_001,
            "one byte over, so the limit refuses it"
        );
    }
}
