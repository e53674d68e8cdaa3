//! Sync commands (`sync.<user>.<resource>`): bring one resource of one user up to date with
//! its provider. A run holds the resource's lease (so two runs never move one cursor),
//! stores at most `SYNC_MAX_ITEMS` items, advances the cursor only after its batch is
//! persisted, and queues its own continuation when it stops at the limit. Every stored,
//! changed or deleted item publishes a domain event for the rules engine.

pub mod calendar;
pub mod gmail;
pub mod hubspot;
pub mod scheduler;
pub mod slack;

use crate::ingest_document;
use common::bus::Bus;
use common::consumer::HandleError;
use common::events::{
    DocumentInput, DomainEvent, Envelope, Event, Lane, Resource, SyncRequested, SyncScope,
};
use common::ids::Source;
use common::intake;
use common::{Config, UserId};
use db::documents::Upserted;
use db::{DatabaseConnection, sync_state};
use providers::{Provider, ProviderError, Providers};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a run may hold the lease; a crashed run's lease lapses after this.
const LEASE_SECS: i64 = 300;
/// A command that finds the lease taken comes back after this long.
const BUSY_RETRY: Duration = Duration::from_secs(10);
/// How often a run counts its items into the pass's progress (at most one write per this
/// long, so a fast sync does not write once per item).
const REPORT_EVERY: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct Sync {
    pub db: DatabaseConnection,
    pub bus: Bus,
    pub providers: Providers,
    pub config: Arc<Config>,
}

/// What one run did, for the log and for tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub stored: u64,
    pub unchanged: u64,
    pub deleted: u64,
    pub skipped: u64,
}

impl Progress {
    /// Items that count against the per-run limit.
    pub fn touched(&self) -> u64 {
        self.stored + self.unchanged + self.deleted + self.skipped
    }
}

/// One run for one user and resource: stores documents and announces changes.
pub struct Run<'a> {
    pub sync: &'a Sync,
    pub user: UserId,
    pub resource: Resource,
    pub source: Source,
    /// The command's `STREAM:sequence`: names the events this run causes.
    pub cause: String,
    pub progress: Progress,
    /// Items already counted in `sync_state.items_synced` by an earlier cursor save.
    counted: u64,
    /// Items read (`progress.touched()`) already counted in the pass's progress, and when.
    reported: (u64, Instant),
    /// Parts whose estimate this run has recorded (the store keeps each part's first).
    estimated: Vec<String>,
    /// The run stopped at the limit; a continuation follows it.
    continuation: bool,
    /// First syncs and their continuations index in the bulk lane, so one user's 30 days of
    /// mail never delay another user's new email.
    pub lane: Lane,
    /// A first sync (and its continuations) reads the account's past: its domain events are
    /// marked as history, which rules do not fire on (backtests and waits still read them).
    pub history: bool,
}

/// How a change is announced: the event name when the item is new, and when it changed
/// (`None`: changes are not announced, e.g. a label added to an email).
pub struct Names<'n> {
    pub created: &'n str,
    pub updated: Option<&'n str>,
}

impl<'a> Run<'a> {
    pub fn api(&self) -> providers::Api {
        let provider =
            Provider::parse(self.resource.provider()).expect("resources map to providers");
        self.sync.providers.api(self.user, provider)
    }

    pub fn limit(&self) -> u64 {
        self.sync.config.sync_max_items as u64
    }

    pub fn at_limit(&self) -> bool {
        self.progress.touched() >= self.limit()
    }

    /// Stores a document; a new or changed one publishes `doc.upserted` (for indexing) and
    /// the domain event.
    pub async fn store(
        &mut self,
        doc: DocumentInput,
        names: Names<'_>,
        data: serde_json::Value,
    ) -> Result<(), HandleError> {
        let external_id = doc.external_id.clone();
        let doc = match intake::admit(doc, "item", &crate::limits(&self.sync.config)) {
            Ok(doc) => doc,
            Err(e) => {
                let reason = e.to_string();
                return self.skip(&external_id, &reason, None).await;
            }
        };
        let outcome = ingest_document(
            &self.sync.db,
            &self.sync.bus,
            self.user,
            &doc,
            self.cause.clone(),
            self.lane,
        )
        .await?;
        let name = match outcome {
            Upserted::Created => Some(names.created),
            Upserted::Updated => names.updated,
            // Stored before but never indexed: the earlier attempt may have died before
            // announcing it; the same name and version make the same dedup key, so a second
            // announcement is harmless.
            Upserted::Unchanged {
                indexed: false,
                changed,
            } => {
                if changed {
                    names.updated
                } else {
                    Some(names.created)
                }
            }
            Upserted::Unchanged { indexed: true, .. } => None,
        };
        match outcome {
            Upserted::Unchanged { .. } => self.progress.unchanged += 1,
            _ => self.progress.stored += 1,
        }
        self.report().await?;
        if let Some(name) = name {
            let id = common::DocumentId::derive(self.user, &doc.source, &doc.external_id);
            self.announce(name, &doc.external_id, Some(id), doc.content_hash(), data)
                .await?;
        }
        Ok(())
    }

