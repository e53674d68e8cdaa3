use common::{Config, shutdown, telemetry};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    dotenvy::dotenv().ok();
    let config = Config::load()?;
    let _telemetry = telemetry::init("tool-executor", &config);
    let cancel = CancellationToken::new();
    shutdown::cancel_on_signal(cancel.clone());
    let timeout = config.shutdown_timeout();
    shutdown::bounded(tool_executor::run(config, cancel.clone()), &cancel, timeout)
        .await
        .unwrap_or(Ok(()))
}
