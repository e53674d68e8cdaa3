//! Product intelligence: the user's settings (which sources the pipeline reads), the themes
//! and items it found, its progress, and feedback imported without a connector (JSON or
//! CSV rows), which is stored as `feedback` documents and always processed.

use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody, parse_json};
use crate::routes::ingest::AcceptedDocument;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use common::events::DocumentInput;
use common::ids::Source;
use common::intake::{self, FieldError};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/insights/settings",
            get(get_settings).put(put_settings),
        )
        .route("/api/insights/themes", get(list_themes))
        .route("/api/insights/themes/{id}", get(get_theme))
        .route("/api/insights/themes/{id}/trend", get(theme_trend))
        .route("/api/insights/digest", get(digest))
        .route("/api/insights/churned", get(churned))
        .route("/api/insights/items", get(list_items))
        .route("/api/insights/progress", get(progress))
        .route("/api/insights/feedback", post(import_feedback))
}

/// Which messages product intelligence reads. Imported feedback is always read.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InsightSettings {
    pub enabled: bool,
    /// Sources to read (`slack`, `gmail`, `transcripts`, or `transcript` for every recorder);
    /// empty: all.
    #[serde(default)]
    pub sources: Vec<String>,
    /// Slack channels (id or name) and Gmail labels to read; empty: all of them.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Tier 1's relevance score (0–10) a message needs to be extracted from; default 6.
    #[serde(default = "default_min_score")]
    pub min_score: i16,
    /// Your product areas, each `Name` or `Name: word, word` (e.g. `Billing: invoice,
    /// payment`); an item is filed under the area whose name or words it uses, or the one
    /// the model names among these.
    #[serde(default)]
    pub product_areas: Vec<String>,
    /// HubSpot company properties holding an account's revenue (`annualrevenue`, a custom
    /// `arr`...), the first with a number counting; default `["annualrevenue"]`. Read from
    /// the next sync of each company.
    #[serde(default = "db::insights::default_revenue_properties")]
    pub revenue_properties: Vec<String>,
    /// Company lifecycle stages or deal stages meaning the account churned; default
    /// `["churned"]`.
    #[serde(default = "db::insights::default_churn_stages")]
    pub churn_stages: Vec<String>,
    /// Similarity (0–1) an arriving item needs to join a theme; absent: the deployment's
    /// `INSIGHTS_THEME_JOIN`. Try a change with a preview first (`/api/insights/previews`).
    #[serde(default)]
    pub theme_join: Option<f32>,
    /// Similarity (0–1) at which regrouping joins groups; absent: the deployment's
    /// `INSIGHTS_THEME_REGROUP`.
    #[serde(default)]
    pub theme_regroup: Option<f32>,
    /// Tier 2's model: absent, the deployment's `CHAT_MODEL`; `local`, the extractive classifier
    /// (no model); else a model of the deployment's endpoint by name.
    #[serde(default)]
    pub model: Option<String>,
}

fn default_min_score() -> i16 {
    6
}

impl InsightSettings {
    fn validate(self) -> Result<db::insights::Settings, FieldError> {
        db::insights::Settings {
            enabled: self.enabled,
            sources: self.sources,
            channels: self.channels,
            min_score: self.min_score,
            product_areas: self.product_areas,
            revenue_properties: self.revenue_properties,
            churn_stages: self.churn_stages,
            theme_join: self.theme_join,
            theme_regroup: self.theme_regroup,
            model: self.model,
        }
        .validated()
    }
}

impl From<db::insights::Settings> for InsightSettings {
    fn from(s: db::insights::Settings) -> Self {
        Self {
            enabled: s.enabled,
            sources: s.sources,
            channels: s.channels,
            min_score: s.min_score,
            product_areas: s.product_areas,
            revenue_properties: s.revenue_properties,
            churn_stages: s.churn_stages,
            theme_join: s.theme_join,
            theme_regroup: s.theme_regroup,
            model: s.model,
        }
    }
}

#[utoipa::path(get, path = "/api/insights/settings", tag = "insights",
    security(("bearer" = []), ("session" = [])),
    responses((status = 200, description = "Your settings (off until turned on)", body = InsightSettings)))]
pub async fn get_settings(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
) -> Result<Json<InsightSettings>, ApiError> {
    Ok(Json(db::insights::settings(&state.db, user).await?.into()))
}

