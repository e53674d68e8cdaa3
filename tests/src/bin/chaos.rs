//! `make chaos`: outages, not just crashes, against the release binaries running as separate
//! processes. Documents are posted through the gateway without pause while
//! 1. NATS (a server of the battery's own, so it can be killed) dies and comes back;
//! 2. Postgres is unreachable for 30 s (a proxy between the services and Postgres drops every
//!    connection and refuses new ones).
//!
//! For each it prints what was sent, accepted (202), refused (503), stored, indexed and
//! dead-lettered, and fails if anything accepted was not stored and indexed, anything was
//! dead-lettered, any answer was neither 202 nor 503, or any service panicked.

use assistant_tests::bench::{self, Env, Services};
use assistant_tests::proxy::Proxy;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NATS_PORT: u16 = 14333;
const CONCURRENCY: usize = 8;

struct Nats {
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl Nats {
    fn start(&mut self) -> anyhow::Result<()> {
        let child = Command::new("nats-server")
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &NATS_PORT.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", NATS_PORT)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        anyhow::bail!("nats-server did not start (is it installed? scripts/setup.sh installs it)")
    }

    /// SIGKILL, as a crash or an OOM kill would.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Default)]
struct Tally {
    sent: usize,
    accepted: HashSet<String>,
    refused: usize,
    other: Vec<String>,
}

/// Posts one document per request, `CONCURRENCY` at a time, until `stop`.
async fn load(
    env: &Env,
    token: String,
    phase: &'static str,
    tally: Arc<Mutex<Tally>>,
    stop: Instant,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers = (0..CONCURRENCY).map(|_| {
        let (http, token, tally, next, url) = (
            http.clone(),
            token.clone(),
            tally.clone(),
            next.clone(),
            format!("{}/api/ingest/documents", env.url),
        );
        async move {
            while Instant::now() < stop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let id = format!("{phase}-{i}");
                let body = serde_json::json!({"documents": [{
                    "source": "chaos", "kind": "note", "external_id": id,
                    "title": format!("Call note {i}"),
                    "body": format!("{id}: the client asked about municipal bonds and the 2027 tax brackets."),
                }]});
                let outcome = http.post(&url).bearer_auth(&token).json(&body).send().await;
                {
                    let mut t = tally.lock().unwrap();
                    t.sent += 1;
                    match outcome.map(|r| r.status().as_u16()) {
                        Ok(202) => {
                            t.accepted.insert(id);
                        }
                        Ok(503) => t.refused += 1,
                        Ok(other) => t.other.push(format!("{id}: HTTP {other}")),
                        // The gateway itself is up throughout; a transport error is a failure.
                        Err(e) => t.other.push(format!("{id}: {e}")),
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    futures::future::join_all(workers).await;
}

async fn count(env: &Env, sql: &str) -> i64 {
    env.db
        .query_one_raw(Statement::from_string(DbBackend::Postgres, sql.to_owned()))
        .await
        .ok()
        .flatten()
        .and_then(|r| r.try_get_by_index::<i64>(0).ok())
        .unwrap_or(-1)
}

struct Report {
    phase: &'static str,
    sent: usize,
    accepted: usize,
    refused: usize,
    other: Vec<String>,
    stored: i64,
    indexed: i64,
    dead: i64,
}

/// Waits (up to 5 minutes) until everything accepted in `phase` is stored and indexed.
async fn settle(env: &Env, phase: &'static str, tally: &Tally) -> Report {
    let ids: Vec<String> = tally.accepted.iter().map(|id| format!("'{id}'")).collect();
    let list = if ids.is_empty() {
        "''".to_owned()
    } else {
        ids.join(",")
    };
    let stored_sql = format!(
        "SELECT count(*) FROM documents WHERE source = 'chaos' AND external_id IN ({list})"
    );
    let indexed_sql = format!("{stored_sql} AND indexed_hash = content_hash");
    let started = Instant::now();
    let want = tally.accepted.len() as i64;
    while count(env, &indexed_sql).await < want && started.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Report {
        phase,
        sent: tally.sent,
        accepted: tally.accepted.len(),
        refused: tally.refused,
        other: tally.other.clone(),
        stored: count(env, &stored_sql).await,
        indexed: count(env, &indexed_sql).await,
        dead: count(env, "SELECT count(*) FROM dead_letters").await,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let work = std::path::Path::new("target/chaos");
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work.join("nats"))?;
    let mut nats = Nats {
        dir: work.join("nats"),
        child: None,
    };
    nats.start()?;
    let proxy = Proxy::start("127.0.0.1:5432").await?;
    let env = Env::prepare_with("assistant_chaos", "chaos", |c| {
        c.nats_url = format!("nats://127.0.0.1:{NATS_PORT}");
        let (server, db) = c.database_url.rsplit_once('/').expect("a database URL");
        let (creds, _) = server
            .rsplit_once('@')
            .unwrap_or(("postgres://postgres:postgres", ""));
        c.database_url = format!("{creds}@{}/{db}", proxy.addr);
    })
    .await?;
    Services::fresh_logs()?;
    let mut services = Services::default();
    for name in ["gateway", "ingest", "embedding"] {
        services.start(&env, name)?;
    }
    env.wait_ready().await?;
    let (_, token) = env.user_token("chaos@example.com").await?;
    let mut reports = Vec::new();

    // 1. NATS dies 10 s into 30 s of intake and is back 5 s later.
    println!("phase 1: NATS killed and restarted during intake...");
    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let loader = load(
        &env,
        token.clone(),
        "nats",
        tally.clone(),
        started + Duration::from_secs(30),
    );
    let chaos = async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        nats.kill();
        tokio::time::sleep(Duration::from_secs(5)).await;
        nats.start().expect("NATS restarts");
    };
    tokio::join!(loader, chaos);
    let done = std::mem::take(&mut *tally.lock().unwrap());
    reports.push(settle(&env, "NATS killed for 5 s", &done).await);

    // 2. Postgres unreachable for 30 s, 5 s into 45 s of intake.
    println!("phase 2: Postgres unreachable for 30 s during intake...");
    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let loader = load(
        &env,
        token.clone(),
        "postgres",
        tally.clone(),
        started + Duration::from_secs(45),
    );
    let chaos = async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        proxy.cut();
        tokio::time::sleep(Duration::from_secs(30)).await;
        proxy.restore();
    };
    tokio::join!(loader, chaos);
    let done = std::mem::take(&mut *tally.lock().unwrap());
    reports.push(settle(&env, "Postgres away for 30 s", &done).await);
    services.stop_all();
    let panics = bench::panics_in_logs();

    println!(
        "\n| outage | sent | accepted (202) | refused (503) | other answers | stored | indexed | dead-lettered |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut failed = Vec::new();
    for r in &reports {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.phase,
            r.sent,
            r.accepted,
            r.refused,
            r.other.len(),
            r.stored,
            r.indexed,
            r.dead
        );
        if r.stored != r.accepted as i64 || r.indexed != r.accepted as i64 {
            failed.push(format!(
                "{}: {} accepted, {} stored, {} indexed",
                r.phase, r.accepted, r.stored, r.indexed
            ));
        }
        if r.dead != 0 {
            failed.push(format!("{}: {} dead letters", r.phase, r.dead));
        }
        if r.refused == 0 {
            failed.push(format!("{}: the outage never showed (no 503)", r.phase));
        }
        for o in r.other.iter().take(5) {
            failed.push(format!("{}: {o}", r.phase));
        }
    }
    failed.extend(panics);
    env.cleanup().await;
    if failed.is_empty() {
        println!(
            "\nchaos: every accepted document stored and indexed once; nothing dead-lettered."
        );
        Ok(())
    } else {
        for f in &failed {
            eprintln!("FAILED: {f}");
        }
        anyhow::bail!("{} chaos checks failed", failed.len())
    }
}
