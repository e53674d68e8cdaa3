//! A product team's curation of its themes: merge, split, rename, move and dismiss. Each is
//! one transaction (under the user's insights lock, as placing and regrouping are), recorded
//! in `insight_curations` with who made it, when, and what it changed, so it can be undone.
//!
//! What a curation decides survives every regrouping (`insights::regroup`): merged, split and
//! moved items are pinned to their theme (pinned items of one theme stay together, of two
//! themes apart), a moved item is set apart from the items of the theme it left, a renamed
//! theme keeps its title, and a dismissed item is out of every theme.

use crate::{DbError, Result};
use chrono::{DateTime, Utc};
use common::UserId;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, Statement,
    TransactionTrait, Value,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeSet;
use uuid::Uuid;

fn stmt(sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// Why a curation was refused.
#[derive(Debug, thiserror::Error)]
pub enum CurationError {
    #[error("{0}")]
    NotFound(String),
    /// The request names something that cannot be done: the field and why.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<DbErr> for CurationError {
    fn from(e: DbErr) -> Self {
        Self::Db(e.into())
    }
}

type Outcome<T> = std::result::Result<T, CurationError>;

fn invalid(field: &'static str, message: impl Into<String>) -> CurationError {
    CurationError::Invalid {
        field,
        message: message.into(),
    }
}

/// The longest theme title a person may give.
pub const MAX_TITLE_CHARS: usize = 200;

/// A recorded curation.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Curation {
    pub id: Uuid,
    /// `merge`, `split`, `rename`, `move` or `dismiss`.
    pub action: String,
    /// Who made it (the person's email).
    pub actor: String,
    /// What was asked: the theme or item and the request's fields.
    pub request: serde_json::Value,
    /// Every item and theme it changed.
    pub items: Vec<Uuid>,
    pub themes: Vec<Uuid>,
    pub created_at: DateTime<Utc>,
    pub undone_at: Option<DateTime<Utc>>,
    pub undone_by: Option<String>,
}

/// An item as it was before a curation.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ItemState {
    id: Uuid,
    theme: Option<Uuid>,
    pinned: bool,
    dismissed_at: Option<DateTime<Utc>>,
}

/// A theme as it was before a curation (enough to bring it back).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ThemeState {
    id: Uuid,
    title: String,
    summary: String,
    kind: String,
    title_curated: bool,
    first_seen: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Before {
    items: Vec<ItemState>,
    themes: Vec<ThemeState>,
    /// Themes the curation started (removed again by undoing it).
    #[serde(default)]
    created: Vec<Uuid>,
}

async fn begin(db: &DatabaseConnection, user: UserId) -> Result<DatabaseTransaction> {
    let txn = db.begin().await?;
    txn.execute_raw(stmt(
        "SELECT pg_advisory_xact_lock(hashtextextended('insights:' || $1::text, 0))",
        vec![user.0.to_string().into()],
    ))
    .await?;
    Ok(txn)
}

async fn theme_states(
    db: &impl ConnectionTrait,
    user: UserId,
    ids: &[Uuid],
) -> Result<Vec<ThemeState>> {
    let rows = db
        .query_all_raw(stmt(
            "SELECT id, title, summary, kind, title_curated, first_seen, last_seen, created_at
             FROM insight_themes WHERE user_id = $1 AND id = ANY($2) ORDER BY id",
            vec![user.0.into(), ids.to_vec().into()],
        ))
        .await?;
    rows.into_iter()
        .map(|r| {
            Ok(ThemeState {
                id: r.try_get("", "id")?,
                title: r.try_get("", "title")?,
                summary: r.try_get("", "summary")?,
                kind: r.try_get("", "kind")?,
                title_curated: r.try_get("", "title_curated")?,
                first_seen: r.try_get("", "first_seen")?,
                last_seen: r.try_get("", "last_seen")?,
                created_at: r.try_get("", "created_at")?,
            })
        })
        .collect()
}

