//! Rules as every door sees them: compiling a structured rule for storage, the event view a
//! rule reads, tier-1 matching with its lookups (the engine, backtests and `ctl` match the
//! same way), and backtests over the user's past events in the EVENTS stream.

use crate::{ActionError, Result};
use chrono::{DateTime, Utc};
use common::events::{DomainEvent, Envelope, Event};
use common::{Bus, UserId};
use db::DatabaseConnection;
use rules::Lookup;
use rules::eval::Answers;
use rules::syntax::{Rule, Step};
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

/// What a structured rule is stored as.
pub struct Compiled {
    pub rule: Rule,
    pub compiled: Value,
    pub triggers: Vec<String>,
}

/// Whether a rule's text is written in the rule language (else it is plain language): it
/// starts with `when` and an event pattern (`when gmail.email.received ...`, `when * ...`),
/// where plain language goes on with words (`When someone emails me ...`).
pub fn is_structured(text: &str) -> bool {
    let mut words = text.split_whitespace();
    let first = words.next().unwrap_or_default();
    let second = words.next().unwrap_or_default();
    first.eq_ignore_ascii_case("when") && (second.contains('.') || second.starts_with('*'))
}

pub fn compile(text: &str) -> std::result::Result<Compiled, rules::ParseError> {
    let rule = rules::parse_rule(text)?;
    Ok(Compiled {
        compiled: serde_json::to_value(&rule).expect("a rule serializes"),
        triggers: rule.keys(),
        rule,
    })
}

/// The stored compiled form of a rule, if it fires on events.
pub fn stored(rule: &db::rules::Rule) -> Option<Rule> {
    match rule.kind.as_str() {
        "structured" | "instruction" => {
            let c = rule.compiled.as_ref()?;
            match serde_json::from_value(c.get("rule").unwrap_or(c).clone()) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(rule.id = %rule.id, error = %e, "a stored rule's compiled form could not be read; skipped");
                    metrics::counter!("rules_unreadable_total").increment(1);
                    None
                }
            }
        }
        _ => None,
    }
}

/// Whether a rule goes to the model when it matches (tier 2).
pub fn needs_model(rule: &Rule) -> bool {
    rule.steps.iter().any(|s| match s {
        Step::Act(a) => a.name == "ask_assistant",
        Step::Wait(_) => false,
    })
}

/// The event as rules read it, with its id, time and document.
pub fn view(envelope: &Envelope, event: &DomainEvent) -> Value {
    let mut view = rules::view::build(
        event.source.as_str(),
        &event.name,
        &event.entity_id,
        &envelope.at.to_rfc3339(),
        &event.data,
    );
    view["event_id"] = json!(envelope.id);
    if let Some(d) = event.document_id {
        view["document_id"] = json!(d.0);
    }
    view
}

/// Answers one lookup from what is stored.
pub async fn lookup(db: &DatabaseConnection, user: UserId, l: &Lookup) -> Result<bool> {
    let stage = db::documents::contact_stage(db, user, &l.argument).await?;
    Ok(match l.name.as_str() {
        "contact_exists" => stage.is_some(),
        // HubSpot's stage for clients is `customer`; advisors' own data often says `client`.
        "is_client" => stage.is_some_and(|s| {
            s.eq_ignore_ascii_case("customer") || s.eq_ignore_ascii_case("client")
        }),
        _ => false,
    })
}

/// Whether a lookup asks about the event's sender when the provider did not verify it.
pub fn about_unverified_sender(event: &Value, l: &Lookup) -> bool {
    event["from_verified"] != json!(true)
        && event["from_email"]
            .as_str()
            .is_some_and(|from| from.eq_ignore_ascii_case(&l.argument))
}

/// Evaluates a condition, answering the lookups it reaches; the answers say what was asked.
pub async fn holds(
    db: &DatabaseConnection,
    user: UserId,
    condition: Option<&rules::Expr>,
    event: &Value,
    answers: &mut Answers,
) -> Result<bool> {
    let Some(condition) = condition else {
        return Ok(true);
    };
    loop {
        match rules::evaluate(condition, event, answers) {
            Ok(result) => return Ok(result),
            Err(need) => {
                // A From header anyone can write says nothing about who sent it: lookups of an
                // unverified sender (`is_client(from)` for a spoofed client address) are false.
                let answer = if about_unverified_sender(event, &need) {
                    false
                } else {
                    lookup(db, user, &need).await?
                };
                answers.insert(need.key(), answer);
            }
        }
    }
}

/// Tier 1 for one rule and one event.
pub async fn matches(
    db: &DatabaseConnection,
    user: UserId,
    rule: &Rule,
    event: &Value,
    answers: &mut Answers,
) -> Result<bool> {
    let event_type = event["type"].as_str().unwrap_or_default();
    if !rule.concerns(event_type) {
        return Ok(false);
    }
    holds(db, user, rule.condition.as_ref(), event, answers).await
}

