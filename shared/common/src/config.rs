//! Layered configuration: built-in defaults, then an optional TOML file (`CONFIG_FILE`), then
//! environment variables of the same name in upper case. Every field is documented in
//! `.env.example`; binaries load it once and pass it down, libraries never read the environment.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("invalid configuration: {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// Which embedder turns text into vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbeddingProvider {
    /// all-MiniLM-L6-v2 in-process (its own CPU encoder): no key, no network.
    Local,
    /// Any OpenAI-compatible `/embeddings` endpoint.
    Openai,
}

/// Which chat model answers the assistant's turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatProvider {
    /// Any OpenAI-compatible `/chat/completions` endpoint with streaming and tool calls.
    Openai,
    /// No model: chat answers with the best sources for the question, and says so.
    None,
}

/// Secrets that were published (old defaults, examples): a deployment using one is open to
/// anyone who read them.
const PUBLISHED_SECRETS: [&str; 3] = [
    "dev-only-secret-change-me-dev-only-secret",
    "change-me-change-me-change-me-change-me",
    "change-me",
];

/// Used when `APP_ENV=development` and no `SECRET_KEY` is set.
const DEVELOPMENT_SECRET: &str = "development-only-secret-never-use-in-production";

/// Settings whose values `redacted` never shows.
const SECRET_FIELDS: [&str; 9] = [
    "metrics_token",
    "chat_api_key",
    "secret_key",
    "token_encryption_keys",
    "openai_api_key",
    "google_client_secret",
    "hubspot_client_secret",
    "slack_client_secret",
    "slack_signing_secret",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `production` (default) or `development`. Only development accepts a missing, short or
    /// published SECRET_KEY.
    pub app_env: String,
    /// Postgres connection URL (the database must have the pgvector extension available).
    pub database_url: String,
    /// Maximum connections in each service's Postgres pool.
    pub db_max_connections: u32,
    /// NATS server URL (JetStream enabled).
    pub nats_url: String,
    /// Prefix for every stream and subject name; empty in production, private per test.
    pub nats_prefix: String,
    /// How long a publish waits for the JetStream PubAck before the request fails with 503.
    pub publish_timeout_ms: u64,
    /// Address the gateway listens on.
    pub bind_addr: String,
    /// Public base URL of the gateway, printed for users and used in links.
    pub public_url: String,
    /// Secret for signing API tokens (HS256). Must be at least 32 bytes outside development.
    pub secret_key: String,
    /// Keys that encrypt provider tokens at rest: `id:base64(32 bytes)`, comma-separated,
    /// current key first (`ctl keys generate` makes one; `ctl keys rotate` re-encrypts).
    pub token_encryption_keys: String,
    /// Lifetime of tokens made by `ctl token`, in days.
    pub token_ttl_days: i64,
    /// Largest number of documents in one `POST /api/ingest/documents` request.
    pub max_batch_documents: usize,
    /// Largest document body, in bytes.
    pub max_document_bytes: usize,
    /// Largest HTTP request body, in bytes.
    pub max_request_bytes: usize,
    /// Browser origins (`https://app.example.com`) allowed to call the API with credentials,
    /// comma-separated; empty: same-origin only.
    pub cors_allowed_origins: String,
    /// Longest time a request may take before the gateway answers 503.
    pub request_timeout_secs: u64,
    /// Longest time a client may take to send its request headers before the connection is
    /// closed (slowloris protection).
    pub header_read_timeout_secs: u64,
    /// Requests per minute one signed-in user may make (0: no limit).
    pub rate_limit_user_per_minute: u32,
    /// Requests per minute from one client address to any route but webhooks (0: no limit).
    pub rate_limit_ip_per_minute: u32,
    /// Requests per minute from one client address to the provider and generic webhooks,
    /// verified by signature, so higher (0: no limit).
    pub rate_limit_webhook_per_minute: u32,
    /// Reverse proxies in front of the gateway that append to `X-Forwarded-For`; 0 trusts the
    /// header not at all and limits by the TCP peer.
    pub trusted_proxies: u32,
    /// Documents of one user that may wait for indexing in the interactive lane; what the user
    /// sends beyond that is accepted into the bulk lane, so one tenant cannot delay the others.
    pub interactive_share_per_user: u64,
    /// Seconds a gateway may answer from memory that a bearer token is still good (its user
    /// exists, it is not revoked). A revocation reaches every gateway when it commits (Postgres
    /// NOTIFY); this bounds how long a lost notification could go unnoticed. 0: ask Postgres on
    /// every request.
    pub auth_cache_secs: u64,
    /// Searches one gateway runs at once; more are answered 503 with Retry-After.
    pub search_max_concurrent: usize,
    /// Query embeddings one gateway waits for at once; a search beyond it runs on full text.
    pub query_embed_max_in_flight: usize,
    /// Bearer token that reads `/metrics`; when empty, only loopback clients may read it.
    pub metrics_token: String,
    /// `local` (in-process all-MiniLM-L6-v2) or `openai` (any OpenAI-compatible endpoint).
    pub embedding_provider: EmbeddingProvider,
    /// Folder holding `model.safetensors`, `tokenizer.json` and `config.json` for the local model.
    pub embedding_model_dir: String,
    /// Vector size stored in Postgres; the provider must produce exactly this many dimensions.
    pub embedding_dimensions: usize,
    /// Model name sent to the OpenAI-compatible endpoint.
    pub embedding_model: String,
    /// Base URL of the OpenAI-compatible endpoint (OpenAI, Azure, Ollama, vLLM, llama.cpp).
    pub openai_base_url: String,
    /// API key for the OpenAI-compatible endpoint (may be empty for local servers).
    pub openai_api_key: String,
    /// Most texts gathered into one model call (the local model groups them by length).
    pub embed_batch_size: usize,
    /// `none` (default: retrieval-only answers, no key needed) or `openai` (any
    /// OpenAI-compatible chat endpoint: OpenAI, Azure, Ollama, vLLM, llama.cpp server).
    pub chat_provider: ChatProvider,
    /// Model name sent to the chat endpoint.
    pub chat_model: String,
    /// Base URL of the chat endpoint; empty means OPENAI_BASE_URL.
    pub chat_base_url: String,
    /// API key of the chat endpoint; empty means OPENAI_API_KEY.
    pub chat_api_key: String,
    /// Most model rounds (a round may call tools) in one turn.
    pub chat_max_tool_rounds: u32,
    /// Tokens of conversation history (earlier turns, tool calls and results) sent to the
    /// model; the oldest are left out first.
    pub chat_history_tokens: usize,
    /// Longest one model call may take, streaming included.
    pub chat_model_timeout_secs: u64,
    /// Retries of one model call after 429, 5xx or a dropped connection.
    pub chat_max_retries: u32,
    /// Turns one agent (tool-executor) answers at once. A turn mostly waits for the model,
    /// so this is far above CONSUMER_CONCURRENCY.
    pub chat_max_concurrent_turns: usize,
    /// Tools whose every call waits for the user's approval (comma-separated). Whatever this
    /// says, calendar invitations to people outside the user's domain and writes proposed
    /// after reading outside content that the user's own words do not support also wait.
    pub approval_required_tools: String,
    /// How long an approval waits before it expires (and never runs).
    pub approval_ttl_minutes: i64,
    /// How long a claim on a running write holds without renewal (renewed every third of it
    /// while the provider call runs); after a crash another attempt takes the write over,
    /// reconciling with the provider first, once it runs out.
    pub tool_lease_secs: u64,
    /// How deep a chain of rules may go: an event caused by a rule's own effect is one deeper
    /// than the event that fired it; a firing at this depth stops and is recorded.
    pub rules_max_chain_depth: i32,
    /// Per-user bounds on what all users share (0: none). Active rules a user may have.
    pub rules_max_active_per_user: i64,
    /// Rule firings per user per minute; past it a firing is recorded as `quota_exceeded`.
    pub rules_max_firings_per_minute: i64,
    /// Backtests per user per minute, and the most days one may read.
    pub backtests_per_user_per_minute: i64,
    pub backtest_max_days: i64,
    /// Cosine similarity (0–1) of a new insight item to a theme's centroid at or above
    /// which the item joins that theme; below it, the item starts a theme.
    pub insights_theme_join: f32,
    /// With a model, an item whose closest theme is at least this similar (and under
    /// `insights_theme_join`) is shown to the model with the theme, which decides.
    pub insights_theme_ask: f32,
    /// Average similarity at which the periodic regrouping of all of a user's items keeps two
    /// groups together.
    pub insights_theme_regroup: f32,
    /// With a model, a message whose local tier-1 score is within this many points of the
    /// threshold (`min_score - band <= score < min_score + band`) is scored by the model
    /// (batched); 0: tier 1 stays local.
    pub insights_model_band: u8,
    /// Model tokens per user per day (UTC), for chat, compiling rules and tier 2.
    pub model_tokens_per_user_per_day: i64,
    /// What each model costs, for the usage report: `model=input/output` in US dollars per
    /// million tokens, comma-separated. A model not listed shows no cost.
    pub model_prices: String,
    /// Turns a user may have queued or running at once (the gateway answers 429 past it; an
    /// agent replica takes at most this many of one user's turns at a time).
    pub chat_max_turns_per_user: i64,
    /// Event streams (SSE) one user may hold open on one gateway replica.
    pub chat_max_streams_per_user: i64,
    /// After this many quiet seconds an event stream looks its turn up, and ends when the
    /// turn finished without its last event, is gone, or can no longer finish.
    pub chat_stream_check_secs: u64,
    /// How often the rules engine looks for waits whose deadline passed.
    pub rules_timer_interval_ms: u64,
    /// Target chunk size in model tokens.
    pub chunk_tokens: usize,
    /// Tokens shared by consecutive chunks.
    pub chunk_overlap: usize,
    /// Messages each consumer processes at once.
    pub consumer_concurrency: usize,
    /// First retry delay after a retryable failure; doubles each delivery up to `retry_max_ms`.
    pub retry_base_ms: u64,
    /// Longest retry delay.
    pub retry_max_ms: u64,
    /// Overrides every consumer's ack wait (seconds) from nats/jetstream.toml; 0 keeps the
    /// declared values. Tests shorten it to see redeliveries after a crash quickly.
    pub consumer_ack_wait_secs: u64,
    /// How long a service waits for in-flight work on shutdown before giving up.
    pub shutdown_timeout_secs: u64,
    /// OTLP/HTTP endpoint for traces (e.g. http://localhost:4318); traces stay local when empty.
    pub otel_exporter_otlp_endpoint: String,
    /// `text` or `json` log lines.
    pub log_format: String,
    /// OAuth client id of the Google app (sign-in, Gmail, Calendar); sign-in is off when empty.
    pub google_client_id: String,
    /// OAuth client secret of the Google app.
    pub google_client_secret: String,
    /// Google's authorization endpoint.
    pub google_auth_url: String,
    /// Google's token endpoint.
    pub google_token_url: String,
    /// Google's OpenID Connect userinfo endpoint.
    pub google_userinfo_url: String,
    /// Google's token revocation endpoint (used when a user disconnects).
    pub google_revoke_url: String,
    /// Base URL of the Gmail API.
    pub gmail_api_base: String,
    /// Base URL of the Google Calendar API.
    pub calendar_api_base: String,
    /// Pub/Sub topic Gmail `watch` publishes to (`projects/<p>/topics/<t>`); no watch when empty.
    pub gmail_pubsub_topic: String,
    /// `aud` the Pub/Sub push subscription puts in its OIDC token (default: PUBLIC_URL/api/webhooks/gmail).
    pub gmail_push_audience: String,
    /// Service account email the push subscription signs as; pushes from any other account are refused.
    pub gmail_push_service_account: String,
    /// Where Google's token-signing keys are fetched (cached per Cache-Control).
    pub google_jwks_url: String,
    /// A JSON Web Key Set to use instead of fetching GOOGLE_JWKS_URL (air-gapped deployments, tests).
    pub google_jwks: String,
    /// OAuth client id of the HubSpot app; HubSpot connect is off when empty.
    pub hubspot_client_id: String,
    /// OAuth client secret of the HubSpot app; also the key for webhook signatures.
    pub hubspot_client_secret: String,
    /// Accept HubSpot's v1/v2 webhook signatures, which sign no timestamp (a captured
    /// delivery stays valid forever). Off: only v3 is accepted, which HubSpot sends with every
    /// app webhook; turn on only for an app that cannot send v3.
    pub hubspot_accept_legacy_signatures: bool,
    /// HubSpot's authorization page.
    pub hubspot_auth_url: String,
    /// Base URL of the HubSpot API (token endpoint included).
    pub hubspot_api_base: String,
    /// OAuth client id of the Slack app; Slack connect is off when empty.
    pub slack_client_id: String,
    /// OAuth client secret of the Slack app.
    pub slack_client_secret: String,
    /// Slack signing secret for Events API requests.
    pub slack_signing_secret: String,
    /// Slack's authorization page.
    pub slack_auth_url: String,
    /// Base URL of the Slack Web API.
    pub slack_api_base: String,
    /// How long a browser session lasts.
    pub session_ttl_hours: i64,
    /// Most items one sync run stores; a run that hits it queues its own continuation.
    pub sync_max_items: usize,
    /// Items larger than this are skipped and recorded with the reason.
    pub sync_max_item_bytes: usize,
    /// How far back the first Gmail sync reads.
    pub gmail_initial_days: u32,
    /// How far back the first Calendar sync reaches (later changes arrive whatever their date).
    pub calendar_initial_days: u32,
    /// Safety-net sync period per connection, in addition to webhooks; 0 turns it off.
    pub sync_interval_secs: u64,
    /// Timeout of each provider API call.
    pub provider_timeout_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            app_env: "production".into(),
            database_url: "postgres://postgres:postgres@127.0.0.1:5432/assistant".into(),
            db_max_connections: 10,
            nats_url: "nats://127.0.0.1:4222".into(),
            nats_prefix: String::new(),
            publish_timeout_ms: 5_000,
            bind_addr: "0.0.0.0:8000".into(),
            public_url: "http://localhost:8000".into(),
            secret_key: String::new(),
            token_encryption_keys: String::new(),
            token_ttl_days: 30,
            max_batch_documents: 100,
            max_document_bytes: 256 * 1024,
            max_request_bytes: 8 * 1024 * 1024,
            cors_allowed_origins: String::new(),
            request_timeout_secs: 30,
            header_read_timeout_secs: 10,
            rate_limit_user_per_minute: 600,
            rate_limit_ip_per_minute: 1_200,
            rate_limit_webhook_per_minute: 12_000,
            trusted_proxies: 0,
            metrics_token: String::new(),
            interactive_share_per_user: 100,
            auth_cache_secs: 5,
            search_max_concurrent: 64,
            query_embed_max_in_flight: 16,
            embedding_provider: EmbeddingProvider::Local,
            embedding_model_dir: default_model_dir(),
            embedding_dimensions: 384,
            embedding_model: "text-embedding-3-small".into(),
            openai_base_url: "https://api.openai.com/v1".into(),
            openai_api_key: String::new(),
            embed_batch_size: 32,
            chat_provider: ChatProvider::None,
            chat_model: "gpt-4o-mini".into(),
            chat_base_url: String::new(),
            chat_api_key: String::new(),
            chat_max_tool_rounds: 6,
            chat_history_tokens: 8_000,
            chat_model_timeout_secs: 60,
            chat_max_retries: 4,
            chat_max_concurrent_turns: 128,
            approval_required_tools: "send_email".into(),
            approval_ttl_minutes: 1_440,
            tool_lease_secs: 30,
            rules_max_chain_depth: 3,
            rules_max_active_per_user: 200,
            rules_max_firings_per_minute: 120,
            backtests_per_user_per_minute: 6,
            backtest_max_days: 14,
            insights_theme_join: 0.55,
            insights_theme_ask: 0.45,
            insights_theme_regroup: 0.55,
            insights_model_band: 3,
            model_tokens_per_user_per_day: 2_000_000,
            model_prices: DEFAULT_MODEL_PRICES.into(),
            chat_max_turns_per_user: 4,
            chat_max_streams_per_user: 16,
            chat_stream_check_secs: 20,
            rules_timer_interval_ms: 1_000,
            chunk_tokens: 200,
            chunk_overlap: 40,
            consumer_concurrency: 16,
            retry_base_ms: 1_000,
            retry_max_ms: 60_000,
            consumer_ack_wait_secs: 0,
            shutdown_timeout_secs: 20,
            otel_exporter_otlp_endpoint: String::new(),
            log_format: "text".into(),
            google_client_id: String::new(),
            google_client_secret: String::new(),
            google_auth_url: "https://accounts.google.com/o/oauth2/v2/auth".into(),
            google_token_url: "https://oauth2.googleapis.com/token".into(),
            google_userinfo_url: "https://openidconnect.googleapis.com/v1/userinfo".into(),
            google_revoke_url: "https://oauth2.googleapis.com/revoke".into(),
            gmail_api_base: "https://gmail.googleapis.com".into(),
            calendar_api_base: "https://www.googleapis.com/calendar/v3".into(),
            gmail_pubsub_topic: String::new(),
            gmail_push_audience: String::new(),
            gmail_push_service_account: String::new(),
            google_jwks_url: "https://www.googleapis.com/oauth2/v3/certs".into(),
            google_jwks: String::new(),
            hubspot_client_id: String::new(),
            hubspot_client_secret: String::new(),
            hubspot_accept_legacy_signatures: false,
            hubspot_auth_url: "https://app.hubspot.com/oauth/authorize".into(),
            hubspot_api_base: "https://api.hubapi.com".into(),
            slack_client_id: String::new(),
            slack_client_secret: String::new(),
            slack_signing_secret: String::new(),
            slack_auth_url: "https://slack.com/oauth/v2/authorize".into(),
            slack_api_base: "https://slack.com/api".into(),
            session_ttl_hours: 24 * 14,
            sync_max_items: 60,
            sync_max_item_bytes: 50 * 1024,
            gmail_initial_days: 30,
            calendar_initial_days: 365,
            sync_interval_secs: 900,
            provider_timeout_secs: 20,
        }
    }
}

