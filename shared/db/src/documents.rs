//! Documents: one row per user + source + external id. Upserting unchanged content is a
//! no-op; the `indexed_hash` column says whether the current content has been embedded.

use crate::Result;
use crate::entities::document;
use common::events::DocumentInput;
use common::{DocumentId, UserId};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, Statement};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upserted {
    Created,
    Updated,
    /// Same content as stored; `indexed` tells whether its chunks are in place, `changed`
    /// whether the stored content came from an update rather than the first insert.
    Unchanged {
        indexed: bool,
        changed: bool,
    },
}

pub async fn upsert(
    db: &DatabaseConnection,
    user: UserId,
    input: &DocumentInput,
) -> Result<(DocumentId, String, Upserted)> {
    let id = DocumentId::derive(user, &input.source, &input.external_id);
    let hash = input.content_hash();
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO documents
                 (id, user_id, source, kind, external_id, title, body, metadata, occurred_at, content_hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (user_id, source, external_id) DO UPDATE SET
                 kind = EXCLUDED.kind, title = EXCLUDED.title, body = EXCLUDED.body,
                 metadata = EXCLUDED.metadata, occurred_at = EXCLUDED.occurred_at,
                 content_hash = EXCLUDED.content_hash, updated_at = now()
             WHERE documents.content_hash IS DISTINCT FROM EXCLUDED.content_hash
             RETURNING (xmax = 0) AS created",
            [
                id.0.into(),
                user.0.into(),
                input.source.as_str().into(),
                input.kind.as_str().into(),
                input.external_id.clone().into(),
                input.title.clone().into(),
                input.body.clone().into(),
                input.metadata.clone().into(),
                input.occurred_at.map(|t| t.fixed_offset()).into(),
                hash.clone().into(),
            ],
        ))
        .await?;
    let outcome = match row {
        Some(r) if r.try_get::<bool>("", "created")? => Upserted::Created,
        Some(_) => Upserted::Updated,
        None => {
            let stored = document::Entity::find_by_id(id.0).one(db).await?;
            Upserted::Unchanged {
                indexed: stored
                    .as_ref()
                    .is_some_and(|d| d.indexed_hash.as_deref() == Some(hash.as_str())),
                changed: stored.is_some_and(|d| d.updated_at > d.created_at),
            }
        }
    };
    Ok((id, hash, outcome))
}

pub async fn get(db: &DatabaseConnection, id: DocumentId) -> Result<Option<document::Model>> {
    Ok(document::Entity::find_by_id(id.0).one(db).await?)
}

/// Where the user can open a document at its provider (Gmail thread, Calendar event, HubSpot
/// record, or an https link the source gave), when it is known. HubSpot record links need the
/// portal (the connection's account id).
pub fn link(doc: &document::Model, hubspot_portal: Option<&str>) -> Option<String> {
    link_to(&doc.source, &doc.kind, &doc.metadata, hubspot_portal)
}

/// [`link`] from a document's source, kind and metadata.
pub fn link_to(
    source: &str,
    kind: &str,
    m: &serde_json::Value,
    hubspot_portal: Option<&str>,
) -> Option<String> {
    match source {
        "gmail" => m["thread_id"]
            .as_str()
            .map(|t| format!("https://mail.google.com/mail/u/0/#all/{t}")),
        "calendar" => m["html_link"]
            .as_str()
            .filter(|u| u.starts_with("https://"))
            .map(str::to_owned),
        "hubspot" => {
            let portal = hubspot_portal?;
            let id = m["id"].as_str()?;
            let object = match kind {
                "contact" => "0-1",
                "company" => "0-2",
                "deal" => "0-3",
                _ => return None,
            };
            Some(format!(
                "https://app.hubspot.com/contacts/{portal}/record/{object}/{id}"
            ))
        }
        _ => m["link"]
            .as_str()
            .or(m["url"].as_str())
            .filter(|u| u.starts_with("https://"))
            .map(str::to_owned),
    }
}

