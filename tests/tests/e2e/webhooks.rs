//! Standard Webhooks intake at the gateway, end to end.

use crate::{doc_id, titles, wait_indexed};
use assistant_tests::TestApp;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

pub fn sign(secret: &str, id: &str, ts: i64, body: &str) -> String {
    let key = STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.{body}").as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// A generic webhook endpoint for `user` and `source` with `SECRET`; returns its id.
pub async fn endpoint(app: &TestApp, user: common::UserId, source: &str) -> String {
    let source = common::ids::Source::parse(source).unwrap();
    let ring = app.config.key_ring().unwrap();
    db::webhooks::create(&app.db, &ring, user, &source, SECRET)
        .await
        .unwrap()
        .id
        .to_string()
}

pub async fn deliver(
    app: &TestApp,
    endpoint: &str,
    id: &str,
    ts: i64,
    body: &str,
    signature: Option<String>,
) -> reqwest::Response {
    let mut request = app
        .http
        .post(format!("{}/api/webhooks/generic/{endpoint}", app.url))
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string())
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(sig) = signature {
        request = request.header("webhook-signature", sig);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn signed_deliveries_are_ingested_once_and_bad_ones_publish_nothing() {
    let app = TestApp::spawn().await;
    assistant_tests::mark_sensitive(SECRET);
    let (user, token) = app.user("hooks@example.com").await;
    let feedback = endpoint(&app, user, "feedback").await;
    // Another endpoint of the same source, with another secret.
    let (other_user, _) = app.user("other-hooks@example.com").await;
    let ring = app.config.key_ring().unwrap();
    let other = db::webhooks::create(
        &app.db,
        &ring,
        other_user,
        &common::ids::Source::parse("feedback").unwrap(),
        "whsec_c2VjcmV0LW9mLXNvbWVib2R5LWVsc2U=",
    )
    .await
    .unwrap()
    .id
    .to_string();
    let unknown = uuid::Uuid::new_v4().to_string();
    let now = chrono::Utc::now().timestamp();
    let body = r#"{"type":"feedback.created","data":{"id":"fb-1","title":"Export to CSV","body":"Customers want to export their holdings report to CSV."}}"#;

    // Every kind of bad delivery first: none may reach JetStream.
    let tampered = body.replace("CSV", "PDF");
    let cases = [
        (
            "tampered body",
            deliver(
                &app,
                &feedback,
                "msg_1",
                now,
                &tampered,
                Some(sign(SECRET, "msg_1", now, body)),
            )
            .await,
        ),
        (
            "unsigned",
            deliver(&app, &feedback, "msg_1", now, body, None).await,
        ),
        (
            "stale",
            deliver(
                &app,
                &feedback,
                "msg_1",
                now - 301,
                body,
                Some(sign(SECRET, "msg_1", now - 301, body)),
            )
            .await,
        ),
        // The exact 300/301 s boundary is unit-tested; a margin keeps a clock tick out of it here.
        (
            "future",
            deliver(
                &app,
                &feedback,
                "msg_1",
                now + 330,
                body,
                Some(sign(SECRET, "msg_1", now + 330, body)),
            )
            .await,
        ),
        (
            "wrong secret",
            deliver(
                &app,
                &feedback,
                "msg_1",
                now,
                body,
                Some(sign(
                    "whsec_c2VjcmV0LW9mLXNvbWVib2R5LWVsc2U=",
                    "msg_1",
                    now,
                    body,
                )),
            )
            .await,
        ),
        (
            "unknown endpoint",
            deliver(
                &app,
                &unknown,
                "msg_1",
                now,
                body,
                Some(sign(SECRET, "msg_1", now, body)),
            )
            .await,
        ),
        (
            "not an endpoint id",
            deliver(
                &app,
                "feedback",
                "msg_1",
                now,
                body,
                Some(sign(SECRET, "msg_1", now, body)),
            )
            .await,
        ),
        (
            "another user's endpoint",
            deliver(
                &app,
                &other,
                "msg_1",
                now,
                body,
                Some(sign(SECRET, "msg_1", now, body)),
            )
            .await,
        ),
    ];
    for (what, response) in cases {
        assert_eq!(response.status(), 401, "{what}");
        let error: serde_json::Value = response.json().await.unwrap();
        assert_eq!(error["code"], "invalid_signature", "{what}");
    }
    assert_eq!(
        app.stream_messages("WEBHOOKS").await,
        0,
        "nothing published"
    );

    // The real one, delivered three times (retries carry the same webhook-id).
    let signature = sign(SECRET, "msg_1", now, body);
    let mut duplicates = Vec::new();
    for _ in 0..3 {
        let response = deliver(&app, &feedback, "msg_1", now, body, Some(signature.clone())).await;
        assert_eq!(response.status(), 202);
        let accepted: serde_json::Value = response.json().await.unwrap();
        duplicates.push(accepted["duplicate"].as_bool().unwrap());
    }
    assert_eq!(duplicates, vec![false, true, true]);
    assert_eq!(app.stream_messages("WEBHOOKS").await, 1);
    wait_indexed(&app, &[doc_id(user, "feedback", "fb-1")]).await;
    assert_eq!(
        titles(&app.search(&token, &[("q", "spreadsheet download")]).await)[0],
        "Export to CSV"
    );
    assert_eq!(app.scalar_i64("SELECT count(*) FROM documents").await, 1);
    // Secrets are stored encrypted.
    assert_eq!(
        app.scalar_i64("SELECT count(*) FROM webhook_endpoints WHERE secret LIKE 'whsec_%'")
            .await,
        0
    );
}

#[tokio::test]
async fn the_published_test_vector_payload_is_accepted_with_a_fresh_timestamp() {
    let app = TestApp::spawn().await;
    let (user, token) = app.user("vector@example.com").await;
    let generic = endpoint(&app, user, "generic").await;
    let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    let body = r#"{"test": 2432232314}"#;
    // The published timestamp (1614265330) is years old, so the gateway must refuse it...
    let stale = deliver(
        &app,
        &generic,
        id,
        1614265330,
        body,
        Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".into()),
    )
    .await;
    assert_eq!(stale.status(), 401);
    // ...and accept the same delivery signed now. Any JSON becomes a searchable document.
    let now = chrono::Utc::now().timestamp();
    let response = deliver(
        &app,
        &generic,
        id,
        now,
        body,
        Some(sign(SECRET, id, now, body)),
    )
    .await;
    assert_eq!(response.status(), 202);
    wait_indexed(&app, &[doc_id(user, "generic", id)]).await;
    let result = app.search(&token, &[("q", "2432232314")]).await;
    assert_eq!(result["hits"].as_array().unwrap().len(), 1);
}
