//! Tasks: steps run in order, each at most once (its invocation key is the task's and the
//! step's), parked at a wait step until a matching event or the deadline. The wait for a
//! reply is registered with the email it waits on, before that email is sent, so a reply can
//! never arrive unexpected. Also the effects tasks made (for chain depth) and the
//! notifications they leave the user.

use crate::Result;
use chrono::{DateTime, Utc};
use common::UserId;
use sea_orm::{ConnectionTrait, DbBackend, FromQueryResult, Statement, Value};
use serde::Serialize;
use uuid::Uuid;

fn stmt(sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// States after which nothing runs.
pub const FINAL: [&str; 4] = ["done", "failed", "cancelled", "timed_out"];

#[derive(Debug, Clone, FromQueryResult, Serialize)]
pub struct Task {
    pub id: Uuid,
    pub user_id: Uuid,
    pub title: String,
    /// `rule` or `chat`.
    pub origin: String,
    pub rule_id: Option<Uuid>,
    pub event_id: Option<Uuid>,
    pub turn_id: Option<Uuid>,
    pub steps: serde_json::Value,
    pub context: serde_json::Value,
    /// The next step to run, from 0.
    pub step: i32,
    /// running, waiting, waiting_approval, done, failed, cancelled, timed_out.
    pub state: String,
    pub depth: i32,
    pub act_without_approval: bool,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Task {
    pub fn is_final(&self) -> bool {
        FINAL.contains(&self.state.as_str())
    }
}

const COLUMNS: &str = "id, user_id, title, origin, rule_id, event_id, turn_id, steps, context, step, state, depth, act_without_approval, error, created_at, updated_at";

#[derive(Debug, Clone)]
pub struct NewTask {
    pub id: Uuid,
    pub user: UserId,
    pub title: String,
    pub origin: String,
    pub rule: Option<Uuid>,
    pub event: Option<Uuid>,
    pub turn: Option<Uuid>,
    pub steps: serde_json::Value,
    pub context: serde_json::Value,
    pub depth: i32,
    pub act_without_approval: bool,
}

/// The statement that inserts a task, its parameters numbered from `$first`.
pub(crate) fn insert_sql(first: usize) -> String {
    let params: Vec<String> = (first..first + 11).map(|n| format!("${n}")).collect();
    format!(
        "INSERT INTO tasks (id, user_id, title, origin, rule_id, event_id, turn_id, steps, context, depth, act_without_approval)
         VALUES ({}) ON CONFLICT (id) DO NOTHING RETURNING id",
        params.join(", ")
    )
}

pub(crate) fn insert_values(t: &NewTask) -> Vec<Value> {
    vec![
        t.id.into(),
        t.user.0.into(),
        t.title.clone().into(),
        t.origin.clone().into(),
        t.rule.into(),
        t.event.into(),
        t.turn.into(),
        t.steps.clone().into(),
        t.context.clone().into(),
        t.depth.into(),
        t.act_without_approval.into(),
    ]
}

/// Creates the task; `false` when a task with this id exists.
pub async fn create(db: &impl ConnectionTrait, t: &NewTask) -> Result<bool> {
    let done = db
        .execute_raw(stmt(&insert_sql(1), insert_values(t)))
        .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn get(db: &impl ConnectionTrait, id: Uuid) -> Result<Option<Task>> {
    let row = db
        .query_one_raw(stmt(
            &format!("SELECT {COLUMNS} FROM tasks WHERE id = $1"),
            vec![id.into()],
        ))
        .await?;
    Ok(row.map(|r| Task::from_query_result(&r, "")).transpose()?)
}

pub async fn get_for(db: &impl ConnectionTrait, user: UserId, id: Uuid) -> Result<Option<Task>> {
    Ok(get(db, id).await?.filter(|t| t.user_id == user.0))
}

pub async fn list(
    db: &impl ConnectionTrait,
    user: UserId,
    state: Option<&str>,
    limit: u64,
) -> Result<Vec<Task>> {
    let rows = db
        .query_all_raw(stmt(
            &format!(
                "SELECT {COLUMNS} FROM tasks WHERE user_id = $1 AND ($2::text IS NULL OR state = $2)
                 ORDER BY created_at DESC LIMIT $3"
            ),
            vec![
                user.0.into(),
                state.map(str::to_owned).into(),
                (limit as i64).into(),
            ],
        ))
        .await?;
    rows.iter()
        .map(|r| Ok(Task::from_query_result(r, "")?))
        .collect()
}

/// Moves past step `from` with the context it left; `false` if another run moved first or the
/// task has ended.
pub async fn advance(
    db: &impl ConnectionTrait,
    id: Uuid,
    from: i32,
    context: &serde_json::Value,
) -> Result<bool> {
    let done = db
        .execute_raw(stmt(
            "UPDATE tasks SET step = $2 + 1, context = $3, state = 'running', updated_at = now()
             WHERE id = $1 AND step = $2 AND state NOT IN ('done', 'failed', 'cancelled', 'timed_out')",
            vec![id.into(), from.into(), context.clone().into()],
        ))
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Sets the state of a task that has not ended.
pub async fn set_state(
    db: &impl ConnectionTrait,
    id: Uuid,
    state: &str,
    error: Option<&str>,
) -> Result<bool> {
    let done = db
        .execute_raw(stmt(
            "UPDATE tasks SET state = $2, error = coalesce($3, error), updated_at = now()
             WHERE id = $1 AND state NOT IN ('done', 'failed', 'cancelled', 'timed_out')",
            vec![id.into(), state.into(), error.map(str::to_owned).into()],
        ))
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Takes the task's run lock for the transaction `txn` (runs of one task never overlap);
/// `false` when another run holds it.
pub async fn try_lock(txn: &impl ConnectionTrait, id: Uuid) -> Result<bool> {
    let key = i64::from_be_bytes(id.as_bytes()[..8].try_into().expect("8 bytes"));
    let row = txn
        .query_one_raw(stmt(
            "SELECT pg_try_advisory_xact_lock($1) AS got",
            vec![key.into()],
        ))
        .await?;
    Ok(row
        .map(|r| r.try_get::<bool>("", "got"))
        .transpose()?
        .unwrap_or(false))
}

/// Cancels a task of the user's that has not ended, and its waits.
pub async fn cancel(db: &impl ConnectionTrait, user: UserId, id: Uuid) -> Result<Option<Task>> {
    db.execute_raw(stmt(
        "UPDATE tasks SET state = 'cancelled', updated_at = now()
         WHERE id = $1 AND user_id = $2 AND state NOT IN ('done', 'failed', 'cancelled', 'timed_out')",
        vec![id.into(), user.0.into()],
    ))
    .await?;
    db.execute_raw(stmt(
        "UPDATE tool_invocations SET status = 'rejected', decided_at = now(), finished_at = now(),
                result = '{\"error\": \"the task was cancelled\"}'
         WHERE task_id = $1 AND user_id = $2 AND status = 'awaiting_approval'",
        vec![id.into(), user.0.into()],
    ))
    .await?;
    db.execute_raw(stmt(
        "UPDATE task_waits SET state = 'cancelled', resolved_at = now()
         WHERE task_id = $1 AND user_id = $2 AND state IN ('pending', 'waiting', 'timing_out')",
        vec![id.into(), user.0.into()],
    ))
    .await?;
    get_for(db, user, id).await
}

#[derive(Debug, Clone, FromQueryResult, Serialize)]
pub struct Wait {
    pub task_id: Uuid,
    pub step: i32,
    pub user_id: Uuid,
    /// The wait step as parsed.
    pub wait: serde_json::Value,
    /// For a reply: `{message_id, thread_id}` of the email it answers.
    pub expect: serde_json::Value,
    pub deadline: Option<DateTime<Utc>>,
    /// pending, waiting, matched, timing_out, timed_out, cancelled.
    pub state: String,
    pub matched_event: Option<serde_json::Value>,
    pub resolved_at: Option<DateTime<Utc>>,
}

const WAIT_COLUMNS: &str =
    "task_id, step, user_id, wait, expect, deadline, state, matched_event, resolved_at";

/// Registers a wait (once: a second registration finds the first).
#[allow(clippy::too_many_arguments)]
pub async fn register_wait(
    db: &impl ConnectionTrait,
    task: Uuid,
    step: i32,
    user: UserId,
    keys: &[String],
    wait: &serde_json::Value,
    expect: &serde_json::Value,
    deadline: Option<DateTime<Utc>>,
) -> Result<Wait> {
    let state = if deadline.is_some() {
        "waiting"
    } else {
        "pending"
    };
    db.execute_raw(stmt(
        "INSERT INTO task_waits (task_id, step, user_id, keys, wait, expect, deadline, state)
         VALUES ($1, $2, $3, $4::text[], $5, $6, $7, $8) ON CONFLICT (task_id, step) DO NOTHING",
        vec![
            task.into(),
            step.into(),
            user.0.into(),
            crate::rules::text_array(keys).into(),
            wait.clone().into(),
            expect.clone().into(),
            deadline.map(|d| d.fixed_offset()).into(),
            state.into(),
        ],
    ))
    .await?;
    wait_of(db, task, step)
        .await?
        .ok_or(crate::DbError::NotFound)
}

pub async fn wait_of(db: &impl ConnectionTrait, task: Uuid, step: i32) -> Result<Option<Wait>> {
    let row = db
        .query_one_raw(stmt(
            &format!("SELECT {WAIT_COLUMNS} FROM task_waits WHERE task_id = $1 AND step = $2"),
            vec![task.into(), step.into()],
        ))
        .await?;
    Ok(row.map(|r| Wait::from_query_result(&r, "")).transpose()?)
}

pub async fn waits_of(db: &impl ConnectionTrait, task: Uuid) -> Result<Vec<Wait>> {
    let rows = db
        .query_all_raw(stmt(
            &format!("SELECT {WAIT_COLUMNS} FROM task_waits WHERE task_id = $1 ORDER BY step"),
            vec![task.into()],
        ))
        .await?;
    rows.iter()
        .map(|r| Ok(Wait::from_query_result(r, "")?))
        .collect()
}

/// Adds to what a wait expects (the thread, once the email is sent).
pub async fn expect_more(
    db: &impl ConnectionTrait,
    task: Uuid,
    step: i32,
    more: &serde_json::Value,
) -> Result<()> {
    db.execute_raw(stmt(
        "UPDATE task_waits SET expect = expect || $3 WHERE task_id = $1 AND step = $2",
        vec![task.into(), step.into(), more.clone().into()],
    ))
    .await?;
    Ok(())
}

/// A pending wait starts counting: the task has reached it.
pub async fn start_waiting(
    db: &impl ConnectionTrait,
    task: Uuid,
    step: i32,
    deadline: DateTime<Utc>,
) -> Result<Option<Wait>> {
    db.execute_raw(stmt(
        "UPDATE task_waits SET state = 'waiting', deadline = $3
         WHERE task_id = $1 AND step = $2 AND state = 'pending'",
        vec![task.into(), step.into(), deadline.fixed_offset().into()],
    ))
    .await?;
    wait_of(db, task, step).await
}

/// The user's open waits that an event of these index keys could end.
pub async fn open_waits(
    db: &impl ConnectionTrait,
    user: UserId,
    keys: &[String],
) -> Result<Vec<Wait>> {
    let rows = db
        .query_all_raw(stmt(
            &format!(
                "SELECT {WAIT_COLUMNS} FROM task_waits
                 WHERE user_id = $1 AND state IN ('pending', 'waiting') AND keys && $2::text[]"
            ),
            vec![user.0.into(), crate::rules::text_array(keys).into()],
        ))
        .await?;
    rows.iter()
        .map(|r| Ok(Wait::from_query_result(r, "")?))
        .collect()
}

/// Ends a wait with the event that matched; the state it was in, or `None` if something else
/// (another event, the deadline, a cancel) ended it first.
pub async fn resolve(
    db: &impl ConnectionTrait,
    task: Uuid,
    step: i32,
    event: &serde_json::Value,
) -> Result<Option<String>> {
    let row = db
        .query_one_raw(stmt(
            "WITH old AS (
                 SELECT task_id, step, state FROM task_waits
                 WHERE task_id = $1 AND step = $2 AND state IN ('pending', 'waiting') FOR UPDATE
             )
             UPDATE task_waits w SET state = 'matched', matched_event = $3, resolved_at = now()
             FROM old WHERE w.task_id = old.task_id AND w.step = old.step
             RETURNING old.state",
            vec![task.into(), step.into(), event.clone().into()],
        ))
        .await?;
    Ok(row.map(|r| r.try_get::<String>("", "state")).transpose()?)
}

/// Takes due waits for their timeout (and those taken earlier whose timeout was never
/// handled): `(user, task, step)`. Replicas take disjoint sets.
pub async fn claim_due(db: &impl ConnectionTrait, limit: u64) -> Result<Vec<(Uuid, Uuid, i32)>> {
    let rows = db
        .query_all_raw(stmt(
            "UPDATE task_waits SET state = 'timing_out', resolved_at = now()
             WHERE (task_id, step) IN (
                 SELECT task_id, step FROM task_waits
                 WHERE (state = 'waiting' AND deadline <= now())
                    OR (state = 'timing_out' AND resolved_at < now() - interval '30 seconds')
                 ORDER BY deadline LIMIT $1 FOR UPDATE SKIP LOCKED)
             RETURNING user_id, task_id, step",
            vec![(limit as i64).into()],
        ))
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get::<Uuid>("", "user_id")?,
                r.try_get::<Uuid>("", "task_id")?,
                r.try_get::<i32>("", "step")?,
            ))
        })
        .collect()
}

