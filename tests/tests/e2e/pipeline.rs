//! Ingest → embedding → search, and the idempotency of every step.

use crate::{doc, doc_id, titles, wait_indexed};
use assistant_tests::TestApp;
use common::UserId;
use common::events::{DocumentInput, Envelope, Event};
use common::ids::Source;
use sea_orm::ConnectionTrait;
use serde_json::json;

#[tokio::test]
async fn ingested_documents_become_searchable_by_meaning_and_words() {
    let app = TestApp::spawn().await;
    let (user, token) = app.user("advisor@example.com").await;
    let docs = json!({"documents": [
        doc("gmail", "email", "m1", "Roth conversion question",
            "Maria asked whether converting her traditional IRA to a Roth IRA this year makes sense, since her income dropped after retiring."),
        doc("hubspot", "note", "n1", "Call with the Nguyens",
            "Discussed funding the 529 college savings plan for their twins; they want to contribute monthly."),
        doc("gcal", "event", "e1", "Dentist", "Routine cleaning appointment."),
    ]});
    let response = app.post_documents(&token, &docs).await;
    assert_eq!(response.status(), 202);
    let body: serde_json::Value = response.json().await.unwrap();
    let accepted = body["accepted"].as_array().unwrap();
    assert_eq!(accepted.len(), 3);
    assert_eq!(accepted[0]["id"], doc_id(user, "gmail", "m1").to_string());
    wait_indexed(
        &app,
        &[
            doc_id(user, "gmail", "m1"),
            doc_id(user, "hubspot", "n1"),
            doc_id(user, "gcal", "e1"),
        ],
    )
    .await;

    // By meaning: no word of the query appears in the document.
    let result = app
        .search(
            &token,
            &[("q", "paying for the kids' university"), ("top_k", "1")],
        )
        .await;
    assert_eq!(result["mode"], "hybrid");
    assert_eq!(titles(&result), vec!["Call with the Nguyens"]);

    // By words, with a snippet that marks them.
    let result = app.search(&token, &[("q", "Roth IRA")]).await;
    assert_eq!(titles(&result)[0], "Roth conversion question");
    let hit = &result["hits"][0];
    assert!(
        hit["snippet"].as_str().unwrap().contains("**Roth**"),
        "{hit}"
    );
    assert_eq!(hit["source"], "gmail");
    assert_eq!(hit["document_id"], doc_id(user, "gmail", "m1").to_string());
    assert!(hit["score"].as_f64().unwrap() > 0.0);

    // Filters.
    let only_notes = app
        .search(&token, &[("q", "Roth IRA"), ("source", "hubspot")])
        .await;
    assert!(
        titles(&only_notes)
            .iter()
            .all(|t| t == "Call with the Nguyens")
    );
    let by_kind = app
        .search(&token, &[("q", "appointment"), ("kind", "event,note")])
        .await;
    assert!(!titles(&by_kind).contains(&"Roth conversion question".to_owned()));

    // The POST form takes the same query.
    let posted: serde_json::Value = app
        .http
        .post(format!("{}/api/embeddings/search", app.url))
        .bearer_auth(&token)
        .json(&json!({"q": "Roth IRA", "top_k": 2, "sources": ["gmail"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(titles(&posted), vec!["Roth conversion question"]);
}

#[tokio::test]
async fn date_range_filters_by_occurred_at() {
    let app = TestApp::spawn().await;
    let (user, token) = app.user("dates@example.com").await;
    let mut old = doc(
        "gmail",
        "email",
        "old",
        "Portfolio review 2024",
        "Annual portfolio review notes.",
    );
    old["occurred_at"] = json!("2024-03-01T09:00:00Z");
    let mut new = doc(
        "gmail",
        "email",
        "new",
        "Portfolio review 2026",
        "Annual portfolio review notes.",
    );
    new["occurred_at"] = json!("2026-03-01T09:00:00Z");
    assert_eq!(
        app.post_documents(&token, &json!({"documents": [old, new]}))
            .await
            .status(),
        202
    );
    wait_indexed(
        &app,
        &[doc_id(user, "gmail", "old"), doc_id(user, "gmail", "new")],
    )
    .await;
    let result = app
        .search(
            &token,
            &[
                ("q", "portfolio review"),
                ("from", "2026-01-01T00:00:00Z"),
                ("to", "2027-01-01T00:00:00Z"),
            ],
        )
        .await;
    assert_eq!(titles(&result), vec!["Portfolio review 2026"]);
    assert_eq!(result["hits"][0]["occurred_at"], "2026-03-01T09:00:00Z");
}

#[tokio::test]
async fn the_same_document_delivered_twice_is_one_document() {
    let app = TestApp::spawn().await;
    let (user, token) = app.user("twice@example.com").await;
    let body = json!({"documents": [doc("gmail", "email", "dup", "Beneficiary update", "Please update the beneficiary on account 4411.")]});
    let first: serde_json::Value = app
        .post_documents(&token, &body)
        .await
        .json()
        .await
        .unwrap();
    let second: serde_json::Value = app
        .post_documents(&token, &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["accepted"][0]["duplicate"], false);
    assert_eq!(
        second["accepted"][0]["duplicate"], true,
        "JetStream dedup by Nats-Msg-Id"
    );
    assert_eq!(app.stream_messages("INGEST").await, 1);

    let id = doc_id(user, "gmail", "dup");
    wait_indexed(&app, &[id]).await;
    // Past the dedup window (a fresh message id), Postgres' unique key still holds.
    let input: DocumentInput = serde_json::from_value(body["documents"][0].clone()).unwrap();
    let envelope = Envelope::new(user, Event::DocumentSubmitted(input));
    app.bus
        .publish_raw(&envelope.subject(), "another-id", envelope.to_bytes())
        .await
        .unwrap();
    assistant_tests::eventually(
        "redelivery consumed",
        std::time::Duration::from_secs(10),
        || async {
            let s = common::status::read(&app.bus).await;
            s.iter()
                .flat_map(|s| &s.consumers)
                .all(|c| c.pending == 0 && c.ack_pending == 0)
        },
    )
    .await;
    assert_eq!(app.scalar_i64("SELECT count(*) FROM documents").await, 1);
    assert_eq!(
        app.stream_messages("EVENTS").await,
        1,
        "unchanged content announces nothing"
    );
    assert_eq!(db::chunks::count(&app.db, id).await.unwrap(), 1);
}

#[tokio::test]
async fn changed_content_is_reembedded_and_old_chunks_are_gone() {
    let app = TestApp::spawn().await;
    let (user, token) = app.user("change@example.com").await;
    let id = doc_id(user, "notes", "plan");
    let long_old = "The client prefers municipal bonds for tax-free income. ".repeat(60);
    let v1 = json!({"documents": [doc("notes", "note", "plan", "Investment plan", &long_old)]});
    assert_eq!(app.post_documents(&token, &v1).await.status(), 202);
    wait_indexed(&app, &[id]).await;
    let old_chunks = db::chunks::count(&app.db, id).await.unwrap();
    assert!(
        old_chunks > 1,
        "a long body spans several chunks: {old_chunks}"
    );

    let v2 = json!({"documents": [doc("notes", "note", "plan", "Investment plan", "Switched to a growth-oriented index fund strategy.")]});
    assert_eq!(app.post_documents(&token, &v2).await.status(), 202);
    assistant_tests::eventually(
        "new version indexed",
        std::time::Duration::from_secs(30),
        || async {
            let d = db::documents::get(&app.db, id).await.unwrap().unwrap();
            d.body.starts_with("Switched")
                && d.indexed_hash.as_deref() == Some(d.content_hash.as_str())
        },
    )
    .await;
    assert_eq!(db::chunks::count(&app.db, id).await.unwrap(), 1);
    assert_eq!(
        app.scalar_i64("SELECT count(*) FROM chunks WHERE content LIKE '%municipal%'")
            .await,
        0
    );
    let result = app.search(&token, &[("q", "municipal bonds")]).await;
    assert!(
        result["hits"][0]["snippet"]
            .as_str()
            .unwrap()
            .contains("index fund")
    );
    let result = app.search(&token, &[("q", "growth index fund")]).await;
    assert_eq!(titles(&result), vec!["Investment plan"]);
}

#[tokio::test]
async fn one_user_never_finds_another_users_data() {
    let app = TestApp::spawn().await;
    let (alice, alice_token) = app.user("alice@example.com").await;
    let (bob, bob_token) = app.user("bob@example.com").await;
    let secret = json!({"documents": [doc("gmail", "email", "s1", "Alice's private trust", "Details of the irrevocable trust for Alice's estate.")]});
    let same_ids = json!({"documents": [doc("gmail", "email", "s1", "Bob's grocery list", "Eggs, milk, bread.")]});
    assert_eq!(
        app.post_documents(&alice_token, &secret).await.status(),
        202
    );
    assert_eq!(
        app.post_documents(&bob_token, &same_ids).await.status(),
        202
    );
    wait_indexed(
        &app,
        &[doc_id(alice, "gmail", "s1"), doc_id(bob, "gmail", "s1")],
    )
    .await;

    for q in ["irrevocable trust estate", "Alice", "private"] {
        let result = app.search(&bob_token, &[("q", q), ("top_k", "100")]).await;
        assert_eq!(
            titles(&result),
            vec!["Bob's grocery list"],
            "bob searching {q:?}"
        );
    }
    let result = app.search(&alice_token, &[("q", "groceries milk")]).await;
    assert_eq!(titles(&result), vec!["Alice's private trust"]);
    assert_eq!(
        app.scalar_i64("SELECT count(*) FROM documents").await,
        2,
        "same external id, two users, two documents"
    );
}

#[tokio::test]
async fn replay_restores_a_users_documents_from_the_stream() {
    let app = TestApp::spawn().await;
    let (user, token) = app.user("replay@example.com").await;
    let (_, other_token) = app.user("other@example.com").await;
    let body = json!({"documents": [
        doc("gmail", "email", "r1", "Estate planning", "Update the will and the healthcare proxy."),
        doc("gmail", "email", "r2", "Insurance review", "Compare term life quotes."),
    ]});
    assert_eq!(app.post_documents(&token, &body).await.status(), 202);
    assert_eq!(
        app.post_documents(
            &other_token,
            &json!({"documents": [doc("gmail", "email", "o1", "Other", "Someone else's mail.")]})
        )
        .await
        .status(),
        202
    );
    let ids = [doc_id(user, "gmail", "r1"), doc_id(user, "gmail", "r2")];
    wait_indexed(&app, &ids).await;

    // Postgres loses the user's documents (a bad restore, say); the stream still has them.
    app.db
        .execute_unprepared(&format!("DELETE FROM documents WHERE user_id = '{user}'"))
        .await
        .unwrap();
    let report = ctl::replay(&app.bus, "INGEST", user, None).await.unwrap();
    assert_eq!(report.republished, 2, "only this user's messages");
    wait_indexed(&app, &ids).await;
    assert_eq!(
        titles(&app.search(&token, &[("q", "term life insurance")]).await)[0],
        "Insurance review"
    );
    assert_eq!(app.scalar_i64("SELECT count(*) FROM documents").await, 3);
}

#[tokio::test]
async fn a_document_for_an_unknown_user_is_dead_lettered_and_requeue_recovers_it() {
    let app = TestApp::spawn_only(&["ingest", "embedding"]).await;
    let ghost = common::UserId(uuid::Uuid::new_v4());
    let input = DocumentInput {
        source: Source::parse("gmail").unwrap(),
        kind: Source::parse("email").unwrap(),
        external_id: "g1".into(),
        title: "Early message".into(),
        body: "Arrived before the user existed.".into(),
        metadata: json!({}),
        occurred_at: None,
    };
    app.bus
        .publish(&Envelope::new(ghost, Event::DocumentSubmitted(input)))
        .await
        .unwrap();
    assistant_tests::eventually(
        "dead letter recorded",
        std::time::Duration::from_secs(20),
        || async { app.scalar_i64("SELECT count(*) FROM dead_letters").await == 1 },
    )
    .await;
    let letters = db::dead_letters::list(&app.db, false, 10).await.unwrap();
    assert_eq!(letters[0].consumer, "ingest-documents");
    assert!(letters[0].error.contains("poison"), "{}", letters[0].error);
    assert_eq!(
        letters[0].deliveries, 1,
        "a constraint violation is not retried"
    );

    // The user appears; the operator requeues.
    app.db
        .execute_unprepared(&format!(
            "INSERT INTO users (id, email) VALUES ('{}', 'late@example.com')",
            ghost.0
        ))
        .await
        .unwrap();
    ctl::requeue(&app.db, &app.bus, letters[0].id)
        .await
        .unwrap();
    wait_indexed(&app, &[crate::doc_id(ghost, "gmail", "g1")]).await;
    assert!(
        db::dead_letters::list(&app.db, false, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        ctl::requeue(&app.db, &app.bus, letters[0].id)
            .await
            .is_err(),
        "requeued twice"
    );
}

#[tokio::test]
async fn reindex_brings_documents_indexed_before_up_to_date_without_duplicating() {
    let app = TestApp::spawn().await;
    let (alice, alice_token) = app.user("reindex-alice@example.com").await;
    let (bob, bob_token) = app.user("reindex-bob@example.com").await;
    let email = |id: &str, from: &str| {
        let mut d = doc(
            "gmail",
            "email",
            id,
            "Rollover paperwork",
            "Forms attached.",
        );
        d["metadata"] = json!({ "from": from, "to": "advisor@example.com" });
        json!({ "documents": [d] })
    };
    for (token, body) in [
        (
            &alice_token,
            email("a1", "Maria Alvarez <maria@example.com>"),
        ),
        (&bob_token, email("b1", "Greg Hill <greg@example.com>")),
    ] {
        assert_eq!(app.post_documents(token, &body).await.status(), 202);
    }
    let ids = [doc_id(alice, "gmail", "a1"), doc_id(bob, "gmail", "b1")];
    wait_indexed(&app, &ids).await;
    // As an earlier version indexed them: the title alone, no sender.
    app.db
        .execute_unprepared("UPDATE chunks SET title = 'Rollover paperwork'")
        .await
        .unwrap();
    let by_sender =
        "SELECT count(*) FROM chunks WHERE tsv @@ plainto_tsquery('english', 'Alvarez')";
    assert_eq!(
        app.scalar_i64(by_sender).await,
        0,
        "the sender is not indexed yet"
    );
    let old_title = |user: UserId| {
        let app = &app;
        async move {
            app.scalar_i64(&format!(
                "SELECT count(*) FROM chunks WHERE user_id = '{user}' AND title = 'Rollover paperwork'"
            ))
            .await
        }
    };

    assert_eq!(
        ctl::reindex(&app.db, &app.bus, Some(alice)).await.unwrap(),
        1
    );
    assistant_tests::eventually(
        "alice's chunks indexed again",
        std::time::Duration::from_secs(30),
        || async { old_title(alice).await == 0 },
    )
    .await;
    assert_eq!(
        app.scalar_i64(by_sender).await,
        1,
        "found by the sender now"
    );
    assert_eq!(old_title(bob).await, 1, "only the named user's documents");

    assert_eq!(ctl::reindex(&app.db, &app.bus, None).await.unwrap(), 2);
    assistant_tests::eventually(
        "everyone's chunks indexed again",
        std::time::Duration::from_secs(30),
        || async { old_title(bob).await == 0 },
    )
    .await;
    assert_eq!(
        app.scalar_i64("SELECT count(*) FROM chunks").await,
        2,
        "replaced, not added"
    );
    assert_eq!(
        app.scalar_i64("SELECT count(*) FROM documents WHERE indexed_hash = content_hash")
            .await,
        2
    );
}
