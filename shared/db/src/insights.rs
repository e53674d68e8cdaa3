//! Product intelligence in Postgres: each user's settings, what each message scored, the
//! items found and the themes they form. Items of a document are replaced as a whole, with
//! ids derived from the document and span, so a redelivery or replay yields the same rows.

use crate::Result;
use chrono::{DateTime, Utc};
use common::{DocumentId, UserId};
use pgvector::Vector;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, FromQueryResult, Statement,
    TransactionTrait, Value,
};
use serde::Serialize;
use uuid::Uuid;

fn stmt(sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Settings {
    pub enabled: bool,
    /// Sources to read (`slack`, `gmail`, `transcripts`...); empty: every source.
    pub sources: Vec<String>,
    /// Slack channels (id or name) and Gmail labels to read; empty: all of them.
    pub channels: Vec<String>,
    /// Tier 1's score (0–10) a message needs to go on to tier 2.
    pub min_score: i16,
    /// The team's product areas, each `Name` or `Name: word, word`; an item is filed under the
    /// area whose name or words its quote or title uses (or the one the model names).
    #[serde(default)]
    pub product_areas: Vec<String>,
    /// HubSpot company properties that hold the account's revenue (`annualrevenue`, a custom
    /// `arr`...), the first with a number counting.
    #[serde(default = "default_revenue_properties")]
    pub revenue_properties: Vec<String>,
    /// Company lifecycle stages or deal stages that mean the account churned.
    #[serde(default = "default_churn_stages")]
    pub churn_stages: Vec<String>,
    /// Similarity (0–1) an arriving item needs to join a theme; `None`: the deployment's.
    #[serde(default)]
    pub theme_join: Option<f32>,
    /// Similarity (0–1) at which regrouping joins groups; `None`: the deployment's.
    #[serde(default)]
    pub theme_regroup: Option<f32>,
    /// Tier 2's model: `None` the deployment's, `local` the extractive classifier (no model),
    /// else a model of the deployment's endpoint by name.
    #[serde(default)]
    pub model: Option<String>,
}

pub fn default_revenue_properties() -> Vec<String> {
    vec!["annualrevenue".into()]
}

pub fn default_churn_stages() -> Vec<String> {
    vec!["churned".into()]
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            enabled: false,
            sources: Vec::new(),
            channels: Vec::new(),
            min_score: 6,
            product_areas: Vec::new(),
            revenue_properties: default_revenue_properties(),
            churn_stages: default_churn_stages(),
            theme_join: None,
            theme_regroup: None,
            model: None,
        }
    }
}

/// The `model` setting that means no model: tier 2 extracts locally.
pub const LOCAL_MODEL: &str = "local";

const MAX_REVENUE_PROPERTIES: usize = 10;
const MAX_CHURN_STAGES: usize = 20;
const MAX_SOURCES: usize = 50;
const MAX_CHANNELS: usize = 500;
const MAX_CHANNEL_CHARS: usize = 200;
const MAX_AREAS: usize = 100;
const MAX_AREA_CHARS: usize = 500;

impl Settings {
    /// The grouping thresholds: the team's where set, else the deployment's. The band in which
    /// the model is asked stays below the join threshold.
    pub fn joining(&self, deployment: Joining) -> Joining {
        let join = self.theme_join.unwrap_or(deployment.join);
        Joining {
            join,
            ask: deployment.ask.min(join),
            regroup: self.theme_regroup.unwrap_or(deployment.regroup),
        }
    }

    /// Trims names and checks every field; the error names the first one that is wrong.
    pub fn validated(mut self) -> std::result::Result<Self, common::intake::FieldError> {
        use common::intake::FieldError;
        let trim = |v: &mut Vec<String>| v.iter_mut().for_each(|x| *x = x.trim().to_owned());
        trim(&mut self.channels);
        trim(&mut self.product_areas);
        trim(&mut self.churn_stages);
        if self.sources.len() > MAX_SOURCES {
            return Err(FieldError::new("sources", format!("at most {MAX_SOURCES}")));
        }
        for (i, s) in self.sources.iter().enumerate() {
            common::ids::Source::parse(s)
                .map_err(|r| FieldError::new(format!("sources[{i}]"), r))?;
        }
        let names = |field: &str, list: &[String], max: usize, chars: usize| {
            if list.len() > max {
                return Err(FieldError::new(field, format!("at most {max}")));
            }
            match list
                .iter()
                .position(|c| c.is_empty() || c.chars().count() > chars)
            {
                Some(i) => Err(FieldError::new(
                    format!("{field}[{i}]"),
                    format!("1 to {chars} characters"),
                )),
                None => Ok(()),
            }
        };
        names("channels", &self.channels, MAX_CHANNELS, MAX_CHANNEL_CHARS)?;
        if self.product_areas.len() > MAX_AREAS {
            return Err(FieldError::new(
                "product_areas",
                format!("at most {MAX_AREAS}"),
            ));
        }
        for (i, a) in self.product_areas.iter().enumerate() {
            let name = a.split_once(':').map_or(a.as_str(), |(n, _)| n);
            if name.trim().is_empty() || a.chars().count() > MAX_AREA_CHARS {
                return Err(FieldError::new(
                    format!("product_areas[{i}]"),
                    format!(
                        "a name, then optionally `: words`; at most {MAX_AREA_CHARS} characters"
                    ),
                ));
            }
        }
        if !(0..=10).contains(&self.min_score) {
            return Err(FieldError::new("min_score", "must be between 0 and 10"));
        }
        if self.revenue_properties.len() > MAX_REVENUE_PROPERTIES {
            return Err(FieldError::new(
                "revenue_properties",
                format!("at most {MAX_REVENUE_PROPERTIES}"),
            ));
        }
        for (i, p) in self.revenue_properties.iter().enumerate() {
            // A HubSpot property's internal name: it goes into the CRM API's query.
            let valid = (1..=100).contains(&p.len())
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !valid {
                return Err(FieldError::new(
                    format!("revenue_properties[{i}]"),
                    "a HubSpot property's internal name: 1 to 100 of a-z, 0-9 and _",
                ));
            }
        }
        names(
            "churn_stages",
            &self.churn_stages,
            MAX_CHURN_STAGES,
            MAX_CHANNEL_CHARS,
        )?;
        for (field, v) in [
            ("theme_join", self.theme_join),
            ("theme_regroup", self.theme_regroup),
        ] {
            if v.is_some_and(|v| !(v > 0.0 && v < 1.0)) {
                return Err(FieldError::new(
                    field,
                    "a similarity between 0 and 1 (exclusive)",
                ));
            }
        }
        if let Some(m) = &self.model {
            let valid = (1..=100).contains(&m.len())
                && m.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b));
            if !valid {
                return Err(FieldError::new(
                    "model",
                    "`local`, or a model name of 1 to 100 letters, digits and - _ . : /",
                ));
            }
        }
        Ok(self)
    }

    /// Whether the settings' model can be reached: a named model needs the deployment's model
    /// endpoint (`CHAT_PROVIDER`); `field` names the setting in the error.
    pub fn model_reachable(
        &self,
        config: &common::Config,
        field: &str,
    ) -> std::result::Result<(), common::intake::FieldError> {
        match self.model.as_deref() {
            Some(m)
                if m != LOCAL_MODEL
                    && config.chat_provider == common::config::ChatProvider::None =>
            {
                Err(common::intake::FieldError::new(
                    field,
                    "this deployment has no model endpoint (CHAT_PROVIDER); only `local` can be chosen",
                ))
            }
            _ => Ok(()),
        }
    }

    /// These settings with `patch`'s fields (a JSON object of setting names and values) in
    /// place of theirs, checked; the error names the setting.
    pub fn patched(
        &self,
        patch: &serde_json::Map<String, serde_json::Value>,
    ) -> std::result::Result<Self, common::intake::FieldError> {
        use common::intake::FieldError;
        let mut json = serde_json::to_value(self).expect("settings serialize");
        for (key, value) in patch {
            if json.get(key).is_none() {
                return Err(FieldError::new(
                    format!("settings.{key}"),
                    format!("not a setting; one of {}", SETTING_NAMES.join(", ")),
                ));
            }
            json[key] = value.clone();
            serde_json::from_value::<Settings>(json.clone())
                .map_err(|e| FieldError::new(format!("settings.{key}"), e.to_string()))?;
        }
        let merged: Settings = serde_json::from_value(json).expect("checked above");
        merged
            .validated()
            .map_err(|e| FieldError::new(format!("settings.{}", e.field), e.reason))
    }
}