/// The states of the items `where_sql` selects (`$1` the user, then `values`).
async fn item_states(
    db: &impl ConnectionTrait,
    user: UserId,
    where_sql: &str,
    values: Vec<Value>,
) -> Result<Vec<ItemState>> {
    let mut all = vec![user.0.into()];
    all.extend(values);
    let rows = db
        .query_all_raw(stmt(
            &format!(
                "SELECT id, theme_id, pinned, dismissed_at FROM insight_items
                 WHERE user_id = $1 AND {where_sql} ORDER BY id"
            ),
            all,
        ))
        .await?;
    rows.into_iter()
        .map(|r| {
            Ok(ItemState {
                id: r.try_get("", "id")?,
                theme: r.try_get("", "theme_id")?,
                pinned: r.try_get("", "pinned")?,
                dismissed_at: r.try_get("", "dismissed_at")?,
            })
        })
        .collect()
}

async fn theme_exists(db: &impl ConnectionTrait, user: UserId, id: Uuid) -> Result<bool> {
    Ok(!theme_states(db, user, &[id]).await?.is_empty())
}

/// Recomputes the themes' counts, centroids and quotes, and removes those left empty.
async fn settle(db: &impl ConnectionTrait, themes: &[Uuid]) -> Result<()> {
    crate::insights::refresh(db, themes).await?;
    db.execute_raw(stmt(
        "DELETE FROM insight_themes WHERE id = ANY($1) AND items = 0",
        vec![themes.to_vec().into()],
    ))
    .await?;
    Ok(())
}

/// Records the curation and commits.
async fn record(
    txn: &DatabaseTransaction,
    user: UserId,
    actor: &str,
    action: &str,
    request: serde_json::Value,
    before: &Before,
    themes: BTreeSet<Uuid>,
) -> Outcome<Curation> {
    let id = Uuid::new_v4();
    let items: Vec<Uuid> = before.items.iter().map(|i| i.id).collect();
    let themes: Vec<Uuid> = themes.into_iter().collect();
    let row = txn
        .query_one_raw(stmt(
            "INSERT INTO insight_curations (id, user_id, actor, action, request, before, items, themes)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING created_at",
            vec![
                id.into(),
                user.0.into(),
                actor.into(),
                action.into(),
                request.clone().into(),
                serde_json::to_value(before)
                    .expect("states serialize")
                    .into(),
                items.clone().into(),
                themes.clone().into(),
            ],
        ))
        .await?
        .ok_or_else(|| DbErr::Custom("the curation was not recorded".into()))?;
    let curation = Curation {
        id,
        action: action.into(),
        actor: actor.into(),
        request,
        items,
        themes,
        created_at: row.try_get("", "created_at")?,
        undone_at: None,
        undone_by: None,
    };
    Ok(curation)
}

/// Moves every item of theme `from` into `into`, pinned there; `from` ends.
pub async fn merge(
    db: &DatabaseConnection,
    user: UserId,
    actor: &str,
    from: Uuid,
    into: Uuid,
) -> Outcome<Curation> {
    let txn = begin(db, user).await?;
    if !theme_exists(&txn, user, from).await? {
        return Err(CurationError::NotFound("no such theme".into()));
    }
    if from == into {
        return Err(invalid("into", "a theme cannot be merged into itself"));
    }
    if !theme_exists(&txn, user, into).await? {
        return Err(invalid("into", "no such theme"));
    }
    let themes = vec![from, into];
    let before = Before {
        items: item_states(
            &txn,
            user,
            "theme_id = ANY($2)",
            vec![themes.clone().into()],
        )
        .await?,
        themes: theme_states(&txn, user, &themes).await?,
        created: Vec::new(),
    };
    txn.execute_raw(stmt(
        "UPDATE insight_items SET theme_id = $3, pinned = true
         WHERE user_id = $1 AND theme_id = ANY($2)",
        vec![user.0.into(), themes.clone().into(), into.into()],
    ))
    .await?;
    settle(&txn, &themes).await?;
    let curation = record(
        &txn,
        user,
        actor,
        "merge",
        json!({"theme": from, "into": into}),
        &before,
        themes.into_iter().collect(),
    )
    .await?;
    txn.commit().await?;
    Ok(curation)
}

