//! Changes to product intelligence tried before they apply. A preview reads a window of
//! stored messages again through candidate settings (tier 1's bar, sources, product areas,
//! the tier 2 model, the grouping thresholds) into shadow tables shaped like the live ones,
//! groups what it found at once, and reports what would change: items added, removed and of
//! another kind, themes formed, merged and split, agreement with the live grouping, and the
//! curations it keeps only because they are constraints. Applying promotes the shadow rows
//! into the live tables in one transaction; until then nothing live is written.
//!
//! The reading is paged (`page`, then `store` per message, by the embedding service, which
//! holds the model), so a preview of a large window resumes where a restart left it.

use crate::Result;
use crate::insights::{Joining, NewItem, Outcome, Settings, item_id};
use chrono::{DateTime, Utc};
use common::UserId;
use pgvector::Vector;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement, TransactionTrait, Value,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use uuid::Uuid;

fn stmt(sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// The longest window a preview reads.
pub const MAX_WINDOW_DAYS: i64 = 731;
/// Examples of each change the report quotes.
const EXAMPLES: usize = 5;

/// A preview and, once read and grouped, its report.
#[derive(Debug, Clone, Serialize)]
pub struct Preview {
    pub id: Uuid,
    pub requested_by: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// The candidate settings, in full.
    pub settings: Settings,
    /// `queued`, `running`, `ready`, `failed`, `applied` or `discarded`.
    pub status: String,
    /// Messages in the window the candidate covers, and how many it has read.
    pub messages: i32,
    pub read: i32,
    pub report: Option<Report>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub applied_at: Option<DateTime<Utc>>,
}

/// What the candidate would change, against the live tables over the same window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Report {
    pub messages: Messages,
    pub items: Items,
    pub themes: Themes,
    /// Adjusted Rand index of the candidate's grouping against the live themes, over the items
    /// both hold (1: the same grouping; about 0: no more alike than chance).
    pub agreement: Option<f64>,
    /// Items both hold, which `agreement` compares.
    pub compared: usize,
    pub curations: Curations,
    /// The regrouping threshold used, and how many items were grouped (the newest
    /// `REGROUP_MAX_ITEMS` of the window).
    pub threshold: f32,
    pub grouped: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Messages {
    /// Messages the candidate read, and what it made of them.
    pub read: usize,
    pub extracted: usize,
    pub below: usize,
    pub skipped: usize,
    /// Messages of the window the live pipeline read, and extracted from.
    pub live_read: usize,
    pub live_extracted: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Items {
    /// Items (not dismissed) the candidate found, and those live now in the window.
    pub preview: usize,
    pub live: usize,
    /// Found only by the candidate, only live, in both, and in both as another kind.
    pub added: usize,
    pub removed: usize,
    pub kept: usize,
    pub changed_kind: usize,
    /// Not stored because a person dismissed a quote like it.
    pub like_dismissed: usize,
    pub examples_added: Vec<Example>,
    pub examples_removed: Vec<Example>,
    pub examples_changed_kind: Vec<Example>,
}

/// An item the report quotes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Example {
    pub item: Uuid,
    pub document_id: Uuid,
    pub kind: String,
    /// For a change of kind: the live kind.
    pub was: Option<String>,
    pub quote: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Themes {
    /// Groups the candidate formed, and live themes holding items of the window.
    pub preview: usize,
    pub live: usize,
    /// Groups with none of the live themes' items of the window: themes applying would start.
    pub formed: Vec<ThemeRef>,
    /// Groups holding the window's items of two or more live themes.
    pub merged: Vec<Merge>,
    /// Live themes whose window items the candidate puts in two or more groups.
    pub split: Vec<Merge>,
    /// Live themes none of whose window items the candidate keeps in a group of its own.
    pub gone: Vec<ThemeRef>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ThemeRef {
    pub id: Uuid,
    pub title: String,
    /// Items of the window in it.
    pub items: usize,
}

/// One theme and the several it comes from (a merge) or goes to (a split).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Merge {
    pub theme: ThemeRef,
    pub parts: Vec<ThemeRef>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Curations {
    /// Curations (in force) about items of the window.
    pub considered: usize,
    /// Curations the candidate's grouping would have undone, kept because they are
    /// constraints.
    pub kept_by_constraint: Vec<CurationRef>,
    /// Curated (pinned) items of the window the candidate no longer finds: applying removes
    /// them with their placement.
    pub lost: Vec<Example>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CurationRef {
    pub id: Uuid,
    pub action: String,
    pub actor: String,
    pub created_at: DateTime<Utc>,
}

/// Why a preview cannot be applied (or found).
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("no such preview")]
    NotFound,
    /// Only a ready preview applies; `status` is what it is.
    #[error("the preview is {0}, not ready")]
    NotReady(String),
    /// The live items of the window changed since the preview was grouped.
    #[error("the window's live items changed since the preview was made; preview again")]
    Stale,
    /// Another preview of the user's is still being read.
    #[error("your preview {0} is still being read; wait for it or discard it")]
    Busy(Uuid),
    #[error(transparent)]
    Db(#[from] crate::DbError),
}

impl From<DbErr> for PreviewError {
    fn from(e: DbErr) -> Self {
        Self::Db(e.into())
    }
}

fn preview_from(r: &sea_orm::QueryResult) -> Result<Preview> {
    let settings: serde_json::Value = r.try_get("", "settings")?;
    let report: Option<serde_json::Value> = r.try_get("", "report")?;
    Ok(Preview {
        id: r.try_get("", "id")?,
        requested_by: r.try_get("", "requested_by")?,
        from: r.try_get("", "from_at")?,
        to: r.try_get("", "to_at")?,
        settings: serde_json::from_value(settings)
            .map_err(|e| DbErr::Custom(format!("stored preview settings: {e}")))?,
        status: r.try_get("", "status")?,
        messages: r.try_get("", "messages")?,
        read: r.try_get("", "read")?,
        report: report.and_then(|r| serde_json::from_value(r).ok()),
        error: r.try_get("", "error")?,
        created_at: r.try_get("", "created_at")?,
        finished_at: r.try_get("", "finished_at")?,
        applied_at: r.try_get("", "applied_at")?,
    })
}

const COLUMNS: &str = "id, requested_by, from_at, to_at, settings, status, messages, read, report,
                       error, created_at, finished_at, applied_at";

/// The window's documents the settings cover, after `after` by id (`$7`, `$8`: the window).
fn window_values(
    user: UserId,
    settings: &Settings,
    after: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<Value> {
    let mut v = crate::insights::unread_values(user, after, settings);
    v.push(from.into());
    v.push(to.into());
    v
}

const IN_WINDOW: &str = "AND coalesce(d.occurred_at, d.created_at) >= $7
                         AND coalesce(d.occurred_at, d.created_at) < $8";

/// The settings a preview tries: the team's with `patch`'s in their place, over `[from, to)`;
/// the error names the field.
pub fn candidate(
    live: &Settings,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    patch: &serde_json::Map<String, serde_json::Value>,
) -> std::result::Result<Settings, common::intake::FieldError> {
    use common::intake::FieldError;
    if to <= from {
        return Err(FieldError::new("to", "must be after `from`"));
    }
    if (to - from).num_days() > MAX_WINDOW_DAYS {
        return Err(FieldError::new(
            "to",
            format!("at most {MAX_WINDOW_DAYS} days after `from`"),
        ));
    }
    let mut settings = live.patched(patch)?;
    // A preview reads as if product intelligence were on: that is what it tries.
    settings.enabled = true;
    Ok(settings)
}

/// Stores a preview of `settings` over the messages said in `[from, to)`, to be read. A user
/// has one preview being read at a time: each reads up to two years of messages on the
/// shared model.
pub async fn create(
    db: &DatabaseConnection,
    user: UserId,
    requested_by: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    settings: &Settings,
) -> std::result::Result<Preview, PreviewError> {
    let txn = db.begin().await?;
    txn.execute_raw(stmt(
        "SELECT pg_advisory_xact_lock(hashtextextended('insights-preview:' || $1::text, 0))",
        vec![user.0.to_string().into()],
    ))
    .await?;
    let busy = txn
        .query_one_raw(stmt(
            "SELECT id FROM insight_previews WHERE user_id = $1 AND status IN ('queued', 'running')
             ORDER BY created_at LIMIT 1",
            vec![user.0.into()],
        ))
        .await?;
    if let Some(r) = busy {
        return Err(PreviewError::Busy(r.try_get("", "id")?));
    }
    let mut values = window_values(user, settings, Uuid::nil(), from, to);
    values.extend([
        Uuid::new_v4().into(),
        requested_by.into(),
        serde_json::to_value(settings)
            .expect("settings serialize")
            .into(),
    ]);
    let row = db
        .query_one_raw(stmt(
            &format!(
                "INSERT INTO insight_previews (id, user_id, requested_by, from_at, to_at, settings, status, messages)
                 SELECT $9, $1, $10, $7, $8, $11, 'queued',
                        (SELECT count(*) {} {IN_WINDOW})
                 RETURNING {COLUMNS}",
                crate::insights::covered!()
            ),
            values,
        ))
        .await?
        .ok_or(crate::DbError::NotFound)?;
    let preview = preview_from(&row)?;
    txn.commit().await?;
    Ok(preview)
}

pub async fn get(db: &impl ConnectionTrait, user: UserId, id: Uuid) -> Result<Option<Preview>> {
    let row = db
        .query_one_raw(stmt(
            &format!("SELECT {COLUMNS} FROM insight_previews WHERE id = $1 AND user_id = $2"),
            vec![id.into(), user.0.into()],
        ))
        .await?;
    row.as_ref().map(preview_from).transpose()
}

/// The user's previews, newest first.
pub async fn list(db: &impl ConnectionTrait, user: UserId, limit: u64) -> Result<Vec<Preview>> {
    let rows = db
        .query_all_raw(stmt(
            &format!(
                "SELECT {COLUMNS} FROM insight_previews WHERE user_id = $1
                 ORDER BY created_at DESC, id LIMIT $2"
            ),
            vec![user.0.into(), (limit as i64).into()],
        ))
        .await?;
    rows.iter().map(preview_from).collect()
}

/// Marks a queued preview as being read; false when it is no longer to be read (finished,
/// failed, applied or discarded).
pub async fn start(db: &impl ConnectionTrait, id: Uuid) -> Result<bool> {
    let res = db
        .execute_raw(stmt(
            "UPDATE insight_previews SET status = 'running', started_at = coalesce(started_at, now())
             WHERE id = $1 AND status IN ('queued', 'running')",
            vec![id.into()],
        ))
        .await?;
    Ok(res.rows_affected() == 1)
}

/// The next `limit` documents of the preview's window (by id, after `after`).
pub async fn page(
    db: &impl ConnectionTrait,
    user: UserId,
    preview: &Preview,
    after: Uuid,
    limit: u64,
) -> Result<Vec<Uuid>> {
    let mut values = window_values(user, &preview.settings, after, preview.from, preview.to);
    values.push((limit as i64).into());
    let rows = db
        .query_all_raw(stmt(
            &format!(
                "SELECT d.id {} {IN_WINDOW} ORDER BY d.id LIMIT $9",
                crate::insights::covered!()
            ),
            values,
        ))
        .await?;
    rows.iter().map(|r| Ok(r.try_get("", "id")?)).collect()
}

/// Stores what the candidate made of one message in the shadow tables, in place of what a
/// redelivery stored before. An item the live tables hold (same document and span) keeps
/// what people decided: pinned to its theme, or dismissed; one like a dismissed quote is not
/// stored, as live.
pub async fn store(
    db: &DatabaseConnection,
    user: UserId,
    preview: Uuid,
    outcome: &Outcome<'_>,
    items: &[NewItem],
) -> Result<()> {
    let txn = db.begin().await?;
    // A preview discarded while its page was read keeps no rows.
    let reading = txn
        .query_one_raw(stmt(
            "SELECT 1 AS one FROM insight_previews WHERE id = $1 AND status IN ('queued', 'running')
             FOR SHARE",
            vec![preview.into()],
        ))
        .await?;
    if reading.is_none() {
        return Ok(());
    }
    let document = outcome.document;
    txn.execute_raw(stmt(
        "DELETE FROM insight_preview_items WHERE preview_id = $1 AND document_id = $2",
        vec![preview.into(), document.0.into()],
    ))
    .await?;
    let mut stored = 0i32;
    let mut like_dismissed = 0i32;
    for item in items {
        let id = item_id(user, document, item.span_start, item.span_end);
        let vector = Vector::from(item.embedding.clone());
        let live = txn
            .query_one_raw(stmt(
                "SELECT theme_id, pinned, dismissed_at FROM insight_items WHERE id = $1 AND user_id = $2",
                vec![id.into(), user.0.into()],
            ))
            .await?;
        let (mut pinned_to, mut dismissed_at): (Option<Uuid>, Option<DateTime<Utc>>) = (None, None);
        if let Some(r) = &live {
            dismissed_at = r.try_get("", "dismissed_at")?;
            if r.try_get::<bool>("", "pinned")? {
                pinned_to = r.try_get("", "theme_id")?;
            }
        } else if let Some((None, s)) =
            crate::insights::nearest_curated(&txn, user, document, &vector).await?
            && s >= crate::insights::DISMISSED_LIKE
        {
            like_dismissed += 1;
            continue;
        }
        txn.execute_raw(stmt(
            "INSERT INTO insight_preview_items (preview_id, id, user_id, document_id, span_start,
               span_end, kind, title, description, quote, score, customer, company, product_area,
               sentiment, urgency, theme_id, embedding, occurred_at, pinned, dismissed_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                     $18, $19, $20, $21)",
            [
                vec![preview.into(), id.into(), user.0.into(), document.0.into()],
                crate::insights::item_values(item),
                vec![
                    pinned_to.into(),
                    vector.into(),
                    item.occurred_at.into(),
                    pinned_to.is_some().into(),
                    dismissed_at.into(),
                ],
            ]
            .concat(),
        ))
        .await?;
        stored += 1;
    }
    let status = if outcome.status == "skipped" {
        "skipped"
    } else if stored > 0 {
        "extracted"
    } else {
        "below"
    };
    // A message read again (a redelivery) counts once.
    txn.execute_raw(stmt(
        "WITH m AS (
           INSERT INTO insight_preview_messages (preview_id, user_id, document_id, content_hash,
             source, status, reason, score, kinds, items, classifier)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
           ON CONFLICT (preview_id, document_id) DO UPDATE SET content_hash = $4, status = $6,
             reason = $7, score = $8, kinds = $9, items = $10, classifier = $11
           RETURNING (xmax = 0) AS first)
         UPDATE insight_previews SET read = read + (SELECT count(*) FROM m WHERE first)::int,
           report = jsonb_set(coalesce(report, '{}'), '{items,like_dismissed}',
             to_jsonb(coalesce((report->'items'->>'like_dismissed')::int, 0)
                      + CASE WHEN (SELECT bool_or(first) FROM m) THEN $12 ELSE 0 END))
         WHERE id = $1",
        vec![
            preview.into(),
            user.0.into(),
            document.0.into(),
            outcome.content_hash.into(),
            outcome.source.into(),
            status.into(),
            outcome.reason.clone().into(),
            outcome.score.into(),
            outcome.kinds.clone().into(),
            stored.into(),
            outcome.classifier.into(),
            like_dismissed.into(),
        ],
    ))
    .await?;
    txn.commit().await?;
    Ok(())
}

/// Records that the preview could not be made.
pub async fn fail(db: &impl ConnectionTrait, id: Uuid, error: &str) -> Result<()> {
    db.execute_raw(stmt(
        "UPDATE insight_previews SET status = 'failed', error = $2, finished_at = now()
         WHERE id = $1 AND status IN ('queued', 'running')",
        vec![id.into(), error.into()],
    ))
    .await?;
    Ok(())
}

/// A fingerprint of the window's live items and their themes, and of the settings: applying
/// refuses a preview made against other live items than those there now.
const LIVE_PRINT: &str = "
    SELECT md5(coalesce(string_agg(i.id::text || ':' || coalesce(i.theme_id::text, '-') || ':' ||
                                   i.kind || ':' || (i.dismissed_at IS NULL)::text, ',' ORDER BY i.id), '')
               || coalesce((SELECT updated_at::text FROM insight_settings WHERE user_id = $1), ''))
      AS print
    FROM insight_items i
    WHERE i.user_id = $1 AND i.occurred_at >= $2 AND i.occurred_at < $3";

async fn live_print(
    db: &impl ConnectionTrait,
    user: UserId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<String> {
    let row = db
        .query_one_raw(stmt(
            LIVE_PRINT,
            vec![user.0.into(), from.into(), to.into()],
        ))
        .await?
        .ok_or(crate::DbError::NotFound)?;
    Ok(row.try_get("", "print")?)
}

struct Shadow {
    id: Uuid,
    kind: String,
    title: String,
    quote: String,
    pinned_to: Option<Uuid>,
    occurred_at: DateTime<Utc>,
}

/// Groups what the preview found (as regrouping does: average link at the candidate's
/// threshold, under the curations' constraints), names each group after the live theme it
/// takes over or as a new theme, and writes the report. The preview is then ready.
pub async fn finish(
    db: &DatabaseConnection,
    user: UserId,
    id: Uuid,
    deployment: Joining,
) -> Result<Report> {
    let preview = get(db, user, id).await?.ok_or(crate::DbError::NotFound)?;
    let threshold = preview.settings.joining(deployment).regroup;
    let rows = db
        .query_all_raw(stmt(
            "SELECT id, kind, title, quote, pinned, theme_id, embedding, occurred_at
             FROM insight_preview_items WHERE preview_id = $1 AND dismissed_at IS NULL
             ORDER BY occurred_at DESC, id LIMIT $2",
            vec![id.into(), crate::insights::REGROUP_MAX_ITEMS.into()],
        ))
        .await?;
    let mut items = Vec::with_capacity(rows.len());
    let mut vectors = Vec::with_capacity(rows.len());
    for r in &rows {
        let pinned: bool = r.try_get("", "pinned")?;
        items.push(Shadow {
            id: r.try_get("", "id")?,
            kind: r.try_get("", "kind")?,
            title: r.try_get("", "title")?,
            quote: r.try_get("", "quote")?,
            pinned_to: if pinned {
                r.try_get("", "theme_id")?
            } else {
                None
            },
            occurred_at: r.try_get("", "occurred_at")?,
        });
        vectors.push(r.try_get::<Vector>("", "embedding")?.to_vec());
    }
    let ids: Vec<Uuid> = items.iter().map(|i| i.id).collect();
    let pins: Vec<Option<Uuid>> = items.iter().map(|i| i.pinned_to).collect();
    let constraints = crate::curation::constraints(db, user, &ids, &pins).await?;
    // Grouped twice: with the constraints (what applying keeps) and without (to tell which
    // curations only the constraints keep).
    let (groups, free, vectors, constraints) = tokio::task::spawn_blocking(move || {
        let groups = insights::cluster::average_link_with(&vectors, threshold, &constraints);
        let free = insights::cluster::average_link(&vectors, threshold);
        (groups, free, vectors, constraints)
    })
    .await
    .map_err(|e| DbErr::Custom(format!("grouping stopped: {e}")))?;

    // The live side of the window.
    let live_rows = db
        .query_all_raw(stmt(
            "SELECT i.id, i.document_id, i.kind, i.quote, i.theme_id, i.pinned, t.title
             FROM insight_items i LEFT JOIN insight_themes t ON t.id = i.theme_id
             WHERE i.user_id = $1 AND i.occurred_at >= $2 AND i.occurred_at < $3
               AND i.dismissed_at IS NULL",
            vec![user.0.into(), preview.from.into(), preview.to.into()],
        ))
        .await?;
    struct Live {
        document: Uuid,
        kind: String,
        quote: String,
        theme: Option<Uuid>,
        pinned: bool,
    }
    let mut live: HashMap<Uuid, Live> = HashMap::new();
    let mut live_titles: HashMap<Uuid, String> = HashMap::new();
    for r in &live_rows {
        let theme: Option<Uuid> = r.try_get("", "theme_id")?;
        if let (Some(t), Some(title)) = (theme, r.try_get::<Option<String>>("", "title")?) {
            live_titles.insert(t, title);
        }
        live.insert(
            r.try_get("", "id")?,
            Live {
                document: r.try_get("", "document_id")?,
                kind: r.try_get("", "kind")?,
                quote: r.try_get("", "quote")?,
                theme,
                pinned: r.try_get("", "pinned")?,
            },
        );
    }
    let current: Vec<Option<Uuid>> = ids
        .iter()
        .map(|i| live.get(i).and_then(|l| l.theme))
        .collect();
    let mut theme_of = crate::insights::take_themes(&groups, &current, &pins);
    let group_count = groups.iter().max().map_or(0, |m| m + 1);
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); group_count];
    for (i, g) in groups.iter().enumerate() {
        members[*g].push(i);
    }

    let mut report = Report {
        threshold,
        grouped: items.len(),
        ..Report::default()
    };
    // Shadow themes: the live theme a group takes over keeps its id and title; the others
    // are new, titled by their most central item.
    let txn = db.begin().await?;
    txn.execute_raw(stmt(
        "DELETE FROM insight_preview_themes WHERE preview_id = $1",
        vec![id.into()],
    ))
    .await?;
    let mut titles: HashMap<usize, String> = HashMap::new();
    for (g, m) in members.iter().enumerate() {
        let at = crate::insights::central(m, &vectors);
        let central = &items[at];
        let (theme, is_live) = match theme_of.get(&g) {
            Some(t) => (*t, true),
            None => (Uuid::new_v4(), false),
        };
        theme_of.insert(g, theme);
        let title = if is_live {
            live_titles
                .get(&theme)
                .cloned()
                .unwrap_or_else(|| central.title.clone())
        } else {
            central.title.clone()
        };
        titles.insert(g, title.clone());
        let first = m
            .iter()
            .map(|&i| items[i].occurred_at)
            .min()
            .expect("members");
        let last = m
            .iter()
            .map(|&i| items[i].occurred_at)
            .max()
            .expect("members");
        txn.execute_raw(stmt(
            "INSERT INTO insight_preview_themes (preview_id, id, user_id, title, summary, kind,
               centroid, items, first_seen, last_seen, live)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            vec![
                id.into(),
                theme.into(),
                user.0.into(),
                title.into(),
                central.quote.clone().into(),
                central.kind.clone().into(),
                Vector::from(vectors[at].clone()).into(),
                (m.len() as i32).into(),
                first.into(),
                last.into(),
                is_live.into(),
            ],
        ))
        .await?;
        if !is_live {
            report.themes.formed.push(ThemeRef {
                id: theme,
                title: titles[&g].clone(),
                items: m.len(),
            });
        }
    }
    let themes: Vec<Uuid> = groups.iter().map(|g| theme_of[g]).collect();
    txn.execute_raw(stmt(
        "UPDATE insight_preview_items p SET theme_id = u.theme
         FROM unnest($2::uuid[], $3::uuid[]) AS u(id, theme)
         WHERE p.preview_id = $1 AND p.id = u.id",
        vec![id.into(), ids.clone().into(), themes.into()],
    ))
    .await?;
    // Items past the newest `REGROUP_MAX_ITEMS` are not grouped: each joins the theme nearest
    // it, as an arriving item does.
    txn.execute_raw(stmt(
        "UPDATE insight_preview_items p SET theme_id = (
           SELECT t.id FROM insight_preview_themes t WHERE t.preview_id = $1
           ORDER BY t.centroid <=> p.embedding LIMIT 1)
         WHERE p.preview_id = $1 AND p.dismissed_at IS NULL AND p.theme_id IS NULL",
        vec![id.into()],
    ))
    .await?;
    // Each item's similarity to its group's centroid, as live.
    txn.execute_raw(stmt(
        &format!(
            "UPDATE insight_preview_themes t SET centroid = c.mean, accounts = c.accounts
             FROM (SELECT theme_id, avg(embedding) AS mean,
                          count(DISTINCT {})::int AS accounts
                   FROM insight_preview_items i WHERE preview_id = $1 AND theme_id IS NOT NULL
                     AND dismissed_at IS NULL GROUP BY theme_id) c
             WHERE t.preview_id = $1 AND t.id = c.theme_id",
            crate::insights::ACCOUNT
        ),
        vec![id.into()],
    ))
    .await?;
    txn.execute_raw(stmt(
        "UPDATE insight_preview_items i SET similarity = 1 - (i.embedding <=> t.centroid)
         FROM insight_preview_themes t
         WHERE i.preview_id = $1 AND t.preview_id = $1 AND t.id = i.theme_id",
        vec![id.into()],
    ))
    .await?;

    // Items: added, removed, kept, of another kind.
    let example =
        |id: Uuid, document: Uuid, kind: &str, was: Option<String>, quote: &str| Example {
            item: id,
            document_id: document,
            kind: kind.to_owned(),
            was,
            quote: quote.to_owned(),
        };
    // Every item found counts, grouped or not.
    let all = txn
        .query_all_raw(stmt(
            "SELECT id, document_id, kind, quote FROM insight_preview_items
             WHERE preview_id = $1 AND dismissed_at IS NULL ORDER BY id",
            vec![id.into()],
        ))
        .await?;
    struct Found {
        id: Uuid,
        document: Uuid,
        kind: String,
        quote: String,
    }
    let all = all
        .iter()
        .map(|r| {
            Ok(Found {
                id: r.try_get("", "id")?,
                document: r.try_get("", "document_id")?,
                kind: r.try_get("", "kind")?,
                quote: r.try_get("", "quote")?,
            })
        })
        .collect::<std::result::Result<Vec<_>, DbErr>>()?;
    let found: HashSet<Uuid> = all.iter().map(|f| f.id).collect();
    report.items.preview = all.len();
    report.items.live = live.len();
    for s in &all {
        match live.get(&s.id) {
            None => {
                report.items.added += 1;
                if report.items.examples_added.len() < EXAMPLES {
                    let e = example(s.id, s.document, &s.kind, None, &s.quote);
                    report.items.examples_added.push(e);
                }
            }
            Some(l) => {
                report.items.kept += 1;
                if l.kind != s.kind {
                    report.items.changed_kind += 1;
                    if report.items.examples_changed_kind.len() < EXAMPLES {
                        let e = example(s.id, s.document, &s.kind, Some(l.kind.clone()), &s.quote);
                        report.items.examples_changed_kind.push(e);
                    }
                }
            }
        }
    }
    let mut removed: Vec<(&Uuid, &Live)> =
        live.iter().filter(|(i, _)| !found.contains(i)).collect();
    removed.sort_by_key(|(i, _)| **i);
    report.items.removed = removed.len();
    for (i, l) in &removed {
        if report.items.examples_removed.len() < EXAMPLES {
            report
                .items
                .examples_removed
                .push(example(**i, l.document, &l.kind, None, &l.quote));
        }
        if l.pinned && report.curations.lost.len() < 100 {
            report
                .curations
                .lost
                .push(example(**i, l.document, &l.kind, None, &l.quote));
        }
    }
    report.items.like_dismissed = preview
        .report
        .as_ref()
        .map_or(0, |r| r.items.like_dismissed);

    // Themes: merged, split, gone; agreement over the items both hold.
    let (mut shared_live, mut shared_preview) = (Vec::new(), Vec::new());
    let mut live_index: BTreeMap<Uuid, usize> = BTreeMap::new();
    let mut parts_of_group: BTreeMap<usize, BTreeMap<Uuid, usize>> = BTreeMap::new();
    let mut groups_of_live: BTreeMap<Uuid, BTreeMap<usize, usize>> = BTreeMap::new();
    for (i, s) in items.iter().enumerate() {
        if let Some(t) = live.get(&s.id).and_then(|l| l.theme) {
            let n = live_index.len();
            shared_live.push(*live_index.entry(t).or_insert(n));
            shared_preview.push(groups[i]);
            *parts_of_group
                .entry(groups[i])
                .or_default()
                .entry(t)
                .or_default() += 1;
            *groups_of_live
                .entry(t)
                .or_default()
                .entry(groups[i])
                .or_default() += 1;
        }
    }
    report.compared = shared_live.len();
    report.agreement = (!shared_live.is_empty())
        .then(|| insights::cluster::adjusted_rand(&shared_preview, &shared_live));
    let live_themes: BTreeMap<Uuid, usize> =
        live.values()
            .filter_map(|l| l.theme)
            .fold(BTreeMap::new(), |mut m, t| {
                *m.entry(t).or_default() += 1;
                m
            });
    report.themes.live = live_themes.len();
    report.themes.preview = group_count;
    let live_ref = |t: &Uuid, n: usize| ThemeRef {
        id: *t,
        title: live_titles.get(t).cloned().unwrap_or_default(),
        items: n,
    };
    let group_ref = |g: usize| ThemeRef {
        id: theme_of[&g],
        title: titles[&g].clone(),
        items: members[g].len(),
    };
    for (g, parts) in &parts_of_group {
        if parts.len() > 1 {
            report.themes.merged.push(Merge {
                theme: group_ref(*g),
                parts: parts.iter().map(|(t, n)| live_ref(t, *n)).collect(),
            });
        }
    }
    for (t, gs) in &groups_of_live {
        if gs.len() > 1 {
            report.themes.split.push(Merge {
                theme: live_ref(t, live_themes[t]),
                parts: gs.keys().map(|g| group_ref(*g)).collect(),
            });
        }
    }
    let kept: HashSet<Uuid> = theme_of.values().copied().collect();
    for (t, n) in &live_themes {
        if !kept.contains(t) {
            report.themes.gone.push(live_ref(t, *n));
        }
    }

    // Curations the free grouping would break, which the constraints keep.
    let mut broken: Vec<Uuid> = Vec::new();
    for set in &constraints.must {
        if set.iter().any(|&i| free[i] != free[set[0]]) {
            broken.extend(set.iter().map(|&i| ids[i]));
        }
    }
    let mut broken_pairs: Vec<(Uuid, Uuid)> = Vec::new();
    for &(a, b) in &constraints.cannot {
        if free[a] == free[b] {
            broken_pairs.push((ids[a], ids[b]));
        }
    }
    let (a, b): (Vec<Uuid>, Vec<Uuid>) = broken_pairs.into_iter().unzip();
    let curation_rows = txn
        .query_all_raw(stmt(
            "SELECT c.id, c.action, c.actor, c.created_at,
                    (c.items && $2 OR EXISTS (
                       SELECT 1 FROM insight_cannot_link l JOIN unnest($3::uuid[], $4::uuid[]) AS p(a, b)
                         ON (l.a, l.b) IN ((p.a, p.b), (p.b, p.a))
                       WHERE l.curation = c.id)) AS needed
             FROM insight_curations c
             WHERE c.user_id = $1 AND c.undone_at IS NULL AND c.action <> 'rename'
               AND c.items && $5
             ORDER BY c.created_at, c.id",
            vec![
                user.0.into(),
                broken.into(),
                a.into(),
                b.into(),
                ids.iter()
                    .copied()
                    .chain(live.keys().copied())
                    .collect::<Vec<_>>()
                    .into(),
            ],
        ))
        .await?;
    for r in &curation_rows {
        report.curations.considered += 1;
        if r.try_get::<bool>("", "needed")? {
            report.curations.kept_by_constraint.push(CurationRef {
                id: r.try_get("", "id")?,
                action: r.try_get("", "action")?,
                actor: r.try_get("", "actor")?,
                created_at: r.try_get("", "created_at")?,
            });
        }
    }

    let counts = txn
        .query_one_raw(stmt(
            "SELECT (SELECT count(*) FROM insight_preview_messages WHERE preview_id = $1) AS read,
                    (SELECT count(*) FROM insight_preview_messages WHERE preview_id = $1 AND status = 'extracted') AS extracted,
                    (SELECT count(*) FROM insight_preview_messages WHERE preview_id = $1 AND status = 'below') AS below,
                    (SELECT count(*) FROM insight_preview_messages WHERE preview_id = $1 AND status = 'skipped') AS skipped,
                    (SELECT count(*) FROM insight_messages m JOIN documents d ON d.id = m.document_id
                      WHERE m.user_id = $2 AND coalesce(d.occurred_at, d.created_at) >= $3
                        AND coalesce(d.occurred_at, d.created_at) < $4) AS live_read,
                    (SELECT count(*) FROM insight_messages m JOIN documents d ON d.id = m.document_id
                      WHERE m.user_id = $2 AND m.status = 'extracted'
                        AND coalesce(d.occurred_at, d.created_at) >= $3
                        AND coalesce(d.occurred_at, d.created_at) < $4) AS live_extracted",
            vec![id.into(), user.0.into(), preview.from.into(), preview.to.into()],
        ))
        .await?
        .ok_or(crate::DbError::NotFound)?;
    let n = |k: &str| counts.try_get::<i64>("", k).map(|v| v as usize);
    report.messages = Messages {
        read: n("read")?,
        extracted: n("extracted")?,
        below: n("below")?,
        skipped: n("skipped")?,
        live_read: n("live_read")?,
        live_extracted: n("live_extracted")?,
    };
    let print = live_print(&txn, user, preview.from, preview.to).await?;
    txn.execute_raw(stmt(
        "UPDATE insight_previews SET status = 'ready', report = $2, live_print = $3,
           finished_at = now()
         WHERE id = $1 AND status IN ('queued', 'running', 'ready')",
        vec![
            id.into(),
            serde_json::to_value(&report)
                .expect("report serializes")
                .into(),
            print.into(),
        ],
    ))
    .await?;
    txn.commit().await?;
    Ok(report)
}