/// The settings a preview can try.
pub const SETTING_NAMES: [&str; 10] = [
    "enabled",
    "sources",
    "channels",
    "min_score",
    "product_areas",
    "revenue_properties",
    "churn_stages",
    "theme_join",
    "theme_regroup",
    "model",
];

pub async fn settings(db: &impl ConnectionTrait, user: UserId) -> Result<Settings> {
    let row = db
        .query_one_raw(stmt(
            "SELECT enabled, sources, channels, min_score, product_areas, revenue_properties,
                    churn_stages, theme_join, theme_regroup, model
             FROM insight_settings WHERE user_id = $1",
            vec![user.0.into()],
        ))
        .await?;
    Ok(match row {
        Some(r) => Settings {
            enabled: r.try_get("", "enabled")?,
            sources: r.try_get("", "sources")?,
            channels: r.try_get("", "channels")?,
            min_score: r.try_get("", "min_score")?,
            product_areas: r.try_get("", "product_areas")?,
            revenue_properties: r.try_get("", "revenue_properties")?,
            churn_stages: r.try_get("", "churn_stages")?,
            theme_join: r.try_get("", "theme_join")?,
            theme_regroup: r.try_get("", "theme_regroup")?,
            model: r.try_get("", "model")?,
        },
        None => Settings::default(),
    })
}

/// Stores the settings; returns when they took effect (the database's clock), which the
/// backlog uses to tell what was stored before them.
pub async fn save_settings(
    db: &impl ConnectionTrait,
    user: UserId,
    s: &Settings,
) -> Result<DateTime<Utc>> {
    let row = db
        .query_one_raw(stmt(
            "INSERT INTO insight_settings (user_id, enabled, sources, channels, min_score, product_areas,
                                           revenue_properties, churn_stages, theme_join,
                                           theme_regroup, model)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (user_id) DO UPDATE SET enabled = $2, sources = $3, channels = $4,
               min_score = $5, product_areas = $6, revenue_properties = $7, churn_stages = $8,
               theme_join = $9, theme_regroup = $10, model = $11, updated_at = now()
             RETURNING updated_at",
            vec![
                user.0.into(),
                s.enabled.into(),
                s.sources.clone().into(),
                s.channels.clone().into(),
                s.min_score.into(),
                s.product_areas.clone().into(),
                s.revenue_properties.clone().into(),
                s.churn_stages.clone().into(),
                s.theme_join.into(),
                s.theme_regroup.into(),
                s.model.clone().into(),
            ],
        ))
        .await?
        .ok_or(crate::DbError::NotFound)?;
    Ok(row.try_get("", "updated_at")?)
}

/// The outcome for one version of one message.
#[derive(Debug, Clone)]
pub struct Outcome<'a> {
    pub document: DocumentId,
    pub content_hash: &'a str,
    pub source: &'a str,
    /// `skipped` (with `reason`), `below` (scored under the threshold) or `extracted`.
    pub status: &'a str,
    pub reason: Option<String>,
    pub score: Option<i16>,
    pub kinds: Vec<String>,
    pub items: i32,
    pub classifier: &'a str,
}

pub async fn record(db: &impl ConnectionTrait, user: UserId, o: &Outcome<'_>) -> Result<()> {
    db.execute_raw(stmt(
        "INSERT INTO insight_messages
           (user_id, document_id, content_hash, source, status, reason, score, kinds, items, classifier)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (user_id, document_id) DO UPDATE SET content_hash = $3, source = $4,
           status = $5, reason = $6, score = $7, kinds = $8, items = $9, classifier = $10,
           updated_at = now()",
        vec![
            user.0.into(),
            o.document.0.into(),
            o.content_hash.into(),
            o.source.into(),
            o.status.into(),
            o.reason.clone().into(),
            o.score.into(),
            o.kinds.clone().into(),
            o.items.into(),
            o.classifier.into(),
        ],
    ))
    .await?;
    Ok(())
}

/// Whether this version of the document was already looked at by this classifier.
pub async fn seen(
    db: &impl ConnectionTrait,
    user: UserId,
    document: DocumentId,
    content_hash: &str,
    classifier: &str,
) -> Result<bool> {
    let row = db
        .query_one_raw(stmt(
            "SELECT 1 AS one FROM insight_messages
             WHERE user_id = $1 AND document_id = $2 AND content_hash = $3 AND classifier = $4",
            vec![
                user.0.into(),
                document.0.into(),
                content_hash.into(),
                classifier.into(),
            ],
        ))
        .await?;
    Ok(row.is_some())
}

/// Who said something, resolved as far as the CRM allows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Customer {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The HubSpot contact's record id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub company_id: Option<String>,
    /// The account's open deals, their amount, lifecycle stage and revenue as they stood when
    /// the words were said.
    #[serde(default)]
    pub open_deals: i64,
    #[serde(default)]
    pub open_deal_amount: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_stage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revenue: Option<f64>,
}

/// Finds the HubSpot contact by email (first) or exact name, with its company (the associated
/// company record, else the contact's `company` property), and the account as it stood `at`
/// (when the words were said): from the company's recorded history, else (nothing recorded)
/// the contact's current open deals and lifecycle stage.
pub async fn resolve_customer(
    db: &impl ConnectionTrait,
    user: UserId,
    mut who: Customer,
    at: DateTime<Utc>,
    revenue_properties: &[String],
) -> Result<Customer> {
    let (email, name) = (
        who.email.as_deref().map(str::to_lowercase),
        who.name.as_deref().map(|n| n.trim().to_lowercase()),
    );
    if email.is_none() && name.is_none() {
        return Ok(who);
    }
    let row = db
        .query_one_raw(stmt(
            "WITH c AS (
               SELECT id, external_id, title, metadata FROM documents
               WHERE user_id = $1 AND source = 'hubspot' AND kind = 'contact'
                 AND (($2::text IS NOT NULL
                       AND lower(coalesce(metadata->'properties'->>'email', metadata->>'email')) = $2)
                   OR ($2::text IS NULL AND $3::text IS NOT NULL AND lower(title) = $3))
               ORDER BY updated_at DESC LIMIT 1)
             SELECT c.metadata->>'id' AS contact_id, c.title AS contact_name,
                    coalesce(c.metadata->'properties'->>'email', c.metadata->>'email') AS email,
                    co.title AS company, co.metadata->>'id' AS company_id,
                    nullif(c.metadata->'properties'->>'company', '') AS company_property,
                    nullif(c.metadata->'properties'->>'lifecyclestage', '') AS contact_stage,
                    (SELECT count(*) FROM documents d
                      WHERE d.user_id = $1 AND d.source = 'hubspot' AND d.kind = 'deal'
                        AND d.external_id IN (SELECT 'deal:' || jsonb_array_elements_text(
                              coalesce(c.metadata->'associations'->'deals', '[]')))
                        AND coalesce(d.metadata->'properties'->>'dealstage', '') NOT IN ('closedwon', 'closedlost')
                    ) AS open_deals,
                    (SELECT coalesce(sum(CASE WHEN d.metadata->'properties'->>'amount' ~ '^[0-9]+(\\.[0-9]+)?$'
                                              THEN (d.metadata->'properties'->>'amount')::float8 END), 0)
                       FROM documents d
                      WHERE d.user_id = $1 AND d.source = 'hubspot' AND d.kind = 'deal'
                        AND d.external_id IN (SELECT 'deal:' || jsonb_array_elements_text(
                              coalesce(c.metadata->'associations'->'deals', '[]')))
                        AND coalesce(d.metadata->'properties'->>'dealstage', '') NOT IN ('closedwon', 'closedlost')
                    ) AS open_amount
             FROM c
             LEFT JOIN documents co ON co.user_id = $1 AND co.source = 'hubspot' AND co.kind = 'company'
               AND co.external_id = 'company:' || (c.metadata->'associations'->'companies'->>0)",
            vec![user.0.into(), email.into(), name.into()],
        ))
        .await?;
    if let Some(r) = row {
        who.contact_id = r.try_get("", "contact_id")?;
        let contact_name: Option<String> = r.try_get("", "contact_name")?;
        who.name = who.name.or(contact_name);
        let email: Option<String> = r.try_get("", "email")?;
        who.email = who.email.or(email);
        let company: Option<String> = r.try_get("", "company")?;
        let property: Option<String> = r.try_get("", "company_property")?;
        who.company = company.or(property).or(who.company);
        who.company_id = r.try_get("", "company_id")?;
        who.open_deals = r.try_get("", "open_deals")?;
        who.open_deal_amount = r.try_get("", "open_amount")?;
        who.lifecycle_stage = r.try_get("", "contact_stage")?;
    }
    if let Some(company) = who.company_id.clone()
        && let Some(then) = crate::accounts::at(db, user, &company, at, revenue_properties).await?
    {
        who.open_deals = then.open_deals;
        who.open_deal_amount = then.open_deal_amount;
        who.lifecycle_stage = then.lifecycle_stage.or(who.lifecycle_stage);
        who.revenue = then.revenue;
    }
    Ok(who)
}

