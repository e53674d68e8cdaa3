//! The consumer runtime: the one place ack policy lives. It binds a durable pull consumer,
//! keeps at most `concurrency` messages in flight, and for each message:
//! - handler `Ok` → ack;
//! - `Retry` → nak with a delay that doubles per delivery, until the last delivery, then
//!   dead-letter and terminate;
//! - `Later` → nak with the delay the other side asked for (429 `Retry-After`);
//! - `Poison` (or an undecodable message) → dead-letter and terminate at once.
//!
//! A dead letter that cannot be recorded is nak'ed instead, so nothing is dropped silently.
//! On cancellation it stops pulling, lets running handlers finish, and naks anything that
//! arrives afterwards.
//!
//! After a retryable failure the runtime asks the sink whether its backend (Postgres) is
//! ready before it pulls again, and pauses while it is not. A pull consumer is only given
//! messages when it asks, so an outage costs the messages in flight one delivery each instead
//! of running every message through all its deliveries into the dead-letter queue (which,
//! being in the same database, could not even record them).

use crate::bus::Bus;
use crate::events::Envelope;
use crate::telemetry;
use crate::topology::{Topology, TopologyError};
use async_nats::HeaderMap;
use async_nats::jetstream::{AckKind, Message};
use futures::StreamExt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a handler failed, which decides what happens to the message.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Might work later (database or network trouble): redeliver with backoff.
    #[error("retryable: {0}")]
    Retry(#[source] BoxError),
    /// Will never work (bad data): dead-letter now.
    #[error("poison: {0}")]
    Poison(#[source] BoxError),
    /// The other side told us when to come back (HTTP 429 `Retry-After`): redeliver then.
    #[error("retry after {after:?}: {source}")]
    Later {
        after: Duration,
        #[source]
        source: BoxError,
    },
}

impl HandleError {
    pub fn retry(e: impl Into<BoxError>) -> Self {
        Self::Retry(e.into())
    }
    pub fn poison(e: impl Into<BoxError>) -> Self {
        Self::Poison(e.into())
    }
}

/// One decoded message, as a handler sees it.
#[derive(Debug)]
pub struct Delivery {
    /// Subject without the deployment prefix.
    pub subject: String,
    pub envelope: Envelope,
    /// 1 on first delivery.
    pub delivered: i64,
    /// The stream (with its deployment prefix) and the message's sequence in it.
    pub stream: String,
    pub stream_sequence: u64,
}

impl Delivery {
    /// `STREAM:sequence`: names this message for the events it causes.
    pub fn cause(&self) -> String {
        format!("{}:{}", self.stream, self.stream_sequence)
    }
}

pub trait Handler: Send + Sync + 'static {
    fn handle(&self, delivery: Delivery) -> impl Future<Output = Result<(), HandleError>> + Send;
}

/// Acknowledges every message: for a service whose logic has not arrived yet, so that its
/// durable consumer exists and stays current.
pub struct AckAll;

impl Handler for AckAll {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandleError> {
        tracing::debug!(subject = %delivery.subject, event.id = %delivery.envelope.id, "acknowledged");
        Ok(())
    }
}

/// A message that will not be processed, with everything needed to requeue it.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub stream: String,
    pub consumer: String,
    /// Subject without the deployment prefix.
    pub subject: String,
    pub stream_sequence: u64,
    pub deliveries: i64,
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
    pub error: String,
}

pub trait DeadLetterSink: Send + Sync + 'static {
    fn record(&self, letter: DeadLetter) -> impl Future<Output = Result<(), BoxError>> + Send;

    /// Whether the backend the handlers and the sink need answers; pulling waits for it
    /// after a retryable failure.
    fn ready(&self) -> impl Future<Output = bool> + Send {
        async { true }
    }
}

#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    pub concurrency: usize,
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// How long one pull request waits for messages; also bounds shutdown latency.
    pub fetch_expiry: Duration,
    /// Tell JetStream "still working" this often while a handler runs, so a long job (an
    /// agent's turn) is not redelivered to another replica meanwhile; `None` lets the ack
    /// wait bound every handler.
    pub keep_alive: Option<Duration>,
}

impl ConsumerOptions {
    pub fn from_config(config: &crate::Config) -> Self {
        Self {
            concurrency: config.consumer_concurrency,
            retry_base: Duration::from_millis(config.retry_base_ms),
            retry_max: Duration::from_millis(config.retry_max_ms),
            fetch_expiry: Duration::from_secs(2),
            keep_alive: None,
        }
    }