/// Deletes a document and, through the foreign key, its chunks. `Some(id)` if it existed.
pub async fn delete(
    db: &DatabaseConnection,
    user: UserId,
    source: &common::ids::Source,
    external_id: &str,
) -> Result<Option<DocumentId>> {
    let id = DocumentId::derive(user, source, external_id);
    let result = db
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "DELETE FROM documents WHERE id = $1 AND user_id = $2",
            [id.0.into(), user.0.into()],
        ))
        .await?;
    Ok((result.rows_affected() > 0).then_some(id))
}

/// How many of the user's documents wait to be indexed, counted up to `cap` (the count only
/// decides whether the user is over their interactive share).
pub async fn unindexed(db: &DatabaseConnection, user: UserId, cap: u64) -> Result<u64> {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT count(*) AS n FROM (
                 SELECT 1 FROM documents
                 WHERE user_id = $1 AND indexed_hash IS DISTINCT FROM content_hash
                 LIMIT $2) waiting",
            [user.0.into(), (cap as i64).into()],
        ))
        .await?;
    Ok(row
        .map(|r| r.try_get::<i64>("", "n"))
        .transpose()?
        .unwrap_or(0) as u64)
}

/// What it takes to announce a document again, without its body.
#[derive(Debug, Clone)]
pub struct DocumentKey {
    pub id: uuid::Uuid,
    pub user_id: uuid::Uuid,
    pub source: String,
    pub kind: String,
    pub content_hash: String,
}

/// Which documents a walk visits: of one source, said (or stored) within a window.
#[derive(Debug, Clone, Default)]
pub struct KeyFilter {
    pub source: Option<String>,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub until: Option<chrono::DateTime<chrono::Utc>>,
}

/// Up to `limit` documents (of `user`, or everyone's) with ids after `after`, in id order:
/// one page of a walk over all of them (or those `filter` keeps).
pub async fn keys_after(
    db: &DatabaseConnection,
    user: Option<UserId>,
    after: uuid::Uuid,
    limit: u64,
    filter: &KeyFilter,
) -> Result<Vec<DocumentKey>> {
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT id, user_id, source, kind, content_hash FROM documents
             WHERE id > $1 AND ($2::uuid IS NULL OR user_id = $2)
               AND ($4::text IS NULL OR source = $4)
               AND ($5::timestamptz IS NULL OR coalesce(occurred_at, created_at) >= $5)
               AND ($6::timestamptz IS NULL OR coalesce(occurred_at, created_at) < $6)
             ORDER BY id
             LIMIT $3",
            [
                after.into(),
                user.map(|u| u.0).into(),
                (limit as i64).into(),
                filter.source.clone().into(),
                filter.since.into(),
                filter.until.into(),
            ],
        ))
        .await?;
    rows.iter().map(DocumentKey::from_row).collect()
}

impl DocumentKey {
    /// From a row with the columns `id`, `user_id`, `source`, `kind`, `content_hash`.
    pub fn from_row(r: &sea_orm::QueryResult) -> Result<Self> {
        Ok(DocumentKey {
            id: r.try_get("", "id")?,
            user_id: r.try_get("", "user_id")?,
            source: r.try_get("", "source")?,
            kind: r.try_get("", "kind")?,
            content_hash: r.try_get("", "content_hash")?,
        })
    }
}

/// `user`'s documents among `ids` (others' are never returned), in no particular order.
pub async fn many(
    db: &DatabaseConnection,
    user: UserId,
    ids: &[uuid::Uuid],
) -> Result<Vec<document::Model>> {
    use sea_orm::{ColumnTrait, QueryFilter};
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(document::Entity::find()
        .filter(document::Column::UserId.eq(user.0))
        .filter(document::Column::Id.is_in(ids.iter().copied()))
        .all(db)
        .await?)
}

