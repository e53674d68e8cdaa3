//! Users: created on first use, found by email (or, for Google sign-in, by Google's stable
//! account id); and whether an API token of theirs is still good.

use crate::Result;
use crate::entities::user;
use common::UserId;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, Statement};
use uuid::Uuid;

/// The user with this email, created if new. Emails compare case-insensitively.
pub async fn ensure(db: &DatabaseConnection, email: &str) -> Result<UserId> {
    let email = email.trim().to_lowercase();
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO users (id, email) VALUES ($1, $2)
             ON CONFLICT (email) DO UPDATE SET email = EXCLUDED.email
             RETURNING id",
            [Uuid::new_v4().into(), email.into()],
        ))
        .await?
        .expect("INSERT .. RETURNING returns a row");
    Ok(UserId(row.try_get("", "id")?))
}

/// The user with this email (compared case-insensitively), if there is one.
pub async fn by_email(db: &DatabaseConnection, email: &str) -> Result<Option<UserId>> {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT id FROM users WHERE email = $1",
            [email.trim().to_lowercase().into()],
        ))
        .await?;
    Ok(match row {
        Some(r) => Some(UserId(r.try_get("", "id")?)),
        None => None,
    })
}

pub async fn find(db: &DatabaseConnection, id: UserId) -> Result<Option<user::Model>> {
    Ok(user::Entity::find_by_id(id.0).one(db).await?)
}

/// Whether a verified API token may still act: its user exists, it was issued after the
/// user last signed out everywhere, and it was not revoked on its own.
pub async fn token_allowed(
    db: &impl ConnectionTrait,
    user: UserId,
    jti: Uuid,
    issued_at: i64,
) -> Result<bool> {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT (u.tokens_valid_after IS NULL OR u.tokens_valid_after < to_timestamp($3))
                    AND NOT EXISTS (SELECT 1 FROM revoked_tokens r WHERE r.jti = $2) AS ok
             FROM users u WHERE u.id = $1",
            [user.0.into(), jti.into(), (issued_at as f64).into()],
        ))
        .await?;
    Ok(match row {
        Some(r) => r.try_get::<bool>("", "ok")?,
        None => false,
    })
}

/// Revokes one token until it would have expired.
pub async fn revoke_token(
    db: &impl ConnectionTrait,
    user: UserId,
    jti: Uuid,
    expires_at: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "INSERT INTO revoked_tokens (jti, user_id, expires_at) VALUES ($1, $2, $3)
         ON CONFLICT (jti) DO NOTHING",
        [jti.into(), user.0.into(), expires_at.fixed_offset().into()],
    ))
    .await?;
    // Entries past their token's expiry guard nothing.
    db.execute_unprepared("DELETE FROM revoked_tokens WHERE expires_at < now()")
        .await?;
    Ok(())
}

/// Signs the user out everywhere: every API token issued until now and every browser
/// session stop working.
pub async fn revoke_everything(db: &impl ConnectionTrait, user: UserId) -> Result<()> {
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "WITH s AS (DELETE FROM sessions WHERE user_id = $1)
         UPDATE users SET tokens_valid_after = now() WHERE id = $1",
        [user.0.into()],
    ))
    .await?;
    Ok(())
}

/// The user a Google account signs in as. Matched by Google's `sub`, which never changes;
/// an account seen for the first time takes over the user with its (verified) address if that
/// user is not bound to another Google account yet, else becomes a new user. A user bound to
/// another account under the same address (an address Google gave to someone new) is refused.
pub async fn ensure_google(
    db: &impl ConnectionTrait,
    sub: &str,
    email: &str,
) -> Result<Option<UserId>> {
    let email = email.trim().to_lowercase();
    let by_sub = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT id FROM users WHERE google_sub = $1",
            [sub.into()],
        ))
        .await?;
    if let Some(row) = by_sub {
        let id: Uuid = row.try_get("", "id")?;
        // Follow an address change at Google when the new address is free.
        db.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE users SET email = $2 WHERE id = $1 AND email <> $2
               AND NOT EXISTS (SELECT 1 FROM users WHERE email = $2)",
            [id.into(), email.into()],
        ))
        .await?;
        return Ok(Some(UserId(id)));
    }
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO users (id, email, google_sub) VALUES ($1, $2, $3)
             ON CONFLICT (email) DO UPDATE SET google_sub = EXCLUDED.google_sub
                 WHERE users.google_sub IS NULL
             RETURNING id",
            [Uuid::new_v4().into(), email.into(), sub.into()],
        ))
        .await?;
    row.map(|r| Ok(UserId(r.try_get("", "id")?))).transpose()
}

/// The user's time zone (an IANA name such as `America/New_York`), if known.
pub async fn time_zone(db: &impl ConnectionTrait, user: UserId) -> Result<Option<String>> {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT time_zone FROM users WHERE id = $1",
            [user.0.into()],
        ))
        .await?;
    Ok(match row {
        Some(r) => r.try_get("", "time_zone")?,
        None => None,
    })
}

/// Records the user's time zone (as their calendar states it).
pub async fn set_time_zone(db: &impl ConnectionTrait, user: UserId, zone: &str) -> Result<()> {
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "UPDATE users SET time_zone = $2 WHERE id = $1 AND time_zone IS DISTINCT FROM $2",
        [user.0.into(), zone.into()],
    ))
    .await?;
    Ok(())
}
