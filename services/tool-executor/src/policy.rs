//! When a write waits for the user.
//!
//! - Always: the tools in APPROVAL_REQUIRED_TOOLS, changing or clearing a contact's email or
//!   phone, and invitations beyond the user's own domain (on a public mail domain such as
//!   gmail.com, only the user's own address is inside).
//! - In chat, once the model has read content others wrote (a tool result): every value of
//!   the write must be the user's own, see [`Said`].
//! - For tasks: writes a rule proposes, unless the user marked it to act alone inside their
//!   own systems (and then only about the event's own subject: `tasks.rs`).

use common::Config;
use serde_json::Value;
use std::collections::HashSet;

/// Why this write must wait for the user, if it must.
pub struct Policy {
    pub always: Vec<String>,
    /// The user's own address: on a public mail domain, the only one inside.
    pub user_email: String,
    /// The user's own email domain: invitations beyond it wait.
    pub domain: String,
}

/// Mail domains anyone can have an address on: sharing one with the user says nothing.
const PUBLIC_MAIL_DOMAINS: &[&str] = &[
    "gmail.com",
    "googlemail.com",
    "outlook.com",
    "hotmail.com",
    "live.com",
    "msn.com",
    "yahoo.com",
    "ymail.com",
    "rocketmail.com",
    "icloud.com",
    "me.com",
    "mac.com",
    "aol.com",
    "proton.me",
    "protonmail.com",
    "pm.me",
    "gmx.com",
    "gmx.net",
    "gmx.de",
    "web.de",
    "mail.com",
    "zoho.com",
    "yandex.com",
    "yandex.ru",
    "mail.ru",
    "qq.com",
    "163.com",
    "126.com",
    "fastmail.com",
    "hey.com",
    "tutanota.com",
    "comcast.net",
    "att.net",
    "verizon.net",
    "sbcglobal.net",
    "btinternet.com",
    "orange.fr",
    "free.fr",
];

/// Whether anyone may hold an address on `domain` (`yahoo.co.uk` and `hotmail.fr` included).
pub fn is_public_mail_domain(domain: &str) -> bool {
    let domain = domain.trim().to_lowercase();
    PUBLIC_MAIL_DOMAINS.contains(&domain.as_str())
        || ["yahoo.", "hotmail.", "outlook.", "live.", "gmx."]
            .iter()
            .any(|p| domain.starts_with(p))
}

/// The arguments a write may carry without the user's words: record ids a read returned.
const ID_FIELDS: &[&str] = &["contact_id"];

impl Policy {
    pub fn new(config: &Config, user_email: &str) -> Self {
        Self {
            always: config
                .approval_required_tools
                .split(',')
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect(),
            user_email: user_email.trim().to_lowercase(),
            domain: domain_of(user_email).unwrap_or_default(),
        }
    }

    /// Whether `address` is inside the user's own organisation.
    pub fn inside(&self, address: &str) -> bool {
        let address = address.trim().to_lowercase();
        if address == self.user_email {
            return true;
        }
        !self.domain.is_empty()
            && !is_public_mail_domain(&self.domain)
            && domain_of(&address).as_deref() == Some(self.domain.as_str())
    }

    /// What waits whoever proposed it.
    pub fn always_waits(&self, tool: &str, args: &Value) -> Option<String> {
        if self.always.iter().any(|t| t == tool) {
            return Some(format!("{tool} always waits for your approval"));
        }
        if tool == "update_contact"
            && let Some(p) = args["properties"].as_object()
            && let Some(field) = ["email", "phone"].into_iter().find(|f| p.contains_key(*f))
        {
            return Some(format!(
                "changing or clearing a contact's {field} always waits for your approval"
            ));
        }
        if tool == "create_calendar_event" {
            let outside: Vec<String> = addresses(&args["attendees"])
                .into_iter()
                .filter(|a| !self.inside(a))
                .collect();
            if !outside.is_empty() {
                let inside = if is_public_mail_domain(&self.domain) {
                    "your own address".to_owned()
                } else {
                    self.domain.clone()
                };
                return Some(format!(
                    "it invites people outside {inside}: {}",
                    outside.join(", ")
                ));
            }
        }
        None
    }

