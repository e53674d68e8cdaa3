//! gateway: the thin HTTP edge. It authenticates, validates, verifies webhook signatures,
//! publishes to JetStream and answers only after the PubAck; it reads Postgres for queries
//! but does no slow work itself.

pub mod auth;
pub mod edge;
pub mod endpoints;
pub mod error;
pub mod google_jwt;
pub mod lanes;
pub mod payloads;
pub mod routes;
pub mod signatures;
pub mod validity;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use common::Config;
use common::auth::Tokens;
use common::bus::Bus;
use common::intake::Limits;
use db::DatabaseConnection;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use routes::{
    approvals, chat, connections, console, conversations, curation, documents, export, ingest,
    insights, ops, previews, provider_hooks, rules, search, sign_in, sync, tasks, tokens,
    transcripts, webhooks,
};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_scalar::{Scalar, Servable};

/// What every handler shares. Cloned per request by the extractors, so it is one `Arc`: a
/// clone is one reference count, not a copy of every client inside (profiled: cloning and
/// dropping the NATS client, pool and caches per request cost more than the handler's work).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub db: DatabaseConnection,
    pub bus: Bus,
    pub tokens: Tokens,
    pub config: Arc<Config>,
    pub metrics: PrometheusHandle,
    pub endpoints: endpoints::EndpointCache,
    /// OAuth and token storage; `None` until TOKEN_ENCRYPTION_KEYS is set.
    pub providers: Option<providers::Providers>,
    /// Checks Gmail push (Pub/Sub) tokens.
    pub push: google_jwt::PushVerifier,
    pub limiters: Arc<edge::limits::Limiters>,
    /// Event streams each user holds open here (`CHAT_MAX_STREAMS_PER_USER`).
    pub streams: Arc<common::slots::PerUser>,
    /// Hybrid search, bounded by `SEARCH_MAX_CONCURRENT` and `QUERY_EMBED_MAX_IN_FLIGHT`.
    pub searcher: actions::search::Searcher,
    /// Bearer tokens known to be good, forgotten when Postgres announces a revocation.
    pub validity: validity::Validity,
    /// Each user's use of the interactive lane.
    pub lanes: lanes::LaneCounts,
}

impl AppState {
    pub fn limits(&self) -> Limits {
        Limits {
            max_batch: self.config.max_batch_documents,
            max_body_bytes: self.config.max_document_bytes,
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Assistant backend API",
        description = "Ingest documents and webhooks into the event backbone, search them (hybrid vector + full text), and ask the assistant about them (streamed answers with citations)."
    ),
    paths(
        ingest::ingest_documents,
        transcripts::ingest_transcript,
        webhooks::generic_webhook,
        provider_hooks::hubspot,
        provider_hooks::slack,
        provider_hooks::gmail,
        provider_hooks::calendar,
        sign_in::start,
        sign_in::callback,
        sign_in::me,
        sign_in::logout,
        sign_in::methods,
        sign_in::demo_sign_in,
        connections::list_connections,
        connections::disconnect,
        sync::sync_now,
        tokens::revoke_current,
        tokens::revoke_all,
        search::search_get,
        search::search_post,
        documents::get_document,
        chat::chat_stream,
        chat::chat_message,
        chat::turn_events,
        chat::cancel_turn,
        conversations::list_conversations,
        conversations::get_conversation,
        conversations::delete_conversation,
        conversations::usage,
        approvals::list_approvals,
        approvals::approve,
        approvals::reject,
        approvals::audit,
        rules::list_rules,
        rules::create_rule,
        rules::get_rule,
        rules::update_rule,
        rules::delete_rule,
        rules::firings,
        rules::backtest,
        tasks::list_tasks,
        tasks::get_task,
        tasks::cancel_task,
        tasks::notifications,
        insights::get_settings,
        insights::put_settings,
        insights::list_themes,
        insights::get_theme,
        insights::theme_trend,
        insights::digest,
        insights::churned,
        curation::merge,
        curation::split,
        curation::rename,
        curation::move_item,
        curation::dismiss,
        curation::list,
        curation::undo,
        previews::create_preview,
        previews::list_previews,
        previews::get_preview,
        previews::apply_preview,
        previews::discard_preview,
        export::export,
        insights::list_items,
        insights::progress,
        insights::import_feedback,
        ops::health,
        ops::ready,
        ops::metrics,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Sign in with Google; connect HubSpot and Slack"),
        (name = "connections", description = "Connected providers and their sync"),
        (name = "ingest", description = "Documents into the index"),
        (name = "webhooks", description = "Signed deliveries from other systems"),
        (name = "search", description = "Hybrid search over your own data"),
        (name = "chat", description = "The assistant: streamed answers with citations, conversations, approvals, audit, usage"),
        (name = "rules", description = "Rules and standing instructions that act on events, their firings and backtests; tasks that wait; notifications"),
        (name = "insights", description = "Product intelligence: feature requests, bugs and pain points customers raise, quoted, tied to accounts, grouped into themes; feedback import"),
        (name = "ops", description = "Health, readiness, metrics"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "__Host-session",
                "Browser session from Google sign-in (`session` when served over plain HTTP); state-changing requests must come from our origin",
            ))),
        );
    }
}

