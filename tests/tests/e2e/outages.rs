//! Outages, not just crashes: Postgres gone while consumers hold messages. They pause and
//! retry; nothing is lost and nothing is dead-lettered for a transient outage.

use assistant_tests::proxy::Proxy;
use assistant_tests::{TestApp, eventually, test_config};
use common::events::{DocumentInput, Envelope, Event};
use common::ids::Source;
use std::time::Duration;

#[tokio::test]
async fn a_postgres_outage_loses_nothing_and_dead_letters_nothing() {
    let mut config = test_config().await;
    let proxy = Proxy::start("127.0.0.1:5432").await.unwrap();
    let (server, db) = config.database_url.rsplit_once('/').unwrap();
    let (creds, _) = server.rsplit_once('@').unwrap();
    config.database_url = format!("{creds}@{}/{db}", proxy.addr);
    let app = TestApp::spawn_with(config, &["ingest", "embedding"]).await;
    let (user, token) = app.user("outage@example.com").await;
    // The services are up and consuming before the outage starts.
    let warm =
        serde_json::json!({"documents": [crate::doc("notes", "note", "warm", "Warm", "up")]});
    assert_eq!(app.post_documents(&token, &warm).await.status(), 202);
    crate::wait_indexed(&app, &[crate::doc_id(user, "notes", "warm")]).await;

    proxy.cut();
    // Accepted while Postgres is away (JetStream has them): what the gateway publishes.
    let docs: Vec<Envelope> = (0..40)
        .map(|i| {
            Envelope::new(
                user,
                Event::DocumentSubmitted(DocumentInput {
                    source: Source::parse("notes").unwrap(),
                    kind: Source::parse("note").unwrap(),
                    external_id: format!("n{i}"),
                    title: format!("Note {i}"),
                    body: format!("Call notes {i}: the client asked about bond ladders."),
                    metadata: serde_json::json!({}),
                    occurred_at: None,
                }),
            )
        })
        .collect();
    app.bus.publish_all(&docs).await.unwrap();
    // Long enough for every message to have run through all its deliveries with the test
    // retry delays (100-500 ms, 6 deliveries) if the consumers kept pulling.
    tokio::time::sleep(Duration::from_secs(10)).await;
    proxy.restore();

    eventually("every document stored and indexed", Duration::from_secs(90), || async {
        app.scalar_i64(&format!(
            "SELECT count(*) FROM documents WHERE user_id = '{user}' AND indexed_hash = content_hash"
        ))
        .await
            == 41
    })
    .await;
    assert_eq!(app.scalar_i64("SELECT count(*) FROM dead_letters").await, 0);
}