    /// Delay before redelivery after the `delivered`-th attempt failed.
    pub fn retry_delay(&self, delivered: i64) -> Duration {
        let exp = (delivered.max(1) - 1).min(20) as u32;
        self.retry_base
            .saturating_mul(2u32.saturating_pow(exp))
            .min(self.retry_max)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Topology(#[from] TopologyError),
}

struct Shared<H, D> {
    handler: H,
    sink: D,
    durable: String,
    max_deliver: i64,
    options: ConsumerOptions,
    bus: Bus,
    /// A handler failed in a way that may mean the backend is down: check before pulling.
    degraded: std::sync::atomic::AtomicBool,
}

/// Waits until the sink's backend answers again (checked every second), or cancellation.
async fn wait_ready<H: Handler, D: DeadLetterSink>(
    shared: &Shared<H, D>,
    cancel: &CancellationToken,
) {
    let mut paused = false;
    while !cancel.is_cancelled() {
        if shared.sink.ready().await {
            if paused {
                tracing::info!(consumer = %shared.durable, "backend answers again; resuming");
            }
            shared
                .degraded
                .store(false, std::sync::atomic::Ordering::SeqCst);
            return;
        }
        if !paused {
            tracing::warn!(consumer = %shared.durable, "backend unavailable; pausing until it answers");
            paused = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = cancel.cancelled() => {}
        }
    }
}

/// Runs `handler` on the durable consumer `durable` until `cancel` fires.
pub async fn run<H: Handler, D: DeadLetterSink>(
    bus: Bus,
    topology: &Topology,
    durable: &str,
    handler: H,
    sink: D,
    options: ConsumerOptions,
    cancel: CancellationToken,
) -> Result<(), RuntimeError> {
    let def = topology.consumer(durable)?;
    let consumer = topology.apply_consumer(&bus.js, &bus.ns, def).await?;
    let shared = Arc::new(Shared {
        handler,
        sink,
        durable: durable.to_owned(),
        max_deliver: def.max_deliver,
        options: options.clone(),
        bus,
        degraded: std::sync::atomic::AtomicBool::new(false),
    });
    let permits = Arc::new(Semaphore::new(options.concurrency));
    let mut tasks = JoinSet::new();
    tracing::info!(consumer = durable, "consuming");

    'pull: while !cancel.is_cancelled() {
        if shared.degraded.load(std::sync::atomic::Ordering::SeqCst) {
            wait_ready(&shared, &cancel).await;
            continue;
        }
        let first = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("semaphore never closes"),
            _ = cancel.cancelled() => break,
        };
        let mut held = vec![first];
        while let Ok(p) = permits.clone().try_acquire_owned() {
            held.push(p);
        }
        let batch = consumer
            .batch()
            .max_messages(held.len())
            .expires(options.fetch_expiry)
            .messages()
            .await;
        let mut batch = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(consumer = durable, error = %e, "pull request failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = cancel.cancelled() => break,
                }
            }
        };
        loop {
            let next = tokio::select! {
                m = batch.next() => m,
                _ = cancel.cancelled() => {
                    // Stop taking work: what the server still sends for this pull goes back.
                    while let Some(Ok(msg)) = batch.next().await {
                        let _ = msg.ack_with(AckKind::Nak(None)).await;
                    }
                    break 'pull;
                }
            };
            match next {
                None => break,
                Some(Ok(msg)) => {
                    let permit = held.pop().expect("a pull never returns more than asked");
                    tasks.spawn(process(shared.clone(), msg, permit));
                }
                Some(Err(e)) => {
                    tracing::debug!(consumer = durable, error = %e, "pull ended");
                    break;
                }
            }
        }
        while tasks.try_join_next().is_some() {}
    }
    // Let running handlers finish; the caller bounds this with its shutdown timeout.
    while tasks.join_next().await.is_some() {}
    tracing::info!(consumer = durable, "stopped");
    Ok(())
}