#[utoipa::path(put, path = "/api/insights/settings", tag = "insights", request_body = InsightSettings,
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "Stored; messages stored from now on are read accordingly, and those stored before that it now covers are queued to be read (on the bulk lane)", body = InsightSettings),
        (status = 400, description = "Not JSON, or not the expected shape", body = ErrorBody),
        (status = 422, description = "A field is invalid; `field` names it", body = ErrorBody),
        (status = 503, description = "Stored, but the reading of what was stored before could not be queued: send again", body = ErrorBody),
    ))]
pub async fn put_settings(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    body: Bytes,
) -> Result<Json<InsightSettings>, ApiError> {
    let request: InsightSettings = parse_json(&body)?;
    let settings = request.validate().map_err(ApiError::Invalid)?;
    settings
        .model_reachable(&state.config, "model")
        .map_err(ApiError::Invalid)?;
    let saved_at = db::insights::save_settings(&state.db, user, &settings).await?;
    // What was stored before (a first sync, a source newly covered) is read too: the pipeline
    // pages through it. Answered once JetStream holds the request.
    if settings.enabled {
        let run = Uuid::new_v4().to_string();
        state
            .bus
            .publish(&common::events::insights_backlog(
                user,
                &run,
                Uuid::nil(),
                saved_at,
            ))
            .await
            .map_err(ApiError::Unavailable)?;
    }
    Ok(Json(settings.into()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ThemeParams {
    /// `feature_request`, `bug`, `pain_point`, `praise` or `question`.
    pub kind: Option<String>,
    /// Only items from this source (`slack`, `gmail`, `feedback`...).
    pub source: Option<String>,
    /// Only items from customers of this company.
    pub company: Option<String>,
    /// Only items filed under this product area.
    pub product_area: Option<String>,
    /// Only items said at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only items said before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only items from accounts at this lifecycle stage when they said it (`customer`,
    /// `renewal`...).
    pub lifecycle: Option<String>,
    /// Only themes raised by at least this many distinct accounts.
    pub min_accounts: Option<i32>,
    /// `mentions` (default), `accounts`, `revenue` or `open_deals` of its accounts when they
    /// said it, `revenue_now` or `open_deals_now`, or `recent`.
    pub sort: Option<String>,
    /// 1-500, default 100.
    pub limit: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ThemeView {
    pub id: Uuid,
    pub title: String,
    /// Its best quote.
    pub summary: String,
    pub kind: String,
    /// Items (mentions) within the filter.
    pub items: i32,
    /// Distinct accounts (companies, or customers without one) within the filter.
    pub accounts: i32,
    /// The open-deal amount of those accounts when they said it, each counted once.
    pub open_deal_amount: f64,
    /// The same accounts' open-deal amount now.
    pub open_deal_amount_now: f64,
    /// Those accounts' revenue (your revenue property) when they said it, each counted once.
    pub revenue: f64,
    /// The same accounts' revenue now.
    pub revenue_now: f64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

impl From<db::insights::Theme> for ThemeView {
    fn from(t: db::insights::Theme) -> Self {
        Self {
            id: t.id,
            title: t.title,
            summary: t.summary,
            kind: t.kind,
            items: t.items,
            accounts: t.accounts,
            open_deal_amount: t.open_deal_amount,
            open_deal_amount_now: t.open_deal_amount_now,
            revenue: t.revenue,
            revenue_now: t.revenue_now,
            first_seen: t.first_seen,
            last_seen: t.last_seen,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Themes {
    pub themes: Vec<ThemeView>,
}

pub(crate) fn kind_param(kind: Option<String>) -> Result<Option<String>, ApiError> {
    match kind {
        Some(k) if insights::Kind::parse(&k).is_none() => Err(ApiError::Invalid(FieldError::new(
            "kind",
            "one of feature_request, bug, pain_point, praise, question",
        ))),
        k => Ok(k),
    }
}

#[utoipa::path(get, path = "/api/insights/themes", tag = "insights", params(ThemeParams),
    security(("bearer" = []), ("session" = [])),
    responses((status = 200, description = "Your themes with their counts within the filter", body = Themes),
        (status = 422, description = "A parameter is invalid; `field` names it", body = ErrorBody)))]
pub async fn list_themes(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Query(p): Query<ThemeParams>,
) -> Result<Json<Themes>, ApiError> {
    let limit = super::list_limit(p.limit)?;
    let sort = p.sort.unwrap_or_else(|| "mentions".into());
    if !db::insights::THEME_SORTS.contains(&sort.as_str()) {
        return Err(ApiError::Invalid(FieldError::new(
            "sort",
            format!("one of {}", db::insights::THEME_SORTS.join(", ")),
        )));
    }
    let min_accounts = p.min_accounts.unwrap_or(0);
    if min_accounts < 0 {
        return Err(ApiError::Invalid(FieldError::new(
            "min_accounts",
            "must not be negative",
        )));
    }
    let filter = db::insights::Filter {
        kind: kind_param(p.kind)?,
        source: p.source,
        company: p.company,
        product_area: p.product_area,
        since: p.since,
        until: p.until,
        lifecycle: p.lifecycle,
        ..Default::default()
    };
    let themes = db::insights::themes(&state.db, user, &filter, &sort, min_accounts, limit).await?;
    Ok(Json(Themes {
        themes: themes.into_iter().map(ThemeView::from).collect(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ItemView {
    pub id: Uuid,
    pub theme_id: Option<Uuid>,
    pub kind: String,
    pub title: String,
    pub description: String,
    /// Word for word from the source: `source_text[span_start..span_end]` (bytes).
    pub quote: String,
    /// Tier 1's relevance score, 0–10.
    pub score: i16,
    /// Who said it: name, email, HubSpot contact and company, and the account as it stood
    /// when it was said (`open_deals`, `open_deal_amount`, `lifecycle_stage`, `revenue`).
    #[schema(value_type = Object)]
    pub customer: serde_json::Value,
    /// The same account as it stands now (items of a HubSpot company).
    pub account_now: Option<db::accounts::Account>,
    pub company: Option<String>,
    pub product_area: Option<String>,
    pub sentiment: String,
    pub urgency: String,
    pub document_id: Uuid,
    pub source: String,
    /// The source's own id for the message (Slack `channel:ts`, Gmail message id...).
    pub external_id: String,
    pub document_title: String,
    pub span_start: i32,
    pub span_end: i32,
    pub occurred_at: DateTime<Utc>,
}

impl From<db::insights::Item> for ItemView {
    fn from(i: db::insights::Item) -> Self {
        Self {
            account_now: i.account_now(),
            id: i.id,
            theme_id: i.theme_id,
            kind: i.kind,
            title: i.title,
            description: i.description,
            quote: i.quote,
            score: i.score,
            customer: i.customer,
            company: i.company,
            product_area: i.product_area,
            sentiment: i.sentiment,
            urgency: i.urgency,
            document_id: i.document_id,
            source: i.source,
            external_id: i.external_id,
            document_title: i.document_title,
            span_start: i.span_start,
            span_end: i.span_end,
            occurred_at: i.occurred_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ThemeDetail {
    pub theme: ThemeView,
    /// Its items, newest first.
    pub items: Vec<ItemView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ThemeItemParams {
    /// 1-500, default 100.
    pub limit: Option<u64>,
}

#[utoipa::path(get, path = "/api/insights/themes/{id}", tag = "insights", params(("id" = Uuid, Path), ThemeItemParams),
    security(("bearer" = []), ("session" = [])),
    responses((status = 200, description = "The theme and its items", body = ThemeDetail),
        (status = 404, description = "No such theme of yours", body = ErrorBody)))]
pub async fn get_theme(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<Uuid>,
    Query(p): Query<ThemeItemParams>,
) -> Result<Json<ThemeDetail>, ApiError> {
    let limit = super::list_limit(p.limit)?;
    let theme = db::insights::theme(&state.db, user, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such theme".into()))?;
    let filter = db::insights::Filter {
        theme: Some(id),
        ..Default::default()
    };
    let items = db::insights::items(&state.db, user, &filter, limit).await?;
    Ok(Json(ThemeDetail {
        theme: theme.into(),
        items: items.into_iter().map(ItemView::from).collect(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TrendParams {
    /// How many weeks, 3-104, default 12.
    pub weeks: Option<u32>,
    /// The last week is the one holding this time (default now).
    pub until: Option<DateTime<Utc>>,
}

/// A theme over time, week by week (weeks start Monday 00:00 UTC).
#[derive(Debug, Serialize, ToSchema)]
pub struct ThemeTrend {
    pub theme_id: Uuid,
    /// Oldest first, weeks without items included. The last week is the one holding `until`,
    /// so it is usually still going.
    pub weeks: Vec<WeekCount>,
    /// The last complete week (the one before the last) against the complete weeks before it.
    pub change: TrendChange,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WeekCount {
    /// The Monday the week starts.
    pub week: chrono::NaiveDate,
    pub items: i64,
    /// Distinct accounts among the week's items.
    pub accounts: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TrendChange {
    pub week: chrono::NaiveDate,
    pub items: i64,
    pub accounts: i64,
    /// How many weeks before it the means are over (up to 4).
    pub trailing_weeks: usize,
    pub trailing_items: f64,
    pub trailing_accounts: f64,
    /// `items` over `trailing_items`, less one (0.5: half again as many); `null` when the
    /// trailing weeks had no items.
    pub items_change: Option<f64>,
}

/// Weeks the change is measured against.
const TRAILING_WEEKS: usize = 4;

fn trend_change(weeks: &[WeekCount]) -> TrendChange {
    // The last week is still going; the one before it is the last complete one.
    let last = weeks.len() - 2;
    let trailing = &weeks[last.saturating_sub(TRAILING_WEEKS)..last];
    let mean = |f: fn(&WeekCount) -> i64| {
        trailing.iter().map(f).sum::<i64>() as f64 / trailing.len() as f64
    };
    let (trailing_items, trailing_accounts) = (mean(|w| w.items), mean(|w| w.accounts));
    TrendChange {
        week: weeks[last].week,
        items: weeks[last].items,
        accounts: weeks[last].accounts,
        trailing_weeks: trailing.len(),
        trailing_items,
        trailing_accounts,
        items_change: (trailing_items > 0.0)
            .then(|| weeks[last].items as f64 / trailing_items - 1.0),
    }
}

#[utoipa::path(get, path = "/api/insights/themes/{id}/trend", tag = "insights", params(("id" = Uuid, Path), TrendParams),
    security(("bearer" = []), ("session" = [])),
    responses((status = 200, description = "The theme's items and accounts per week", body = ThemeTrend),
        (status = 404, description = "No such theme of yours", body = ErrorBody),
        (status = 422, description = "`weeks` out of range", body = ErrorBody)))]
pub async fn theme_trend(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<Uuid>,
    Query(p): Query<TrendParams>,
) -> Result<Json<ThemeTrend>, ApiError> {
    let weeks = p.weeks.unwrap_or(12);
    if !(3..=104).contains(&weeks) {
        return Err(ApiError::Invalid(FieldError::new(
            "weeks",
            "must be between 3 and 104",
        )));
    }
    if !db::insights::owns_theme(&state.db, user, id).await? {
        return Err(ApiError::NotFound("no such theme".into()));
    }
    let until = p.until.unwrap_or_else(Utc::now);
    let weeks: Vec<WeekCount> = db::insights::weekly(&state.db, user, id, weeks, until)
        .await?
        .into_iter()
        .map(|w| WeekCount {
            week: w.week,
            items: w.items,
            accounts: w.accounts,
        })
        .collect();
    Ok(Json(ThemeTrend {
        theme_id: id,
        change: trend_change(&weeks),
        weeks,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DigestParams {
    /// Any day of the week wanted (weeks start Monday, UTC); default the last complete week.
    pub week: Option<chrono::NaiveDate>,
}

/// The week's new and rising themes with their quotes: what the weekly notification says.
#[utoipa::path(get, path = "/api/insights/digest", tag = "insights", params(DigestParams),
    security(("bearer" = []), ("session" = [])),
    responses((status = 200, description = "The week's digest", body = db::digest::Digest),
        (status = 400, description = "`week` is not a date (YYYY-MM-DD)", body = ErrorBody)))]
pub async fn digest(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Query(p): Query<DigestParams>,
) -> Result<Json<db::digest::Digest>, ApiError> {
    let week = p.week.map_or_else(
        || db::digest::last_complete_week(Utc::now()),
        db::digest::week_of,
    );
    Ok(Json(db::digest::digest(&state.db, user, week).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChurnParams {
    /// How many days before each churn to look, 1-730, default 90.
    pub days: Option<i32>,
}

/// A theme as accounts that later churned raised it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChurnTheme {
    pub theme_id: Uuid,
    pub title: String,
    pub kind: String,
    pub items: usize,
    /// Distinct churned accounts that raised it.
    pub accounts: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BeforeChurn {
    pub days: i32,
    /// The lifecycle or deal stages that count as churn (your settings' `churn_stages`).
    pub churn_stages: Vec<String>,
    /// Accounts that churned, with when and how.
    pub accounts: Vec<db::accounts::Churned>,
    /// What they raised in the days before, the most accounts first.
    pub themes: Vec<ChurnTheme>,
    /// Their items, newest first.
    pub items: Vec<db::accounts::BeforeChurn>,
}

/// What accounts that later churned asked for in the days before they did.
#[utoipa::path(get, path = "/api/insights/churned", tag = "insights", params(ChurnParams),
    security(("bearer" = []), ("session" = [])),
    responses((status = 200, description = "Churned accounts and what they raised before", body = BeforeChurn),
        (status = 422, description = "`days` out of range", body = ErrorBody)))]
pub async fn churned(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Query(p): Query<ChurnParams>,
) -> Result<Json<BeforeChurn>, ApiError> {
    let days = p.days.unwrap_or(90);
    if !(1..=730).contains(&days) {
        return Err(ApiError::Invalid(FieldError::new(
            "days",
            "must be between 1 and 730",
        )));
    }
    let settings = db::insights::settings(&state.db, user).await?;
    let accounts = db::accounts::churned(&state.db, user, &settings.churn_stages).await?;
    let items = db::accounts::said_before_churn(&state.db, user, &accounts, days).await?;
    let mut themes: Vec<(ChurnTheme, std::collections::HashSet<&str>)> = Vec::new();
    for i in &items {
        let at = match themes.iter().position(|(t, _)| t.theme_id == i.theme_id) {
            Some(at) => at,
            None => {
                themes.push((
                    ChurnTheme {
                        theme_id: i.theme_id,
                        title: i.theme_title.clone(),
                        kind: i.kind.clone(),
                        items: 0,
                        accounts: 0,
                    },
                    Default::default(),
                ));
                themes.len() - 1
            }
        };
        let (theme, seen) = &mut themes[at];
        theme.items += 1;
        seen.insert(&i.company_id);
        theme.accounts = seen.len();
    }
    let mut themes: Vec<ChurnTheme> = themes.into_iter().map(|(t, _)| t).collect();
    themes.sort_by_key(|t| std::cmp::Reverse((t.accounts, t.items)));
    Ok(Json(BeforeChurn {
        days,
        churn_stages: settings.churn_stages,
        accounts,
        themes,
        items,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ItemParams {
    pub theme: Option<Uuid>,
    pub kind: Option<String>,
    pub document: Option<Uuid>,
    pub source: Option<String>,
    pub company: Option<String>,
    pub product_area: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// The account's lifecycle stage when the words were said.
    pub lifecycle: Option<String>,
    /// 1-500, default 100.
    pub limit: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Items {
    pub items: Vec<ItemView>,
}

#[utoipa::path(get, path = "/api/insights/items", tag = "insights", params(ItemParams),
    security(("bearer" = []), ("session" = [])),
    responses((status = 200, description = "Your items, newest first", body = Items),
        (status = 422, description = "A parameter is invalid; `field` names it", body = ErrorBody)))]
pub async fn list_items(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Query(p): Query<ItemParams>,
) -> Result<Json<Items>, ApiError> {
    let limit = super::list_limit(p.limit)?;
    let filter = db::insights::Filter {
        kind: kind_param(p.kind)?,
        source: p.source,
        company: p.company,
        product_area: p.product_area,
        theme: p.theme,
        document: p.document.map(common::DocumentId),
        since: p.since,
        until: p.until,
        lifecycle: p.lifecycle,
    };
    let items = db::insights::items(&state.db, user, &filter, limit).await?;
    Ok(Json(Items {
        items: items.into_iter().map(ItemView::from).collect(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProgressRow {
    pub source: String,
    /// `extracted`, `below` (scored under the threshold) or `skipped`.
    pub status: String,
    /// Why messages were skipped (`too_large: ...`).
    pub reason: Option<String>,
    pub messages: i64,
    pub items: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WaitingRow {
    pub source: String,
    /// Stored documents within your settings the pipeline has not read yet.
    pub messages: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Progress {
    pub progress: Vec<ProgressRow>,
    /// Per source, what waits to be read.
    pub waiting: Vec<WaitingRow>,
}

#[utoipa::path(get, path = "/api/insights/progress", tag = "insights",
    security(("bearer" = []), ("session" = [])),
    responses((status = 200, description = "Messages read per source and outcome", body = Progress)))]
pub async fn progress(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
) -> Result<Json<Progress>, ApiError> {
    let rows = db::insights::progress(&state.db, user).await?;
    let settings = db::insights::settings(&state.db, user).await?;
    let waiting = db::insights::waiting(&state.db, user, &settings).await?;
    Ok(Json(Progress {
        waiting: waiting
            .into_iter()
            .map(|(source, messages)| WaitingRow { source, messages })
            .collect(),
        progress: rows
            .into_iter()
            .map(|r| ProgressRow {
                source: r.source,
                status: r.status,
                reason: r.reason,
                messages: r.messages,
                items: r.items,
            })
            .collect(),
    }))
}

/// One piece of feedback known to be feedback (a survey answer, a ticket, a row).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackRow {
    pub text: String,
    /// Your id for it: the same id again updates it.
    pub external_id: String,
    pub customer_email: Option<String>,
    pub customer_name: Option<String>,
    pub company: Option<String>,
    pub occurred_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackImport {
    pub rows: Vec<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RefusedRow {
    /// 1-based: the row's place among the rows (for CSV, the line after the header).
    pub row: usize,
    pub field: String,
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FeedbackResponse {
    pub accepted: Vec<AcceptedDocument>,
    pub refused: Vec<RefusedRow>,
}

/// Most rows in one import.
pub const MAX_FEEDBACK_ROWS: usize = 5_000;
const TITLE_CHARS: usize = 80;

impl FeedbackRow {
    fn into_input(self) -> Result<DocumentInput, FieldError> {
        let text = self.text.trim().to_owned();
        if text.is_empty() {
            return Err(FieldError::new("text", "must not be empty"));
        }
        if self.external_id.trim().is_empty() {
            return Err(FieldError::new("external_id", "must not be empty"));
        }
        let email = match self.customer_email.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(e) => {
                let m = common::email::mailbox(e)
                    .map_err(|_| FieldError::new("customer_email", "not an email address"))?;
                Some(common::email::address(&m))
            }
        };
        let clean = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        let title: String = text.chars().take(TITLE_CHARS).collect();
        Ok(DocumentInput {
            source: Source::parse("feedback").expect("valid source"),
            kind: Source::parse("feedback").expect("valid kind"),
            external_id: self.external_id.trim().to_owned(),
            title,
            body: text,
            metadata: serde_json::json!({
                "customer_email": email,
                "customer_name": clean(self.customer_name),
                "company": clean(self.company),
            }),
            occurred_at: self.occurred_at,
        })
    }
}

/// Rows from CSV with a header naming the columns (`text`, `external_id`, and optionally
/// `customer_email`, `customer_name`, `company`, `occurred_at`); each row as JSON or the
/// reason it is unreadable.
fn csv_rows(body: &[u8]) -> Result<Vec<Result<serde_json::Value, FieldError>>, ApiError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::Headers)
        .from_reader(body);
    let headers = reader
        .headers()
        .map_err(|e| ApiError::BadRequest(format!("the CSV header does not read: {e}")))?
        .clone();
    for required in ["text", "external_id"] {
        if !headers.iter().any(|h| h == required) {
            return Err(ApiError::Invalid(FieldError::new(
                required,
                "the CSV header must name this column",
            )));
        }
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        rows.push(match record {
            Ok(r) => {
                let mut row = serde_json::Map::new();
                for (h, v) in headers.iter().zip(r.iter()) {
                    if !v.is_empty() {
                        row.insert(h.to_owned(), serde_json::Value::String(v.to_owned()));
                    }
                }
                Ok(serde_json::Value::Object(row))
            }
            Err(e) => Err(FieldError::new("row", format!("does not read: {e}"))),
        });
        if rows.len() > MAX_FEEDBACK_ROWS {
            break;
        }
    }
    Ok(rows)
}

#[utoipa::path(post, path = "/api/insights/feedback", tag = "insights",
    request_body(content = FeedbackImport, description = "JSON `{\"rows\": [...]}` of `FeedbackRow`, or `text/csv` with a header row naming the same columns"),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 202, description = "The good rows are durably in JetStream; bad rows are listed by number with the reason", body = FeedbackResponse),
        (status = 400, description = "Neither JSON nor CSV", body = ErrorBody),
        (status = 422, description = "No row is usable (the first reason is given), or too many rows", body = ErrorBody),
        (status = 503, description = "JetStream unavailable; retry later", body = ErrorBody),
    ))]
pub async fn import_feedback(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<FeedbackResponse>), ApiError> {
    let is_csv = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/csv"));
    let rows: Vec<Result<serde_json::Value, FieldError>> = if is_csv {
        csv_rows(&body)?
    } else {
        let import: FeedbackImport = parse_json(&body)?;
        import.rows.into_iter().map(Ok).collect()
    };
    if rows.is_empty() {
        return Err(ApiError::Invalid(FieldError::new("rows", "no rows")));
    }
    if rows.len() > MAX_FEEDBACK_ROWS {
        return Err(ApiError::Invalid(FieldError::new(
            "rows",
            format!("at most {MAX_FEEDBACK_ROWS} rows in one import"),
        )));
    }
    let limits = state.limits();
    let mut docs = Vec::new();
    let mut refused = Vec::new();
    for (i, row) in rows.into_iter().enumerate() {
        let n = i + 1;
        let admitted = row
            .and_then(|v| {
                serde_json::from_value::<FeedbackRow>(v).map_err(|e| {
                    // Name the column serde names ("missing field `text`").
                    let message = e.to_string();
                    let field = message
                        .split('`')
                        .nth(1)
                        .filter(|_| message.contains("field `"))
                        .unwrap_or("row")
                        .to_owned();
                    FieldError::new(field, message)
                })
            })
            .and_then(FeedbackRow::into_input)
            .and_then(|d| intake::admit(d, "row", &limits));
        match admitted {
            Ok(d) => docs.push(d),
            Err(e) => refused.push(RefusedRow {
                row: n,
                field: e.field.trim_start_matches("row.").to_owned(),
                reason: e.reason,
            }),
        }
    }
    if docs.is_empty() {
        let first = &refused[0];
        return Err(ApiError::Invalid(FieldError::new(
            format!("rows[{}].{}", first.row, first.field),
            first.reason.clone(),
        )));
    }
    let lanes = crate::routes::ingest::lanes_for(&state, user, docs.len(), false).await?;
    let accepted = intake::submit(&state.bus, user, docs, &lanes)
        .await
        .map_err(ApiError::Unavailable)?;
    let accepted = crate::routes::ingest::IngestResponse::from(accepted).accepted;
    Ok((
        StatusCode::ACCEPTED,
        Json(FeedbackResponse { accepted, refused }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weeks(items: &[i64]) -> Vec<WeekCount> {
        let monday = chrono::NaiveDate::from_ymd_opt(2026, 9, 7).unwrap();
        items
            .iter()
            .enumerate()
            .map(|(i, &n)| WeekCount {
                week: monday + chrono::Duration::weeks(i as i64),
                items: n,
                accounts: n / 2,
            })
            .collect()
    }

    #[test]
    fn the_last_complete_week_is_compared_with_up_to_four_before_it() {
        // The 9 is too old to count; the trailing 1 is the week still going.
        let change = trend_change(&weeks(&[9, 1, 2, 3, 2, 6, 1]));
        assert_eq!(
            change.week,
            chrono::NaiveDate::from_ymd_opt(2026, 10, 12).unwrap()
        );
        assert_eq!((change.items, change.accounts), (6, 3));
        assert_eq!(change.trailing_weeks, 4);
        assert_eq!(change.trailing_items, 2.0);
        assert_eq!(change.trailing_accounts, 0.75);
        assert_eq!(change.items_change, Some(2.0));
    }

    #[test]
    fn a_theme_new_this_period_has_no_ratio() {
        let change = trend_change(&weeks(&[0, 0, 3, 5]));
        assert_eq!(change.items, 3);
        assert_eq!(change.trailing_weeks, 2);
        assert_eq!(change.items_change, None);
        let shortest = trend_change(&weeks(&[4, 2, 0]));
        assert_eq!(
            (shortest.trailing_weeks, shortest.items_change),
            (1, Some(-0.5))
        );
    }
}
