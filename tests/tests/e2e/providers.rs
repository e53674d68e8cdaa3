//! HubSpot, Slack and Calendar: connecting a signed-in user, webhooks verified as each
//! provider specifies (negatives publish nothing), deduplicated deliveries, and the sync
//! each webhook triggers against local fakes of the providers' APIs.

use crate::fakes::FakeGoogle;
use crate::google::sign_in;
use assistant_tests::{TestApp, eventually, test_config};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION};
use serde_json::{Value, json};
use sha2::Sha256;
use std::time::Duration;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const HUBSPOT_SECRET: &str = "hubspot-client-secret-for-tests";
const SLACK_SECRET: &str = "slack-signing-secret-for-tests";
const PORTAL: i64 = 62515;
const TEAM: &str = "T0FAKE123";

fn hmac(key: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

async fn fake_hubspot() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/v1/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "hs-access-1", "refresh_token": "hs-refresh-1", "expires_in": 1800, "token_type": "bearer"
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/oauth/v1/access-tokens/hs-access-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "token": "hs-access-1", "user": "advisor@example.com", "hub_domain": "wealth-partners.com",
            "scopes": ["oauth", "crm.objects.contacts.read"], "hub_id": PORTAL, "app_id": 54321,
            "expires_in": 1790, "user_id": 7, "token_type": "access"
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/crm/v3/objects/contacts/123"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "123",
            "properties": {"firstname": "Maria", "lastname": "Gonzalez", "email": "maria@example.com",
                           "jobtitle": "CFO", "lifecyclestage": "customer", "lastmodifieddate": "2026-11-20T10:00:00Z"},
            "createdAt": "2026-11-01T09:00:00Z", "updatedAt": "2026-11-20T10:00:00Z", "archived": false,
            "associations": {"companies": {"results": [{"id": "9001", "type": "contact_to_company"}]}}
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/crm/v3/objects/contacts/404"))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(json!({"status": "error", "message": "Object not found"})),
        )
        .mount(&server)
        .await;
    server
}

async fn fake_slack() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/users.info"))
        .and(query_param("user", "U2CERLKJA"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "ok": true, "user": {"id": "U2CERLKJA", "name": "roadrunner", "real_name": "Rita Runner",
                                 "profile": {"display_name": "Rita", "real_name": "Rita Runner"}}
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/conversations.info"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "ok": true, "channel": {"id": "C024BE91L", "name": "client-feedback", "is_member": true}
        })))
        .mount(&server)
        .await;
    server
}

