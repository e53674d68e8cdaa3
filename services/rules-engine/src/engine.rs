//! One domain event through the engine: waits it answers, rules it fires.

use actions::ActionError;
use actions::rules as matching;
use common::consumer::{Delivery, HandleError, Handler};
use common::events::{DomainEvent, Envelope, Event};
use common::{Bus, UserId};
use db::DatabaseConnection;
use db::firings::Firing;
use db::tasks::NewTask;
use rules::eval::Answers;
use rules::syntax::WaitTarget;
use serde_json::{Value, json};
use std::time::Instant;
use uuid::Uuid;

pub struct Engine {
    pub db: DatabaseConnection,
    pub bus: Bus,
    /// Firings at this chain depth stop.
    pub max_depth: i32,
    /// Per-user bounds (0: none): firings a minute, and model tokens a day for tier 2.
    pub firings_per_minute: i64,
    pub tokens_per_day: i64,
}

fn action_error(e: ActionError) -> HandleError {
    match e {
        ActionError::Db(e) => e.into(),
        other => HandleError::retry(other),
    }
}

impl Handler for Engine {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandleError> {
        let Event::Domain(event) = &delivery.envelope.event else {
            // doc.upserted and other bookkeeping on the EVENTS stream are not for rules.
            tracing::debug!(subject = %delivery.subject, "not a domain event; nothing for rules");
            return Ok(());
        };
        let started = Instant::now();
        let decided = self.on_event(&delivery.envelope, event).await?;
        tracing::debug!(event.id = %delivery.envelope.id, decided, "event through the rules");
        metrics::counter!("rules_events_total", "decided" => decided).increment(1);
        metrics::histogram!("rules_event_duration_seconds").record(started.elapsed());
        Ok(())
    }
}

