//! The edge: security headers, CORS, rate limits with Retry-After, timeouts (slow headers,
//! slow handlers), body limits above axum's default, and `/metrics` not public.

use assistant_tests::{TestApp, test_config};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let app = TestApp::spawn_only(&[]).await;
    for (path, status) in [
        ("/health", 200),
        ("/api/embeddings/search?q=x", 401),
        ("/nowhere", 404),
    ] {
        let r = app
            .http
            .get(format!("{}{path}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{path}");
        let h = r.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["referrer-policy"], "no-referrer");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
        assert!(
            h.get("strict-transport-security").is_none(),
            "no HSTS over plain http"
        );
        assert!(
            h.get("access-control-allow-origin").is_none(),
            "no CORS unless configured"
        );
    }
    // The API reference may load its script and styles, and still not be framed.
    let docs = app
        .http
        .get(format!("{}/docs", app.url))
        .send()
        .await
        .unwrap();
    let csp = docs.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self' https://cdn.jsdelivr.net"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");

    let https = TestApp::spawn_with(
        common::Config {
            public_url: "https://assistant.example.com".into(),
            ..test_config().await
        },
        &[],
    )
    .await;
    let r = https
        .http
        .get(format!("{}/health", https.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
}

#[tokio::test]
async fn cors_admits_only_the_listed_origins_with_credentials() {
    let app = TestApp::spawn_with(
        common::Config {
            cors_allowed_origins: "https://app.example.com, http://localhost:5173".into(),
            ..test_config().await
        },
        &[],
    )
    .await;
    let preflight = |origin: &'static str| {
        app.http
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/api/ingest/documents", app.url),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let ok = preflight("https://app.example.com").await.unwrap();
    let h = ok.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    let evil = preflight("https://evil.example").await.unwrap();
    assert!(evil.headers().get("access-control-allow-origin").is_none());
    let r = app
        .http
        .get(format!("{}/health", app.url))
        .header("origin", "http://localhost:5173")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "http://localhost:5173"
    );
}

async fn assert_limited(r: reqwest::Response) {
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");
}

