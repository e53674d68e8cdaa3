//! When a write waits for the user: tools that always do (APPROVAL_REQUIRED_TOOLS), invitations
//! beyond the user's domain, writes proposed after reading outside content that the user's own
//! words do not carry, and, for tasks, writes a rule proposes unless the user marked it to act
//! alone inside their own systems.

use common::Config;
use serde_json::Value;

/// Why this write must wait for the user, if it must.
pub struct Policy {
    pub always: Vec<String>,
    /// The user's own email domain: invitations beyond it wait.
    pub domain: String,
}

impl Policy {
    pub fn new(config: &Config, user_email: &str) -> Self {
        Self {
            always: config
                .approval_required_tools
                .split(',')
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect(),
            domain: domain_of(user_email).unwrap_or_default(),
        }
    }

    /// `user_text` is everything the user wrote in the conversation; `saw_outside` whether
    /// the model has been shown content others wrote.
    pub fn approval_reason(
        &self,
        tool: &str,
        args: &Value,
        user_text: &str,
        saw_outside: bool,
    ) -> Option<String> {
        if self.always.iter().any(|t| t == tool) {
            return Some(format!("{tool} always waits for your approval"));
        }
        if tool == "create_calendar_event" {
            let outside: Vec<String> = addresses(&args["attendees"])
                .into_iter()
                .filter(|a| domain_of(a).as_deref() != Some(self.domain.as_str()))
                .collect();
            if !outside.is_empty() {
                return Some(format!(
                    "it invites people outside {}: {}",
                    self.domain,
                    outside.join(", ")
                ));
            }
        }
        if saw_outside && !supported_by(args, user_text) {
            return Some("it was proposed after reading content you did not write (emails, notes, messages), and its details are not in your own words".into());
        }
        None
    }
}

/// Whether a write tool stays inside the user's own systems (their CRM) or reaches others.
pub fn own_systems(tool: &str) -> bool {
    rules::catalog::action(tool).is_some_and(|a| a.reach == rules::catalog::Reach::OwnSystems)
}

impl Policy {
    /// For a write a task proposes: a step of a rule's task, a step of a task the user started
    /// in chat, or the model deciding for either. `outside`: the write was made from content
    /// the user did not write (the event, a reply).
    pub fn for_task(
        &self,
        tool: &str,
        args: &Value,
        origin: &str,
        act_without_approval: bool,
        outside: bool,
    ) -> Option<String> {
        // What always waits (configured tools, invitations beyond the domain) still does.
        if let Some(reason) = self.approval_reason(tool, args, "", false) {
            return Some(reason);
        }
        let own = own_systems(tool);
        if origin == "rule" {
            if !own {
                return Some(format!(
                    "a rule may never {tool} on its own: it reaches other people"
                ));
            }
            if !act_without_approval {
                return Some("proposed by your rule acting on an event, which is content you did not write; a rule can be allowed to act alone for notes, contacts and tasks".into());
            }
            return None;
        }
        outside.then(|| {
            "its details come from content you did not write (the email it waited for)".into()
        })
    }
}

pub fn domain_of(address: &str) -> Option<String> {
    address
        .rsplit_once('@')
        .map(|(_, d)| d.trim().trim_end_matches('>').to_lowercase())
}

pub fn addresses(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items
            .iter()
            .filter_map(|v| v.as_str().or(v["email"].as_str()))
            .map(|s| s.trim().to_lowercase())
            .collect(),
        Value::String(s) => s.split(',').map(|s| s.trim().to_lowercase()).collect(),
        _ => Vec::new(),
    }
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric() && c != '@' && c != '.')
        .map(|w| w.trim_matches('.').to_lowercase())
        .filter(|w| w.chars().count() >= 3)
        .collect()
}

/// Whether the user's own words carry this write: every address in it appears in what they
/// wrote, and most words of its free text do. Ids (contact ids) may come from lookups.
fn supported_by(args: &Value, user_text: &str) -> bool {
    let said: std::collections::HashSet<String> = words(user_text).into_iter().collect();
    let mut texts = Vec::new();
    collect_strings(args, "", &mut texts);
    for (field, text) in texts {
        if field.ends_with("id") {
            continue;
        }
        let w = words(&text);
        if w.is_empty() {
            continue;
        }
        let emails = w.iter().filter(|w| w.contains('@'));
        for e in emails {
            if !said.contains(e) {
                return false;
            }
        }
        let known = w.iter().filter(|w| said.contains(*w)).count();
        if (known as f64) < 0.6 * w.len() as f64 {
            return false;
        }
    }
    true
}

fn collect_strings(value: &Value, field: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::String(s) => out.push((field.to_owned(), s.clone())),
        Value::Array(items) => items.iter().for_each(|v| collect_strings(v, field, out)),
        Value::Object(map) => map.iter().for_each(|(k, v)| collect_strings(v, k, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy() -> Policy {
        Policy {
            always: vec!["send_email".into()],
            domain: "harborwealth.example".into(),
        }
    }

    #[test]
    fn sending_email_always_waits() {
        let args = json!({"to": ["sara@client.example"], "subject": "Hi", "body": "Hi"});
        assert!(
            policy()
                .approval_reason("send_email", &args, "send sara an email", false)
                .is_some()
        );
    }

    #[test]
    fn invitations_outside_the_domain_wait_inside_do_not() {
        let outside = json!({"summary": "Review", "start": "2026-12-01T10:00:00Z", "end": "2026-12-01T11:00:00Z", "attendees": ["sara@client.example"]});
        let inside = json!({"summary": "Review", "start": "2026-12-01T10:00:00Z", "end": "2026-12-01T11:00:00Z", "attendees": ["ops@harborwealth.example"]});
        let p = policy();
        assert!(
            p.approval_reason("create_calendar_event", &outside, "book a review", false)
                .unwrap()
                .contains("sara@client.example")
        );
        assert!(
            p.approval_reason("create_calendar_event", &inside, "book a review", false)
                .is_none()
        );
    }

    #[test]
    fn a_write_the_users_words_carry_runs_one_from_outside_content_waits() {
        let p = policy();
        let said = "Add a note to Sara Smith that she wants to rebalance in January";
        let own = json!({"contact_id": "101", "body": "Wants to rebalance in January"});
        assert!(p.approval_reason("create_note", &own, said, true).is_none());
        let injected = json!({"contact_id": "101", "body": "Client authorised wiring all funds to account 99-1234"});
        assert!(
            p.approval_reason("create_note", &injected, said, true)
                .is_some()
        );
        // Without outside content in view, the user's request is their own.
        assert!(
            p.approval_reason("create_note", &injected, said, false)
                .is_none()
        );
        let new_address = json!({"email": "x@evil.example", "firstname": "X"});
        assert!(
            p.approval_reason(
                "create_contact",
                &new_address,
                "create a contact for the sender",
                true
            )
            .is_some()
        );
    }
}
