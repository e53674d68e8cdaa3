//! The weekly insights digest: per user and week (Monday 00:00 UTC), the themes first heard
//! that week and the ones that rose above their trailing weeks, each with a few of that week's
//! quotes. Read through the API for any week, and left once as a notification when a week
//! ends.

use crate::Result;
use crate::insights::ACCOUNT;
use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use common::UserId;
use insights::trend::TrendTest;
use sea_orm::{ConnectionTrait, DbBackend, FromQueryResult, Statement, Value};
use serde::Serialize;
use uuid::Uuid;

fn stmt(sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// Themes listed per section.
pub const TOP: usize = 5;
/// Quotes shown per theme.
pub const QUOTES: i64 = 3;

/// The Monday (UTC) of the week holding `day`.
pub fn week_of(day: NaiveDate) -> NaiveDate {
    day - Duration::days(i64::from(day.weekday().num_days_from_monday()))
}

/// The last week that has ended at `now`.
pub fn last_complete_week(now: DateTime<Utc>) -> NaiveDate {
    week_of(now.date_naive()) - Duration::weeks(1)
}

fn start(week: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&week.and_hms_opt(0, 0, 0).expect("midnight exists"))
}

/// The test a theme's week passes to be listed as rising: the alert's Poisson test, with a
/// looser bar, because a digest ranks what moved rather than interrupting anyone. It still
/// needs three mentions and twice the usual rate, so a theme's ordinary week is never listed.
pub fn rising_test() -> TrendTest {
    TrendTest {
        alpha: 0.05,
        min_count: 3,
        ..TrendTest::default()
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Quote {
    pub item_id: Uuid,
    pub quote: String,
    pub customer: Option<String>,
    pub company: Option<String>,
    pub document_id: Uuid,
    pub occurred_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct DigestTheme {
    pub theme_id: Uuid,
    pub title: String,
    pub kind: String,
    /// Mentions that week.
    pub items: i64,
    /// Distinct accounts among them.
    pub accounts: i64,
    /// Mean mentions a week over the trailing weeks (rising themes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    /// `P(X ≥ items)` at the baseline (rising themes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    pub quotes: Vec<Quote>,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Digest {
    /// The week's Monday.
    pub week: NaiveDate,
    /// Themes whose first mention falls in the week, the most accounts first.
    pub new: Vec<DigestTheme>,
    /// Themes heard before that rose this week, the least likely by chance first.
    pub rising: Vec<DigestTheme>,
    /// Mentions in the week across all themes.
    pub items: i64,
}

impl Digest {
    pub fn is_empty(&self) -> bool {
        self.new.is_empty() && self.rising.is_empty()
    }

    /// The notification's text: the week, then each theme with its counts and first quote.
    pub fn text(&self) -> String {
        let mut out = format!(
            "Insights digest, week of {}: {} new and {} rising themes.",
            self.week.format("%-d %b %Y"),
            self.new.len(),
            self.rising.len()
        );
        for (label, themes) in [("New", &self.new), ("Rising", &self.rising)] {
            for t in themes {
                out.push_str(&format!(
                    "\n{label}: {} ({} mentions, {} accounts)",
                    t.title, t.items, t.accounts
                ));
                if let Some(q) = t.quotes.first() {
                    let quote: String = q.quote.chars().take(160).collect();
                    let ellipsis = if quote.len() < q.quote.len() {
                        "…"
                    } else {
                        ""
                    };
                    out.push_str(&format!(" — “{quote}{ellipsis}”"));
                    if let Some(who) = q.company.as_ref().or(q.customer.as_ref()) {
                        out.push_str(&format!(" ({who})"));
                    }
                }
            }
        }
        out
    }
}

#[derive(Debug, FromQueryResult)]
struct Row {
    theme_id: Uuid,
    title: String,
    kind: String,
    items: i64,
    accounts: i64,
    before: i64,
    first_seen: DateTime<Utc>,
}

/// The digest of `user`'s week starting `week` (a Monday).
pub async fn digest(db: &impl ConnectionTrait, user: UserId, week: NaiveDate) -> Result<Digest> {
    let test = rising_test();
    let from = start(week);
    let rows = Row::find_by_statement(stmt(
        &format!(
            "SELECT i.theme_id, t.title, t.kind,
                count(*) FILTER (WHERE i.occurred_at >= $2) AS items,
                count(DISTINCT {ACCOUNT}) FILTER (WHERE i.occurred_at >= $2) AS accounts,
                count(*) FILTER (WHERE i.occurred_at >= $2 - make_interval(weeks => $4)
                                   AND i.occurred_at < $2) AS before,
                min(i.occurred_at) AS first_seen
         FROM insight_items i JOIN insight_themes t ON t.id = i.theme_id
         WHERE i.user_id = $1 AND i.dismissed_at IS NULL AND i.occurred_at < $3
         GROUP BY i.theme_id, t.title, t.kind
         HAVING count(*) FILTER (WHERE i.occurred_at >= $2) > 0"
        ),
        vec![
            user.0.into(),
            from.into(),
            (from + Duration::weeks(1)).into(),
            (test.trailing as i32).into(),
        ],
    ))
    .all(db)
    .await?;
    let items = rows.iter().map(|r| r.items).sum();
    let theme = |r: &Row| DigestTheme {
        theme_id: r.theme_id,
        title: r.title.clone(),
        kind: r.kind.clone(),
        items: r.items,
        accounts: r.accounts,
        baseline: None,
        p_value: None,
        quotes: Vec::new(),
    };
    let (mut new, mut rising) = (Vec::new(), Vec::new());
    for r in &rows {
        if r.first_seen >= from {
            new.push(theme(r));
            continue;
        }
        // The trailing weeks as the test reads them: only their mean matters.
        let mean = r.before as f64 / test.trailing as f64;
        if let Some(rise) = test.rise_over(u32::try_from(r.items).unwrap_or(u32::MAX), mean) {
            rising.push(DigestTheme {
                baseline: Some(mean),
                p_value: Some(rise.p_value),
                ..theme(r)
            });
        }
    }
    new.sort_by(|a, b| (b.accounts, b.items, &a.title).cmp(&(a.accounts, a.items, &b.title)));
    rising.sort_by(|a, b| {
        a.p_value
            .partial_cmp(&b.p_value)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(b.items.cmp(&a.items))
    });
    new.truncate(TOP);
    rising.truncate(TOP);
    let chosen: Vec<Uuid> = new.iter().chain(&rising).map(|t| t.theme_id).collect();
    let mut quotes = quotes(db, user, &chosen, from).await?;
    for t in new.iter_mut().chain(rising.iter_mut()) {
        t.quotes = quotes.remove(&t.theme_id).unwrap_or_default();
    }
    Ok(Digest {
        week,
        new,
        rising,
        items,
    })
}

/// Up to `QUOTES` of each theme's quotes from the week, the highest-scored first and one per
/// account before a second from any.
async fn quotes(
    db: &impl ConnectionTrait,
    user: UserId,
    themes: &[Uuid],
    from: DateTime<Utc>,
) -> Result<std::collections::HashMap<Uuid, Vec<Quote>>> {
    let mut out: std::collections::HashMap<Uuid, Vec<Quote>> = Default::default();
    if themes.is_empty() {
        return Ok(out);
    }
    let rows = db
        .query_all_raw(stmt(
            "WITH w AS (
               SELECT i.id, i.theme_id, i.quote, i.customer->>'name' AS customer, i.company,
                      i.document_id, i.occurred_at, i.score,
                      row_number() OVER (PARTITION BY i.theme_id,
                        coalesce(i.company, i.customer->>'email', i.customer->>'name', i.id::text)
                        ORDER BY i.score DESC, i.occurred_at DESC) AS nth
               FROM insight_items i
               WHERE i.user_id = $1 AND i.theme_id = ANY($2) AND i.dismissed_at IS NULL
                 AND i.occurred_at >= $3 AND i.occurred_at < $4),
             r AS (
               SELECT *, row_number() OVER (PARTITION BY theme_id
                           ORDER BY nth, score DESC, occurred_at DESC, id) AS rank
               FROM w)
             SELECT id, theme_id, quote, customer, company, document_id, occurred_at
             FROM r WHERE rank <= $5 ORDER BY theme_id, rank",
            vec![
                user.0.into(),
                themes.to_vec().into(),
                from.into(),
                (from + Duration::weeks(1)).into(),
                QUOTES.into(),
            ],
        ))
        .await?;
    for r in rows {
        let theme: Uuid = r.try_get("", "theme_id")?;
        out.entry(theme).or_default().push(Quote {
            item_id: r.try_get("", "id")?,
            quote: r.try_get("", "quote")?,
            customer: r.try_get("", "customer")?,
            company: r.try_get("", "company")?,
            document_id: r.try_get("", "document_id")?,
            occurred_at: r.try_get("", "occurred_at")?,
        });
    }
    Ok(out)
}

/// The notification's id for a user's week: the same on every replica and every retry.
pub fn notification_id(user: UserId, week: NaiveDate) -> Uuid {
    Uuid::new_v5(&user.0, format!("insights-digest:{week}").as_bytes())
}

/// Leaves each user with mentions in the last complete week at `now` that week's digest, once
/// (the notification's id is derived from user and week). Returns how many were left.
pub async fn send_due(db: &impl ConnectionTrait, now: DateTime<Utc>) -> Result<usize> {
    let week = last_complete_week(now);
    let from = start(week);
    let users = db
        .query_all_raw(stmt(
            "SELECT DISTINCT i.user_id FROM insight_items i
             WHERE i.occurred_at >= $1 AND i.occurred_at < $2 AND i.theme_id IS NOT NULL
               AND i.dismissed_at IS NULL",
            vec![from.into(), (from + Duration::weeks(1)).into()],
        ))
        .await?
        .into_iter()
        .map(|r| r.try_get("", "user_id").map(UserId))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let ids: Vec<Uuid> = users.iter().map(|&u| notification_id(u, week)).collect();
    let left: std::collections::HashSet<Uuid> = db
        .query_all_raw(stmt(
            "SELECT id FROM notifications WHERE id = ANY($1)",
            vec![ids.into()],
        ))
        .await?
        .into_iter()
        .map(|r| r.try_get("", "id"))
        .collect::<std::result::Result<_, _>>()?;
    let mut sent = 0;
    for user in users {
        if left.contains(&notification_id(user, week)) {
            continue;
        }
        let digest = digest(db, user, week).await?;
        if digest.is_empty() {
            continue;
        }
        crate::tasks::notify(
            db,
            notification_id(user, week),
            user,
            &digest.text(),
            None,
            None,
        )
        .await?;
        sent += 1;
    }
    Ok(sent)
}