/// An item to store.
#[derive(Debug, Clone)]
pub struct NewItem {
    pub span_start: i32,
    pub span_end: i32,
    pub kind: String,
    pub title: String,
    pub description: String,
    pub quote: String,
    pub score: i16,
    pub customer: Customer,
    pub product_area: Option<String>,
    pub sentiment: String,
    pub urgency: String,
    pub embedding: Vec<f32>,
    pub occurred_at: DateTime<Utc>,
    /// A theme a model judged this item to belong to (its similarity in the uncertain band):
    /// the item joins it if it is still the closest theme and at least `Joining::ask` similar.
    pub confirmed: Option<Uuid>,
}

/// The stable id of the item at `span` of `document`.
pub fn item_id(user: UserId, document: DocumentId, start: i32, end: i32) -> Uuid {
    Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("insight-item:{user}:{document}:{start}:{end}").as_bytes(),
    )
}

/// When an item joins a theme: the cosine similarity of its vector to the centroid (the
/// mean of its members' vectors) of the closest theme reaches `join`, or reaches `ask` and a
/// model confirmed that theme for it (`NewItem::confirmed`). Otherwise the item starts a
/// theme. Themes are topics: a request and a complaint about the same thing share one, and
/// the theme's kind is its items' most common kind. `regroup` is the average similarity at
/// which the periodic regrouping of all items keeps two groups together.
#[derive(Debug, Clone, Copy)]
pub struct Joining {
    pub join: f32,
    pub ask: f32,
    pub regroup: f32,
}

/// The configuration's defaults.
impl Default for Joining {
    fn default() -> Self {
        Self {
            join: 0.55,
            ask: 0.45,
            regroup: 0.55,
        }
    }
}

/// What happened to one stored item.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    pub item: Uuid,
    pub theme: Uuid,
    /// The item did not exist before (a redelivery or replay of the same content places
    /// items that did).
    pub new_item: bool,
    pub new_theme: bool,
    pub similarity: Option<f32>,
}

/// The theme closest to `vector`, with its similarity, title and best quote: what a model is
/// shown when an item falls in the uncertain band.
pub async fn nearest_theme(
    db: &impl ConnectionTrait,
    user: UserId,
    vector: &[f32],
) -> Result<Option<(Uuid, f32, String, String)>> {
    let row = db
        .query_one_raw(stmt(
            "SELECT id, 1 - (centroid <=> $2) AS similarity, title, summary FROM insight_themes
             WHERE user_id = $1 ORDER BY centroid <=> $2 LIMIT 1",
            vec![user.0.into(), Vector::from(vector.to_vec()).into()],
        ))
        .await?;
    row.map(|r| {
        Ok((
            r.try_get("", "id")?,
            r.try_get::<f64>("", "similarity")? as f32,
            r.try_get("", "title")?,
            r.try_get("", "summary")?,
        ))
    })
    .transpose()
}

/// Replaces the document's items with `items`, each joining the closest theme at or above
/// `joining.join` or starting one; themes left empty are removed and the
/// counts, centroids and best quotes of the themes touched are recomputed. One user's
/// replacements run one at a time (an advisory lock), so two items of the same new theme
/// arriving together form one theme.
pub async fn replace_items(
    db: &DatabaseConnection,
    user: UserId,
    document: DocumentId,
    items: Vec<NewItem>,
    joining: Joining,
) -> Result<Vec<Placed>> {
    let txn = db.begin().await?;
    txn.execute_raw(stmt(
        "SELECT pg_advisory_xact_lock(hashtextextended('insights:' || $1::text, 0))",
        vec![user.0.to_string().into()],
    ))
    .await?;
    let old = txn
        .query_all_raw(stmt(
            "DELETE FROM insight_items WHERE user_id = $1 AND document_id = $2
             RETURNING id, theme_id, pinned, dismissed_at",
            vec![user.0.into(), document.0.into()],
        ))
        .await?;
    let mut touched: Vec<Uuid> = Vec::new();
    // What people decided about the items found again (same document and span): a pinned
    // item goes back to its theme and a dismissed one stays dismissed.
    let mut curated: std::collections::HashMap<Uuid, Curated> = Default::default();
    for r in &old {
        let id = r.try_get::<Uuid>("", "id")?;
        let theme = r.try_get::<Option<Uuid>>("", "theme_id")?;
        let dismissed: Option<DateTime<Utc>> = r.try_get("", "dismissed_at")?;
        let state = match (dismissed, theme) {
            (Some(at), _) => Curated::Dismissed(at),
            (None, Some(t)) if r.try_get::<bool>("", "pinned")? => Curated::Pinned(t),
            _ => Curated::No,
        };
        curated.insert(id, state);
        if let Some(t) = theme {
            touched.push(t);
        }
    }
    // Themes the removed items belonged to get their centroids back from what is left, so an
    // item placed again measures against the same theme without itself in it.
    refresh(&txn, &touched).await?;
    let mut placed = Vec::with_capacity(items.len());
    for item in items {
        let id = item_id(user, document, item.span_start, item.span_end);
        let vector = Vector::from(item.embedding.clone());
        let nearest = txn
            .query_one_raw(stmt(
                "SELECT id, 1 - (centroid <=> $2) AS similarity FROM insight_themes
                 WHERE user_id = $1 ORDER BY centroid <=> $2 LIMIT 1",
                vec![user.0.into(), vector.clone().into()],
            ))
            .await?;
        let nearest: Option<(Uuid, f64)> = nearest
            .map(|r| Ok::<_, sea_orm::DbErr>((r.try_get("", "id")?, r.try_get("", "similarity")?)))
            .transpose()?;
        let similarity = nearest.map(|(_, s)| s as f32);
        let mut state = curated.get(&id).cloned().unwrap_or(Curated::No);
        // What people curated elsewhere teaches this item: one like a quote they dismissed
        // is not feedback either, and one closer to a quote they placed by hand than to any
        // theme's centroid goes where they put it.
        let mut nearest = nearest;
        if matches!(state, Curated::No)
            && let Some(taught) = nearest_curated(&txn, user, document, &vector).await?
        {
            match taught {
                (None, s) if s >= DISMISSED_LIKE => {
                    metrics::counter!("insights_items_like_dismissed_total").increment(1);
                    continue;
                }
                (Some(t), s) if s as f32 >= joining.join && nearest.is_none_or(|(_, c)| s > c) => {
                    nearest = Some((t, s));
                    state = Curated::Taught(t);
                }
                _ => {}
            }
        }
        let (theme, new_theme) = match (&state, nearest) {
            (Curated::Dismissed(_), _) => (None, false),
            (Curated::Pinned(t), _) | (Curated::Taught(t), _) => (Some(*t), false),
            (Curated::No, nearest) => {
                let (t, new) = place(&txn, user, &item, &vector, nearest, joining).await?;
                (Some(t), new)
            }
        };
        txn.execute_raw(stmt(
            "INSERT INTO insight_items (id, user_id, document_id, span_start, span_end, kind, title,
               description, quote, score, customer, company, product_area, sentiment, urgency,
               theme_id, similarity, embedding, occurred_at, pinned, dismissed_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)",
            [
                vec![id.into(), user.0.into(), document.0.into()],
                item_values(&item),
                vec![
                theme.into(),
                similarity.into(),
                vector.into(),
                item.occurred_at.into(),
                matches!(state, Curated::Pinned(_)).into(),
                match state {
                    Curated::Dismissed(at) => Some(at),
                    _ => None,
                }
                .into(),
                ],
            ]
            .concat(),
        ))
        .await?;
        let Some(theme) = theme else {
            continue;
        };
        // Later items of this document measure against the theme with this one in it.
        refresh(&txn, &[theme]).await?;
        touched.push(theme);
        placed.push(Placed {
            item: id,
            theme,
            new_item: !curated.contains_key(&id),
            new_theme,
            similarity,
        });
    }
    refresh(&txn, &touched).await?;
    txn.execute_raw(stmt(
        "DELETE FROM insight_themes WHERE id = ANY($1) AND items = 0",
        vec![touched.into()],
    ))
    .await?;
    txn.commit().await?;
    Ok(placed)
}

