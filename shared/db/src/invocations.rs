//! The tool-invocation ledger: every invocation is recorded under its idempotency key before
//! any provider is called, claimed for each attempt (the attempt count tells a retry that an
//! earlier attempt may have reached the provider), and settled once. Approvals live here too:
//! an invocation waiting for the user, until when and why.

use crate::Result;
use chrono::{DateTime, Utc};
use common::UserId;
use sea_orm::{ConnectionTrait, DbBackend, FromQueryResult, Statement, Value};
use serde::Serialize;
use uuid::Uuid;

fn stmt(sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

#[derive(Debug, Clone, FromQueryResult, Serialize)]
pub struct Invocation {
    pub id: Uuid,
    pub user_id: Uuid,
    pub idempotency_key: String,
    pub tool: String,
    pub arguments: serde_json::Value,
    pub conversation_id: Option<Uuid>,
    pub turn_id: Option<Uuid>,
    pub tool_call_id: Option<String>,
    pub model_call_id: Option<Uuid>,
    /// The message step its result is recorded at.
    pub step: Option<i32>,
    /// awaiting_approval, held, approved, running, succeeded, failed, rejected, expired.
    pub status: String,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    pub approval_reason: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub decided_at: Option<DateTime<Utc>>,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The task whose step made it, and the rule behind that task.
    pub task_id: Option<Uuid>,
    pub rule_id: Option<Uuid>,
}

impl Invocation {
    pub fn is_settled(&self) -> bool {
        matches!(
            self.status.as_str(),
            "succeeded" | "failed" | "rejected" | "expired"
        )
    }
}

const COLUMNS: &str = "id, user_id, idempotency_key, tool, arguments, conversation_id, turn_id, \
    tool_call_id, model_call_id, step, status, result, error, approval_reason, expires_at, \
    decided_at, attempts, created_at, started_at, finished_at, task_id, rule_id";

/// An invocation to record.
#[derive(Debug, Clone)]
pub struct Proposed {
    pub user: UserId,
    pub key: String,
    pub tool: String,
    pub arguments: serde_json::Value,
    pub conversation: Option<Uuid>,
    pub turn: Option<Uuid>,
    pub tool_call_id: Option<String>,
    pub model_call: Option<Uuid>,
    pub step: Option<i32>,
    /// `approved` (may run), `awaiting_approval` or `held`.
    pub status: String,
    pub approval_reason: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub task: Option<Uuid>,
    pub rule: Option<Uuid>,
}

/// Records `p`, or finds what its key recorded before.
pub async fn propose(db: &impl ConnectionTrait, p: &Proposed) -> Result<Invocation> {
    let row = db
        .query_one_raw(stmt(
            &format!(
                "INSERT INTO tool_invocations (id, user_id, idempotency_key, tool, arguments, conversation_id,
                     turn_id, tool_call_id, model_call_id, step, status, approval_reason, expires_at,
                     task_id, rule_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
                 ON CONFLICT (user_id, idempotency_key) DO UPDATE SET idempotency_key = EXCLUDED.idempotency_key
                 RETURNING {COLUMNS}"
            ),
            vec![
                Uuid::new_v4().into(),
                p.user.0.into(),
                p.key.clone().into(),
                p.tool.clone().into(),
                p.arguments.clone().into(),
                p.conversation.into(),
                p.turn.into(),
                p.tool_call_id.clone().into(),
                p.model_call.into(),
                p.step.into(),
                p.status.clone().into(),
                p.approval_reason.clone().into(),
                p.expires_at.map(|t| t.fixed_offset()).into(),
                p.task.into(),
                p.rule.into(),
            ],
        ))
        .await?
        .ok_or(crate::DbError::NotFound)?;
    Ok(Invocation::from_query_result(&row, "")?)
}

/// Takes an invocation for one attempt under a lease held by `owner` for `lease`: `None` when
/// it may not run (settled, still waiting for the user, or running under another attempt's
/// lease that has not run out). The returned `attempts` is more than 1 when an earlier attempt
/// may have reached the provider.
pub async fn claim(
    db: &impl ConnectionTrait,
    id: Uuid,
    owner: Uuid,
    lease: std::time::Duration,
) -> Result<Option<Invocation>> {
    let row = db
        .query_one_raw(stmt(
            &format!(
                "UPDATE tool_invocations SET status = 'running', attempts = attempts + 1,
                        started_at = coalesce(started_at, now()),
                        lease_owner = $2, lease_until = now() + make_interval(secs => $3)
                 WHERE id = $1 AND (status IN ('approved', 'held')
                       OR (status = 'running' AND (lease_until IS NULL OR lease_until < now())))
                 RETURNING {COLUMNS}"
            ),
            vec![id.into(), owner.into(), lease.as_secs_f64().into()],
        ))
        .await?;
    Ok(row
        .map(|r| Invocation::from_query_result(&r, ""))
        .transpose()?)
}

/// Extends the lease `owner` holds on a running invocation; false when it holds none (it ran
/// out and another attempt took the invocation over, or it settled).
pub async fn renew(
    db: &impl ConnectionTrait,
    id: Uuid,
    owner: Uuid,
    lease: std::time::Duration,
) -> Result<bool> {
    let done = db
        .execute_raw(stmt(
            "UPDATE tool_invocations SET lease_until = now() + make_interval(secs => $3)
             WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
            vec![id.into(), owner.into(), lease.as_secs_f64().into()],
        ))
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Records how an invocation ended; only the first ending counts. The lease ends with it.
pub async fn settle(
    db: &impl ConnectionTrait,
    id: Uuid,
    status: &str,
    result: &serde_json::Value,
    error: Option<&str>,
) -> Result<Invocation> {
    db.execute_raw(stmt(
        "UPDATE tool_invocations SET status = $2, result = $3, error = $4, finished_at = now(),
                lease_until = NULL
         WHERE id = $1 AND status NOT IN ('succeeded', 'failed', 'rejected', 'expired')",
        vec![
            id.into(),
            status.into(),
            result.clone().into(),
            error.map(str::to_owned).into(),
        ],
    ))
    .await?;
    get(db, id).await?.ok_or(crate::DbError::NotFound)
}

pub async fn get(db: &impl ConnectionTrait, id: Uuid) -> Result<Option<Invocation>> {
    let row = db
        .query_one_raw(stmt(
            &format!("SELECT {COLUMNS} FROM tool_invocations WHERE id = $1"),
            vec![id.into()],
        ))
        .await?;
    Ok(row
        .map(|r| Invocation::from_query_result(&r, ""))
        .transpose()?)
}

/// Chat approvals past their time become `expired`: they never run. (A task's approvals expire
/// through [`expire_task_approvals`], which hands the task back.)
pub async fn expire_due(db: &impl ConnectionTrait) -> Result<u64> {
    let done = db
        .execute_raw(stmt(
            "UPDATE tool_invocations SET status = 'expired', finished_at = now(),
                    result = '{\"error\": \"the approval expired\"}'
             WHERE status = 'awaiting_approval' AND expires_at < now() AND task_id IS NULL",
            vec![],
        ))
        .await?;
    Ok(done.rows_affected())
}

/// Tasks' approvals past their time become `expired`: `(user, task, invocation)` of each, for
/// the task to learn that its step will never run.
pub async fn expire_task_approvals(
    db: &impl ConnectionTrait,
    limit: u64,
) -> Result<Vec<(Uuid, Uuid, Uuid)>> {
    let rows = db
        .query_all_raw(stmt(
            "UPDATE tool_invocations SET status = 'expired', finished_at = now(),
                    result = '{\"error\": \"the approval expired\"}'
             WHERE id IN (
                 SELECT id FROM tool_invocations
                 WHERE status = 'awaiting_approval' AND expires_at < now() AND task_id IS NOT NULL
                 LIMIT $1 FOR UPDATE SKIP LOCKED)
             RETURNING user_id, task_id, id",
            vec![(limit as i64).into()],
        ))
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get::<Uuid>("", "user_id")?,
                r.try_get::<Uuid>("", "task_id")?,
                r.try_get::<Uuid>("", "id")?,
            ))
        })
        .collect()
}

