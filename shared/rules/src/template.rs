//! `{{event.from_email}}` templates in action parameters. Roots: `event` (the event that fired
//! the rule), `reply` (the event that ended the last wait) and `steps` (results of earlier
//! steps, `steps.1.contact_id` for the first). A template whose value is missing is an error,
//! never an empty string: an email to nobody is worse than no email.

use serde_json::Value;

pub const ROOTS: [&str; 3] = ["event", "reply", "steps"];

/// Checks the `{{...}}` parts of `text`; the error says what is wrong.
pub fn check(text: &str) -> Result<(), String> {
    for part in parts(text)? {
        if let Part::Var(path) = part {
            let root = path.split('.').next().unwrap_or_default();
            if !ROOTS.contains(&root) || path.split('.').any(str::is_empty) {
                return Err(format!(
                    "`{{{{{path}}}}}` names no value; templates start with event., reply. or steps."
                ));
            }
        }
    }
    Ok(())
}

enum Part<'a> {
    Text(&'a str),
    Var(&'a str),
}

fn parts(text: &str) -> Result<Vec<Part<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push(Part::Text(&rest[..start]));
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err("`{{` is not closed with `}}`".into());
        };
        out.push(Part::Var(after[..end].trim()));
        rest = &after[end + 2..];
    }
    out.push(Part::Text(rest));
    Ok(out)
}

/// The value at a dotted path; numeric segments index lists (`steps.1` is the first step).
pub fn lookup<'v>(context: &'v Value, path: &str) -> Option<&'v Value> {
    let mut at = context;
    for (i, segment) in path.split('.').enumerate() {
        at = match at {
            Value::Object(map) => map.get(segment)?,
            Value::Array(items) => {
                let n: usize = segment.parse().ok()?;
                // `steps` is numbered from 1 as people count steps.
                let index = if i == 1 { n.checked_sub(1)? } else { n };
                items.get(index)?
            }
            _ => return None,
        };
    }
    (!at.is_null()).then_some(at)
}

pub fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(text_of).collect::<Vec<_>>().join(", "),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Fills the templates of `text` from `context` (`{"event": .., "reply": .., "steps": [..]}`).
pub fn render(text: &str, context: &Value) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    for part in parts(text)? {
        match part {
            Part::Text(t) => out.push_str(t),
            Part::Var(path) => match lookup(context, path) {
                Some(v) => out.push_str(&text_of(v)),
                None => return Err(format!("`{{{{{path}}}}}` has no value for this event")),
            },
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_event_and_step_values_and_refuses_missing_ones() {
        let ctx = json!({"event": {"from_email": "sara@client.example", "labels": ["INBOX", "IMPORTANT"]},
                          "steps": [{"contact_id": "9001"}]});
        assert_eq!(
            render("Email from {{event.from_email}} ({{ event.labels }})", &ctx).unwrap(),
            "Email from sara@client.example (INBOX, IMPORTANT)"
        );
        assert_eq!(render("{{steps.1.contact_id}}", &ctx).unwrap(), "9001");
        assert!(render("{{event.nothing}}", &ctx).is_err());
        assert!(check("{{event.from}}").is_ok());
        assert!(check("{{from}}").is_err());
        assert!(check("{{event.from").is_err());
    }
}