/// The process-wide Prometheus recorder (installed once, however many gateways a test boots).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.config.max_request_bytes;
    let timeout = Duration::from_secs(state.config.request_timeout_secs);
    let cors = edge::cors(&state.config.cors_allowed_origins);
    let router = Router::new()
        .merge(ingest::router())
        .merge(transcripts::router())
        .merge(webhooks::router())
        .merge(provider_hooks::router())
        .merge(sign_in::router())
        .merge(connections::router())
        .merge(sync::router())
        .merge(tokens::router())
        .merge(search::router())
        .merge(documents::router())
        .merge(console::router())
        .merge(chat::router())
        .merge(conversations::router())
        .merge(approvals::router())
        .merge(rules::router())
        .merge(tasks::router())
        .merge(insights::router())
        .merge(curation::router())
        .merge(previews::router())
        .merge(export::router())
        .merge(ops::router())
        .route(
            "/openapi.json",
            axum::routing::get(|| async { axum::Json(ApiDoc::openapi()) }),
        )
        .merge(Scalar::with_url("/docs", ApiDoc::openapi()))
        // Innermost first: the layers below run outside-in in reverse order.
        .layer(middleware::from_fn(edge::record_http))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            timeout,
        ))
        // axum's own 2 MiB default would otherwise cap MAX_REQUEST_BYTES.
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            edge::limits::by_address,
        ))
        .layer(TraceLayer::new_for_http().make_span_with(edge::request_span))
        .layer(middleware::from_fn(edge::request_id))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            edge::security_headers,
        ));
    let router = match cors {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router.with_state(state)
}

/// Connects to Postgres and NATS and builds the gateway's state.
pub async fn state(config: Config) -> anyhow::Result<AppState> {
    let db = db::connect(&config.database_url, config.db_max_connections).await?;
    let bus = Bus::connect(
        &config.nats_url,
        &config.nats_prefix,
        config.publish_timeout(),
    )
    .await?;
    if let Err(e) = bus.apply_topology(&config).await {
        // Not fatal: /ready reports it and publishes fail with 503 until NATS is back.
        tracing::warn!(error = %e, "could not apply the stream topology yet");
    }
    let providers = if config.token_encryption_keys.trim().is_empty() {
        tracing::warn!("TOKEN_ENCRYPTION_KEYS is not set: provider connections are off");
        None
    } else {
        Some(providers::Providers::new(
            &config,
            db.clone(),
            config.key_ring()?,
        )?)
    };
    let push = google_jwt::PushVerifier::new(&config, providers::http_client(&config)?)
        .map_err(anyhow::Error::msg)?;
    let validity = validity::Validity::new(Duration::from_secs(config.auth_cache_secs));
    validity.listen(config.database_url.clone());
    Ok(AppState(Arc::new(Shared {
        validity,
        lanes: lanes::LaneCounts::default(),
        limiters: edge::limits::Limiters::new(&config),
        streams: Default::default(),
        searcher: actions::search::Searcher::new(db.clone(), bus.clone(), &config),
        db,
        bus,
        providers,
        push,
        tokens: Tokens::from_config(&config),
        config: Arc::new(config),
        metrics: metrics_handle(),
        endpoints: endpoints::EndpointCache::default(),
    })))
}

/// Serves on `listener` until `cancel` fires, then drains in-flight requests.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "gateway listening");
    let header_timeout = Duration::from_secs(state.config.header_read_timeout_secs);
    let drain = state.config.shutdown_timeout();
    edge::serve::serve(router(state), listener, header_timeout, drain, cancel).await?;
    Ok(())
}

pub async fn run(config: Config, cancel: CancellationToken) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(&config.bind_addr).await?;
    let state = state(config).await?;
    serve(state, listener, cancel).await
}