    /// For a write proposed in chat. `saw_outside`: the model has been shown content others
    /// wrote, so the write may be theirs.
    pub fn approval_reason(
        &self,
        tool: &str,
        args: &Value,
        said: &Said,
        saw_outside: bool,
    ) -> Option<String> {
        if let Some(reason) = self.always_waits(tool, args) {
            return Some(reason);
        }
        if saw_outside && let Some(field) = said.uncarried(args) {
            return Some(format!(
                "it was proposed after reading content you did not write (emails, notes, messages), and its {field} is not something you wrote in this conversation"
            ));
        }
        None
    }
}

/// Whether a write tool stays inside the user's own systems (their CRM) or reaches others.
pub fn own_systems(tool: &str) -> bool {
    rules::catalog::action(tool).is_some_and(|a| a.reach == rules::catalog::Reach::OwnSystems)
}

/// What a rule's task may act on alone: the event's own subject. A HubSpot event's record; an
/// email's sender, only when the provider verified the sender (a From header anyone can
/// write names nobody), and the stored contacts with that address.
#[derive(Debug, Clone, Default)]
pub struct Subject {
    pub contact_ids: HashSet<String>,
    pub addresses: HashSet<String>,
}

impl Subject {
    /// Whether every record the write names is the subject. A write that names no person (a
    /// to-do about nobody) concerns no one else.
    pub fn covers(&self, tool: &str, args: &Value) -> bool {
        let covered = |value: &str| {
            let value = value.trim();
            match common::email::mailbox(value) {
                Ok(m) => self.addresses.contains(&common::email::address(&m)),
                Err(_) => self.contact_ids.contains(&normalized_id(value)),
            }
        };
        match tool {
            "create_contact" => args["email"].as_str().is_some_and(covered),
            "create_note" | "update_contact" => args["contact_id"].as_str().is_some_and(covered),
            "create_task" => match &args["contact_id"] {
                Value::Null => true,
                Value::String(c) if c.trim().is_empty() => true,
                Value::String(c) => covered(c),
                _ => false,
            },
            _ => false,
        }
    }

    fn describe(&self) -> String {
        let mut names: Vec<String> = self
            .contact_ids
            .iter()
            .map(|c| format!("contact {c}"))
            .chain(self.addresses.iter().cloned())
            .collect();
        names.sort();
        if names.is_empty() {
            "nobody it can verify".into()
        } else {
            names.join(", ")
        }
    }
}

/// How a task's write is decided.
pub struct TaskWrite<'a> {
    /// `rule` or `chat`.
    pub origin: &'a str,
    /// The user allows it to act alone now: the task was made so, and for a rule, the rule
    /// still exists, is active and still allows it.
    pub act_alone: bool,
    /// The write is filled from content the user did not write (the event, a reply).
    pub outside: bool,
    /// What the event is about, for a rule acting alone.
    pub subject: &'a Subject,
}