impl Engine {
    /// Which tier decided the event: `history`, `none` (no rule listens to its type), `tier1`
    /// (conditions decided, no model), `tier2` (at least one instruction went to the model).
    async fn on_event(
        &self,
        envelope: &Envelope,
        event: &DomainEvent,
    ) -> Result<&'static str, HandleError> {
        let user = envelope.user_id;
        let view = matching::view(envelope, event);
        let event_type = view["type"].as_str().unwrap_or_default().to_owned();
        let keys = rules::Pattern::keys_for(&event_type);
        self.end_waits(user, &keys, &view).await?;
        if event.history {
            return Ok("history");
        }
        let rules = db::rules::candidates(&self.db, user, &keys).await?;
        if rules.is_empty() {
            return Ok("none");
        }
        // The chain depth, asked for only once a rule matched.
        let mut depth: Option<i32> = None;
        let mut tier = "tier1";
        for rule in &rules {
            let Some(compiled) = matching::stored(rule) else {
                continue;
            };
            let mut answers = Answers::new();
            if !matching::matches(&self.db, user, &compiled, &view, &mut answers)
                .await
                .map_err(action_error)?
            {
                continue;
            }
            let needs_model = matching::needs_model(&compiled);
            if needs_model {
                tier = "tier2";
            }
            let depth = match depth {
                Some(d) => d,
                None => {
                    let entity = format!("{}:{}", event.source, event.entity_id);
                    let d = db::tasks::effect_depth(&self.db, user, &entity)
                        .await?
                        .map_or(0, |d| d + 1);
                    *depth.insert(d)
                }
            };
            self.fire(
                envelope,
                rule,
                &compiled,
                &view,
                answers,
                depth,
                needs_model,
            )
            .await?;
        }
        Ok(tier)
    }

    /// Records the firing and its task in one statement, then hands the task over. A
    /// redelivered or replayed event finds both and hands over the same task again, which
    /// runs each step at most once.
    #[allow(clippy::too_many_arguments)]
    async fn fire(
        &self,
        envelope: &Envelope,
        rule: &db::rules::Rule,
        compiled: &rules::Rule,
        view: &Value,
        answers: Answers,
        depth: i32,
        needs_model: bool,
    ) -> Result<(), HandleError> {
        let user = envelope.user_id;
        let id = Uuid::new_v5(&rule.id, envelope.id.as_bytes());
        let event_type = view["type"].as_str().unwrap_or_default().to_owned();
        let mut firing = Firing {
            id,
            user_id: user.0,
            rule_id: rule.id,
            event_id: envelope.id,
            event_type: event_type.clone(),
            event: view.clone(),
            tier: if needs_model { 2 } else { 1 },
            status: "fired".into(),
            detail: json!({"lookups": answers}),
            depth,
            task_id: Some(id),
            created_at: chrono::Utc::now(),
        };
        if depth >= self.max_depth {
            firing.status = "chain_stopped".into();
            firing.task_id = None;
            firing.detail["chain"] = json!({"depth": depth, "bound": self.max_depth});
            db::firings::record(&self.db, &firing, None).await?;
            metrics::counter!("rules_chains_stopped_total").increment(1);
            tracing::warn!(rule.id = %rule.id, event.id = %envelope.id, depth, "rule chain reached its bound; not firing");
            return Ok(());
        }
        // A firing already recorded (a redelivery, a replay) was counted when it was new, and
        // one stopped by a bound stays stopped.
        let recorded = db::firings::get(&self.db, id).await?;
        if recorded
            .as_ref()
            .is_some_and(|f| f.status == "quota_exceeded")
        {
            return Ok(());
        }
        if recorded.is_none()
            && let Some(q) = self.over_quota(user, needs_model).await?
        {
            firing.status = "quota_exceeded".into();
            firing.task_id = None;
            firing.detail["quota"] = json!(q);
            db::firings::record(&self.db, &firing, None).await?;
            metrics::counter!("rules_quota_exceeded_total", "limit" => q.limit).increment(1);
            tracing::warn!(rule.id = %rule.id, event.id = %envelope.id, limit = q.limit, "a user's bound was reached; not firing");
            return Ok(());
        }
        let new = db::firings::record(
            &self.db,
            &firing,
            Some(&NewTask {
                id,
                user,
                title: title_of(&rule.text, &event_type),
                origin: "rule".into(),
                rule: Some(rule.id),
                event: Some(envelope.id),
                turn: None,
                steps: serde_json::to_value(&compiled.steps).unwrap_or_default(),
                context: json!({"event": view, "steps": []}),
                depth,
                act_without_approval: rule.act_without_approval,
            }),
        )
        .await?;
        if new {
            metrics::counter!("rules_firings_total", "tier" => if needs_model { "2" } else { "1" })
                .increment(1);
            tracing::info!(rule.id = %rule.id, event.id = %envelope.id, task.id = %id, depth, "rule fired");
        }
        self.hand_over(user, id, 0, "start").await
    }

    /// The user's bound this firing would pass: firings a minute, then (for the model's tier)
    /// the day's tokens.
    async fn over_quota(
        &self,
        user: UserId,
        needs_model: bool,
    ) -> Result<Option<db::quota::Exceeded>, HandleError> {
        if let Err(q) = db::quota::take(
            &self.db,
            user,
            "rules.firings_per_minute",
            60,
            self.firings_per_minute,
            "rule firings",
        )
        .await?
        {
            return Ok(Some(q));
        }
        if needs_model
            && let Err(q) = db::quota::tokens_today(&self.db, user, self.tokens_per_day).await?
        {
            return Ok(Some(q));
        }
        Ok(None)
    }

    async fn hand_over(
        &self,
        user: UserId,
        task: Uuid,
        step: i32,
        reason: &str,
    ) -> Result<(), HandleError> {
        self.bus
            .publish(&Envelope::task_advance(user, task, step, reason))
            .await
            .map_err(HandleError::retry)?;
        Ok(())
    }

    /// Ends the user's open waits this event answers; a task already parked at its wait is
    /// handed over to carry on (a pending wait is found matched when the task reaches it).
    async fn end_waits(
        &self,
        user: UserId,
        keys: &[String],
        view: &Value,
    ) -> Result<(), HandleError> {
        let waits = db::tasks::open_waits(&self.db, user, keys).await?;
        for wait in waits {
            let Ok(step) = serde_json::from_value::<rules::Wait>(wait.wait.clone()) else {
                tracing::warn!(task.id = %wait.task_id, "unreadable wait; skipped");
                continue;
            };
            let event_type = view["type"].as_str().unwrap_or_default();
            let target = match &step.target {
                WaitTarget::Reply => is_reply(view, &wait.expect),
                WaitTarget::Event(pattern) => pattern.matches(event_type),
            };
            if !target {
                continue;
            }
            let mut answers = Answers::new();
            if !matching::holds(&self.db, user, step.condition.as_ref(), view, &mut answers)
                .await
                .map_err(action_error)?
            {
                continue;
            }
            match db::tasks::resolve(&self.db, wait.task_id, wait.step, view).await? {
                Some(before) if before == "waiting" => {
                    tracing::info!(task.id = %wait.task_id, step = wait.step, "wait answered; resuming the task");
                    self.hand_over(user, wait.task_id, wait.step, "matched")
                        .await?;
                }
                Some(_) => {
                    tracing::info!(task.id = %wait.task_id, step = wait.step, "answered before the task reached its wait");
                }
                None => {}
            }
        }
        Ok(())
    }
}

/// Whether an email answers the one a wait expects: it cites its Message-ID or is received in
/// its thread.
pub fn is_reply(view: &Value, expect: &Value) -> bool {
    if view["type"] != "gmail.email.received" {
        return false;
    }
    let cites = expect["message_id"].as_str().is_some_and(|id| {
        [&view["in_reply_to"], &view["references"]]
            .iter()
            .any(|h| h.as_str().is_some_and(|h| h.contains(id)))
    });
    let in_thread = expect["thread_id"]
        .as_str()
        .is_some_and(|t| view["thread_id"].as_str() == Some(t));
    cites || in_thread
}

fn title_of(text: &str, event_type: &str) -> String {
    let short: String = text.chars().take(80).collect();
    let ellipsis = if text.chars().count() > 80 { "…" } else { "" };
    format!("{short}{ellipsis} (on {event_type})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_cites_the_message_or_shares_the_thread() {
        let expect = json!({"message_id": "<asst1@assistant.invalid>", "thread_id": "t-9"});
        let reply =
            json!({"type": "gmail.email.received", "in_reply_to": "<asst1@assistant.invalid>"});
        assert!(is_reply(&reply, &expect));
        let in_thread = json!({"type": "gmail.email.received", "thread_id": "t-9"});
        assert!(is_reply(&in_thread, &expect));
        let other =
            json!({"type": "gmail.email.received", "thread_id": "t-1", "references": "<x@y>"});
        assert!(!is_reply(&other, &expect));
        let sent = json!({"type": "gmail.email.sent", "thread_id": "t-9"});
        assert!(!is_reply(&sent, &expect));
    }
}
