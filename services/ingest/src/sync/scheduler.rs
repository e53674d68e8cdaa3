//! The safety net: every connection's resources are synced on a schedule even when no
//! webhook arrives, and push channels are renewed a day before they expire. Each tick
//! publishes commands whose dedup keys name the due time, so several ingest replicas
//! ticking together queue each run once.

use super::Sync;
use common::events::{Envelope, Event, Resource, SyncRequested, SyncScope};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Renew channels this long before they expire.
const RENEW_AHEAD_HOURS: i64 = 24;

pub async fn run(sync: Sync, every: Duration, cancel: CancellationToken) {
    if sync.config.sync_interval_secs == 0 {
        tracing::info!("SYNC_INTERVAL_SECS=0: scheduled sync is off");
        return;
    }
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match tick(&sync).await {
            Ok((syncs, renewals)) if syncs + renewals > 0 => {
                tracing::info!(syncs, renewals, "scheduled commands queued");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "scheduler tick failed; next tick retries"),
        }
    }
}

/// Queues due syncs and channel renewals; returns how many of each.
pub async fn tick(
    sync: &Sync,
) -> Result<(usize, usize), Box<dyn std::error::Error + Send + std::marker::Sync>> {
    let mut syncs = 0;
    for (user, resource, due_at) in db::sync_state::due(&sync.db, 500).await? {
        let Some(parsed) = Resource::parse(&resource) else {
            continue;
        };
        let command = Envelope::new(
            user,
            Event::SyncRequested(SyncRequested {
                resource: parsed,
                reason: "schedule".into(),
                request_id: format!("schedule:{}", due_at.timestamp_millis()),
                scope: SyncScope::Changes,
            }),
        );
        sync.bus.publish(&command).await?;
        // A run pushes this further out when it finishes; this only stops re-queueing.
        db::sync_state::postpone(&sync.db, user, &resource, sync.config.sync_interval_secs).await?;
        syncs += 1;
    }
    let before = chrono::Utc::now() + chrono::Duration::hours(RENEW_AHEAD_HOURS);
    let mut renewals = 0;
    for channel in db::sync_state::expiring_channels(&sync.db, before).await? {
        let Some(resource) = Resource::parse(&channel.resource) else {
            continue;
        };
        let command = Envelope::new(
            channel.user_id,
            Event::SyncRequested(SyncRequested {
                resource,
                reason: "renew".into(),
                request_id: format!("renew:{}:{}", channel.id, channel.expires_at.timestamp()),
                scope: SyncScope::Watch,
            }),
        );
        sync.bus.publish(&command).await?;
        renewals += 1;
    }
    Ok((syncs, renewals))
}
