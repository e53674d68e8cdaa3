//! Per-resource sync state: the cursor, a lease so two runs never move one cursor, when the
//! next safety-net run is due, items skipped with the reason, and push channels.

use crate::Result;
use chrono::{DateTime, FixedOffset, Utc};
use common::UserId;
use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};
use serde::Serialize;
use uuid::Uuid;

fn stmt(sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// Creates the row (due now) if it does not exist.
pub async fn ensure(db: &impl ConnectionTrait, user: UserId, resource: &str) -> Result<()> {
    db.execute_raw(stmt(
        "INSERT INTO sync_state (user_id, resource) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        vec![user.0.into(), resource.into()],
    ))
    .await?;
    Ok(())
}

/// Takes the lease for `lease_secs` and returns the cursor, or `None` while another run
/// holds it. Opens a pass unless one is open (a continuation carries on its pass).
pub async fn acquire(
    db: &impl ConnectionTrait,
    user: UserId,
    resource: &str,
    lease_secs: i64,
) -> Result<Option<serde_json::Value>> {
    ensure(db, user, resource).await?;
    let row = db
        .query_one_raw(stmt(
            "UPDATE sync_state SET lease_until = now() + make_interval(secs => $3),
                 pass_open = true,
                 pass_started_at = CASE WHEN pass_open THEN pass_started_at ELSE now() END,
                 pass_done = CASE WHEN pass_open THEN pass_done ELSE 0 END,
                 pass_totals = CASE WHEN pass_open THEN pass_totals ELSE '{}' END
             WHERE user_id = $1 AND resource = $2 AND (lease_until IS NULL OR lease_until < now())
             RETURNING cursor",
            vec![user.0.into(), resource.into(), (lease_secs as f64).into()],
        ))
        .await?;
    row.map(|r| Ok(r.try_get("", "cursor")?)).transpose()
}

/// The stored cursor, without taking the lease (`{}` when there is none).
pub async fn cursor(
    db: &impl ConnectionTrait,
    user: UserId,
    resource: &str,
) -> Result<serde_json::Value> {
    let row = db
        .query_one_raw(stmt(
            "SELECT cursor FROM sync_state WHERE user_id = $1 AND resource = $2",
            vec![user.0.into(), resource.into()],
        ))
        .await?;
    Ok(match row {
        Some(r) => r.try_get("", "cursor")?,
        None => serde_json::json!({}),
    })
}

/// Stores the cursor after its batch is persisted.
pub async fn save_cursor(
    db: &impl ConnectionTrait,
    user: UserId,
    resource: &str,
    cursor: &serde_json::Value,
    items: u64,
) -> Result<()> {
    db.execute_raw(stmt(
        "UPDATE sync_state SET cursor = $3, items_synced = items_synced + $4
         WHERE user_id = $1 AND resource = $2",
        vec![
            user.0.into(),
            resource.into(),
            cursor.clone().into(),
            (items as i64).into(),
        ],
    ))
    .await?;
    Ok(())
}

/// How a run ended.
#[derive(Debug, Clone, Copy)]
pub struct RunEnd<'a> {
    /// Why it failed (`None`: it succeeded).
    pub error: Option<&'a str>,
    /// When a successful run's next safety-net run is due.
    pub interval_secs: u64,
    /// Items it read that [`progress`] has not counted yet.
    pub unreported: u64,
    /// Nothing is left to read: the pass is over (a run that stopped at its limit or failed
    /// leaves it open for its continuation or retry).
    pub pass_over: bool,
}

/// Ends a run: releases the lease and records the outcome. A successful run also pushes the
/// next safety-net run `interval_secs` out.
pub async fn finish(
    db: &impl ConnectionTrait,
    user: UserId,
    resource: &str,
    end: RunEnd<'_>,
) -> Result<()> {
    db.execute_raw(stmt(
        "UPDATE sync_state SET lease_until = NULL, last_error = $3,
             last_sync_at = CASE WHEN $3 IS NULL THEN now() ELSE last_sync_at END,
             next_run_at = CASE WHEN $3 IS NULL THEN now() + make_interval(secs => $4) ELSE next_run_at END,
             pass_done = pass_done + $5,
             pass_open = pass_open AND NOT $6
         WHERE user_id = $1 AND resource = $2",
        vec![
            user.0.into(),
            resource.into(),
            end.error.map(str::to_owned).into(),
            (end.interval_secs as f64).into(),
            (end.unreported as i64).into(),
            end.pass_over.into(),
        ],
    ))
    .await?;
    Ok(())
}

/// Counts `items` more read in the open pass.
pub async fn progress(
    db: &impl ConnectionTrait,
    user: UserId,
    resource: &str,
    items: u64,
) -> Result<()> {
    db.execute_raw(stmt(
        "UPDATE sync_state SET pass_done = pass_done + $3
         WHERE user_id = $1 AND resource = $2 AND pass_open",
        vec![user.0.into(), resource.into(), (items as i64).into()],
    ))
    .await?;
    Ok(())
}

