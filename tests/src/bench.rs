//! The pieces `make bench` is made of: the benchmark deployment, child processes and their
//! memory, load generators and measurements.

use common::bus::Bus;
use common::events::{DocumentInput, short_hash};
use common::ids::Source;
use common::{Config, UserId};
use embed::LocalModel;
use futures::future::join_all;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

const BENCH_DB: &str = "assistant_bench";
const GATEWAY_ADDR: &str = "127.0.0.1:18000";
const SECRET: &str = "whsec_YmVuY2htYXJrLXNlY3JldC1rZXktMzItYnl0ZXMh";

/// How many documents `user` has stored.
pub async fn count_documents(env: &Env, user: UserId) -> anyhow::Result<i64> {
    count_rows(&env.db, "documents", user).await
}

/// How many rows of `table` (`documents`, `chunks`) belong to `user`.
async fn count_rows(db: &DatabaseConnection, table: &str, user: UserId) -> anyhow::Result<i64> {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!("SELECT count(*) AS n FROM {table} WHERE user_id = $1"),
            [user.0.into()],
        ))
        .await?
        .ok_or_else(|| anyhow::anyhow!("no count"))?;
    Ok(row.try_get::<i64>("", "n")?)
}

/// Throughput and latency of one load run.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub rate: f64,
    pub p50: Duration,
    pub p99: Duration,
}

pub fn stats(mut latencies: Vec<Duration>, elapsed: Duration) -> Stats {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    Stats {
        rate: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
    }
}

pub struct Env {
    pub config: Config,
    pub db: DatabaseConnection,
    pub bus: Bus,
    pub url: String,
    bin: std::path::PathBuf,
}

/// `BENCH_SEARCH_REUSE=1`: keep the benchmark database an earlier run loaded (with
/// `BENCH_SEARCH_CHUNKS`, to measure a change to search without loading again).
pub fn reuse() -> bool {
    std::env::var("BENCH_SEARCH_REUSE").is_ok_and(|v| v == "1")
}

async fn database_exists(admin: &DatabaseConnection, name: &str) -> anyhow::Result<bool> {
    Ok(admin
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT 1 AS one FROM pg_database WHERE datname = $1",
            [name.into()],
        ))
        .await?
        .is_some())
}

impl Env {
    /// A fresh benchmark database and stream prefix.
    pub async fn prepare() -> anyhow::Result<Self> {
        Self::prepare_with(BENCH_DB, "bench", |_| {}).await
    }