    /// Deletes a document the provider deleted and announces it (once, by its dedup key).
    pub async fn remove(
        &mut self,
        external_id: &str,
        name: &str,
        data: serde_json::Value,
    ) -> Result<(), HandleError> {
        // The same id the stored document was admitted under.
        let mut external_id = external_id.to_owned();
        intake::clean_text(&mut external_id);
        let external_id = external_id.as_str();
        let removed =
            db::documents::delete(&self.sync.db, self.user, &self.source, external_id).await?;
        self.progress.deleted += 1;
        self.report().await?;
        self.announce(name, external_id, removed, "deleted".into(), data)
            .await
    }

    /// Records an item that is not indexed, and why.
    pub async fn skip(
        &mut self,
        external_id: &str,
        reason: &str,
        size: Option<i64>,
    ) -> Result<(), HandleError> {
        let (mut external_id, mut reason) = (external_id.to_owned(), reason.to_owned());
        intake::clean_text(&mut external_id);
        intake::clean_text(&mut reason);
        sync_state::skip(
            &self.sync.db,
            self.user,
            self.resource.as_str(),
            &external_id,
            &reason,
            size,
        )
        .await?;
        self.progress.skipped += 1;
        self.report().await?;
        tracing::info!(user.id = %self.user, resource = self.resource.as_str(), reason, "item skipped");
        Ok(())
    }

    async fn announce(
        &self,
        name: &str,
        entity_id: &str,
        document_id: Option<common::DocumentId>,
        version: String,
        data: serde_json::Value,
    ) -> Result<(), HandleError> {
        let event = Envelope::new(
            self.user,
            Event::Domain(DomainEvent {
                history: self.history,
                source: self.source.clone(),
                name: name.to_owned(),
                entity_id: entity_id.to_owned(),
                document_id,
                version,
                data,
            }),
        );
        self.sync
            .bus
            .publish(&event)
            .await
            .map_err(HandleError::retry)?;
        Ok(())
    }

    /// Counts what this run has read into the pass's progress, at most every
    /// [`REPORT_EVERY`]; the run's end counts the rest.
    async fn report(&mut self) -> Result<(), HandleError> {
        let (reported, at) = self.reported;
        if at.elapsed() < REPORT_EVERY {
            return Ok(());
        }
        let touched = self.progress.touched();
        sync_state::progress(
            &self.sync.db,
            self.user,
            self.resource.as_str(),
            touched - reported,
        )
        .await?;
        self.reported = (touched, Instant::now());
        Ok(())
    }

    /// Records the provider's estimate of how many items of `part` this pass reads.
    pub async fn estimate(&mut self, part: &str, items: u64) -> Result<(), HandleError> {
        if self.estimated.iter().any(|p| p == part) {
            return Ok(());
        }
        self.estimated.push(part.to_owned());
        sync_state::estimate(
            &self.sync.db,
            self.user,
            self.resource.as_str(),
            part,
            items,
        )
        .await?;
        Ok(())
    }

    /// Saves the cursor (its batch is already stored).
    pub async fn save_cursor(&mut self, cursor: &serde_json::Value) -> Result<(), HandleError> {
        let new = self.progress.stored - self.counted;
        sync_state::save_cursor(
            &self.sync.db,
            self.user,
            self.resource.as_str(),
            cursor,
            new,
        )
        .await?;
        self.counted = self.progress.stored;
        Ok(())
    }

    /// After a successful run (and its lease): queues the continuation it asked for.
    async fn finished(&self) -> Result<(), HandleError> {
        if self.continuation {
            self.queue_continuation().await?;
        }
        Ok(())
    }

    /// Asks for the next run of this sync (the limit was reached with more to do). It is
    /// queued once this run has released the lease, so it never finds the lease taken.
    pub fn continue_later(&mut self) {
        self.continuation = true;
    }

    /// Queues the continuation. Its dedup key is this command's, so a redelivered command
    /// queues one continuation.
    async fn queue_continuation(&self) -> Result<(), HandleError> {
        let command = Envelope::new(
            self.user,
            Event::SyncRequested(SyncRequested {
                resource: self.resource,
                reason: if self.history {
                    FIRST_SYNC_CONTINUATION.into()
                } else {
                    "continuation".into()
                },
                request_id: format!("cont:{}", self.cause),
                scope: SyncScope::Changes,
            }),
        );
        self.sync
            .bus
            .publish(&command)
            .await
            .map_err(HandleError::retry)?;
        tracing::info!(user.id = %self.user, resource = self.resource.as_str(), "limit reached; continuation queued");
        Ok(())
    }
}

/// The reason of a continuation of a first sync: still the account's past.
const FIRST_SYNC_CONTINUATION: &str = "first_sync_continuation";

/// Whether a run finished or stopped at the limit with a continuation queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Continued,
}

