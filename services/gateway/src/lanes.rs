//! How much of a user's interactive share (`INTERACTIVE_SHARE_PER_USER`) is taken, without a
//! Postgres write per request.
//!
//! What waits in the interactive lane is the user's documents stored and not yet indexed, or
//! those submitted in the last 20 s (in the stream, not stored yet), whichever is more. The
//! first is read from Postgres at most once a second per user; the second is counted here, in
//! memory, at the moment a request claims its places, so requests arriving together see each
//! other. With several gateways, each counts what it took itself; what the others took shows
//! in the stored count once ingest has stored it (milliseconds to a second later).

use common::UserId;
use db::DatabaseConnection;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a read of the stored count stands for.
const STORED_FRESH: Duration = Duration::from_secs(1);
/// How long a submission counts as waiting before it shows as stored.
const RECENT: Duration = Duration::from_secs(20);
/// Users tracked before the idle ones are dropped.
const PRUNE_AT: usize = 10_000;

#[derive(Clone, Default)]
pub struct LaneCounts {
    users: Arc<Mutex<HashMap<UserId, UserLane>>>,
}

#[derive(Default)]
struct UserLane {
    stored: u64,
    stored_at: Option<Instant>,
    recent: VecDeque<(Instant, u64)>,
}

impl LaneCounts {
    /// Claims places for `count` documents of `user` and says how many were waiting before
    /// them (counted up to `share`).
    pub async fn claim(
        &self,
        db: &DatabaseConnection,
        user: UserId,
        count: u64,
        share: u64,
    ) -> Result<u64, db::DbError> {
        let stale = {
            let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
            users
                .get(&user)
                .and_then(|u| u.stored_at)
                .is_none_or(|at| at.elapsed() >= STORED_FRESH)
        };
        let stored = if stale {
            Some(db::documents::unindexed(db, user, share).await?)
        } else {
            None
        };
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if users.len() >= PRUNE_AT {
            users.retain(|_, u| u.recent.back().is_some_and(|(at, _)| now - *at < RECENT));
        }
        let lane = users.entry(user).or_default();
        if let Some(stored) = stored {
            lane.stored = stored;
            lane.stored_at = Some(now);
        }
        while lane
            .recent
            .front()
            .is_some_and(|(at, _)| now - *at >= RECENT)
        {
            lane.recent.pop_front();
        }
        let submitted: u64 = lane.recent.iter().map(|(_, n)| n).sum();
        lane.recent.push_back((now, count));
        Ok(lane.stored.max(submitted))
    }
}