/// What applying a preview changed in the live tables.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Applied {
    /// Live items of the window replaced by the preview's, and the themes started.
    pub removed: usize,
    pub stored: usize,
    pub themes_created: usize,
    pub themes_removed: usize,
    pub messages: usize,
}

/// Promotes a ready preview: the candidate settings become the team's, and the window's
/// items, themes and message outcomes become the preview's, in one transaction. Refused when
/// the window's live items changed since the preview was grouped.
pub async fn apply(
    db: &DatabaseConnection,
    user: UserId,
    id: Uuid,
) -> std::result::Result<Applied, PreviewError> {
    let txn = db.begin().await?;
    txn.execute_raw(stmt(
        "SELECT pg_advisory_xact_lock(hashtextextended('insights:' || $1::text, 0))",
        vec![user.0.to_string().into()],
    ))
    .await?;
    let row = txn
        .query_one_raw(stmt(
            &format!(
                "SELECT {COLUMNS}, live_print FROM insight_previews WHERE id = $1 AND user_id = $2
                 FOR UPDATE"
            ),
            vec![id.into(), user.0.into()],
        ))
        .await?
        .ok_or(PreviewError::NotFound)?;
    let preview = preview_from(&row)?;
    if preview.status != "ready" {
        return Err(PreviewError::NotReady(preview.status));
    }
    let print: Option<String> = row.try_get("", "live_print")?;
    // The settings are saved first below, which changes the print: compare before.
    if print.as_deref()
        != Some(
            live_print(&txn, user, preview.from, preview.to)
                .await?
                .as_str(),
        )
    {
        return Err(PreviewError::Stale);
    }
    crate::insights::save_settings(&txn, user, &preview.settings).await?;
    let old = txn
        .query_all_raw(stmt(
            "DELETE FROM insight_items WHERE user_id = $1 AND occurred_at >= $2 AND occurred_at < $3
             RETURNING theme_id",
            vec![user.0.into(), preview.from.into(), preview.to.into()],
        ))
        .await?;
    let mut touched: HashSet<Uuid> = HashSet::new();
    for r in &old {
        if let Some(t) = r.try_get::<Option<Uuid>>("", "theme_id")? {
            touched.insert(t);
        }
    }
    let created = txn
        .execute_raw(stmt(
            "INSERT INTO insight_themes (id, user_id, title, summary, kind, centroid, first_seen, last_seen)
             SELECT id, user_id, title, summary, kind, centroid, first_seen, last_seen
             FROM insight_preview_themes t
             WHERE preview_id = $1 AND (NOT live OR NOT EXISTS (SELECT 1 FROM insight_themes l WHERE l.id = t.id))
             ON CONFLICT (id) DO NOTHING",
            vec![id.into()],
        ))
        .await?
        .rows_affected() as usize;
    // An item of a message another event deleted since is left out with it.
    let stored = txn
        .query_all_raw(stmt(
            "INSERT INTO insight_items (id, user_id, document_id, span_start, span_end, kind, title,
               description, quote, score, customer, company, product_area, sentiment, urgency,
               theme_id, similarity, embedding, occurred_at, pinned, dismissed_at)
             SELECT p.id, p.user_id, p.document_id, p.span_start, p.span_end, p.kind, p.title,
               p.description, p.quote, p.score, p.customer, p.company, p.product_area, p.sentiment,
               p.urgency, CASE WHEN p.dismissed_at IS NULL THEN p.theme_id END, p.similarity,
               p.embedding, p.occurred_at, p.pinned, p.dismissed_at
             FROM insight_preview_items p JOIN documents d ON d.id = p.document_id
             WHERE p.preview_id = $1
             ON CONFLICT (id) DO NOTHING
             RETURNING theme_id",
            vec![id.into()],
        ))
        .await?;
    for r in &stored {
        if let Some(t) = r.try_get::<Option<Uuid>>("", "theme_id")? {
            touched.insert(t);
        }
    }
    let messages = txn
        .execute_raw(stmt(
            "INSERT INTO insight_messages (user_id, document_id, content_hash, source, status,
               reason, score, kinds, items, classifier)
             SELECT p.user_id, p.document_id, p.content_hash, p.source, p.status, p.reason,
               p.score, p.kinds, p.items, p.classifier
             FROM insight_preview_messages p JOIN documents d ON d.id = p.document_id
             WHERE p.preview_id = $1
             ON CONFLICT (user_id, document_id) DO UPDATE SET content_hash = EXCLUDED.content_hash,
               status = EXCLUDED.status, reason = EXCLUDED.reason, score = EXCLUDED.score,
               kinds = EXCLUDED.kinds, items = EXCLUDED.items, classifier = EXCLUDED.classifier,
               updated_at = now()",
            vec![id.into()],
        ))
        .await?
        .rows_affected() as usize;
    // Messages of the window the candidate no longer covers have no outcome, like any
    // message outside the settings.
    txn.execute_raw(stmt(
        "DELETE FROM insight_messages m USING documents d
         WHERE m.user_id = $1 AND d.id = m.document_id
           AND coalesce(d.occurred_at, d.created_at) >= $2 AND coalesce(d.occurred_at, d.created_at) < $3
           AND NOT EXISTS (SELECT 1 FROM insight_preview_messages p
                           WHERE p.preview_id = $4 AND p.document_id = m.document_id)",
        vec![user.0.into(), preview.from.into(), preview.to.into(), id.into()],
    ))
    .await?;
    let touched: Vec<Uuid> = touched.into_iter().collect();
    crate::insights::refresh(&txn, &touched).await?;
    let themes_removed = txn
        .execute_raw(stmt(
            "DELETE FROM insight_themes WHERE id = ANY($1) AND items = 0",
            vec![touched.clone().into()],
        ))
        .await?
        .rows_affected() as usize;
    txn.execute_raw(stmt(
        "UPDATE insight_items i SET similarity = 1 - (i.embedding <=> t.centroid)
         FROM insight_themes t
         WHERE t.id = i.theme_id AND i.user_id = $1 AND i.occurred_at >= $2 AND i.occurred_at < $3",
        vec![user.0.into(), preview.from.into(), preview.to.into()],
    ))
    .await?;
    txn.execute_raw(stmt(
        "UPDATE insight_previews SET status = 'applied', applied_at = now() WHERE id = $1",
        vec![id.into()],
    ))
    .await?;
    // The shadow rows have done their work.
    drop_shadow(&txn, id).await?;
    txn.commit().await?;
    Ok(Applied {
        removed: old.len(),
        stored: stored.len(),
        themes_created: created,
        themes_removed,
        messages,
    })
}

/// Deletes a preview's shadow rows.
async fn drop_shadow(txn: &impl ConnectionTrait, id: Uuid) -> Result<()> {
    for table in [
        "insight_preview_items",
        "insight_preview_themes",
        "insight_preview_messages",
    ] {
        txn.execute_raw(stmt(
            &format!("DELETE FROM {table} WHERE preview_id = $1"),
            vec![id.into()],
        ))
        .await?;
    }
    Ok(())
}

/// Discards a preview that was not applied, with its shadow rows; false when there is none
/// to discard.
pub async fn discard(db: &DatabaseConnection, user: UserId, id: Uuid) -> Result<bool> {
    let txn = db.begin().await?;
    let res = txn
        .execute_raw(stmt(
            "UPDATE insight_previews SET status = 'discarded', finished_at = coalesce(finished_at, now())
             WHERE id = $1 AND user_id = $2 AND status <> 'applied'",
            vec![id.into(), user.0.into()],
        ))
        .await?;
    if res.rows_affected() == 0 {
        return Ok(false);
    }
    drop_shadow(&txn, id).await?;
    txn.commit().await?;
    Ok(true)
}
