//! embedding: indexes changed documents (chunk, embed in batches, replace the document's
//! chunks in one transaction) and answers query-embedding requests for the gateway's search
//! over core NATS request/reply, so only this service holds the model in memory.

use common::bus::Bus;
use common::config::EmbeddingProvider;
use common::consumer::{Delivery, HandleError, Handler};
use common::events::{EMBED_QUERY_SUBJECT, EmbedQuery, EmbedQueryReply, Event, Lane};
use common::{Config, DocumentId};
use db::Backends;
use db::DatabaseConnection;
use db::chunks::{self, NewChunk, Replaced};
use embed::{Batcher, Chunker, Embedder, LocalModel, OpenAiEmbedder, Priority};
use futures::StreamExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub mod insights;
pub mod tier1;

/// Queue group, so that several embedding services share query load.
const QUERY_GROUP: &str = "embedding";

/// Builds the configured embedder and checks it fits the index.
pub fn embedder(config: &Config) -> anyhow::Result<Embedder> {
    let embedder = match config.embedding_provider {
        EmbeddingProvider::Local => Embedder::Local(Arc::new(LocalModel::load(Path::new(
            &config.embedding_model_dir,
        ))?)),
        EmbeddingProvider::Openai => Embedder::OpenAi(Arc::new(OpenAiEmbedder::new(
            &config.openai_base_url,
            &config.openai_api_key,
            &config.embedding_model,
            config.embedding_dimensions,
        ))),
    };
    anyhow::ensure!(
        embedder.dimensions() == config.embedding_dimensions,
        "the embedder makes {}-dimensional vectors but EMBEDDING_DIMENSIONS is {}",
        embedder.dimensions(),
        config.embedding_dimensions
    );
    Ok(embedder)
}

pub fn chunker(config: &Config) -> Chunker {
    Chunker::from_model_dir(
        Path::new(&config.embedding_model_dir),
        config.chunk_tokens,
        config.chunk_overlap,
    )
    .unwrap_or_else(|e| {
        tracing::warn!(error = %e, "no tokenizer; chunking by words");
        Chunker::words(config.chunk_tokens, config.chunk_overlap)
    })
}

#[derive(Clone)]
pub struct Indexer {
    pub db: DatabaseConnection,
    pub batcher: Batcher,
    pub chunker: Arc<Chunker>,
}

impl Indexer {
    /// Indexes the document's current content if it is still `content_hash` and not yet
    /// indexed (or, `again`, even if it is).
    pub async fn index(
        &self,
        id: DocumentId,
        content_hash: &str,
        priority: Priority,
        again: bool,
    ) -> Result<Replaced, HandleError> {
        let doc = match db::documents::get(&self.db, id).await? {
            Some(d) => d,
            None => return Ok(Replaced::Stale),
        };
        if doc.content_hash != content_hash {
            return Ok(Replaced::Stale);
        }
        if !again && doc.indexed_hash.as_deref() == Some(content_hash) {
            return Ok(Replaced::AlreadyIndexed);
        }
        let mut pieces = if doc.kind == "transcript" {
            self.chunker.split_turns(&doc.body)
        } else {
            self.chunker.split(&doc.body)
        };
        if pieces.is_empty() {
            pieces.push(String::new());
        }
        // The title and the people go with every piece: they are what a chunk is about, and
        // "the email from Maria about her 401k" names both.
        let (heading, people) = heading(&doc.title, &doc.kind, &doc.metadata);
        let texts = pieces
            .iter()
            .map(|p| format!("{}\n{people}\n{p}", doc.title).trim().to_owned())
            .collect();
        let vectors = self
            .batcher
            .embed_many(texts, priority)
            .await
            .map_err(HandleError::retry)?;
        let new: Vec<NewChunk> = pieces
            .into_iter()
            .zip(vectors)
            .map(|(content, embedding)| NewChunk { content, embedding })
            .collect();
        let outcome = chunks::replace(&self.db, id, content_hash, &heading, new, again).await?;
        tracing::debug!(document.id = %id, ?outcome, "indexed");
        Ok(outcome)
    }
}

