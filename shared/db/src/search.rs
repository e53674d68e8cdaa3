//! Hybrid search over one user's chunks, ranked per document.
//!
//! Two candidate lists are read concurrently: the nearest chunks by pgvector cosine distance
//! (HNSW, iterative scan so filters still fill the list) and the chunks matching any of the
//! question's words in Postgres full text, each word weighted by how rare it is among the
//! user's chunks (BM25's inverse document frequency: "bitcoin" decides, "client" hardly does).
//! Each list is reduced to documents (a document's best chunk, with a bonus for further
//! matching chunks), each side's document scores are normalized to 0..1 and the two are added
//! with equal weight, and the fused list is adjusted by what the question said besides its
//! words (a person, a kind of document, a time, "the latest"). Snippets are made for the
//! returned documents only.

use crate::Result;
use chrono::{DateTime, Utc};
use common::UserId;
use pgvector::Vector;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait, Value};
use serde::Serialize;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Plans made for this user, never the generic plan a prepared statement falls back to after
/// five runs: that one assumes every user has the average number of chunks, so for a user
/// with 100k of them it reads them all by the user index and sorts them by distance (250 ms)
/// instead of walking the HNSW graph (5 ms).
const CUSTOM_PLANS: &str = "SET LOCAL plan_cache_mode = force_custom_plan;";
/// The full-text side's chunks are in memory (a serving database's working set), so reading
/// them in index order costs what reading them in table order does. With the default
/// random_page_cost (4, for spinning disks), and even at 1.1, Postgres judged walking the whole
/// table backwards by id (skipping every other user's chunks) as cheap as reading the user's
/// own newest ones by `chunks_user_newest`, and chose it: at 100k chunks of a user among 1,000
/// users that took 20-30 ms instead of 6. At 1.0 it counts the rows each way reads.
const IN_MEMORY: &str = "SET LOCAL random_page_cost = 1.0;";
/// Chunks read from the full-text side and the time window.
const CANDIDATES: i64 = 100;
/// Chunks read from the vector side (or `top_k` when more are asked for). On the evaluation
/// set 30 ranks as 40, 50 and 100 do (20 loses a little).
const VECTOR_CANDIDATES: i64 = 30;
/// The HNSW search's breadth (`ef_search`, or the chunks wanted when more): its graph walk's
/// cost grows with it (at 100k chunks of a user, 40 takes half the time of 100). Wider than
/// [`VECTOR_CANDIDATES`], so that when most of the table is the user's, the first pass
/// yields enough of theirs: asking for as many as it yields sends the iterative scan on a
/// second pass nearly every time (at 1M chunks of a user, 5.1 ms instead of 3.0).
const EF_SEARCH: i64 = 40;
/// The vector side's share of a fused score; full text has the rest.
const VECTOR_WEIGHT: f64 = 0.5;
/// At most this many chunks with a rare word of the question are scored, the newest (besides
/// the exact matches): a word rare enough to choose candidates can still be in tens of
/// thousands of a large collection's chunks, and finding and scoring each costs microseconds.
const RANKED: i64 = 300;
/// The exact matches (chunks with every word) are looked for apart only when one of the words
/// is in at most this share of the user's chunks; otherwise they are found among the newest
/// chunks with a rare word.
const COMPLETE_MAX_SHARE: f64 = 0.02;
/// Words in more than this share of the user's chunks are read by walking the newest chunks
/// (300 of them are found within 10,000); below it, by the index within an id range.
const BOUNDED_MAX_SHARE: f64 = 0.03;
/// Word frequencies are counted in up to this many of the user's chunks.
const SAMPLE: i64 = 500;
/// A word in more than this share of the user's chunks (and more than [`COMMON_MIN_CHUNKS`])
/// is common: it adds to a candidate's score but does not make one.
const COMMON_SHARE: f64 = 0.05;
const COMMON_MIN_CHUNKS: f64 = 50.0;

