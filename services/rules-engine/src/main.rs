#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::shutdown::service_main("rules-engine", rules_engine::run).await
}
