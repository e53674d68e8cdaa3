//! Provider connections: tokens encrypted with the [`KeyRing`] (bound to user + provider),
//! status for `GET /api/connections`, and key rotation for `ctl keys rotate`.

use crate::{DbError, Result};
use chrono::{DateTime, FixedOffset, Utc};
use common::UserId;
use common::secrets::KeyRing;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, Value};
use serde::Serialize;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSet {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConnectionStatus {
    pub provider: String,
    pub account_id: String,
    pub account_name: String,
    /// `connected`, `syncing`, `revoked` or `error`.
    pub status: String,
    pub scopes: String,
    pub last_sync_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

fn stmt(sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// The provider account a grant belongs to.
#[derive(Debug, Clone, Default)]
pub struct Account {
    /// Google `sub`, HubSpot portal id, Slack team id: what provider events are matched on.
    pub id: String,
    /// Google email, HubSpot domain, Slack team name: for display only.
    pub name: String,
    pub scopes: String,
    /// The person inside the account, where it has several (the Slack member id).
    pub user: Option<String>,
}

/// Stores (or replaces) a user's tokens for a provider and marks the connection connected.
pub async fn save_tokens(
    db: &impl ConnectionTrait,
    ring: &KeyRing,
    user: UserId,
    provider: &str,
    account: &Account,
    tokens: &TokenSet,
) -> Result<()> {
    let owner = user.to_string();
    let access = ring.encrypt(&tokens.access_token, &owner, provider);
    let refresh = tokens
        .refresh_token
        .as_ref()
        .map(|r| ring.encrypt(r, &owner, provider));
    db.execute_raw(stmt(
        "INSERT INTO connections (id, user_id, provider, account_id, scopes, access_token_enc, refresh_token_enc, expires_at, account_name, account_user)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (user_id, provider) DO UPDATE SET
             account_id = EXCLUDED.account_id, scopes = EXCLUDED.scopes,
             account_name = EXCLUDED.account_name, account_user = EXCLUDED.account_user,
             access_token_enc = EXCLUDED.access_token_enc,
             -- a provider that does not send a new refresh token keeps the old one valid
             refresh_token_enc = coalesce(EXCLUDED.refresh_token_enc, connections.refresh_token_enc),
             expires_at = EXCLUDED.expires_at, status = 'connected', last_error = NULL, updated_at = now()",
        vec![
            Uuid::new_v4().into(),
            user.0.into(),
            provider.into(),
            account.id.clone().into(),
            account.scopes.clone().into(),
            access.into(),
            refresh.into(),
            tokens.expires_at.map(|t| t.fixed_offset()).into(),
            account.name.clone().into(),
            account.user.clone().into(),
        ],
    ))
    .await?;
    Ok(())
}

/// After a refresh: new access token, rotated refresh token (kept when none came), expiry.
pub async fn update_tokens(
    db: &impl ConnectionTrait,
    ring: &KeyRing,
    user: UserId,
    provider: &str,
    tokens: &TokenSet,
) -> Result<()> {
    let owner = user.to_string();
    db.execute_raw(stmt(
        "UPDATE connections SET access_token_enc = $3,
             refresh_token_enc = coalesce($4, refresh_token_enc), expires_at = $5,
             status = CASE WHEN status = 'error' THEN 'connected' ELSE status END, updated_at = now()
         WHERE user_id = $1 AND provider = $2",
        vec![
            user.0.into(),
            provider.into(),
            ring.encrypt(&tokens.access_token, &owner, provider).into(),
            tokens
                .refresh_token
                .as_ref()
                .map(|r| ring.encrypt(r, &owner, provider))
                .into(),
            tokens.expires_at.map(|t| t.fixed_offset()).into(),
        ],
    ))
    .await?;
    Ok(())
}

/// The user's decrypted tokens for a provider, if connected.
pub async fn tokens(
    db: &impl ConnectionTrait,
    ring: &KeyRing,
    user: UserId,
    provider: &str,
) -> Result<Option<TokenSet>> {
    read_tokens(db, ring, user, provider, "").await
}

/// Like [`tokens`], holding the row lock until the transaction ends: one refresh at a time.
pub async fn lock_tokens(
    txn: &impl ConnectionTrait,
    ring: &KeyRing,
    user: UserId,
    provider: &str,
) -> Result<Option<TokenSet>> {
    read_tokens(txn, ring, user, provider, "FOR UPDATE").await
}

async fn read_tokens(
    db: &impl ConnectionTrait,
    ring: &KeyRing,
    user: UserId,
    provider: &str,
    lock: &str,
) -> Result<Option<TokenSet>> {
    let row = db
        .query_one_raw(stmt(
            &format!(
                "SELECT access_token_enc, refresh_token_enc, expires_at FROM connections
                 WHERE user_id = $1 AND provider = $2 AND status <> 'revoked' {lock}"
            ),
            vec![user.0.into(), provider.into()],
        ))
        .await?;
    let Some(row) = row else { return Ok(None) };
    let owner = user.to_string();
    let access: Option<String> = row.try_get("", "access_token_enc")?;
    let refresh: Option<String> = row.try_get("", "refresh_token_enc")?;
    let expires: Option<DateTime<FixedOffset>> = row.try_get("", "expires_at")?;
    let Some(access) = access else {
        return Ok(None);
    };
    Ok(Some(TokenSet {
        access_token: ring.decrypt(&access, &owner, provider)?,
        refresh_token: refresh
            .map(|r| ring.decrypt(&r, &owner, provider))
            .transpose()?,
        expires_at: expires.map(|t| t.with_timezone(&Utc)),
    }))
}

pub async fn list(db: &DatabaseConnection, user: UserId) -> Result<Vec<ConnectionStatus>> {
    let rows = db
        .query_all_raw(stmt(
            "SELECT provider, account_id, account_name, status, scopes, last_sync_at, last_error
             FROM connections WHERE user_id = $1 ORDER BY provider",
            vec![user.0.into()],
        ))
        .await?;
    rows.into_iter()
        .map(|r| {
            let last: Option<DateTime<FixedOffset>> = r.try_get("", "last_sync_at")?;
            Ok(ConnectionStatus {
                provider: r.try_get("", "provider")?,
                account_id: r.try_get("", "account_id")?,
                account_name: r.try_get("", "account_name")?,
                status: r.try_get("", "status")?,
                scopes: r.try_get("", "scopes")?,
                last_sync_at: last.map(|t| t.with_timezone(&Utc)),
                last_error: r.try_get("", "last_error")?,
            })
        })
        .collect()
}

/// The provider refused our refresh token (`invalid_grant`): stop using it, say why.
/// The user's HubSpot portal (its connection's account id), for record links.
pub async fn hubspot_portal(db: &DatabaseConnection, user: UserId) -> Result<Option<String>> {
    Ok(list(db, user)
        .await?
        .into_iter()
        .find(|c| c.provider == "hubspot")
        .map(|c| c.account_id))
}

pub async fn mark_revoked(
    db: &impl ConnectionTrait,
    user: UserId,
    provider: &str,
    reason: &str,
) -> Result<()> {
    db.execute_raw(stmt(
        "UPDATE connections SET status = 'revoked', last_error = $3, access_token_enc = NULL,
             refresh_token_enc = NULL, updated_at = now()
         WHERE user_id = $1 AND provider = $2",
        vec![user.0.into(), provider.into(), reason.into()],
    ))
    .await?;
    Ok(())
}

pub async fn delete(db: &DatabaseConnection, user: UserId, provider: &str) -> Result<bool> {
    let result = db
        .execute_raw(stmt(
            "DELETE FROM connections WHERE user_id = $1 AND provider = $2",
            vec![user.0.into(), provider.into()],
        ))
        .await?;
    Ok(result.rows_affected() > 0)
}

/// What `rotate_keys` did: rows re-encrypted, and rows it could not decrypt (left as they
/// were, for an operator to look at) with the reason.
#[derive(Debug, Default, PartialEq)]
pub struct Rotation {
    pub rotated: u64,
    pub failed: Vec<(Uuid, String)>,
}

/// One connection's encrypted tokens as read, for a compare-and-swap rewrite.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub id: Uuid,
    pub owner: Uuid,
    pub provider: String,
    pub access: Option<String>,
    pub refresh: Option<String>,
}

/// What rewriting one row under the current key did.
#[derive(Debug, PartialEq, Eq)]
pub enum Rewrite {
    Rotated,
    Unchanged,
    /// The row changed since it was read (a token refresh stored new tokens): nothing was
    /// written, so the fresh tokens survive; read it again and retry.
    Conflict,
}

/// The encrypted tokens of one connection (`Some(id)`) or of all, as stored now.
pub async fn sealed_rows(db: &DatabaseConnection, id: Option<Uuid>) -> Result<Vec<Sealed>> {
    let rows = db
        .query_all_raw(stmt(
            "SELECT id, user_id, provider, access_token_enc, refresh_token_enc FROM connections
             WHERE $1::uuid IS NULL OR id = $1",
            vec![id.into()],
        ))
        .await?;
    rows.into_iter()
        .map(|r| {
            Ok(Sealed {
                id: r.try_get("", "id")?,
                owner: r.try_get("", "user_id")?,
                provider: r.try_get("", "provider")?,
                access: r.try_get("", "access_token_enc")?,
                refresh: r.try_get("", "refresh_token_enc")?,
            })
        })
        .collect()
}

/// Re-encrypts one row read as `seen`, writing only if the row still holds what was read.
pub async fn rewrite(db: &DatabaseConnection, ring: &KeyRing, seen: &Sealed) -> Result<Rewrite> {
    let owner = seen.owner.to_string();
    let rotate = |v: &Option<String>| -> Result<(Option<String>, bool)> {
        match v {
            Some(v) if ring.needs_rotation(v) => {
                Ok((Some(ring.rotate(v, &owner, &seen.provider)?), true))
            }
            other => Ok((other.clone(), false)),
        }
    };
    let (access, a) = rotate(&seen.access)?;
    let (refresh, b) = rotate(&seen.refresh)?;
    if !(a || b) {
        return Ok(Rewrite::Unchanged);
    }
    let result = db
        .execute_raw(stmt(
            "UPDATE connections SET access_token_enc = $2, refresh_token_enc = $3, updated_at = now()
             WHERE id = $1 AND access_token_enc IS NOT DISTINCT FROM $4
               AND refresh_token_enc IS NOT DISTINCT FROM $5",
            vec![
                seen.id.into(),
                access.into(),
                refresh.into(),
                seen.access.clone().into(),
                seen.refresh.clone().into(),
            ],
        ))
        .await?;
    Ok(if result.rows_affected() == 1 {
        Rewrite::Rotated
    } else {
        Rewrite::Conflict
    })
}

/// Re-encrypts every token not under the ring's current key. A row that cannot be decrypted
/// is reported and skipped, so one bad row does not stop the rotation of all the others; a
/// row refreshed while it was being rotated is read again, never overwritten.
pub async fn rotate_keys(db: &DatabaseConnection, ring: &KeyRing) -> Result<Rotation> {
    let mut report = Rotation::default();
    for first in sealed_rows(db, None).await? {
        let mut seen = Some(first);
        let mut attempts = 0;
        while let Some(row) = seen.take() {
            attempts += 1;
            match rewrite(db, ring, &row).await {
                Ok(Rewrite::Rotated) => report.rotated += 1,
                Ok(Rewrite::Unchanged) => {}
                Ok(Rewrite::Conflict) if attempts < 5 => {
                    seen = sealed_rows(db, Some(row.id)).await?.into_iter().next();
                }
                Ok(Rewrite::Conflict) => report
                    .failed
                    .push((row.id, "kept changing while being rotated".into())),
                Err(e) => report.failed.push((row.id, e.to_string())),
            }
        }
    }
    Ok(report)
}

impl From<common::secrets::SecretError> for DbError {
    fn from(e: common::secrets::SecretError) -> Self {
        DbError::Secret(e)
    }
}

/// Records a failure the user should see on the connection (`error` status, the reason).
pub async fn mark_error(
    db: &impl ConnectionTrait,
    user: UserId,
    provider: &str,
    reason: &str,
) -> Result<()> {
    db.execute_raw(stmt(
        "UPDATE connections SET status = 'error', last_error = $3, updated_at = now()
         WHERE user_id = $1 AND provider = $2 AND status <> 'revoked'",
        vec![user.0.into(), provider.into(), reason.into()],
    ))
    .await?;
    Ok(())
}

/// The users whose Google connection is for this mailbox: a Gmail push names the mailbox
/// by its address (Google's own identifier for it, verified at sign-in), nothing else.
pub async fn users_by_mailbox(db: &impl ConnectionTrait, address: &str) -> Result<Vec<UserId>> {
    let rows = db
        .query_all_raw(stmt(
            "SELECT user_id FROM connections
             WHERE provider = 'google' AND lower(account_name) = lower($1) AND status <> 'revoked'
             ORDER BY created_at",
            vec![address.into()],
        ))
        .await?;
    rows.into_iter()
        .map(|r| Ok(UserId(r.try_get("", "user_id")?)))
        .collect()
}

/// The users connected to this provider account (HubSpot portal id, Slack team id): matched
/// on the provider's id only, never on a name another account could take. Several users can
/// share one HubSpot portal or Slack team.
pub async fn users_by_account(
    db: &impl ConnectionTrait,
    provider: &str,
    account: &str,
) -> Result<Vec<UserId>> {
    let rows = db
        .query_all_raw(stmt(
            "SELECT user_id FROM connections
             WHERE provider = $1 AND account_id = $2 AND status <> 'revoked'
             ORDER BY created_at",
            vec![provider.into(), account.into()],
        ))
        .await?;
    rows.into_iter()
        .map(|r| Ok(UserId(r.try_get("", "user_id")?)))
        .collect()
}

/// The person behind a user's connection inside its account (the Slack member id); `None`
/// for connections made before it was recorded.
pub async fn account_user(
    db: &impl ConnectionTrait,
    user: UserId,
    provider: &str,
) -> Result<Option<String>> {
    let row = db
        .query_one_raw(stmt(
            "SELECT account_user FROM connections WHERE user_id = $1 AND provider = $2",
            vec![user.0.into(), provider.into()],
        ))
        .await?;
    Ok(match row {
        Some(r) => r.try_get::<Option<String>>("", "account_user")?,
        None => None,
    })
}

/// Whether another user's live connection to the same provider account holds `access_token`
/// (a shared installation token): revoking it would cut that user off too.
pub async fn token_shared(
    db: &impl ConnectionTrait,
    ring: &KeyRing,
    user: UserId,
    provider: &str,
    access_token: &str,
) -> Result<bool> {
    let rows = db
        .query_all_raw(stmt(
            "SELECT o.user_id, o.access_token_enc FROM connections o
             JOIN connections mine ON mine.provider = o.provider AND mine.account_id = o.account_id
             WHERE mine.user_id = $1 AND o.provider = $2 AND o.user_id <> $1
               AND o.access_token_enc IS NOT NULL",
            vec![user.0.into(), provider.into()],
        ))
        .await?;
    for r in rows {
        let owner: Uuid = r.try_get("", "user_id")?;
        let sealed: String = r.try_get("", "access_token_enc")?;
        if ring
            .decrypt(&sealed, &owner.to_string(), provider)
            .ok()
            .as_deref()
            == Some(access_token)
        {
            return Ok(true);
        }
    }
    Ok(false)
}
