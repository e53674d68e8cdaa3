/// Per-thread heaps: requests allocate and free on whichever worker runs them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::shutdown::service_main("gateway", gateway::run).await
}