#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    pub user: Option<UserId>,
    /// The question's words as a `to_tsquery` expression (any of them matches); `None`
    /// searches by vector only.
    pub tsquery: Option<String>,
    /// All of the question's words (`a & b`): a chunk that has every one of them is an exact
    /// match, which earns half a full score more.
    pub tsquery_all: Option<String>,
    /// The query's embedding; `None` searches full text only.
    pub embedding: Option<Vec<f32>>,
    pub sources: Vec<String>,
    pub kinds: Vec<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub top_k: u32,
    pub boosts: Boosts,
}

/// What the question asked for besides its words: documents involving these people, of these
/// kinds, or the most recent first.
#[derive(Debug, Clone, Default)]
pub struct Boosts {
    /// Lower-cased names and email addresses of the people the question names.
    pub people: Vec<String>,
    pub kinds: Vec<String>,
    pub latest: bool,
    /// The time the question named: documents from it rank first, and are candidates even
    /// when their words and vectors are not.
    pub window: Option<(DateTime<Utc>, DateTime<Utc>)>,
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

/// Where a search spent its time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    pub vector: Duration,
    pub fulltext: Duration,
    pub fusion: Duration,
    pub snippets: Duration,
}

const FILTERS: &str = "c.user_id = $1
      AND ($3::text IS NULL OR c.source = ANY(string_to_array($3, ',')))
      AND ($4::text IS NULL OR c.kind = ANY(string_to_array($4, ',')))
      AND ($5::timestamptz IS NULL OR c.occurred_at >= $5)
      AND ($6::timestamptz IS NULL OR c.occurred_at < $6)";

fn csv(values: &[String]) -> Value {
    if values.is_empty() {
        Option::<String>::None.into()
    } else {
        Some(values.join(",")).into()
    }
}

/// One candidate chunk: its document and how well it matched (cosine similarity, or the
/// full-text score).
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    pub chunk: i64,
    pub document: Uuid,
    pub score: f64,
    /// Full text: the chunk has every word of the question.
    pub complete: bool,
}

fn filter_values(query: &SearchQuery, user: UserId, second: Value) -> Vec<Value> {
    vec![
        user.0.into(),
        second,
        csv(&query.sources),
        csv(&query.kinds),
        query.from.map(|t| t.fixed_offset()).into(),
        query.to.map(|t| t.fixed_offset()).into(),
        CANDIDATES.into(),
    ]
}

fn candidates(rows: Vec<sea_orm::QueryResult>) -> Result<Vec<Candidate>> {
    rows.into_iter()
        .map(|r| {
            Ok(Candidate {
                chunk: r.try_get("", "id")?,
                document: r.try_get("", "document_id")?,
                score: r.try_get("", "score")?,
                complete: r.try_get::<Option<bool>>("", "complete")?.unwrap_or(false),
            })
        })
        .collect()
}

async fn vector_candidates(
    db: &DatabaseConnection,
    query: &SearchQuery,
    user: UserId,
    embedding: &[f32],
) -> Result<Vec<Candidate>> {
    // Keep scanning the HNSW graph until the user's filters yield enough rows (pgvector 0.8).
    let wanted = VECTOR_CANDIDATES.max(i64::from(query.top_k));
    let breadth = EF_SEARCH.max(wanted);
    let tx = planned_for_user(
        db,
        &format!(
            "SET LOCAL hnsw.iterative_scan = relaxed_order; \
             SET LOCAL hnsw.ef_search = {breadth};"
        ),
    )
    .await?;
    let sql = format!(
        "SELECT id, document_id, score, false AS complete FROM (
             SELECT c.id, c.document_id, 1 - (c.embedding <=> $2::vector) AS score
             FROM chunks c
             WHERE {FILTERS}
             ORDER BY c.embedding <=> $2::vector
             LIMIT $7) v"
    );
    let mut values = filter_values(query, user, Vector::from(embedding.to_vec()).into());
    values[6] = wanted.into();
    fetch(tx, sql, values).await
}

