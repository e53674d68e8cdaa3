//! Whether a bearer token may still act, remembered for a moment so that a request does not
//! cost a Postgres read.
//!
//! Revocation stays real on every replica:
//! - the database announces every change that ends a token's right to act (the user deleted,
//!   "sign out everywhere", one token revoked) with a NOTIFY on `auth_invalidate` in the same
//!   transaction (migration `m20261205_000014`); each gateway LISTENs and forgets that user's
//!   tokens when it arrives, milliseconds after the change commits;
//! - answers are remembered only while the listener is connected; when it drops, everything
//!   remembered is forgotten and every request asks Postgres until it listens again;
//! - a read that started before an announcement is not remembered after it (an epoch);
//! - nothing is remembered longer than `AUTH_CACHE_SECS` (5 s), the bound should a
//!   notification ever be lost.

use common::UserId;
use db::DatabaseConnection;
use sqlx::postgres::PgListener;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The channel the database announces on.
pub const CHANNEL: &str = "auth_invalidate";
/// Most tokens remembered; beyond it the memory starts again empty.
const CAPACITY: usize = 100_000;

#[derive(Clone)]
pub struct Validity {
    inner: Arc<Inner>,
}

struct Inner {
    /// jti → (its user, when Postgres said it may act)
    entries: RwLock<HashMap<Uuid, (UserId, Instant)>>,
    /// Bumped by every announcement and every (re)connection of the listener.
    epoch: AtomicU64,
    listening: AtomicBool,
    ttl: Duration,
    /// Cancelled when the cache is dropped: its listener stops.
    closed: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

impl Validity {
    /// Remembers nothing until [`Validity::listen`] has connected.
    pub fn new(ttl: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                entries: RwLock::new(HashMap::new()),
                epoch: AtomicU64::new(0),
                listening: AtomicBool::new(false),
                ttl,
                closed: CancellationToken::new(),
            }),
        }
    }

    /// Whether the verified token `jti` of `user`, issued at `issued_at`, may act.
    pub async fn token_allowed(
        &self,
        db: &DatabaseConnection,
        user: UserId,
        jti: Uuid,
        issued_at: i64,
    ) -> Result<bool, db::DbError> {
        let inner = &self.inner;
        if let Some((owner, at)) = inner.entries.read().ok().and_then(|e| e.get(&jti).copied())
            && owner == user
            && at.elapsed() < inner.ttl
        {
            metrics::counter!("auth_validity_total", "answer" => "memory").increment(1);
            return Ok(true);
        }
        let epoch = inner.epoch.load(Ordering::Acquire);
        let allowed = db::users::token_allowed(db, user, jti, issued_at).await?;
        metrics::counter!("auth_validity_total", "answer" => "postgres").increment(1);
        if allowed && !inner.ttl.is_zero() && inner.listening.load(Ordering::Acquire) {
            let mut entries = inner.entries.write().unwrap_or_else(|e| e.into_inner());
            // Checked under the lock: an announcement that came while Postgres was read
            // bumped the epoch first, and this answer may predate it.
            if inner.epoch.load(Ordering::Acquire) == epoch {
                if entries.len() >= CAPACITY {
                    entries.clear();
                }
                entries.insert(jti, (user, Instant::now()));
            }
        }
        Ok(allowed)
    }

    /// Forgets what was remembered for `user` (or everyone's, for `None`). A gateway that
    /// revokes calls it itself, so its own next request sees the revocation at once.
    pub fn forget(&self, user: Option<UserId>) {
        let mut entries = self
            .inner
            .entries
            .write()
            .unwrap_or_else(|e| e.into_inner());
        self.inner.epoch.fetch_add(1, Ordering::AcqRel);
        match user {
            Some(user) => entries.retain(|_, (owner, _)| *owner != user),
            None => entries.clear(),
        }
    }

    /// Listens for the database's announcements until this cache is dropped, reconnecting
    /// after a loss (during which nothing is remembered).
    pub fn listen(&self, database_url: String) {
        if self.inner.ttl.is_zero() {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let closed = self.inner.closed.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                let result = tokio::select! {
                    _ = closed.cancelled() => return,
                    result = listen_once(&weak, &database_url) => result,
                };
                if let Some(inner) = weak.upgrade() {
                    inner.listening.store(false, Ordering::Release);
                    Validity { inner }.forget(None);
                }
                match result {
                    Ok(()) => {
                        backoff = Duration::from_millis(200);
                        tracing::warn!(
                            "auth invalidations: connection lost; asking Postgres on every request until it is back"
                        );
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "auth invalidations: cannot listen; asking Postgres on every request until it can")
                    }
                }
                tokio::select! {
                    _ = closed.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        });
    }
}

/// One connection's worth of listening, until it is lost.
async fn listen_once(weak: &Weak<Inner>, database_url: &str) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect(database_url).await?;
    listener.listen(CHANNEL).await?;
    let Some(inner) = weak.upgrade() else {
        return Ok(());
    };
    // Reads that began before we listened may predate an announcement we missed.
    inner.epoch.fetch_add(1, Ordering::AcqRel);
    inner.listening.store(true, Ordering::Release);
    drop(inner);
    tracing::debug!("auth invalidations: listening");
    while let Some(note) = listener.try_recv().await? {
        let Some(inner) = weak.upgrade() else {
            return Ok(());
        };
        // An unreadable payload forgets everyone: never trust what may be revoked.
        let user = Uuid::parse_str(note.payload()).ok().map(UserId);
        Validity { inner }.forget(user);
    }
    Ok(())
}
