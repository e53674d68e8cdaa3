//! ingest: turns submitted documents and verified webhooks into documents in Postgres and
//! announces each change as a `doc.upserted` domain event.

pub mod sync;

use common::bus::Bus;
use common::consumer::{Delivery, HandleError, Handler};
use common::events::{DocUpserted, DocumentInput, Envelope, Event, Lane};
use common::intake::{self, Limits};
use common::normalize::webhook_to_document;
use common::{Config, UserId};
use db::Backends;
use db::DatabaseConnection;
use db::documents::{self, Upserted};
use tokio_util::sync::CancellationToken;

/// The limits every stored document is admitted under (see [`common::intake::admit`]).
pub fn limits(config: &Config) -> Limits {
    Limits {
        max_batch: config.max_batch_documents,
        max_body_bytes: config.max_document_bytes,
    }
}

/// Stores one admitted document and, when it changed or is not indexed yet, publishes `doc.upserted`.
/// Idempotent: a redelivery finds the same content and publishes (deduplicated) at most again.
pub async fn ingest_document(
    db: &DatabaseConnection,
    bus: &Bus,
    user: UserId,
    input: &DocumentInput,
    caused_by: String,
    lane: Lane,
) -> Result<Upserted, HandleError> {
    let (id, hash, outcome) = documents::upsert(db, user, input).await?;
    let announce = match outcome {
        Upserted::Created | Upserted::Updated => true,
        // Stored before but not indexed: the earlier attempt may have died before publishing.
        Upserted::Unchanged { indexed, .. } => !indexed,
    };
    if announce {
        let event = Envelope::new(
            user,
            Event::DocUpserted(DocUpserted {
                document_id: id,
                source: input.source.clone(),
                kind: input.kind.clone(),
                content_hash: hash,
                created: outcome == Upserted::Created,
                caused_by,
                again: false,
                insights_only: false,
            }),
        )
        .in_lane(lane);
        bus.publish(&event).await.map_err(HandleError::retry)?;
    }
    tracing::debug!(document.id = %id, ?outcome, "document stored");
    Ok(outcome)
}

#[derive(Clone)]
pub struct Ingest {
    pub db: DatabaseConnection,
    pub bus: Bus,
    pub limits: Limits,
}

impl Handler for Ingest {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandleError> {
        let cause = delivery.cause();
        let Envelope {
            user_id,
            event,
            lane,
            ..
        } = delivery.envelope;
        let doc = match event {
            Event::DocumentSubmitted(doc) => doc,
            Event::WebhookReceived(hook) => webhook_to_document(&hook, self.limits.max_body_bytes),
            other => {
                return Err(HandleError::poison(format!(
                    "ingest does not handle {}",
                    serde_json::to_value(&other)
                        .map(|v| v["type"].to_string())
                        .unwrap_or_default()
                )));
            }
        };
        // The gateway admitted it already; admitting again is a no-op for such documents and
        // keeps anything published before the boundary existed from failing in Postgres.
        let doc = intake::admit(doc, "document", &self.limits).map_err(HandleError::poison)?;
        ingest_document(&self.db, &self.bus, user_id, &doc, cause, lane)
            .await
            .map(|_| ())
    }
}

impl Handler for sync::Sync {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandleError> {
        let cause = delivery.cause();
        let Envelope { user_id, event, .. } = delivery.envelope;
        match event {
            Event::SyncRequested(command) => {
                sync::Sync::handle(self, user_id, command, cause).await
            }
            _ => Err(HandleError::poison(
                "the sync consumer only handles sync.requested",
            )),
        }
    }
}

/// Runs the ingest consumers (documents, webhooks, sync commands) and the sync scheduler
/// until `cancel` fires. Without TOKEN_ENCRYPTION_KEYS there are no connections to sync,
/// so sync commands wait in their stream.
pub async fn run(config: Config, cancel: CancellationToken) -> anyhow::Result<()> {
    let backends = Backends::connect(&config, config.db_max_connections).await?;
    let ingest = Ingest {
        db: backends.db.clone(),
        bus: backends.bus.clone(),
        limits: limits(&config),
    };
    let syncer = if config.token_encryption_keys.trim().is_empty() {
        tracing::warn!("TOKEN_ENCRYPTION_KEYS is not set: provider sync is off");
        None
    } else {
        let providers =
            providers::Providers::new(&config, backends.db.clone(), config.key_ring()?)?;
        Some(sync::Sync {
            db: backends.db.clone(),
            bus: backends.bus.clone(),
            providers,
            config: std::sync::Arc::new(config.clone()),
        })
    };
    let syncing = async {
        let Some(syncer) = syncer else { return Ok(()) };
        let tick = std::time::Duration::from_secs(config.sync_interval_secs.clamp(1, 60));
        let scheduler = tokio::spawn(sync::scheduler::run(syncer.clone(), tick, cancel.clone()));
        let result = backends
            .consume("ingest-sync", syncer, &config, cancel.clone())
            .await;
        let _ = scheduler.await;
        result
    };
    let (documents, bulk, webhooks, syncs) = tokio::join!(
        backends.consume("ingest-documents", ingest.clone(), &config, cancel.clone()),
        backends.consume("ingest-bulk", ingest.clone(), &config, cancel.clone()),
        backends.consume("ingest-webhooks", ingest, &config, cancel.clone()),
        syncing,
    );
    documents?;
    bulk?;
    webhooks?;
    syncs?;
    Ok(())
}