    /// A fresh database `db_name` and stream prefix `prefix`; `tune` adjusts the settings
    /// the services will run with (where Postgres and NATS are, say).
    pub async fn prepare_with(
        db_name: &str,
        prefix: &str,
        tune: impl FnOnce(&mut Config),
    ) -> anyhow::Result<Self> {
        let base = Config::load()?;
        let server = base
            .database_url
            .rsplit_once('/')
            .map(|(s, _)| s.to_owned())
            .unwrap_or_default();
        let admin = db::connect(&format!("{server}/postgres"), 1).await?;
        let kept = reuse() && database_exists(&admin, db_name).await?;
        if !kept {
            admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
                .await?;
            admin
                .execute_unprepared(&format!("CREATE DATABASE {db_name}"))
                .await?;
        }
        let mut config = Config {
            database_url: format!("{server}/{db_name}"),
            nats_prefix: prefix.into(),
            bind_addr: GATEWAY_ADDR.into(),
            ..base
        };
        tune(&mut config);
        let db = db::connect(&config.database_url, 4).await?;
        use migration::MigratorTrait;
        migration::Migrator::up(&db, None).await?;
        let bus = Bus::connect(
            &config.nats_url,
            &config.nats_prefix,
            config.publish_timeout(),
        )
        .await?;
        for def in common::topology::Topology::shipped()?.streams {
            let _ = bus.js.delete_stream(bus.ns.stream(&def.name)).await;
        }
        bus.apply_topology(&config).await?;
        let bin = std::env::current_exe()?
            .parent()
            .expect("target dir")
            .to_owned();
        Ok(Self {
            url: format!("http://{GATEWAY_ADDR}"),
            config,
            db,
            bus,
            bin,
        })
    }

    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = http.get(format!("{}/ready", self.url)).send().await
                && r.status() == 200
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("gateway did not become ready")
    }

    /// A user with a generic webhook endpoint: the user, the endpoint's id and its secret.
    pub async fn webhook_user(&self) -> anyhow::Result<(UserId, uuid::Uuid, String)> {
        let user = db::users::ensure(&self.db, "bench-hooks@example.com").await?;
        let endpoint = db::webhooks::create(
            &self.db,
            &self.config.key_ring()?,
            user,
            &Source::parse("bench").map_err(anyhow::Error::msg)?,
            SECRET,
        )
        .await?;
        Ok((user, endpoint.id, SECRET.to_owned()))
    }

    /// The user with this address (created if new) and an API token for them.
    pub async fn user_token(&self, email: &str) -> anyhow::Result<(UserId, String)> {
        let user = db::users::ensure(&self.db, email).await?;
        Ok((user, self.token_for(user)?))
    }

    /// An API token for `user`, valid for two hours.
    pub fn token_for(&self, user: UserId) -> anyhow::Result<String> {
        Ok(common::auth::Tokens::from_config(&self.config).issue(
            user,
            "bench",
            chrono::Duration::hours(2),
        )?)
    }

    /// Deletes a user and everything of theirs (documents, chunks).
    pub async fn forget_user(&self, email: &str) -> anyhow::Result<()> {
        self.db
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "DELETE FROM users WHERE email = $1",
                [email.into()],
            ))
            .await?;
        Ok(())
    }

    pub async fn purge_streams(&self) -> anyhow::Result<()> {
        for def in common::topology::Topology::shipped()?.streams {
            self.bus
                .js
                .get_stream(self.bus.ns.stream(&def.name))
                .await?
                .purge()
                .await?;
        }
        Ok(())
    }

    /// A user with `n` chunks (random unit vectors, text drawn from an advisor's vocabulary),
    /// among `others` other users with `per_other` chunks each.
    pub async fn synthetic_chunks(
        &self,
        n: i64,
        others: i64,
        per_other: i64,
    ) -> anyhow::Result<UserId> {
        let user = db::users::ensure(&self.db, "bench-search@example.com").await?;
        if reuse() && count_rows(&self.db, "chunks", user).await? >= n {
            // Loaded by an earlier run: in memory again, as a serving database has it.
            self.db
                .execute_unprepared(
                    "SELECT pg_prewarm('chunks'), count(pg_prewarm(indexrelid::regclass)) \
                     FROM pg_index WHERE indrelid = 'chunks'::regclass",
                )
                .await?;
            return Ok(user);
        }
        let per_doc = 5;
        let sql = format!(
            r#"
            -- The HNSW graph is built in memory (~2 kB per 384-dimension vector) by every
            -- core; past maintenance_work_mem the build slows by an order of magnitude.
            SET maintenance_work_mem = '{build_mb}MB';
            SET max_parallel_maintenance_workers = {workers};
            DROP INDEX IF EXISTS chunks_embedding_hnsw;
            INSERT INTO users (id, email)
              SELECT gen_random_uuid(), 'bench-other-' || g || '@example.com' FROM generate_series(1, {others}) g;
            WITH owners AS (
                SELECT '{user}'::uuid AS id, {docs} AS docs
                UNION ALL
                SELECT id, {other_docs} FROM users WHERE email LIKE 'bench-other-%'
            )
            INSERT INTO documents (id, user_id, source, kind, external_id, title, body, content_hash, indexed_hash)
              SELECT gen_random_uuid(), o.id, (ARRAY['gmail','hubspot','gcal','slack'])[1 + g % 4], 'note',
                     'syn-' || g, 'Synthetic note ' || g, '', 'h', 'h'
              FROM owners o, generate_series(1, o.docs) g;
            WITH words AS (SELECT string_to_array('{vocab}', ' ') AS w),
                 docs AS (SELECT id, user_id, source, row_number() OVER () AS r FROM documents WHERE external_id LIKE 'syn-%')
            INSERT INTO chunks (document_id, user_id, source, kind, ordinal, title, content, embedding)
              SELECT d.id, d.user_id, d.source, 'note', o, 'Synthetic note ' || d.r,
                     array_to_string(ARRAY(SELECT CASE WHEN random() < 0.15
                                                THEN w[1 + floor(random() * array_length(w, 1))::int]
                                                ELSE 'w' || floor(exp(random() * ln({terms})))::int END
                                           FROM words, generate_series(1, 40) k WHERE k > o * 0 + d.r * 0), ' '),
                     (SELECT ('[' || string_agg((random() - 0.5)::text, ',') || ']')::vector
                      FROM generate_series(1, 384) x WHERE x > o * 0 + d.r * 0)
              FROM docs d, generate_series(0, {per_doc} - 1) o;
            CREATE INDEX chunks_embedding_hnsw ON chunks USING hnsw (embedding vector_cosine_ops);
            ANALYZE chunks;
            ANALYZE documents;
            -- Steady state: a serving database has its index and table in memory; a
            -- fresh build left them on disk.
            CREATE EXTENSION IF NOT EXISTS pg_prewarm;
            SELECT pg_prewarm('chunks');
            SELECT count(pg_prewarm(indexrelid::regclass)) FROM pg_index WHERE indrelid = 'chunks'::regclass;
            "#,
            docs = n / per_doc,
            build_mb = ((n + others * per_other) * 2_500 / 1_000_000).clamp(1_024, 8_192),
            workers = std::thread::available_parallelism()
                .map_or(1, |c| c.get())
                .saturating_sub(1),
            other_docs = (per_other / per_doc).max(1),
            terms = ZIPF_TERMS,
            vocab = VOCABULARY,
        );
        // What earlier phases deleted (the import's tenant) is vacuumed first (the HNSW index,
        // rebuilt below, dropped before, as vacuuming it is minutes of CPU), so that autovacuum
        // does not work through those dead rows during the measurement, as it would not on a
        // serving database at rest.
        self.db
            .execute_unprepared("DROP INDEX IF EXISTS chunks_embedding_hnsw")
            .await?;
        self.db
            .execute_unprepared("VACUUM (ANALYZE) chunks, documents")
            .await?;
        self.db.execute_unprepared(&sql).await?;
        Ok(user)
    }

    pub async fn cleanup(&self) {
        for def in common::topology::Topology::shipped()
            .map(|t| t.streams)
            .unwrap_or_default()
        {
            let _ = self
                .bus
                .js
                .delete_stream(self.bus.ns.stream(&def.name))
                .await;
        }
    }
}