/// Starts a theme from `items` of `theme` (titled `title`, or by the first item); the items
/// that go and the items that stay are each pinned to their theme.
pub async fn split(
    db: &DatabaseConnection,
    user: UserId,
    actor: &str,
    theme: Uuid,
    items: &[Uuid],
    title: Option<&str>,
) -> Outcome<(Curation, Uuid)> {
    let title = title.map(str::trim);
    if let Some(t) = title {
        check_title(t)?;
    }
    let txn = begin(db, user).await?;
    if !theme_exists(&txn, user, theme).await? {
        return Err(CurationError::NotFound("no such theme".into()));
    }
    let members = item_states(&txn, user, "theme_id = $2", vec![theme.into()]).await?;
    let going: BTreeSet<Uuid> = items.iter().copied().collect();
    if going.is_empty() {
        return Err(invalid("items", "name at least one item of the theme"));
    }
    if let Some(stranger) = going.iter().find(|i| !members.iter().any(|m| m.id == **i)) {
        return Err(invalid(
            "items",
            format!("item {stranger} is not in this theme"),
        ));
    }
    if going.len() == members.len() {
        return Err(invalid(
            "items",
            "leave at least one item in the theme (to rename it, use rename)",
        ));
    }
    let going: Vec<Uuid> = going.into_iter().collect();
    let new = Uuid::new_v4();
    // The first named item that is still in the theme gives the title, quote and kind.
    let first = items.first().copied().expect("not empty");
    txn.execute_raw(stmt(
        "INSERT INTO insight_themes (id, user_id, title, summary, kind, centroid, first_seen, last_seen, title_curated)
         SELECT $1, $2, coalesce($4, f.title), f.quote, f.kind,
                (SELECT avg(embedding) FROM insight_items WHERE id = ANY($5)),
                f.occurred_at, f.occurred_at, $4 IS NOT NULL
         FROM insight_items f WHERE f.id = $3",
        vec![
            new.into(),
            user.0.into(),
            first.into(),
            title.map(str::to_owned).into(),
            going.clone().into(),
        ],
    ))
    .await?;
    let before = Before {
        items: members,
        themes: theme_states(&txn, user, &[theme]).await?,
        created: vec![new],
    };
    txn.execute_raw(stmt(
        "UPDATE insight_items SET pinned = true,
             theme_id = CASE WHEN id = ANY($3) THEN $4 ELSE theme_id END
         WHERE user_id = $1 AND theme_id = $2",
        vec![
            user.0.into(),
            theme.into(),
            going.clone().into(),
            new.into(),
        ],
    ))
    .await?;
    settle(&txn, &[theme, new]).await?;
    let curation = record(
        &txn,
        user,
        actor,
        "split",
        json!({"theme": theme, "items": going, "title": title, "new_theme": new}),
        &before,
        [theme, new].into_iter().collect(),
    )
    .await?;
    txn.commit().await?;
    Ok((curation, new))
}

fn check_title(title: &str) -> Outcome<()> {
    if title.is_empty() {
        return Err(invalid("title", "must not be empty"));
    }
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(invalid(
            "title",
            format!("at most {MAX_TITLE_CHARS} characters"),
        ));
    }
    if title.chars().any(char::is_control) {
        return Err(invalid(
            "title",
            "must be one line without control characters",
        ));
    }
    Ok(())
}

