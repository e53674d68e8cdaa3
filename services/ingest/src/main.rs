#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::shutdown::service_main("ingest", ingest::run).await
}
