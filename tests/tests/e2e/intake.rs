//! Bad input gets a clear 4xx naming the problem, and nothing reaches JetStream.

use crate::doc;
use assistant_tests::TestApp;
use serde_json::{Value, json};

async fn rejected(app: &TestApp, token: &str, body: Value, status: u16, field: Option<&str>) {
    let response = app.post_documents(token, &body).await;
    assert_eq!(response.status().as_u16(), status, "for {body}");
    let error: Value = response.json().await.unwrap();
    assert!(
        error["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{error}"
    );
    if let Some(field) = field {
        assert_eq!(error["field"], field, "{error}");
    }
}

#[tokio::test]
async fn invalid_documents_are_rejected_with_the_field_named_and_nothing_published() {
    let app = TestApp::spawn_only(&[]).await;
    let (_, token) = app.user("strict@example.com").await;
    let good = doc("gmail", "email", "ok", "Fine", "A fine document.");

    rejected(
        &app,
        &token,
        json!({"documents": []}),
        422,
        Some("documents"),
    )
    .await;
    rejected(
        &app,
        &token,
        json!({"documents": [good.clone(), doc("Gmail!", "email", "x", "t", "b")]}),
        422,
        Some("documents[1].source"),
    )
    .await;
    rejected(
        &app,
        &token,
        json!({"documents": [doc("gmail", "e mail", "x", "t", "b")]}),
        422,
        Some("documents[0].kind"),
    )
    .await;
    rejected(
        &app,
        &token,
        json!({"documents": [doc("gmail", "email", "  ", "t", "b")]}),
        422,
        Some("documents[0].external_id"),
    )
    .await;
    rejected(
        &app,
        &token,
        json!({"documents": [doc("gmail", "email", "x", "", " ")]}),
        422,
        Some("documents[0].body"),
    )
    .await;
    let mut no_id = good.clone();
    no_id.as_object_mut().unwrap().remove("external_id");
    rejected(
        &app,
        &token,
        json!({"documents": [good.clone(), no_id]}),
        422,
        Some("documents[1]"),
    )
    .await;
    let mut bad_meta = good.clone();
    bad_meta["metadata"] = json!([1, 2]);
    rejected(
        &app,
        &token,
        json!({"documents": [bad_meta]}),
        422,
        Some("documents[0].metadata"),
    )
    .await;
    let mut bad_time = good.clone();
    bad_time["occurred_at"] = json!("last tuesday");
    rejected(
        &app,
        &token,
        json!({"documents": [bad_time]}),
        422,
        Some("documents[0].occurred_at"),
    )
    .await;
    let huge = doc(
        "gmail",
        "email",
        "big",
        "Big",
        &"x".repeat(app.config.max_document_bytes + 1),
    );
    rejected(
        &app,
        &token,
        json!({"documents": [huge]}),
        422,
        Some("documents[0].body"),
    )
    .await;
    let too_many: Vec<Value> = (0..=app.config.max_batch_documents)
        .map(|i| doc("gmail", "email", &i.to_string(), "t", "b"))
        .collect();
    rejected(
        &app,
        &token,
        json!({"documents": too_many}),
        422,
        Some("documents"),
    )
    .await;
    rejected(&app, &token, json!({"docs": [good.clone()]}), 422, None).await;

    let not_json = app
        .http
        .post(format!("{}/api/ingest/documents", app.url))
        .bearer_auth(&token)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    let too_large = app
        .http
        .post(format!("{}/api/ingest/documents", app.url))
        .bearer_auth(&token)
        .body(vec![b' '; app.config.max_request_bytes + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(too_large.status(), 413);

    for bad_token in ["", "Bearer nonsense", "Basic abc"] {
        let response = app
            .http
            .post(format!("{}/api/ingest/documents", app.url))
            .header("authorization", bad_token)
            .json(&json!({"documents": [good.clone()]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "token {bad_token:?}");
    }
    let foreign = common::auth::Tokens::new(
        "some-other-secret-that-is-long-enough!!",
        &app.config.public_url,
    )
    .issue(
        common::UserId(uuid::Uuid::new_v4()),
        "x@example.com",
        chrono::Duration::hours(1),
    )
    .unwrap();
    let response = app
        .post_documents(&foreign, &json!({"documents": [good]}))
        .await;
    assert_eq!(response.status(), 401);

    assert_eq!(app.stream_messages("INGEST").await, 0, "nothing published");
}

#[tokio::test]
async fn search_rejects_bad_parameters_and_needs_a_token() {
    let app = TestApp::spawn_only(&[]).await;
    let (_, token) = app.user("searcher@example.com").await;
    let get = |q: Vec<(&'static str, &'static str)>| {
        app.http
            .get(format!("{}/api/embeddings/search", app.url))
            .bearer_auth(&token)
            .query(&q)
            .send()
    };
    assert_eq!(get(vec![("q", " ")]).await.unwrap().status(), 422);
    assert_eq!(
        get(vec![("q", "x"), ("top_k", "0")])
            .await
            .unwrap()
            .status(),
        422
    );
    assert_eq!(
        get(vec![("q", "x"), ("top_k", "many")])
            .await
            .unwrap()
            .status(),
        400
    );
    let response = get(vec![("q", "x"), ("time_zone", "Mars/Olympus_Mons")])
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["field"], "time_zone", "{body}");
    assert_eq!(
        get(vec![("q", "x"), ("source", "Not A Source")])
            .await
            .unwrap()
            .status(),
        422
    );
    assert_eq!(
        get(vec![
            ("q", "x"),
            ("from", "2026-02-01T00:00:00Z"),
            ("to", "2026-01-01T00:00:00Z")
        ])
        .await
        .unwrap()
        .status(),
        422
    );
    assert_eq!(get(vec![]).await.unwrap().status(), 400);
    let anonymous = app
        .http
        .get(format!("{}/api/embeddings/search?q=x", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    // Without the embedding service the search still answers, on full text.
    let result = app.search(&token, &[("q", "anything")]).await;
    assert_eq!(result["mode"], "fulltext");
    assert_eq!(result["hits"], json!([]));
}
