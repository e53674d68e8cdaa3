#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::shutdown::service_main("embedding", embedding::run).await
}