/// A transaction whose statements are planned for the user they name (see [`CUSTOM_PLANS`]),
/// with `settings` (`SET LOCAL ...;`) applied too.
async fn planned_for_user(
    db: &DatabaseConnection,
    settings: &str,
) -> Result<sea_orm::DatabaseTransaction> {
    let tx = db.begin().await?;
    tx.execute_unprepared(&format!("{CUSTOM_PLANS} {settings}"))
        .await?;
    Ok(tx)
}

/// Runs a candidate query in `tx` and ends it.
async fn fetch(
    tx: sea_orm::DatabaseTransaction,
    sql: String,
    values: Vec<Value>,
) -> Result<Vec<Candidate>> {
    let rows = tx
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            values,
        ))
        .await?;
    tx.commit().await?;
    candidates(rows)
}

/// A word of the question and how rare it is among the user's chunks.
#[derive(Debug, Clone)]
struct Word {
    /// The word as a `to_tsquery` expression (`'bitcoin'`).
    expr: String,
    /// BM25's inverse document frequency, ln(1 + (N + 0.5) / (df + 0.5)).
    idf: f64,
    /// The share of the sampled chunks that have it.
    share: f64,
    /// In so many of the user's chunks that it should not choose candidates alone.
    common: bool,
}

/// How rare each of the question's words is among the user's chunks, counted in the newest
/// [`SAMPLE`] of them (all of them for most users): counting a common word over a large
/// collection costs more than the whole search may take, and its commonness shows in a
/// sample. Words the dictionary drops (stop words) are left out. Each word's tsquery and the
/// sample's span are made once (materialized): inlined, Postgres parsed every word again for
/// each sampled chunk, which made this statement 2-3 ms instead of 1.
async fn words<C: ConnectionTrait>(
    db: &C,
    user: UserId,
    tsquery: &str,
) -> Result<(Vec<Word>, Span)> {
    let sql = format!(
        "WITH sample AS MATERIALIZED (
             SELECT c.id, c.tsv FROM chunks c WHERE c.user_id = $1
             ORDER BY c.id DESC LIMIT {SAMPLE}),
         span AS MATERIALIZED (
             SELECT count(*)::float8 AS n, min(id) AS oldest, max(id) AS newest FROM sample),
         words AS MATERIALIZED (
             SELECT w, to_tsquery('english', w) AS wq FROM unnest(string_to_array($2, ' | ')) w)
         SELECT w, span.n, span.oldest, span.newest,
                (SELECT count(*) FROM sample s WHERE s.tsv @@ wq)::float8 AS df
         FROM words, span WHERE numnode(wq) > 0"
    );
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            [user.0.into(), tsquery.to_owned().into()],
        ))
        .await?;
    let mut words = Vec::new();
    let mut span = Span::default();
    for r in rows {
        let n: f64 = r.try_get("", "n")?;
        let df: f64 = r.try_get("", "df")?;
        if let (Some(oldest), Some(newest)) = (
            r.try_get::<Option<i64>>("", "oldest")?,
            r.try_get::<Option<i64>>("", "newest")?,
        ) {
            span = Span {
                sampled: n,
                newest,
                id_step: (newest - oldest) as f64 / (n - 1.0).max(1.0),
            };
        }
        words.push(Word {
            expr: r.try_get("", "w")?,
            idf: (1.0 + (n + 0.5) / (df + 0.5)).ln(),
            share: df / n.max(1.0),
            common: df > COMMON_MIN_CHUNKS.max(n * COMMON_SHARE),
        });
    }
    Ok((words, span))
}

/// Where the sampled (newest) chunks of the user lie among all chunks' ids.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    sampled: f64,
    newest: i64,
    /// How far apart the user's ids are on average (other users' chunks are numbered between).
    id_step: f64,
}

