//! Meeting transcripts: stored as one document, chunked by speaker turn, searchable.

use assistant_tests::TestApp;
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn transcripts_are_chunked_by_speaker_turn_and_searchable() {
    let app = TestApp::spawn_only(&["ingest", "embedding"]).await;
    let (user, token) = app.user("advisor@example.com").await;
    let long = "I want to understand how the required minimum distributions interact with the Roth conversion we discussed, because my accountant said the timing matters a great deal for the tax bracket this year and next year. ".repeat(8);
    let body = json!({
        "source": "gong", "external_id": "call-42", "title": "Annual review with the Parkers",
        "occurred_at": "2026-11-20T15:00:00Z", "participants": ["Advisor", "Tom Parker"],
        "turns": [
            {"speaker": "Advisor", "start_secs": 0, "text": "Thanks for joining. Let's start with your goals."},
            {"speaker": "Tom Parker", "start_secs": 6.5, "text": long},
            {"speaker": "Advisor", "start_secs": 95, "end_secs": 120, "text": "Good question; we will model both scenarios."}
        ]
    });
    let post = |b: &Value| {
        app.http
            .post(format!("{}/api/ingest/transcripts", app.url))
            .bearer_auth(&token)
            .json(b)
            .send()
    };
    let r = post(&body).await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    let mut backwards = body.clone();
    backwards["turns"][2]["start_secs"] = json!(1);
    let r = post(&backwards).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        r.json::<Value>().await.unwrap()["field"],
        "turns[2].start_secs"
    );

    let id = crate::doc_id(user, "gong", "call-42");
    crate::wait_indexed(&app, &[id]).await;
    let doc = db::documents::get(&app.db, id).await.unwrap().unwrap();
    assert_eq!(doc.kind, "transcript");
    assert_eq!(doc.metadata["speakers"], json!(["Advisor", "Tom Parker"]));
    assert!(doc.body.starts_with("[00:00:00] Advisor: Thanks"));
    let chunks: Vec<String> = {
        use sea_orm::{ConnectionTrait, Statement};
        app.db
            .query_all_raw(Statement::from_string(
                sea_orm::DbBackend::Postgres,
                format!("SELECT content FROM chunks WHERE document_id = '{id}' ORDER BY ordinal"),
            ))
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.try_get::<String>("", "content").unwrap())
            .collect()
    };
    // The advisor's opening stands alone (Tom's long turn does not fit beside it), Tom's
    // turn is split on its own, and no chunk mixes the end of one speaker with another.
    assert_eq!(
        chunks[0],
        "[00:00:00] Advisor: Thanks for joining. Let's start with your goals."
    );
    assert!(
        chunks[1].starts_with("[00:00:06] Tom Parker:"),
        "{chunks:?}"
    );
    assert!(
        chunks.last().unwrap().starts_with("[00:01:35] Advisor:"),
        "{chunks:?}"
    );
    assert!(
        chunks
            .iter()
            .filter(|c| c.contains("Advisor:"))
            .all(|c| !c.contains("Tom Parker:")),
        "{chunks:?}"
    );

    let hits = app
        .search(
            &token,
            &[("q", "Roth conversion and required minimum distributions")],
        )
        .await;
    assert_eq!(
        crate::titles(&hits).first().map(String::as_str),
        Some("Annual review with the Parkers")
    );
}

/// Size is checked before the transcript is built: fifty thousand speakers are refused by
/// the size limit, naming `turns`, without first comparing every speaker with every other.
#[tokio::test]
async fn oversized_transcripts_are_refused_before_they_are_built() {
    let app = TestApp::spawn_only(&[]).await;
    let (_, token) = app.user("advisor@example.com").await;
    let turns: Vec<Value> = (0..50_000)
        .map(|i| json!({"speaker": format!("Speaker {i}"), "start_secs": i, "text": "ok"}))
        .collect();
    let r = app
        .http
        .post(format!("{}/api/ingest/transcripts", app.url))
        .bearer_auth(&token)
        .json(&json!({"external_id": "huge", "title": "All hands", "turns": turns}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json::<Value>().await.unwrap()["field"], "turns");
    assert_eq!(app.stream_messages("INGEST").await, 0);
}