/// What a backtest found for one past event.
#[derive(Debug, Serialize)]
pub struct WouldFire {
    pub event_id: Uuid,
    pub event_type: String,
    pub at: String,
    /// The lookups the condition made and their answers.
    pub lookups: Answers,
    /// 1: the rule would act; 2: the model would be asked (it decides at run time).
    pub tier: u8,
    /// The steps with their parameters filled from the event (a template without a value says
    /// so instead).
    pub steps: Vec<String>,
    pub history: bool,
}

#[derive(Debug, Serialize)]
pub struct Backtest {
    pub events_read: usize,
    pub matched: usize,
    pub would_fire: Vec<WouldFire>,
    /// Whether reading stopped at the limit before `to`.
    pub truncated: bool,
}

/// Runs `rule` over the user's domain events between `from` and `to` (read back from the
/// EVENTS stream, which keeps 14 days) in dry run: nothing is recorded or executed.
pub async fn backtest(
    db: &DatabaseConnection,
    bus: &Bus,
    user: UserId,
    rule: &Rule,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    limit: usize,
) -> Result<Backtest> {
    if let (Some(f), Some(t)) = (from, to)
        && f > t
    {
        return Err(ActionError::invalid("from", "must be before `to`"));
    }
    let (events, truncated) = past_events(bus, user, from, to, limit).await?;
    let mut out = Backtest {
        events_read: events.len(),
        matched: 0,
        would_fire: Vec::new(),
        truncated,
    };
    for envelope in &events {
        let Event::Domain(d) = &envelope.event else {
            continue;
        };
        let view = view(envelope, d);
        let mut answers = Answers::new();
        if !matches(db, user, rule, &view, &mut answers).await? {
            continue;
        }
        out.matched += 1;
        let context = json!({"event": view, "steps": []});
        let steps = rule
            .steps
            .iter()
            .map(|s| match s {
                Step::Act(a) => rendered(a, &context),
                Step::Wait(_) => s.to_string(),
            })
            .collect();
        out.would_fire.push(WouldFire {
            event_id: envelope.id,
            event_type: view["type"].as_str().unwrap_or_default().to_owned(),
            at: envelope.at.to_rfc3339(),
            lookups: answers,
            tier: if needs_model(rule) { 2 } else { 1 },
            steps,
            history: d.history,
        });
    }
    Ok(out)
}

/// An action with its templates filled in, as text.
pub fn rendered(action: &rules::Action, context: &Value) -> String {
    let params = action
        .params
        .iter()
        .map(|(k, v)| {
            let value = rules::template::render(v, context).unwrap_or_else(|e| format!("<{e}>"));
            (k.clone(), value)
        })
        .collect();
    rules::Action {
        name: action.name.clone(),
        params,
    }
    .to_string()
}

/// The user's domain events in a time range, oldest first, from the EVENTS stream; `true`
/// when `limit` cut the range short.
pub async fn past_events(
    bus: &Bus,
    user: UserId,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    limit: usize,
) -> Result<(Vec<Envelope>, bool)> {
    use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
    use futures::StreamExt;
    let unavailable = |e: String| ActionError::Stream(e.into());
    let stream_name = bus.ns.stream("EVENTS");
    let stream = bus
        .js
        .get_stream(&stream_name)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let subject = bus.ns.subject(&format!("events.{user}.>"));
    let deliver_policy = match from {
        Some(t) => DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from_unix_timestamp_nanos(
                t.timestamp_nanos_opt().unwrap_or(0) as i128,
            )
            .map_err(|e| unavailable(e.to_string()))?,
        },
        None => DeliverPolicy::All,
    };
    // The last message for this user now: reading stops there rather than waiting for more.
    let last = match stream.get_last_raw_message_by_subject(&subject).await {
        Ok(m) => m.sequence,
        Err(_) => return Ok((Vec::new(), false)),
    };
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: subject,
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let mut out = Vec::new();
    loop {
        let next = tokio::time::timeout(std::time::Duration::from_secs(2), messages.next()).await;
        let Ok(Some(Ok(message))) = next else { break };
        let info = message.info().map_err(|e| unavailable(e.to_string()))?;
        let sequence = info.stream_sequence;
        if let Ok(envelope) = Envelope::from_slice(&message.payload) {
            if to.is_some_and(|t| envelope.at > t) {
                break;
            }
            if matches!(envelope.event, Event::Domain(_)) {
                if out.len() >= limit {
                    return Ok((out, true));
                }
                out.push(envelope);
            }
        }
        if sequence >= last {
            break;
        }
    }
    Ok((out, false))
}

#[cfg(test)]
mod tests {
    #[test]
    fn structured_rules_start_with_when_and_an_event_pattern() {
        use super::is_structured;
        assert!(is_structured("when gmail.email.received then log"));
        assert!(is_structured("When hubspot.* then log"));
        assert!(is_structured("when * then log"));
        assert!(is_structured("when gmail.email.received if x then"));
        assert!(!is_structured(
            "When someone emails me who is not in HubSpot, create a contact"
        ));
        assert!(!is_structured("Always cc my assistant"));
    }
}