/// Ends a wait by its deadline; `false` if an event ended it first.
pub async fn time_out(db: &impl ConnectionTrait, task: Uuid, step: i32) -> Result<bool> {
    let done = db
        .execute_raw(stmt(
            "UPDATE task_waits SET state = 'timed_out', resolved_at = now()
             WHERE task_id = $1 AND step = $2
               AND (state = 'timing_out' OR (state = 'waiting' AND deadline <= now()))",
            vec![task.into(), step.into()],
        ))
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Tasks waiting for an approval that is no longer waiting (decided or expired) for a minute:
/// their hand-over was lost. `(user, task)`.
pub async fn stalled(db: &impl ConnectionTrait, limit: u64) -> Result<Vec<(Uuid, Uuid)>> {
    let rows = db
        .query_all_raw(stmt(
            "SELECT t.user_id, t.id FROM tasks t
             WHERE t.state = 'waiting_approval' AND t.updated_at < now() - interval '1 minute'
               AND NOT EXISTS (SELECT 1 FROM tool_invocations i
                               WHERE i.task_id = t.id AND i.status = 'awaiting_approval')
             LIMIT $1",
            vec![(limit as i64).into()],
        ))
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get::<Uuid>("", "user_id")?,
                r.try_get::<Uuid>("", "id")?,
            ))
        })
        .collect()
}