/// An item's own columns, `span_start` to `urgency`, in the order the item tables hold them.
pub(crate) fn item_values(item: &NewItem) -> Vec<Value> {
    vec![
        item.span_start.into(),
        item.span_end.into(),
        item.kind.clone().into(),
        item.title.clone().into(),
        item.description.clone().into(),
        item.quote.clone().into(),
        item.score.into(),
        serde_json::to_value(&item.customer)
            .unwrap_or_default()
            .into(),
        item.customer.company.clone().into(),
        item.product_area.clone().into(),
        item.sentiment.clone().into(),
        item.urgency.clone().into(),
    ]
}

/// An item found again, as people left it (or placed as they placed one like it).
#[derive(Debug, Clone)]
enum Curated {
    No,
    Pinned(Uuid),
    Dismissed(DateTime<Utc>),
    /// Goes to this theme, where a person placed an item closer to it than any centroid.
    Taught(Uuid),
}

/// How similar to a dismissed quote an item must be to be dismissed with it: a paraphrase,
/// not a neighbour.
pub const DISMISSED_LIKE: f64 = 0.9;

/// The curated item (of another document) nearest `vector`: the theme a person placed it in
/// (`None`: dismissed), and its similarity. Curated items are few, found by their own index.
pub(crate) async fn nearest_curated(
    db: &impl ConnectionTrait,
    user: UserId,
    document: DocumentId,
    vector: &Vector,
) -> Result<Option<(Option<Uuid>, f64)>> {
    let row = db
        .query_one_raw(stmt(
            "SELECT CASE WHEN dismissed_at IS NULL THEN theme_id END AS theme_id,
                    1 - (embedding <=> $3) AS similarity
             FROM insight_items
             WHERE user_id = $1 AND document_id <> $2 AND (pinned OR dismissed_at IS NOT NULL)
             ORDER BY embedding <=> $3 LIMIT 1",
            vec![user.0.into(), document.0.into(), vector.clone().into()],
        ))
        .await?;
    row.map(|r| Ok((r.try_get("", "theme_id")?, r.try_get("", "similarity")?)))
        .transpose()
}

/// The theme a new item joins (the nearest, when similar enough) or starts.
async fn place(
    txn: &impl ConnectionTrait,
    user: UserId,
    item: &NewItem,
    vector: &Vector,
    nearest: Option<(Uuid, f64)>,
    joining: Joining,
) -> Result<(Uuid, bool)> {
    Ok(match nearest {
        Some((t, s)) if s as f32 >= joining.join => (t, false),
        Some((t, s)) if s as f32 >= joining.ask && item.confirmed == Some(t) => (t, false),
        _ => {
            let t = Uuid::new_v4();
            txn.execute_raw(stmt(
                    "INSERT INTO insight_themes (id, user_id, title, summary, kind, centroid, first_seen, last_seen)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
                    vec![
                        t.into(),
                        user.0.into(),
                        item.title.clone().into(),
                        item.quote.clone().into(),
                        item.kind.clone().into(),
                        vector.clone().into(),
                        item.occurred_at.into(),
                    ],
                ))
                .await?;
            (t, true)
        }
    })
}

/// Recomputes counts, centroid, first and last seen, and the best quote of `themes` from
/// their items. A theme with no items keeps its centroid (an item placed again finds it)
/// and is removed by the caller if it stays empty.
pub(crate) async fn refresh(db: &impl ConnectionTrait, themes: &[Uuid]) -> Result<()> {
    if themes.is_empty() {
        return Ok(());
    }
    db.execute_raw(stmt(
        "UPDATE insight_themes t SET
           items = s.items, accounts = s.accounts, kind = coalesce(s.kind, t.kind),
           centroid = coalesce(s.centroid, t.centroid),
           first_seen = coalesce(s.first_seen, t.first_seen),
           last_seen = coalesce(s.last_seen, t.last_seen),
           summary = coalesce(s.best, t.summary),
           updated_at = now()
         FROM (
           SELECT th.id,
                  count(i.id)::int AS items,
                  count(DISTINCT coalesce(i.company, i.customer->>'email', i.customer->>'name'))::int AS accounts,
                  mode() WITHIN GROUP (ORDER BY i.kind) AS kind,
                  avg(i.embedding) AS centroid,
                  min(i.occurred_at) AS first_seen,
                  max(i.occurred_at) AS last_seen,
                  (array_agg(i.quote ORDER BY i.score DESC, i.occurred_at DESC)
                     FILTER (WHERE i.id IS NOT NULL))[1] AS best
           FROM insight_themes th LEFT JOIN insight_items i ON i.theme_id = th.id
           WHERE th.id = ANY($1)
           GROUP BY th.id) s
         WHERE t.id = s.id",
        vec![themes.to_vec().into()],
    ))
    .await?;
    Ok(())
}

#[derive(Debug, Clone, FromQueryResult, Serialize)]
pub struct Theme {
    pub id: Uuid,
    pub title: String,
    pub summary: String,
    pub kind: String,
    pub items: i32,
    pub accounts: i32,
    /// The open deals of its distinct accounts, each account counted once (as recorded with
    /// its latest item, when it was said).
    pub open_deal_amount: f64,
    /// The same accounts' open deals now.
    pub open_deal_amount_now: f64,
    /// Its accounts' revenue (the team's revenue property) when they said it, each once.
    pub revenue: f64,
    /// The same accounts' revenue now.
    pub revenue_now: f64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

/// Filters shared by the theme and item lists.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub kind: Option<String>,
    pub source: Option<String>,
    pub company: Option<String>,
    pub product_area: Option<String>,
    pub theme: Option<Uuid>,
    pub document: Option<DocumentId>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// The account's lifecycle stage when the words were said.
    pub lifecycle: Option<String>,
}