/// What every chunk of a document is about, for full text (title, then who sent, received or
/// took part, with addresses) and for the embedding (the same people by name only).
pub fn heading(title: &str, kind: &str, metadata: &serde_json::Value) -> (String, String) {
    let text = |key: &str| metadata[key].as_str().unwrap_or_default().trim().to_owned();
    let lines: Vec<(&str, String)> = match kind {
        "email" => vec![
            ("From", text("from")),
            ("To", text("to")),
            ("Cc", text("cc")),
        ],
        "transcript" => vec![(
            "Participants",
            metadata["participants"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|p| p.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default(),
        )],
        _ => Vec::new(),
    };
    let lines: Vec<(&str, String)> = lines.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    let full = lines
        .iter()
        .map(|(label, v)| format!("{label}: {v}"))
        .collect::<Vec<_>>()
        .join("\n");
    // "Maria Alvarez <maria@x.com>, b@y.com" -> "Maria Alvarez, b@y.com"
    let names = lines
        .iter()
        .map(|(label, v)| {
            let people: Vec<&str> = v
                .split(',')
                .map(|p| match p.split_once('<') {
                    Some((name, _)) if !name.trim().is_empty() => name.trim().trim_matches('"'),
                    _ => p.trim(),
                })
                .collect();
            format!("{label}: {}", people.join(", "))
        })
        .collect::<Vec<_>>()
        .join("\n");
    let heading = if full.is_empty() {
        title.to_owned()
    } else {
        format!("{title}\n{full}")
    };
    (heading, names)
}

impl Handler for Indexer {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandleError> {
        let priority = match delivery.envelope.lane {
            Lane::Interactive => Priority::Urgent,
            Lane::Bulk => Priority::Bulk,
        };
        match delivery.envelope.event {
            // Product intelligence reads it again; the index stays as it is.
            Event::DocUpserted(e) if e.insights_only => Ok(()),
            Event::DocUpserted(e) => self
                .index(e.document_id, &e.content_hash, priority, e.again)
                .await
                .map(|_| ()),
            _ => Err(HandleError::poison("embedding only handles doc.upserted")),
        }
    }
}

/// Answers query-embedding requests until `cancel` fires.
pub async fn serve_queries(
    bus: Bus,
    batcher: Batcher,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let mut requests = bus
        .client
        .queue_subscribe(bus.ns.subject(EMBED_QUERY_SUBJECT), QUERY_GROUP.to_owned())
        .await?;
    loop {
        let msg = tokio::select! {
            m = requests.next() => match m { Some(m) => m, None => break },
            _ = cancel.cancelled() => break,
        };
        let (bus, batcher) = (bus.clone(), batcher.clone());
        tokio::spawn(async move {
            let Some(reply_to) = msg.reply else { return };
            let reply = match serde_json::from_slice::<EmbedQuery>(&msg.payload) {
                Ok(q) => match batcher.embed_one(q.text).await {
                    Ok(v) => EmbedQueryReply {
                        vector: Some(v),
                        error: None,
                    },
                    Err(e) => EmbedQueryReply {
                        vector: None,
                        error: Some(e.to_string()),
                    },
                },
                Err(e) => EmbedQueryReply {
                    vector: None,
                    error: Some(format!("bad request: {e}")),
                },
            };
            let body = serde_json::to_vec(&reply).expect("reply serializes");
            let _ = bus.client.publish(reply_to, body.into()).await;
        });
    }
    let _ = requests.unsubscribe().await;
    Ok(())
}

/// Documents an indexing consumer keeps in flight, in model batches: one batch in the model,
/// the next filling up meanwhile, and one being stored (chunks written, HNSW and full-text
/// index updated) and acknowledged. With fewer (16, the consumers' default, against batches
/// of 32), the model waited for the database after every batch: a first sync of 10,000
/// emails kept it busy 71% of the time, idle 11%.
const INDEXING_BATCHES_IN_FLIGHT: usize = 3;

/// The indexing consumers' options: the deployment's, with room for
/// [`INDEXING_BATCHES_IN_FLIGHT`] batches of documents.
pub fn indexing_options(config: &Config) -> common::consumer::ConsumerOptions {
    let mut options = common::consumer::ConsumerOptions::from_config(config);
    options.concurrency = options
        .concurrency
        .max(INDEXING_BATCHES_IN_FLIGHT * config.embed_batch_size);
    options
}

/// Runs the indexing consumers (interactive and bulk lanes, one model), the insights
/// consumers (the same lanes) and the query responder until `cancel` fires.
pub async fn run(config: Config, cancel: CancellationToken) -> anyhow::Result<()> {
    let embedder = embedder(&config)?;
    let backends = Backends::connect(&config, config.db_max_connections).await?;
    let batcher = Batcher::spawn(embedder, config.embed_batch_size, Duration::from_millis(2));
    let indexer = Indexer {
        db: backends.db.clone(),
        batcher: batcher.clone(),
        chunker: Arc::new(chunker(&config)),
    };
    let insights = insights::Insights::new(
        backends.db.clone(),
        backends.bus.clone(),
        batcher.clone(),
        db::insights::Joining {
            join: config.insights_theme_join,
            ask: config.insights_theme_ask,
            regroup: config.insights_theme_regroup,
        },
        match config.chat_provider {
            common::config::ChatProvider::Openai => {
                Some(providers::model::ModelClient::new(&config))
            }
            common::config::ChatProvider::None => None,
        },
        config.insights_model_band,
        config.model_tokens_per_user_per_day,
    )
    .await?;
    let queries = tokio::spawn(serve_queries(backends.bus.clone(), batcher, cancel.clone()));
    let digests = tokio::spawn(insights::digests(
        backends.db.clone(),
        Duration::from_secs(3_600),
        cancel.clone(),
    ));
    let indexing = indexing_options(&config);
    let (interactive, bulk, insights_interactive, insights_bulk, backlog, previews) = tokio::join!(
        backends.consume_with(
            "embedding",
            indexer.clone(),
            indexing.clone(),
            cancel.clone()
        ),
        backends.consume_with("embedding-bulk", indexer, indexing, cancel.clone()),
        backends.consume("insights", insights.clone(), &config, cancel.clone()),
        backends.consume("insights-bulk", insights.clone(), &config, cancel.clone()),
        backends.consume(
            "insights-backlog",
            insights.clone(),
            &config,
            cancel.clone()
        ),
        backends.consume("insights-preview", insights, &config, cancel),
    );
    interactive?;
    bulk?;
    insights_interactive?;
    insights_bulk?;
    backlog?;
    previews?;
    queries.await??;
    digests.await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexing_keeps_three_batches_in_flight_unless_configured_higher() {
        let config = Config {
            consumer_concurrency: 16,
            embed_batch_size: 32,
            ..Config::default()
        };
        assert_eq!(indexing_options(&config).concurrency, 96);
        let config = Config {
            consumer_concurrency: 200,
            ..config
        };
        assert_eq!(indexing_options(&config).concurrency, 200);
        // Everything else is the deployment's.
        let options = indexing_options(&config);
        let defaults = common::consumer::ConsumerOptions::from_config(&config);
        assert_eq!(options.retry_base, defaults.retry_base);
        assert_eq!(options.retry_max, defaults.retry_max);
    }
}