/// Records what a task created at a provider, with the chain depth of the rule behind it.
pub async fn record_effect(
    db: &impl ConnectionTrait,
    user: UserId,
    entity: &str,
    depth: i32,
    task: Uuid,
) -> Result<()> {
    db.execute_raw(stmt(
        "INSERT INTO rule_effects (user_id, entity, depth, task_id) VALUES ($1, $2, $3, $4)
         ON CONFLICT (user_id, entity) DO UPDATE SET depth = EXCLUDED.depth, task_id = EXCLUDED.task_id, created_at = now()",
        vec![user.0.into(), entity.into(), depth.into(), task.into()],
    ))
    .await?;
    Ok(())
}

/// The chain depth of an entity a task changed within the last hour: the event it causes is one
/// deeper. Older effects are forgotten (a person editing it later starts a new chain).
pub async fn effect_depth(
    db: &impl ConnectionTrait,
    user: UserId,
    entity: &str,
) -> Result<Option<i32>> {
    let row = db
        .query_one_raw(stmt(
            "SELECT depth FROM rule_effects WHERE user_id = $1 AND entity = $2
               AND created_at > now() - interval '1 hour'",
            vec![user.0.into(), entity.into()],
        ))
        .await?;
    Ok(row.map(|r| r.try_get::<i32>("", "depth")).transpose()?)
}