/// Synthetic text: 15% advisor vocabulary, the rest pseudo-words `w<rank>` drawn with
/// probability ~ 1/rank from this many terms, as word frequencies in natural text fall off.
const ZIPF_TERMS: u32 = 20_000;

/// A pseudo-word of the synthetic corpus's distribution, from a uniform `u` in [0, 1).
fn zipf_word(u: f64) -> String {
    format!("w{}", (u * f64::from(ZIPF_TERMS).ln()).exp().floor() as u64)
}

const VOCABULARY: &str = "portfolio retirement rollover ira roth conversion beneficiary trust estate tax \
    harvesting rebalance allocation bonds equities dividend income annuity insurance premium college \
    tuition savings plan mortgage refinance budget cash flow pension social security medicare rmd charitable \
    donation gift inheritance will attorney meeting review call email follow up quarterly annual risk \
    tolerance volatility market drop recovery growth value index fund etf municipal treasury yield inflation";

/// Where the benchmark's service processes write their logs.
pub const LOG_DIR: &str = "target/bench-logs";

/// The service processes of the benchmark deployment. Each one's log (stderr) goes to
/// `LOG_DIR/<name>.log`, appended across restarts, so a panic anywhere can be found afterwards.
#[derive(Default)]
pub struct Services {
    children: BTreeMap<String, Child>,
}

/// Lines of the service logs that report a panic, with the file they are in.
pub fn panics_in_logs() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(LOG_DIR) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in dir.flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains("panicked")) {
            found.push(format!("{}: {line}", entry.path().display()));
        }
    }
    found
}

impl Services {
    /// Empties the log folder: call once before the first service starts.
    pub fn fresh_logs() -> anyhow::Result<()> {
        let _ = std::fs::remove_dir_all(LOG_DIR);
        std::fs::create_dir_all(LOG_DIR)?;
        Ok(())
    }

    pub fn start(&mut self, env: &Env, name: &str) -> anyhow::Result<()> {
        self.start_with(env, name, &[])
    }

