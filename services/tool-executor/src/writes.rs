//! Tools that change something at a provider, each at most once.
//!
//! Every invocation is in the ledger (`db::invocations`, unique per user and idempotency key)
//! before the provider is called, and is claimed for each attempt. A first attempt calls the
//! provider; a later attempt (the process died, or the answer was lost, after the call may
//! have reached the provider) first asks the provider whether the effect exists, by the
//! provider's own means:
//! - Calendar: the event id is chosen by us (the invocation id); inserting it again answers
//!   409, and the event is read back;
//! - Gmail: the message carries `Message-ID: <asst-{id}@assistant.invalid>`; before sending
//!   again, `rfc822msgid:` finds it;
//! - HubSpot notes: the body ends with the reference `asst{id}`, searched for with
//!   `CONTAINS_TOKEN`; contacts: the email address, which HubSpot keeps unique;
//!   `update_contact` sets the same values again, which changes nothing.
//!
//! What a write creates is submitted to the index at once, so it is searchable before the
//! next sync reads it back.

use common::events::DocumentInput;
use common::ids::Source;
use common::{Bus, Config, UserId};
use db::DatabaseConnection;
use db::invocations::Invocation;
use providers::{Api, Provider, ProviderError, Providers};
use serde_json::{Value, json};

pub const WRITE_TOOLS: [&str; 6] = [
    "create_memory_rule",
    "create_note",
    "create_contact",
    "update_contact",
    "send_email",
    "create_calendar_event",
];

pub fn is_write(tool: &str) -> bool {
    WRITE_TOOLS.contains(&tool)
}

pub fn definitions() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        (
            "create_memory_rule",
            "Remember a standing instruction or a fact the user asks you to keep (\"always cc my assistant\", \"Greg prefers calls\").",
            json!({"type": "object", "properties": {
                "text": {"type": "string", "description": "The rule, in the user's words."}
            }, "required": ["text"], "additionalProperties": false}),
        ),
        (
            "create_note",
            "Add a note to a CRM contact (HubSpot). Find the contact first; if a name matches several contacts, ask the user which one.",
            json!({"type": "object", "properties": {
                "contact_id": {"type": "string", "description": "The HubSpot contact id."},
                "body": {"type": "string", "description": "The note, in plain words."}
            }, "required": ["contact_id", "body"], "additionalProperties": false}),
        ),
        (
            "create_contact",
            "Create a CRM contact (HubSpot).",
            json!({"type": "object", "properties": {
                "email": {"type": "string"}, "firstname": {"type": "string"}, "lastname": {"type": "string"},
                "company": {"type": "string"}, "phone": {"type": "string"}
            }, "required": ["email"], "additionalProperties": false}),
        ),
        (
            "update_contact",
            "Change fields of a CRM contact (HubSpot).",
            json!({"type": "object", "properties": {
                "contact_id": {"type": "string"},
                "properties": {"type": "object", "description": "Fields to set: firstname, lastname, email, company, phone, jobtitle, lifecyclestage.",
                    "additionalProperties": {"type": "string"}}
            }, "required": ["contact_id", "properties"], "additionalProperties": false}),
        ),
        (
            "send_email",
            "Send an email from the user's Gmail. Always waits for the user's approval.",
            json!({"type": "object", "properties": {
                "to": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "cc": {"type": "array", "items": {"type": "string"}},
                "subject": {"type": "string"}, "body": {"type": "string"}
            }, "required": ["to", "subject", "body"], "additionalProperties": false}),
        ),
        (
            "create_calendar_event",
            "Create an event on the user's primary Google Calendar, inviting attendees.",
            json!({"type": "object", "properties": {
                "summary": {"type": "string"}, "description": {"type": "string"},
                "start": {"type": "string", "format": "date-time"}, "end": {"type": "string", "format": "date-time"},
                "attendees": {"type": "array", "items": {"type": "string"}}
            }, "required": ["summary", "start", "end"], "additionalProperties": false}),
        ),
    ]
}

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

fn domain_of(address: &str) -> Option<String> {
    address
        .rsplit_once('@')
        .map(|(_, d)| d.trim().trim_end_matches('>').to_lowercase())
}

