//! Liveness, readiness, metrics, the OpenAPI document and trace propagation.

use crate::{doc, doc_id, wait_indexed};
use assistant_tests::TestApp;
use async_nats::jetstream::consumer::{self, DeliverPolicy};
use futures::StreamExt;
use serde_json::json;

#[tokio::test]
async fn health_ready_and_metrics() {
    let app = TestApp::spawn().await;
    let (user, token) = app.user("ops@example.com").await;
    assert_eq!(
        app.http
            .get(format!("{}/health", app.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ready: serde_json::Value = app
        .http
        .get(format!("{}/ready", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ready,
        json!({"status": "ready", "postgres": true, "nats": true})
    );

    assert_eq!(
        app.post_documents(
            &token,
            &json!({"documents": [doc("gmail", "email", "m", "t", "b")]})
        )
        .await
        .status(),
        202
    );
    wait_indexed(&app, &[doc_id(user, "gmail", "m")]).await;
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(
            r#"http_requests_total{method="POST",route="/api/ingest/documents",status="202"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("nats_publish_duration_seconds"),
        "publish latency"
    );
    let stream = app.bus.ns.stream("EVENTS");
    assert!(
        metrics.contains(&format!(
            r#"consumer_pending{{stream="{stream}",consumer="embedding"}} 0"#
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            r#"consumer_ack_floor{{stream="{stream}",consumer="embedding"}} 1"#
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("consumer_messages_total"),
        "processed/failed counters"
    );
}

#[tokio::test]
async fn openapi_document_is_served_and_matches_the_committed_copy() {
    let app = TestApp::spawn_only(&[]).await;
    let served: serde_json::Value = app
        .http
        .get(format!("{}/openapi.json", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let generated = serde_json::to_string_pretty(&served).unwrap() + "\n";
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
    if std::env::var("UPDATE_OPENAPI").is_ok() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json is out of date: run `make openapi`"
    );
    for p in [
        "/api/ingest/documents",
        "/api/webhooks/generic/{endpoint}",
        "/api/embeddings/search",
        "/health",
        "/ready",
        "/metrics",
    ] {
        assert!(served["paths"][p].is_object(), "{p} missing from the spec");
    }
    let docs = app
        .http
        .get(format!("{}/docs", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), 200);
    assert!(
        docs.text().await.unwrap().contains("openapi"),
        "the docs page loads the spec"
    );
}

fn trace_id(headers: Option<&async_nats::HeaderMap>) -> Option<String> {
    let tp = headers?.get("traceparent")?.as_str().to_owned();
    Some(tp.split('-').nth(1)?.to_owned())
}

async fn first_message_headers(app: &TestApp, stream: &str) -> Option<async_nats::HeaderMap> {
    let stream = app
        .bus
        .js
        .get_stream(app.bus.ns.stream(stream))
        .await
        .unwrap();
    let reader = stream
        .create_consumer(consumer::pull::Config {
            deliver_policy: DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut batch = reader.fetch().max_messages(1).messages().await.unwrap();
    batch.next().await.unwrap().unwrap().headers.clone()
}

#[tokio::test]
async fn one_trace_spans_gateway_ingest_and_embedding() {
    let app = TestApp::spawn().await;
    let (user, token) = app.user("trace@example.com").await;
    assert_eq!(
        app.post_documents(
            &token,
            &json!({"documents": [doc("gmail", "email", "t", "t", "b")]})
        )
        .await
        .status(),
        202
    );
    wait_indexed(&app, &[doc_id(user, "gmail", "t")]).await;
    let intake = trace_id(first_message_headers(&app, "INGEST").await.as_ref())
        .expect("traceparent on the intake message");
    let event = trace_id(first_message_headers(&app, "EVENTS").await.as_ref())
        .expect("traceparent on the domain event");
    assert_eq!(intake.len(), 32);
    assert_ne!(intake, "0".repeat(32));
    assert_eq!(intake, event, "ingest continued the gateway's trace");
}

/// The harness itself: a panic in any task of the test process (as a service task's would
/// be) fails the test when the app is dropped, even though tokio caught it.
#[tokio::test]
async fn a_panic_in_a_service_task_fails_the_test() {
    let app = TestApp::spawn_only(&[]).await;
    let task = tokio::spawn(async { panic!("a service bug") });
    assert!(task.await.unwrap_err().is_panic());
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(app)));
    let message = dropped.expect_err("dropping the app must fail the test");
    let message = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(message.contains("panic(s) in the services"), "{message}");
}

/// A request id is given to every request (or taken from a sane `X-Request-Id`), echoed back,
/// carried in NATS headers, and on the log lines of every consumer that works on it.
#[tokio::test]
async fn a_request_id_follows_the_work_into_every_consumer_log() {
    let app = TestApp::spawn().await;
    let (user, token) = app.user("rid@example.com").await;
    let body = json!({"documents": [doc("gmail", "email", "rid-1", "Rollover", "IRA rollover paperwork.")]});
    let r = app
        .http
        .post(format!("{}/api/ingest/documents", app.url))
        .bearer_auth(&token)
        .header("x-request-id", "req-trace-4711")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["x-request-id"], "req-trace-4711");
    wait_indexed(&app, &[doc_id(user, "gmail", "rid-1")]).await;

    let headers = first_message_headers(&app, "INGEST").await.unwrap();
    assert_eq!(
        headers.get("Request-Id").unwrap().as_str(),
        "req-trace-4711"
    );
    let logs = assistant_tests::captured_logs();
    let ours: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("req-trace-4711"))
        .collect();
    for part in [
        "request",
        "consumer=ingest-documents",
        "consumer=embedding",
        "consumer=rules-engine",
    ] {
        assert!(
            ours.iter().any(|l| l.contains(part)),
            "no line of {part} carries the request id:\n{}",
            ours.join("\n")
        );
    }

    // Without one (or with one that is not a sane token) the gateway makes one.
    for given in [None, Some("bad id with spaces")] {
        let mut request = app.http.get(format!("{}/health", app.url));
        if let Some(id) = given {
            request = request.header("x-request-id", id);
        }
        let r = request.send().await.unwrap();
        let id = r.headers()["x-request-id"].to_str().unwrap();
        assert_eq!(id.len(), 32, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}

/// The logs of real traffic (sign-in addresses, tokens, bodies, query strings) hold none of
/// them: the formatter redacts what a call site lets through.
#[tokio::test]
async fn logs_hold_no_addresses_tokens_or_secrets() {
    let app = TestApp::spawn().await;
    let (_, token) = app.user("maria.lopez@harbor-wealth.example").await;
    let body = json!({"documents": [{
        "source": "gmail", "kind": "email", "external_id": "leak-1",
        "title": "From greg.hill@clientmail.example",
        "body": "Greg Hill <greg.hill@clientmail.example> asks about the rollover.",
        "metadata": {"from": "greg.hill@clientmail.example"},
    }]});
    assistant_tests::mark_sensitive("greg.hill@clientmail.example");
    assert_eq!(app.post_documents(&token, &body).await.status(), 202);
    // Query strings with a token in them, and a bad bearer token.
    let r = app
        .http
        .get(format!("{}/api/embeddings/search", app.url))
        .query(&[("q", "greg.hill@clientmail.example rollover")])
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let forged = format!("{token}x");
    assistant_tests::mark_sensitive(&forged);
    let r = app
        .http
        .get(format!("{}/api/connections", app.url))
        .bearer_auth(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    wait_indexed(&app, &[doc_id(app_user(&app).await, "gmail", "leak-1")]).await;
    // The logs were written (this is not vacuous) and hold none of it.
    let logs = assistant_tests::captured_logs();
    assert!(logs.lines().count() > 20, "{logs}");
    // A line written straight through the formatter is redacted too.
    tracing::warn!("a careless line about maria.lopez@harbor-wealth.example with {token}");
    assert!(
        assistant_tests::leaks().is_empty(),
        "{:?}",
        assistant_tests::leaks()
    );
    assert!(assistant_tests::captured_logs().contains("a careless line about <email> with <jwt>"));
}

async fn app_user(app: &TestApp) -> common::UserId {
    db::users::ensure(&app.db, "maria.lopez@harbor-wealth.example")
        .await
        .unwrap()
}
