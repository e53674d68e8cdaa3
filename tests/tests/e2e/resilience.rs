//! Crashes, poison, exhausted retries and a missing broker: nothing is lost, nothing blocks.

use crate::{doc, doc_id, wait_indexed};
use assistant_tests::{TestApp, eventually, test_config};
use common::consumer::{self, ConsumerOptions, Delivery, HandleError, Handler};
use common::events::{DocumentInput, Envelope, Event};
use common::topology::{ConsumerDef, StreamDef, Topology};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

async fn indexed_count(app: &TestApp) -> i64 {
    app.scalar_i64("SELECT count(*) FROM documents WHERE indexed_hash = content_hash")
        .await
}

#[tokio::test]
async fn an_embedding_service_killed_mid_batch_loses_nothing_after_restart() {
    let mut app = TestApp::spawn_only(&["ingest"]).await;
    let (user, token) = app.user("crash@example.com").await;
    let total = 40;
    let docs: Vec<_> = (0..total)
        .map(|i| {
            doc(
                "notes",
                "note",
                &format!("n{i}"),
                &format!("Meeting note {i}"),
                &format!(
                    "Client {i} discussed rebalancing, tax-loss harvesting and estate questions. "
                )
                .repeat(4),
            )
        })
        .collect();
    assert_eq!(
        app.post_documents(&token, &json!({"documents": docs}))
            .await
            .status(),
        202
    );
    eventually("all documents stored", Duration::from_secs(30), || async {
        app.scalar_i64("SELECT count(*) FROM documents").await == total
    })
    .await;

    app.start("embedding").await;
    eventually("indexing under way", Duration::from_secs(60), || async {
        indexed_count(&app).await >= 3
    })
    .await;
    app.kill("embedding").await;
    let at_kill = indexed_count(&app).await;
    assert!(
        at_kill < total,
        "killed too late to test anything ({at_kill} of {total} done)"
    );

    app.start("embedding").await;
    let ids: Vec<_> = (0..total)
        .map(|i| doc_id(user, "notes", &format!("n{i}")))
        .collect();
    wait_indexed(&app, &ids).await;
    // Each document's chunks were written exactly once: ordinals are unique and contiguous.
    assert_eq!(
        app.scalar_i64("SELECT count(*) FROM (SELECT document_id FROM chunks GROUP BY document_id HAVING max(ordinal) + 1 <> count(*)) broken").await,
        0
    );
    assert_eq!(app.scalar_i64("SELECT count(*) FROM dead_letters").await, 0);
}

#[tokio::test]
async fn a_gracefully_stopped_ingest_hands_back_what_it_held() {
    let mut app = TestApp::spawn_only(&["ingest"]).await;
    let (_, token) = app.user("graceful@example.com").await;
    let docs: Vec<_> = (0..40)
        .map(|i| {
            doc(
                "gmail",
                "email",
                &format!("g{i}"),
                "Note",
                &format!("body {i}"),
            )
        })
        .collect();
    assert_eq!(
        app.post_documents(&token, &json!({"documents": docs}))
            .await
            .status(),
        202
    );
    app.stop("ingest").await.unwrap();
    app.start("ingest").await;
    eventually("all 40 stored", Duration::from_secs(30), || async {
        app.scalar_i64("SELECT count(*) FROM documents").await == 40
    })
    .await;
}

#[tokio::test]
async fn poison_messages_are_dead_lettered_while_others_flow() {
    let app = TestApp::spawn().await;
    let (user, token) = app.user("poison@example.com").await;
    let subject = format!("ingest.{user}.documents");
    app.bus
        .publish_raw(&subject, "garbage-1", b"this is not an envelope".to_vec())
        .await
        .unwrap();
    let mut future = serde_json::to_value(Envelope::new(
        user,
        Event::DocumentSubmitted(
            serde_json::from_value::<DocumentInput>(doc("gmail", "email", "v", "t", "b")).unwrap(),
        ),
    ))
    .unwrap();
    future["v"] = json!(99);
    app.bus
        .publish_raw(&subject, "future-1", future.to_string().into_bytes())
        .await
        .unwrap();
    let docs: Vec<_> = (0..10)
        .map(|i| {
            doc(
                "gmail",
                "email",
                &format!("ok{i}"),
                "Fine",
                "A perfectly good email.",
            )
        })
        .collect();
    assert_eq!(
        app.post_documents(&token, &json!({"documents": docs}))
            .await
            .status(),
        202
    );

    let ids: Vec<_> = (0..10)
        .map(|i| doc_id(user, "gmail", &format!("ok{i}")))
        .collect();
    wait_indexed(&app, &ids).await;
    eventually("two dead letters", Duration::from_secs(10), || async {
        app.scalar_i64("SELECT count(*) FROM dead_letters").await == 2
    })
    .await;
    let letters = db::dead_letters::list(&app.db, false, 10).await.unwrap();
    assert!(
        letters
            .iter()
            .all(|l| l.consumer == "ingest-documents" && l.subject == subject)
    );
    assert!(letters.iter().any(|l| l.error.contains("malformed event") && l.payload == b"this is not an envelope"));
    assert!(
        letters
            .iter()
            .any(|l| l.error.contains("unknown envelope version 99"))
    );
    // Terminated, not left for redelivery.
    eventually(
        "nothing left in flight",
        Duration::from_secs(10),
        || async {
            common::status::read(&app.bus)
                .await
                .iter()
                .flat_map(|s| &s.consumers)
                .all(|c| c.ack_pending == 0 && c.pending == 0)
        },
    )
    .await;
}

