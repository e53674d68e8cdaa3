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

use crate::policy::addresses;
use common::events::DocumentInput;
use common::ids::Source;
use common::{Bus, Config, UserId};
use db::DatabaseConnection;
use db::invocations::Invocation;
use providers::{Api, Provider, ProviderError, Providers};
use sea_orm::TransactionTrait;
use serde_json::{Value, json};

pub const WRITE_TOOLS: [&str; 8] = [
    "create_rule",
    "start_task",
    "create_note",
    "create_contact",
    "update_contact",
    "create_task",
    "send_email",
    "create_calendar_event",
];

pub fn is_write(tool: &str) -> bool {
    WRITE_TOOLS.contains(&tool)
}

/// The contact properties `update_contact` documents, and the only ones it sets: an owner,
/// a company association or any other property is not the assistant's to change.
pub const CONTACT_PROPERTIES: [&str; 7] = [
    "firstname",
    "lastname",
    "email",
    "company",
    "phone",
    "jobtitle",
    "lifecyclestage",
];

/// A write's arguments as they will be carried out, or why the tool refuses them (the error is
/// the tool's result for the model). Addresses are parsed strictly, one mailbox per entry, and
/// written back as they will be sent, so what an approval shows is what happens.
pub fn prepare(tool: &str, args: &Value) -> Result<Value, String> {
    let mut args = args.clone();
    if !args.is_object() {
        return Err("arguments must be a JSON object".into());
    }
    let listed = |value: &Value, field: &str| -> Result<Vec<String>, String> {
        common::email::mailboxes(value)
            .map(|list| list.iter().map(common::email::display).collect())
            .map_err(|e| format!("{field}: {e}"))
    };
    match tool {
        "update_contact" => {
            let Some(properties) = args["properties"].as_object().filter(|p| !p.is_empty()) else {
                return Err("properties must name at least one field".into());
            };
            if let Some(other) = properties
                .keys()
                .find(|k| !CONTACT_PROPERTIES.contains(&k.as_str()))
            {
                return Err(format!(
                    "update_contact does not set `{other}`: it sets only {}",
                    CONTACT_PROPERTIES.join(", ")
                ));
            }
            if let Some((k, _)) = properties.iter().find(|(_, v)| !v.is_string()) {
                return Err(format!("properties.{k} must be a text"));
            }
            if let Some(email) = properties.get("email").and_then(Value::as_str)
                && !email.trim().is_empty()
            {
                let m =
                    common::email::mailbox(email).map_err(|e| format!("properties.email: {e}"))?;
                args["properties"]["email"] = json!(common::email::address(&m));
            }
        }
        "send_email" => {
            let to = listed(&args["to"], "to")?;
            if to.is_empty() {
                return Err("to must list at least one email address".into());
            }
            args["to"] = json!(to);
            let cc = listed(&args["cc"], "cc")?;
            if cc.is_empty() {
                args.as_object_mut().map(|o| o.remove("cc"));
            } else {
                args["cc"] = json!(cc);
            }
            for field in ["subject", "body"] {
                if !args[field].is_string() {
                    return Err(format!("{field} is required"));
                }
            }
            if args["subject"]
                .as_str()
                .is_some_and(|s| s.chars().any(char::is_control))
            {
                return Err("subject must be one line".into());
            }
        }
        "create_calendar_event" => {
            let attendees: Vec<String> = common::email::mailboxes(&args["attendees"])
                .map_err(|e| format!("attendees: {e}"))?
                .iter()
                .map(common::email::address)
                .collect();
            if !args["attendees"].is_null() {
                args["attendees"] = json!(attendees);
            }
        }
        "create_contact" => {
            let given = args["email"].as_str().unwrap_or_default();
            let m = common::email::mailbox(given).map_err(|e| format!("email: {e}"))?;
            // `Sara Lee <sara@client.example>` (an email's From, as a rule passes it): the
            // address, and the name when none was given.
            args["email"] = json!(common::email::address(&m));
            if let Some(name) = m.name.as_deref().map(str::trim).filter(|n| !n.is_empty())
                && args["firstname"].is_null()
                && args["lastname"].is_null()
            {
                let (first, last) = name.split_once(' ').unwrap_or((name, ""));
                args["firstname"] = json!(first);
                if !last.is_empty() {
                    args["lastname"] = json!(last);
                }
            }
        }
        _ => {}
    }
    Ok(args)
}