fn header_pairs(headers: Option<&HeaderMap>) -> Vec<(String, String)> {
    headers
        .map(|h| {
            h.iter()
                .flat_map(|(k, vs)| vs.iter().map(move |v| (k.to_string(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

async fn process<H: Handler, D: DeadLetterSink>(
    shared: Arc<Shared<H, D>>,
    msg: Message,
    _permit: OwnedSemaphorePermit,
) {
    let (stream, stream_sequence, delivered) = match msg.info() {
        Ok(i) => (i.stream.to_owned(), i.stream_sequence, i.delivered),
        Err(_) => (String::new(), 0, 1),
    };
    let subject = shared.bus.ns.strip(msg.subject.as_str()).to_owned();
    let request_id = telemetry::request_id_of(msg.headers.as_ref());
    let span = tracing::info_span!(
        "consume",
        consumer = %shared.durable,
        subject = %subject,
        delivered,
        stream.seq = stream_sequence,
        request.id = request_id.as_deref().unwrap_or_default(),
    );
    telemetry::set_parent(&span, msg.headers.as_ref());
    let started = Instant::now();

    let result = match Envelope::from_slice(&msg.payload) {
        Ok(envelope) => {
            let delivery = Delivery {
                subject: subject.clone(),
                envelope,
                delivered,
                stream: stream.clone(),
                stream_sequence,
            };
            let work = shared.handler.handle(delivery).instrument(span.clone());
            // What the handler publishes carries the same request id.
            let work = async {
                match request_id {
                    Some(id) => telemetry::REQUEST_ID.scope(id, work).await,
                    None => work.await,
                }
            };
            match shared.options.keep_alive {
                Some(every) => {
                    tokio::pin!(work);
                    let mut ticks =
                        tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                    loop {
                        tokio::select! {
                            result = &mut work => break result,
                            _ = ticks.tick() => {
                                let _ = msg.ack_with(AckKind::Progress).await;
                            }
                        }
                    }
                }
                None => work.await,
            }
        }
        Err(e) => Err(HandleError::poison(e)),
    };
    metrics::histogram!("consumer_handle_seconds", "consumer" => shared.durable.clone())
        .record(started.elapsed());

    let settle = async {
        match result {
            Ok(()) => match msg.double_ack().await {
                Ok(()) => "ack",
                Err(e) => {
                    tracing::warn!(error = %e, "ack not confirmed; the message may be redelivered");
                    "ack"
                }
            },
            Err(HandleError::Later { after, source }) if delivered < shared.max_deliver => {
                tracing::warn!(error = %source, retry_in_ms = after.as_millis() as u64, "asked to come back later");
                let _ = msg.ack_with(AckKind::Nak(Some(after))).await;
                "retry"
            }
            Err(HandleError::Retry(e)) if delivered < shared.max_deliver => {
                shared
                    .degraded
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                let delay = shared.options.retry_delay(delivered);
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "handler failed; will retry");
                let _ = msg.ack_with(AckKind::Nak(Some(delay))).await;
                "retry"
            }
            Err(e) => {
                let letter = DeadLetter {
                    stream,
                    consumer: shared.durable.clone(),
                    subject,
                    stream_sequence,
                    deliveries: delivered,
                    headers: header_pairs(msg.headers.as_ref()),
                    payload: msg.payload.to_vec(),
                    error: error_chain(&e),
                };
                match shared.sink.record(letter).await {
                    Ok(()) => {
                        tracing::error!(error = %e, "message dead-lettered");
                        let _ = msg.ack_with(AckKind::Term).await;
                        "dead"
                    }
                    Err(sink_err) => {
                        shared
                            .degraded
                            .store(true, std::sync::atomic::Ordering::SeqCst);
                        tracing::error!(error = %e, sink_error = %sink_err, "could not record dead letter; will retry");
                        let delay = shared.options.retry_delay(delivered);
                        let _ = msg.ack_with(AckKind::Nak(Some(delay))).await;
                        "retry"
                    }
                }
            }
        }
    };
    // The span is attached to the future, never entered across an await: an entered guard
    // that moves between worker threads corrupts the subscriber's span stack.
    let outcome = settle.instrument(span).await;
    metrics::counter!("consumer_messages_total", "consumer" => shared.durable.clone(), "outcome" => outcome)
        .increment(1);
}

/// The error and its sources, one per line, for operators reading a dead letter.
fn error_chain(e: &HandleError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e).and_then(|s| s.source());
    while let Some(s) = source {
        text.push_str("\ncaused by: ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_and_caps() {
        let o = ConsumerOptions {
            concurrency: 1,
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_millis(500),
            fetch_expiry: Duration::from_secs(1),
            keep_alive: None,
        };
        let delays: Vec<u128> = (1..=5).map(|d| o.retry_delay(d).as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 500, 500]);
    }
}
