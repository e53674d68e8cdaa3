//! Coalesces embedding requests from many tasks into model batches: the first request waits
//! at most `linger` for company, and while the model runs the next batch fills up.

use crate::{EmbedError, Embedder};
use futures::future::try_join_all;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

struct Job {
    text: String,
    reply: oneshot::Sender<Result<Vec<f32>, String>>,
}

#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Job>,
    dimensions: usize,
}

impl Batcher {
    pub fn spawn(embedder: Embedder, max_batch: usize, linger: Duration) -> Self {
        let (tx, rx) = mpsc::channel(max_batch * 64);
        let dimensions = embedder.dimensions();
        tokio::spawn(run(embedder, rx, max_batch.max(1), linger));
        Self { tx, dimensions }
    }

    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    pub async fn embed_one(&self, text: String) -> Result<Vec<f32>, EmbedError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { text, reply })
            .await
            .map_err(|_| EmbedError::Closed)?;
        rx.await
            .map_err(|_| EmbedError::Closed)?
            .map_err(|e| EmbedError::Model(e.into()))
    }

    /// Embeds every text; the results keep the input order.
    pub async fn embed_many(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        try_join_all(texts.into_iter().map(|t| self.embed_one(t))).await
    }
}

async fn run(embedder: Embedder, mut rx: mpsc::Receiver<Job>, max_batch: usize, linger: Duration) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + linger;
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => tokio::select! {
                    job = rx.recv() => match job {
                        Some(job) => batch.push(job),
                        None => break,
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                },
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
    }
}