/// Gives the theme a title nothing replaces.
pub async fn rename(
    db: &DatabaseConnection,
    user: UserId,
    actor: &str,
    theme: Uuid,
    title: &str,
) -> Outcome<Curation> {
    let title = title.trim();
    check_title(title)?;
    let txn = begin(db, user).await?;
    let themes = theme_states(&txn, user, &[theme]).await?;
    if themes.is_empty() {
        return Err(CurationError::NotFound("no such theme".into()));
    }
    txn.execute_raw(stmt(
        "UPDATE insight_themes SET title = $2, title_curated = true, updated_at = now() WHERE id = $1",
        vec![theme.into(), title.into()],
    ))
    .await?;
    let before = Before {
        items: Vec::new(),
        themes,
        created: Vec::new(),
    };
    let curation = record(
        &txn,
        user,
        actor,
        "rename",
        json!({"theme": theme, "title": title}),
        &before,
        [theme].into_iter().collect(),
    )
    .await?;
    txn.commit().await?;
    Ok(curation)
}

/// The item's state, refused when it does not exist or was dismissed.
async fn live_item(db: &impl ConnectionTrait, user: UserId, item: Uuid) -> Outcome<ItemState> {
    let state = item_states(db, user, "id = $2", vec![item.into()])
        .await?
        .pop()
        .ok_or_else(|| CurationError::NotFound("no such item".into()))?;
    if state.dismissed_at.is_some() {
        return Err(CurationError::Conflict(
            "the item was dismissed; undo that first".into(),
        ));
    }
    Ok(state)
}

/// Puts the item into `theme`, pinned there and set apart from the items of the theme it
/// left.
pub async fn move_item(
    db: &DatabaseConnection,
    user: UserId,
    actor: &str,
    item: Uuid,
    theme: Uuid,
) -> Outcome<Curation> {
    let txn = begin(db, user).await?;
    let state = live_item(&txn, user, item).await?;
    if !theme_exists(&txn, user, theme).await? {
        return Err(invalid("theme", "no such theme"));
    }
    if state.theme == Some(theme) {
        return Err(invalid("theme", "the item is already in this theme"));
    }
    let left: Vec<Uuid> = state.theme.into_iter().collect();
    let mut touched: BTreeSet<Uuid> = left.iter().copied().collect();
    touched.insert(theme);
    let touched_list: Vec<Uuid> = touched.iter().copied().collect();
    let before = Before {
        items: vec![state],
        themes: theme_states(&txn, user, &touched_list).await?,
        created: Vec::new(),
    };
    txn.execute_raw(stmt(
        "UPDATE insight_items SET theme_id = $2, pinned = true WHERE id = $1",
        vec![item.into(), theme.into()],
    ))
    .await?;
    settle(&txn, &touched_list).await?;
    let curation = record(
        &txn,
        user,
        actor,
        "move",
        json!({"item": item, "theme": theme, "from": left.first()}),
        &before,
        touched,
    )
    .await?;
    // Set apart from every item of the theme it left (ordered pairs, each once).
    txn.execute_raw(stmt(
        "INSERT INTO insight_cannot_link (user_id, a, b, curation)
         SELECT $1, least($2, i.id), greatest($2, i.id), $4 FROM insight_items i
         WHERE i.user_id = $1 AND i.theme_id = ANY($3) AND i.id <> $2
         ON CONFLICT DO NOTHING",
        vec![user.0.into(), item.into(), left.into(), curation.id.into()],
    ))
    .await?;
    txn.commit().await?;
    Ok(curation)
}

/// Marks the item as not feedback: out of its theme and every list and count.
pub async fn dismiss(
    db: &DatabaseConnection,
    user: UserId,
    actor: &str,
    item: Uuid,
) -> Outcome<Curation> {
    let txn = begin(db, user).await?;
    let state = live_item(&txn, user, item).await?;
    let themes: Vec<Uuid> = state.theme.into_iter().collect();
    let before = Before {
        items: vec![state],
        themes: theme_states(&txn, user, &themes).await?,
        created: Vec::new(),
    };
    txn.execute_raw(stmt(
        "UPDATE insight_items SET dismissed_at = now(), theme_id = NULL, pinned = false WHERE id = $1",
        vec![item.into()],
    ))
    .await?;
    settle(&txn, &themes).await?;
    let curation = record(
        &txn,
        user,
        actor,
        "dismiss",
        json!({"item": item}),
        &before,
        themes.into_iter().collect(),
    )
    .await?;
    txn.commit().await?;
    Ok(curation)
}

