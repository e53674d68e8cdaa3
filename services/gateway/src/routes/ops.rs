//! Operations endpoints: liveness, readiness, Prometheus metrics.

use crate::AppState;
use crate::error::ApiError;
use axum::Extension;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::fmt::Write;
use std::net::SocketAddr;
use utoipa::ToSchema;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    pub status: &'static str,
    pub postgres: bool,
    /// Connected and every declared stream exists.
    pub nats: bool,
}

#[utoipa::path(get, path = "/health", tag = "ops", responses((status = 200, body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[utoipa::path(
    get,
    path = "/ready",
    tag = "ops",
    responses(
        (status = 200, description = "Postgres, NATS and the streams are there", body = Readiness),
        (status = 503, description = "Something is missing", body = Readiness),
    )
)]
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let (postgres, nats) = tokio::join!(db::ping(&state.db), state.bus.streams_ready());
    let ok = postgres && nats;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        status: if ok { "ready" } else { "not_ready" },
        postgres,
        nats,
    };
    (status, Json(body))
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain"),
        (status = 401, description = "Not from loopback and without `Authorization: Bearer <METRICS_TOKEN>`", body = crate::error::ErrorBody),
    )
)]
pub async fn metrics(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let local = peer.is_some_and(|p| p.0.0.ip().is_loopback()) && state.config.trusted_proxies == 0;
    if !may_read_metrics(&state.config.metrics_token, local, &headers) {
        return Err(ApiError::Unauthorized);
    }
    let mut text = state.metrics.render();
    let streams = common::status::read(&state.bus).await;
    let gauges = [
        ("consumer_delivered", "Stream sequence delivered so far"),
        (
            "consumer_ack_floor",
            "Stream sequence acknowledged in order so far",
        ),
        ("consumer_pending", "Messages not yet delivered (lag)"),
        (
            "consumer_ack_pending",
            "Messages delivered and not yet acknowledged",
        ),
        ("consumer_redelivered", "Messages delivered more than once"),
    ];
    for (name, help) in gauges {
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} gauge");
        for s in &streams {
            for c in &s.consumers {
                let value = match name {
                    "consumer_delivered" => c.delivered as f64,
                    "consumer_ack_floor" => c.ack_floor as f64,
                    "consumer_pending" => c.pending as f64,
                    "consumer_ack_pending" => c.ack_pending as f64,
                    _ => c.redelivered as f64,
                };
                let _ = writeln!(
                    text,
                    "{name}{{stream=\"{}\",consumer=\"{}\"}} {value}",
                    s.name, c.name
                );
            }
        }
    }
    let _ = writeln!(
        text,
        "# HELP stream_messages Messages stored in the stream\n# TYPE stream_messages gauge"
    );
    for s in &streams {
        let _ = writeln!(
            text,
            "stream_messages{{stream=\"{}\"}} {}",
            s.name, s.messages
        );
    }
    if let Ok(counts) = db::dead_letters::open_counts(&state.db).await {
        let _ = writeln!(
            text,
            "# HELP dead_letters_open Dead letters not yet requeued\n# TYPE dead_letters_open gauge"
        );
        for (consumer, n) in counts {
            let _ = writeln!(text, "dead_letters_open{{consumer=\"{consumer}\"}} {n}");
        }
    }
    if let Ok(stats) = db::firings::stats(&state.db).await {
        let _ = writeln!(
            text,
            "# HELP rule_firings_total Rule firings by the tier that decided (1: conditions, 2: the model) and how they went\n# TYPE rule_firings_total counter"
        );
        for (tier, status, n) in &stats.firings {
            let _ = writeln!(
                text,
                "rule_firings_total{{tier=\"{tier}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            text,
            "# HELP tasks Tasks by state (waiting: for an event, a deadline or the model)\n# TYPE tasks gauge"
        );
        for (task_state, n) in &stats.tasks {
            let _ = writeln!(text, "tasks{{state=\"{task_state}\"}} {n}");
        }
        let _ = writeln!(
            text,
            "# HELP task_waits_open Waits registered and not yet ended\n# TYPE task_waits_open gauge\ntask_waits_open {}\n# HELP task_wait_timeouts_total Waits that ended at their deadline\n# TYPE task_wait_timeouts_total counter\ntask_wait_timeouts_total {}\n# HELP rules_active Active rules that fire on events\n# TYPE rules_active gauge\nrules_active {}",
            stats.waits_open, stats.waits_timed_out, stats.rules_active
        );
    }
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    ))
}

/// Metrics name routes, streams and consumers: with a `METRICS_TOKEN` they need it, without
/// one only the machine itself (a local Prometheus or sidecar) may read them. `local` is
/// false behind a proxy, whose own connections come from loopback.
fn may_read_metrics(token: &str, local: bool, headers: &HeaderMap) -> bool {
    if token.is_empty() {
        return local;
    }
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    subtle::ConstantTimeEq::ct_eq(given.as_bytes(), token.as_bytes()).into()
}