impl Span {
    /// The oldest id worth reading for the newest `wanted` chunks matching words found in
    /// `share` of the sampled chunks: three times as far back as that share says they all
    /// are. `None` (no bound) when the sample is the whole collection or nothing was found
    /// in it.
    fn oldest_worth_reading(&self, share: f64, wanted: i64) -> Option<i64> {
        // Where the words are dense, walking the newest chunks finds `wanted` of them sooner.
        if self.sampled < SAMPLE as f64 || share <= 0.0 || share > BOUNDED_MAX_SHARE {
            return None;
        }
        let oldest = self.newest as f64 - 3.0 * wanted as f64 / share * self.id_step;
        (oldest > 0.0).then_some(oldest as i64)
    }
}

/// The chunks that match the question's words, best first. A chunk scores the inverse
/// document frequency of each word it has, plus its cover density rank (normalization 1:
/// rank / (1 + log(length)), so long chunks do not win by size alone), which orders chunks
/// with the same words by how close and how often.
///
/// Two sets of chunks are scored, each read newest first and bounded, so the work stays small
/// however large the user's collection is and however common the words are:
/// - the newest [`CANDIDATES`] chunks that have every word of the question (the exact matches,
///   which fusion ranks first: they are found even when thousands of newer chunks have only
///   some of the words), when one of the words is rare enough ([`COMPLETE_MAX_SHARE`]) for
///   the index to find them cheaply;
/// - the newest [`RANKED`] chunks that have any of the rare words. Which chunks are
///   candidates is decided by the rare words, as Lucene's common-terms query does: common
///   words ("w1", "portfolio" in a portfolio manager's mail) only add to the score of chunks
///   found otherwise; when every word is common, a candidate needs them all.
///
/// Postgres reads each set the cheaper way for how many chunks match (planned for this user
/// and these words): from the GIN index when few do, or by walking the user's newest chunks
/// until enough have matched when many do.
async fn text_candidates(
    db: &DatabaseConnection,
    query: &SearchQuery,
    user: UserId,
    tsquery: &str,
) -> Result<Vec<Candidate>> {
    let tx = planned_for_user(db, IN_MEMORY).await?;
    let (words, span) = words(&tx, user, tsquery).await?;
    if words.is_empty() {
        return Ok(Vec::new());
    }
    let every = words
        .iter()
        .map(|w| w.expr.as_str())
        .collect::<Vec<_>>()
        .join(" & ");
    let rare: Vec<&Word> = words.iter().filter(|w| !w.common).collect();
    let matching = if rare.is_empty() {
        every.clone()
    } else {
        rare.iter()
            .map(|w| w.expr.as_str())
            .collect::<Vec<_>>()
            .join(" | ")
    };
    // $1-$7 are the filters (and $2 the matching words), $8 every word, $9 any word, $10 the
    // oldest id worth reading; from $11 on, each word's expression.
    // A rare word can still be in thousands of a large collection's chunks, and the newest of
    // them are known only once every one is read (3-5 µs each, 30 ms for a word in 0.5% of a
    // million chunks): they are looked for among the newest chunks only, as far back as the
    // sample says they are found, three times over. Postgres intersects the index's matches
    // with that range of ids before reading any. With a filter, matches are sparser among the
    // newest than the sample says, so there is no bound.
    let filtered = !query.sources.is_empty()
        || !query.kinds.is_empty()
        || query.from.is_some()
        || query.to.is_some();
    let oldest = if rare.is_empty() || filtered {
        None
    } else {
        span.oldest_worth_reading(rare.iter().map(|w| w.share).fold(0.0, f64::max), RANKED)
    };
    // Finding the chunks with every word costs what reading the rarest word's index entries
    // does: ~10 ms for 70,000 of them, a word in 7% of a million chunks.
    // Only a word the exact matches must have can make them few: a rare phrase the trade also
    // uses for the question's words ("roth ira" beside "roth") is not one of them.
    let exact: Vec<&str> = query
        .tsquery_all
        .as_deref()
        .map(|all| all.split(" & ").collect())
        .unwrap_or_default();
    let complete = if words.len() > 1
        && matching != every
        && words
            .iter()
            .filter(|w| exact.is_empty() || exact.contains(&w.expr.as_str()))
            .any(|w| w.share <= COMPLETE_MAX_SHARE)
    {
        format!(
            "(SELECT c.id, c.document_id, c.tsv FROM chunks c
              WHERE {FILTERS} AND c.tsv @@ to_tsquery('english', $8)
              ORDER BY c.id DESC LIMIT {CANDIDATES}) UNION ALL "
        )
    } else {
        String::new()
    };
    let idf: Vec<String> = words
        .iter()
        .enumerate()
        .map(|(i, w)| format!("CASE WHEN c.tsv @@ k.w{i} THEN {:.6} ELSE 0 END", w.idf))
        .collect();
    let word_queries: Vec<String> = (0..words.len())
        .map(|i| format!("to_tsquery('english', ${}) AS w{i}", 11 + i))
        .collect();
    let sql = format!(
        "SELECT c.id, c.document_id,
                {idf} + ts_rank_cd(c.tsv, k.any, 1)::float8 AS score,
                c.tsv @@ k.every AS complete
         FROM (SELECT DISTINCT ON (id) * FROM (
                 {complete}
                 (SELECT c.id, c.document_id, c.tsv FROM chunks c
                  WHERE {FILTERS} AND c.tsv @@ to_tsquery('english', $2)
                    AND ($10::bigint IS NULL OR c.id >= $10)
                  ORDER BY c.id DESC LIMIT {RANKED})) m) c,
              (SELECT to_tsquery('english', $8) AS every, to_tsquery('english', $9) AS any,
                      {word_queries}) k
         ORDER BY score DESC, c.id
         LIMIT $7",
        idf = idf.join(" + "),
        word_queries = word_queries.join(", "),
    );
    let mut values = filter_values(query, user, matching.into());
    values.push(query.tsquery_all.clone().unwrap_or(every).into());
    values.push(tsquery.to_owned().into());
    values.push(oldest.into());
    values.extend(words.iter().map(|w| Value::from(w.expr.clone())));
    fetch(tx, sql, values).await
}

