//! Postgres + pgvector, the system of record. Entities for the plain tables and SQL where the
//! work leans on Postgres itself (upserts, vector and full-text search). Every service shares
//! these functions, so HTTP handlers, consumers and `ctl` do the same thing the same way.

pub mod accounts;
pub mod chat;
pub mod chunks;
pub mod connections;
pub mod curation;
pub mod dead_letters;
pub mod digest;
pub mod documents;
pub mod entities;
pub mod firings;
pub mod insights;
pub mod invocations;
pub mod previews;
pub mod quota;
pub mod rules;
pub mod search;
pub mod sessions;
pub mod sync_state;
pub mod tasks;
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
    #[error("stored secret unusable: {0}")]
    Secret(#[source] common::secrets::SecretError),
}

impl DbError {
    /// Whether trying again later can succeed (lost connection, timeout) as opposed to data
    /// that breaks a constraint and never will.
    pub fn is_retryable(&self) -> bool {
        match self {
            DbError::NotFound | DbError::Secret(_) => false,
            DbError::Db(e) => !matches!(
                e.sql_err(),
                Some(SqlErr::ForeignKeyConstraintViolation(_))
                    | Some(SqlErr::UniqueConstraintViolation(_))
            ),
        }
    }
}

impl DbError {
    /// Whether Postgres could not be reached at all (no connection to be had), as opposed to a
    /// query that failed: the caller should say "unavailable, retry", not "internal error".
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            DbError::Db(DbErr::ConnectionAcquire(_)) | DbError::Db(DbErr::Conn(_))
        )
    }
}

pub type Result<T> = std::result::Result<T, DbError>;

/// For consumers: transient failures are retried, constraint violations dead-lettered.
impl From<DbError> for common::consumer::HandleError {
    fn from(e: DbError) -> Self {
        if e.is_retryable() {
            Self::retry(e)
        } else {
            Self::poison(e)
        }
    }
}

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

/// What every consumer service connects to at start: Postgres, NATS, and the applied topology.
pub struct Backends {
    pub db: DatabaseConnection,
    pub bus: common::Bus,
    pub topology: common::topology::Topology,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Bus(#[from] common::BusError),
}

impl Backends {
    pub async fn connect(
        config: &common::Config,
        pool: u32,
    ) -> std::result::Result<Self, StartError> {
        let db = connect(&config.database_url, pool).await?;
        let bus = common::Bus::connect(
            &config.nats_url,
            &config.nats_prefix,
            config.publish_timeout(),
        )
        .await?;
        let topology = bus.apply_topology(config).await?;
        Ok(Self { db, bus, topology })
    }

    /// Runs `handler` on the durable consumer `durable`, dead letters going to Postgres.
    pub async fn consume<H: common::consumer::Handler>(
        &self,
        durable: &str,
        handler: H,
        config: &common::Config,
        cancel: tokio_util::sync::CancellationToken,
    ) -> std::result::Result<(), common::consumer::RuntimeError> {
        let options = common::consumer::ConsumerOptions::from_config(config);
        self.consume_with(durable, handler, options, cancel).await
    }

    /// [`Backends::consume`] with options of the caller's choosing.
    pub async fn consume_with<H: common::consumer::Handler>(
        &self,
        durable: &str,
        handler: H,
        options: common::consumer::ConsumerOptions,
        cancel: tokio_util::sync::CancellationToken,
    ) -> std::result::Result<(), common::consumer::RuntimeError> {
        common::consumer::run(
            self.bus.clone(),
            &self.topology,
            durable,
            handler,
            dead_letters::PgDeadLetters(self.db.clone()),
            options,
            cancel,
        )
        .await
    }
}
