//! Test harness: every service booted in-process against the real Postgres and NATS, each
//! test isolated in its own database (cloned from a migrated template) and its own stream and
//! subject prefix. Dropping a [`TestApp`] stops its services and removes both.

use common::auth::Tokens;
use common::bus::Bus;
use common::{Config, DocumentId, UserId};
use migration::MigratorTrait;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub mod bench;
pub mod bench_rules;
pub mod fairness;
pub mod fake_model;
pub mod fuzz;
pub mod insights_eval;
pub mod proxy;
pub mod search_eval;
pub mod trend_eval;

pub const SERVICES: [&str; 5] = [
    "gateway",
    "ingest",
    "embedding",
    "rules-engine",
    "tool-executor",
];

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_owned())
}

/// The Postgres server tests use: `TEST_DATABASE_URL`, else `DATABASE_URL`, else local.
fn server_url() -> String {
    let url = std::env::var("TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/assistant".into());
    url.rsplit_once('/')
        .map(|(server, _)| server.to_owned())
        .unwrap_or(url)
}

async fn admin() -> DatabaseConnection {
    db::connect(&format!("{}/postgres", server_url()), 2)
        .await
        .expect("Postgres must be running: scripts/setup.sh starts it")
}

/// A migrated template database, made once per schema version and cloned for every test.
async fn template() -> String {
    let names: Vec<String> = migration::Migrator::migrations()
        .iter()
        .map(|m| m.name().to_owned())
        .collect();
    let name = format!(
        "assistant_tmpl_{}",
        &common::events::short_hash(&names.iter().map(String::as_str).collect::<Vec<_>>())[..12]
    );
    let admin = admin().await;
    // One process creates it; the others wait on the lock and then find it.
    admin
        .execute_unprepared("SELECT pg_advisory_lock(727274)")
        .await
        .unwrap();
    let exists = admin
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT 1 AS one FROM pg_database WHERE datname = $1",
            [name.clone().into()],
        ))
        .await
        .unwrap()
        .is_some();
    if !exists {
        let building = format!("{name}_building");
        admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{building}\""))
            .await
            .unwrap();
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{building}\""))
            .await
            .unwrap();
        let db = db::connect(&format!("{}/{building}", server_url()), 2)
            .await
            .unwrap();
        migration::Migrator::up(&db, None)
            .await
            .expect("migrations apply");
        db.close().await.ok();
        admin
            .execute_unprepared(&format!(
                "ALTER DATABASE \"{building}\" RENAME TO \"{name}\""
            ))
            .await
            .unwrap();
    }
    admin
        .execute_unprepared("SELECT pg_advisory_unlock(727274)")
        .await
        .unwrap();
    name
}

/// Removes streams that interrupted test runs left behind (prefix `T<10 hex>_`, over an hour old).
async fn sweep_stale_streams(nats_url: &str) {
    use futures::StreamExt;
    let Ok(client) = async_nats::connect(nats_url).await else {
        return;
    };
    let js = async_nats::jetstream::new(client);
    let mut streams = js.streams();
    let cutoff = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let mut stale = Vec::new();
    while let Some(Ok(info)) = streams.next().await {
        let name = &info.config.name;
        let test_prefix = name.len() > 12
            && name.starts_with('T')
            && name.as_bytes()[11] == b'_'
            && name[1..11].bytes().all(|b| b.is_ascii_hexdigit());
        if test_prefix && info.created < cutoff {
            stale.push(name.clone());
        }
    }
    for name in stale {
        let _ = js.delete_stream(&name).await;
    }
}

async fn fresh_database(name: &str) {
    let template = template().await;
    let admin = admin().await;
    for attempt in 0.. {
        match admin
            .execute_unprepared(&format!(
                "CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""
            ))
            .await
        {
            Ok(_) => return,
            // Another test cloning the template at the same instant: try again.
            Err(e) if attempt < 20 => {
                tracing::debug!(error = %e, "template busy");
                tokio::time::sleep(Duration::from_millis(100 + attempt * 50)).await;
            }
            Err(e) => panic!("cannot create test database: {e}"),
        }
    }
}