fn addresses(value: &Value) -> Vec<String> {
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

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The call is wrong (bad arguments): the model is told, nothing is retried.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Db(#[from] db::DbError),
}

/// Runs writes for users with their own credentials.
#[derive(Clone)]
pub struct Writer {
    pub db: DatabaseConnection,
    pub bus: Bus,
    pub providers: Option<Providers>,
    pub config: std::sync::Arc<Config>,
}

/// How running an invocation ended.
#[derive(Debug)]
pub enum Ran {
    /// Settled (now or before): its status and result.
    Settled(Invocation),
    /// Waiting for the user; not run.
    Waiting(Invocation),
    /// Failed in a way a later attempt may fix (rate limit, outage, database): try again.
    Retry(WriteError),
}

impl Writer {
    /// Runs `invocation` at most once: a settled one answers its stored result.
    pub async fn run(&self, invocation: &Invocation) -> Ran {
        if invocation.is_settled() {
            return Ran::Settled(invocation.clone());
        }
        let claimed = match db::invocations::claim(&self.db, invocation.id).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                return match db::invocations::get(&self.db, invocation.id).await {
                    Ok(Some(i)) if i.is_settled() => Ran::Settled(i),
                    Ok(Some(i)) => Ran::Waiting(i),
                    Ok(None) => Ran::Retry(WriteError::Db(db::DbError::NotFound)),
                    Err(e) => Ran::Retry(e.into()),
                };
            }
            Err(e) => return Ran::Retry(e.into()),
        };
        let span = tracing::info_span!(
            "execute_tool",
            otel.name = format!("execute_tool {}", claimed.tool),
            gen_ai.operation.name = "execute_tool",
            gen_ai.tool.name = %claimed.tool,
            invocation.id = %claimed.id,
            attempt = claimed.attempts,
        );
        let outcome = tracing::Instrument::instrument(self.perform(&claimed), span).await;
        let settled = match outcome {
            Ok(result) => {
                db::invocations::settle(&self.db, claimed.id, "succeeded", &result, None).await
            }
            Err(WriteError::Invalid(reason)) => {
                db::invocations::settle(
                    &self.db,
                    claimed.id,
                    "failed",
                    &json!({"error": reason}),
                    Some(&reason),
                )
                .await
            }
            Err(WriteError::Provider(e)) if !retryable(&e) => {
                let reason = e.to_string();
                db::invocations::settle(
                    &self.db,
                    claimed.id,
                    "failed",
                    &json!({"error": reason}),
                    Some(&reason),
                )
                .await
            }
            Err(e) => return Ran::Retry(e),
        };
        metrics::counter!("tool_invocations_total", "tool" => claimed.tool.clone()).increment(1);
        match settled {
            Ok(i) => Ran::Settled(i),
            Err(e) => Ran::Retry(e.into()),
        }
    }

    fn api(&self, user: UserId, provider: Provider) -> Result<Api, WriteError> {
        let providers = self.providers.clone().ok_or_else(|| {
            WriteError::Invalid("provider connections are off on this server".into())
        })?;
        Ok(Api::new(providers, user, provider))
    }

    async fn perform(&self, inv: &Invocation) -> Result<Value, WriteError> {
        let user = UserId(inv.user_id);
        let args = &inv.arguments;
        let retry = inv.attempts > 1;
        let reference = format!("asst{}", inv.id.simple());
        let text = |field: &str| -> Result<String, WriteError> {
            args[field]
                .as_str()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| WriteError::Invalid(format!("{field} is required")))
        };
        match inv.tool.as_str() {
            "create_memory_rule" => {
                let rule_text = text("text")?;
                if rule_text.chars().count() > 2_000 {
                    return Err(WriteError::Invalid(
                        "text is longer than 2000 characters".into(),
                    ));
                }
                let rule = db::rules::create(&self.db, user, inv.id, &rule_text, "memory").await?;
                Ok(json!({"rule_id": rule.id, "text": rule.text}))
            }
            "create_note" => {
                let contact = text("contact_id")?
                    .trim_start_matches("contact:")
                    .to_owned();
                if !contact.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(WriteError::Invalid(
                        "contact_id must be a HubSpot id".into(),
                    ));
                }
                let body = text("body")?;
                let api = self.api(user, Provider::Hubspot)?;
                let base = &self.config.hubspot_api_base;
                if retry
                    && let Some(id) = self
                        .hubspot_find(&api, "notes", "hs_note_body", "CONTAINS_TOKEN", &reference)
                        .await?
                {
                    tracing::info!(note.id = %id, "the note exists from an earlier attempt; not creating it again");
                    return Ok(self.note_created(user, &id, &contact, &body).await);
                }
                let created: Value = api
                    .post(
                        &format!("{base}/crm/v3/objects/notes"),
                        &json!({
                            "properties": {
                                "hs_note_body": format!("{body}\n\n(added by the assistant, ref {reference})"),
                                "hs_timestamp": chrono::Utc::now().to_rfc3339(),
                            },
                            "associations": [{
                                "to": {"id": contact},
                                "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 202}]
                            }]
                        }),
                    )
                    .await?;
                let id = created["id"].as_str().unwrap_or_default().to_owned();
                Ok(self.note_created(user, &id, &contact, &body).await)
            }
            "create_contact" => {
                let email = text("email")?.to_lowercase();
                let api = self.api(user, Provider::Hubspot)?;
                let base = &self.config.hubspot_api_base;
                if let Some(id) = self
                    .hubspot_find(&api, "contacts", "email", "EQ", &email)
                    .await?
                {
                    return Ok(
                        json!({"contact_id": id, "created": false, "note": "a contact with this email already exists"}),
                    );
                }
                let mut properties = serde_json::Map::new();
                for field in ["email", "firstname", "lastname", "company", "phone"] {
                    if let Some(v) = args[field].as_str() {
                        properties.insert(field.into(), json!(v.trim()));
                    }
                }
                properties.insert("email".into(), json!(email));
                let created: Value = api
                    .post(
                        &format!("{base}/crm/v3/objects/contacts"),
                        &json!({"properties": properties}),
                    )
                    .await?;
                let id = created["id"].as_str().unwrap_or_default().to_owned();
                self.reflect(user, contact_document(&id, &Value::Object(properties)))
                    .await;
                Ok(json!({"contact_id": id, "created": true}))
            }
            "update_contact" => {
                let contact = text("contact_id")?
                    .trim_start_matches("contact:")
                    .to_owned();
                if !contact.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(WriteError::Invalid(
                        "contact_id must be a HubSpot id".into(),
                    ));
                }
                let Some(properties) = args["properties"].as_object().filter(|p| !p.is_empty())
                else {
                    return Err(WriteError::Invalid(
                        "properties must name at least one field".into(),
                    ));
                };
                let api = self.api(user, Provider::Hubspot)?;
                let base = &self.config.hubspot_api_base;
                let updated: Value = api
                    .patch(
                        &format!("{base}/crm/v3/objects/contacts/{contact}"),
                        &json!({"properties": properties}),
                    )
                    .await?;
                self.reflect(user, contact_document(&contact, &updated["properties"]))
                    .await;
                Ok(json!({"contact_id": contact, "updated": properties.keys().collect::<Vec<_>>()}))
            }
            "send_email" => {
                let to = addresses(&args["to"]);
                if to.is_empty() || to.iter().any(|a| !a.contains('@')) {
                    return Err(WriteError::Invalid("to must list email addresses".into()));
                }
                let cc = addresses(&args["cc"]);
                let subject = text("subject")?;
                let body = text("body")?;
                let api = self.api(user, Provider::Google)?;
                let base = &self.config.gmail_api_base;
                let message_id = format!("<{reference}@assistant.invalid>");
                if retry {
                    let found: Value = api
                        .get(
                            &format!("{base}/gmail/v1/users/me/messages"),
                            &[("q", format!("rfc822msgid:{message_id}"))],
                        )
                        .await?;
                    if let Some(id) = found["messages"][0]["id"].as_str() {
                        tracing::info!(
                            "the email was sent by an earlier attempt; not sending it again"
                        );
                        return Ok(json!({"message_id": id, "sent": true, "to": to}));
                    }
                }
                let mut raw = format!(
                    "To: {}\r\n{}Subject: {}\r\nMessage-ID: {message_id}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n",
                    to.join(", "),
                    if cc.is_empty() {
                        String::new()
                    } else {
                        format!("Cc: {}\r\n", cc.join(", "))
                    },
                    subject.replace(['\r', '\n'], " "),
                );
                raw = base64::Engine::encode(
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                    raw.as_bytes(),
                );
                let sent: Value = api
                    .post(
                        &format!("{base}/gmail/v1/users/me/messages/send"),
                        &json!({"raw": raw}),
                    )
                    .await?;
                Ok(
                    json!({"message_id": sent["id"], "thread_id": sent["threadId"], "sent": true, "to": to}),
                )
            }
            "create_calendar_event" => {
                let summary = text("summary")?;
                let (start, end) = (text("start")?, text("end")?);
                let parse = |v: &str, field: &str| {
                    chrono::DateTime::parse_from_rfc3339(v).map_err(|_| {
                        WriteError::Invalid(format!("{field} must be an RFC 3339 time"))
                    })
                };
                if parse(&start, "start")? >= parse(&end, "end")? {
                    return Err(WriteError::Invalid("start must be before end".into()));
                }
                let attendees: Vec<Value> = addresses(&args["attendees"])
                    .into_iter()
                    .map(|a| json!({"email": a}))
                    .collect();
                let api = self.api(user, Provider::Google)?;
                let base = &self.config.calendar_api_base;
                // Our id for the event: a second insert of it answers 409.
                let event_id = inv.id.simple().to_string();
                let body = json!({
                    "id": event_id, "summary": summary,
                    "description": args["description"].as_str().unwrap_or_default(),
                    "start": {"dateTime": start}, "end": {"dateTime": end},
                    "attendees": attendees,
                });
                let event: Value = match api
                    .post(&format!("{base}/calendars/primary/events"), &body)
                    .await
                {
                    Ok(e) => e,
                    Err(ProviderError::Status { status: 409, .. }) => {
                        tracing::info!("the event exists from an earlier attempt; reading it back");
                        api.get(&format!("{base}/calendars/primary/events/{event_id}"), &[])
                            .await?
                    }
                    Err(e) => return Err(e.into()),
                };
                self.reflect(
                    user,
                    DocumentInput {
                        source: Source::parse("calendar").expect("valid source"),
                        kind: Source::parse("meeting").expect("valid kind"),
                        external_id: event_id.clone(),
                        title: summary,
                        body: args["description"].as_str().unwrap_or_default().to_owned(),
                        metadata: json!({"start": body["start"], "end": body["end"], "attendees": body["attendees"], "html_link": event["htmlLink"]}),
                        occurred_at: parse(&start, "start").ok().map(|d| d.with_timezone(&chrono::Utc)),
                    },
                )
                .await;
                Ok(json!({"event_id": event_id, "link": event["htmlLink"], "created": true}))
            }
            other => Err(WriteError::Invalid(format!("{other} is not a write tool"))),
        }
    }

    /// The id of the HubSpot object whose `property` matches `value`, if any.
    async fn hubspot_find(
        &self,
        api: &Api,
        object_type: &str,
        property: &str,
        operator: &str,
        value: &str,
    ) -> Result<Option<String>, WriteError> {
        let base = &self.config.hubspot_api_base;
        let found: Value = api
            .post(
                &format!("{base}/crm/v3/objects/{object_type}/search"),
                &json!({
                    "filterGroups": [{"filters": [{"propertyName": property, "operator": operator, "value": value}]}],
                    "limit": 1
                }),
            )
            .await?;
        Ok(found["results"][0]["id"].as_str().map(str::to_owned))
    }

    async fn note_created(&self, user: UserId, id: &str, contact: &str, body: &str) -> Value {
        self.reflect(
            user,
            DocumentInput {
                source: Source::parse("hubspot").expect("valid source"),
                kind: Source::parse("note").expect("valid kind"),
                external_id: format!("note:{id}"),
                title: body.lines().next().unwrap_or("Note").chars().take(80).collect(),
                body: body.to_owned(),
                metadata: json!({"object_type": "notes", "id": id, "associations": {"contacts": [contact]}}),
                occurred_at: Some(chrono::Utc::now()),
            },
        )
        .await;
        json!({"note_id": id, "contact_id": contact, "created": true})
    }

    /// Submits what a write created to the index now; the next sync reads the provider's own
    /// version over it. Failing here loses nothing: the sync brings it anyway.
    async fn reflect(&self, user: UserId, doc: DocumentInput) {
        let limits = common::intake::Limits {
            max_batch: self.config.max_batch_documents,
            max_body_bytes: self.config.max_document_bytes,
        };
        let doc = match common::intake::admit(doc, "document", &limits) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "created object not indexable; the sync will bring it");
                return;
            }
        };
        if let Err(e) = common::intake::submit(&self.bus, user, vec![doc], &[]).await {
            tracing::warn!(error = %e, "created object not indexed now; the sync will bring it");
        }
    }
}

fn contact_document(id: &str, properties: &Value) -> DocumentInput {
    let s = |k: &str| {
        properties[k]
            .as_str()
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let name = [s("firstname"), s("lastname")]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    let line = |label: &str, key: &str| s(key).map(|v| format!("{label}: {v}"));
    DocumentInput {
        source: Source::parse("hubspot").expect("valid source"),
        kind: Source::parse("contact").expect("valid kind"),
        external_id: format!("contact:{id}"),
        title: if name.is_empty() {
            s("email").unwrap_or_else(|| format!("Contact {id}"))
        } else {
            name
        },
        body: [
            line("Email", "email"),
            line("Phone", "phone"),
            line("Company", "company"),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("\n"),
        metadata: json!({"object_type": "contacts", "id": id, "properties": properties}),
        occurred_at: Some(chrono::Utc::now()),
    }
}

fn retryable(e: &ProviderError) -> bool {
    matches!(
        e,
        ProviderError::Transient(_) | ProviderError::RateLimited(_) | ProviderError::Db(_)
    ) || e.status().is_some_and(|s| s >= 500)
}

#[cfg(test)]
mod tests {
    use super::*;

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