const CURATION_COLUMNS: &str =
    "id, action, actor, request, items, themes, created_at, undone_at, undone_by";

fn curation_from(r: sea_orm::QueryResult) -> Result<Curation> {
    Ok(Curation {
        id: r.try_get("", "id")?,
        action: r.try_get("", "action")?,
        actor: r.try_get("", "actor")?,
        request: r.try_get("", "request")?,
        items: r.try_get("", "items")?,
        themes: r.try_get("", "themes")?,
        created_at: r.try_get("", "created_at")?,
        undone_at: r.try_get("", "undone_at")?,
        undone_by: r.try_get("", "undone_by")?,
    })
}

/// The user's curations, newest first.
pub async fn list(db: &impl ConnectionTrait, user: UserId, limit: u64) -> Result<Vec<Curation>> {
    db.query_all_raw(stmt(
        &format!(
            "SELECT {CURATION_COLUMNS} FROM insight_curations WHERE user_id = $1
             ORDER BY created_at DESC, id LIMIT $2"
        ),
        vec![user.0.into(), (limit as i64).into()],
    ))
    .await?
    .into_iter()
    .map(curation_from)
    .collect()
}

/// Reverts a curation: its items and themes as they were (a theme it ended comes back with
/// its id and title; one it started ends), its set-apart pairs dropped. Refused while a later
/// curation that is not undone changed the same items or themes (undo that one first).
pub async fn undo(
    db: &DatabaseConnection,
    user: UserId,
    actor: &str,
    id: Uuid,
) -> Outcome<Curation> {
    let txn = begin(db, user).await?;
    let row = txn
        .query_one_raw(stmt(
            &format!(
                "SELECT {CURATION_COLUMNS}, before FROM insight_curations
                 WHERE id = $1 AND user_id = $2 FOR UPDATE"
            ),
            vec![id.into(), user.0.into()],
        ))
        .await?
        .ok_or_else(|| CurationError::NotFound("no such curation".into()))?;
    let before: Before = serde_json::from_value(row.try_get("", "before")?)
        .map_err(|e| DbErr::Custom(format!("a stored curation does not read back: {e}")))?;
    let curation = curation_from(row)?;
    if curation.undone_at.is_some() {
        return Err(CurationError::Conflict(
            "this curation was already undone".into(),
        ));
    }
    let later = txn
        .query_one_raw(stmt(
            "SELECT id, action FROM insight_curations
             WHERE user_id = $1 AND undone_at IS NULL AND id <> $2
               AND (created_at, id) > ($3, $2)
               AND (items && $4 OR themes && $5)
             ORDER BY created_at DESC LIMIT 1",
            vec![
                user.0.into(),
                id.into(),
                curation.created_at.into(),
                curation.items.clone().into(),
                curation.themes.clone().into(),
            ],
        ))
        .await?;
    if let Some(later) = later {
        let (later_id, action): (Uuid, String) =
            (later.try_get("", "id")?, later.try_get("", "action")?);
        return Err(CurationError::Conflict(format!(
            "a later {action} ({later_id}) changed the same items or themes; undo it first"
        )));
    }
    // Themes it ended come back (their centroid is recomputed from their items below).
    for t in &before.themes {
        txn.execute_raw(stmt(
            "INSERT INTO insight_themes (id, user_id, title, summary, kind, centroid, first_seen,
                                         last_seen, created_at, title_curated)
             SELECT $1, $2, $3, $4, $5, avg(i.embedding), $6, $7, $8, $9
             FROM insight_items i WHERE i.id = ANY($10)
             HAVING count(*) > 0
             ON CONFLICT (id) DO NOTHING",
            vec![
                t.id.into(),
                user.0.into(),
                t.title.clone().into(),
                t.summary.clone().into(),
                t.kind.clone().into(),
                t.first_seen.into(),
                t.last_seen.into(),
                t.created_at.into(),
                t.title_curated.into(),
                before
                    .items
                    .iter()
                    .filter(|i| i.theme == Some(t.id))
                    .map(|i| i.id)
                    .collect::<Vec<_>>()
                    .into(),
            ],
        ))
        .await?;
        // A rename has no items to bring the theme back with: its title is restored here.
        txn.execute_raw(stmt(
            "UPDATE insight_themes SET title = $2, title_curated = $3 WHERE id = $1",
            vec![t.id.into(), t.title.clone().into(), t.title_curated.into()],
        ))
        .await?;
    }
    for i in &before.items {
        txn.execute_raw(stmt(
            "UPDATE insight_items SET theme_id = $2, pinned = $3, dismissed_at = $4
             WHERE id = $1 AND user_id = $5
               AND ($2::uuid IS NULL OR EXISTS (SELECT 1 FROM insight_themes WHERE id = $2))",
            vec![
                i.id.into(),
                i.theme.into(),
                i.pinned.into(),
                i.dismissed_at.into(),
                user.0.into(),
            ],
        ))
        .await?;
    }
    txn.execute_raw(stmt(
        "DELETE FROM insight_cannot_link WHERE curation = $1",
        vec![id.into()],
    ))
    .await?;
    let touched: Vec<Uuid> = curation
        .themes
        .iter()
        .chain(&before.created)
        .copied()
        .collect();
    settle(&txn, &touched).await?;
    let row = txn
        .query_one_raw(stmt(
            &format!(
                "UPDATE insight_curations SET undone_at = now(), undone_by = $2 WHERE id = $1
                 RETURNING {CURATION_COLUMNS}"
            ),
            vec![id.into(), actor.into()],
        ))
        .await?
        .ok_or_else(|| DbErr::Custom("the curation vanished".into()))?;
    let undone = curation_from(row)?;
    txn.commit().await?;
    Ok(undone)
}

