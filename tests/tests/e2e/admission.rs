//! Never 2xx for what cannot be stored: arbitrary JSON in every field of every way a
//! document enters (documents API, transcripts, generic webhooks) is either refused with a
//! 4xx naming the field, or accepted and then stored. NUL characters, which Postgres `text`
//! and `jsonb` refuse, are the classic case; dates out of range and deep metadata are others.

use crate::webhooks::{SECRET, deliver, sign};
use assistant_tests::{TestApp, eventually};
use common::events::{DocumentInput, WebhookReceived};
use common::ids::Source;
use common::intake::{self, Limits};
use common::normalize::webhook_to_document;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

/// Strings that are often troublesome: NULs, other control characters, any Unicode.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9 _-]{0,12}",
        "[a-z\\x00\\x01\\x7f\\u{FEFF}\\u{1F600} ]{0,16}",
        any::<String>(),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        text().prop_map(Value::from),
    ];
    // Deeper than MAX_METADATA_DEPTH sometimes, so the refusal is exercised too.
    leaf.prop_recursive(12, 48, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((text(), inner), 0..4)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

/// Dates anywhere chrono can write them, and strings that are no date at all.
fn date() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        (-300_000i64..300_000).prop_map(|days| Value::from(
            (chrono::Utc::now() + chrono::Duration::days(days * 30)).to_rfc3339()
        )),
        Just(Value::from("+275760-09-13T00:00:00Z")),
        Just(Value::from("-4714-11-24T00:00:00Z")),
        text().prop_map(Value::from),
    ]
}

/// A document as a client could send it: any JSON in every field, mostly plausible.
fn document() -> impl Strategy<Value = Value> {
    (
        prop_oneof![3 => Just("notes".to_owned()), 1 => text()],
        prop_oneof![3 => Just("note".to_owned()), 1 => text()],
        text(),
        text(),
        text(),
        prop_oneof![2 => json_value(), 1 => Just(json!({"plain": "metadata"}))],
        date(),
    )
        .prop_map(
            |(source, kind, external_id, title, body, metadata, occurred_at)| {
                json!({
                    "source": source, "kind": kind, "external_id": external_id, "title": title,
                    "body": body, "metadata": metadata, "occurred_at": occurred_at,
                })
            },
        )
}

fn transcript() -> impl Strategy<Value = Value> {
    (
        text(),
        text(),
        date(),
        prop::collection::vec(text(), 0..3),
        prop::collection::vec((text(), 0.0f64..1e6, text()), 1..4),
    )
        .prop_map(|(external_id, title, occurred_at, participants, mut turns)| {
            turns.sort_by(|a, b| a.1.total_cmp(&b.1));
            let turns: Vec<Value> = turns
                .into_iter()
                .map(|(speaker, start, text)| json!({"speaker": speaker, "start_secs": start, "text": text}))
                .collect();
            json!({
                "source": "gong", "external_id": external_id, "title": title,
                "occurred_at": occurred_at, "participants": participants, "turns": turns,
            })
        })
}

fn webhook_payload() -> impl Strategy<Value = Value> {
    prop_oneof![
        json_value(),
        (text(), text(), text(), json_value(), date()).prop_map(|(id, title, body, metadata, at)| {
            json!({"type": "note.created", "data": {
                "external_id": id, "title": title, "body": body, "metadata": metadata, "occurred_at": at,
            }})
        }),
    ]
}

fn samples<S: Strategy>(strategy: S, n: usize, seed: u8) -> Vec<S::Value> {
    let mut runner = TestRunner::new_with_rng(
        RunnerConfig::default(),
        proptest::test_runner::TestRng::from_seed(
            proptest::test_runner::RngAlgorithm::ChaCha,
            &[seed; 32],
        ),
    );
    (0..n)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect()
}

fn limits() -> Limits {
    Limits {
        max_batch: 100,
        max_body_bytes: 256 * 1024,
    }
}

fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

proptest! {
    #![proptest_config(RunnerConfig { cases: 512, ..RunnerConfig::default() })]

    /// What admission lets through holds nothing Postgres refuses, and admitting it again
    /// changes nothing (so the gateway and ingest agree on ids and hashes).
    #[test]
    fn admitted_documents_are_storable_and_admission_is_idempotent(
        external_id in text(), title in text(), body in text(), metadata in json_value(),
        days in proptest::option::of(-4_000_000i64..4_000_000),
    ) {
        let doc = DocumentInput {
            source: Source::parse("notes").unwrap(),
            kind: Source::parse("note").unwrap(),
            external_id, title, body, metadata,
            occurred_at: days.map(|d| chrono::DateTime::UNIX_EPOCH + chrono::Duration::days(d)),
        };
        if let Ok(admitted) = intake::admit(doc, "doc", &limits()) {
            let text = [&admitted.external_id, &admitted.title, &admitted.body];
            prop_assert!(text.iter().all(|t| !t.contains('\0')));
            prop_assert!(!has_nul(&admitted.metadata));
            prop_assert!(admitted.metadata.is_object());
            prop_assert!(!admitted.external_id.trim().is_empty());
            let again = intake::admit(admitted.clone(), "doc", &limits()).unwrap();
            prop_assert_eq!(again.content_hash(), admitted.content_hash());
            prop_assert_eq!(again, admitted);
        }
    }
}

