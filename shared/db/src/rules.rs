//! Rules the user keeps: structured rules and plain-language instructions that fire on events,
//! and things to remember for chat. The engine finds a user's active rules for an event by
//! the event's index keys (a GIN index over `triggers`), never by reading all their rules.

use crate::Result;
use chrono::{DateTime, Utc};
use common::UserId;
use sea_orm::{ConnectionTrait, DbBackend, FromQueryResult, Statement, Value};
use serde::Serialize;
use uuid::Uuid;

fn stmt(sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// A Postgres `text[]` literal of plain keys (event patterns hold no quotes or backslashes;
/// any that do are escaped).
pub fn text_array(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|i| format!("\"{}\"", i.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", quoted.join(","))
}

#[derive(Debug, Clone, FromQueryResult, Serialize)]
pub struct Rule {
    pub id: Uuid,
    pub user_id: Uuid,
    pub text: String,
    /// `structured`, `instruction` or `memory`.
    pub kind: String,
    /// The parsed rule (structured) or the compiled trigger (instruction).
    pub compiled: Option<serde_json::Value>,
    pub active: bool,
    pub act_without_approval: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str =
    "id, user_id, text, kind, compiled, active, act_without_approval, created_at, updated_at";

/// The rows that read as rules. One that does not (its stored form nested past what serde
/// reads, or damaged by hand) is reported and skipped, so it never stops a user's other
/// rules, or `ctl rules list` for everyone, from loading.
fn readable(rows: &[sea_orm::QueryResult]) -> Vec<Rule> {
    rows.iter()
        .filter_map(|row| match Rule::from_query_result(row, "") {
            Ok(rule) => Some(rule),
            Err(e) => {
                let id: Option<Uuid> = row.try_get("", "id").ok();
                tracing::warn!(rule.id = ?id, error = %e, "a stored rule could not be read; skipped");
                metrics::counter!("rules_unreadable_total").increment(1);
                None
            }
        })
        .collect()
}

/// A rule to store.
#[derive(Debug, Clone)]
pub struct NewRule {
    pub id: Uuid,
    pub text: String,
    pub kind: String,
    pub compiled: Option<serde_json::Value>,
    /// Event patterns it is looked up by (empty for memories).
    pub triggers: Vec<String>,
    pub act_without_approval: bool,
}

impl NewRule {
    pub fn memory(id: Uuid, text: &str) -> Self {
        Self {
            id,
            text: text.to_owned(),
            kind: "memory".into(),
            compiled: None,
            triggers: Vec::new(),
            act_without_approval: false,
        }
    }
}

/// Stores a rule under its id (chosen by the caller, so creating it again is a no-op).
pub async fn create(db: &impl ConnectionTrait, user: UserId, rule: &NewRule) -> Result<Rule> {
    db.execute_raw(stmt(
        "INSERT INTO rules (id, user_id, text, kind, compiled, triggers, act_without_approval)
         VALUES ($1, $2, $3, $4, $5, $6::text[], $7) ON CONFLICT (id) DO NOTHING",
        vec![
            rule.id.into(),
            user.0.into(),
            rule.text.clone().into(),
            rule.kind.clone().into(),
            rule.compiled.clone().into(),
            text_array(&rule.triggers).into(),
            rule.act_without_approval.into(),
        ],
    ))
    .await?;
    get(db, user, rule.id)
        .await?
        .ok_or(crate::DbError::NotFound)
}

pub async fn list(db: &impl ConnectionTrait, user: UserId) -> Result<Vec<Rule>> {
    let rows = db
        .query_all_raw(stmt(
            &format!("SELECT {COLUMNS} FROM rules WHERE user_id = $1 ORDER BY created_at"),
            vec![user.0.into()],
        ))
        .await?;
    Ok(readable(&rows))
}

pub async fn get(db: &impl ConnectionTrait, user: UserId, id: Uuid) -> Result<Option<Rule>> {
    let row = db
        .query_one_raw(stmt(
            &format!("SELECT {COLUMNS} FROM rules WHERE id = $1 AND user_id = $2"),
            vec![id.into(), user.0.into()],
        ))
        .await?;
    Ok(row.and_then(|r| readable(&[r]).pop()))
}

/// The user's active rules listening to any of `keys` (the index keys of one event type).
pub async fn candidates(
    db: &impl ConnectionTrait,
    user: UserId,
    keys: &[String],
) -> Result<Vec<Rule>> {
    let rows = db
        .query_all_raw(stmt(
            &format!(
                "SELECT {COLUMNS} FROM rules
                 WHERE user_id = $1 AND active AND triggers && $2::text[] ORDER BY created_at"
            ),
            vec![user.0.into(), text_array(keys).into()],
        ))
        .await?;
    Ok(readable(&rows))
}

/// What may change in a rule. A new text comes with its new compiled form and triggers.
#[derive(Debug, Clone, Default)]
pub struct RuleChange {
    pub replaced: Option<NewRule>,
    pub active: Option<bool>,
    pub act_without_approval: Option<bool>,
}

/// Changes a rule; `None` if it is not the user's.
pub async fn update(
    db: &impl ConnectionTrait,
    user: UserId,
    id: Uuid,
    change: &RuleChange,
) -> Result<Option<Rule>> {
    let r = change.replaced.as_ref();
    let row = db
        .query_one_raw(stmt(
            &format!(
                "UPDATE rules SET
                    text = coalesce($3, text),
                    kind = coalesce($4, kind),
                    compiled = CASE WHEN $3 IS NULL THEN compiled ELSE $5 END,
                    triggers = coalesce($6::text[], triggers),
                    active = coalesce($7, active),
                    act_without_approval = coalesce($8, act_without_approval),
                    updated_at = now()
                 WHERE id = $1 AND user_id = $2 RETURNING {COLUMNS}"
            ),
            vec![
                id.into(),
                user.0.into(),
                r.map(|r| r.text.clone()).into(),
                r.map(|r| r.kind.clone()).into(),
                r.and_then(|r| r.compiled.clone()).into(),
                r.map(|r| text_array(&r.triggers)).into(),
                change.active.into(),
                change.act_without_approval.into(),
            ],
        ))
        .await?;
    Ok(row.map(|r| Rule::from_query_result(&r, "")).transpose()?)
}

pub async fn delete(db: &impl ConnectionTrait, user: UserId, id: Uuid) -> Result<bool> {
    let done = db
        .execute_raw(stmt(
            "DELETE FROM rules WHERE id = $1 AND user_id = $2",
            vec![id.into(), user.0.into()],
        ))
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Active rules per user, for `ctl rules list` across users.
pub async fn all(db: &impl ConnectionTrait, user: Option<UserId>) -> Result<Vec<Rule>> {
    let rows = db
        .query_all_raw(stmt(
            &format!(
                "SELECT {COLUMNS} FROM rules WHERE ($1::uuid IS NULL OR user_id = $1)
                 ORDER BY user_id, created_at"
            ),
            vec![user.map(|u| u.0).into()],
        ))
        .await?;
    Ok(readable(&rows))
}
