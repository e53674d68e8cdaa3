//! Logs and traces. Every service installs the same subscriber: readable (or JSON) log lines,
//! OpenTelemetry spans exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and
//! W3C `traceparent` carried in NATS headers so one trace spans gateway → ingest → embedding,
//! and the request id with it, so every log line of one request's work can be found. Lines
//! are redacted at the formatter (see `redact`).

use crate::config::Config;
use crate::redact::{RedactingMakeWriter, Redactor};
use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Context, global};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Flushes and stops trace export when dropped.
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

tokio::task_local! {
    /// The id of the HTTP request (or message) whose work the current task is doing. The
    /// gateway sets it per request; the consumer runtime per message, from its header.
    pub static REQUEST_ID: String;
}

/// The NATS header that carries the request id from the gateway through every consumer.
pub const REQUEST_ID_HEADER: &str = "Request-Id";

/// The current task's request id, if it works for one.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// The request id a message carries.
pub fn request_id_of(headers: Option<&HeaderMap>) -> Option<String> {
    headers
        .and_then(|h| h.get(REQUEST_ID_HEADER))
        .map(|v| v.as_str().to_owned())
}

/// The deployment's own secrets: hidden wherever they would appear in a log line.
fn configured_secrets(config: &Config) -> Vec<String> {
    let mut secrets: Vec<String> = [
        &config.secret_key,
        &config.openai_api_key,
        &config.google_client_secret,
        &config.hubspot_client_secret,
        &config.slack_client_secret,
        &config.slack_signing_secret,
        &config.metrics_token,
    ]
    .into_iter()
    .cloned()
    .collect();
    // Each encryption key of the ring, without its id.
    secrets.extend(
        config
            .token_encryption_keys
            .split(',')
            .filter_map(|k| k.split_once(':').map(|(_, key)| key.trim().to_owned())),
    );
    secrets
}

/// The log-line layer every service uses: readable or JSON lines, redacted before they
/// are written to `writer`.
pub fn log_layer<S, W>(config: &Config, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let writer = RedactingMakeWriter::new(writer, Redactor::new(configured_secrets(config)));
    if config.log_format == "json" {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(writer)
            .boxed()
    } else {
        use std::io::IsTerminal;
        tracing_subscriber::fmt::layer()
            .compact()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(writer)
            .boxed()
    }
}

/// Installs the global subscriber and propagator. Call once, first thing in `main`.
pub fn init(service: &'static str, config: &Config) -> TelemetryGuard {
    init_to(service, config, std::io::stderr, None)
}

/// [`init`] writing log lines to `writer`, with `filter` instead of `RUST_LOG` when given
/// (the test harness captures every service's lines at debug level this way).
pub fn init_to<W>(
    service: &'static str,
    config: &Config,
    writer: W,
    filter: Option<&str>,
) -> TelemetryGuard
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    global::set_text_map_propagator(TraceContextPropagator::new());
    let mut builder = SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name(service).build());
    let endpoint = config.otel_exporter_otlp_endpoint.trim_end_matches('/');
    if !endpoint.is_empty() {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{endpoint}/v1/traces"))
            .build()
        {
            Ok(exporter) => builder = builder.with_batch_exporter(exporter),
            Err(e) => eprintln!("OTLP exporter disabled: {e}"),
        }
    }
    let provider = builder.build();
    global::set_tracer_provider(provider.clone());
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer(service));

    let filter = match filter {
        Some(f) => EnvFilter::new(f),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| {
            EnvFilter::new("info,sqlx=warn,sea_orm=warn,async_nats=warn,tower_http=info")
        }),
    };
    let fmt = log_layer(config, writer);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init();
    TelemetryGuard { provider }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_ref()).collect()
    }
}

/// Writes the current span's context (`traceparent`) and the request id into outgoing NATS
/// headers.
pub fn inject_context(headers: &mut HeaderMap) {
    let cx = tracing::Span::current().context();
    global::get_text_map_propagator(|p| p.inject_context(&cx, &mut HeaderInjector(headers)));
    if let Some(id) = current_request_id() {
        headers.insert(REQUEST_ID_HEADER, id.as_str());
    }
}

/// Reads the sender's trace context from incoming NATS headers.
pub fn extract_context(headers: Option<&HeaderMap>) -> Context {
    match headers {
        Some(h) => global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(h))),
        None => Context::new(),
    }
}

/// Makes `span` a child of the trace that arrived with a message.
pub fn set_parent(span: &tracing::Span, headers: Option<&HeaderMap>) {
    span.set_parent(extract_context(headers));
}