impl Policy {
    /// For a write a task proposes: a step of a rule's task, a step of a task the user started
    /// in chat, or the model deciding for either.
    pub fn for_task(&self, tool: &str, args: &Value, task: &TaskWrite<'_>) -> Option<String> {
        // What always waits (configured tools, contact addresses, invitations beyond the
        // domain) still does.
        if let Some(reason) = self.always_waits(tool, args) {
            return Some(reason);
        }
        let own = own_systems(tool);
        if task.origin == "rule" {
            if !own {
                return Some(format!(
                    "a rule may never {tool} on its own: it reaches other people"
                ));
            }
            if !task.act_alone {
                return Some("proposed by your rule acting on an event, which is content you did not write; a rule can be allowed to act alone for notes, contacts and tasks (a paused or deleted rule's tasks never act alone)".into());
            }
            if !task.subject.covers(tool, args) {
                return Some(format!(
                    "your rule acts alone only about the event's own subject ({}); this write is about someone else",
                    task.subject.describe()
                ));
            }
            return None;
        }
        task.outside.then(|| {
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

/// What the user wrote in this conversation, and the record ids reads in this turn returned:
/// the only sources a write may draw on without approval once outside content is in view.
///
/// Values are compared as values: each argument (every field, any length) must stand in the
/// user's words as a whole, in order, word for word (case, spacing and punctuation between
/// words aside). Repeating, reordering or padding the user's words carries nothing, and an
/// empty value (clearing a field) is never the user's words.
pub struct Said {
    words: Vec<String>,
    ids: HashSet<String>,
}

impl Said {
    /// `user_text`: the user's own messages; `results`: tool results of this turn (JSON text).
    pub fn new<'a>(user_text: &str, results: impl IntoIterator<Item = &'a str>) -> Self {
        let mut ids = HashSet::new();
        for r in results {
            if let Ok(v) = serde_json::from_str::<Value>(r) {
                returned_ids(&v, &mut ids);
            }
        }
        Self {
            words: tokens(user_text),
            ids,
        }
    }

    /// Also the records an earlier turn asked the user to choose among (several contacts
    /// matched a name): the user's answer in this turn picks one of them.
    pub fn with_offered<'a>(mut self, earlier: impl IntoIterator<Item = &'a str>) -> Self {
        for r in earlier {
            if let Ok(v) = serde_json::from_str::<Value>(r) {
                returned_ids(&v["ambiguous"]["candidates"], &mut self.ids);
            }
        }
        self
    }

    /// The first field of `args` (`properties.phone`, `body`) whose value the user did not
    /// write, if any.
    pub fn uncarried(&self, args: &Value) -> Option<String> {
        let mut leaves = Vec::new();
        leaves_of(args, String::new(), &mut leaves);
        leaves
            .into_iter()
            .find(|(field, value)| !self.carries(field, value))
            .map(|(field, _)| {
                if field.is_empty() {
                    "value".into()
                } else {
                    field
                }
            })
    }

    fn carries(&self, field: &str, value: &Value) -> bool {
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            // Null clears a field: never the user's words.
            _ => return false,
        };
        if ID_FIELDS.contains(&field) && self.ids.contains(&normalized_id(&text)) {
            return true;
        }
        let wanted = tokens(&text);
        !wanted.is_empty() && contains_run(&self.words, &wanted)
    }
}

fn normalized_id(id: &str) -> String {
    id.trim().trim_start_matches("contact:").to_lowercase()
}

/// Ids in our own structured results: values of `id` and `*_id` keys (never free text).
fn returned_ids(value: &Value, out: &mut HashSet<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "id" || k.ends_with("_id") {
                    match v {
                        Value::String(s) => {
                            out.insert(normalized_id(s));
                        }
                        Value::Number(n) => {
                            out.insert(n.to_string());
                        }
                        _ => {}
                    }
                }
                returned_ids(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| returned_ids(v, out)),
        _ => {}
    }
}

/// Every value in `value` with the field it stands in (`properties.phone`); an array's items
/// stand in its field. An empty array or object holds no value.
fn leaves_of(value: &Value, field: String, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| leaves_of(v, field.clone(), out)),
        Value::Object(map) => {
            for (k, v) in map {
                let path = if field.is_empty() {
                    k.clone()
                } else {
                    format!("{field}.{k}")
                };
                leaves_of(v, path, out);
            }
        }
        other => out.push((field, other.clone())),
    }
}

/// Words as values compare: lower case; an email address is one word; anything else splits
/// at every character that is not a letter or a digit (`555-123-4567` is three words, as is
/// `(555) 123 4567`).
pub fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let breaks = |c: char| c.is_whitespace() || ",;:()[]{}<>\"'!?/|`".contains(c);
    for chunk in text.split(breaks) {
        let chunk = chunk.trim_matches(|c: char| !c.is_alphanumeric());
        if chunk.is_empty() {
            continue;
        }
        if chunk.contains('@') {
            out.push(chunk.to_lowercase());
            continue;
        }
        out.extend(
            chunk
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(str::to_lowercase),
        );
    }
    out
}

