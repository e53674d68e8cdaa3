//! Search over the labelled evaluation corpus (tests/data/search_eval): what must never
//! regress in structure, whatever the tuning. The quality numbers are `make bench`'s.

use assistant_tests::TestApp;
use assistant_tests::search_eval;
use std::collections::HashMap;

async fn corpus(
    app: &TestApp,
    email: &str,
) -> (common::UserId, String, HashMap<uuid::Uuid, String>) {
    let (user, token) = app.user(email).await;
    let docs = search_eval::corpus().unwrap();
    let labels = search_eval::load(
        &app.db,
        &app.config,
        embedding::embedder(&app.config).unwrap(),
        user,
        &docs,
    )
    .await
    .unwrap();
    (user, token, labels)
}

fn ranked(result: &serde_json::Value, labels: &HashMap<uuid::Uuid, String>) -> Vec<String> {
    result["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let id: uuid::Uuid = h["document_id"].as_str().unwrap().parse().unwrap();
            labels.get(&id).cloned().unwrap_or_default()
        })
        .collect()
}

#[tokio::test]
async fn exact_terms_names_and_times_over_the_evaluation_corpus() {
    let app = TestApp::spawn_only(&["embedding"]).await;
    let (user, token, labels) = corpus(&app, "dana@whitfieldwealth.com").await;

    // An account number, a ticker and a form name are found first, whatever the vectors say.
    for (q, want) in [
        ("account 8821-0457", "e-schwab-transfer"),
        ("4417-3391", "e-schwab-wire"),
        ("SWVXX", "t-call-team-q3"),
        ("FinCEN 114", "e-tanaka-reply"),
    ] {
        let result = app.search(&token, &[("q", q)]).await;
        assert_eq!(result["mode"], "hybrid");
        assert_eq!(
            ranked(&result, &labels).first().map(String::as_str),
            Some(want),
            "{q}: {result}"
        );
    }

    // A named person is resolved against the CRM contacts and said so; their documents lead.
    let result = app
        .search(&token, &[("q", "what did Maria send about her old plan")])
        .await;
    let people = &result["understood"]["people"];
    assert_eq!(people[0]["name"], "Maria Alvarez", "{result}");
    assert_eq!(people[0]["email"], "maria.alvarez@gmail.com");
    let top = ranked(&result, &labels);
    assert!(top[..5].iter().all(|l| l.contains("alvarez")), "{top:?}");

    // A named time is read and reported, and its documents come first even when nothing
    // else in the question matches them.
    let result = app.search(&token, &[("q", "emails in August")]).await;
    let time = &result["understood"]["time"];
    assert_eq!(time["words"], "in August", "{result}");
    assert!(
        time["from"].as_str().unwrap().contains("-08-01T00:00:00"),
        "{time}"
    );
    assert_eq!(result["understood"]["kinds"], serde_json::json!(["email"]));
    let top = ranked(&result, &labels);
    assert!(
        ["e-goldberg-inherited", "e-goldberg-reply"].contains(&top[0].as_str()),
        "the August emails lead: {top:?}"
    );
    assert_eq!(time["time_zone"], "UTC", "no zone known: {time}");
    // The user's zone (as their calendar states it) decides where August starts, and a zone
    // the request names beats it.
    db::users::set_time_zone(&app.db, user, "America/New_York")
        .await
        .unwrap();
    let result = app.search(&token, &[("q", "emails in August")]).await;
    let time = &result["understood"]["time"];
    assert_eq!(time["time_zone"], "America/New_York", "{result}");
    assert_eq!(time["from"], "2026-08-01T04:00:00Z");
    assert_eq!(time["to"], "2026-09-01T04:00:00Z");
    let result = app
        .search(
            &token,
            &[("q", "emails in August"), ("time_zone", "Asia/Tokyo")],
        )
        .await;
    let time = &result["understood"]["time"];
    assert_eq!(time["time_zone"], "Asia/Tokyo", "{result}");
    assert_eq!(time["from"], "2026-07-31T15:00:00Z");
    // A time given as a filter is a filter, and the question is then not read for one.
    let result = app
        .search(
            &token,
            &[
                ("q", "emails in August"),
                ("from", "2026-11-01T00:00:00Z"),
                ("to", "2026-12-01T00:00:00Z"),
            ],
        )
        .await;
    assert!(result["understood"]["time"].is_null(), "{result}");
    assert!(
        !ranked(&result, &labels)
            .iter()
            .any(|l| l.starts_with("e-goldberg"))
    );

    // A question in a client's words finds notes in the trade's: "nursing care insurance" and
    // "waiting period" are searched as "LTC" and "elimination period" too, and said so.
    let result = app
        .search(
            &token,
            &[(
                "q",
                "how long is the waiting period on the nursing care insurance",
            )],
        )
        .await;
    let also = &result["understood"]["also_searched"];
    for word in ["ltc", "elimination period"] {
        assert!(
            also.as_array().unwrap().iter().any(|w| w == word),
            "{word}: {result}"
        );
    }
    let top = ranked(&result, &labels);
    let mut first_two = top[..2].to_vec();
    first_two.sort();
    assert_eq!(
        first_two,
        ["e-priya-ltc-research", "n-brennan-estate"],
        "the two documents with the elimination period lead: {top:?}"
    );

    // The assistant's search tool runs the same search: same documents, same order.
    let searcher = actions::search::Searcher::new(app.db.clone(), app.bus.clone(), &app.config);
    let q = "client who wanted to sell everything during the spring crash";
    let api = ranked(&app.search(&token, &[("q", q)]).await, &labels);
    let direct = searcher
        .search(
            user,
            actions::search::SearchRequest {
                q: q.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let direct: Vec<String> = direct
        .hits
        .iter()
        .map(|h| labels[&h.document_id].clone())
        .collect();
    assert_eq!(api, direct);
    assert_eq!(api.len(), 10);
}

/// A chunk with every word of the question is found however many newer chunks have only
/// some of them: full text scores the newest 300 chunks with a rare word, and the newest exact
/// matches besides.
#[tokio::test]
async fn an_old_exact_match_is_found_behind_hundreds_of_newer_partial_ones() {
    use sea_orm::ConnectionTrait;
    let app = TestApp::spawn_only(&[]).await;
    let user = db::users::ensure(&app.db, "exact-match@example.com")
        .await
        .unwrap();
    // The oldest chunk has both words; then 4,000 chunks, one in twelve with "alpha" (rare
    // enough, at 8%, to choose candidates): 333 newer partial matches.
    app.db
        .execute_unprepared(&format!(
            "INSERT INTO documents (id, user_id, source, kind, external_id, title, body, content_hash, indexed_hash)
               SELECT gen_random_uuid(), '{user}', 'gmail', 'email', 'x-' || g, 'Note ' || g, '', 'h', 'h'
               FROM generate_series(0, 4000) g;
             INSERT INTO chunks (document_id, user_id, source, kind, ordinal, title, content, embedding)
               SELECT d.id, d.user_id, d.source, d.kind, 0, d.title,
                      CASE WHEN d.external_id = 'x-0' THEN 'alpha omega quarterly review'
                           WHEN substr(d.external_id, 3)::int % 12 = 0 THEN 'alpha quarterly review'
                           ELSE 'quarterly review number ' || d.external_id END,
                      array_fill(0.05, ARRAY[384])::vector
               FROM documents d WHERE d.user_id = '{user}'
               ORDER BY substr(d.external_id, 3)::int;
             ANALYZE chunks;",
            user = user.0
        ))
        .await
        .unwrap();
    let hits = db::search::hybrid(
        &app.db,
        &db::search::SearchQuery {
            user: Some(user),
            tsquery: Some("'alpha' | 'omega'".into()),
            tsquery_all: Some("'alpha' & 'omega'".into()),
            top_k: 10,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(hits.len(), 10);
    assert_eq!(hits[0].title, "Note 0", "{hits:?}");
    assert!(hits[1..].iter().all(|h| h.title != "Note 0"));
}