impl Sync {
    pub async fn handle(
        &self,
        user: UserId,
        command: SyncRequested,
        cause: String,
    ) -> Result<(), HandleError> {
        let resource = command.resource;
        // No cursor yet (none stored reads as `{}`): this run reads the account's past.
        let cursor = db::sync_state::cursor(&self.db, user, resource.as_str()).await?;
        let first_sync = cursor.is_null() || cursor.as_object().is_some_and(|c| c.is_empty());
        let history = first_sync || command.reason == FIRST_SYNC_CONTINUATION;
        let lane = if history || matches!(command.reason.as_str(), "connect" | "continuation") {
            Lane::Bulk
        } else {
            Lane::Interactive
        };
        let mut run = Run {
            sync: self,
            user,
            resource,
            source: Source::parse(resource.as_str()).expect("resource names are sources"),
            cause,
            progress: Progress::default(),
            counted: 0,
            reported: (0, Instant::now()),
            estimated: Vec::new(),
            continuation: false,
            lane,
            history,
        };
        let result = match command.scope {
            SyncScope::Changes => {
                self.changes(&mut run).await?;
                return run.finished().await;
            }
            SyncScope::Watch => match resource {
                Resource::Gmail => gmail::watch(&run).await,
                Resource::Calendar => calendar::watch(&run).await,
                _ => Ok(()),
            },
            SyncScope::HubspotObject {
                object_type,
                id,
                deleted,
            } => hubspot::one(&mut run, &object_type, &id, deleted).await,
            SyncScope::SlackChannel { channel } => {
                slack::channel(&mut run, &channel).await.map(|_| ())
            }
            SyncScope::SlackEvent { event } => slack::event(&mut run, &event).await,
        };
        self.settle(&run, result).await?;
        run.finished().await
    }

    /// A cursor-moving run under the lease.
    async fn changes(&self, run: &mut Run<'_>) -> Result<(), HandleError> {
        let resource = run.resource.as_str();
        let Some(cursor) = sync_state::acquire(&self.db, run.user, resource, LEASE_SECS).await?
        else {
            return Err(HandleError::Later {
                after: BUSY_RETRY,
                source: format!("a {resource} sync is already running").into(),
            });
        };
        let result = match run.resource {
            Resource::Gmail => gmail::changes(run, cursor).await,
            Resource::Calendar => calendar::changes(run, cursor).await,
            Resource::Hubspot => hubspot::changes(run, cursor).await,
            Resource::Slack => slack::changes(run, cursor).await,
        };
        let error = result.as_ref().err().map(|e| e.to_string());
        let end = sync_state::RunEnd {
            error: error.as_deref(),
            interval_secs: self.config.sync_interval_secs,
            unreported: run.progress.touched() - run.reported.0,
            pass_over: matches!(result, Ok(Outcome::Done)),
        };
        if let Err(e) = sync_state::finish(&self.db, run.user, resource, end).await {
            tracing::warn!(error = %e, "could not release the sync lease; it lapses in {LEASE_SECS} s");
        }
        if let Ok(outcome) = &result {
            tracing::info!(user.id = %run.user, resource, ?outcome, progress = ?run.progress, "sync run finished");
        }
        self.settle(run, result.map(|_| ())).await
    }

    /// Maps a run's provider failure: a revoked or missing connection is recorded on the
    /// connection (the user must reconnect) and the command is done; the rest is retried
    /// or dead-lettered by the runtime.
    async fn settle(
        &self,
        run: &Run<'_>,
        result: Result<(), SyncError>,
    ) -> Result<(), HandleError> {
        match result {
            Ok(()) => Ok(()),
            Err(SyncError::Provider(ProviderError::Revoked(reason))) => {
                tracing::warn!(user.id = %run.user, resource = run.resource.as_str(), %reason, "connection revoked; sync stopped");
                Ok(())
            }
            Err(SyncError::Provider(ProviderError::NotConnected(_))) => Ok(()),
            Err(SyncError::Provider(e @ ProviderError::Status { .. }))
                if e.status() != Some(429) =>
            {
                let reason = e.to_string();
                db::connections::mark_error(&self.db, run.user, run.resource.provider(), &reason)
                    .await?;
                Err(HandleError::poison(e))
            }
            Err(SyncError::Provider(e)) => Err(e.into()),
            Err(SyncError::Handle(e)) => Err(e),
        }
    }
}

/// A run's failure: the provider's, or storing/publishing.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Handle(#[from] HandleError),
}

impl From<db::DbError> for SyncError {
    fn from(e: db::DbError) -> Self {
        SyncError::Handle(e.into())
    }
}

pub type SyncResult<T> = Result<T, SyncError>;

/// Base URL without a trailing slash.
pub fn base(url: &str) -> &str {
    url.trim_end_matches('/')
}

/// Plain text from HTML (bodies, HubSpot notes).
pub fn html_to_text(html: &str) -> String {
    html2text::from_read(html.as_bytes(), 100)
        .unwrap_or_else(|_| html.to_owned())
        .trim()
        .to_owned()
}