#[tokio::test]
async fn users_and_addresses_are_rate_limited_with_retry_after() {
    let app = TestApp::spawn_with(
        common::Config {
            rate_limit_user_per_minute: 5,
            rate_limit_ip_per_minute: 20,
            rate_limit_webhook_per_minute: 40,
            ..test_config().await
        },
        &[],
    )
    .await;
    let (_, alice) = app.user("alice@example.com").await;
    let (_, bob) = app.user("bob@example.com").await;
    let connections = |token: &str| {
        app.http
            .get(format!("{}/api/connections", app.url))
            .bearer_auth(token)
            .send()
    };
    for _ in 0..5 {
        assert_eq!(connections(&alice).await.unwrap().status(), 200);
    }
    assert_limited(connections(&alice).await.unwrap()).await;
    assert_eq!(
        connections(&bob).await.unwrap().status(),
        200,
        "one user's limit is their own"
    );

    // Anonymous requests from this address use up its limit (7 used so far)...
    let mut limited = None;
    for i in 0..20 {
        let r = app
            .http
            .get(format!("{}/api/auth/me", app.url))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some((i, r));
            break;
        }
        assert_eq!(r.status(), 401);
    }
    let (at, r) = limited.expect("the address limit applies to anonymous routes");
    assert_eq!(at, 13, "20 per address, 7 spent by the signed-in calls");
    assert_limited(r).await;
    // ...but webhooks, verified by signature, have their own, higher limit.
    for _ in 0..30 {
        let r = app
            .http
            .post(format!(
                "{}/api/webhooks/generic/{}",
                app.url,
                uuid::Uuid::new_v4()
            ))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "unsigned, but not rate limited yet");
    }
    // Health checks are never limited.
    assert_eq!(
        app.http
            .get(format!("{}/health", app.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn slow_clients_and_slow_handlers_are_cut_off() {
    let app = TestApp::spawn_with(
        common::Config {
            header_read_timeout_secs: 1,
            request_timeout_secs: 1,
            ..test_config().await
        },
        &[],
    )
    .await;
    // Slowloris: headers that never finish.
    let addr = app.url.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    socket
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server closed the connection");
    assert!(started.elapsed() < Duration::from_secs(4));
    let text = String::from_utf8_lossy(&buf);
    assert!(buf.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");

    // A handler slower than the request timeout: search waits up to 3 s for a query vector
    // from an embedding service that takes the request and never answers.
    let subject = app.bus.ns.subject(common::events::EMBED_QUERY_SUBJECT);
    let _silent = app.bus.client.subscribe(subject).await.unwrap();
    app.bus.client.flush().await.unwrap();
    let (_, token) = app.user("slow@example.com").await;
    let started = Instant::now();
    let r = app
        .http
        .get(format!("{}/api/embeddings/search?q=anything", app.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < Duration::from_millis(2_500));
}

#[tokio::test]
async fn request_bodies_up_to_max_request_bytes_are_read() {
    let app = TestApp::spawn_with(
        common::Config {
            max_request_bytes: 8 * 1024 * 1024,
            ..test_config().await
        },
        &[],
    )
    .await;
    let (_, token) = app.user("big@example.com").await;
    let body = "word ".repeat(20_000); // 100 KB each, 3 MB in all: over axum's 2 MiB default
    let documents: Vec<Value> = (0..30)
        .map(|i| json!({"source": "notes", "kind": "note", "external_id": format!("n{i}"), "title": "t", "body": body}))
        .collect();
    let r = app
        .post_documents(&token, &json!({ "documents": documents }))
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let too_big: Vec<Value> = (0..90)
        .map(|i| json!({"source": "notes", "kind": "note", "external_id": format!("n{i}"), "title": "t", "body": body}))
        .collect();
    let r = app
        .post_documents(&token, &json!({ "documents": too_big }))
        .await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

async fn get_metrics(app: &TestApp, token: Option<&str>) -> reqwest::Response {
    let mut r = app.http.get(format!("{}/metrics", app.url));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap()
}

async fn behind_a_proxy(metrics_token: &str) -> TestApp {
    TestApp::spawn_with(
        common::Config {
            trusted_proxies: 1, // behind a proxy, loopback is not "the machine itself"
            metrics_token: metrics_token.into(),
            ..test_config().await
        },
        &[],
    )
    .await
}

#[tokio::test]
async fn metrics_need_the_token_unless_read_from_the_machine_itself() {
    let app = behind_a_proxy("").await;
    assert_eq!(
        get_metrics(&app, None).await.status(),
        401,
        "no token configured: closed"
    );
    drop(app);

    let app = behind_a_proxy("scrape-token-1234567890").await;
    assert_eq!(get_metrics(&app, None).await.status(), 401);
    assert_eq!(get_metrics(&app, Some("wrong")).await.status(), 401);
    // Requests with made-up methods do not make new metric series.
    for m in ["BREW", "PROPFIND", "X123"] {
        let method = reqwest::Method::from_bytes(m.as_bytes()).unwrap();
        app.http
            .request(method, format!("{}/health", app.url))
            .send()
            .await
            .unwrap();
    }
    let r = get_metrics(&app, Some("scrape-token-1234567890")).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("method=\"OTHER\""), "{text}");
    for m in ["BREW", "PROPFIND", "X123"] {
        assert!(!text.contains(m), "{m} became a label");
    }
}

/// Searches and the query embeddings they wait for are bounded per gateway: past the bound a
/// search is refused with 503 and Retry-After, and past the embedding bound it runs on full
/// text at once instead of queueing for a vector.
#[tokio::test]
async fn searches_and_query_embeddings_in_flight_are_bounded() {
    for (searches, embeddings) in [(1, 16), (8, 1)] {
        let app = TestApp::spawn_with(
            common::Config {
                search_max_concurrent: searches,
                query_embed_max_in_flight: embeddings,
                ..test_config().await
            },
            &[],
        )
        .await;
        // An embedding service that takes requests and never answers: a search holds its
        // slots for the 3 s the gateway waits for a vector.
        let subject = app.bus.ns.subject(common::events::EMBED_QUERY_SUBJECT);
        let _silent = app.bus.client.subscribe(subject).await.unwrap();
        app.bus.client.flush().await.unwrap();
        let (_, token) = app.user("busy@example.com").await;
        let search = || {
            app.http
                .get(format!("{}/api/embeddings/search?q=rollover", app.url))
                .bearer_auth(&token)
                .send()
        };
        let waiting = tokio::spawn(search());
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        let second = search().await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "answered at once"
        );
        if searches == 1 {
            assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(second.headers()["retry-after"], "1");
            assert_eq!(second.json::<Value>().await.unwrap()["code"], "busy");
        } else {
            assert_eq!(second.status(), StatusCode::OK);
            assert_eq!(second.json::<Value>().await.unwrap()["mode"], "fulltext");
        }
        assert_eq!(waiting.await.unwrap().unwrap().status(), StatusCode::OK);
    }
}
