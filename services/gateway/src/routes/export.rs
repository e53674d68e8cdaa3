//! Export of themes and their items (quotes, customers, accounts and links), filtered as the
//! lists are, as CSV (one row per item) or JSON (themes with their items).

use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody};
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use common::intake::FieldError;
use db::insights::ExportRow;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/insights/export", get(export))
}

/// The most items one export holds; a larger one says it was cut (narrow the filter).
pub const EXPORT_MAX_ITEMS: u64 = 50_000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportParams {
    /// `csv` (default: one row per item) or `json` (themes with their items).
    pub format: Option<String>,
    /// Only this theme.
    pub theme: Option<Uuid>,
    /// `feature_request`, `bug`, `pain_point`, `praise` or `question`.
    pub kind: Option<String>,
    pub source: Option<String>,
    pub company: Option<String>,
    pub product_area: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// The account's lifecycle stage when the words were said.
    pub lifecycle: Option<String>,
}

/// One exported item.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExportItem {
    pub id: Uuid,
    pub kind: String,
    pub title: String,
    /// Word for word from the source.
    pub quote: String,
    pub customer_name: Option<String>,
    pub customer_email: Option<String>,
    /// The account: the customer's company.
    pub company: Option<String>,
    /// The open deals of the customer's company when it was said.
    pub open_deal_amount: Option<f64>,
    pub product_area: Option<String>,
    pub sentiment: String,
    pub urgency: String,
    pub source: String,
    pub document_id: Uuid,
    pub document_title: String,
    /// The message at its source (Gmail thread, Slack message, HubSpot record...), when known.
    pub link: Option<String>,
    pub occurred_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExportTheme {
    pub id: Uuid,
    pub title: String,
    pub kind: String,
    /// Its items within the filter, newest first.
    pub items: Vec<ExportItem>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Export {
    /// Most mentioned first.
    pub themes: Vec<ExportTheme>,
    /// More items matched than one export holds (50,000): narrow the filter.
    pub truncated: bool,
}

fn item(r: &ExportRow, portal: Option<&str>) -> ExportItem {
    let c = &r.customer;
    ExportItem {
        id: r.id,
        kind: r.kind.clone(),
        title: r.title.clone(),
        quote: r.quote.clone(),
        customer_name: c["name"].as_str().map(str::to_owned),
        customer_email: c["email"].as_str().map(str::to_owned),
        company: r.company.clone(),
        open_deal_amount: c["open_deal_amount"].as_f64(),
        product_area: r.product_area.clone(),
        sentiment: r.sentiment.clone(),
        urgency: r.urgency.clone(),
        source: r.source.clone(),
        document_id: r.document_id,
        document_title: r.document_title.clone(),
        link: db::documents::link_to(&r.source, &r.document_kind, &r.document_metadata, portal),
        occurred_at: r.occurred_at,
    }
}

/// A cell a spreadsheet would read as a formula (`=`, `+`, `-`, `@`, or a tab or carriage
/// return first) gets a leading `'`: customers' words are never run as formulas.
fn cell(text: &str) -> String {
    match text.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{text}"),
        _ => text.to_owned(),
    }
}

const CSV_COLUMNS: [&str; 19] = [
    "theme_id",
    "theme_title",
    "theme_kind",
    "item_id",
    "kind",
    "title",
    "quote",
    "customer_name",
    "customer_email",
    "company",
    "open_deal_amount",
    "product_area",
    "sentiment",
    "urgency",
    "source",
    "document_title",
    "link",
    "occurred_at",
    "document_id",
];

fn csv(rows: &[ExportRow], portal: Option<&str>) -> Result<Vec<u8>, ApiError> {
    let mut out = csv::Writer::from_writer(Vec::new());
    let failed = |e: csv::Error| ApiError::Internal(Box::new(e));
    out.write_record(CSV_COLUMNS).map_err(failed)?;
    for r in rows {
        let i = item(r, portal);
        let text = |v: &Option<String>| cell(v.as_deref().unwrap_or_default());
        out.write_record([
            r.theme_id.to_string(),
            cell(&r.theme_title),
            r.theme_kind.clone(),
            i.id.to_string(),
            i.kind,
            cell(&i.title),
            cell(&i.quote),
            text(&i.customer_name),
            text(&i.customer_email),
            text(&i.company),
            i.open_deal_amount
                .map(|a| a.to_string())
                .unwrap_or_default(),
            text(&i.product_area),
            i.sentiment,
            i.urgency,
            i.source,
            cell(&i.document_title),
            i.link.unwrap_or_default(),
            i.occurred_at.to_rfc3339(),
            i.document_id.to_string(),
        ])
        .map_err(failed)?;
    }
    out.into_inner()
        .map_err(|e| ApiError::Internal(Box::new(e.into_error())))
}

fn grouped(rows: &[ExportRow], portal: Option<&str>) -> Vec<ExportTheme> {
    let mut themes: Vec<ExportTheme> = Vec::new();
    for r in rows {
        if themes.last().is_none_or(|t| t.id != r.theme_id) {
            themes.push(ExportTheme {
                id: r.theme_id,
                title: r.theme_title.clone(),
                kind: r.theme_kind.clone(),
                items: Vec::new(),
            });
        }
        themes
            .last_mut()
            .expect("pushed")
            .items
            .push(item(r, portal));
    }
    themes
}

#[utoipa::path(get, path = "/api/insights/export", tag = "insights", params(ExportParams),
    security(("bearer" = []), ("session" = [])),
    responses((status = 200, description = "Themes and their items: `text/csv` (one row per item; a cell a spreadsheet would run as a formula starts with `'`; `X-Export-Truncated: true` when cut at 50,000 items) or JSON",
            content((Export = "application/json"), (String = "text/csv"))),
        (status = 422, description = "A parameter is invalid; `field` names it", body = ErrorBody)))]
pub async fn export(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Query(p): Query<ExportParams>,
) -> Result<Response, ApiError> {
    let json = match p.format.as_deref() {
        None | Some("csv") => false,
        Some("json") => true,
        Some(_) => {
            return Err(ApiError::Invalid(FieldError::new("format", "csv or json")));
        }
    };
    let filter = db::insights::Filter {
        kind: super::insights::kind_param(p.kind)?,
        source: p.source,
        company: p.company,
        product_area: p.product_area,
        theme: p.theme,
        document: None,
        since: p.since,
        until: p.until,
        lifecycle: p.lifecycle,
    };
    let mut rows = db::insights::export(&state.db, user, &filter, EXPORT_MAX_ITEMS + 1).await?;
    let truncated = rows.len() as u64 > EXPORT_MAX_ITEMS;
    rows.truncate(EXPORT_MAX_ITEMS as usize);
    let portal = db::connections::hubspot_portal(&state.db, user).await?;
    if json {
        return Ok(Json(Export {
            themes: grouped(&rows, portal.as_deref()),
            truncated,
        })
        .into_response());
    }
    let mut response = csv(&rows, portal.as_deref())?.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"insights.csv\""),
    );
    if truncated {
        headers.insert("x-export-truncated", HeaderValue::from_static("true"));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::cell;

    #[test]
    fn a_quote_a_spreadsheet_would_run_is_quoted() {
        assert_eq!(
            cell("=HYPERLINK(\"http://x\")"),
            "'=HYPERLINK(\"http://x\")"
        );
        assert_eq!(cell("+1 555"), "'+1 555");
        assert_eq!(cell("-2"), "'-2");
        assert_eq!(cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(cell("Please add CSV export"), "Please add CSV export");
        assert_eq!(cell(""), "");
    }
}