/// The conditions of a `Filter` on items `i` of documents `d`, with its values as `$2`–`$10`
/// (`Filter::values`).
const FILTER: &str = "($2::text IS NULL OR i.kind = $2)
    AND ($3::text IS NULL OR d.source = $3)
    AND ($4::text IS NULL OR lower(i.company) = lower($4))
    AND ($5::text IS NULL OR lower(i.product_area) = lower($5))
    AND ($6::uuid IS NULL OR i.theme_id = $6)
    AND ($7::uuid IS NULL OR i.document_id = $7)
    AND ($8::timestamptz IS NULL OR i.occurred_at >= $8)
    AND ($9::timestamptz IS NULL OR i.occurred_at < $9)
    AND ($10::text IS NULL OR lower(i.customer->>'lifecycle_stage') = lower($10))
    AND i.dismissed_at IS NULL";

impl Filter {
    /// `$1` the user, then the values `FILTER` reads.
    fn values(&self, user: UserId) -> Vec<Value> {
        vec![
            user.0.into(),
            self.kind.clone().into(),
            self.source.clone().into(),
            self.company.clone().into(),
            self.product_area.clone().into(),
            self.theme.into(),
            self.document.map(|d| d.0).into(),
            self.since.into(),
            self.until.into(),
            self.lifecycle.clone().into(),
        ]
    }
}

/// How themes sort: by `mentions` (items), distinct `accounts`, `revenue` or `open_deals` of
/// its accounts when they spoke, `revenue_now` or `open_deals_now`, or `recent` (last seen).
pub const THEME_SORTS: [&str; 7] = [
    "mentions",
    "accounts",
    "revenue",
    "revenue_now",
    "open_deals",
    "open_deals_now",
    "recent",
];

/// Themes with items within `filter`, sorted by one of `THEME_SORTS`, with at least
/// `min_accounts` distinct accounts. Counts are of the items within the filter.
pub async fn themes(
    db: &impl ConnectionTrait,
    user: UserId,
    filter: &Filter,
    sort: &str,
    min_accounts: i32,
    limit: u64,
) -> Result<Vec<Theme>> {
    let order = match sort {
        "accounts" => "accounts DESC, items DESC, t.id",
        "revenue" => "revenue DESC, items DESC, t.id",
        "revenue_now" => "revenue_now DESC, items DESC, t.id",
        "open_deals" => "open_deal_amount DESC, items DESC, t.id",
        "open_deals_now" => "open_deal_amount_now DESC, items DESC, t.id",
        "recent" => "last_seen DESC, t.id",
        _ => "items DESC, last_seen DESC, t.id",
    };
    let number = |path: &str| {
        format!(
            "CASE WHEN jsonb_typeof(i.customer->'{path}') = 'number'
                  THEN (i.customer->>'{path}')::float8 ELSE 0 END"
        )
    };
    let (amount, revenue) = (number("open_deal_amount"), number("revenue"));
    let revenue_now = revenue_at("$1", "a.company_id", "now()", "r.properties");
    let sql = format!(
        "WITH f AS (
           SELECT i.id, i.theme_id, i.occurred_at,
                  {ACCOUNT} AS account, i.customer->>'company_id' AS company_id,
                  {amount} AS amount, {revenue} AS revenue
           FROM insight_items i JOIN documents d ON d.id = i.document_id
           WHERE i.user_id = $1 AND i.theme_id IS NOT NULL AND {FILTER}),
         a AS (
           SELECT DISTINCT ON (theme_id, account) theme_id, company_id, amount, revenue FROM f
           WHERE account IS NOT NULL ORDER BY theme_id, account, occurred_at DESC),
         r AS (
           SELECT coalesce((SELECT revenue_properties FROM insight_settings WHERE user_id = $1),
                           '{{annualrevenue}}') AS properties),
         n AS (
           SELECT a.company_id, acc.open_deal_amount AS amount_now, {revenue_now} AS revenue_now
           FROM (SELECT DISTINCT company_id FROM a WHERE company_id IS NOT NULL) a, r,
                LATERAL crm_account_at($1, a.company_id, now()) acc),
         totals AS (
           SELECT a.theme_id, sum(a.amount) AS amount, sum(a.revenue) AS revenue,
                  coalesce(sum(n.amount_now), 0) AS amount_now,
                  coalesce(sum(n.revenue_now), 0) AS revenue_now
           FROM a LEFT JOIN n ON n.company_id = a.company_id GROUP BY a.theme_id)
         SELECT t.id, t.title, t.summary, t.kind,
                count(f.id)::int AS items, count(DISTINCT f.account)::int AS accounts,
                coalesce(max(x.amount), 0)::float8 AS open_deal_amount,
                coalesce(max(x.amount_now), 0)::float8 AS open_deal_amount_now,
                coalesce(max(x.revenue), 0)::float8 AS revenue,
                coalesce(max(x.revenue_now), 0)::float8 AS revenue_now,
                min(f.occurred_at) AS first_seen, max(f.occurred_at) AS last_seen
         FROM insight_themes t JOIN f ON f.theme_id = t.id
              LEFT JOIN totals x ON x.theme_id = t.id
         WHERE t.user_id = $1
         GROUP BY t.id
         HAVING count(DISTINCT f.account) >= $12
         ORDER BY {order}
         LIMIT $11"
    );
    let mut values = filter.values(user);
    values.push((limit as i64).into());
    values.push(min_accounts.into());
    Ok(Theme::find_by_statement(stmt(&sql, values)).all(db).await?)
}

/// SQL for company `company`'s revenue as of `at`: the first of the properties `properties`
/// (a text[]) holding a number (each argument an SQL expression).
pub fn revenue_at(user: &str, company: &str, at: &str, properties: &str) -> String {
    format!(
        "(SELECT x.v::float8 FROM unnest({properties}) WITH ORDINALITY AS p(name, k),
            LATERAL (SELECT crm_value_at({user}, 'company', {company}, p.name, {at}) AS v) x
          WHERE x.v ~ '^-?[0-9]+(\\.[0-9]+)?$' ORDER BY p.k LIMIT 1)"
    )
}

pub async fn theme(db: &impl ConnectionTrait, user: UserId, id: Uuid) -> Result<Option<Theme>> {
    let filter = Filter {
        theme: Some(id),
        ..Filter::default()
    };
    Ok(themes(db, user, &filter, "mentions", 0, 1).await?.pop())
}

/// Whether the theme exists and is the user's.
pub async fn owns_theme(db: &impl ConnectionTrait, user: UserId, id: Uuid) -> Result<bool> {
    Ok(db
        .query_one_raw(stmt(
            "SELECT 1 AS one FROM insight_themes WHERE id = $1 AND user_id = $2",
            vec![id.into(), user.0.into()],
        ))
        .await?
        .is_some())
}

/// A theme's week announced as trending.
#[derive(Debug, Clone, PartialEq)]
pub struct Trending {
    pub theme: Uuid,
    pub week: chrono::NaiveDate,
    pub items: i64,
    pub baseline: f64,
    pub p_value: f64,
}

/// Whether the theme's week was announced as trending already.
pub async fn trending_announced(
    db: &impl ConnectionTrait,
    theme: Uuid,
    week: chrono::NaiveDate,
) -> Result<bool> {
    Ok(db
        .query_one_raw(stmt(
            "SELECT 1 AS one FROM insight_trending WHERE theme_id = $1 AND week = $2",
            vec![theme.into(), week.into()],
        ))
        .await?
        .is_some())
}

