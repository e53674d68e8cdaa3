//! What CRM accounts were worth over time (`crm_history`): the values of the tracked
//! properties with when each was set, so an insight shows its account as it stood when the
//! words were said (and, beside it, as it stands now), and the accounts that churned are known
//! with when they did.

use crate::Result;
use chrono::{DateTime, Utc};
use common::UserId;
use sea_orm::{ConnectionTrait, DbBackend, FromQueryResult, Statement, Value};
use serde::Serialize;

fn stmt(sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// One property's value as the provider reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct PropertyValue {
    pub property: String,
    pub value: Option<String>,
    /// When it was set, from the provider's history; `None`: only the current value is known.
    pub set_at: Option<DateTime<Utc>>,
}

/// Records a CRM record's tracked values. Values with their time (the provider's history) are
/// kept as given (an empty value is a cleared one). A current value alone is recorded only when it differs from the last one
/// known, as set at `modified_at` (the record's last change); the first value ever seen of a
/// property stands for the unknown past (`-infinity`).
pub async fn record_history(
    db: &impl ConnectionTrait,
    user: UserId,
    object_type: &str,
    object_id: &str,
    modified_at: DateTime<Utc>,
    values: &[PropertyValue],
) -> Result<()> {
    let (timed, current): (Vec<_>, Vec<_>) = values.iter().partition(|v| v.set_at.is_some());
    if !timed.is_empty() {
        db.execute_raw(stmt(
            "INSERT INTO crm_history (user_id, object_type, object_id, property, value, changed_at)
             SELECT $1, $2, $3, p, nullif(v, ''), t FROM unnest($4::text[], $5::text[], $6::timestamptz[]) AS x(p, v, t)
             ON CONFLICT DO NOTHING",
            vec![
                user.0.into(),
                object_type.into(),
                object_id.into(),
                timed.iter().map(|v| v.property.clone()).collect::<Vec<_>>().into(),
                timed
                    .iter()
                    .map(|v| v.value.clone().unwrap_or_default())
                    .collect::<Vec<_>>()
                    .into(),
                timed.iter().filter_map(|v| v.set_at).collect::<Vec<_>>().into(),
            ],
        ))
        .await?;
    }
    for v in current {
        db.execute_raw(stmt(
            "WITH last AS (
               SELECT value FROM crm_history
               WHERE user_id = $1 AND object_type = $2 AND object_id = $3 AND property = $4
               ORDER BY changed_at DESC LIMIT 1)
             INSERT INTO crm_history (user_id, object_type, object_id, property, value, changed_at)
             SELECT $1, $2, $3, $4, $5,
                    CASE WHEN EXISTS (SELECT 1 FROM last) THEN $6 ELSE '-infinity'::timestamptz END
             WHERE NOT EXISTS (SELECT 1 FROM last)
                OR (SELECT value FROM last) IS DISTINCT FROM $5
             ON CONFLICT DO NOTHING",
            vec![
                user.0.into(),
                object_type.into(),
                object_id.into(),
                v.property.clone().into(),
                v.value.clone().into(),
                modified_at.into(),
            ],
        ))
        .await?;
    }
    Ok(())
}

/// An account (HubSpot company) as it stood at some time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Account {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifecycle_stage: Option<String>,
    pub open_deals: i64,
    pub open_deal_amount: f64,
    /// The first of the team's revenue properties holding a number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revenue: Option<f64>,
}

/// The company as it stood at `at`, from its recorded history; `None` when nothing of it was
/// ever recorded.
pub async fn at(
    db: &impl ConnectionTrait,
    user: UserId,
    company: &str,
    at: DateTime<Utc>,
    revenue_properties: &[String],
) -> Result<Option<Account>> {
    let row = db
        .query_one_raw(stmt(
            &format!(
                "SELECT a.lifecycle_stage, a.open_deals::int8 AS open_deals, a.open_deal_amount,
                        {} AS revenue
                 FROM crm_account_at($1, $2, $3) a
                 WHERE EXISTS (SELECT 1 FROM crm_history h
                               WHERE h.user_id = $1 AND h.object_type = 'company' AND h.object_id = $2)",
                crate::insights::revenue_at("$1", "$2", "$3", "$4::text[]")
            ),
            vec![
                user.0.into(),
                company.into(),
                at.into(),
                revenue_properties.to_vec().into(),
            ],
        ))
        .await?;
    row.map(|r| {
        Ok(Account {
            lifecycle_stage: r.try_get("", "lifecycle_stage")?,
            open_deals: r.try_get("", "open_deals")?,
            open_deal_amount: r.try_get("", "open_deal_amount")?,
            revenue: r.try_get("", "revenue")?,
        })
    })
    .transpose()
}

