//! A rule action's parameters as the write tool's arguments, and what a write created as the
//! entity its provider's event will name (for the chain depth of rules).

use serde_json::{Map, Value};

/// What a write created or changed, as the entity its provider event will name.
pub fn effect_of(tool: &str, result: &Value) -> Option<String> {
    let id = |k: &str| {
        result[k]
            .as_str()
            .map(str::to_owned)
            .or_else(|| result[k].as_u64().map(|n| n.to_string()))
    };
    match tool {
        "create_contact" | "update_contact" => {
            id("contact_id").map(|i| format!("hubspot:contact:{i}"))
        }
        "create_note" => id("note_id").map(|i| format!("hubspot:note:{i}")),
        "create_task" => id("task_id").map(|i| format!("hubspot:task:{i}")),
        "send_email" => id("message_id").map(|i| format!("gmail:{i}")),
        "create_calendar_event" => id("event_id").map(|i| format!("calendar:{i}")),
        _ => None,
    }
}

/// A rule action's parameters as the write tool's arguments.
pub fn tool_args(tool: &str, params: &[(String, String)]) -> Value {
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let mut out = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            out.insert(k.to_owned(), v);
        }
    };
    match tool {
        "create_note" => {
            put("contact_id", get("contact").map(Value::from));
            put("body", get("body").map(Value::from));
        }
        "update_contact" => {
            put("contact_id", get("contact").map(Value::from));
            let properties: Map<String, Value> = params
                .iter()
                .filter(|(k, _)| k != "contact")
                .map(|(k, v)| (k.clone(), Value::from(v.trim())))
                .collect();
            put("properties", Some(Value::Object(properties)));
        }
        "create_task" => {
            let title = get("title").or_else(|| {
                get("type").map(|t| {
                    let t = t.replace(['_', '-'], " ");
                    let mut c = t.chars();
                    c.next()
                        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                        .unwrap_or_default()
                })
            });
            put(
                "title",
                Some(Value::from(title.unwrap_or_else(|| "Follow up".into()))),
            );
            put("body", get("body").map(Value::from));
            put("priority", get("priority").map(Value::from));
            put("due", get("due").map(Value::from));
            put("contact_id", get("contact").map(Value::from));
        }
        "send_email" => {
            // Address lists stay text: `writes::prepare` splits them by the address grammar,
            // so `"Lee, Sara" <sara@x>` stays one mailbox.
            put("to", get("to").map(Value::from));
            put("cc", get("cc").map(Value::from));
            put("subject", get("subject").map(Value::from));
            put("body", get("body").map(Value::from));
        }
        "create_calendar_event" => {
            for k in ["summary", "start", "end", "description"] {
                put(k, get(k).map(Value::from));
            }
            put("attendees", get("attendees").map(Value::from));
        }
        _ => {
            for (k, _) in params {
                put(k, get(k).map(Value::from));
            }
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rule_parameters_become_tool_arguments() {
        let p = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            tool_args(
                "create_task",
                &p(&[("type", "welcome_email"), ("priority", "high")])
            ),
            json!({"title": "Welcome email", "priority": "high"})
        );
        assert_eq!(
            tool_args(
                "send_email",
                &p(&[
                    ("to", "a@x.example, b@y.example"),
                    ("subject", "Hi"),
                    ("body", "Hello")
                ])
            ),
            json!({"to": "a@x.example, b@y.example", "subject": "Hi", "body": "Hello"})
        );
        // As the step runs them: a template that fills an address with a line break adds no
        // header, it is refused; a quoted comma stays in its name.
        let prepared = crate::writes::prepare(
            "send_email",
            &tool_args(
                "send_email",
                &p(&[
                    ("to", "\"Lee, Sara\" <sara@x.example>, b@y.example"),
                    ("subject", "Hi"),
                    ("body", "Hello"),
                ]),
            ),
        )
        .unwrap();
        assert_eq!(
            prepared["to"],
            json!(["\"Lee, Sara\" <sara@x.example>", "b@y.example"])
        );
        let injected = tool_args(
            "send_email",
            &p(&[
                ("to", "sara@x.example\r\nBcc: eve@evil.example"),
                ("subject", "Hi"),
                ("body", "x"),
            ]),
        );
        assert!(crate::writes::prepare("send_email", &injected).is_err());
        assert_eq!(
            tool_args(
                "update_contact",
                &p(&[("contact", "9001"), ("lifecyclestage", "customer")])
            ),
            json!({"contact_id": "9001", "properties": {"lifecyclestage": "customer"}})
        );
        assert_eq!(
            effect_of("create_contact", &json!({"contact_id": "9001"})).as_deref(),
            Some("hubspot:contact:9001")
        );
    }
}