/// Records the provider's estimate of how many items of `part` the open pass has to read,
/// once per pass (a later search of the same part counts only what is left).
pub async fn estimate(
    db: &impl ConnectionTrait,
    user: UserId,
    resource: &str,
    part: &str,
    items: u64,
) -> Result<()> {
    db.execute_raw(stmt(
        "UPDATE sync_state SET pass_totals = pass_totals || jsonb_build_object($3::text, $4::bigint)
         WHERE user_id = $1 AND resource = $2 AND pass_open AND pass_totals -> $3::text IS NULL",
        vec![
            user.0.into(),
            resource.into(),
            part.into(),
            (items as i64).into(),
        ],
    ))
    .await?;
    Ok(())
}

/// SQL: the row (aliased `table`, with `user_id` and `resource`) belongs to a connection
/// that is not revoked; a revoked one waits for the user to reconnect.
fn connected(table: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM connections c WHERE c.user_id = {table}.user_id
           AND c.provider = CASE WHEN {table}.resource IN ('gmail', 'calendar') THEN 'google'
                                 ELSE {table}.resource END
           AND c.status <> 'revoked')"
    )
}

/// Rows whose safety-net run is due, with the due time (part of the command's dedup key).
pub async fn due(
    db: &impl ConnectionTrait,
    limit: u64,
) -> Result<Vec<(UserId, String, DateTime<Utc>)>> {
    let rows = db
        .query_all_raw(stmt(
            &format!(
                "SELECT s.user_id, s.resource, s.next_run_at FROM sync_state s
                 WHERE s.next_run_at <= now() AND {}
                 ORDER BY s.next_run_at LIMIT $1",
                connected("s")
            ),
            vec![(limit as i64).into()],
        ))
        .await?;
    rows.into_iter()
        .map(|r| {
            let at: DateTime<FixedOffset> = r.try_get("", "next_run_at")?;
            Ok((
                UserId(r.try_get::<Uuid>("", "user_id")?),
                r.try_get("", "resource")?,
                at.with_timezone(&Utc),
            ))
        })
        .collect()
}

/// Moves the next run out (after the scheduler queued one).
pub async fn postpone(
    db: &impl ConnectionTrait,
    user: UserId,
    resource: &str,
    secs: u64,
) -> Result<()> {
    db.execute_raw(stmt(
        "UPDATE sync_state SET next_run_at = now() + make_interval(secs => $3)
         WHERE user_id = $1 AND resource = $2",
        vec![user.0.into(), resource.into(), (secs as f64).into()],
    ))
    .await?;
    Ok(())
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ResourceStatus {
    pub resource: String,
    pub syncing: bool,
    pub last_sync_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub items_synced: i64,
    pub pass: Option<Pass>,
}

/// A sync pass that has not finished: a run holds the lease, a continuation is queued, or a
/// failed run waits for its retry.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Pass {
    pub started_at: DateTime<Utc>,
    /// Items read so far (stored, unchanged, deleted or skipped).
    pub done: i64,
    /// The provider's estimate of all the pass reads, when the provider gives one (Gmail's
    /// `resultSizeEstimate`, HubSpot's search `total`; Calendar and Slack give none).
    pub total: Option<i64>,
}

pub async fn statuses(db: &impl ConnectionTrait, user: UserId) -> Result<Vec<ResourceStatus>> {
    let rows = db
        .query_all_raw(stmt(
            "SELECT resource, coalesce(lease_until > now(), false) AS running, last_sync_at,
                    last_error, items_synced, pass_open, pass_started_at, pass_done,
                    (SELECT sum(value::bigint) FROM jsonb_each_text(pass_totals))::bigint
                        AS pass_total
             FROM sync_state WHERE user_id = $1 ORDER BY resource",
            vec![user.0.into()],
        ))
        .await?;
    rows.into_iter()
        .map(|r| {
            let last: Option<DateTime<FixedOffset>> = r.try_get("", "last_sync_at")?;
            let running: bool = r.try_get("", "running")?;
            let last_error: Option<String> = r.try_get("", "last_error")?;
            let started: Option<DateTime<FixedOffset>> = r.try_get("", "pass_started_at")?;
            let pass = match (r.try_get::<bool>("", "pass_open")?, started) {
                (true, Some(started)) => {
                    let done: i64 = r.try_get("", "pass_done")?;
                    let total: Option<i64> = r.try_get("", "pass_total")?;
                    Some(Pass {
                        started_at: started.with_timezone(&Utc),
                        done,
                        // An estimate the pass has outgrown says nothing more.
                        total: total.map(|t| t.max(done)),
                    })
                }
                _ => None,
            };
            Ok(ResourceStatus {
                resource: r.try_get("", "resource")?,
                // Running, or its continuation queued; a failed pass is shown by its error.
                syncing: running || (pass.is_some() && last_error.is_none()),
                last_sync_at: last.map(|t| t.with_timezone(&Utc)),
                last_error,
                items_synced: r.try_get("", "items_synced")?,
                pass,
            })
        })
        .collect()
}

