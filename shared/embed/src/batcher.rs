//! Coalesces embedding requests from many tasks into model batches: a bulk text waits at most
//! `linger` for company, and while the model runs the next batch fills up. Urgent texts
//! (search queries, interactive documents) always go into the next batch without lingering:
//! with the other urgent texts already waiting, or, when they arrive while a bulk batch is
//! still gathering, with that batch, which then goes at once. So a backlog of bulk indexing
//! delays them by at most the batch already running.
//!
//! After an urgent batch the model stays with urgent work for a moment (`URGENT_GRACE`): the
//! callers it just answered (an interactive lane's handlers) store their chunks and bring the
//! next text within milliseconds, and a bulk batch started in that gap would put its whole
//! pass in front of every one of them.

use crate::{EmbedError, Embedder};
use futures::future::try_join_all;
use std::time::Duration;
use tokio::time::Instant;

/// How long after an urgent batch a bulk batch waits for more urgent texts.
pub const URGENT_GRACE: Duration = Duration::from_millis(50);
use tokio::sync::{mpsc, oneshot};

/// Who waits for an embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// A search query or an interactive document: served first.
    Urgent,
    /// Bulk indexing: whatever room urgent work leaves.
    Bulk,
}

struct Job {
    text: String,
    reply: oneshot::Sender<Result<Vec<f32>, String>>,
}

#[derive(Clone)]
pub struct Batcher {
    urgent: mpsc::Sender<Job>,
    bulk: mpsc::Sender<Job>,
    dimensions: usize,
}

impl Batcher {
    pub fn spawn(embedder: Embedder, max_batch: usize, linger: Duration) -> Self {
        let (urgent, urgent_rx) = mpsc::channel(max_batch * 64);
        let (bulk, bulk_rx) = mpsc::channel(max_batch * 64);
        let dimensions = embedder.dimensions();
        tokio::spawn(run(embedder, urgent_rx, bulk_rx, max_batch.max(1), linger));
        Self {
            urgent,
            bulk,
            dimensions,
        }
    }

    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// One text, urgently (a search query).
    pub async fn embed_one(&self, text: String) -> Result<Vec<f32>, EmbedError> {
        self.embed_with(text, Priority::Urgent).await
    }

    pub async fn embed_with(
        &self,
        text: String,
        priority: Priority,
    ) -> Result<Vec<f32>, EmbedError> {
        let (reply, rx) = oneshot::channel();
        let queue = match priority {
            Priority::Urgent => &self.urgent,
            Priority::Bulk => &self.bulk,
        };
        queue
            .send(Job { text, reply })
            .await
            .map_err(|_| EmbedError::Closed)?;
        rx.await
            .map_err(|_| EmbedError::Closed)?
            .map_err(|e| EmbedError::Model(e.into()))
    }

    /// Embeds every text; the results keep the input order.
    pub async fn embed_many(
        &self,
        texts: Vec<String>,
        priority: Priority,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        try_join_all(texts.into_iter().map(|t| self.embed_with(t, priority))).await
    }
}

/// The next job, urgent first, and its priority; `None` once both queues are closed and
/// empty. Until `urgent_only_until`, only an urgent job is taken.
async fn next(
    urgent: &mut mpsc::Receiver<Job>,
    bulk: &mut mpsc::Receiver<Job>,
    urgent_only_until: Option<Instant>,
) -> Option<(Job, Priority)> {
    if let Ok(job) = urgent.try_recv() {
        return Some((job, Priority::Urgent));
    }
    if let Some(until) = urgent_only_until
        && let Ok(Some(job)) = tokio::time::timeout_at(until, urgent.recv()).await
    {
        return Some((job, Priority::Urgent));
    }
    tokio::select! {
        biased;
        Some(job) = urgent.recv() => Some((job, Priority::Urgent)),
        Some(job) = bulk.recv() => Some((job, Priority::Bulk)),
        else => None,
    }
}

async fn run(
    embedder: Embedder,
    mut urgent: mpsc::Receiver<Job>,
    mut bulk: mpsc::Receiver<Job>,
    max_batch: usize,
    linger: Duration,
) {
    let mut urgent_only_until = None;
    while let Some((first, priority)) = next(&mut urgent, &mut bulk, urgent_only_until).await {
        let mut batch = vec![first];
        let mut has_urgent = priority == Priority::Urgent;
        match priority {
            // Someone is waiting: the urgent texts already queued go now, without lingering
            // for company and without bulk texts that would lengthen the pass.
            Priority::Urgent => {
                while batch.len() < max_batch
                    && let Ok(job) = urgent.try_recv()
                {
                    batch.push(job);
                }
            }
            // Bulk texts wait at most `linger` for company; an urgent text that turns up ends
            // the wait.
            Priority::Bulk => {
                let deadline = tokio::time::Instant::now() + linger;
                while batch.len() < max_batch {
                    tokio::select! {
                        biased;
                        job = next(&mut urgent, &mut bulk, None) => match job {
                            Some((job, p)) => {
                                batch.push(job);
                                if p == Priority::Urgent {
                                    has_urgent = true;
                                    break;
                                }
                            }
                            None => break,
                        },
                        _ = tokio::time::sleep_until(deadline) => break,
                    }
                }
            }
        }
        let (texts, replies): (Vec<String>, Vec<_>) =
            batch.into_iter().map(|j| (j.text, j.reply)).unzip();
        metrics::histogram!("embed_batch_size").record(texts.len() as f64);
        match embedder.embed(texts).await {
            Ok(vectors) => {
                for (reply, v) in replies.into_iter().zip(vectors) {
                    let _ = reply.send(Ok(v));
                }
            }
            Err(e) => {
                let message = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(message.clone()));
                }
            }
        }
        urgent_only_until = has_urgent.then(|| Instant::now() + URGENT_GRACE);
    }
}
