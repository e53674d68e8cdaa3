#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::shutdown::service_main("tool-executor", tool_executor::run).await
}