pub fn definitions() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        (
            "create_rule",
            "Keep a standing instruction or a fact the user asks you to keep. An instruction about what to do when something happens (an email arrives, a meeting is booked, a contact is created) acts on those events from now on; a preference or a fact (\"always cc my assistant\", \"Greg prefers calls\") is remembered for chat. The result shows how it was understood (its trigger) for you to tell the user.",
            json!({"type": "object", "properties": {
                "text": {"type": "string", "description": "The instruction in the user's words, or the structured rule they wrote (when <event> [if <condition>] then <action>)."}
            }, "required": ["text"], "additionalProperties": false}),
        ),
        (
            "start_task",
            "Start a task of several steps that can wait for what happens next: e.g. email someone, wait for their reply (with a deadline and what to do if none comes), then act on the reply. Each step that writes still follows the approval rules.",
            json!({"type": "object", "properties": {
                "title": {"type": "string", "description": "What the task is for, in a few words."},
                "steps": {"type": "string", "description": "Steps separated by `;`. An action is `name param=value ...` with values in double quotes when they hold spaces: send_email to=... subject=\"...\" body=\"...\"; create_note contact=<id or email> body=\"...\"; create_contact email=...; create_task title=\"...\"; create_calendar_event summary=\"...\" start=<RFC 3339> end=<RFC 3339> attendees=a@x,b@y; notify text=\"...\"; ask_assistant text=\"what to do, in words\" (you decide then, with the reply in view). A wait: `wait for reply within 3d else notify text=\"...\"` (reply = a reply to the email the step before sent). Values may use {{reply.from_email}}, {{reply.subject}}, {{reply.snippet}}, {{steps.1.thread_id}}."}
            }, "required": ["title", "steps"], "additionalProperties": false}),
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
                "properties": {"type": "object", "description": "Fields to set (at least one). Changing email or phone always waits for the user's approval.",
                    "properties": CONTACT_PROPERTIES.iter().map(|p| (p.to_string(), json!({"type": "string"}))).collect::<serde_json::Map<_, _>>(),
                    "minProperties": 1,
                    "additionalProperties": false}
            }, "required": ["contact_id", "properties"], "additionalProperties": false}),
        ),
        (
            "create_task",
            "Create a task (a to-do) in the user's CRM (HubSpot), optionally about a contact.",
            json!({"type": "object", "properties": {
                "title": {"type": "string"},
                "body": {"type": "string"},
                "priority": {"type": "string", "enum": ["low", "medium", "high"]},
                "due": {"type": "string", "format": "date-time"},
                "contact_id": {"type": "string", "description": "A HubSpot contact id or email address."}
            }, "required": ["title"], "additionalProperties": false}),
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

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The call is wrong (bad arguments): the model is told, nothing is retried.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Db(#[from] db::DbError),
    /// Another attempt is running it under a lease: its outcome is stored when it ends.
    #[error("another attempt is running this write")]
    Busy,
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
        let owner = uuid::Uuid::new_v4();
        let lease = self.lease();
        // Another attempt's lease (a slow call still running, or one that died mid-call) is
        // waited out here, about one lease long: it ends in its outcome, or runs out and is
        // taken over.
        let patience = tokio::time::Instant::now() + lease + lease / 2;
        let claimed = loop {
            match db::invocations::claim(&self.db, invocation.id, owner, lease).await {
                Ok(Some(c)) => break c,
                Ok(None) => match db::invocations::get(&self.db, invocation.id).await {
                    Ok(Some(i)) if i.is_settled() => return Ran::Settled(i),
                    Ok(Some(i)) if i.status == "running" => {
                        if tokio::time::Instant::now() >= patience {
                            return Ran::Retry(WriteError::Busy);
                        }
                        tokio::time::sleep(lease / 6).await;
                    }
                    Ok(Some(i)) => return Ran::Waiting(i),
                    Ok(None) => return Ran::Retry(WriteError::Db(db::DbError::NotFound)),
                    Err(e) => return Ran::Retry(e.into()),
                },
                Err(e) => return Ran::Retry(e.into()),
            }
        };
        let span = tracing::info_span!(
            "execute_tool",
            otel.name = format!("execute_tool {}", claimed.tool),
            gen_ai.operation.name = "execute_tool",
            gen_ai.tool.name = %claimed.tool,
            invocation.id = %claimed.id,
            attempt = claimed.attempts,
        );
        let work = tracing::Instrument::instrument(self.perform(&claimed), span);
        let outcome = self.leased(&claimed, owner, work).await;
        let settled = match outcome {
            Ok(result) => self.succeeded(&claimed, &result).await,
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

    /// How long a claim holds without renewal (`TOOL_LEASE_SECS`).
    fn lease(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.config.tool_lease_secs.max(1))
    }

    /// Runs `work` while renewing the lease on `inv`, so that no other attempt takes it over
    /// however long the provider takes. A renewal that fails says so in the log; the write
    /// goes on (stopping it half-way would be worse than a second attempt's reconciliation).
    async fn leased<T>(
        &self,
        inv: &Invocation,
        owner: uuid::Uuid,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        tokio::pin!(work);
        let lease = self.lease();
        let mut ticks =
            tokio::time::interval_at(tokio::time::Instant::now() + lease / 3, lease / 3);
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = ticks.tick() => {
                    match db::invocations::renew(&self.db, inv.id, owner, lease).await {
                        Ok(true) => {}
                        Ok(false) => tracing::warn!(invocation.id = %inv.id, "the lease on a running write was lost"),
                        Err(e) => tracing::warn!(invocation.id = %inv.id, error = %e, "the lease on a running write could not be renewed"),
                    }
                }
            }
        }
    }

    /// Settles a write that succeeded. When it belongs to a task (a rule's step, a tier-2 turn
    /// the task asked for, or such a write once approved), what it changed is recorded at the
    /// task's chain depth in the same transaction: the event the change causes is one level
    /// deeper, whoever wrote the step, so a rule that feeds itself stops at the bound.
    async fn succeeded(&self, inv: &Invocation, result: &Value) -> Result<Invocation, db::DbError> {
        let txn = self.db.begin().await?;
        let settled = db::invocations::settle(&txn, inv.id, "succeeded", result, None).await?;
        if let Some(task) = inv.task_id
            && let Some(entity) = crate::step_args::effect_of(&inv.tool, result)
            && let Some(t) = db::tasks::get(&txn, task).await?
        {
            db::tasks::record_effect(&txn, UserId(inv.user_id), &entity, t.depth, task).await?;
        }
        txn.commit().await?;
        Ok(settled)
    }

    fn api(&self, user: UserId, provider: Provider) -> Result<Api, WriteError> {
        let providers = self.providers.clone().ok_or_else(|| {
            WriteError::Invalid("provider connections are off on this server".into())
        })?;
        Ok(Api::new(providers, user, provider))
    }

    async fn perform(&self, inv: &Invocation) -> Result<Value, WriteError> {
        let user = UserId(inv.user_id);
        let retry = inv.attempts > 1;
        let reference = format!("asst{}", inv.id.simple());
        let prepared = prepare(&inv.tool, &inv.arguments).map_err(WriteError::Invalid)?;
        let args = &prepared;
        let text = |field: &str| -> Result<String, WriteError> {
            args[field]
                .as_str()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| WriteError::Invalid(format!("{field} is required")))
        };
        match inv.tool.as_str() {
            "create_rule" => {
                let rule_text = text("text")?;
                if rule_text.chars().count() > 2_000 {
                    return Err(WriteError::Invalid(
                        "text is longer than 2000 characters".into(),
                    ));
                }
                // The rule's id is the invocation's: a retry finds it instead of compiling again.
                let rule = match db::rules::get(&self.db, user, inv.id).await? {
                    Some(rule) => rule,
                    None => {
                        let input = actions::rules::RuleInput {
                            text: rule_text,
                            act_without_approval: false,
                            memory: false,
                        };
                        db::quota::active_rules(
                            &self.db,
                            user,
                            self.config.rules_max_active_per_user,
                        )
                        .await?
                        .map_err(|q| WriteError::Invalid(q.to_string()))?;
                        let new = actions::rules::prepare(
                            &self.db,
                            &self.bus,
                            &self.config,
                            user,
                            inv.id,
                            &input,
                        )
                        .await
                        .map_err(|e| match e {
                            actions::ActionError::RuleSyntax(p) => {
                                WriteError::Invalid(format!("the rule does not parse: {p}"))
                            }
                            actions::ActionError::Invalid(f) => WriteError::Invalid(f.to_string()),
                            actions::ActionError::Db(e) => WriteError::Db(e),
                            actions::ActionError::Quota(q) => WriteError::Invalid(q.to_string()),
                            other => {
                                WriteError::Provider(ProviderError::Transient(other.to_string()))
                            }
                        })?;
                        db::rules::create(&self.db, user, &new).await?
                    }
                };
                let compiled = rule.compiled.clone().unwrap_or_default();
                Ok(json!({
                    "rule_id": rule.id,
                    "kind": rule.kind,
                    "text": rule.text,
                    "trigger": compiled["trigger"].as_str().or(compiled["canonical"].as_str()),
                }))
            }
            "start_task" => {
                let title = text("title")?;
                let steps = rules::parse_steps(&text("steps")?)
                    .map_err(|e| WriteError::Invalid(format!("steps: {e}")))?;
                let created = db::tasks::create(
                    &self.db,
                    &db::tasks::NewTask {
                        id: inv.id,
                        user,
                        title: title.chars().take(200).collect(),
                        origin: "chat".into(),
                        rule: None,
                        event: None,
                        turn: inv.turn_id,
                        steps: serde_json::to_value(&steps).unwrap_or_default(),
                        context: json!({"steps": []}),
                        depth: 0,
                        act_without_approval: false,
                    },
                )
                .await?;
                let start = common::events::Envelope::task_advance(user, inv.id, 0, "start");
                self.bus
                    .publish(&start)
                    .await
                    .map_err(|e| WriteError::Provider(ProviderError::Transient(e.to_string())))?;
                Ok(json!({
                    "task_id": inv.id,
                    "title": title,
                    "steps": rules::syntax::Steps(&steps).to_string(),
                    "started": created,
                }))
            }
            "create_note" => {
                let body = text("body")?;
                let api = self.api(user, Provider::Hubspot)?;
                let contact = self.contact_id(&api, &text("contact_id")?).await?;
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
                let email = text("email")?;
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
                let Some(properties) = args["properties"].as_object() else {
                    return Err(WriteError::Invalid("properties is required".into()));
                };
                let api = self.api(user, Provider::Hubspot)?;
                let contact = self.contact_id(&api, &text("contact_id")?).await?;
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
            "create_task" => {
                let title = text("title")?;
                let priority = match args["priority"].as_str().map(str::to_lowercase).as_deref() {
                    None | Some("") | Some("medium") | Some("normal") => "MEDIUM",
                    Some("high") | Some("urgent") => "HIGH",
                    Some("low") => "LOW",
                    Some(other) => {
                        return Err(WriteError::Invalid(format!(
                            "priority must be low, medium or high, not {other}"
                        )));
                    }
                };
                let due = match args["due"].as_str().filter(|d| !d.trim().is_empty()) {
                    Some(d) => chrono::DateTime::parse_from_rfc3339(d.trim())
                        .map_err(|_| WriteError::Invalid("due must be an RFC 3339 time".into()))?
                        .with_timezone(&chrono::Utc),
                    None => chrono::Utc::now(),
                };
                let api = self.api(user, Provider::Hubspot)?;
                let contact = match args["contact_id"].as_str().filter(|c| !c.trim().is_empty()) {
                    Some(c) => Some(self.contact_id(&api, c).await?),
                    None => None,
                };
                let base = &self.config.hubspot_api_base;
                if retry
                    && let Some(id) = self
                        .hubspot_find(&api, "tasks", "hs_task_body", "CONTAINS_TOKEN", &reference)
                        .await?
                {
                    tracing::info!(task.id = %id, "the task exists from an earlier attempt; not creating it again");
                    return Ok(json!({"task_id": id, "title": title, "created": true}));
                }
                let body = args["body"].as_str().unwrap_or_default().trim();
                let mut request = json!({
                    "properties": {
                        "hs_task_subject": title,
                        "hs_task_body": format!("{body}\n\n(added by the assistant, ref {reference})").trim_start().to_owned(),
                        "hs_task_priority": priority,
                        "hs_task_status": "NOT_STARTED",
                        "hs_task_type": "TODO",
                        "hs_timestamp": due.to_rfc3339(),
                    }
                });
                if let Some(contact) = &contact {
                    request["associations"] = json!([{
                        "to": {"id": contact},
                        "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 204}]
                    }]);
                }
                let created: Value = api
                    .post(&format!("{base}/crm/v3/objects/tasks"), &request)
                    .await?;
                Ok(
                    json!({"task_id": created["id"], "title": title, "priority": priority, "contact_id": contact, "created": true}),
                )
            }
            "send_email" => {
                let to: Vec<String> = args["to"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default();
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
                let from = db::users::find(&self.db, user)
                    .await?
                    .map(|u| u.email)
                    .unwrap_or_default();
                let raw =
                    crate::mime::message(&from, args, &message_id).map_err(WriteError::Invalid)?;
                let raw =
                    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, raw);
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

    /// A HubSpot contact id from an id (`9001`, `contact:9001`) or an email address.
    async fn contact_id(&self, api: &Api, value: &str) -> Result<String, WriteError> {
        let value = value.trim().trim_start_matches("contact:");
        if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(value.to_owned());
        }
        let Some(email) = rules::view::address_of(value) else {
            return Err(WriteError::Invalid(
                "contact_id must be a HubSpot id or an email address".into(),
            ));
        };
        self.hubspot_find(api, "contacts", "email", "EQ", &email)
            .await?
            .ok_or_else(|| WriteError::Invalid(format!("no HubSpot contact has the email {email}")))
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