/// The user's documents from `[from, to)`, newest first, each by its first chunk.
async fn window_candidates(
    db: &DatabaseConnection,
    query: &SearchQuery,
    user: UserId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Candidate>> {
    let sql = "SELECT c.id, d.id AS document_id, 0::float8 AS score, false AS complete
         FROM documents d JOIN chunks c ON c.document_id = d.id AND c.ordinal = 0
         WHERE d.user_id = $1 AND d.occurred_at >= $2 AND d.occurred_at < $3
           AND ($4::text IS NULL OR d.source = ANY(string_to_array($4, ',')))
           AND ($5::text IS NULL OR d.kind = ANY(string_to_array($5, ',')))
         ORDER BY d.occurred_at DESC
         LIMIT $6";
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            [
                user.0.into(),
                from.fixed_offset().into(),
                to.fixed_offset().into(),
                csv(&query.sources),
                csv(&query.kinds),
                CANDIDATES.into(),
            ],
        ))
        .await?;
    candidates(rows)
}

/// One document's evidence from one side: its best chunk and how many of its chunks matched.
#[derive(Debug, Clone, Copy)]
struct Evidence {
    best: f64,
    chunk: i64,
    count: usize,
    complete: bool,
}

/// Documents ranked by their best chunk, a document's further matching chunks counting a
/// little (a tenth of their score each), so a thread that keeps coming back to the subject
/// beats one passing mention of equal strength.
fn by_document(candidates: &[Candidate]) -> Vec<(Uuid, Evidence, f64)> {
    let mut docs: HashMap<Uuid, (Evidence, f64)> = HashMap::new();
    for c in candidates {
        let entry = docs.entry(c.document).or_insert((
            Evidence {
                best: f64::MIN,
                chunk: c.chunk,
                count: 0,
                complete: false,
            },
            0.0,
        ));
        entry.0.count += 1;
        entry.0.complete |= c.complete;
        entry.1 += c.score;
        if c.score > entry.0.best {
            entry.0.best = c.score;
            entry.0.chunk = c.chunk;
        }
    }
    let mut ranked: Vec<(Uuid, Evidence, f64)> = docs
        .into_iter()
        .map(|(id, (e, sum))| (id, e, e.best + 0.1 * (sum - e.best)))
        .collect();
    ranked.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
    ranked
}

