//! Chunks: the searchable pieces of a document, each with its vector and (generated) tsvector.
//! A document's chunks are replaced whole, in one transaction, under a row lock on the document.

use crate::Result;
use common::DocumentId;
use pgvector::Vector;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait, Value};

pub struct NewChunk {
    pub content: String,
    pub embedding: Vec<f32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replaced {
    Written(usize),
    /// The chunks for this content were already there (a redelivery).
    AlreadyIndexed,
    /// The document changed again (or is gone) since this version was read: the newer
    /// version's event will index it.
    Stale,
}

/// Replaces the chunks of `document` with `chunks`, if its content is still `content_hash`.
/// `heading` is what every chunk is about (the title, with who sent it or took part): full
/// text weighs it above the chunk's own words.
pub async fn replace(
    db: &DatabaseConnection,
    document: DocumentId,
    content_hash: &str,
    heading: &str,
    chunks: Vec<NewChunk>,
    again: bool,
) -> Result<Replaced> {
    let tx = db.begin().await?;
    let row = tx
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT content_hash, indexed_hash FROM documents WHERE id = $1 FOR UPDATE",
            [document.0.into()],
        ))
        .await?;
    let Some(row) = row else {
        return Ok(Replaced::Stale);
    };
    let current: String = row.try_get("", "content_hash")?;
    let indexed: Option<String> = row.try_get("", "indexed_hash")?;
    if current != content_hash {
        return Ok(Replaced::Stale);
    }
    if !again && indexed.as_deref() == Some(content_hash) {
        return Ok(Replaced::AlreadyIndexed);
    }
    tx.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "DELETE FROM chunks WHERE document_id = $1",
        [document.0.into()],
    ))
    .await?;
    let count = chunks.len();
    // Insert in slices to stay far below Postgres' 65535 bind-parameter limit.
    for (slice_no, slice) in chunks.chunks(500).enumerate() {
        let mut sql = String::from(
            "INSERT INTO chunks (document_id, user_id, source, kind, occurred_at, ordinal, title, content, embedding)
             SELECT d.id, d.user_id, d.source, d.kind, d.occurred_at, v.ordinal, $2, v.content, v.embedding
             FROM documents d, (VALUES ",
        );
        let mut values: Vec<Value> = vec![document.0.into(), heading.to_owned().into()];
        for (i, chunk) in slice.iter().enumerate() {
            let n = values.len();
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!(
                "(${}::int, ${}::text, ${}::vector)",
                n + 1,
                n + 2,
                n + 3
            ));
            values.push(((slice_no * 500 + i) as i32).into());
            values.push(chunk.content.clone().into());
            values.push(Vector::from(chunk.embedding.clone()).into());
        }
        sql.push_str(") AS v(ordinal, content, embedding) WHERE d.id = $1");
        tx.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            values,
        ))
        .await?;
    }
    tx.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "UPDATE documents SET indexed_hash = $2 WHERE id = $1",
        [document.0.into(), content_hash.into()],
    ))
    .await?;
    tx.commit().await?;
    Ok(Replaced::Written(count))
}

/// Number of chunks stored for a document.
pub async fn count(db: &DatabaseConnection, document: DocumentId) -> Result<i64> {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT count(*) AS n FROM chunks WHERE document_id = $1",
            [document.0.into()],
        ))
        .await?
        .expect("count returns a row");
    Ok(row.try_get("", "n")?)
}