/// The token key ring every test deployment uses.
pub const TEST_TOKEN_KEYS: &str = "test1:dGVzdC1rZXktZm9yLXRva2Vucy0zMi1ieXRlcyEhISE=";

/// Settings for a test deployment: a private database and NATS prefix, short timings.
pub async fn test_config() -> Config {
    let id = Uuid::new_v4().simple().to_string();
    let db_name = format!("test_{}", &id[..16]);
    fresh_database(&db_name).await;
    let nats_url = env_or("NATS_URL", "nats://127.0.0.1:4222");
    sweep_stale_streams(&nats_url).await;
    Config {
        database_url: format!("{}/{db_name}", server_url()),
        db_max_connections: 5,
        nats_url,
        nats_prefix: format!("t{}", &id[..10]),
        publish_timeout_ms: 2_000,
        bind_addr: "127.0.0.1:0".into(),
        secret_key: format!("test-secret-{}", Uuid::new_v4()),
        // Tests send bursts from one address; the edge tests turn limits on themselves.
        rate_limit_user_per_minute: 0,
        rate_limit_ip_per_minute: 0,
        rate_limit_webhook_per_minute: 0,
        consumer_concurrency: 8,
        retry_base_ms: 100,
        retry_max_ms: 500,
        // A fixed test key: connections work as in production.
        token_encryption_keys: TEST_TOKEN_KEYS.into(),
        consumer_ack_wait_secs: 3,
        tool_lease_secs: 3,
        rules_timer_interval_ms: 200,
        shutdown_timeout_secs: 5,
        ..Config::default()
    }
}

/// Panics anywhere in this test process: a service task that panics is caught by tokio and
/// would otherwise go unnoticed, so [`TestApp`] fails the test when it is dropped.
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            default(info);
        }));
    });
}

/// Every log line the services wrote in this test process, through the production formatter
/// (redaction included) at debug level.
static LOGS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

#[derive(Clone, Copy)]
struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        LOGS.lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs(config: &Config) {
    static GUARD: std::sync::OnceLock<common::telemetry::TelemetryGuard> =
        std::sync::OnceLock::new();
    GUARD.get_or_init(|| {
        common::telemetry::init_to(
            "e2e",
            config,
            || Capture,
            Some("debug,sqlx=warn,sea_orm=warn,hyper=info,hyper_util=info,h2=info,reqwest=info,rustls=info,tokenizers=warn,tower=info,async_nats=info"),
        )
    });
}

/// The captured log text so far.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

struct Running {
    cancel: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

pub struct TestApp {
    pub config: Config,
    pub db: DatabaseConnection,
    pub bus: Bus,
    pub url: String,
    pub http: reqwest::Client,
    pub tokens: Tokens,
    running: HashMap<&'static str, Running>,
    /// The address the next gateway start listens on, when bound in advance.
    listener: Option<tokio::net::TcpListener>,
}

/// Values that must never appear in the logs (addresses, tokens, secrets, bodies), for the
/// whole test process: checked when a [`TestApp`] is dropped. The provider fakes mark every
/// token they issue.
static SENSITIVE: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Marks a value the services must never write to their logs.
pub fn mark_sensitive(value: &str) {
    if !value.is_empty() {
        SENSITIVE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(value.to_owned());
    }
}

/// Log lines that contain a value marked sensitive.
pub fn leaks() -> Vec<String> {
    let logs = captured_logs();
    let sensitive = SENSITIVE.lock().unwrap_or_else(|e| e.into_inner());
    logs.lines()
        .filter(|line| sensitive.iter().any(|s| line.contains(s.as_str())))
        .map(str::to_owned)
        .collect()
}

impl TestApp {
    /// Every service.
    pub async fn spawn() -> Self {
        Self::spawn_only(&SERVICES).await
    }

