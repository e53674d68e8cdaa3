//! Dead letters: messages a consumer gave up on, kept with their error until an operator
//! requeues them (`ctl dlq list`, `ctl dlq requeue <id>`).

use crate::entities::dead_letter;
use crate::{DbError, Result};
use common::consumer::{BoxError, DeadLetter, DeadLetterSink};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Statement,
};

/// Records dead letters from the consumer runtime in Postgres.
#[derive(Clone)]
pub struct PgDeadLetters(pub DatabaseConnection);

impl DeadLetterSink for PgDeadLetters {
    async fn record(&self, letter: DeadLetter) -> std::result::Result<(), BoxError> {
        record(&self.0, &letter).await.map_err(Into::into)
    }

    async fn ready(&self) -> bool {
        crate::ping(&self.0).await
    }
}

pub async fn record(db: &DatabaseConnection, letter: &DeadLetter) -> Result<()> {
    let headers: serde_json::Value = letter
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect::<serde_json::Map<_, _>>()
        .into();
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "INSERT INTO dead_letters (stream, consumer, subject, stream_seq, deliveries, headers, payload, error)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (stream, consumer, stream_seq) DO UPDATE SET
             deliveries = EXCLUDED.deliveries, error = EXCLUDED.error,
             created_at = now(), requeued_at = NULL",
        [
            letter.stream.clone().into(),
            letter.consumer.clone().into(),
            letter.subject.clone().into(),
            (letter.stream_sequence as i64).into(),
            (letter.deliveries as i32).into(),
            headers.into(),
            letter.payload.clone().into(),
            letter.error.clone().into(),
        ],
    ))
    .await?;
    Ok(())
}

/// Dead letters newest first; `include_requeued` also lists those already sent back.
pub async fn list(
    db: &DatabaseConnection,
    include_requeued: bool,
    limit: u64,
) -> Result<Vec<dead_letter::Model>> {
    let mut q = dead_letter::Entity::find();
    if !include_requeued {
        q = q.filter(dead_letter::Column::RequeuedAt.is_null());
    }
    Ok(q.order_by_desc(dead_letter::Column::Id)
        .limit(limit)
        .all(db)
        .await?)
}

pub async fn get(db: &DatabaseConnection, id: i64) -> Result<dead_letter::Model> {
    dead_letter::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or(DbError::NotFound)
}

pub async fn mark_requeued(db: &DatabaseConnection, id: i64) -> Result<()> {
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "UPDATE dead_letters SET requeued_at = now() WHERE id = $1",
        [id.into()],
    ))
    .await?;
    Ok(())
}

/// Open dead letters per consumer, for metrics.
pub async fn open_counts(db: &DatabaseConnection) -> Result<Vec<(String, i64)>> {
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT consumer, count(*) AS n FROM dead_letters WHERE requeued_at IS NULL GROUP BY consumer",
        ))
        .await?;
    rows.into_iter()
        .map(|r| Ok((r.try_get("", "consumer")?, r.try_get("", "n")?)))
        .collect()
}
