//! Rules the user keeps: standing instructions and things to remember. Stored now; the engine
//! that fires them on events reads the same table.

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
pub struct Rule {
    pub id: Uuid,
    pub text: String,
    pub kind: String,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, text, kind, active, created_at, updated_at";

/// Stores a rule under `id` (chosen by the caller, so creating it again is a no-op).
pub async fn create(
    db: &impl ConnectionTrait,
    user: UserId,
    id: Uuid,
    text: &str,
    kind: &str,
) -> Result<Rule> {
    db.execute_raw(stmt(
        "INSERT INTO rules (id, user_id, text, kind) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
        vec![id.into(), user.0.into(), text.into(), kind.into()],
    ))
    .await?;
    get(db, user, id).await?.ok_or(crate::DbError::NotFound)
}

pub async fn list(db: &impl ConnectionTrait, user: UserId) -> Result<Vec<Rule>> {
    let rows = db
        .query_all_raw(stmt(
            &format!("SELECT {COLUMNS} FROM rules WHERE user_id = $1 ORDER BY created_at"),
            vec![user.0.into()],
        ))
        .await?;
    rows.iter()
        .map(|r| Ok(Rule::from_query_result(r, "")?))
        .collect()
}

pub async fn get(db: &impl ConnectionTrait, user: UserId, id: Uuid) -> Result<Option<Rule>> {
    let row = db
        .query_one_raw(stmt(
            &format!("SELECT {COLUMNS} FROM rules WHERE id = $1 AND user_id = $2"),
            vec![id.into(), user.0.into()],
        ))
        .await?;
    Ok(row.map(|r| Rule::from_query_result(&r, "")).transpose()?)
}

/// Changes a rule's text and/or whether it is active; `None` if it is not the user's.
pub async fn update(
    db: &impl ConnectionTrait,
    user: UserId,
    id: Uuid,
    text: Option<&str>,
    active: Option<bool>,
) -> Result<Option<Rule>> {
    let row = db
        .query_one_raw(stmt(
            &format!(
                "UPDATE rules SET text = coalesce($3, text), active = coalesce($4, active), updated_at = now()
                 WHERE id = $1 AND user_id = $2 RETURNING {COLUMNS}"
            ),
            vec![id.into(), user.0.into(), text.map(str::to_owned).into(), active.into()],
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