/// What regrouping must keep, for the items it reads (indexes into `ids`): items pinned to
/// one theme together, items pinned to two themes apart, and the pairs moves set apart.
pub async fn constraints(
    db: &impl ConnectionTrait,
    user: UserId,
    ids: &[Uuid],
    pinned: &[Option<Uuid>],
) -> Result<insights::cluster::Constraints> {
    use std::collections::{BTreeMap, HashMap};
    let index: HashMap<Uuid, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let mut by_theme: BTreeMap<Uuid, Vec<usize>> = BTreeMap::new();
    for (i, theme) in pinned.iter().enumerate() {
        if let Some(t) = theme {
            by_theme.entry(*t).or_default().push(i);
        }
    }
    let must: Vec<Vec<usize>> = by_theme.values().cloned().collect();
    // One pair per two pinned themes: after the must-link merges, the pair's −∞ keeps the
    // two whole groups apart.
    let mut cannot = Vec::new();
    for (x, a) in must.iter().enumerate() {
        for b in &must[x + 1..] {
            cannot.push((a[0], b[0]));
        }
    }
    let rows = db
        .query_all_raw(stmt(
            "SELECT a, b FROM insight_cannot_link WHERE user_id = $1",
            vec![user.0.into()],
        ))
        .await?;
    for r in rows {
        let (a, b): (Uuid, Uuid) = (r.try_get("", "a")?, r.try_get("", "b")?);
        if let (Some(&a), Some(&b)) = (index.get(&a), index.get(&b)) {
            cannot.push((a, b));
        }
    }
    Ok(insights::cluster::Constraints { must, cannot })
}