    /// Starts a service with extra settings in its environment.
    pub fn start_with(
        &mut self,
        env: &Env,
        name: &str,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let c = &env.config;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(format!("{LOG_DIR}/{name}.log"))?;
        let child = Command::new(env.bin.join(name))
            .env("DATABASE_URL", &c.database_url)
            .env("NATS_URL", &c.nats_url)
            .env("NATS_PREFIX", &c.nats_prefix)
            .env("BIND_ADDR", &c.bind_addr)
            .env("SECRET_KEY", &c.secret_key)
            .env("EMBEDDING_MODEL_DIR", &c.embedding_model_dir)
            .env("RUST_LOG", "warn")
            // Limits stay on (their cost is part of what is measured) but far above the load.
            .env("RATE_LIMIT_USER_PER_MINUTE", "100000000")
            .env("RATE_LIMIT_IP_PER_MINUTE", "100000000")
            .env("RATE_LIMIT_WEBHOOK_PER_MINUTE", "100000000")
            .envs(extra.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()?;
        self.children.insert(name.to_owned(), child);
        Ok(())
    }

    pub fn stop(&mut self, name: &str) {
        if let Some(mut child) = self.children.remove(name) {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    pub fn stop_all(&mut self) {
        let names: Vec<String> = self.children.keys().cloned().collect();
        for n in names {
            self.stop(&n);
        }
    }

    pub fn rss_all(&self) -> Vec<(String, f64)> {
        self.children
            .iter()
            .map(|(n, c)| (n.clone(), rss_mb(c.id())))
            .collect()
    }

    /// Samples a service's resident memory every 50 ms until stopped; yields the peak.
    pub fn sample_rss(&self, name: &str) -> Sampler {
        let pid = self.children[name].id();
        let (stop, mut stopped) = oneshot::channel();
        let handle = tokio::spawn(async move {
            let mut peak: f64 = 0.0;
            loop {
                peak = peak.max(rss_mb(pid));
                tokio::select! {
                    _ = &mut stopped => return peak,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        });
        Sampler { stop, handle }
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        self.stop_all();
    }
}

pub struct Sampler {
    stop: oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<f64>,
}

impl Sampler {
    pub async fn stop(self) -> f64 {
        let _ = self.stop.send(());
        self.handle.await.unwrap_or(0.0)
    }
}

/// Resident memory of a process, in MB, from /proc.
pub fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

pub fn webhook_body(i: usize) -> serde_json::Value {
    serde_json::json!({
        "type": "feedback.created",
        "data": {"id": format!("fb-{i}"), "title": "Feature request", "body": "Customers ask for a CSV export of the holdings report."}
    })
}

fn sign(secret: &str, id: &str, ts: i64, body: &str) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64
        .decode(secret.trim_start_matches("whsec_"))
        .expect("secret is base64");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(format!("{id}.{ts}.{body}").as_bytes());
    format!("v1,{}", b64.encode(mac.finalize().into_bytes()))
}

/// Runs `n` operations with `concurrency` workers; `op(i)` returns when operation `i` is done.
async fn load<F, Fut>(n: usize, concurrency: usize, op: F) -> anyhow::Result<Stats>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers = (0..concurrency).map(|_| {
        let (op, next) = (op.clone(), next.clone());
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(latencies);
                }
                let t = Instant::now();
                op(i).await?;
                latencies.push(t.elapsed());
            }
        })
    });
    let mut all = Vec::with_capacity(n);
    for w in join_all(workers).await {
        all.extend(w??);
    }
    Ok(stats(all, started.elapsed()))
}

/// One request of an intake run, prepared before the clock starts: its headers and body.
struct Prepared {
    headers: Vec<(&'static str, String)>,
    body: String,
}

/// POSTs every prepared request to `url`, `concurrency` at a time, each expected to answer 202.
async fn post_prepared(
    url: String,
    requests: Vec<Prepared>,
    concurrency: usize,
) -> anyhow::Result<Stats> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let requests = Arc::new(requests);
    load(requests.len(), concurrency, move |i| {
        let (http, url, requests) = (http.clone(), url.clone(), requests.clone());
        async move {
            let prepared = &requests[i];
            let mut request = http.post(&url).body(prepared.body.clone());
            for (name, value) in &prepared.headers {
                request = request.header(*name, value);
            }
            let response = request.send().await?;
            anyhow::ensure!(
                response.status() == 202,
                "{url} answered {}",
                response.status()
            );
            Ok(())
        }
    })
    .await
}