/// How a decision went.
#[derive(Debug)]
pub enum Decided {
    Done(Invocation),
    /// Not the user's, or no such invocation.
    NotFound,
    /// Already approved, rejected or expired.
    NotWaiting(Invocation),
}

/// The user approves or rejects one of their own invocations that waits for them.
pub async fn decide(
    db: &impl ConnectionTrait,
    user: UserId,
    id: Uuid,
    approve: bool,
) -> Result<Decided> {
    expire_due(db).await?;
    let (status, finished) = if approve {
        ("approved", "NULL")
    } else {
        ("rejected", "now()")
    };
    let row = db
        .query_one_raw(stmt(
            &format!(
                "UPDATE tool_invocations SET status = '{status}', decided_at = now(), finished_at = {finished}
                 WHERE id = $1 AND user_id = $2 AND status = 'awaiting_approval'
                   AND (expires_at IS NULL OR expires_at >= now())
                 RETURNING {COLUMNS}"
            ),
            vec![id.into(), user.0.into()],
        ))
        .await?;
    if let Some(row) = row {
        return Ok(Decided::Done(Invocation::from_query_result(&row, "")?));
    }
    match get(db, id).await? {
        Some(i) if i.user_id == user.0 => Ok(Decided::NotWaiting(i)),
        _ => Ok(Decided::NotFound),
    }
}

