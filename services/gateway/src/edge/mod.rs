//! The gateway's edge: what every request meets before a handler runs, and how connections
//! are served. Security headers, CORS, request ids, rate limits, timeouts and the HTTP
//! metrics live here, not in the route modules.

pub mod limits;
pub mod serve;

use crate::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use std::time::Instant;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// What the API answers with: JSON, never framed, never sniffed, nothing else loaded.
const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'";

/// The API reference page loads Scalar's bundle from its CDN and inline styles.
const DOCS_CSP: &str = "default-src 'self'; script-src 'self' https://cdn.jsdelivr.net; \
     style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.scalar.com; \
     font-src 'self' data: https://cdn.jsdelivr.net https://fonts.scalar.com; \
     img-src 'self' data: https:; connect-src 'self'; worker-src 'self' blob:; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The web console (`routes::console`): its own scripts, styles and API only; nothing inline,
/// nothing from another origin.
const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; font-src 'self'; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'self'";

/// Adds the security headers to every response (HSTS only when PUBLIC_URL is https).
pub async fn security_headers(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let csp = if path == "/docs" {
        DOCS_CSP
    } else if crate::routes::console::is_console_path(path) {
        CONSOLE_CSP
    } else {
        API_CSP
    };
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    if crate::auth::is_https(&state.config.public_url) {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    response
}

/// The origins allowed to call the API from a browser (`CORS_ALLOWED_ORIGINS`), each as
/// `scheme://host[:port]`.
pub fn allowed_origins(list: &str) -> Vec<String> {
    list.split(',')
        .map(|o| o.trim().trim_end_matches('/').to_owned())
        .filter(|o| !o.is_empty())
        .collect()
}

/// CORS for the listed origins only, with credentials (the session cookie); `None` when no
/// origin is listed, so browsers keep the same-origin policy.
pub fn cors(list: &str) -> Option<CorsLayer> {
    let origins: Vec<HeaderValue> = allowed_origins(list)
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_credentials(true)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
                HeaderName::from_static("last-event-id"),
            ])
            .expose_headers([header::RETRY_AFTER, HeaderName::from_static("x-request-id")])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// The request id: the client's `X-Request-Id` when it is a sane token, else a new one. It
/// is echoed in the response, recorded on the request's span, and travels in NATS headers to
/// every consumer that works on the request.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

fn sane_request_id(value: &str) -> bool {
    (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

pub async fn request_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| sane_request_id(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = common::telemetry::REQUEST_ID
        .scope(id.clone(), next.run(request))
        .await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// The request's span: method, path (never the query string, which can hold OAuth codes or
/// search words) and request id.
pub fn request_span(request: &Request) -> tracing::Span {
    let id = request
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.as_str())
        .unwrap_or_default();
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request.id = id,
    )
}

/// The method as a metrics label: a fixed set, so random methods cannot create series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Request count and latency by method, matched route and status.
pub async fn record_http(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [
        ("method", method.to_owned()),
        ("route", route),
        ("status", status),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(started.elapsed());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_request_ids_are_kept_only_when_sane() {
        assert!(sane_request_id("c0ffee-42_a.b"));
        for bad in ["", "has space", "new\nline", &"x".repeat(65), "ünï"] {
            assert!(!sane_request_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        for m in ["FOO", "BREW", "X1"] {
            assert_eq!(
                method_label(&Method::from_bytes(m.as_bytes()).unwrap()),
                "OTHER"
            );
        }
    }

    #[test]
    fn origins_are_trimmed_and_empty_means_none() {
        assert_eq!(
            allowed_origins(" https://app.example.com/ ,http://localhost:5173"),
            ["https://app.example.com", "http://localhost:5173"]
        );
        assert!(cors("").is_none());
    }
}
