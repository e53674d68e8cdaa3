//! Tier 1 with a model: a message the local classifier is unsure about (its score within
//! `INSIGHTS_MODEL_BAND` of the threshold) is scored by the model instead, many messages per
//! call. The insights consumer handles up to `CONSUMER_CONCURRENCY` messages at once; the
//! messages of one user that arrive within `WAIT` of each other (up to `MAX_BATCH`) go to the
//! model together, each call recorded in that user's usage. What the local classifier is
//! sure is not feedback never leaves the machine.

use crate::insights::call_model;
use common::UserId;
use db::DatabaseConnection;
use providers::model::ModelClient;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// How long the first message of a batch waits for others.
pub const WAIT: Duration = Duration::from_millis(150);
/// Most messages in one call.
pub const MAX_BATCH: usize = 20;

struct Ask {
    user: UserId,
    text: String,
    reply: oneshot::Sender<Option<u8>>,
}

/// Hands messages to the batching task.
#[derive(Clone)]
pub struct ModelTier1 {
    tx: mpsc::UnboundedSender<Ask>,
}

impl ModelTier1 {
    pub fn start(db: DatabaseConnection, model: ModelClient) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx, db, model));
        Self { tx }
    }

    /// The model's score (0–10) for `text`, or `None` when it gave none (unavailable,
    /// refused, or an answer that did not fit twice): the caller keeps the local score.
    pub async fn score(&self, user: UserId, text: &str) -> Option<u8> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Ask {
                user,
                text: text.to_owned(),
                reply,
            })
            .ok()?;
        answer.await.ok().flatten()
    }
}

async fn run(mut rx: mpsc::UnboundedReceiver<Ask>, db: DatabaseConnection, model: ModelClient) {
    let mut pending: HashMap<UserId, (Instant, Vec<Ask>)> = HashMap::new();
    loop {
        let deadline = pending.values().map(|(t, _)| *t).min();
        tokio::select! {
            ask = rx.recv() => {
                let Some(ask) = ask else { break };
                let user = ask.user;
                let batch = pending.entry(user).or_insert_with(|| (Instant::now() + WAIT, Vec::new()));
                batch.1.push(ask);
                if batch.1.len() >= MAX_BATCH
                    && let Some((_, asks)) = pending.remove(&user)
                {
                    tokio::spawn(answer(db.clone(), model.clone(), user, asks));
                }
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                let now = Instant::now();
                let due: Vec<UserId> = pending
                    .iter()
                    .filter(|(_, (t, _))| *t <= now)
                    .map(|(u, _)| *u)
                    .collect();
                for user in due {
                    if let Some((_, asks)) = pending.remove(&user) {
                        tokio::spawn(answer(db.clone(), model.clone(), user, asks));
                    }
                }
            }
        }
    }
    for (user, (_, asks)) in pending {
        tokio::spawn(answer(db.clone(), model.clone(), user, asks));
    }
}

/// One call for the batch (and one repair when the answer does not fit); each message gets
/// its score, or all get none.
async fn answer(db: DatabaseConnection, model: ModelClient, user: UserId, asks: Vec<Ask>) {
    use async_openai::types::{
        ChatCompletionRequestMessage as Message, ChatCompletionRequestSystemMessage,
        ChatCompletionRequestUserMessage,
    };
    let texts: Vec<&str> = asks.iter().map(|a| a.text.as_str()).collect();
    let mut messages = vec![
        Message::System(ChatCompletionRequestSystemMessage::from(
            insights::model::TIER1_PROMPT,
        )),
        Message::User(ChatCompletionRequestUserMessage::from(
            insights::model::tier1_batch(&texts),
        )),
    ];
    let mut scores = None;
    for _ in 0..2 {
        let completion = match call_model(&db, &model, user, messages.clone()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::info!(user.id = %user, error = %e, "no tier-1 scores from the model");
                break;
            }
            Err(e) => {
                tracing::warn!(user.id = %user, error = ?e, "tier-1 model call not recorded");
                break;
            }
        };
        match insights::model::parse_tier1(&completion.text, asks.len()) {
            Ok(s) => {
                scores = Some(s);
                break;
            }
            Err(why) => {
                messages.push(Message::Assistant(completion.text.as_str().into()));
                messages.push(Message::User(ChatCompletionRequestUserMessage::from(
                    format!("{why} Answer again with the JSON object only."),
                )));
            }
        }
    }
    metrics::counter!("insights_tier1_batches_total").increment(1);
    metrics::histogram!("insights_tier1_batch_size").record(asks.len() as f64);
    for (i, ask) in asks.into_iter().enumerate() {
        let _ = ask.reply.send(scores.as_ref().map(|s| s[i]));
    }
}