/// Forgets sync state and push channels of these resources (on disconnect).
pub async fn forget(db: &impl ConnectionTrait, user: UserId, resources: &[&str]) -> Result<()> {
    let list: Vec<String> = resources.iter().map(|r| (*r).to_owned()).collect();
    for table in ["sync_state", "watch_channels"] {
        db.execute_raw(stmt(
            &format!("DELETE FROM {table} WHERE user_id = $1 AND resource = ANY($2)"),
            vec![user.0.into(), list.clone().into()],
        ))
        .await?;
    }
    Ok(())
}

/// Records an item the sync did not index and why.
pub async fn skip(
    db: &impl ConnectionTrait,
    user: UserId,
    resource: &str,
    external_id: &str,
    reason: &str,
    size: Option<i64>,
) -> Result<()> {
    db.execute_raw(stmt(
        "INSERT INTO skipped_items (user_id, resource, external_id, reason, size_bytes)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (user_id, resource, external_id) DO UPDATE SET
             reason = EXCLUDED.reason, size_bytes = EXCLUDED.size_bytes, at = now()",
        vec![
            user.0.into(),
            resource.into(),
            external_id.into(),
            reason.into(),
            size.into(),
        ],
    ))
    .await?;
    Ok(())
}

/// A push subscription (Gmail watch or Calendar channel).
#[derive(Debug, Clone)]
pub struct Channel {
    pub id: String,
    pub user_id: UserId,
    pub resource: String,
    pub token_hash: Option<Vec<u8>>,
    pub resource_id: Option<String>,
    pub expires_at: DateTime<Utc>,
}

pub async fn save_channel(db: &impl ConnectionTrait, channel: &Channel) -> Result<()> {
    db.execute_raw(stmt(
        "INSERT INTO watch_channels (id, user_id, resource, token_hash, resource_id, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (id) DO UPDATE SET token_hash = EXCLUDED.token_hash,
             resource_id = EXCLUDED.resource_id, expires_at = EXCLUDED.expires_at",
        vec![
            channel.id.clone().into(),
            channel.user_id.0.into(),
            channel.resource.clone().into(),
            channel.token_hash.clone().into(),
            channel.resource_id.clone().into(),
            channel.expires_at.fixed_offset().into(),
        ],
    ))
    .await?;
    Ok(())
}

fn channel_from(r: sea_orm::QueryResult) -> Result<Channel> {
    let expires: DateTime<FixedOffset> = r.try_get("", "expires_at")?;
    Ok(Channel {
        id: r.try_get("", "id")?,
        user_id: UserId(r.try_get::<Uuid>("", "user_id")?),
        resource: r.try_get("", "resource")?,
        token_hash: r.try_get("", "token_hash")?,
        resource_id: r.try_get("", "resource_id")?,
        expires_at: expires.with_timezone(&Utc),
    })
}

const CHANNEL_COLUMNS: &str = "id, user_id, resource, token_hash, resource_id, expires_at";

pub async fn channel(db: &impl ConnectionTrait, id: &str) -> Result<Option<Channel>> {
    db.query_one_raw(stmt(
        &format!("SELECT {CHANNEL_COLUMNS} FROM watch_channels WHERE id = $1"),
        vec![id.into()],
    ))
    .await?
    .map(channel_from)
    .transpose()
}

/// The user's channels for a resource (to stop the old one after renewing).
pub async fn channels_of(
    db: &impl ConnectionTrait,
    user: UserId,
    resource: &str,
) -> Result<Vec<Channel>> {
    db.query_all_raw(stmt(
        &format!(
            "SELECT {CHANNEL_COLUMNS} FROM watch_channels WHERE user_id = $1 AND resource = $2"
        ),
        vec![user.0.into(), resource.into()],
    ))
    .await?
    .into_iter()
    .map(channel_from)
    .collect()
}

/// Channels of working connections that expire before `before`: due for renewal.
pub async fn expiring_channels(
    db: &impl ConnectionTrait,
    before: DateTime<Utc>,
) -> Result<Vec<Channel>> {
    db.query_all_raw(stmt(
        &format!(
            "SELECT {CHANNEL_COLUMNS} FROM watch_channels w WHERE expires_at < $1 AND {} LIMIT 500",
            connected("w")
        ),
        vec![before.fixed_offset().into()],
    ))
    .await?
    .into_iter()
    .map(channel_from)
    .collect()
}

pub async fn delete_channel(db: &impl ConnectionTrait, id: &str) -> Result<()> {
    db.execute_raw(stmt(
        "DELETE FROM watch_channels WHERE id = $1",
        vec![id.into()],
    ))
    .await?;
    Ok(())
}
