//! Hybrid search over one user's chunks: pgvector cosine distance (HNSW, iterative scan so
//! filters still fill the result) and Postgres full text, fused by reciprocal rank, best chunk
//! per document.

use crate::Result;
use chrono::{DateTime, Utc};
use common::UserId;
use pgvector::Vector;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait, Value};
use serde::Serialize;
use uuid::Uuid;

/// Reciprocal rank fusion constant (the usual 60 from Cormack et al.).
const RRF_K: f64 = 60.0;

#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    pub user: Option<UserId>,
    pub text: String,
    /// The query's embedding; `None` searches full text only.
    pub embedding: Option<Vec<f32>>,
    pub sources: Vec<String>,
    pub kinds: Vec<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub top_k: u32,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SearchHit {
    pub document_id: Uuid,
    pub title: String,
    pub snippet: String,
    pub score: f64,
    pub source: String,
    pub kind: String,
    pub occurred_at: Option<DateTime<Utc>>,
}

const SQL: &str = r#"
WITH vec AS MATERIALIZED (
    SELECT c.id, c.embedding <=> $2::vector AS distance
    FROM chunks c
    WHERE $2::vector IS NOT NULL AND c.user_id = $1
      AND ($4::text IS NULL OR c.source = ANY(string_to_array($4, ',')))
      AND ($5::text IS NULL OR c.kind = ANY(string_to_array($5, ',')))
      AND ($6::timestamptz IS NULL OR c.occurred_at >= $6)
      AND ($7::timestamptz IS NULL OR c.occurred_at < $7)
    ORDER BY c.embedding <=> $2::vector
    LIMIT $8
), vec_ranked AS (
    SELECT id, row_number() OVER (ORDER BY distance, id) AS r FROM vec
), fts AS (
    SELECT c.id, row_number() OVER (ORDER BY ts_rank_cd(c.tsv, q) DESC, c.id) AS r
    FROM chunks c, websearch_to_tsquery('english', $3) q
    WHERE c.user_id = $1 AND c.tsv @@ q
      AND ($4::text IS NULL OR c.source = ANY(string_to_array($4, ',')))
      AND ($5::text IS NULL OR c.kind = ANY(string_to_array($5, ',')))
      AND ($6::timestamptz IS NULL OR c.occurred_at >= $6)
      AND ($7::timestamptz IS NULL OR c.occurred_at < $7)
    ORDER BY ts_rank_cd(c.tsv, q) DESC
    LIMIT $8
), fused AS (
    SELECT coalesce(v.id, f.id) AS id,
           coalesce(1.0 / ($10 + v.r), 0) + coalesce(1.0 / ($10 + f.r), 0) AS score
    FROM vec_ranked v FULL OUTER JOIN fts f ON v.id = f.id
), best AS (
    SELECT DISTINCT ON (c.document_id) c.document_id, c.content, f.score
    FROM fused f JOIN chunks c ON c.id = f.id
    ORDER BY c.document_id, f.score DESC
)
SELECT b.document_id, d.title, d.source, d.kind, d.occurred_at, b.score::float8 AS score,
       ts_headline('english', b.content, websearch_to_tsquery('english', $3),
                   'MaxFragments=1, MaxWords=35, MinWords=15, StartSel=**, StopSel=**') AS snippet
FROM best b JOIN documents d ON d.id = b.document_id
ORDER BY b.score DESC, b.document_id
LIMIT $9
"#;

fn csv(values: &[String]) -> Value {
    if values.is_empty() {
        Option::<String>::None.into()
    } else {
        Some(values.join(",")).into()
    }
}

pub async fn hybrid(db: &DatabaseConnection, query: &SearchQuery) -> Result<Vec<SearchHit>> {
    let user = query.user.expect("search is always scoped to a user");
    let top_k = query.top_k.clamp(1, 100) as i64;
    // Enough candidates from each side that fusion has something to work with.
    let candidates = (top_k * 5).max(50);
    let embedding: Value = query.embedding.clone().map(Vector::from).into();
    let tx = db.begin().await?;
    // Keep scanning the HNSW graph until the user's filters yield enough rows (pgvector 0.8).
    tx.execute_unprepared(&format!(
        "SET LOCAL hnsw.iterative_scan = relaxed_order; SET LOCAL hnsw.ef_search = {}",
        candidates.clamp(40, 1000)
    ))
    .await?;
    let rows = tx
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            SQL,
            [
                user.0.into(),
                embedding,
                query.text.clone().into(),
                csv(&query.sources),
                csv(&query.kinds),
                query.from.map(|t| t.fixed_offset()).into(),
                query.to.map(|t| t.fixed_offset()).into(),
                candidates.into(),
                top_k.into(),
                RRF_K.into(),
            ],
        ))
        .await?;
    tx.commit().await?;
    rows.into_iter()
        .map(|r| {
            let occurred: Option<chrono::DateTime<chrono::FixedOffset>> =
                r.try_get("", "occurred_at")?;
            Ok(SearchHit {
                document_id: r.try_get("", "document_id")?,
                title: r.try_get("", "title")?,
                snippet: r.try_get("", "snippet")?,
                score: r.try_get("", "score")?,
                source: r.try_get("", "source")?,
                kind: r.try_get("", "kind")?,
                occurred_at: occurred.map(|t| t.with_timezone(&Utc)),
            })
        })
        .collect()
}