/// The invocations one model step proposed, in call order.
pub async fn of_step(
    db: &impl ConnectionTrait,
    turn: Uuid,
    key_prefix: &str,
) -> Result<Vec<Invocation>> {
    let rows = db
        .query_all_raw(stmt(
            &format!(
                "SELECT {COLUMNS} FROM tool_invocations
                 WHERE turn_id = $1 AND starts_with(idempotency_key, $2) ORDER BY step"
            ),
            vec![turn.into(), key_prefix.into()],
        ))
        .await?;
    rows.iter()
        .map(|r| Ok(Invocation::from_query_result(r, "")?))
        .collect()
}

/// Filters for the audit.
#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    pub conversation: Option<Uuid>,
    pub tool: Option<String>,
    pub status: Option<String>,
    pub rule: Option<Uuid>,
    pub task: Option<Uuid>,
    pub limit: u64,
}

/// The user's invocations, newest first.
pub async fn audit(
    db: &impl ConnectionTrait,
    user: UserId,
    filter: &AuditFilter,
) -> Result<Vec<Invocation>> {
    let rows = db
        .query_all_raw(stmt(
            &format!(
                "SELECT {COLUMNS} FROM tool_invocations
                 WHERE user_id = $1
                   AND ($2::uuid IS NULL OR conversation_id = $2)
                   AND ($3::text IS NULL OR tool = $3)
                   AND ($4::text IS NULL OR status = $4)
                   AND ($6::uuid IS NULL OR rule_id = $6)
                   AND ($7::uuid IS NULL OR task_id = $7)
                 ORDER BY created_at DESC LIMIT $5"
            ),
            vec![
                user.0.into(),
                filter.conversation.into(),
                filter.tool.clone().into(),
                filter.status.clone().into(),
                (filter.limit as i64).into(),
                filter.rule.into(),
                filter.task.into(),
            ],
        ))
        .await?;
    rows.iter()
        .map(|r| Ok(Invocation::from_query_result(r, "")?))
        .collect()
}

/// A task's invocations, in step order.
pub async fn of_task(db: &impl ConnectionTrait, task: Uuid) -> Result<Vec<Invocation>> {
    let rows = db
        .query_all_raw(stmt(
            &format!(
                "SELECT {COLUMNS} FROM tool_invocations WHERE task_id = $1 ORDER BY created_at"
            ),
            vec![task.into()],
        ))
        .await?;
    rows.iter()
        .map(|r| Ok(Invocation::from_query_result(r, "")?))
        .collect()
}

pub async fn by_key(
    db: &impl ConnectionTrait,
    user: UserId,
    key: &str,
) -> Result<Option<Invocation>> {
    let row = db
        .query_one_raw(stmt(
            &format!(
                "SELECT {COLUMNS} FROM tool_invocations WHERE user_id = $1 AND idempotency_key = $2"
            ),
            vec![user.0.into(), key.into()],
        ))
        .await?;
    Ok(row
        .map(|r| Invocation::from_query_result(&r, ""))
        .transpose()?)
}

/// An action that ran inside the assistant (a log line, a notification) or failed before it
/// could run: recorded settled, under its key, for the audit.
#[derive(Debug, Clone)]
pub struct Done {
    pub user: UserId,
    pub key: String,
    pub tool: String,
    pub arguments: serde_json::Value,
    pub status: String,
    pub result: serde_json::Value,
    pub task: Option<Uuid>,
    pub rule: Option<Uuid>,
}

pub async fn record_done(db: &impl ConnectionTrait, d: &Done) -> Result<()> {
    db.execute_raw(stmt(
        "INSERT INTO tool_invocations (id, user_id, idempotency_key, tool, arguments, status, result,
                error, task_id, rule_id, started_at, finished_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now(), now())
         ON CONFLICT (user_id, idempotency_key) DO NOTHING",
        vec![
            Uuid::new_v4().into(),
            d.user.0.into(),
            d.key.clone().into(),
            d.tool.clone().into(),
            d.arguments.clone().into(),
            d.status.clone().into(),
            d.result.clone().into(),
            d.result["error"].as_str().map(str::to_owned).into(),
            d.task.into(),
            d.rule.into(),
        ],
    ))
    .await?;
    Ok(())
}
