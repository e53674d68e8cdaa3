//! rules-engine: matches domain events against users' rules and standing instructions.
//! Matching arrives with its own issue; until then it binds its durable consumer on the
//! EVENTS stream and acknowledges every event, so the consumer's position stays current.

use common::Config;
use common::consumer::AckAll;
use db::Backends;
use tokio_util::sync::CancellationToken;

pub const CONSUMER: &str = "rules-engine";

pub async fn run(config: Config, cancel: CancellationToken) -> anyhow::Result<()> {
    let backends = Backends::connect(&config, config.db_max_connections.min(4)).await?;
    backends.consume(CONSUMER, AckAll, &config, cancel).await?;
    Ok(())
}