    /// Only the named services (the gateway always runs).
    pub async fn spawn_only(services: &[&'static str]) -> Self {
        Self::spawn_with(test_config().await, services).await
    }

    /// As [`Self::spawn_with`], with `PUBLIC_URL` the gateway's own address, as a browser
    /// sees it: cookie-authenticated writes from its pages pass the same-origin check.
    pub async fn spawn_served(mut config: Config, services: &[&'static str]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        config.public_url = format!("http://{}", listener.local_addr().unwrap());
        Self::spawn_inner(config, services, Some(listener)).await
    }

    pub async fn spawn_with(config: Config, services: &[&'static str]) -> Self {
        Self::spawn_inner(config, services, None).await
    }

    async fn spawn_inner(
        config: Config,
        services: &[&'static str],
        listener: Option<tokio::net::TcpListener>,
    ) -> Self {
        count_panics();
        capture_logs(&config);
        let db = db::connect(&config.database_url, 5).await.unwrap();
        let bus = Bus::connect(
            &config.nats_url,
            &config.nats_prefix,
            config.publish_timeout(),
        )
        .await
        .unwrap();
        bus.apply_topology(&config)
            .await
            .expect("NATS with JetStream must be running");
        let mut app = Self {
            tokens: Tokens::from_config(&config),
            config,
            db,
            bus,
            url: String::new(),
            http: reqwest::Client::new(),
            running: HashMap::new(),
            listener,
        };
        app.start("gateway").await;
        for s in services.iter().filter(|s| **s != "gateway") {
            app.start(s).await;
        }
        app
    }

    /// Starts (or restarts) one service in-process.
    pub async fn start(&mut self, service: &'static str) {
        let cancel = CancellationToken::new();
        let config = self.config.clone();
        let handle = match service {
            "gateway" => {
                let listener = match self.listener.take() {
                    Some(l) => l,
                    None => tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
                };
                self.url = format!("http://{}", listener.local_addr().unwrap());
                let state = gateway::state(config).await.unwrap();
                tokio::spawn(gateway::serve(state, listener, cancel.clone()))
            }
            "ingest" => tokio::spawn(ingest::run(config, cancel.clone())),
            "embedding" => tokio::spawn(embedding::run(config, cancel.clone())),
            "rules-engine" => tokio::spawn(rules_engine::run(config, cancel.clone())),
            "tool-executor" => tokio::spawn(tool_executor::run(config, cancel.clone())),
            other => panic!("no service {other}"),
        };
        self.running.insert(service, Running { cancel, handle });
    }

    /// Another gateway replica on the same database and streams (stopped with the app); its
    /// base URL.
    pub async fn another_gateway(&mut self, name: &'static str) -> String {
        let cancel = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = gateway::state(self.config.clone()).await.unwrap();
        let handle = tokio::spawn(gateway::serve(state, listener, cancel.clone()));
        self.running.insert(name, Running { cancel, handle });
        url
    }

    /// Kills a service at once, as a crash would: no acks, no naks, nothing finished.
    pub async fn kill(&mut self, service: &'static str) {
        if let Some(r) = self.running.remove(service) {
            r.handle.abort();
            let _ = r.handle.await;
        }
    }

    /// Stops a service the way SIGTERM does, and waits for it.
    pub async fn stop(&mut self, service: &'static str) -> anyhow::Result<()> {
        match self.running.remove(service) {
            Some(r) => {
                r.cancel.cancel();
                r.handle.await?
            }
            None => Ok(()),
        }
    }

    /// A user and a bearer token for them. Neither the address nor the token may appear in
    /// the logs of the test.
    pub async fn user(&self, email: &str) -> (UserId, String) {
        let id = db::users::ensure(&self.db, email).await.unwrap();
        let token = self
            .tokens
            .issue(id, email, chrono::Duration::hours(1))
            .unwrap();
        mark_sensitive(email);
        mark_sensitive(&token);
        (id, token)
    }

    pub async fn post_documents(&self, token: &str, body: &serde_json::Value) -> reqwest::Response {
        self.http
            .post(format!("{}/api/ingest/documents", self.url))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn search(&self, token: &str, query: &[(&str, &str)]) -> serde_json::Value {
        let response = self
            .http
            .get(format!("{}/api/embeddings/search", self.url))
            .bearer_auth(token)
            .query(query)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "search failed");
        response.json().await.unwrap()
    }

    /// Whether the document exists and its current content is indexed.
    pub async fn indexed(&self, id: DocumentId) -> bool {
        db::documents::get(&self.db, id)
            .await
            .unwrap()
            .is_some_and(|d| d.indexed_hash.as_deref() == Some(d.content_hash.as_str()))
    }

    /// Messages stored in one of the declared streams.
    /// Messages per subject in a stream, for subjects matching `filter` (no deployment
    /// prefix on either side).
    pub async fn subject_counts(&self, stream: &str, filter: &str) -> HashMap<String, usize> {
        use futures::TryStreamExt;
        let s = self
            .bus
            .js
            .get_stream(self.bus.ns.stream(stream))
            .await
            .unwrap();
        let prefix = format!("{}.", self.config.nats_prefix);
        s.info_with_subjects(self.bus.ns.subject(filter))
            .await
            .unwrap()
            .map_ok(|(subject, count)| {
                (
                    subject.strip_prefix(&prefix).unwrap_or(&subject).to_owned(),
                    count,
                )
            })
            .try_collect()
            .await
            .unwrap()
    }

    pub async fn stream_messages(&self, stream: &str) -> u64 {
        let mut s = self
            .bus
            .js
            .get_stream(self.bus.ns.stream(stream))
            .await
            .unwrap();
        s.info().await.unwrap().state.messages
    }

    /// `GET /metrics` as Prometheus text (the test client is local, so no token is needed).
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn scalar_i64(&self, sql: &str) -> i64 {
        let row = self
            .db
            .query_one_raw(Statement::from_string(DbBackend::Postgres, sql.to_owned()))
            .await
            .unwrap()
            .unwrap();
        row.try_get_by_index::<i64>(0).unwrap()
    }
}

/// Polls `check` until it holds or `timeout` passes; panics naming `what` then.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return;
        }
        if started.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let panicked = PANICS.load(Ordering::SeqCst);
        for (_, r) in self.running.drain() {
            r.cancel.cancel();
            r.handle.abort();
        }
        let db_name = self
            .config
            .database_url
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let ns = self.bus.ns.clone();
        let nats_url = self.config.nats_url.clone();
        let streams: Vec<String> = common::topology::Topology::shipped()
            .map(|t| t.streams.iter().map(|s| ns.stream(&s.name)).collect())
            .unwrap_or_default();
        // Clean up on a runtime of our own: Drop cannot await, and may run during a panic.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                // A connection of this thread's own: the test's runtime is blocked in drop.
                if let Ok(client) = async_nats::connect(&nats_url).await {
                    let js = async_nats::jetstream::new(client);
                    for s in streams {
                        let _ = js.delete_stream(&s).await;
                    }
                }
                if let Ok(admin) = db::connect(&format!("{}/postgres", server_url()), 1).await {
                    let _ = admin
                        .execute_unprepared(&format!(
                            "DROP DATABASE IF EXISTS \"{db_name}\" WITH (FORCE)"
                        ))
                        .await;
                }
            });
        });
        let _ = cleanup.join();
        if !std::thread::panicking() {
            let leaks = leaks();
            if !leaks.is_empty() {
                panic!(
                    "{} log line(s) hold a sensitive value:\n{}",
                    leaks.len(),
                    leaks.join("\n")
                );
            }
        }
        if panicked > 0 && !std::thread::panicking() {
            panic!("{panicked} panic(s) in the services during this test: see the output above");
        }
    }
}