/// Sends each sample; returns how many were accepted. A 2xx must carry document ids, a
/// refusal must be a 4xx that names what is wrong; a 5xx fails the test.
async fn check_response(response: reqwest::Response, sent: &Value) -> bool {
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(
        status.is_success() || status.is_client_error(),
        "{status} for {sent}: {text}"
    );
    if status.is_client_error() {
        let error: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{text}"));
        assert!(
            error["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{error}"
        );
    }
    status.is_success()
}

#[tokio::test]
async fn every_document_answered_2xx_is_stored_whatever_its_fields_hold() {
    let app = TestApp::spawn_only(&["ingest"]).await;
    let (user, token) = app.user("fuzz@example.com").await;
    let source = Source::parse("fuzz").unwrap();
    let fuzz = crate::webhooks::endpoint(&app, user, "fuzz").await;

    let mut accepted: Vec<(String, Value)> = Vec::new();
    let mut refused = 0;
    let mut accepted_with_nul = 0;

    for document in samples(document(), 160, 1) {
        let body = json!({"documents": [document]});
        let response = app.post_documents(&token, &body).await;
        if check_response(response, &body).await {
            accepted_with_nul += usize::from(has_nul(&body));
            let source = document["source"].as_str().unwrap().to_owned();
            let external_id = document["external_id"].as_str().unwrap().replace('\0', "");
            let id = crate::doc_id(user, &source, &external_id);
            accepted.push((id.to_string(), body));
        } else {
            refused += 1;
        }
    }
    for transcript in samples(transcript(), 60, 2) {
        let response = app
            .http
            .post(format!("{}/api/ingest/transcripts", app.url))
            .bearer_auth(&token)
            .json(&transcript)
            .send()
            .await
            .unwrap();
        if check_response(response, &transcript).await {
            accepted_with_nul += usize::from(has_nul(&transcript));
            let external_id = transcript["external_id"]
                .as_str()
                .unwrap()
                .replace('\0', "");
            let id = crate::doc_id(user, "gong", &external_id);
            accepted.push((id.to_string(), transcript));
        } else {
            refused += 1;
        }
    }
    let now = chrono::Utc::now().timestamp();
    for payload in samples(webhook_payload(), 60, 3) {
        let body = payload.to_string();
        let id = format!("msg_{}", Uuid::new_v4().simple());
        let signature = sign(SECRET, &id, now, &body);
        let response = deliver(&app, &fuzz, &id, now, &body, Some(signature)).await;
        if check_response(response, &payload).await {
            accepted_with_nul += usize::from(has_nul(&payload));
            // The document ingest makes of it, by the product's own normalization.
            let hook = WebhookReceived {
                source: source.clone(),
                webhook_id: id,
                received_at: chrono::Utc::now(),
                payload: payload.clone(),
            };
            let doc = webhook_to_document(&hook, limits().max_body_bytes);
            let doc = intake::admit(doc, "body", &limits()).expect("the gateway admitted it");
            let id = crate::doc_id(user, "fuzz", &doc.external_id);
            accepted.push((id.to_string(), payload));
        } else {
            refused += 1;
        }
    }
    assert!(
        accepted_with_nul > 10,
        "the samples exercise NULs: {accepted_with_nul}"
    );
    assert!(refused > 10, "and refusals: {refused}");

    let ids: Vec<Uuid> = accepted.iter().map(|(id, _)| id.parse().unwrap()).collect();
    let expected = ids.iter().collect::<std::collections::HashSet<_>>().len() as i64;
    let stored = || async {
        let sql = format!(
            "SELECT count(*) FROM documents WHERE id IN ({})",
            ids.iter()
                .map(|id| format!("'{id}'"))
                .collect::<Vec<_>>()
                .join(",")
        );
        app.scalar_i64(&sql).await
    };
    eventually(
        "every accepted document stored",
        Duration::from_secs(60),
        || async { stored().await == expected },
    )
    .await;
    // Nothing that was accepted failed later.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(app.scalar_i64("SELECT count(*) FROM dead_letters").await, 0);
    for (id, sent) in &accepted {
        let doc = db::documents::get(&app.db, common::DocumentId(id.parse().unwrap()))
            .await
            .unwrap();
        assert!(doc.is_some(), "accepted but not stored: {sent}");
    }
}
