//! Rule firings: one row per (rule, event) that passed tier 1, recorded before anything is
//! started, so a redelivered or replayed event finds its firing instead of making another.

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
pub struct Firing {
    pub id: Uuid,
    pub user_id: Uuid,
    pub rule_id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub event: serde_json::Value,
    pub tier: i16,
    /// `fired`, `chain_stopped`, or after tier 2: `acted`, `no_action`.
    pub status: String,
    pub detail: serde_json::Value,
    pub depth: i32,
    pub task_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, user_id, rule_id, event_id, event_type, event, tier, status, detail, depth, task_id, created_at";

const INSERT_FIRING: &str = "INSERT INTO rule_firings (id, user_id, rule_id, event_id, event_type, event, tier, status, detail, depth, task_id)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
     ON CONFLICT (rule_id, event_id) DO NOTHING RETURNING id";

/// Records a firing and, when it starts one, the task that carries out its steps: both or
/// neither, in one statement (one round trip). `false` when this (rule, event) fired before.
pub async fn record(
    db: &impl ConnectionTrait,
    f: &Firing,
    task: Option<&crate::tasks::NewTask>,
) -> Result<bool> {
    let mut values: Vec<Value> = vec![
        f.id.into(),
        f.user_id.into(),
        f.rule_id.into(),
        f.event_id.into(),
        f.event_type.clone().into(),
        f.event.clone().into(),
        f.tier.into(),
        f.status.clone().into(),
        f.detail.clone().into(),
        f.depth.into(),
        f.task_id.into(),
    ];
    let sql = match task {
        None => format!("WITH fired AS ({INSERT_FIRING}) SELECT count(*) AS fired FROM fired"),
        Some(t) => {
            values.extend(crate::tasks::insert_values(t));
            format!(
                "WITH fired AS ({INSERT_FIRING}), task AS ({}) SELECT (SELECT count(*) FROM fired) AS fired",
                crate::tasks::insert_sql(12)
            )
        }
    };
    let row = db.query_one_raw(stmt(&sql, values)).await?;
    Ok(row
        .map(|r| r.try_get::<i64>("", "fired"))
        .transpose()?
        .unwrap_or(0)
        > 0)
}

pub async fn get(db: &impl ConnectionTrait, id: Uuid) -> Result<Option<Firing>> {
    let row = db
        .query_one_raw(stmt(
            &format!("SELECT {COLUMNS} FROM rule_firings WHERE id = $1"),
            vec![id.into()],
        ))
        .await?;
    Ok(row.map(|r| Firing::from_query_result(&r, "")).transpose()?)
}

/// Records what tier 2 decided (and with what), once the model has answered.
pub async fn decided(
    db: &impl ConnectionTrait,
    id: Uuid,
    status: &str,
    detail: &serde_json::Value,
) -> Result<()> {
    db.execute_raw(stmt(
        "UPDATE rule_firings SET status = $2, detail = detail || $3 WHERE id = $1",
        vec![id.into(), status.into(), detail.clone().into()],
    ))
    .await?;
    Ok(())
}

/// A rule's firings, newest first.
pub async fn of_rule(
    db: &impl ConnectionTrait,
    user: UserId,
    rule: Uuid,
    limit: u64,
) -> Result<Vec<Firing>> {
    let rows = db
        .query_all_raw(stmt(
            &format!(
                "SELECT {COLUMNS} FROM rule_firings WHERE user_id = $1 AND rule_id = $2
                 ORDER BY created_at DESC LIMIT $3"
            ),
            vec![user.0.into(), rule.into(), (limit as i64).into()],
        ))
        .await?;
    rows.iter()
        .map(|r| Ok(Firing::from_query_result(r, "")?))
        .collect()
}

/// What `/metrics` shows of rules and tasks, counted in Postgres (every replica's work).
#[derive(Debug, Default)]
pub struct Stats {
    /// (tier, status, count).
    pub firings: Vec<(i16, String, i64)>,
    /// (state, count).
    pub tasks: Vec<(String, i64)>,
    pub waits_timed_out: i64,
    pub waits_open: i64,
    pub rules_active: i64,
}

pub async fn stats(db: &impl ConnectionTrait) -> Result<Stats> {
    let mut out = Stats::default();
    for row in db
        .query_all_raw(stmt(
            "SELECT tier, status, count(*) AS n FROM rule_firings GROUP BY tier, status ORDER BY tier, status",
            vec![],
        ))
        .await?
    {
        out.firings.push((
            row.try_get("", "tier")?,
            row.try_get("", "status")?,
            row.try_get("", "n")?,
        ));
    }
    for row in db
        .query_all_raw(stmt(
            "SELECT state, count(*) AS n FROM tasks GROUP BY state ORDER BY state",
            vec![],
        ))
        .await?
    {
        out.tasks
            .push((row.try_get("", "state")?, row.try_get("", "n")?));
    }
    if let Some(row) = db
        .query_one_raw(stmt(
            "SELECT count(*) FILTER (WHERE state = 'timed_out') AS timed_out,
                    count(*) FILTER (WHERE state IN ('pending', 'waiting')) AS open,
                    (SELECT count(*) FROM rules WHERE active AND kind <> 'memory') AS rules
             FROM task_waits",
            vec![],
        ))
        .await?
    {
        out.waits_timed_out = row.try_get("", "timed_out")?;
        out.waits_open = row.try_get("", "open")?;
        out.rules_active = row.try_get("", "rules")?;
    }
    Ok(out)
}