#[derive(Debug, Clone, FromQueryResult, Serialize)]
pub struct Notification {
    pub id: Uuid,
    pub text: String,
    pub task_id: Option<Uuid>,
    pub rule_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub read_at: Option<DateTime<Utc>>,
}

/// Leaves the user a notification (once per id).
pub async fn notify(
    db: &impl ConnectionTrait,
    id: Uuid,
    user: UserId,
    text: &str,
    task: Option<Uuid>,
    rule: Option<Uuid>,
) -> Result<()> {
    db.execute_raw(stmt(
        "INSERT INTO notifications (id, user_id, text, task_id, rule_id) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (id) DO NOTHING",
        vec![id.into(), user.0.into(), text.into(), task.into(), rule.into()],
    ))
    .await?;
    Ok(())
}

pub async fn notifications(
    db: &impl ConnectionTrait,
    user: UserId,
    limit: u64,
) -> Result<Vec<Notification>> {
    let rows = db
        .query_all_raw(stmt(
            "SELECT id, text, task_id, rule_id, created_at, read_at FROM notifications
             WHERE user_id = $1 ORDER BY created_at DESC LIMIT $2",
            vec![user.0.into(), (limit as i64).into()],
        ))
        .await?;
    rows.iter()
        .map(|r| Ok(Notification::from_query_result(r, "")?))
        .collect()
}
