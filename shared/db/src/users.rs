//! Users: created on first use, found by email.

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

pub async fn find(db: &DatabaseConnection, id: UserId) -> Result<Option<user::Model>> {
    Ok(user::Entity::find_by_id(id.0).one(db).await?)
}