/// Records that the theme's week was announced (after the announcement is published: a crash
/// in between announces it again under the same message id, which JetStream drops).
pub async fn record_trending(db: &impl ConnectionTrait, user: UserId, t: &Trending) -> Result<()> {
    db.execute_raw(stmt(
        "INSERT INTO insight_trending (theme_id, week, user_id, items, baseline, p_value)
         SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM insight_themes WHERE id = $1)
         ON CONFLICT DO NOTHING",
        vec![
            t.theme.into(),
            t.week.into(),
            user.0.into(),
            (t.items as i32).into(),
            t.baseline.into(),
            t.p_value.into(),
        ],
    ))
    .await?;
    Ok(())
}

/// The account an item `i` speaks for: its company, else the customer's email or name.
pub(crate) const ACCOUNT: &str = "coalesce(i.company, i.customer->>'email', i.customer->>'name')";

/// One week (Monday 00:00 UTC onwards) of a theme.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Week {
    pub week: chrono::NaiveDate,
    pub items: i64,
    /// Distinct accounts among that week's items.
    pub accounts: i64,
}

/// The theme's items and distinct accounts per week, for the `weeks` weeks up to and
/// including the one holding `until`, oldest first, weeks without items included.
pub async fn weekly(
    db: &impl ConnectionTrait,
    user: UserId,
    theme: Uuid,
    weeks: u32,
    until: DateTime<Utc>,
) -> Result<Vec<Week>> {
    let sql = format!(
        // The window's items through the theme's (theme, time) index, counted per week, then
        // laid over the weeks: a join of weeks to items would read all the theme's items.
        "WITH w AS (
           SELECT generate_series(
                    date_trunc('week', $3::timestamptz AT TIME ZONE 'UTC')
                      - make_interval(weeks => $4 - 1),
                    date_trunc('week', $3::timestamptz AT TIME ZONE 'UTC'),
                    interval '1 week') AS week),
         c AS (
           SELECT date_trunc('week', i.occurred_at AT TIME ZONE 'UTC') AS week,
                  count(*) AS items, count(DISTINCT {ACCOUNT}) AS accounts
           FROM insight_items i
           WHERE i.theme_id = $2 AND i.user_id = $1 AND i.dismissed_at IS NULL
             AND i.occurred_at >= (date_trunc('week', $3::timestamptz AT TIME ZONE 'UTC')
                                   - make_interval(weeks => $4 - 1)) AT TIME ZONE 'UTC'
             AND i.occurred_at <= $3
           GROUP BY 1)
         SELECT w.week::date AS week, coalesce(c.items, 0) AS items,
                coalesce(c.accounts, 0) AS accounts
         FROM w LEFT JOIN c ON c.week = w.week ORDER BY w.week"
    );
    let rows = db
        .query_all_raw(stmt(
            &sql,
            vec![
                user.0.into(),
                theme.into(),
                until.into(),
                (weeks as i32).into(),
            ],
        ))
        .await?;
    rows.into_iter()
        .map(|r| {
            Ok(Week {
                week: r.try_get("", "week")?,
                items: r.try_get("", "items")?,
                accounts: r.try_get("", "accounts")?,
            })
        })
        .collect()
}

#[derive(Debug, Clone, FromQueryResult, Serialize)]
pub struct Item {
    pub id: Uuid,
    pub theme_id: Option<Uuid>,
    pub kind: String,
    pub title: String,
    pub description: String,
    pub quote: String,
    pub score: i16,
    pub customer: serde_json::Value,
    pub company: Option<String>,
    pub product_area: Option<String>,
    pub sentiment: String,
    pub urgency: String,
    pub document_id: Uuid,
    pub source: String,
    pub external_id: String,
    pub document_title: String,
    pub span_start: i32,
    pub span_end: i32,
    pub occurred_at: DateTime<Utc>,
    /// The account as it stands now (with a HubSpot company): beside `customer`'s values
    /// from when it was said.
    pub lifecycle_now: Option<String>,
    pub open_deals_now: Option<i32>,
    pub open_deal_amount_now: Option<f64>,
    pub revenue_now: Option<f64>,
}

impl Item {
    pub fn account_now(&self) -> Option<crate::accounts::Account> {
        Some(crate::accounts::Account {
            lifecycle_stage: self.lifecycle_now.clone(),
            open_deals: i64::from(self.open_deals_now?),
            open_deal_amount: self.open_deal_amount_now.unwrap_or(0.0),
            revenue: self.revenue_now,
        })
    }
}

pub async fn items(
    db: &impl ConnectionTrait,
    user: UserId,
    filter: &Filter,
    limit: u64,
) -> Result<Vec<Item>> {
    query_items(db, user, filter, None, None, limit).await
}

/// Items closest in meaning to `vector` (or, without one, whose quote or title matches
/// `query`'s words), within `filter`, most relevant first.
pub async fn search_items(
    db: &impl ConnectionTrait,
    user: UserId,
    query: &str,
    vector: Option<Vec<f32>>,
    filter: &Filter,
    limit: u64,
) -> Result<Vec<Item>> {
    query_items(db, user, filter, Some(query), vector, limit).await
}

/// Items within `filter`: newest first, or by `vector`, or by `query`'s words.
async fn query_items(
    db: &impl ConnectionTrait,
    user: UserId,
    filter: &Filter,
    query: Option<&str>,
    vector: Option<Vec<f32>>,
    limit: u64,
) -> Result<Vec<Item>> {
    let text = "to_tsvector('english', i.title || ' ' || i.quote)";
    let (matches, order) = match (&vector, query) {
        (Some(_), _) => ("TRUE".to_owned(), "i.embedding <=> $12".to_owned()),
        (None, Some(_)) => (
            format!("{text} @@ plainto_tsquery('english', $13)"),
            format!("ts_rank({text}, plainto_tsquery('english', $13)) DESC"),
        ),
        (None, None) => (
            "TRUE".to_owned(),
            "i.occurred_at DESC, i.span_start".to_owned(),
        ),
    };
    let revenue_now = revenue_at(
        "$1",
        "(i.customer->>'company_id')",
        "now()",
        "coalesce((SELECT revenue_properties FROM insight_settings WHERE user_id = $1), '{annualrevenue}')",
    );
    let sql = format!(
        "SELECT i.id, i.theme_id, i.kind, i.title, i.description, i.quote, i.score, i.customer,
                i.company, i.product_area, i.sentiment, i.urgency, i.document_id, d.source,
                d.external_id, d.title AS document_title, i.span_start, i.span_end, i.occurred_at,
                n.lifecycle_stage AS lifecycle_now, n.open_deals AS open_deals_now,
                n.open_deal_amount AS open_deal_amount_now, n.revenue AS revenue_now
         FROM insight_items i JOIN documents d ON d.id = i.document_id
         LEFT JOIN LATERAL (
           SELECT acc.lifecycle_stage, acc.open_deals, acc.open_deal_amount, {revenue_now} AS revenue
           FROM crm_account_at($1, i.customer->>'company_id', now()) acc
           WHERE i.customer->>'company_id' IS NOT NULL) n ON TRUE
         WHERE i.user_id = $1 AND {FILTER}
           AND ($12::vector IS NULL OR TRUE) AND ($13::text IS NULL OR TRUE)
           AND {matches}
         ORDER BY {order}
         LIMIT $11"
    );
    let mut values = filter.values(user);
    values.push((limit as i64).into());
    values.push(vector.map(Vector::from).into());
    values.push(query.map(str::to_owned).into());
    Ok(Item::find_by_statement(stmt(&sql, values)).all(db).await?)
}

/// An item with its theme and its document's kind and metadata (for its link), as exported.
#[derive(Debug, Clone, FromQueryResult)]
pub struct ExportRow {
    pub id: Uuid,
    pub theme_id: Uuid,
    pub theme_title: String,
    pub theme_kind: String,
    pub kind: String,
    pub title: String,
    pub quote: String,
    pub customer: serde_json::Value,
    pub company: Option<String>,
    pub product_area: Option<String>,
    pub sentiment: String,
    pub urgency: String,
    pub document_id: Uuid,
    pub source: String,
    pub document_kind: String,
    pub document_title: String,
    pub document_metadata: serde_json::Value,
    pub occurred_at: DateTime<Utc>,
}

