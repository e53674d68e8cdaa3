//! rules-engine: matches domain events against users' rules and standing instructions.
//! Matching arrives with its own issue; until then it binds its durable consumer on the
//! EVENTS stream and acknowledges every event, so the consumer's position stays current.

use common::Config;
use common::bus::Bus;
use common::consumer::{self, ConsumerOptions, Delivery, HandleError, Handler};
use db::dead_letters::PgDeadLetters;
use tokio_util::sync::CancellationToken;

pub const CONSUMER: &str = "rules-engine";

#[derive(Clone)]
pub struct Rules;

impl Handler for Rules {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandleError> {
        tracing::debug!(subject = %delivery.subject, event.id = %delivery.envelope.id, "event seen; no rules yet");
        Ok(())
    }
}

pub async fn run(config: Config, cancel: CancellationToken) -> anyhow::Result<()> {
    let db = db::connect(&config.database_url, config.db_max_connections.min(4)).await?;
    let bus = Bus::connect(
        &config.nats_url,
        &config.nats_prefix,
        config.publish_timeout(),
    )
    .await?;
    let topology = bus.apply_topology(&config).await?;
    consumer::run(
        bus,
        &topology,
        CONSUMER,
        Rules,
        PgDeadLetters(db),
        ConsumerOptions::from_config(&config),
        cancel,
    )
    .await?;
    Ok(())
}
