//! The `tool-executor` consumer (TOOLS stream): when every approval a turn waited for is
//! settled, runs what was approved and the calls held with it, each once through the ledger,
//! and adds every result (rejected and expired ones too) to the conversation.

use crate::agent::write_outcome;
use crate::citations::Sources;
use crate::tools;
use crate::writes::{Ran, Writer};
use common::UserId;
use common::consumer::{Delivery, HandleError, Handler};
use common::events::Event;
use serde_json::json;

pub struct Settled {
    pub writer: Writer,
    pub searcher: actions::search::Searcher,
}

impl Handler for Settled {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandleError> {
        let user = delivery.envelope.user_id;
        match delivery.envelope.event {
            Event::ApprovalsSettled(s) => self.run(user, s.turn_id).await,
            _ => Err(HandleError::poison(
                "the tool executor handles approvals.settled",
            )),
        }
    }
}

impl Settled {
    async fn run(&self, user: UserId, turn_id: uuid::Uuid) -> Result<(), HandleError> {
        let db = &self.writer.db;
        let Some(turn) = db::chat::turn(db, user, turn_id).await? else {
            return Ok(());
        };
        let invocations =
            db::invocations::of_step(db, turn.id, &format!("turn:{}:", turn.id)).await?;
        if invocations.iter().any(|i| i.status == "awaiting_approval") {
            return Ok(());
        }
        let (earlier, own) = db::chat::history(db, turn.conversation_id, turn.id).await?;
        let mut sources = Sources::default();
        for m in earlier.iter().chain(own.iter()) {
            for c in serde_json::from_value::<Vec<common::chat::Citation>>(m.citations.clone())
                .unwrap_or_default()
            {
                sources.restore(c);
            }
        }
        let ctx = tools::Context {
            db,
            searcher: &self.searcher,
            user,
            hubspot_portal: tokio::sync::OnceCell::new(),
        };
        for inv in invocations {
            let Some(step) = inv.step else { continue };
            if own.iter().any(|m| m.step == step) {
                continue;
            }
            let outcome = if crate::writes::is_write(&inv.tool) {
                match self.writer.run(&inv).await {
                    Ran::Settled(i) => write_outcome(&i),
                    Ran::Waiting(i) => write_outcome(&i),
                    Ran::Retry(e) => return Err(HandleError::retry(e)),
                }
            } else if inv.is_settled() {
                write_outcome(&inv)
            } else {
                let outcome =
                    tools::run(&ctx, &mut sources, &inv.tool, &inv.arguments.to_string()).await;
                let status = if outcome.ok { "succeeded" } else { "failed" };
                db::invocations::settle(
                    db,
                    inv.id,
                    status,
                    &json!({"summary": outcome.summary}),
                    None,
                )
                .await?;
                outcome
            };
            db::chat::record_message(
                db,
                turn.conversation_id,
                turn.id,
                step,
                "tool",
                &outcome.content.to_string(),
                None,
                inv.tool_call_id.as_deref(),
                &serde_json::to_value(&outcome.shown).unwrap_or_default(),
            )
            .await?;
            tracing::info!(tool = %inv.tool, invocation.id = %inv.id, ok = outcome.ok, "settled invocation recorded in the conversation");
        }
        Ok(())
    }
}
