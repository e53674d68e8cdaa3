//! What the operator's CLI does, as functions tests can call: dead-letter requeue, per-user
//! replay, demo data.

use async_nats::jetstream::consumer::{self, DeliverPolicy};
use chrono::{DateTime, Utc};
use common::UserId;
use common::bus::Bus;
use common::events::{DocumentInput, Envelope, Event, Lane};
use common::intake::{self, Accepted, Limits};
use common::topology::Topology;
use db::DatabaseConnection;
use futures::StreamExt;
use std::time::Duration;

/// Sends a dead letter back to its subject (with a fresh message id, so JetStream's dedup
/// window does not swallow it) and marks it requeued.
pub async fn requeue(db: &DatabaseConnection, bus: &Bus, id: i64) -> anyhow::Result<u64> {
    let letter = db::dead_letters::get(db, id).await?;
    anyhow::ensure!(
        letter.requeued_at.is_none(),
        "dead letter {id} was already requeued"
    );
    let msg_id = format!("requeue:{}:{}", letter.id, Utc::now().timestamp_millis());
    let published = bus
        .publish_raw(&letter.subject, &msg_id, letter.payload.clone())
        .await?;
    db::dead_letters::mark_requeued(db, id).await?;
    Ok(published.sequence)
}

#[derive(Debug, Clone, Default)]
pub struct ReplayReport {
    pub republished: u64,
    pub last_sequence: u64,
}

/// Republishes one user's messages from a stream (all, or since a time) so every consumer
/// processes them again. Handlers are idempotent, so this repairs without duplicating.
/// Stops at the stream's last sequence as of the start, never chasing its own output.
pub async fn replay(
    bus: &Bus,
    stream: &str,
    user: UserId,
    since: Option<DateTime<Utc>>,
) -> anyhow::Result<ReplayReport> {
    let topology = Topology::shipped()?;
    let def = topology
        .streams
        .iter()
        .find(|s| s.name.eq_ignore_ascii_case(stream))
        .ok_or_else(|| anyhow::anyhow!("no stream named {stream}"))?;
    let root = def.subjects[0].trim_end_matches(".>");
    let mut js_stream = bus.js.get_stream(bus.ns.stream(&def.name)).await?;
    let end = js_stream.info().await?.state.last_sequence;
    let run = Utc::now().timestamp_millis();
    let config = consumer::pull::Config {
        filter_subject: bus.ns.subject(&format!("{root}.{user}.>")),
        deliver_policy: match since {
            Some(t) => DeliverPolicy::ByStartTime {
                start_time: time::OffsetDateTime::from_unix_timestamp(t.timestamp())?,
            },
            None => DeliverPolicy::All,
        },
        ack_policy: consumer::AckPolicy::None,
        inactive_threshold: Duration::from_secs(60),
        ..Default::default()
    };
    let reader = js_stream.create_consumer(config).await?;
    let mut report = ReplayReport::default();
    loop {
        let pending = reader.clone().info().await?.num_pending;
        if pending == 0 {
            break;
        }
        let mut batch = reader.fetch().max_messages(256).messages().await?;
        let mut done = false;
        while let Some(msg) = batch.next().await {
            let msg = msg.map_err(|e| anyhow::anyhow!(e))?;
            let seq = msg.info().map_err(|e| anyhow::anyhow!(e))?.stream_sequence;
            if seq > end {
                done = true;
                break;
            }
            let (subject, payload) = replayed(bus.ns.strip(msg.subject.as_str()), &msg.payload);
            bus.publish_raw(&subject, &format!("replay:{run}:{seq}"), payload)
                .await?;
            report.republished += 1;
            report.last_sequence = seq;
            if seq == end {
                done = true;
                break;
            }
        }
        if done {
            break;
        }
    }
    Ok(report)
}

/// Where a replayed message goes: documents and their indexing in the bulk lane (a replay
/// must not delay anyone's new work), everything else where it was.
fn replayed(subject: &str, payload: &[u8]) -> (String, Vec<u8>) {
    match Envelope::from_slice(payload) {
        Ok(envelope)
            if matches!(
                envelope.event,
                Event::DocumentSubmitted(_) | Event::DocUpserted(_)
            ) =>
        {
            let envelope = envelope.in_lane(Lane::Bulk);
            (envelope.subject(), envelope.to_bytes())
        }
        _ => (subject.to_owned(), payload.to_vec()),
    }
}

/// The demo tenant's data, shipped in the repository.
pub const DEMO_DATA: &str = include_str!("../../../demo/advisor.json");

/// Loads the demo documents for `user` through the same intake as the HTTP API.
pub async fn load_demo(bus: &Bus, user: UserId, limits: &Limits) -> anyhow::Result<Vec<Accepted>> {
    let docs: Vec<DocumentInput> = serde_json::from_str(DEMO_DATA)?;
    let mut accepted = Vec::with_capacity(docs.len());
    for batch in docs.chunks(limits.max_batch) {
        let batch = intake::admit_batch(batch.to_vec(), limits)?;
        accepted.extend(intake::submit(bus, user, batch, &[]).await?);
    }
    Ok(accepted)
}