/// Where a side's normalized scores start.
#[derive(Clone, Copy)]
enum Floor {
    Lowest,
    Zero,
}

/// A fused document: its score and the chunk that represents it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fused {
    pub document: Uuid,
    pub chunk: i64,
    pub score: f64,
}

/// Fuses the document rankings of each side by their scores: each side's document scores are
/// normalized to 0..1 (the vector side min-max over its candidates, as cosine similarities
/// crowd into a narrow band; full text by its best, its floor being no match at all) and
/// added with `vector_weight` and its complement. A document that has every word of the
/// question earns half a full score more. Unlike reciprocal rank, how far ahead a document
/// is counts, not only that it is ahead. A side that found nothing adds nothing, so fusion
/// never reorders what the other side found.
pub fn fuse(vector: &[Candidate], text: &[Candidate], vector_weight: f64) -> Vec<Fused> {
    let mut fused: HashMap<Uuid, Fused> = HashMap::new();
    for (list, weight, floor) in [
        (by_document(vector), vector_weight, Floor::Lowest),
        (by_document(text), 1.0 - vector_weight, Floor::Zero),
    ] {
        let best = list.first().map_or(0.0, |d| d.2);
        let floor = match floor {
            Floor::Lowest => list.last().map_or(0.0, |d| d.2),
            Floor::Zero => 0.0,
        };
        for (doc, evidence, score) in list {
            let entry = fused.entry(doc).or_insert(Fused {
                document: doc,
                chunk: evidence.chunk,
                score: 0.0,
            });
            entry.score += weight
                * if best > floor {
                    (score - floor) / (best - floor)
                } else {
                    1.0
                };
            if evidence.complete {
                entry.score += weight;
            }
        }
    }
    let mut out: Vec<Fused> = fused.into_values().collect();
    out.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.document.cmp(&b.document))
    });
    out
}

pub async fn hybrid(db: &DatabaseConnection, query: &SearchQuery) -> Result<Vec<SearchHit>> {
    Ok(hybrid_timed(db, query).await?.0)
}

/// Like [`hybrid`], and says where the time went.
pub async fn hybrid_timed(
    db: &DatabaseConnection,
    query: &SearchQuery,
) -> Result<(Vec<SearchHit>, Timings)> {
    let user = query.user.expect("search is always scoped to a user");
    let top_k = query.top_k.clamp(1, 100) as usize;
    let mut timings = Timings::default();
    let vector = async {
        let started = Instant::now();
        let found = match &query.embedding {
            Some(e) => vector_candidates(db, query, user, e).await?,
            None => Vec::new(),
        };
        Ok::<_, crate::DbError>((found, started.elapsed()))
    };
    let text = async {
        let started = Instant::now();
        let found = match &query.tsquery {
            Some(q) => text_candidates(db, query, user, q).await?,
            None => Vec::new(),
        };
        Ok::<_, crate::DbError>((found, started.elapsed()))
    };
    let window = async {
        match query.boosts.window {
            Some((from, to)) => window_candidates(db, query, user, from, to).await,
            None => Ok(Vec::new()),
        }
    };
    let ((vector, vt), (text, tt), window) = futures::try_join!(vector, text, window)?;
    timings.vector = vt;
    timings.fulltext = tt;

    let started = Instant::now();
    let mut fused = fuse(&vector, &text, VECTOR_WEIGHT);
    fused.truncate(top_k.max(50));
    for c in window {
        if !fused.iter().any(|f| f.document == c.document) {
            fused.push(Fused {
                document: c.document,
                chunk: c.chunk,
                score: 0.0,
            });
        }
    }
    adjust(db, &mut fused, &query.boosts).await?;
    fused.truncate(top_k);
    timings.fusion = started.elapsed();

    let started = Instant::now();
    let hits = snippets(db, &fused, query.tsquery.as_deref()).await?;
    timings.snippets = started.elapsed();
    Ok((hits, timings))
}

