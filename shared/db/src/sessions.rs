//! Browser sessions and OAuth flows in progress. Only hashes of the random values the
//! browser holds are stored, so a database leak does not hand out sessions.

use crate::Result;
use chrono::{DateTime, Utc};
use common::UserId;
use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

fn stmt(sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

pub fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

pub async fn create(
    db: &impl ConnectionTrait,
    secret: &str,
    user: UserId,
    expires_at: DateTime<Utc>,
) -> Result<()> {
    db.execute_raw(stmt(
        "INSERT INTO sessions (id_hash, user_id, expires_at) VALUES ($1, $2, $3)",
        vec![
            hash(secret).into(),
            user.0.into(),
            expires_at.fixed_offset().into(),
        ],
    ))
    .await?;
    Ok(())
}

/// The user of a live session.
pub async fn find(db: &impl ConnectionTrait, secret: &str) -> Result<Option<UserId>> {
    let row = db
        .query_one_raw(stmt(
            "SELECT user_id FROM sessions WHERE id_hash = $1 AND expires_at > now()",
            vec![hash(secret).into()],
        ))
        .await?;
    row.map(|r| Ok(UserId(r.try_get::<Uuid>("", "user_id")?)))
        .transpose()
}

pub async fn delete(db: &impl ConnectionTrait, secret: &str) -> Result<()> {
    db.execute_raw(stmt(
        "DELETE FROM sessions WHERE id_hash = $1 OR expires_at < now()",
        vec![hash(secret).into()],
    ))
    .await?;
    Ok(())
}

/// An OAuth authorization request waiting for its callback.
#[derive(Debug, Clone)]
pub struct Flow {
    pub provider: String,
    pub browser_hash: Vec<u8>,
    pub verifier_enc: String,
    pub user_id: Option<UserId>,
    pub return_to: String,
}

pub async fn start_flow(
    db: &impl ConnectionTrait,
    state: &str,
    flow: &Flow,
    expires_at: DateTime<Utc>,
) -> Result<()> {
    db.execute_raw(stmt(
        "INSERT INTO oauth_flows (state, provider, browser_hash, verifier_enc, user_id, return_to, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        vec![
            state.into(),
            flow.provider.clone().into(),
            flow.browser_hash.clone().into(),
            flow.verifier_enc.clone().into(),
            flow.user_id.map(|u| u.0).into(),
            flow.return_to.clone().into(),
            expires_at.fixed_offset().into(),
        ],
    ))
    .await?;
    Ok(())
}

/// Takes the flow for `state` if it exists and has not expired. It is deleted either way, so
/// a `state` works once.
pub async fn take_flow(db: &impl ConnectionTrait, state: &str) -> Result<Option<Flow>> {
    let row = db
        .query_one_raw(stmt(
            "DELETE FROM oauth_flows WHERE state = $1
             RETURNING provider, browser_hash, verifier_enc, user_id, return_to, expires_at > now() AS live",
            vec![state.into()],
        ))
        .await?;
    // Expired flows are swept whenever one is taken.
    db.execute_raw(stmt(
        "DELETE FROM oauth_flows WHERE expires_at < now()",
        vec![],
    ))
    .await?;
    let Some(r) = row else { return Ok(None) };
    if !r.try_get::<bool>("", "live")? {
        return Ok(None);
    }
    Ok(Some(Flow {
        provider: r.try_get("", "provider")?,
        browser_hash: r.try_get("", "browser_hash")?,
        verifier_enc: r.try_get("", "verifier_enc")?,
        user_id: r.try_get::<Option<Uuid>>("", "user_id")?.map(UserId),
        return_to: r.try_get("", "return_to")?,
    }))
}
