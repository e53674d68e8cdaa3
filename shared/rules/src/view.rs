//! What a rule sees of an event: its type (`gmail.email.received`), its summary fields, and
//! fields derived from them that conditions need often (`from_email`, `from_domain`,
//! `from_name`, `to_emails`).

use serde_json::{Map, Value, json};

/// `<source>.<name>`, without saying the source twice: `gmail.email.received`,
/// `hubspot.contact.created`, `calendar.event.created`, `slack.message.posted`.
pub fn event_type(source: &str, name: &str) -> String {
    if name
        .strip_prefix(source)
        .is_some_and(|rest| rest.starts_with('.'))
    {
        name.to_owned()
    } else {
        format!("{source}.{name}")
    }
}

/// The address inside `Name <address>`, lowercased; the text itself when it is an address.
pub fn address_of(text: &str) -> Option<String> {
    let inner = match (text.rfind('<'), text.rfind('>')) {
        (Some(a), Some(b)) if a < b => &text[a + 1..b],
        _ => text,
    };
    let inner = inner.trim().trim_matches('"').to_lowercase();
    (inner.contains('@') && !inner.contains(' ')).then_some(inner)
}

fn name_of(text: &str) -> Option<String> {
    let name = text.split('<').next()?.trim().trim_matches('"').trim();
    (!name.is_empty() && !name.contains('@')).then(|| name.to_owned())
}

/// Addresses in a header (`a@x, "B" <b@y>`) or a list of them (strings or `{email}`).
pub fn addresses(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => s.split(',').filter_map(address_of).collect(),
        Value::Array(items) => items
            .iter()
            .flat_map(|v| match v {
                Value::Object(o) => o.get("email").map(addresses).unwrap_or_default(),
                other => addresses(other),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The event as rules read it. `data` is the event's summary; its fields stay as they are and
/// derived ones are added.
pub fn build(source: &str, name: &str, entity_id: &str, at: &str, data: &Value) -> Value {
    let mut view: Map<String, Value> = data.as_object().cloned().unwrap_or_default();
    view.insert("type".into(), json!(event_type(source, name)));
    view.insert("source".into(), json!(source));
    view.insert("name".into(), json!(name));
    view.insert("entity_id".into(), json!(entity_id));
    view.insert("at".into(), json!(at));
    let from = data["from"]
        .as_str()
        .or(data["email"].as_str())
        .or(data["organizer"].as_str());
    // Whether the sender is who the event says: an email's when the provider verified it
    // (ingest sets it), a CRM record's always (it is the user's own system), anything else
    // never (a calendar organizer or a chat name can be written by anyone).
    let verified = match data.get("from_verified").and_then(Value::as_bool) {
        Some(v) => v,
        None => source == "hubspot",
    };
    view.insert("from_verified".into(), json!(verified && from.is_some()));
    if let Some(from) = from {
        if let Some(address) = address_of(from) {
            if let Some((_, domain)) = address.rsplit_once('@') {
                view.insert("from_domain".into(), json!(domain));
            }
            view.insert("from_email".into(), json!(address));
        }
        if let Some(n) = name_of(from) {
            view.insert("from_name".into(), json!(n));
        }
    }
    let mut to = addresses(&data["to"]);
    to.extend(addresses(&data["cc"]));
    to.extend(addresses(&data["attendees"]));
    if !to.is_empty() {
        view.insert("to_emails".into(), json!(to));
    }
    Value::Object(view)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_sender_fields_and_the_type() {
        let v = build(
            "gmail",
            "email.received",
            "m1",
            "2026-11-29T00:00:00Z",
            &json!({"from": "Sara Smith <Sara@Client.example>", "to": "me@harborwealth.example, \"Ops\" <ops@harborwealth.example>", "subject": "Hi"}),
        );
        assert_eq!(v["type"], "gmail.email.received");
        assert_eq!(v["from_email"], "sara@client.example");
        assert_eq!(v["from_domain"], "client.example");
        assert_eq!(v["from_name"], "Sara Smith");
        // Ingest says when Gmail verified the sender; without that word it is not.
        assert_eq!(v["from_verified"], false);
        assert_eq!(
            v["to_emails"],
            json!(["me@harborwealth.example", "ops@harborwealth.example"])
        );
        assert_eq!(
            event_type("calendar", "calendar.event.created"),
            "calendar.event.created"
        );
        assert_eq!(
            event_type("hubspot", "contact.created"),
            "hubspot.contact.created"
        );
    }
}