/// A rule as the user writes it.
#[derive(Debug, Clone)]
pub struct RuleInput {
    pub text: String,
    /// Writes inside the user's own systems (notes, contacts, tasks) run without asking.
    pub act_without_approval: bool,
    /// Keep the text as something to remember, without compiling it.
    pub memory: bool,
}

/// Turns what the user wrote into the rule to store: a structured rule parsed (its errors
/// name the line and column), a plain-language instruction compiled by the model into a
/// trigger (refused when no model is configured), or a memory.
pub async fn prepare(
    db: &DatabaseConnection,
    bus: &Bus,
    config: &common::Config,
    user: UserId,
    id: Uuid,
    input: &RuleInput,
) -> Result<db::rules::NewRule> {
    let text = input.text.trim();
    if input.memory {
        return Ok(db::rules::NewRule::memory(id, text));
    }
    if is_structured(text) {
        let c = compile(text).map_err(ActionError::RuleSyntax)?;
        return Ok(db::rules::NewRule {
            id,
            text: text.to_owned(),
            kind: "structured".into(),
            compiled: Some(json!({"rule": c.compiled, "canonical": c.rule.to_string()})),
            triggers: c.triggers,
            act_without_approval: input.act_without_approval,
        });
    }
    if config.chat_provider == common::config::ChatProvider::None {
        return Err(ActionError::invalid(
            "text",
            "plain-language rules need a model to compile them, and none is configured (CHAT_PROVIDER=none); write a structured rule (when <event> [if <condition>] then <action>), or send \"memory\": true to keep the text as something to remember",
        ));
    }
    // Compiling is the model's work, counted in the user's daily allowance.
    db::quota::tokens_today(db, user, config.model_tokens_per_user_per_day).await??;
    let started = std::time::Instant::now();
    let request = serde_json::to_vec(&common::events::CompileRequest {
        text: text.to_owned(),
    })
    .expect("a request serializes");
    let subject = bus.ns.subject(common::events::RULES_COMPILE_SUBJECT);
    let timeout = std::time::Duration::from_secs(config.chat_model_timeout_secs.max(5) * 2);
    // tool-executor answers; while it starts or restarts nobody does for a moment, so ask again
    // for a few seconds before saying it is unavailable.
    let mut attempt = 0;
    let answer = loop {
        let asked = tokio::time::timeout(
            timeout,
            bus.client.request(subject.clone(), request.clone().into()),
        )
        .await
        .map_err(|e| ActionError::Stream(Box::new(e)))?;
        match asked {
            Ok(answer) => break answer,
            Err(e)
                if e.kind() == async_nats::client::RequestErrorKind::NoResponders
                    && attempt < 15 =>
            {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => {
                return Err(ActionError::Stream(
                    format!("the model service (tool-executor) did not answer: {e}").into(),
                ));
            }
        }
    };
    let reply: common::events::CompileReply =
        serde_json::from_slice(&answer.payload).map_err(|e| ActionError::Stream(Box::new(e)))?;
    db::chat::record_model_call(
        db,
        &db::chat::ModelCall {
            id: Uuid::new_v4(),
            user,
            turn: None,
            provider: "compile".into(),
            model: reply.model.clone().unwrap_or_default(),
            input_tokens: reply.input_tokens.min(i32::MAX as u64) as i32,
            output_tokens: reply.output_tokens.min(i32::MAX as u64) as i32,
            latency_ms: started.elapsed().as_millis().min(i32::MAX as u128) as i32,
            first_token_ms: None,
            status: if reply.error.is_some() { "error" } else { "ok" }.into(),
            error: None,
        },
    )
    .await?;
    if reply.memory {
        return Ok(db::rules::NewRule::memory(id, text));
    }
    let Some(trigger) = reply.trigger.as_deref() else {
        return Err(ActionError::invalid(
            "text",
            reply
                .error
                .as_deref()
                .unwrap_or("the instruction could not be compiled"),
        ));
    };
    let parsed =
        rules::parse_rule(&format!("{trigger} then log")).map_err(ActionError::RuleSyntax)?;
    let rule = Rule {
        patterns: parsed.patterns,
        condition: parsed.condition,
        steps: vec![Step::Act(rules::Action {
            name: "ask_assistant".into(),
            params: vec![("text".into(), text.replace("{{", "{ {"))],
        })],
    };
    Ok(db::rules::NewRule {
        id,
        text: text.to_owned(),
        kind: "instruction".into(),
        compiled: Some(json!({
            "rule": rule,
            "trigger": trigger,
            "compiled_by": {"model": reply.model, "input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens},
        })),
        triggers: rule.keys(),
        act_without_approval: input.act_without_approval,
    })
}
