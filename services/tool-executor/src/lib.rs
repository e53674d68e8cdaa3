//! tool-executor: the assistant's agent and its tools. Two durable consumers:
//! - `agent` (CHAT stream) answers each turn: the model streamed through any OpenAI-compatible
//!   endpoint (or, with CHAT_PROVIDER=none, a retrieval-only answer), tools run with the
//!   user's own data, every event published on the TURNS stream for the gateway to relay;
//! - `tool-executor` (TOOLS stream) runs what approvals released and advances tasks (rule
//!   firings and tasks started in chat), each step once.

pub mod agent;
pub mod citations;
pub mod compile;
pub mod mime;
/// The model client lives in `providers`, shared with the insights pipeline.
pub use providers::model;
pub mod policy;
pub mod settled;
pub mod step_args;
pub mod tasks;
pub mod tools;
pub mod writes;

use common::Config;
use common::config::ChatProvider;
use common::consumer::ConsumerOptions;
use db::Backends;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const CONSUMER: &str = "tool-executor";

/// The TOOLS stream's consumer: approvals settled for a chat turn, and tasks to advance.
pub struct Tools {
    pub settled: settled::Settled,
    pub tasks: tasks::Tasks,
}

impl common::consumer::Handler for Tools {
    async fn handle(
        &self,
        delivery: common::consumer::Delivery,
    ) -> Result<(), common::consumer::HandleError> {
        match &delivery.envelope.event {
            common::events::Event::TaskAdvance(advance) => {
                self.tasks
                    .advance(delivery.envelope.user_id, advance.clone())
                    .await
            }
            _ => self.settled.handle(delivery).await,
        }
    }
}
pub const AGENT: &str = "agent";

pub async fn run(config: Config, cancel: CancellationToken) -> anyhow::Result<()> {
    let backends = Backends::connect(&config, config.db_max_connections.min(8)).await?;
    let model = match config.chat_provider {
        ChatProvider::Openai => Some(model::ModelClient::new(&config)),
        ChatProvider::None => {
            tracing::info!("CHAT_PROVIDER=none: chat answers with sources only");
            None
        }
    };
    let providers = if config.token_encryption_keys.trim().is_empty() {
        tracing::warn!("TOKEN_ENCRYPTION_KEYS is not set: tools that write to providers are off");
        None
    } else {
        Some(providers::Providers::new(
            &config,
            backends.db.clone(),
            config.key_ring()?,
        )?)
    };
    let model_for_compile = model.clone();
    let cancel_compile = cancel.clone();
    let config_arc = Arc::new(config.clone());
    let writer = writes::Writer {
        db: backends.db.clone(),
        bus: backends.bus.clone(),
        providers,
        config: config_arc.clone(),
    };
    let agent = agent::Agent {
        db: backends.db.clone(),
        bus: backends.bus.clone(),
        searcher: actions::search::Searcher::new(
            backends.db.clone(),
            backends.bus.clone(),
            &config,
        ),
        model,
        config: config_arc,
        writer: writer.clone(),
        running: Default::default(),
    };
    let mut options = ConsumerOptions::from_config(&config);
    options.concurrency = config.chat_max_concurrent_turns.max(1);
    // A turn can outlast the ack wait (several model calls); say it is still being answered.
    let ack_wait = Duration::from_secs(backends.topology.consumer(AGENT)?.ack_wait_secs);
    options.keep_alive = Some((ack_wait / 3).max(Duration::from_millis(500)));
    let turns = backends.consume_with(AGENT, agent, options, cancel.clone());
    let tools = Tools {
        settled: settled::Settled {
            writer: writer.clone(),
            searcher: actions::search::Searcher::new(
                backends.db.clone(),
                backends.bus.clone(),
                &config,
            ),
        },
        tasks: tasks::Tasks {
            writer,
            config: Arc::new(config.clone()),
            // Each running task holds one of these for its lock, never one the steps need.
            locks: db::connect(
                &config.database_url,
                config.consumer_concurrency.clamp(1, 64) as u32,
            )
            .await?,
        },
    };
    // A write can outlast the ack wait (a slow provider): say it is still running, so the
    // message is not delivered again meanwhile (the ledger's lease holds even if it were).
    let mut tools_options = ConsumerOptions::from_config(&config);
    let ack_wait = Duration::from_secs(backends.topology.consumer(CONSUMER)?.ack_wait_secs);
    tools_options.keep_alive = Some((ack_wait / 3).max(Duration::from_millis(500)));
    let tools = backends.consume_with(CONSUMER, tools, tools_options, cancel);
    let compiler = async {
        match model_for_compile {
            Some(model) => compile::serve(backends.bus.clone(), model, cancel_compile).await,
            None => Ok(()),
        }
    };
    let (a, b, c) = tokio::join!(turns, tools, compiler);
    a?;
    b?;
    c?;
    Ok(())
}