struct Flaky {
    attempts_on_bad: Arc<AtomicUsize>,
    good_done: Arc<AtomicUsize>,
}

impl Handler for Flaky {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandleError> {
        let Event::DocumentSubmitted(d) = delivery.envelope.event else {
            unreachable!()
        };
        if d.external_id == "bad" {
            self.attempts_on_bad.fetch_add(1, Ordering::SeqCst);
            return Err(HandleError::retry(std::io::Error::other(
                "downstream is down",
            )));
        }
        self.good_done.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn retryable_failures_back_off_then_dead_letter_after_max_deliveries() {
    let app = TestApp::spawn_only(&[]).await;
    let (user, _) = app.user("flaky@example.com").await;
    let topology = Topology {
        streams: vec![StreamDef {
            name: "RUNTIME".into(),
            subjects: vec!["rt.>".into()],
            description: String::new(),
            max_age_secs: 600,
            duplicate_window_secs: 60,
        }],
        consumers: vec![ConsumerDef {
            stream: "RUNTIME".into(),
            durable: "flaky".into(),
            filter_subject: "rt.>".into(),
            ack_wait_secs: 5,
            max_deliver: 3,
            max_ack_pending: 10,
        }],
    };
    topology.apply(&app.bus.js, &app.bus.ns).await.unwrap();
    let handler = Flaky {
        attempts_on_bad: Arc::default(),
        good_done: Arc::default(),
    };
    let (attempts, good) = (handler.attempts_on_bad.clone(), handler.good_done.clone());
    let cancel = CancellationToken::new();
    let options = ConsumerOptions {
        concurrency: 4,
        retry_base: Duration::from_millis(100),
        retry_max: Duration::from_millis(400),
        fetch_expiry: Duration::from_millis(500),
        keep_alive: None,
    };
    let runner = tokio::spawn({
        let (bus, cancel) = (app.bus.clone(), cancel.clone());
        let sink = db::dead_letters::PgDeadLetters(app.db.clone());
        async move { consumer::run(bus, &topology, "flaky", handler, sink, options, cancel).await }
    });
    for id in ["good-1", "bad", "good-2"] {
        let input: DocumentInput =
            serde_json::from_value(doc("gmail", "email", id, "t", "b")).unwrap();
        let envelope = Envelope::new(user, Event::DocumentSubmitted(input));
        app.bus
            .publish_raw(&format!("rt.{user}"), id, envelope.to_bytes())
            .await
            .unwrap();
    }
    eventually(
        "dead letter after 3 deliveries",
        Duration::from_secs(20),
        || async { app.scalar_i64("SELECT count(*) FROM dead_letters").await == 1 },
    )
    .await;
    let letter = &db::dead_letters::list(&app.db, false, 1).await.unwrap()[0];
    assert_eq!((letter.consumer.as_str(), letter.deliveries), ("flaky", 3));
    assert!(
        letter.error.contains("retryable") && letter.error.contains("downstream is down"),
        "{}",
        letter.error
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    assert_eq!(
        good.load(Ordering::SeqCst),
        2,
        "the others flowed past the failing one"
    );
    cancel.cancel();
    runner.await.unwrap().unwrap();
    app.bus
        .js
        .delete_stream(app.bus.ns.stream("RUNTIME"))
        .await
        .unwrap();
}

/// A NATS server of this test's own, so it can be stopped.
struct PrivateNats {
    child: std::process::Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl PrivateNats {
    fn start(port: u16, dir: std::path::PathBuf) -> Self {
        let child = std::process::Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server on PATH (scripts/setup.sh installs it)");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port, dir }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn nats_down_means_503_and_nothing_claimed_then_recovery() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("nats-{port}-{}", uuid::Uuid::new_v4().simple()));
    let mut nats = PrivateNats::start(port, dir.clone());
    let mut config = test_config().await;
    config.nats_url = format!("nats://127.0.0.1:{}", nats.port);
    let app = TestApp::spawn_with(config, &[]).await;
    let (_, token) = app.user("offline@example.com").await;
    let body = |id: &str| json!({"documents": [doc("gmail", "email", id, "t", "b")]});
    assert_eq!(
        app.post_documents(&token, &body("before")).await.status(),
        202
    );

    nats.stop();
    let response = app.post_documents(&token, &body("during")).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let error: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error["code"], "unavailable");
    let ready = app
        .http
        .get(format!("{}/ready", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(
        (ready["postgres"].as_bool(), ready["nats"].as_bool()),
        (Some(true), Some(false))
    );
    let health = app
        .http
        .get(format!("{}/health", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "liveness does not depend on NATS");

    // The broker comes back with its stored streams; the gateway reconnects by itself.
    let _nats = PrivateNats::start(port, dir);
    eventually(
        "publishing works again",
        Duration::from_secs(30),
        || async { app.post_documents(&token, &body("after")).await.status() == 202 },
    )
    .await;
    assert_eq!(
        app.stream_messages("INGEST").await,
        2,
        "the 503 request left nothing behind"
    );
    drop(app); // while its NATS still runs, so cleanup does not wait on a dead server
}