/// `user`'s documents of `kind` whose external id is `key`, or whose body holds `key` as a
/// whole line value (`Email: sara@example.com`): a contact by HubSpot id or by address.
pub async fn find_by_key(
    db: &DatabaseConnection,
    user: UserId,
    kind: &str,
    key: &str,
    limit: u64,
) -> Result<Vec<document::Model>> {
    use sea_orm::{ColumnTrait, Condition, QueryFilter, QuerySelect};
    Ok(document::Entity::find()
        .filter(document::Column::UserId.eq(user.0))
        .filter(document::Column::Kind.eq(kind))
        .filter(
            Condition::any()
                .add(document::Column::ExternalId.eq(key))
                .add(document::Column::Body.contains(format!(": {key}"))),
        )
        .limit(limit)
        .all(db)
        .await?)
}

/// `user`'s HubSpot notes associated with the contact whose HubSpot id is `contact_id`,
/// newest first.
pub async fn notes_of_contact(
    db: &DatabaseConnection,
    user: UserId,
    contact_id: &str,
    limit: u64,
) -> Result<Vec<document::Model>> {
    use sea_orm::{ColumnTrait, QueryFilter, QueryOrder, QuerySelect, sea_query::Expr};
    Ok(document::Entity::find()
        .filter(document::Column::UserId.eq(user.0))
        .filter(document::Column::Kind.eq("note"))
        .filter(Expr::cust_with_values(
            "metadata->'associations'->'contacts' ? $1",
            [contact_id.to_owned()],
        ))
        .order_by_desc(document::Column::OccurredAt)
        .limit(limit)
        .all(db)
        .await?)
}

/// `user`'s calendar events that start between `from` and `to`, in time order.
pub async fn meetings_between(
    db: &DatabaseConnection,
    user: UserId,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<document::Model>> {
    use sea_orm::{ColumnTrait, QueryFilter, QueryOrder, QuerySelect};
    Ok(document::Entity::find()
        .filter(document::Column::UserId.eq(user.0))
        .filter(document::Column::Kind.is_in(["meeting", "event"]))
        .filter(document::Column::OccurredAt.gte(from.fixed_offset()))
        .filter(document::Column::OccurredAt.lt(to.fixed_offset()))
        .order_by_asc(document::Column::OccurredAt)
        .limit(200)
        .all(db)
        .await?)
}

/// The lifecycle stage of `user`'s HubSpot contact with this email address (lowercased), if
/// such a contact is stored: `Some("")` when it has none. Synced contacts keep HubSpot's
/// `properties`; contacts submitted through the API may carry `email` and `lifecycle` flat.
pub async fn contact_stage(
    db: &impl sea_orm::ConnectionTrait,
    user: UserId,
    email: &str,
) -> Result<Option<String>> {
    let row = db
        .query_one_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "SELECT coalesce(metadata->'properties'->>'lifecyclestage', metadata->>'lifecycle', '') AS stage
             FROM documents
             WHERE user_id = $1 AND source = 'hubspot' AND kind = 'contact'
               AND lower(coalesce(metadata->'properties'->>'email', metadata->>'email')) = $2
             LIMIT 1",
            [user.0.into(), email.to_lowercase().into()],
        ))
        .await?;
    Ok(row.map(|r| r.try_get::<String>("", "stage")).transpose()?)
}

/// A stored email of `user`'s that answers `message_id` (In-Reply-To or References) or sits in
/// `thread` and was received (not sent): what a wait for a reply looks for when it starts.
pub async fn reply_to(
    db: &impl sea_orm::ConnectionTrait,
    user: UserId,
    message_id: &str,
    thread: Option<&str>,
) -> Result<Option<document::Model>> {
    use sea_orm::FromQueryResult;
    let row = db
        .query_one_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "SELECT * FROM documents
             WHERE user_id = $1 AND source = 'gmail'
               AND NOT (metadata->'labels' ? 'SENT')
               AND (metadata->>'in_reply_to' = $2
                    OR position($2 in coalesce(metadata->>'references', '')) > 0
                    OR ($3::text IS NOT NULL AND metadata->>'thread_id' = $3))
             ORDER BY occurred_at LIMIT 1",
            [
                user.0.into(),
                message_id.into(),
                thread.map(str::to_owned).into(),
            ],
        ))
        .await?;
    Ok(row
        .map(|r| document::Model::from_query_result(&r, ""))
        .transpose()?)
}