pub async fn intake_gateway(
    env: &Env,
    endpoint: uuid::Uuid,
    secret: &str,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Stats> {
    let run = chrono::Utc::now().timestamp_millis();
    let ts = chrono::Utc::now().timestamp();
    // Signed up front, as the raw publisher's payload is serialized up front: the timed loop
    // measures delivery, not the sender's own work.
    let requests = (0..n)
        .map(|i| {
            let body = webhook_body(i).to_string();
            let id = format!("msg_{run}_{i}");
            let signature = sign(secret, &id, ts, &body);
            Prepared {
                headers: vec![
                    ("webhook-id", id),
                    ("webhook-timestamp", ts.to_string()),
                    ("webhook-signature", signature),
                ],
                body,
            }
        })
        .collect();
    let url = format!("{}/api/webhooks/generic/{endpoint}", env.url);
    post_prepared(url, requests, concurrency).await
}

/// Document intake: `n` requests of one document each (`POST {base}/api/ingest/documents`),
/// `concurrency` at a time, each expected to answer 202. The bodies are built up front.
pub async fn intake_documents(
    base: &str,
    token: &str,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Stats> {
    let run = chrono::Utc::now().timestamp_millis();
    let requests = (0..n)
        .map(|i| Prepared {
            headers: vec![
                ("authorization", format!("Bearer {token}")),
                ("content-type", "application/json".into()),
            ],
            body: serde_json::json!({ "documents": [{
                "source": "gmail",
                "kind": "email",
                "external_id": format!("intake-{run}-{i}"),
                "title": format!("Re: quarterly review {i}"),
                "body": text_of_words(60),
            }]})
            .to_string(),
        })
        .collect();
    post_prepared(
        format!("{base}/api/ingest/documents"),
        requests,
        concurrency,
    )
    .await
}

/// The intake peer (scripts/peers/fastapi_celery): uvicorn with one worker per core, until
/// dropped. `None` when the peer or its Redis is not installed.
pub struct FastApiPeer {
    child: std::process::Child,
    pub url: String,
}

impl FastApiPeer {
    pub async fn start(secret_key: &str) -> anyhow::Result<Option<Self>> {
        let (Ok(python), Ok(broker)) = (
            std::env::var("BENCH_PYTHON"),
            std::env::var("BENCH_REDIS_URL"),
        ) else {
            return Ok(None);
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../scripts/peers/fastapi_celery");
        let child = std::process::Command::new(python)
            .args(["-m", "uvicorn", "app:app", "--app-dir"])
            .arg(&dir)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--workers",
                "2",
                "--log-level",
                "warning",
                "--no-access-log",
            ])
            .env("PEER_SECRET_KEY", secret_key)
            .env("PEER_BROKER", broker)
            .stdout(std::process::Stdio::null())
            .spawn()?;
        let peer = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let started = Instant::now();
        loop {
            if reqwest::get(format!("{}/health", peer.url))
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                return Ok(Some(peer));
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(30),
                "the FastAPI peer did not start"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for FastApiPeer {
    fn drop(&mut self) {
        // SIGTERM lets uvicorn stop its workers.
        let _ = std::process::Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// The HTTP ceiling: the gateway's `/health` at the same concurrency (no body, no work).
pub async fn http_ceiling(env: &Env, n: usize, concurrency: usize) -> anyhow::Result<Stats> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let url = format!("{}/health", env.url);
    load(n, concurrency, move |_| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let response = http.get(&url).send().await?;
            anyhow::ensure!(
                response.status() == 200,
                "health answered {}",
                response.status()
            );
            Ok(())
        }
    })
    .await
}

pub async fn intake_raw(
    env: &Env,
    user: UserId,
    payload: Vec<u8>,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Stats> {
    let bus = env.bus.clone();
    let subject = format!("webhooks.{user}.raw");
    let run = chrono::Utc::now().timestamp_millis();
    load(n, concurrency, move |i| {
        let (bus, subject, payload) = (bus.clone(), subject.clone(), payload.clone());
        async move {
            bus.publish_raw(&subject, &format!("raw-{run}-{i}"), payload)
                .await?;
            Ok(())
        }
    })
    .await
}

pub fn text_of_words(n: usize) -> String {
    let words: Vec<&str> = VOCABULARY.split_whitespace().collect();
    (0..n)
        .map(|i| words[(i * 7 + 3) % words.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn pipeline_docs(n: usize) -> Vec<DocumentInput> {
    (0..n)
        .map(|i| DocumentInput {
            source: Source::parse("gmail").expect("valid"),
            kind: Source::parse("email").expect("valid"),
            external_id: format!("p{i}"),
            title: format!("Client update {i}"),
            body: format!("{} {}", short_hash(&[&i.to_string()]), text_of_words(40)),
            metadata: serde_json::json!({}),
            occurred_at: None,
        })
        .collect()
}

/// Documents per second from the first POST until every one is indexed.
pub async fn pipeline(env: &Env, docs: &[DocumentInput]) -> anyhow::Result<f64> {
    let (user, token) = env.user_token("bench-pipeline@example.com").await?;
    let http = reqwest::Client::new();
    let started = Instant::now();
    for batch in docs.chunks(50) {
        let response = http
            .post(format!("{}/api/ingest/documents", env.url))
            .bearer_auth(&token)
            // A first sync: the connector hands everything over as bulk work.
            .json(&serde_json::json!({ "documents": batch, "bulk": true }))
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == 202,
            "intake answered {}",
            response.status()
        );
    }
    let want = docs.len() as i64;
    loop {
        let row = env
            .db
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT count(*) AS n FROM documents WHERE user_id = $1 AND indexed_hash = content_hash",
                [user.0.into()],
            ))
            .await?
            .expect("count");
        if row.try_get::<i64>("", "n")? >= want {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "pipeline did not finish"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(docs.len() as f64 / started.elapsed().as_secs_f64())
}

/// Texts per second embedding `text`, `batch` copies per call, for about `seconds` (after one
/// call to warm up): the same loop the ONNX Runtime peer runs.
pub fn embed_rate_of(model: &LocalModel, text: &str, batch: usize, seconds: f64) -> f64 {
    let texts = vec![text.to_owned(); batch];
    let _ = model.embed(&texts);
    let started = Instant::now();
    let mut done = 0;
    while started.elapsed().as_secs_f64() < seconds {
        model.embed(&texts).expect("embedding works");
        done += batch;
    }
    done as f64 / started.elapsed().as_secs_f64()
}

/// The embedder's peer: all-MiniLM-L6-v2 on ONNX Runtime (scripts/peers/onnx_embedder.py, in
/// the virtualenv `make bench` makes for it; `BENCH_PYTHON` names its interpreter).
pub struct OnnxPeer {
    pub version: String,
    /// Texts per second by batch size.
    pub rates: Vec<(usize, f64)>,
    pub vectors: Vec<Vec<f32>>,
}

/// Runs the peer on `texts` (its vectors, in order) and, on copies of `rate_text`, its rate
/// at each of `batches`. `Ok(None)` when the peer is not installed.
pub fn onnx_peer(
    model_dir: &str,
    texts: &[String],
    rate_text: &str,
    batches: &[usize],
    seconds: f64,
) -> anyhow::Result<Option<OnnxPeer>> {
    let Ok(python) = std::env::var("BENCH_PYTHON") else {
        return Ok(None);
    };
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/peers/onnx_embedder.py");
    let input = std::env::temp_dir().join(format!("onnx-peer-{}.json", std::process::id()));
    std::fs::write(
        &input,
        serde_json::to_vec(&serde_json::json!({ "texts": texts, "rate_text": rate_text }))?,
    )?;
    let batches = batches
        .iter()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg(model_dir)
        .arg(&input)
        .arg(&batches)
        .env("PEER_SECONDS", seconds.to_string())
        .output()?;
    let _ = std::fs::remove_file(&input);
    anyhow::ensure!(
        out.status.success(),
        "the ONNX Runtime peer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut rates: Vec<(usize, f64)> = v["rates"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(b, r)| Some((b.parse().ok()?, r.as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    rates.sort_by_key(|(b, _)| *b);
    let vectors = serde_json::from_value(v["vectors"].clone())?;
    Ok(Some(OnnxPeer {
        version: v["version"].as_str().unwrap_or("?").to_owned(),
        rates,
        vectors,
    }))
}

/// The first sync's peer: the model alone on the same texts (title and body, as the pipeline
/// embeds a one-chunk email), in batches of 32, texts per second.
pub fn embed_rate_of_docs(model: &LocalModel, docs: &[DocumentInput]) -> f64 {
    let texts: Vec<String> = docs
        .iter()
        .map(|d| format!("{}\n{}", d.title, d.body))
        .collect();
    embed_rate(model, &texts, 32)
}

/// Texts per second embedding `texts` in batches of `batch`.
pub fn embed_rate(model: &LocalModel, texts: &[String], batch: usize) -> f64 {
    let _ = model.embed(&texts[..1]);
    let started = Instant::now();
    for chunk in texts.chunks(batch) {
        model.embed(chunk).expect("embedding works");
    }
    texts.len() as f64 / started.elapsed().as_secs_f64()
}

/// Three-word queries drawn like the synthetic corpus: one advisor word, two corpus words.
fn synthetic_queries(n: usize) -> Vec<String> {
    let words: Vec<&str> = VOCABULARY.split_whitespace().collect();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut uniform = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|i| {
            format!(
                "{} {} {}",
                words[i % words.len()],
                zipf_word(uniform()),
                zipf_word(uniform())
            )
        })
        .collect()
}

/// Searches run first and not counted: the services' database connections open and their
/// statements get prepared, as in a deployment that has served for a while.
const WARM_UP: usize = 20;

/// Hybrid search through the gateway vs a bare pgvector kNN query with the same vectors.
pub async fn search(
    env: &Env,
    user: UserId,
    model: &LocalModel,
    n: usize,
) -> anyhow::Result<(Stats, Stats)> {
    let token = env.token_for(user)?;
    let all = synthetic_queries(WARM_UP + n);
    let (warm_up, queries) = all.split_at(WARM_UP);
    let http = reqwest::Client::new();
    let mut latencies = Vec::with_capacity(n);
    let mut started = Instant::now();
    for (i, q) in warm_up.iter().chain(queries).enumerate() {
        if i == WARM_UP {
            latencies.clear();
            started = Instant::now();
        }
        let t = Instant::now();
        let response = http
            .get(format!("{}/api/embeddings/search", env.url))
            .bearer_auth(&token)
            .query(&[("q", q.as_str()), ("top_k", "10")])
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == 200,
            "search answered {}",
            response.status()
        );
        let body: serde_json::Value = response.json().await?;
        anyhow::ensure!(
            body["mode"] == "hybrid",
            "search fell back to {}",
            body["mode"]
        );
        latencies.push(t.elapsed());
    }
    let hybrid = stats(latencies, started.elapsed());

    // The peer is warmed up the same way.
    let vectors = model.embed(&all)?;
    let mut latencies = Vec::with_capacity(n);
    let mut started = Instant::now();
    // The user in the text, so even the statement's generic plan is made for this user's 100k
    // chunks (the HNSW index), not for an average user's hundred (the user index and a sort).
    let sql = format!(
        "SELECT id FROM chunks WHERE user_id = '{}' ORDER BY embedding <=> $1::vector LIMIT 10",
        user.0
    );
    for (i, v) in vectors.into_iter().enumerate() {
        if i == WARM_UP {
            latencies.clear();
            started = Instant::now();
        }
        let t = Instant::now();
        env.db
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                sql.as_str(),
                [pgvector::Vector::from(v).into()],
            ))
            .await?;
        latencies.push(t.elapsed());
    }
    Ok((hybrid, stats(latencies, started.elapsed())))
}

/// Where a search's time goes (medians over `n` queries run in-process through the same
/// searcher): embedding the query, then the vector, full-text and time candidates (read
/// concurrently), fusion with boosts, snippets.
pub async fn search_breakdown(env: &Env, user: UserId, n: usize) -> anyhow::Result<String> {
    let searcher = actions::search::Searcher::new(env.db.clone(), env.bus.clone(), &env.config);
    let mut parts: [Vec<Duration>; 6] = Default::default();
    for q in synthetic_queries(WARM_UP + n).into_iter().skip(WARM_UP) {
        let started = Instant::now();
        let found = searcher
            .search(
                user,
                actions::search::SearchRequest {
                    q,
                    top_k: Some(10),
                    ..Default::default()
                },
            )
            .await?;
        let t = found.timings;
        for (i, d) in [
            started.elapsed(),
            found.embed,
            t.vector,
            t.fulltext,
            t.fusion,
            t.snippets,
        ]
        .into_iter()
        .enumerate()
        {
            parts[i].push(d);
        }
    }
    let quantile = |v: &mut Vec<Duration>, q: f64| {
        v.sort();
        v[((v.len() as f64 * q) as usize).min(v.len() - 1)].as_secs_f64() * 1e3
    };
    let (total, embed) = (quantile(&mut parts[0], 0.5), quantile(&mut parts[1], 0.5));
    Ok(format!(
        "median {total:.1} ms = embed query {embed:.1} ({:.0}% of it) + max(vector {:.1}, full text {:.1}) + fusion {:.1} + snippets {:.1}; p99 {:.1} ms (embed {:.1}, vector {:.1}, full text {:.1})",
        100.0 * embed / total.max(1e-9),
        quantile(&mut parts[2], 0.5),
        quantile(&mut parts[3], 0.5),
        quantile(&mut parts[4], 0.5),
        quantile(&mut parts[5], 0.5),
        quantile(&mut parts[0], 0.99),
        quantile(&mut parts[1], 0.99),
        quantile(&mut parts[2], 0.99),
        quantile(&mut parts[3], 0.99),
    ))
}

/// The search evaluation (tests/data/search_eval) on a user of its own: each ranking's
/// quality and latency on the held-out third and on every question.
pub async fn search_quality(
    env: &Env,
    model: Arc<LocalModel>,
) -> anyhow::Result<Vec<(String, &'static str, crate::search_eval::Metrics)>> {
    use crate::search_eval;
    let user = db::users::ensure(&env.db, "eval-advisor@example.com").await?;
    let docs = search_eval::corpus()?;
    let labels = search_eval::load(
        &env.db,
        &env.config,
        embed::Embedder::Local(model),
        user,
        &docs,
    )
    .await?;
    let questions = search_eval::questions()?;
    let searcher = actions::search::Searcher::new(env.db.clone(), env.bus.clone(), &env.config);
    let mut out = Vec::new();
    for (split, held_out_only) in [("held-out", true), ("all", false)] {
        let qs: Vec<&search_eval::Question> = questions
            .iter()
            .filter(|q| q.held_out || !held_out_only)
            .collect();
        for (name, ranking) in search_eval::RANKINGS {
            search_eval::run(&searcher, user, &labels, &qs[..5], ranking).await?;
            let outcomes = search_eval::run(&searcher, user, &labels, &qs, ranking).await?;
            out.push((
                format!("{split} ({} questions)", qs.len()),
                name,
                search_eval::score(&qs, &outcomes),
            ));
        }
    }
    Ok(out)
}

/// CPU model, cores and memory of this machine.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    format!("{cpu}, {cores} cores, {mem:.0} GiB RAM")
}

/// Time from sending a chat request to the first piece of answer text, through the gateway
/// (`POST /api/chat/stream`, JetStream, the agent, the model, JetStream, the gateway), one
/// turn at a time.
pub async fn chat_ttft_gateway(env: &Env, token: &str, n: usize) -> anyhow::Result<Stats> {
    use futures::StreamExt;
    let http = reqwest::Client::new();
    let mut latencies = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        let response = http
            .post(format!("{}/api/chat/stream", env.url))
            .bearer_auth(token)
            .json(&serde_json::json!({"message": format!("Say something, {i}")}))
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == 200,
            "chat answered {}",
            response.status()
        );
        let mut body = response.bytes_stream();
        let mut seen = String::new();
        let mut first = None;
        while let Some(chunk) = body.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk?));
            if first.is_none() && seen.contains("event: delta") {
                first = Some(t.elapsed());
            }
            if seen.contains("event: done") || seen.contains("event: error") {
                break;
            }
        }
        anyhow::ensure!(!seen.contains("event: error"), "the turn failed: {seen}");
        latencies.push(first.ok_or_else(|| anyhow::anyhow!("no text in {seen}"))?);
    }
    Ok(stats(latencies, started.elapsed()))
}