/// The items within `filter` with their themes, a theme's items together (the most
/// mentioned theme first, its newest item first), at most `limit`.
pub async fn export(
    db: &impl ConnectionTrait,
    user: UserId,
    filter: &Filter,
    limit: u64,
) -> Result<Vec<ExportRow>> {
    let sql = format!(
        "SELECT i.id, i.theme_id, t.title AS theme_title, t.kind AS theme_kind, i.kind, i.title,
                i.quote, i.customer, i.company, i.product_area, i.sentiment, i.urgency,
                i.document_id, d.source, d.kind AS document_kind, d.title AS document_title,
                d.metadata AS document_metadata, i.occurred_at
         FROM insight_items i JOIN documents d ON d.id = i.document_id
              JOIN insight_themes t ON t.id = i.theme_id
         WHERE i.user_id = $1 AND {FILTER}
         ORDER BY t.items DESC, t.id, i.occurred_at DESC, i.id
         LIMIT $11"
    );
    let mut values = filter.values(user);
    values.push((limit as i64).into());
    Ok(ExportRow::find_by_statement(stmt(&sql, values))
        .all(db)
        .await?)
}

/// Per source and outcome, how many messages the pipeline has looked at.
#[derive(Debug, Clone, FromQueryResult, Serialize)]
pub struct Progress {
    pub source: String,
    pub status: String,
    pub reason: Option<String>,
    pub messages: i64,
    pub items: i64,
}

pub async fn progress(db: &impl ConnectionTrait, user: UserId) -> Result<Vec<Progress>> {
    Ok(Progress::find_by_statement(stmt(
        "SELECT source, status, reason, count(*) AS messages, coalesce(sum(items), 0)::bigint AS items
         FROM insight_messages WHERE user_id = $1
         GROUP BY source, status, reason ORDER BY source, status, reason",
        vec![user.0.into()],
    ))
    .all(db)
    .await?)
}

/// The newest items a regrouping reads at most; older items keep their themes (the
/// clustering holds a similarity matrix of this many squared, halved: 72 MB).
pub const REGROUP_MAX_ITEMS: i64 = 6_000;

/// What a regrouping changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Regrouped {
    /// Items read.
    pub items: usize,
    /// Items now in a different theme.
    pub moved: usize,
    pub themes_before: usize,
    pub themes_after: usize,
    /// Themes it started: id, kind and title.
    pub created: Vec<(Uuid, String, String)>,
    /// Themes left with no items, removed.
    pub removed: usize,
}

/// Regroups the user's items when 10% more (at least 20) exist than at the last regrouping,
/// or a tenth fewer.
pub async fn regroup_if_due(
    db: &DatabaseConnection,
    user: UserId,
    joining: Joining,
) -> Result<Option<Regrouped>> {
    let row = db
        .query_one_raw(stmt(
            "SELECT (SELECT count(*) FROM insight_items WHERE user_id = $1 AND dismissed_at IS NULL) AS now,
                    coalesce((SELECT items_then FROM insight_grouping WHERE user_id = $1), 0)::bigint AS then",
            vec![user.0.into()],
        ))
        .await?;
    let Some(row) = row else { return Ok(None) };
    let (now, then): (i64, i64) = (row.try_get("", "now")?, row.try_get("", "then")?);
    let due = now >= then + (then / 10).max(20) || now < then - then / 10;
    if !due {
        return Ok(None);
    }
    Ok(Some(regroup(db, user, joining.regroup).await?))
}

/// Which existing theme each group of a new grouping takes: the group holding a theme's
/// pinned items is that theme; then, largest overlaps first (ties by theme id, so the same
/// items regroup the same way), each group takes the theme it shares the most items with,
/// each theme going to one group. `current`: each item's theme now; `pins`: its pinned theme.
pub(crate) fn take_themes(
    groups: &[usize],
    current: &[Option<Uuid>],
    pins: &[Option<Uuid>],
) -> std::collections::HashMap<usize, Uuid> {
    use std::collections::{HashMap, HashSet};
    let mut overlap: HashMap<(usize, Uuid), usize> = HashMap::new();
    for (theme, &g) in current.iter().zip(groups) {
        if let Some(t) = theme {
            *overlap.entry((g, *t)).or_default() += 1;
        }
    }
    let mut pairs: Vec<((usize, Uuid), usize)> = overlap.into_iter().collect();
    pairs.sort_by(|a, b| {
        b.1.cmp(&a.1)
            .then(a.0.1.cmp(&b.0.1))
            .then(a.0.0.cmp(&b.0.0))
    });
    let mut theme_of: HashMap<usize, Uuid> = HashMap::new();
    let mut taken: HashSet<Uuid> = HashSet::new();
    for (g, pin) in groups.iter().zip(pins) {
        if let Some(t) = pin
            && !theme_of.contains_key(g)
            && taken.insert(*t)
        {
            theme_of.insert(*g, *t);
        }
    }
    for ((g, t), _) in pairs {
        if !theme_of.contains_key(&g) && taken.insert(t) {
            theme_of.insert(g, t);
        }
    }
    theme_of
}

/// The member of a group nearest its mean: the item a theme it starts is titled by.
pub(crate) fn central(members: &[usize], vectors: &[Vec<f32>]) -> usize {
    let dim = vectors[members[0]].len();
    let mut mean = vec![0f32; dim];
    for &i in members {
        for (m, x) in mean.iter_mut().zip(&vectors[i]) {
            *m += x;
        }
    }
    *members
        .iter()
        .max_by(|&&a, &&b| {
            insights::classify::dot(&vectors[a], &mean)
                .total_cmp(&insights::classify::dot(&vectors[b], &mean))
        })
        .expect("a group has members")
}

