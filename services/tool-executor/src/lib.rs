//! tool-executor: executes tool invocations from chat and rules, once each, with an audit
//! record. The tools arrive with their own issue; until then it binds its durable consumer on
//! the TOOLS stream and acknowledges every invocation it receives.

use common::Config;
use common::consumer::AckAll;
use db::Backends;
use tokio_util::sync::CancellationToken;

pub const CONSUMER: &str = "tool-executor";

pub async fn run(config: Config, cancel: CancellationToken) -> anyhow::Result<()> {
    let backends = Backends::connect(&config, config.db_max_connections.min(4)).await?;
    backends.consume(CONSUMER, AckAll, &config, cancel).await?;
    Ok(())
}
