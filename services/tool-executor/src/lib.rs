//! tool-executor: executes tool invocations from chat and rules, once each, with an audit
//! record. The tools arrive with their own issue; until then it binds its durable consumer on
//! the TOOLS stream and acknowledges every invocation it receives.

use common::Config;
use common::bus::Bus;
use common::consumer::{self, ConsumerOptions, Delivery, HandleError, Handler};
use db::dead_letters::PgDeadLetters;
use tokio_util::sync::CancellationToken;

pub const CONSUMER: &str = "tool-executor";

#[derive(Clone)]
pub struct Tools;

impl Handler for Tools {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandleError> {
        tracing::debug!(subject = %delivery.subject, event.id = %delivery.envelope.id, "tool invocation seen; no tools yet");
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
        Tools,
        PgDeadLetters(db),
        ConsumerOptions::from_config(&config),
        cancel,
    )
    .await?;
    Ok(())
}