fn default_model_dir() -> String {
    // Same place scripts/setup.sh fetches the model into.
    let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
    format!("{home}/.cache/assistant/models/all-MiniLM-L6-v2")
}

impl Config {
    /// Defaults, then `CONFIG_FILE` (TOML) when set, then environment variables.
    pub fn load() -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Ok(path) = std::env::var("CONFIG_FILE") {
            figment = figment.merge(Toml::file(path));
        }
        let keys: Vec<String> = Self::field_names().map(str::to_owned).collect();
        figment = figment.merge(Env::raw().filter(move |k| keys.iter().any(|f| k == f.as_str())));
        let mut config: Config = figment.extract().map_err(Box::new)?;
        if config.is_development() && config.secret_key.is_empty() {
            config.secret_key = DEVELOPMENT_SECRET.into();
        }
        config.validate()?;
        Ok(config)
    }

    fn field_names() -> impl Iterator<Item = &'static str> {
        [
            "app_env",
            "database_url",
            "db_max_connections",
            "nats_url",
            "nats_prefix",
            "publish_timeout_ms",
            "bind_addr",
            "public_url",
            "secret_key",
            "token_encryption_keys",
            "token_ttl_days",
            "max_batch_documents",
            "max_document_bytes",
            "max_request_bytes",
            "cors_allowed_origins",
            "request_timeout_secs",
            "header_read_timeout_secs",
            "rate_limit_user_per_minute",
            "rate_limit_ip_per_minute",
            "rate_limit_webhook_per_minute",
            "trusted_proxies",
            "metrics_token",
            "interactive_share_per_user",
            "auth_cache_secs",
            "search_max_concurrent",
            "query_embed_max_in_flight",
            "embedding_provider",
            "embedding_model_dir",
            "embedding_dimensions",
            "embedding_model",
            "openai_base_url",
            "openai_api_key",
            "embed_batch_size",
            "chat_provider",
            "chat_model",
            "chat_base_url",
            "chat_api_key",
            "chat_max_tool_rounds",
            "chat_history_tokens",
            "chat_model_timeout_secs",
            "chat_max_retries",
            "chat_max_concurrent_turns",
            "approval_required_tools",
            "approval_ttl_minutes",
            "tool_lease_secs",
            "rules_max_chain_depth",
            "rules_max_active_per_user",
            "rules_max_firings_per_minute",
            "backtests_per_user_per_minute",
            "backtest_max_days",
            "insights_theme_join",
            "insights_theme_ask",
            "insights_theme_regroup",
            "insights_model_band",
            "model_tokens_per_user_per_day",
            "model_prices",
            "chat_max_turns_per_user",
            "chat_max_streams_per_user",
            "chat_stream_check_secs",
            "rules_timer_interval_ms",
            "chunk_tokens",
            "chunk_overlap",
            "consumer_concurrency",
            "retry_base_ms",
            "retry_max_ms",
            "consumer_ack_wait_secs",
            "shutdown_timeout_secs",
            "otel_exporter_otlp_endpoint",
            "log_format",
            "google_client_id",
            "google_client_secret",
            "google_auth_url",
            "google_token_url",
            "google_userinfo_url",
            "google_revoke_url",
            "gmail_api_base",
            "calendar_api_base",
            "gmail_pubsub_topic",
            "gmail_push_audience",
            "gmail_push_service_account",
            "google_jwks_url",
            "google_jwks",
            "hubspot_client_id",
            "hubspot_client_secret",
            "hubspot_accept_legacy_signatures",
            "hubspot_auth_url",
            "hubspot_api_base",
            "slack_client_id",
            "slack_client_secret",
            "slack_signing_secret",
            "slack_auth_url",
            "slack_api_base",
            "session_ttl_hours",
            "sync_max_items",
            "sync_max_item_bytes",
            "gmail_initial_days",
            "calendar_initial_days",
            "sync_interval_secs",
            "provider_timeout_secs",
        ]
        .into_iter()
    }

    /// The chat endpoint's base URL and key (the OpenAI ones unless set apart).
    pub fn chat_endpoint(&self) -> (&str, &str) {
        let base = if self.chat_base_url.trim().is_empty() {
            &self.openai_base_url
        } else {
            &self.chat_base_url
        };
        let key = if self.chat_api_key.is_empty() {
            &self.openai_api_key
        } else {
            &self.chat_api_key
        };
        (base.trim_end_matches('/'), key)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, reason: &str| {
            Err(ConfigError::Invalid {
                field,
                reason: reason.into(),
            })
        };
        match self.app_env.as_str() {
            "production" | "development" => {}
            _ => return invalid("APP_ENV", "must be `production` or `development`"),
        }
        if !self.is_development() {
            if self.secret_key.is_empty() {
                return invalid(
                    "SECRET_KEY",
                    "is not set: use at least 32 random bytes (`make run` writes one into .env), or set APP_ENV=development",
                );
            }
            if self.secret_key.len() < 32 {
                return invalid(
                    "SECRET_KEY",
                    "must be at least 32 bytes (or set APP_ENV=development)",
                );
            }
            if PUBLISHED_SECRETS.contains(&self.secret_key.as_str())
                || self.secret_key == DEVELOPMENT_SECRET
                || self
                    .secret_key
                    .chars()
                    .all(|c| self.secret_key.starts_with(c))
            {
                return invalid(
                    "SECRET_KEY",
                    "is a published example value: anyone could sign tokens with it (use random bytes, or set APP_ENV=development)",
                );
            }
        } else if self.secret_key.is_empty() {
            return invalid("SECRET_KEY", "must not be empty");
        }
        if !self.token_encryption_keys.trim().is_empty()
            && let Err(e) = crate::secrets::KeyRing::parse(&self.token_encryption_keys)
        {
            return invalid("TOKEN_ENCRYPTION_KEYS", &e.to_string());
        }
        if self.chunk_overlap >= self.chunk_tokens {
            return invalid("CHUNK_OVERLAP", "must be smaller than CHUNK_TOKENS");
        }
        if self.search_max_concurrent == 0 {
            return invalid("SEARCH_MAX_CONCURRENT", "must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.insights_theme_join) {
            return invalid("INSIGHTS_THEME_JOIN", "must be between 0 and 1");
        }
        if !(0.0..=self.insights_theme_join).contains(&self.insights_theme_ask) {
            return invalid(
                "INSIGHTS_THEME_ASK",
                "must be between 0 and INSIGHTS_THEME_JOIN",
            );
        }
        if self.insights_model_band > 10 {
            return invalid("INSIGHTS_MODEL_BAND", "must be between 0 and 10");
        }
        if !(0.0..=1.0).contains(&self.insights_theme_regroup) {
            return invalid("INSIGHTS_THEME_REGROUP", "must be between 0 and 1");
        }
        if let Err(reason) = parse_prices(&self.model_prices) {
            return invalid("MODEL_PRICES", &reason);
        }
        if self.consumer_concurrency == 0 || self.embed_batch_size == 0 {
            return invalid("CONSUMER_CONCURRENCY", "must be at least 1");
        }
        if !self
            .nats_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return invalid("NATS_PREFIX", "only letters, digits and _");
        }
        Ok(())
    }

    pub fn is_development(&self) -> bool {
        self.app_env == "development"
    }

    /// Every setting as `(NAME, value)` in the order of `.env.example`, secrets shown only as
    /// set or not, and passwords removed from URLs: what `ctl config` prints.
    pub fn redacted(&self) -> Vec<(String, String)> {
        let values = serde_json::to_value(self).unwrap_or_default();
        Self::field_names()
            .map(|name| {
                let value = match &values[name] {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let shown = if SECRET_FIELDS.contains(&name) {
                    if value.is_empty() {
                        String::new()
                    } else {
                        format!("<set, {} bytes>", value.len())
                    }
                } else {
                    without_password(&value)
                };
                (name.to_ascii_uppercase(), shown)
            })
            .collect()
    }

    /// The key ring for provider tokens; an error naming the variable when none is set.
    pub fn key_ring(&self) -> Result<crate::secrets::KeyRing, ConfigError> {
        crate::secrets::KeyRing::parse(&self.token_encryption_keys).map_err(|e| {
            ConfigError::Invalid {
                field: "TOKEN_ENCRYPTION_KEYS",
                reason: e.to_string(),
            }
        })
    }

    /// US dollars per million input and output tokens of `model`, if `MODEL_PRICES` lists it.
    pub fn model_price(&self, model: &str) -> Option<(f64, f64)> {
        parse_prices(&self.model_prices)
            .ok()?
            .into_iter()
            .find(|(m, _, _)| m == model)
            .map(|(_, input, output)| (input, output))
    }

    pub fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.publish_timeout_ms)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }
}