async fn app_with(services: &[&'static str]) -> (TestApp, FakeGoogle, MockServer, MockServer) {
    app_tuned(services, |_| {}).await
}

async fn app_tuned(
    services: &[&'static str],
    tune: impl FnOnce(&mut common::Config),
) -> (TestApp, FakeGoogle, MockServer, MockServer) {
    let google = FakeGoogle::start("advisor@example.com").await;
    let hubspot = fake_hubspot().await;
    let slack = fake_slack().await;
    let mut config = test_config().await;
    google.configure(&mut config);
    config.hubspot_client_id = "hubspot-client".into();
    config.hubspot_client_secret = HUBSPOT_SECRET.into();
    config.hubspot_auth_url = format!("{}/oauth/authorize", hubspot.uri());
    config.hubspot_api_base = hubspot.uri();
    config.slack_signing_secret = SLACK_SECRET.into();
    config.slack_api_base = format!("{}/api", slack.uri());
    config.sync_interval_secs = 0;
    tune(&mut config);
    (
        TestApp::spawn_with(config, services).await,
        google,
        hubspot,
        slack,
    )
}

/// Signs in with Google, then connects HubSpot through the browser flow.
async fn connect_hubspot(app: &TestApp) -> common::UserId {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let anonymous = client
        .get(format!("{}/api/auth/hubspot/start", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        anonymous.status(),
        StatusCode::UNAUTHORIZED,
        "HubSpot attaches to a signed-in user"
    );

    let session = sign_in(app).await;
    let r = client
        .get(format!("{}/api/auth/hubspot/start", app.url))
        .header(COOKIE, &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let authorize = url::Url::parse(r.headers()[LOCATION].to_str().unwrap()).unwrap();
    let q: std::collections::HashMap<_, _> = authorize.query_pairs().into_owned().collect();
    assert!(q["scope"].contains("crm.objects.contacts.read"));
    assert_eq!(q["code_challenge_method"], "S256");
    let flow = r.headers().get_all("set-cookie").iter().find_map(|v| {
        let v = v.to_str().unwrap();
        v.starts_with("oauth_flow=")
            .then(|| v.split(';').next().unwrap().to_owned())
    });
    // HubSpot's consent page sends the browser back with a code.
    let callback = format!(
        "{}/api/auth/hubspot/callback?code=hs-code&state={}",
        app.url, q["state"]
    );
    let r = client
        .get(callback)
        .header(COOKIE, format!("{}; {session}", flow.unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{:?}", r.text().await);

    let me: Value = client
        .get(format!("{}/api/connections", app.url))
        .header(COOKIE, &session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hubspot = me["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["provider"] == "hubspot")
        .unwrap()
        .clone();
    assert_eq!(hubspot["account_id"], PORTAL.to_string());
    assert_eq!(hubspot["account_name"], "wealth-partners.com");
    let me: Value = client
        .get(format!("{}/api/auth/me", app.url))
        .header(COOKIE, &session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    common::UserId(me["user_id"].as_str().unwrap().parse().unwrap())
}

fn hubspot_events(event_id: u64, kind: &str, object: u64) -> String {
    json!([{
        "eventId": event_id, "subscriptionId": 12345, "portalId": PORTAL, "appId": 54321,
        "occurredAt": 1_764_000_000_000u64, "subscriptionType": kind, "attemptNumber": 0,
        "objectId": object, "changeSource": "CRM", "changeFlag": "NEW"
    }])
    .to_string()
}

/// Sends a HubSpot v3-signed request; `skew_ms` moves the signed timestamp.
async fn hubspot_v3(app: &TestApp, body: &str, skew_ms: i64, tamper: bool) -> reqwest::Response {
    let ts = (chrono::Utc::now().timestamp_millis() + skew_ms).to_string();
    let uri = format!("{}/api/webhooks/hubspot", app.config.public_url);
    let sig = STANDARD.encode(hmac(
        HUBSPOT_SECRET,
        &[b"POST", uri.as_bytes(), body.as_bytes(), ts.as_bytes()],
    ));
    let sent = if tamper {
        body.replacen("12345", "12346", 1)
    } else {
        body.to_owned()
    };
    app.http
        .post(format!("{}/api/webhooks/hubspot", app.url))
        .header("content-type", "application/json")
        .header("x-hubspot-signature-v3", sig)
        .header("x-hubspot-request-timestamp", ts)
        .body(sent)
        .send()
        .await
        .unwrap()
}

/// A v1-signed delivery: sha256(secret + body), no timestamp.
async fn hubspot_v1(app: &TestApp, body: &str) -> reqwest::Response {
    let v1 = hex::encode(<Sha256 as sha2::Digest>::digest(format!(
        "{HUBSPOT_SECRET}{body}"
    )));
    app.http
        .post(format!("{}/api/webhooks/hubspot", app.url))
        .header("x-hubspot-signature", v1)
        .header("x-hubspot-signature-version", "v1")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

/// An app that can only sign v1 works when the operator says so.
#[tokio::test]
async fn hubspot_legacy_signatures_only_when_allowed() {
    let (app, _google, _hubspot, _slack) =
        app_tuned(&[], |c| c.hubspot_accept_legacy_signatures = true).await;
    let r = hubspot_v1(&app, &hubspot_events(1002, "contact.deletion", 404)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let forged = app
        .http
        .post(format!("{}/api/webhooks/hubspot", app.url))
        .header("x-hubspot-signature", "00".repeat(32))
        .header("x-hubspot-signature-version", "v1")
        .body(hubspot_events(1003, "contact.deletion", 405))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn hubspot_connect_webhooks_and_object_sync() {
    let (app, _google, _hubspot, _slack) = app_with(&["ingest"]).await;
    let user = connect_hubspot(&app).await;
    let base = app.stream_messages("SYNC").await; // first syncs queued at connect

    let body = hubspot_events(1001, "contact.creation", 123);
    for (case, skew, tamper) in [
        ("one byte changed", 0, true),
        ("301 s old", -301_000, false),
        ("301 s ahead", 301_000, false),
    ] {
        assert_eq!(
            hubspot_v3(&app, &body, skew, tamper).await.status(),
            StatusCode::UNAUTHORIZED,
            "{case}"
        );
    }
    let unsigned = app
        .http
        .post(format!("{}/api/webhooks/hubspot", app.url))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        unsigned.status(),
        StatusCode::UNAUTHORIZED,
        "missing header"
    );
    let v1_wrong = app
        .http
        .post(format!("{}/api/webhooks/hubspot", app.url))
        .header("x-hubspot-signature", "00".repeat(32))
        .header("x-hubspot-signature-version", "v1")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(v1_wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.stream_messages("SYNC").await,
        base,
        "no rejected webhook reached JetStream"
    );

    let r = hubspot_v3(&app, &body, 0, false).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"published": 1, "duplicates": 0})
    );
    // HubSpot retries the same eventId: deduplicated.
    let r = hubspot_v3(&app, &body, 0, false).await;
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"published": 1, "duplicates": 1})
    );
    // The same delivery with its v3 headers stripped and its (timestamp-free) v1 signature:
    // a downgrade that would make it replayable forever. Refused.
    let r = hubspot_v1(&app, &body).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.stream_messages("SYNC").await, base + 1);
    let deletion = hubspot_events(1002, "contact.deletion", 404);
    assert_eq!(
        hubspot_v3(&app, &deletion, 0, false).await.status(),
        StatusCode::OK
    );
    assert_eq!(app.stream_messages("SYNC").await, base + 2);

    let contact = crate::doc_id(user, "hubspot", "contact:123");
    eventually("contact synced", Duration::from_secs(20), || async {
        db::documents::get(&app.db, contact)
            .await
            .unwrap()
            .is_some()
    })
    .await;
    let doc = db::documents::get(&app.db, contact).await.unwrap().unwrap();
    assert_eq!(doc.title, "Maria Gonzalez");
    assert!(doc.body.contains("Job title: CFO"), "{}", doc.body);
    assert_eq!(doc.metadata["associations"]["companies"], json!(["9001"]));
    let created = app
        .subject_counts("EVENTS", &format!("events.{user}.hubspot.contact.created"))
        .await;
    assert_eq!(created.values().sum::<usize>(), 1);
    eventually("deletion announced", Duration::from_secs(20), || async {
        app.subject_counts("EVENTS", &format!("events.{user}.hubspot.contact.deleted"))
            .await
            .values()
            .sum::<usize>()
            == 1
    })
    .await;
}

async fn slack_post(
    app: &TestApp,
    body: &str,
    skew: i64,
    tamper: bool,
    retry: Option<&str>,
) -> reqwest::Response {
    let ts = (chrono::Utc::now().timestamp() + skew).to_string();
    let sig = format!(
        "v0={}",
        hex::encode(hmac(
            SLACK_SECRET,
            &[b"v0:", ts.as_bytes(), b":", body.as_bytes()]
        ))
    );
    let sent = if tamper {
        body.replacen('e', "f", 1)
    } else {
        body.to_owned()
    };
    let mut r = app
        .http
        .post(format!("{}/api/webhooks/slack", app.url))
        .header("content-type", "application/json")
        .header("x-slack-request-timestamp", ts)
        .header("x-slack-signature", sig);
    if let Some(n) = retry {
        r = r
            .header("x-slack-retry-num", n)
            .header("x-slack-retry-reason", "http_timeout");
    }
    r.body(sent).send().await.unwrap()
}

#[tokio::test]
async fn slack_events_are_verified_deduplicated_and_stored_with_names() {
    let (app, _google, _hubspot, _slack) = app_with(&["ingest"]).await;
    let (user, _) = app.user("advisor@example.com").await;
    let ring = app.config.key_ring().unwrap();
    db::connections::save_tokens(
        &app.db,
        &ring,
        user,
        "slack",
        &db::connections::Account {
            id: TEAM.into(),
            name: "Wealth Partners".into(),
            scopes: "channels:history".into(),
            user: Some("U1234".into()),
        },
        &db::connections::TokenSet {
            access_token: "xoxb-test".into(),
            refresh_token: None,
            expires_at: None,
        },
    )
    .await
    .unwrap();

    let challenge = json!({"token": "x", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"}).to_string();
    let r = slack_post(&app, &challenge, 0, true, None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        !r.text().await.unwrap().contains("3eZbrw1a"),
        "no challenge before the signature checks"
    );
    let r = slack_post(&app, &challenge, 0, false, None).await;
    assert_eq!(
        r.json::<Value>().await.unwrap()["challenge"],
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );

    let event = json!({
        "token": "x", "team_id": TEAM, "api_app_id": "A1", "type": "event_callback",
        "event_id": "Ev0PV52K21", "event_time": 1_764_000_000,
        "event": {"type": "message", "channel": "C024BE91L", "user": "U2CERLKJA",
                  "text": "Clients keep asking for a quarterly fee breakdown", "ts": "1764000000.000200"}
    })
    .to_string();
    for (case, skew, tamper) in [
        ("one byte changed", 0, true),
        ("301 s old", -301, false),
        ("301 s ahead", 301, false),
    ] {
        assert_eq!(
            slack_post(&app, &event, skew, tamper, None).await.status(),
            StatusCode::UNAUTHORIZED,
            "{case}"
        );
    }
    let unsigned = app
        .http
        .post(format!("{}/api/webhooks/slack", app.url))
        .body(event.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.stream_messages("SYNC").await,
        0,
        "no rejected event reached JetStream"
    );

    assert_eq!(
        slack_post(&app, &event, 0, false, None).await.status(),
        StatusCode::OK
    );
    let retried = slack_post(&app, &event, 0, false, Some("1")).await;
    assert_eq!(retried.status(), StatusCode::OK, "retries are acknowledged");
    assert_eq!(retried.json::<Value>().await.unwrap()["duplicates"], 1);
    assert_eq!(app.stream_messages("SYNC").await, 1);

    let id = crate::doc_id(user, "slack", "C024BE91L:1764000000.000200");
    eventually("message stored", Duration::from_secs(20), || async {
        db::documents::get(&app.db, id).await.unwrap().is_some()
    })
    .await;
    let doc = db::documents::get(&app.db, id).await.unwrap().unwrap();
    assert_eq!(doc.title, "#client-feedback: Rita");
    assert_eq!(doc.metadata["user_name"], "Rita");
    let posted = app
        .subject_counts(
            "EVENTS",
            &format!("events.{user}.slack.slack.message.posted"),
        )
        .await;
    assert_eq!(posted.values().sum::<usize>(), 1);
}

#[tokio::test]
async fn calendar_notifications_need_the_channel_token() {
    let (app, _google, _hubspot, _slack) = app_with(&[]).await;
    let (user, _) = app.user("advisor@example.com").await;
    db::sync_state::save_channel(
        &app.db,
        &db::sync_state::Channel {
            id: "chan-1".into(),
            user_id: user,
            resource: "calendar".into(),
            token_hash: Some(db::sessions::hash("s3cret-channel-token")),
            resource_id: Some("res-1".into()),
            expires_at: chrono::Utc::now() + chrono::Duration::days(7),
        },
    )
    .await
    .unwrap();
    let notify = |channel: &str, token: Option<&str>, state: &str, number: &str| {
        let mut r = app
            .http
            .post(format!("{}/api/webhooks/calendar", app.url))
            .header("x-goog-channel-id", channel)
            .header("x-goog-resource-id", "res-1")
            .header("x-goog-resource-state", state)
            .header("x-goog-message-number", number);
        if let Some(t) = token {
            r = r.header("x-goog-channel-token", t);
        }
        r.send()
    };
    assert_eq!(
        notify("chan-1", Some("wrong"), "exists", "2")
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        notify("chan-1", None, "exists", "2")
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        notify("chan-404", Some("s3cret-channel-token"), "exists", "2")
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.stream_messages("SYNC").await, 0);

    let r = notify("chan-1", Some("s3cret-channel-token"), "sync", "1")
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        app.stream_messages("SYNC").await,
        0,
        "the sync handshake changes nothing"
    );
    for _ in 0..2 {
        let r = notify("chan-1", Some("s3cret-channel-token"), "exists", "2")
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    assert_eq!(
        app.stream_messages("SYNC").await,
        1,
        "one sync per message number"
    );
    let queued = app.subject_counts("SYNC", "sync.>").await;
    assert_eq!(queued.get(&format!("sync.{user}.calendar")), Some(&1));
}
