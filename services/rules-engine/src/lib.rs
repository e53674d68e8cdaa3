//! rules-engine: fires users' rules and standing instructions on domain events, and resumes
//! tasks that wait for an event or a deadline.
//!
//! For each event (EVENTS stream, durable consumer `rules-engine`) it first ends the waits the
//! event answers, then finds the user's active rules listening to the event's type through the
//! rules index, evaluates their conditions (tier 1, deterministic, with lookups) and records
//! each firing once per (rule, event) with the task that carries out its steps; the task is
//! handed to tool-executor on the TOOLS stream. Rules whose step asks the assistant go to the
//! model there (tier 2), only after tier 1 matched. A timer hands over waits whose deadline
//! passed, so a timeout fires even when no event ever comes.

pub mod engine;
pub mod timer;

use common::Config;
use db::Backends;
use tokio_util::sync::CancellationToken;

pub const CONSUMER: &str = "rules-engine";

pub async fn run(config: Config, cancel: CancellationToken) -> anyhow::Result<()> {
    let backends = Backends::connect(&config, config.db_max_connections.min(8)).await?;
    let engine = engine::Engine {
        db: backends.db.clone(),
        bus: backends.bus.clone(),
        max_depth: config.rules_max_chain_depth.max(1),
        firings_per_minute: config.rules_max_firings_per_minute,
        tokens_per_day: config.model_tokens_per_user_per_day,
    };
    let timer = timer::run(
        backends.db.clone(),
        backends.bus.clone(),
        std::time::Duration::from_millis(config.rules_timer_interval_ms.max(50)),
        cancel.clone(),
    );
    let consume = backends.consume(CONSUMER, engine, &config, cancel);
    let (consumed, ()) = tokio::join!(consume, timer);
    consumed?;
    Ok(())
}