/// OpenAI's list prices (US dollars per million input/output tokens) of the models this is
/// usually pointed at; set `MODEL_PRICES` for others (a local model costs nothing to list).
pub const DEFAULT_MODEL_PRICES: &str = "gpt-4o-mini=0.15/0.60,gpt-4o=2.50/10.00,gpt-4.1-nano=0.10/0.40,gpt-4.1-mini=0.40/1.60,gpt-4.1=2.00/8.00";

/// `model=input/output,...` as `(model, input, output)`.
fn parse_prices(list: &str) -> Result<Vec<(String, f64, f64)>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let bad =
                || format!("`{entry}` is not `model=input/output` (dollars per million tokens)");
            let (model, prices) = entry.split_once('=').ok_or_else(bad)?;
            let (input, output) = prices.split_once('/').ok_or_else(bad)?;
            let price = |p: &str| {
                p.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0)
            };
            match (model.trim(), price(input), price(output)) {
                (m, Some(i), Some(o)) if !m.is_empty() => Ok((m.to_owned(), i, o)),
                _ => Err(bad()),
            }
        })
        .collect()
}

/// `scheme://user:***@host/...` for a URL with a password; anything else unchanged.
fn without_password(value: &str) -> String {
    if let Some((scheme, rest)) = value.split_once("://")
        && let Some((userinfo, host)) = rest.split_once('@')
        && let Some((user, _password)) = userinfo.split_once(':')
    {
        return format!("{scheme}://{user}:***@{host}");
    }
    value.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_prices_are_read_and_a_malformed_list_is_refused_naming_it() {
        let mut config = production();
        assert_eq!(config.model_price("gpt-4o-mini"), Some((0.15, 0.60)));
        assert_eq!(config.model_price("llama3"), None);
        config.model_prices = " llama3 = 0/0 , big=3/15".into();
        assert_eq!(config.model_price("big"), Some((3.0, 15.0)));
        assert_eq!(config.model_price("llama3"), Some((0.0, 0.0)));
        for bad in ["big=3", "=1/2", "big=-1/2", "big=x/2"] {
            config.model_prices = bad.into();
            match config.validate() {
                Err(ConfigError::Invalid { field, .. }) => assert_eq!(field, "MODEL_PRICES"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    fn production() -> Config {
        Config {
            secret_key: "0123456789abcdef0123456789abcdef-random".into(),
            ..Config::default()
        }
    }

    #[test]
    fn production_refuses_missing_short_and_published_secrets() {
        assert!(production().validate().is_ok());
        for bad in [
            "",
            "short-secret",
            "dev-only-secret-change-me-dev-only-secret",
            "change-me-change-me-change-me-change-me",
            DEVELOPMENT_SECRET,
            &"a".repeat(40),
        ] {
            let config = Config {
                secret_key: bad.into(),
                ..production()
            };
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains("SECRET_KEY"), "{bad:?}: {err}");
            let development = Config {
                app_env: "development".into(),
                ..config
            };
            assert_eq!(
                development.validate().is_ok(),
                !bad.is_empty(),
                "development accepts {bad:?} (load fills an empty one in)"
            );
        }
        let typo = Config {
            app_env: "dev".into(),
            ..production()
        };
        assert!(typo.validate().unwrap_err().to_string().contains("APP_ENV"));
    }

    #[test]
    fn redacted_hides_secrets_and_passwords() {
        let config = Config {
            openai_api_key: "sk-very-secret".into(),
            database_url: "postgres://app:hunter2@db:5432/assistant".into(),
            ..production()
        };
        let shown: std::collections::HashMap<_, _> = config.redacted().into_iter().collect();
        let all = format!("{shown:?}");
        assert!(
            !all.contains("hunter2")
                && !all.contains("sk-very-secret")
                && !all.contains("0123456789abcdef"),
            "{all}"
        );
        assert_eq!(
            shown["DATABASE_URL"],
            "postgres://app:***@db:5432/assistant"
        );
        assert_eq!(shown["OPENAI_API_KEY"], "<set, 14 bytes>");
        assert_eq!(shown["HUBSPOT_CLIENT_SECRET"], "");
        assert_eq!(shown["APP_ENV"], "production");
        assert_eq!(shown.len(), Config::field_names().count());
    }

    #[test]
    fn token_encryption_keys_are_checked_when_set() {
        let mut config = production();
        assert!(
            config.validate().is_ok(),
            "unset is fine until a provider connects"
        );
        assert!(config.key_ring().is_err(), "but there is no ring to use");
        config.token_encryption_keys = "k1:not-a-key".into();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("TOKEN_ENCRYPTION_KEYS"), "{err}");
        config.token_encryption_keys = "k2:AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=,k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=".into();
        assert!(config.validate().is_ok());
        assert_eq!(config.key_ring().unwrap().current_id(), "k2");
    }
}