/// An account that churned: the first time its lifecycle stage, or a stage of one of its deals,
/// became one of the team's churn stages.
#[derive(Debug, Clone, PartialEq, FromQueryResult, Serialize, utoipa::ToSchema)]
pub struct Churned {
    pub company_id: String,
    pub company: Option<String>,
    pub churned_at: DateTime<Utc>,
    /// The stage it reached.
    pub stage: String,
    /// `lifecycle` (the company's) or `deal` (one of its deals').
    pub via: String,
}

/// The user's accounts that churned (by `stages`, compared without case), with a known time.
pub async fn churned(
    db: &impl ConnectionTrait,
    user: UserId,
    stages: &[String],
) -> Result<Vec<Churned>> {
    let stages: Vec<String> = stages.iter().map(|s| s.to_lowercase()).collect();
    Ok(Churned::find_by_statement(stmt(
        "WITH changes AS (
           SELECT h.object_id AS company_id, h.changed_at, h.value AS stage, 'lifecycle' AS via
           FROM crm_history h
           WHERE h.user_id = $1 AND h.object_type = 'company' AND h.property = 'lifecyclestage'
             AND lower(h.value) = ANY($2) AND h.changed_at > '-infinity'
           UNION ALL
           SELECT c.company_id, h.changed_at, h.value, 'deal'
           FROM crm_history h
           JOIN LATERAL (
             SELECT jsonb_array_elements_text(coalesce(d.metadata->'associations'->'companies', '[]')) AS company_id
             FROM documents d
             WHERE d.user_id = $1 AND d.source = 'hubspot' AND d.kind = 'deal'
               AND d.external_id = 'deal:' || h.object_id
             UNION
             SELECT co.metadata->>'id' FROM documents co
             WHERE co.user_id = $1 AND co.source = 'hubspot' AND co.kind = 'company'
               AND co.metadata->'associations'->'deals' @> jsonb_build_array(h.object_id)) c ON TRUE
           WHERE h.user_id = $1 AND h.object_type = 'deal' AND h.property = 'dealstage'
             AND lower(h.value) = ANY($2) AND h.changed_at > '-infinity')
         SELECT DISTINCT ON (ch.company_id) ch.company_id, co.title AS company, ch.changed_at AS churned_at,
                ch.stage, ch.via
         FROM changes ch
         LEFT JOIN documents co ON co.user_id = $1 AND co.source = 'hubspot' AND co.kind = 'company'
           AND co.external_id = 'company:' || ch.company_id
         ORDER BY ch.company_id, ch.changed_at",
        vec![user.0.into(), stages.into()],
    ))
    .all(db)
    .await?)
}

/// An item said by an account in the days before it churned.
#[derive(Debug, Clone, PartialEq, FromQueryResult, Serialize, utoipa::ToSchema)]
pub struct BeforeChurn {
    pub item_id: uuid::Uuid,
    pub theme_id: uuid::Uuid,
    pub theme_title: String,
    pub kind: String,
    pub quote: String,
    pub company_id: String,
    pub company: Option<String>,
    pub document_id: uuid::Uuid,
    pub occurred_at: DateTime<Utc>,
    pub churned_at: DateTime<Utc>,
}

/// What the `accounts` (churned) said in the `days` before each churned, newest first.
pub async fn said_before_churn(
    db: &impl ConnectionTrait,
    user: UserId,
    accounts: &[Churned],
    days: i32,
) -> Result<Vec<BeforeChurn>> {
    if accounts.is_empty() {
        return Ok(Vec::new());
    }
    Ok(BeforeChurn::find_by_statement(stmt(
        "SELECT i.id AS item_id, i.theme_id, t.title AS theme_title, i.kind, i.quote,
                c.company_id, i.company, i.document_id, i.occurred_at, c.churned_at
         FROM unnest($2::text[], $3::timestamptz[]) AS c(company_id, churned_at)
         JOIN insight_items i ON i.user_id = $1 AND i.customer->>'company_id' = c.company_id
           AND i.occurred_at >= c.churned_at - make_interval(days => $4)
           AND i.occurred_at < c.churned_at AND i.dismissed_at IS NULL
         JOIN insight_themes t ON t.id = i.theme_id
         ORDER BY i.occurred_at DESC, i.id",
        vec![
            user.0.into(),
            accounts
                .iter()
                .map(|a| a.company_id.clone())
                .collect::<Vec<_>>()
                .into(),
            accounts
                .iter()
                .map(|a| a.churned_at)
                .collect::<Vec<_>>()
                .into(),
            days.into(),
        ],
    ))
    .all(db)
    .await?)
}
