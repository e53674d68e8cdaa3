//! Per-user bounds on what all users share: active rules, rule firings and backtests a minute,
//! model tokens a day, turns in flight. Each check answers which bound was reached and when it
//! frees up, for a 429 or a firing recorded as `quota_exceeded`. A bound of 0 is no bound.

use crate::Result;
use chrono::{DateTime, Duration, Utc};
use common::UserId;
use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};
use serde::Serialize;

fn stmt(sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// A bound reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{detail}")]
pub struct Exceeded {
    /// Which bound: `rules.active`, `rules.firings_per_minute`, `rules.backtests_per_minute`,
    /// `model.tokens_per_day`, `chat.turns_in_flight`, `chat.streams`.
    pub limit: &'static str,
    pub bound: i64,
    /// When it frees up by itself; `None` when it frees as the user's own things end (a turn
    /// finishes, a rule is paused).
    pub resets_at: Option<DateTime<Utc>>,
    pub detail: String,
}

impl Exceeded {
    pub fn new(
        limit: &'static str,
        bound: i64,
        resets_at: Option<DateTime<Utc>>,
        detail: String,
    ) -> Self {
        Self {
            limit,
            bound,
            resets_at,
            detail,
        }
    }

    /// Seconds until it frees up, for `Retry-After`.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.resets_at
            .map(|at| (at - Utc::now()).num_seconds().max(1) as u64)
    }
}

pub type Checked = std::result::Result<(), Exceeded>;

/// Takes one from the user's count of `limit` in the current fixed window of `window_secs`
/// (the same on every replica). Past `bound`, nothing is taken and the answer says when the
/// window ends.
pub async fn take(
    db: &impl ConnectionTrait,
    user: UserId,
    limit: &'static str,
    window_secs: i64,
    bound: i64,
    what: &str,
) -> Result<Checked> {
    if bound <= 0 {
        return Ok(Ok(()));
    }
    let row = db
        .query_one_raw(stmt(
            "INSERT INTO quota_windows (user_id, name, window_start, used)
             VALUES ($1, $2, to_timestamp(floor(extract(epoch FROM now()) / $3) * $3), 1)
             ON CONFLICT (user_id, name, window_start)
               DO UPDATE SET used = quota_windows.used + 1 WHERE quota_windows.used < $4
             RETURNING used",
            vec![
                user.0.into(),
                limit.into(),
                (window_secs as f64).into(),
                bound.into(),
            ],
        ))
        .await?;
    if row.is_some() {
        return Ok(Ok(()));
    }
    let now = Utc::now().timestamp();
    let resets = DateTime::<Utc>::from_timestamp((now / window_secs + 1) * window_secs, 0);
    Ok(Err(Exceeded::new(
        limit,
        bound,
        resets,
        format!(
            "at most {bound} {what} per {} for each user; the count starts again at {}",
            if window_secs == 60 {
                "minute".to_owned()
            } else {
                format!("{window_secs} s")
            },
            resets.map(|r| r.to_rfc3339()).unwrap_or_default()
        ),
    )))
}

/// A count of the user's rows (`$1` is the user).
async fn count_of(db: &impl ConnectionTrait, sql: &str, user: UserId) -> Result<i64> {
    let row = db.query_one_raw(stmt(sql, vec![user.0.into()])).await?;
    Ok(row.map(|r| r.try_get("", "n")).transpose()?.unwrap_or(0))
}

/// Whether the user holds fewer than `bound` of what `sql` counts; else the bound reached.
async fn fewer_than(
    db: &impl ConnectionTrait,
    user: UserId,
    bound: i64,
    sql: &str,
    limit: &'static str,
    detail: impl FnOnce() -> String,
) -> Result<Checked> {
    if bound <= 0 || count_of(db, sql, user).await? < bound {
        return Ok(Ok(()));
    }
    Ok(Err(Exceeded::new(limit, bound, None, detail())))
}

/// Whether the user may have one more active rule.
pub async fn active_rules(db: &impl ConnectionTrait, user: UserId, bound: i64) -> Result<Checked> {
    fewer_than(
        db,
        user,
        bound,
        "SELECT count(*) AS n FROM rules WHERE user_id = $1 AND active AND kind <> 'memory'",
        "rules.active",
        || format!("at most {bound} active rules for each user; pause or delete one first"),
    )
    .await
}

/// Whether the user has model tokens left today (UTC): chat, rule compiling and tier 2 count.
pub async fn tokens_today(db: &impl ConnectionTrait, user: UserId, bound: i64) -> Result<Checked> {
    if bound <= 0 {
        return Ok(Ok(()));
    }
    let row = db
        .query_one_raw(stmt(
            "SELECT coalesce(sum(input_tokens + output_tokens), 0)::bigint AS used FROM model_calls
             WHERE user_id = $1 AND created_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
            vec![user.0.into()],
        ))
        .await?;
    let used: i64 = row.map(|r| r.try_get("", "used")).transpose()?.unwrap_or(0);
    if used < bound {
        return Ok(Ok(()));
    }
    let tomorrow = (Utc::now() + Duration::days(1))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc());
    Ok(Err(Exceeded::new(
        "model.tokens_per_day",
        bound,
        tomorrow,
        format!(
            "the model's daily allowance of {bound} tokens for each user is used up ({used} today); it starts again at {}",
            tomorrow.map(|t| t.to_rfc3339()).unwrap_or_default()
        ),
    )))
}

/// Whether the user may start one more turn while others are queued or running.
pub async fn turns_in_flight(
    db: &impl ConnectionTrait,
    user: UserId,
    bound: i64,
) -> Result<Checked> {
    fewer_than(
        db,
        user,
        bound,
        "SELECT count(*) AS n FROM turns WHERE user_id = $1 AND status IN ('queued', 'running')",
        "chat.turns_in_flight",
        || {
            format!(
                "at most {bound} turns in flight for each user; wait for one to finish or cancel it"
            )
        },
    )
    .await
}

/// Both bounds a new chat turn must be under, in one round trip (it is on the way to the first
/// token): turns in flight, then the day's tokens.
pub async fn new_turn(
    db: &impl ConnectionTrait,
    user: UserId,
    turns_bound: i64,
    tokens_bound: i64,
) -> Result<Checked> {
    if turns_bound <= 0 && tokens_bound <= 0 {
        return Ok(Ok(()));
    }
    let row = db
        .query_one_raw(stmt(
            "SELECT (SELECT count(*) FROM turns WHERE user_id = $1 AND status IN ('queued', 'running')) AS turns,
                    (SELECT coalesce(sum(input_tokens + output_tokens), 0)::bigint FROM model_calls
                      WHERE user_id = $1 AND created_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') AS tokens",
            vec![user.0.into()],
        ))
        .await?;
    let (turns, tokens): (i64, i64) = match row {
        Some(r) => (r.try_get("", "turns")?, r.try_get("", "tokens")?),
        None => (0, 0),
    };
    if turns_bound > 0 && turns >= turns_bound {
        return turns_in_flight(db, user, turns_bound).await;
    }
    if tokens_bound > 0 && tokens >= tokens_bound {
        return tokens_today(db, user, tokens_bound).await;
    }
    Ok(Ok(()))
}

/// Forgets windows that ended more than a day ago.
pub async fn sweep(db: &impl ConnectionTrait) -> Result<u64> {
    let done = db
        .execute_raw(stmt(
            "DELETE FROM quota_windows WHERE window_start < now() - interval '1 day'",
            vec![],
        ))
        .await?;
    Ok(done.rows_affected())
}
