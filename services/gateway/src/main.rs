#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::shutdown::service_main("gateway", gateway::run).await
}