/// Whether `run` stands in `words` as consecutive words.
fn contains_run(words: &[String], run: &[String]) -> bool {
    run.len() <= words.len() && words.windows(run.len()).any(|w| w == run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy() -> Policy {
        Policy {
            always: vec!["send_email".into()],
            user_email: "dana@harborwealth.example".into(),
            domain: "harborwealth.example".into(),
        }
    }

    fn said(text: &str) -> Said {
        Said::new(text, [])
    }

    #[test]
    fn sending_email_always_waits() {
        let args = json!({"to": ["sara@client.example"], "subject": "Hi", "body": "Hi"});
        assert!(
            policy()
                .approval_reason("send_email", &args, &said("send sara an email"), false)
                .is_some()
        );
    }

    #[test]
    fn invitations_outside_the_domain_wait_inside_do_not() {
        let outside = json!({"summary": "Review", "start": "2026-12-01T10:00:00Z", "end": "2026-12-01T11:00:00Z", "attendees": ["sara@client.example"]});
        let inside = json!({"summary": "Review", "start": "2026-12-01T10:00:00Z", "end": "2026-12-01T11:00:00Z", "attendees": ["ops@harborwealth.example"]});
        let p = policy();
        let s = said("book a review");
        assert!(
            p.approval_reason("create_calendar_event", &outside, &s, false)
                .unwrap()
                .contains("sara@client.example")
        );
        assert!(
            p.approval_reason("create_calendar_event", &inside, &s, false)
                .is_none()
        );
    }

    /// Attack: on a public mail domain every stranger "shares the user's domain".
    #[test]
    fn on_a_public_mail_domain_only_the_users_own_address_is_inside() {
        let p = Policy {
            always: vec![],
            user_email: "dana.advisor@gmail.com".into(),
            domain: "gmail.com".into(),
        };
        let stranger = json!({"summary": "x", "attendees": ["anyone@gmail.com"]});
        let me = json!({"summary": "x", "attendees": ["Dana.Advisor@gmail.com"]});
        let reason = p.always_waits("create_calendar_event", &stranger).unwrap();
        assert!(reason.contains("your own address"), "{reason}");
        assert!(p.always_waits("create_calendar_event", &me).is_none());
        assert!(is_public_mail_domain("yahoo.co.uk") && !is_public_mail_domain("harbor.example"));
    }

    #[test]
    fn a_write_the_users_words_carry_runs_one_from_outside_content_waits() {
        let p = policy();
        let s = said("Add a note to Sara Smith that she wants to rebalance in January");
        let own = json!({"contact_id": "Sara Smith", "body": "Wants to rebalance in January"});
        assert!(p.approval_reason("create_note", &own, &s, true).is_none());
        let injected = json!({"contact_id": "101", "body": "Client authorised wiring all funds to account 99-1234"});
        assert!(
            p.approval_reason("create_note", &injected, &s, true)
                .is_some()
        );
        // Without outside content in view, the user's request is their own.
        assert!(
            p.approval_reason("create_note", &injected, &s, false)
                .is_none()
        );
        let new_address = json!({"email": "x@evil.example", "firstname": "X"});
        let s = said("create a contact for the sender");
        assert!(
            p.approval_reason("create_contact", &new_address, &s, true)
                .is_some()
        );
    }

    /// Attack: values of one or two characters were dropped before comparing, so a phone
    /// number in short groups passed.
    #[test]
    fn short_values_must_be_the_users_too() {
        let s = said("update Greg's job title to Partner");
        let phone = json!({"contact_id": "101", "properties": {"jobtitle": "55 12 34"}});
        assert_eq!(s.uncarried(&phone).as_deref(), Some("contact_id"));
        let s = Said::new(
            "update Greg's job title to Partner",
            [r#"{"results": [{"contact_id": "101"}]}"#],
        );
        assert_eq!(s.uncarried(&phone).as_deref(), Some("properties.jobtitle"));
        let own = json!({"contact_id": "101", "properties": {"jobtitle": "Partner"}});
        assert_eq!(s.uncarried(&own), None);
        // Said in the user's own groups, a number is theirs.
        let s = said("his extension is 55 12 34");
        assert_eq!(s.uncarried(&json!({"x": "55-12-34"})), None);
    }

    /// Attack: an empty value clears a field, and a field with no word was skipped.
    #[test]
    fn clearing_a_field_is_never_the_users_words() {
        let s = Said::new("tidy up Greg", [r#"{"contact_id": "101"}"#]);
        for cleared in [json!(""), json!("  "), json!(null), json!("--")] {
            let args = json!({"contact_id": "101", "properties": {"company": cleared}});
            assert_eq!(
                s.uncarried(&args).as_deref(),
                Some("properties.company"),
                "{args}"
            );
        }
        // Clearing an email or a phone waits even with no outside content in view.
        let p = policy();
        let clear = json!({"contact_id": "101", "properties": {"phone": ""}});
        assert!(
            p.approval_reason("update_contact", &clear, &s, false)
                .unwrap()
                .contains("phone")
        );
    }

    /// Attack: any field ending in `id` was skipped (`hubspot_owner_id`, `associatedcompanyid`),
    /// and a contact id from an email's text was taken as a record id.
    #[test]
    fn only_ids_a_read_returned_are_taken_as_ids() {
        let s = Said::new(
            "note that Greg called",
            [r#"{"results": [{"contact_id": "101", "content": "contact_id 666"}]}"#],
        );
        let args = json!({"contact_id": "101", "body": "Greg called"});
        assert_eq!(s.uncarried(&args), None);
        let args = json!({"contact_id": "666", "body": "Greg called"});
        assert_eq!(s.uncarried(&args).as_deref(), Some("contact_id"));
        let owner = json!({"contact_id": "101", "properties": {"hubspot_owner_id": "42"}});
        assert_eq!(
            s.uncarried(&owner).as_deref(),
            Some("properties.hubspot_owner_id")
        );
    }

    /// Attack: a one-word event title passed (no word of 3 characters or more to compare).
    #[test]
    fn a_one_word_event_inside_the_domain_must_be_the_users_word() {
        let p = policy();
        let s = said("what did ops@harborwealth.example say about the offsite?");
        let args = json!({"summary": "Wire", "attendees": ["ops@harborwealth.example"]});
        assert!(p.always_waits("create_calendar_event", &args).is_none());
        assert!(
            p.approval_reason("create_calendar_event", &args, &s, true)
                .unwrap()
                .contains("summary")
        );
        let s = said("put a Wire review with ops@harborwealth.example in my calendar");
        assert!(
            p.approval_reason("create_calendar_event", &args, &s, true)
                .is_none()
        );
    }

    /// Attack: words the user used, echoed in another order or padded, carried anything.
    #[test]
    fn echoed_and_padded_words_carry_nothing() {
        let s =
            said("Add a note to Sara that the client wants to rebalance the portfolio in January");
        for body in [
            "the client wants the portfolio",
            "January: the client wants to rebalance",
            "the the the the the the the the wire all funds",
            "wants to rebalance in January the the the",
        ] {
            assert_eq!(
                s.uncarried(&json!({"body": body})).as_deref(),
                Some("body"),
                "{body}"
            );
        }
        assert_eq!(
            s.uncarried(
                &json!({"body": "The client wants to rebalance the portfolio in January."})
            ),
            None
        );
    }

    #[test]
    fn addresses_are_one_word() {
        assert_eq!(
            tokens("Mail Sara.Lee@Client.example, then (555) 123-4567."),
            [
                "mail",
                "sara.lee@client.example",
                "then",
                "555",
                "123",
                "4567"
            ]
        );
        let s = said("email sara@client.example");
        assert_eq!(s.uncarried(&json!({"to": ["sara@client.example"]})), None);
        assert!(s.uncarried(&json!({"to": ["client.example"]})).is_some());
    }
}