/// The same measure against the model endpoint itself: first content chunk of a streamed
/// chat completion.
pub async fn chat_ttft_direct(model_url: &str, n: usize) -> anyhow::Result<Stats> {
    use futures::StreamExt;
    let http = reqwest::Client::new();
    let mut latencies = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        let response = http
            .post(format!("{model_url}/chat/completions"))
            .json(&serde_json::json!({
                "model": "fake-model", "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": format!("Say something, {i}")}]
            }))
            .send()
            .await?;
        let mut body = response.bytes_stream();
        let mut seen = String::new();
        let mut first = None;
        while let Some(chunk) = body.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk?));
            // The first chunk names the role with empty content; the second carries text.
            if first.is_none() && seen.matches("\"content\":\"").count() >= 2 {
                first = Some(t.elapsed());
            }
            if seen.contains("[DONE]") {
                break;
            }
        }
        latencies.push(first.ok_or_else(|| anyhow::anyhow!("no text in {seen}"))?);
    }
    Ok(stats(latencies, started.elapsed()))
}

/// Whole turns through the gateway, `concurrency` conversations at a time.
pub async fn chat_turns(
    env: &Env,
    tokens: Arc<Vec<String>>,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Stats> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let url = format!("{}/api/chat/message", env.url);
    load(n, concurrency, move |i| {
        let (http, url, tokens) = (http.clone(), url.clone(), tokens.clone());
        async move {
            let response = http
                .post(&url)
                .bearer_auth(&tokens[i % tokens.len()])
                .json(&serde_json::json!({"message": format!("Tell me something, {i}")}))
                .send()
                .await?;
            anyhow::ensure!(
                response.status() == 200,
                "chat answered {}",
                response.status()
            );
            let reply: serde_json::Value = response.json().await?;
            anyhow::ensure!(reply["status"] == "done", "turn ended {}", reply["status"]);
            Ok(())
        }
    })
    .await
}

/// Whole streamed completions against the model endpoint alone, at the same concurrency.
pub async fn chat_direct(model_url: &str, n: usize, concurrency: usize) -> anyhow::Result<Stats> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let url = format!("{model_url}/chat/completions");
    load(n, concurrency, move |i| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let text = http
                .post(&url)
                .json(&serde_json::json!({
                    "model": "fake-model", "stream": true,
                    "messages": [{"role": "user", "content": format!("Tell me something, {i}")}]
                }))
                .send()
                .await?
                .text()
                .await?;
            anyhow::ensure!(text.contains("[DONE]"), "incomplete completion");
            Ok(())
        }
    })
    .await
}

/// A running service's resident memory, in MB.
pub fn rss_mb_of(services: &Services, name: &str) -> f64 {
    services
        .children
        .get(name)
        .map(|c| rss_mb(c.id()))
        .unwrap_or(0.0)
}
