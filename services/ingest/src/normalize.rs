//! Generic webhooks to documents. A sender may post a document directly (`data` holding
//! `external_id`, `title`, `body`); any other JSON event becomes a document whose text is the
//! event's fields, so it is still searchable.

use chrono::{DateTime, Utc};
use common::events::{DocumentInput, WebhookReceived};
use common::ids::Source;
use serde_json::Value;

pub fn webhook_to_document(hook: &WebhookReceived) -> DocumentInput {
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
    let body = text(data, "body").unwrap_or_else(|| flatten(data));
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

/// `key: value` lines for every scalar in the JSON, nested keys joined with dots.
fn flatten(value: &Value) -> String {
    fn walk(prefix: &str, v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(&format!("{prefix}[{i}]"), v, out);
                }
            }
            Value::Null => {}
            Value::String(s) => out.push(format!("{prefix}: {s}")),
            other => out.push(format!("{prefix}: {other}")),
        }
    }
    let mut lines = Vec::new();
    walk("", value, &mut lines);
    lines.join("\n")
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
        let doc = webhook_to_document(&hook(serde_json::json!({
            "type": "ticket.created",
            "data": {"external_id": "T-9", "title": "Login broken", "body": "Cannot sign in", "kind": "ticket"}
        })));
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
        let doc = webhook_to_document(&hook(
            serde_json::json!({"test": 2432232314u64, "user": {"name": "Ann"}}),
        ));
        assert_eq!(doc.external_id, "msg_1", "falls back to the webhook id");
        assert!(doc.body.contains("test: 2432232314"));
        assert!(doc.body.contains("user.name: Ann"));
        assert_eq!(doc.kind.as_str(), "event");
    }
}
