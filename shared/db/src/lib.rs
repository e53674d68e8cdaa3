//! Postgres + pgvector, the system of record. Entities for the plain tables and SQL where the
//! work leans on Postgres itself (upserts, vector and full-text search). Every service shares
//! these functions, so HTTP handlers, consumers and `ctl` do the same thing the same way.

pub mod chunks;
pub mod dead_letters;
pub mod documents;
pub mod entities;
pub mod search;
pub mod users;
pub mod webhooks;

use sea_orm::{ConnectOptions, ConnectionTrait, Database, SqlErr};
pub use sea_orm::{DatabaseConnection, DbErr};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    #[error("not found")]
    NotFound,
}

impl DbError {
    /// Whether trying again later can succeed (lost connection, timeout) as opposed to data
    /// that breaks a constraint and never will.
    pub fn is_retryable(&self) -> bool {
        match self {
            DbError::NotFound => false,
            DbError::Db(e) => !matches!(
                e.sql_err(),
                Some(SqlErr::ForeignKeyConstraintViolation(_))
                    | Some(SqlErr::UniqueConstraintViolation(_))
            ),
        }
    }
}

pub type Result<T> = std::result::Result<T, DbError>;

pub async fn connect(url: &str, max_connections: u32) -> Result<DatabaseConnection> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(max_connections)
        .min_connections(0)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(10))
        .idle_timeout(Duration::from_secs(300))
        .sqlx_logging(false);
    Ok(Database::connect(options).await?)
}

/// Whether Postgres answers.
pub async fn ping(db: &DatabaseConnection) -> bool {
    db.execute_unprepared("SELECT 1").await.is_ok()
}