/// Applies the question's boosts to the fused documents and re-sorts them.
async fn adjust(db: &DatabaseConnection, fused: &mut [Fused], boosts: &Boosts) -> Result<()> {
    if fused.is_empty()
        || (boosts.people.is_empty()
            && boosts.kinds.is_empty()
            && !boosts.latest
            && boosts.window.is_none())
    {
        return Ok(());
    }
    let ids: Vec<Uuid> = fused.iter().map(|f| f.document).collect();
    let patterns: Vec<String> = boosts.people.iter().map(|p| format!("%{p}%")).collect();
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT id, kind, occurred_at,
                    (lower(title) LIKE ANY($2) OR lower(metadata::text) LIKE ANY($2)
                     OR lower(left(body, 2000)) LIKE ANY($2)) AS person
             FROM documents WHERE id = ANY($1)",
            [ids.into(), patterns.into()],
        ))
        .await?;
    let mut facts: HashMap<Uuid, (String, Option<DateTime<Utc>>, bool)> = HashMap::new();
    for r in rows {
        let at: Option<DateTime<chrono::FixedOffset>> = r.try_get("", "occurred_at")?;
        facts.insert(
            r.try_get("", "id")?,
            (
                r.try_get("", "kind")?,
                at.map(|t| t.with_timezone(&Utc)),
                r.try_get::<Option<bool>>("", "person")?.unwrap_or(false),
            ),
        );
    }
    // Recency: the newest candidate gets the full bonus, the oldest none.
    let times: Vec<i64> = facts
        .values()
        .filter_map(|f| f.1.map(|t| t.timestamp()))
        .collect();
    let (oldest, newest) = (
        times.iter().copied().min().unwrap_or(0),
        times.iter().copied().max().unwrap_or(0),
    );
    // In fused units, where 1 is what a document both sides put first scores: a named person
    // or time outweighs the words, a kind or recency breaks near-ties.
    for f in fused.iter_mut() {
        let Some((kind, at, person)) = facts.get(&f.document) else {
            continue;
        };
        if !boosts.people.is_empty() && *person {
            f.score += 1.0;
        }
        if boosts.kinds.iter().any(|k| k == kind) {
            f.score += 0.5;
        }
        if let (Some((from, to)), Some(at)) = (boosts.window, at)
            && *at >= from
            && *at < to
        {
            f.score += 3.0;
        }
        if boosts.latest
            && newest > oldest
            && let Some(at) = at
        {
            f.score += (at.timestamp() - oldest) as f64 / (newest - oldest) as f64;
        }
    }
    fused.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.document.cmp(&b.document))
    });
    Ok(())
}

/// Titles and snippets of the returned documents, in the fused order.
async fn snippets(
    db: &DatabaseConnection,
    fused: &[Fused],
    tsquery: Option<&str>,
) -> Result<Vec<SearchHit>> {
    if fused.is_empty() {
        return Ok(Vec::new());
    }
    let chunks: Vec<i64> = fused.iter().map(|f| f.chunk).collect();
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT c.id, d.id AS document_id, d.title, d.source, d.kind, d.occurred_at,
                    CASE WHEN $2::text IS NULL THEN left(c.content, 240)
                         ELSE ts_headline('english', c.content, to_tsquery('english', $2),
                              'MaxFragments=1, MaxWords=35, MinWords=15, StartSel=**, StopSel=**')
                    END AS snippet
             FROM chunks c JOIN documents d ON d.id = c.document_id
             WHERE c.id = ANY($1)",
            [chunks.into(), tsquery.map(str::to_owned).into()],
        ))
        .await?;
    let mut by_chunk: HashMap<i64, SearchHit> = HashMap::new();
    for r in rows {
        let occurred: Option<DateTime<chrono::FixedOffset>> = r.try_get("", "occurred_at")?;
        by_chunk.insert(
            r.try_get("", "id")?,
            SearchHit {
                document_id: r.try_get("", "document_id")?,
                title: r.try_get("", "title")?,
                snippet: r.try_get("", "snippet")?,
                score: 0.0,
                source: r.try_get("", "source")?,
                kind: r.try_get("", "kind")?,
                occurred_at: occurred.map(|t| t.with_timezone(&Utc)),
            },
        );
    }
    Ok(fused
        .iter()
        .filter_map(|f| {
            by_chunk.remove(&f.chunk).map(|mut h| {
                h.score = f.score;
                h
            })
        })
        .collect())
}

