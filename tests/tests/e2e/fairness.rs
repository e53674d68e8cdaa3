//! One tenant cannot stall the others: bulk work (imports, first syncs, replays, a tenant's
//! documents past its interactive share) travels in its own lane, which interactive work is
//! never queued behind, and the embedder serves interactive texts first.

use crate::{doc_id, wait_indexed};
use assistant_tests::{TestApp, eventually, test_config};
use serde_json::{Value, json};
use std::time::Duration;

fn note(i: usize, body: &str) -> Value {
    json!({"source": "notes", "kind": "note", "external_id": format!("n{i}"),
           "title": format!("Import {i}"), "body": body})
}

async fn unindexed(app: &TestApp, user: common::UserId) -> i64 {
    app.scalar_i64(&format!(
        "SELECT count(*) FROM documents WHERE user_id = '{user}' AND indexed_hash IS DISTINCT FROM content_hash"
    ))
    .await
}

#[tokio::test]
async fn one_tenants_backlog_does_not_delay_another_tenants_new_document() {
    let app = TestApp::spawn_only(&["ingest", "embedding"]).await;
    let (importer, big) = app.user("importer@example.com").await;
    let (advisor, small) = app.user("advisor@example.com").await;
    let body = "Quarterly review notes: rebalanced the portfolio toward bonds, discussed the \
                529 plan, the client wants to revisit the trust in spring. "
        .repeat(3);
    for batch in 0..2 {
        let documents: Vec<Value> = (0..80).map(|i| note(batch * 80 + i, &body)).collect();
        let r = app
            .post_documents(&big, &json!({"documents": documents, "bulk": true}))
            .await;
        assert_eq!(r.status(), 202);
        let accepted: Value = r.json().await.unwrap();
        assert!(
            accepted["accepted"]
                .as_array()
                .unwrap()
                .iter()
                .all(|a| a["lane"] == "bulk")
        );
    }
    let r = app
        .post_documents(
            &small,
            &json!({"documents": [{"source": "gmail", "kind": "email", "external_id": "urgent-1",
                                   "title": "Wire request", "body": "Please wire $5,000 today."}]}),
        )
        .await;
    assert_eq!(r.status(), 202);
    assert_eq!(
        r.json::<Value>().await.unwrap()["accepted"][0]["lane"],
        "interactive"
    );
    wait_indexed(&app, &[doc_id(advisor, "gmail", "urgent-1")]).await;
    // The other tenant's document went past the import: most of it still waits.
    let stored = app
        .scalar_i64(&format!(
            "SELECT count(*) FROM documents WHERE user_id = '{importer}'"
        ))
        .await;
    let waiting = unindexed(&app, importer).await + (160 - stored);
    assert!(
        waiting >= 80,
        "only {waiting} of the 160 imported documents still waited"
    );
    // And the import is not lost: all stored, and its indexing goes on.
    eventually(
        "the import stored and indexing",
        Duration::from_secs(60),
        || async {
            let stored = app
                .scalar_i64(&format!(
                    "SELECT count(*) FROM documents WHERE user_id = '{importer}'"
                ))
                .await;
            stored == 160 && unindexed(&app, importer).await < 160
        },
    )
    .await;
}

#[tokio::test]
async fn a_tenant_past_its_interactive_share_is_moved_to_the_bulk_lane() {
    let app = TestApp::spawn_with(
        common::Config {
            interactive_share_per_user: 5,
            ..test_config().await
        },
        &["ingest"], // stored, never indexed: what waits keeps counting against the share
    )
    .await;
    let (user, token) = app.user("flood@example.com").await;
    let lanes = |r: Value| -> Vec<String> {
        r["accepted"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["lane"].as_str().unwrap().to_owned())
            .collect()
    };
    let first: Vec<Value> = (0..8).map(|i| note(i, "a note")).collect();
    let r = app
        .post_documents(&token, &json!({ "documents": first }))
        .await;
    assert_eq!(r.status(), 202);
    let got = lanes(r.json().await.unwrap());
    assert_eq!(got.iter().filter(|l| *l == "interactive").count(), 5);
    assert_eq!(got.iter().filter(|l| *l == "bulk").count(), 3);
    eventually("all stored", Duration::from_secs(20), || async {
        app.scalar_i64(&format!(
            "SELECT count(*) FROM documents WHERE user_id = '{user}'"
        ))
        .await
            == 8
    })
    .await;
    // Eight wait to be indexed: the share is used up, everything more goes to bulk.
    let more: Vec<Value> = (8..12).map(|i| note(i, "another note")).collect();
    let r = app
        .post_documents(&token, &json!({ "documents": more }))
        .await;
    assert!(lanes(r.json().await.unwrap()).iter().all(|l| l == "bulk"));
    let interactive = app
        .subject_counts("INGEST", &format!("ingest.{user}.documents"))
        .await
        .values()
        .sum::<usize>();
    let bulk = app
        .subject_counts("BULK", &format!("bulk.{user}.documents"))
        .await
        .values()
        .sum::<usize>();
    assert_eq!((interactive, bulk), (5, 7));
    // Another tenant still has its whole share.
    let (_, other) = app.user("calm@example.com").await;
    let r = app
        .post_documents(&other, &json!({"documents": [note(1, "hello")]}))
        .await;
    assert_eq!(lanes(r.json().await.unwrap()), vec!["interactive"]);
}

/// Attack (or an eager importer): 20,000 documents as 200 requests of 100, four at a time,
/// without `"bulk": true`. Each request counted only what was already stored, so requests in
/// flight together all found the share empty and their documents all went interactive, ahead
/// of everyone. What was submitted and not yet stored now counts, read and counted at once.
#[tokio::test]
async fn concurrent_requests_share_one_interactive_share() {
    let app = TestApp::spawn_only(&["ingest"]).await;
    let (_, token) = app.user("eager@example.com").await;
    let share = app.config.interactive_share_per_user as usize;
    let request = |r: usize| {
        let documents: Vec<Value> = (0..100).map(|i| note(r * 100 + i, "a note")).collect();
        let (app, token) = (&app, &token);
        async move {
            let r = app
                .post_documents(token, &json!({ "documents": documents }))
                .await;
            assert_eq!(r.status(), 202);
            let body: Value = r.json().await.unwrap();
            body["accepted"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a["lane"] == "interactive")
                .count()
        }
    };
    let mut interactive = 0;
    for round in 0..2 {
        let counts = futures::future::join_all((0..4).map(|i| request(round * 4 + i))).await;
        interactive += counts.iter().sum::<usize>();
    }
    assert_eq!(
        interactive, share,
        "800 documents sent four requests at a time"
    );
}