/// Groups the user's items (the newest `REGROUP_MAX_ITEMS`) again all at once by average link
/// at `threshold` (`insights::cluster`). Theme ids stay where they can: each group takes the
/// existing theme it shares the most items with (each theme goes to one group, largest
/// overlaps first) and keeps its title; a group with no theme left starts one, titled by its
/// most central item. Counts, centroids and quotes are recomputed and each item's similarity
/// is to its theme's new centroid.
pub async fn regroup(db: &DatabaseConnection, user: UserId, threshold: f32) -> Result<Regrouped> {
    use std::collections::HashSet;
    // One regrouping at a time per process: each holds up to 72 MB of similarities and a core.
    static REGROUPING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
    let _turn = REGROUPING
        .acquire()
        .await
        .map_err(|e| DbErr::Custom(format!("regrouping stopped: {e}")))?;
    let txn = db.begin().await?;
    txn.execute_raw(stmt(
        "SELECT pg_advisory_xact_lock(hashtextextended('insights:' || $1::text, 0))",
        vec![user.0.to_string().into()],
    ))
    .await?;
    let rows = txn
        .query_all_raw(stmt(
            "SELECT id, theme_id, pinned, kind, title, quote, embedding, occurred_at FROM insight_items
             WHERE user_id = $1 AND dismissed_at IS NULL ORDER BY occurred_at DESC, id LIMIT $2",
            vec![user.0.into(), REGROUP_MAX_ITEMS.into()],
        ))
        .await?;
    struct Row {
        id: Uuid,
        theme: Option<Uuid>,
        pinned: bool,
        kind: String,
        title: String,
        quote: String,
        occurred_at: DateTime<Utc>,
    }
    let mut items = Vec::with_capacity(rows.len());
    let mut vectors = Vec::with_capacity(rows.len());
    for r in &rows {
        items.push(Row {
            id: r.try_get("", "id")?,
            theme: r.try_get("", "theme_id")?,
            pinned: r.try_get("", "pinned")?,
            kind: r.try_get("", "kind")?,
            title: r.try_get("", "title")?,
            quote: r.try_get("", "quote")?,
            occurred_at: r.try_get("", "occurred_at")?,
        });
        vectors.push(r.try_get::<Vector>("", "embedding")?.to_vec());
    }
    // What people decided stays: pinned items with their theme, moved items apart.
    let ids: Vec<Uuid> = items.iter().map(|i| i.id).collect();
    let pins: Vec<Option<Uuid>> = items.iter().map(|i| i.theme.filter(|_| i.pinned)).collect();
    let constraints = crate::curation::constraints(&txn, user, &ids, &pins).await?;
    let (groups, vectors) = tokio::task::spawn_blocking(move || {
        (
            insights::cluster::average_link_with(&vectors, threshold, &constraints),
            vectors,
        )
    })
    .await
    .map_err(|e| DbErr::Custom(format!("regrouping stopped: {e}")))?;
    let before: HashSet<Uuid> = items.iter().filter_map(|i| i.theme).collect();
    let current: Vec<Option<Uuid>> = items.iter().map(|i| i.theme).collect();
    let mut theme_of = take_themes(&groups, &current, &pins);
    let mut out = Regrouped {
        items: items.len(),
        themes_before: before.len(),
        ..Regrouped::default()
    };
    let group_count = groups.iter().max().map_or(0, |m| m + 1);
    for g in 0..group_count {
        if theme_of.contains_key(&g) {
            continue;
        }
        let members: Vec<usize> = (0..items.len()).filter(|&i| groups[i] == g).collect();
        let central = central(&members, &vectors);
        let (id, first) = (Uuid::new_v4(), &items[central]);
        txn.execute_raw(stmt(
            "INSERT INTO insight_themes (id, user_id, title, summary, kind, centroid, first_seen, last_seen)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
            vec![
                id.into(),
                user.0.into(),
                first.title.clone().into(),
                first.quote.clone().into(),
                first.kind.clone().into(),
                Vector::from(vectors[central].clone()).into(),
                first.occurred_at.into(),
            ],
        ))
        .await?;
        theme_of.insert(g, id);
        out.created
            .push((id, first.kind.clone(), first.title.clone()));
    }
    let themes: Vec<Uuid> = groups.iter().map(|g| theme_of[g]).collect();
    out.moved = items
        .iter()
        .zip(&themes)
        .filter(|(i, t)| i.theme != Some(**t))
        .count();
    txn.execute_raw(stmt(
        "UPDATE insight_items i SET theme_id = u.theme
         FROM unnest($1::uuid[], $2::uuid[]) AS u(id, theme)
         WHERE i.id = u.id AND i.theme_id IS DISTINCT FROM u.theme",
        vec![ids.clone().into(), themes.clone().into()],
    ))
    .await?;
    let touched: Vec<Uuid> = before
        .iter()
        .copied()
        .chain(themes.iter().copied())
        .collect();
    let touched: Vec<Uuid> = touched
        .into_iter()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    refresh(&txn, &touched).await?;
    out.removed = txn
        .execute_raw(stmt(
            "DELETE FROM insight_themes WHERE id = ANY($1) AND items = 0",
            vec![touched.into()],
        ))
        .await?
        .rows_affected() as usize;
    txn.execute_raw(stmt(
        "UPDATE insight_items i SET similarity = 1 - (i.embedding <=> t.centroid)
         FROM insight_themes t WHERE t.id = i.theme_id AND i.id = ANY($1)",
        vec![ids.into()],
    ))
    .await?;
    txn.execute_raw(stmt(
        "INSERT INTO insight_grouping (user_id, items_then, themes_then, regrouped_at)
         VALUES ($1, (SELECT count(*) FROM insight_items WHERE user_id = $1),
                 (SELECT count(*) FROM insight_themes WHERE user_id = $1), now())
         ON CONFLICT (user_id) DO UPDATE SET items_then = EXCLUDED.items_then,
           themes_then = EXCLUDED.themes_then, regrouped_at = now()",
        vec![user.0.into()],
    ))
    .await?;
    txn.commit().await?;
    out.themes_after = theme_of.len();
    Ok(out)
}

/// Records that hold no one's words (CRM contacts, companies and deals, calendar events):
/// never read for feedback, whatever the settings.
pub const RECORD_KINDS: [&str; 5] = ["contact", "company", "deal", "event", "meeting"];

/// The documents (`d`) settings cover: `$1` user, `$2` after this id, `$3` sources, `$4`
/// channels (lower case, no `#`), `$5` whether it is on, `$6` the record kinds never read.
macro_rules! covered {
    () => {
        "
    FROM documents d
    WHERE d.user_id = $1 AND d.id > $2
      AND (d.source = 'feedback' OR ($5 AND d.kind <> ALL($6)
        AND (cardinality($3::text[]) = 0 OR d.source = ANY($3)
             OR ('transcript' = ANY($3) AND d.kind = 'transcript'))
        AND (cardinality($4::text[]) = 0 OR d.source NOT IN ('slack', 'gmail')
             OR (d.source = 'slack' AND (lower(d.metadata->>'channel') = ANY($4)
                                         OR lower(d.metadata->>'channel_name') = ANY($4)))
             OR (d.source = 'gmail' AND EXISTS (
                   SELECT 1 FROM jsonb_array_elements_text(CASE WHEN jsonb_typeof(d.metadata->'labels') = 'array'
                                                             THEN d.metadata->'labels' ELSE '[]' END) l
                   WHERE lower(l) = ANY($4))))))"
    };
}
pub(crate) use covered;

/// Documents within the user's settings (or imported feedback) whose current version the
/// pipeline has no outcome for: `$1` user, `$2` after this id, `$3` sources, `$4` channels
/// (lower case, no `#`), `$5` whether it is on.
const UNREAD: &str = concat!(
    covered!(),
    "
      AND NOT EXISTS (SELECT 1 FROM insight_messages m
                      WHERE m.user_id = d.user_id AND m.document_id = d.id
                        AND m.content_hash = d.content_hash)"
);

pub(crate) fn unread_values(user: UserId, after: Uuid, settings: &Settings) -> Vec<Value> {
    let channels: Vec<String> = settings
        .channels
        .iter()
        .map(|c| c.trim_start_matches('#').to_lowercase())
        .collect();
    vec![
        user.0.into(),
        after.into(),
        settings.sources.clone().into(),
        channels.into(),
        settings.enabled.into(),
        RECORD_KINDS.map(str::to_owned).to_vec().into(),
    ]
}

/// The next `limit` documents (by id, after `after`) waiting to be read that were stored
/// (or last changed) before `before`: what turning product intelligence on (or widening it)
/// leaves to read of what was stored before. Later documents are read by their own events.
pub async fn unread(
    db: &impl ConnectionTrait,
    user: UserId,
    settings: &Settings,
    after: Uuid,
    before: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<crate::documents::DocumentKey>> {
    let mut values = unread_values(user, after, settings);
    values.push((limit as i64).into());
    values.push(before.into());
    let rows = db
        .query_all_raw(stmt(
            &format!(
                "SELECT d.id, d.user_id, d.source, d.kind, d.content_hash {UNREAD}
                   AND d.updated_at < $8 ORDER BY d.id LIMIT $7"
            ),
            values,
        ))
        .await?;
    rows.iter()
        .map(crate::documents::DocumentKey::from_row)
        .collect()
}

/// Per source, how many documents wait to be read.
pub async fn waiting(
    db: &impl ConnectionTrait,
    user: UserId,
    settings: &Settings,
) -> Result<Vec<(String, i64)>> {
    let rows = db
        .query_all_raw(stmt(
            &format!("SELECT d.source, count(*) AS n {UNREAD} GROUP BY d.source ORDER BY d.source"),
            unread_values(user, Uuid::nil(), settings),
        ))
        .await?;
    rows.into_iter()
        .map(|r| Ok((r.try_get("", "source")?, r.try_get("", "n")?)))
        .collect()
}