/// The user's CRM contacts whose names contain all of `words` (lower-cased, whole words).
/// Returns each one's full name and email address.
pub async fn people(
    db: &DatabaseConnection,
    user: UserId,
    words: &[String],
) -> Result<Vec<(String, Option<String>)>> {
    if words.is_empty() {
        return Ok(Vec::new());
    }
    let patterns: Vec<String> = words.iter().map(|w| format!("\\m{w}\\M")).collect();
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT title AS name, metadata->'properties'->>'email' AS email
             FROM documents
             WHERE user_id = $1 AND kind = 'contact' AND lower(title) ~ ALL($2)
             ORDER BY updated_at DESC
             LIMIT 5",
            [user.0.into(), patterns.into()],
        ))
        .await?;
    rows.into_iter()
        .map(|r| Ok((r.try_get("", "name")?, r.try_get("", "email")?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(chunk: i64, doc: u128, score: f64) -> Candidate {
        Candidate {
            chunk,
            document: Uuid::from_u128(doc),
            score,
            complete: false,
        }
    }

    #[test]
    fn a_document_counts_once_per_side() {
        // Document 1 fills the vector list with three chunks; document 2 is a close second by
        // vector and first by text, so it must win.
        let vector = [
            c(1, 1, 0.8),
            c(2, 1, 0.75),
            c(3, 1, 0.7),
            c(4, 2, 0.78),
            c(5, 3, 0.3),
        ];
        let text = [c(4, 2, 0.5)];
        let fused = fuse(&vector, &text, 0.5);
        assert_eq!(fused[0].document, Uuid::from_u128(2));
        assert_eq!(fused[1].document, Uuid::from_u128(1));
        assert_eq!(
            fused[1].chunk, 1,
            "a document is represented by its best chunk"
        );
    }

    #[test]
    fn a_document_with_every_word_beats_the_nearest_vector() {
        let vector = [c(1, 1, 0.9), c(2, 2, 0.8)];
        let text = [Candidate {
            complete: true,
            ..c(2, 2, 0.1)
        }];
        assert_eq!(fuse(&vector, &text, 0.5)[0].document, Uuid::from_u128(2));
    }

    #[test]
    fn how_far_ahead_counts() {
        // Document 1 is far ahead by vector and a close second by text; reciprocal rank would
        // call it a tie with document 2, the scores do not.
        let vector = [c(1, 1, 0.9), c(2, 2, 0.4), c(3, 3, 0.3)];
        let text = [c(2, 2, 10.0), c(1, 1, 9.5)];
        let fused = fuse(&vector, &text, 0.5);
        assert_eq!(fused[0].document, Uuid::from_u128(1));
        assert!(fused[0].score > fused[1].score + 0.3, "{fused:?}");
    }

    #[test]
    fn an_empty_side_changes_nothing() {
        let vector = [c(1, 1, 0.9), c(2, 2, 0.8), c(3, 3, 0.7)];
        let fused = fuse(&vector, &[], 0.5);
        let order: Vec<u128> = fused.iter().map(|f| f.document.as_u128()).collect();
        assert_eq!(order, vec![1, 2, 3]);
    }
}
