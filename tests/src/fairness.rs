//! The fairness benchmark: how long another tenant's new document takes to become searchable
//! while one tenant's large import waits in the bulk lane, next to the same measurement on
//! an idle system.

use crate::bench::{Env, Stats, stats};
use common::UserId;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use std::time::{Duration, Instant};

pub struct Fairness {
    pub idle: Stats,
    pub loaded: Stats,
    /// The same again while a third tenant sends 20,000 documents without the bulk flag, as
    /// 200 requests of 100, four at a time; and how many of those went interactive.
    pub eager: Stats,
    pub eager_sent: usize,
    pub eager_interactive: usize,
    /// With product intelligence on for the advisor and the importer: until the advisor's new
    /// email was read by the insights pipeline, idle and while the import waits.
    pub idle_read: Stats,
    pub loaded_read: Stats,
    /// Documents of the import accepted, and indexed while the samples ran.
    pub backlog: usize,
    pub backlog_indexed: i64,
}

async fn indexed(env: &Env, user: UserId, external_id: Option<&str>) -> anyhow::Result<i64> {
    let row = env
        .db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT count(*) AS n FROM documents WHERE user_id = $1 AND indexed_hash = content_hash
               AND ($2::text IS NULL OR external_id = $2)",
            [user.0.into(), external_id.map(str::to_owned).into()],
        ))
        .await?
        .expect("count");
    Ok(row.try_get::<i64>("", "n")?)
}

async fn read_by_insights(env: &Env, user: UserId, external_id: &str) -> anyhow::Result<bool> {
    let row = env
        .db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT count(*) AS n FROM insight_messages m JOIN documents d ON d.id = m.document_id
             WHERE d.user_id = $1 AND d.external_id = $2",
            [user.0.into(), external_id.into()],
        ))
        .await?
        .expect("count");
    Ok(row.try_get::<i64>("", "n")? > 0)
}

/// Posts one email for `user` and waits until it is searchable and read by product
/// intelligence; returns how long each took.
async fn one_document(
    env: &Env,
    http: &reqwest::Client,
    user: UserId,
    token: &str,
    id: &str,
) -> anyhow::Result<(Duration, Duration)> {
    let started = Instant::now();
    let response = http
        .post(format!("{}/api/ingest/documents", env.url))
        .bearer_auth(token)
        .json(&serde_json::json!({"documents": [{
            "source": "gmail", "kind": "email", "external_id": id,
            "title": format!("Client question {id}"),
            "body": format!("{id}: can we move the rollover meeting to Thursday? {}", crate::bench::text_of_words(40)),
        }]}))
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == 202,
        "intake answered {}",
        response.status()
    );
    let (mut searchable, mut read) = (None, None);
    while searchable.is_none() || read.is_none() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "{id} never indexed and read"
        );
        if searchable.is_none() && indexed(env, user, Some(id)).await? > 0 {
            searchable = Some(started.elapsed());
        }
        if read.is_none() && read_by_insights(env, user, id).await? {
            read = Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((searchable.unwrap_or_default(), read.unwrap_or_default()))
}

/// `n` emails one after another: how long until each was searchable, and until each was read
/// by product intelligence.
async fn samples(env: &Env, prefix: &str, n: usize) -> anyhow::Result<(Stats, Stats)> {
    let (user, token) = env.user_token("bench-advisor@example.com").await?;
    let http = reqwest::Client::new();
    let started = Instant::now();
    let (mut searchable, mut read) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let (s, r) = one_document(env, &http, user, &token, &format!("{prefix}-{i}")).await?;
        searchable.push(s);
        read.push(r);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let took = started.elapsed();
    Ok((stats(searchable, took), stats(read, took)))
}

async fn insights_on(env: &Env, email: &str) -> anyhow::Result<UserId> {
    let (user, _) = env.user_token(email).await?;
    db::insights::save_settings(
        &env.db,
        user,
        &db::insights::Settings {
            enabled: true,
            ..Default::default()
        },
    )
    .await?;
    Ok(user)
}

/// `n` samples on the idle pipeline, then `backlog` documents imported by another tenant
/// (`"bulk": true`, 100 per request) and `n` samples again while they wait, then a third
/// tenant's 20,000 documents sent without the flag, four requests at a time, and `n` again.
pub async fn run(env: &Env, backlog: usize, n: usize) -> anyhow::Result<Fairness> {
    // Both teams read their messages for product intelligence too: the import's backfill
    // goes through the insights pipeline's bulk lane as well.
    insights_on(env, "bench-advisor@example.com").await?;
    insights_on(env, "bench-importer@example.com").await?;
    let (idle, idle_read) = samples(env, "idle", n).await?;
    let (importer, token) = env.user_token("bench-importer@example.com").await?;
    let http = reqwest::Client::new();
    let body = crate::bench::text_of_words(60);
    for start in (0..backlog).step_by(100) {
        let documents: Vec<serde_json::Value> = (start..(start + 100).min(backlog))
            .map(|i| {
                serde_json::json!({
                    "source": "import", "kind": "note", "external_id": format!("imp-{i}"),
                    "title": format!("Imported note {i}"), "body": format!("{i} {body}"),
                })
            })
            .collect();
        let response = http
            .post(format!("{}/api/ingest/documents", env.url))
            .bearer_auth(&token)
            .json(&serde_json::json!({"documents": documents, "bulk": true}))
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == 202,
            "import answered {}",
            response.status()
        );
    }
    let (loaded, loaded_read) = samples(env, "loaded", n).await?;
    let backlog_indexed = indexed(env, importer, None).await?;
    let (eager_sent, eager_interactive) = eager(env, &http, &body, EAGER_DOCUMENTS).await?;
    let (eager, _) = samples(env, "eager", n).await?;
    Ok(Fairness {
        idle,
        loaded,
        eager,
        eager_sent,
        eager_interactive,
        idle_read,
        loaded_read,
        backlog,
        backlog_indexed,
    })
}

const EAGER_DOCUMENTS: usize = 20_000;

/// A tenant that sends `total` documents without `"bulk": true`, 100 a request, four requests
/// at a time; how many it sent and how many of them the interactive lane took.
async fn eager(
    env: &Env,
    http: &reqwest::Client,
    body: &str,
    total: usize,
) -> anyhow::Result<(usize, usize)> {
    use futures::StreamExt;
    let (_, token) = env.user_token("bench-eager@example.com").await?;
    let requests = (0..total).step_by(100).map(|start| {
        let documents: Vec<serde_json::Value> = (start..(start + 100).min(total))
            .map(|i| {
                serde_json::json!({
                    "source": "import", "kind": "note", "external_id": format!("eager-{i}"),
                    "title": format!("Eager note {i}"), "body": format!("{i} {body}"),
                })
            })
            .collect();
        let (http, token) = (http.clone(), token.clone());
        async move {
            let response = http
                .post(format!("{}/api/ingest/documents", env.url))
                .bearer_auth(&token)
                .json(&serde_json::json!({ "documents": documents }))
                .send()
                .await?;
            anyhow::ensure!(
                response.status() == 202,
                "intake answered {}",
                response.status()
            );
            let accepted: serde_json::Value = response.json().await?;
            Ok(accepted["accepted"]
                .as_array()
                .map(|a| a.iter().filter(|d| d["lane"] == "interactive").count())
                .unwrap_or(0))
        }
    });
    let counts: Vec<anyhow::Result<usize>> = futures::stream::iter(requests)
        .buffer_unordered(4)
        .collect()
        .await;
    let mut interactive = 0;
    for c in counts {
        interactive += c?;
    }
    Ok((total, interactive))
}
