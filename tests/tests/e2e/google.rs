//! Google end to end against the local fake: sign-in with PKCE and a browser-bound one-time
//! state, the session cookie, Gmail sync (pagination, limit and continuation, 429, expired
//! and rejected tokens, stale history, deletions, `invalid_grant`) and Gmail push.

use crate::fakes::FakeGoogle;
use assistant_tests::{TestApp, eventually, test_config};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::UserId;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use serde_json::{Value, json};
use std::time::Duration;

pub const EMAIL: &str = "advisor@example.com";
pub const PUSH_ACCOUNT: &str = "gmail-push@test-project.iam.gserviceaccount.com";

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn location(r: &reqwest::Response) -> String {
    r.headers()[LOCATION].to_str().unwrap().to_owned()
}

/// `name=value` of a cookie the response sets, and the whole header line.
fn set_cookie(r: &reqwest::Response, name: &str) -> Option<(String, String)> {
    r.headers().get_all(SET_COOKIE).iter().find_map(|v| {
        let line = v.to_str().ok()?.to_owned();
        let pair = line.split(';').next()?.to_owned();
        pair.starts_with(&format!("{name}="))
            .then_some((pair, line))
    })
}

/// Starts sign-in; returns the provider URL and the browser-binding cookie.
async fn start(app: &TestApp) -> (String, String) {
    start_returning(app, "/inbox").await
}

async fn start_returning(app: &TestApp, return_to: &str) -> (String, String) {
    let r = browser()
        .get(format!("{}/api/auth/google/start", app.url))
        .query(&[("return_to", return_to)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (flow_cookie, _) = set_cookie(&r, "oauth_flow").expect("flow cookie");
    (location(&r), flow_cookie)
}

/// The provider's redirect back to us (the fake consents at once). The redirect URI is
/// built from PUBLIC_URL; the test gateway listens on a random port.
async fn consent(app: &TestApp, authorize_url: &str) -> String {
    let r = browser().get(authorize_url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND, "{}", r.text().await.unwrap());
    let to = location(&r);
    assert!(
        to.starts_with(&format!(
            "{}/api/auth/google/callback?",
            app.config.public_url
        )),
        "{to}"
    );
    to.replacen(&app.config.public_url, &app.url, 1)
}

/// The whole browser flow (start, consent, callback); returns the callback's response.
async fn sign_in_returning(app: &TestApp, return_to: &str) -> reqwest::Response {
    let (authorize, flow_cookie) = start_returning(app, return_to).await;
    let callback = consent(app, &authorize).await;
    browser()
        .get(callback)
        .header(COOKIE, flow_cookie)
        .send()
        .await
        .unwrap()
}

/// Signs in through the whole browser flow; returns the session cookie pair.
pub async fn sign_in(app: &TestApp) -> String {
    let r = sign_in_returning(app, "/inbox").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{:?}", r.text().await);
    set_cookie(&r, "session").expect("session cookie").0
}

async fn google_app(
    services: &[&'static str],
    tune: impl FnOnce(&mut common::Config),
) -> (TestApp, FakeGoogle) {
    let fake = FakeGoogle::start(EMAIL).await;
    let mut config = test_config().await;
    fake.configure(&mut config);
    config.google_jwks = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/push_signer.jwks.json"
    ))
    .unwrap();
    config.gmail_push_service_account = PUSH_ACCOUNT.into();
    config.sync_interval_secs = 0;
    tune(&mut config);
    (TestApp::spawn_with(config, services).await, fake)
}

/// After sign-in the browser lands only on a path of ours, however `return_to` is dressed up
/// (a tab a browser drops, a backslash it reads as a slash, dot segments, another scheme).
#[tokio::test]
async fn sign_in_never_redirects_off_site() {
    let (app, _fake) = google_app(&[], |_| {}).await;
    let cases = [
        ("/inbox?tab=2#top", "/inbox?tab=2#top"),
        ("/\t/evil.example", "/"),
        ("/\n/evil.example", "/"),
        ("/\\evil.example", "/"),
        ("//evil.example", "/"),
        ("/.//evil.example", "/"),
        ("https://evil.example/", "/"),
        ("javascript:alert(1)", "/"),
    ];
    for (return_to, expected) in cases {
        let r = sign_in_returning(&app, return_to).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&r), expected, "return_to {return_to:?}");
    }
}

#[tokio::test]
async fn google_sign_in_with_pkce_state_and_session_cookie() {
    let (app, fake) = google_app(&[], |_| {}).await;

    let (authorize, flow_cookie) = start(&app).await;
    let url = url::Url::parse(&authorize).unwrap();
    let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["include_granted_scopes"], "true");
    assert_eq!(q["access_type"], "offline");
    assert!(
        q["scope"].contains("gmail.modify")
            && q["scope"].contains("auth/calendar")
            && q["scope"].contains("email")
    );
    assert!(q["state"].len() >= 43, "state carries 256 random bits");

    let callback = consent(&app, &authorize).await;
    // Another browser (no or another flow cookie) cannot finish this flow...
    let r = browser()
        .get(&callback)
        .header(COOKIE, "oauth_flow=someone-else")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // ...and the state was spent by that attempt, so a replay is refused too.
    let r = browser()
        .get(&callback)
        .header(COOKIE, &flow_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("state"));

    // A code issued for one flow's PKCE challenge, brought back with another flow's state
    // (code injection): the verifier does not match and Google refuses the exchange.
    let (first_authorize, _) = start(&app).await;
    let stolen = consent(&app, &first_authorize).await;
    let stolen_code = url::Url::parse(&stolen)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let (second_authorize, second_cookie) = start(&app).await;
    let second_state = url::Url::parse(&second_authorize)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let r = browser()
        .get(format!(
            "{}/api/auth/google/callback?code={stolen_code}&state={second_state}",
            app.url
        ))
        .header(COOKIE, second_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(fake.state.lock().unwrap().code_exchanges, 0);

    // The real thing.
    let (authorize, flow_cookie) = start(&app).await;
    let callback = consent(&app, &authorize).await;
    let r = browser()
        .get(&callback)
        .header(COOKIE, &flow_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/inbox");
    let (session, line) = set_cookie(&r, "session").unwrap();
    assert!(
        line.contains("HttpOnly") && line.contains("SameSite=Lax") && line.contains("Path=/"),
        "{line}"
    );
    let secret = session.trim_start_matches("session=");
    assert!(secret.len() >= 43, "session id carries 256 random bits");
    assert_eq!(
        app.scalar_i64(&format!(
            "SELECT count(*) FROM sessions WHERE id_hash = sha256('{secret}'::bytea)"
        ))
        .await,
        1,
        "only a hash of the session id is stored"
    );

    let me: Value = browser()
        .get(format!("{}/api/auth/me", app.url))
        .header(COOKIE, &session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["email"], EMAIL);
    assert_eq!(me["connections"], json!(["google"]));
    let user = UserId(me["user_id"].as_str().unwrap().parse().unwrap());

    // Tokens encrypted; first syncs and watches queued (gmail and calendar).
    assert_eq!(
        app.scalar_i64("SELECT count(*) FROM connections WHERE access_token_enc LIKE '%ya29%' OR refresh_token_enc LIKE '%refresh%'").await,
        0
    );
    let queued = app.subject_counts("SYNC", "sync.>").await;
    assert_eq!(
        queued.get(&format!("sync.{user}.gmail")),
        Some(&2),
        "{queued:?}"
    );
    assert_eq!(
        queued.get(&format!("sync.{user}.calendar")),
        Some(&2),
        "{queued:?}"
    );

    let connections: Value = browser()
        .get(format!("{}/api/connections", app.url))
        .header(COOKIE, &session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(connections["connections"][0]["provider"], "google");
    assert_eq!(connections["connections"][0]["account_name"], EMAIL);
    assert_eq!(connections["connections"][0]["status"], "connected");

    // Signing in again rotates the session: the old id stops working.
    let again = {
        let (authorize, flow_cookie) = start(&app).await;
        let callback = consent(&app, &authorize).await;
        let r = browser()
            .get(&callback)
            .header(COOKIE, format!("{flow_cookie}; {session}"))
            .send()
            .await
            .unwrap();
        set_cookie(&r, "session").unwrap().0
    };
    assert_ne!(again, session);
    let old = browser()
        .get(format!("{}/api/auth/me", app.url))
        .header(COOKIE, &session)
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), StatusCode::UNAUTHORIZED);

    // State-changing requests with a cookie must come from our origin.
    let logout = |origin: Option<&str>| {
        let mut r = browser()
            .post(format!("{}/api/auth/logout", app.url))
            .header(COOKIE, &again);
        if let Some(o) = origin {
            r = r.header(ORIGIN, o);
        }
        r.send()
    };
    assert_eq!(logout(None).await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(
        logout(Some("https://evil.example")).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    let origin = app.config.public_url.clone();
    assert_eq!(
        logout(Some(&origin)).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let gone = browser()
        .get(format!("{}/api/auth/me", app.url))
        .header(COOKIE, &again)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::UNAUTHORIZED);

    // Bearer tokens keep working for programmatic clients, and need no Origin.
    let token = app
        .tokens
        .issue(user, EMAIL, chrono::Duration::hours(1))
        .unwrap();
    let r = browser()
        .delete(format!("{}/api/connections/google", app.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.scalar_i64("SELECT count(*) FROM connections").await, 0);
    assert_eq!(app.scalar_i64("SELECT count(*) FROM sync_state").await, 0);
    let g = fake.state.lock().unwrap();
    assert_eq!(g.revoked.len(), 1, "the grant is revoked at Google");
    assert!(g.revoked[0].starts_with("1//"), "by its refresh token");
    assert!(g.valid_refresh.is_empty() && g.valid_access.is_empty());
}

/// Connects the user's Google account directly (as a finished sign-in would).
pub async fn connect(app: &TestApp, fake: &FakeGoogle, expires_in: chrono::Duration) -> UserId {
    let (user, _) = app.user(EMAIL).await;
    let (access, refresh) = fake.state.lock().unwrap().issue();
    let ring = app.config.key_ring().unwrap();
    db::connections::save_tokens(
        &app.db,
        &ring,
        user,
        "google",
        &db::connections::Account {
            id: "1098765432101234567".into(),
            name: EMAIL.into(),
            scopes: String::new(),
            user: None,
        },
        &db::connections::TokenSet {
            access_token: access,
            refresh_token: Some(refresh),
            expires_at: Some(chrono::Utc::now() + expires_in),
        },
    )
    .await
    .unwrap();
    user
}

async fn sync_gmail(app: &TestApp, user: UserId) {
    let token = app
        .tokens
        .issue(user, EMAIL, chrono::Duration::hours(1))
        .unwrap();
    let r = app
        .http
        .post(format!("{}/api/sync/gmail", app.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{:?}", r.text().await);
}

async fn emails(app: &TestApp, user: UserId) -> i64 {
    app.scalar_i64(&format!(
        "SELECT count(*) FROM documents WHERE user_id = '{user}' AND source = 'gmail'"
    ))
    .await
}

async fn idle(app: &TestApp, user: UserId) -> bool {
    app.scalar_i64(&format!(
        "SELECT count(*) FROM sync_state WHERE user_id = '{user}' AND resource = 'gmail' AND lease_until IS NULL AND last_sync_at IS NOT NULL"
    ))
    .await
        == 1
}

#[tokio::test]
async fn gmail_sync_pages_with_limits_refreshes_tokens_and_recovers_stale_history() {
    // Two items per run: five messages take three runs chained by continuations.
    let (app, fake) = google_app(&["ingest"], |c| c.sync_max_items = 2).await;
    {
        let mut g = fake.state.lock().unwrap();
        for i in 1..=5 {
            g.deliver(
                &format!("m{i}"),
                &format!("Subject {i}"),
                &format!("Body of message {i}"),
                &["INBOX"],
            );
        }
        g.throttle = 1; // the very first call gets 429 Retry-After: 1
    }
    // The stored token expires within the refresh margin: refreshed before the first call.
    let user = connect(&app, &fake, chrono::Duration::seconds(30)).await;
    sync_gmail(&app, user).await;
    eventually("five emails stored", Duration::from_secs(30), || async {
        emails(&app, user).await == 5
    })
    .await;
    eventually("run finished", Duration::from_secs(10), || async {
        idle(&app, user).await
    })
    .await;
    assert_eq!(
        fake.state.lock().unwrap().refreshes,
        1,
        "one refresh before expiry"
    );
    let conts = app
        .subject_counts("SYNC", &format!("sync.{user}.gmail"))
        .await;
    assert_eq!(
        conts.values().sum::<usize>(),
        3,
        "the manual run and two continuations: {conts:?}"
    );
    let received = app
        .subject_counts("EVENTS", &format!("events.{user}.gmail.email.received"))
        .await;
    assert_eq!(received.values().sum::<usize>(), 5);
    assert_eq!(
        app.scalar_i64(&format!("SELECT count(*) FROM sync_state WHERE user_id = '{user}' AND cursor->>'history_id' = '1005'")).await,
        1,
        "cursor is the history id taken before the first page"
    );

    // The provider revokes the access token (401): one refresh, then the call succeeds.
    {
        let mut g = fake.state.lock().unwrap();
        g.valid_access.clear();
        g.deliver(
            "m6",
            "Subject 6",
            "Quarterly rebalancing proposal",
            &["INBOX"],
        );
        g.delete("m2");
        g.deliver(
            "m7",
            "Re: Subject 6",
            "Sending the proposal tomorrow",
            &["SENT"],
        );
    }
    sync_gmail(&app, user).await;
    eventually("m6 and m7 in, m2 gone", Duration::from_secs(30), || async {
        emails(&app, user).await == 6
            && app
                .scalar_i64(&format!(
                    "SELECT count(*) FROM documents WHERE user_id = '{user}' AND external_id IN ('m6', 'm7')"
                ))
                .await
                == 2
    })
    .await;
    eventually("run finished", Duration::from_secs(10), || async {
        idle(&app, user).await
    })
    .await;
    assert_eq!(
        fake.state.lock().unwrap().refreshes,
        2,
        "one refresh after the 401"
    );
    let deleted = app
        .subject_counts("EVENTS", &format!("events.{user}.gmail.email.deleted"))
        .await;
    assert_eq!(deleted.values().sum::<usize>(), 1);
    let sent = app
        .subject_counts("EVENTS", &format!("events.{user}.gmail.email.sent"))
        .await;
    assert_eq!(sent.values().sum::<usize>(), 1, "mail the user sent");

    // History too old (404): a full re-sync, which finds nothing new and duplicates nothing.
    fake.state.lock().unwrap().oldest_history = u64::MAX;
    let email_subjects = format!("events.{user}.gmail.email.>");
    let email_events = || app.subject_counts("EVENTS", &email_subjects);
    let before = email_events().await;
    let calls = fake.state.lock().unwrap().gmail_calls;
    sync_gmail(&app, user).await;
    eventually("full re-sync ran", Duration::from_secs(30), || async {
        fake.state.lock().unwrap().gmail_calls > calls + 3 && idle(&app, user).await
    })
    .await;
    assert_eq!(emails(&app, user).await, 6);
    assert_eq!(
        email_events().await,
        before,
        "nothing new, so no new email events"
    );

    // Google revokes the grant: the refresh answers invalid_grant and the connection says so.
    {
        let mut g = fake.state.lock().unwrap();
        g.valid_access.clear();
        g.valid_refresh.clear();
        g.oldest_history = 0;
    }
    sync_gmail(&app, user).await;
    let token = app
        .tokens
        .issue(user, EMAIL, chrono::Duration::hours(1))
        .unwrap();
    eventually("connection revoked", Duration::from_secs(30), || async {
        let c: Value = app
            .http
            .get(format!("{}/api/connections", app.url))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        c["connections"][0]["status"] == "revoked"
    })
    .await;
    assert_eq!(
        app.scalar_i64("SELECT count(*) FROM connections WHERE access_token_enc IS NULL AND refresh_token_enc IS NULL").await,
        1,
        "revoked tokens are dropped"
    );
    assert_eq!(
        app.scalar_i64("SELECT count(*) FROM dead_letters").await,
        0,
        "revocation is a state, not a failure"
    );
}

pub fn push_token(claims: Value, kid: &str) -> String {
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(include_bytes!("../../data/push_signer.pem"))
        .unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

fn claims(app: &TestApp) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({
        "aud": format!("{}/api/webhooks/gmail", app.config.public_url),
        "iss": "https://accounts.google.com",
        "email": PUSH_ACCOUNT,
        "email_verified": true,
        "sub": "113774264463038321964",
        "iat": now,
        "exp": now + 3600,
    })
}

fn push_body(message_id: &str, history_id: u64) -> Value {
    let data = STANDARD.encode(json!({"emailAddress": EMAIL, "historyId": history_id}).to_string());
    json!({
        "message": {"data": data, "messageId": message_id, "message_id": message_id, "publishTime": "2026-11-24T10:00:00Z"},
        "subscription": "projects/test-project/subscriptions/gmail-push"
    })
}

async fn push(app: &TestApp, token: Option<&str>, body: &Value) -> reqwest::Response {
    let mut r = app
        .http
        .post(format!("{}/api/webhooks/gmail", app.url))
        .json(body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap()
}

#[tokio::test]
async fn gmail_push_verifies_the_oidc_token_and_refuses_everything_else() {
    let (app, fake) = google_app(&[], |_| {}).await;
    connect(&app, &fake, chrono::Duration::hours(1)).await;
    let body = push_body("pubsub-1", 1001);
    let good = claims(&app);
    let with = |key: &str, value: Value| {
        let mut c = good.clone();
        c[key] = value;
        c
    };
    let now = chrono::Utc::now().timestamp();
    let negatives = [
        ("missing token", None),
        (
            "wrong audience",
            Some(push_token(
                with("aud", json!("https://elsewhere.example/push")),
                "test-push-key-1",
            )),
        ),
        (
            "expired",
            Some(push_token(with("exp", json!(now - 120)), "test-push-key-1")),
        ),
        (
            "wrong issuer",
            Some(push_token(
                with("iss", json!("https://evil.example")),
                "test-push-key-1",
            )),
        ),
        (
            "other service account",
            Some(push_token(
                with("email", json!("intruder@evil.iam.gserviceaccount.com")),
                "test-push-key-1",
            )),
        ),
        (
            "email not verified",
            Some(push_token(
                with("email_verified", json!(false)),
                "test-push-key-1",
            )),
        ),
        (
            "unknown key id",
            Some(push_token(good.clone(), "some-other-key")),
        ),
        (
            "alg none",
            Some(format!(
                "{}.{}.",
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(r#"{"alg":"none","typ":"JWT","kid":"test-push-key-1"}"#),
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(good.to_string())
            )),
        ),
        (
            "signature tampered",
            Some({
                let t = push_token(good.clone(), "test-push-key-1");
                let (head, sig) = t.rsplit_once('.').unwrap();
                let flipped = if sig.starts_with('A') { "B" } else { "A" };
                format!("{head}.{flipped}{}", &sig[1..])
            }),
        ),
    ];
    for (case, token) in &negatives {
        let r = push(&app, token.as_deref(), &body).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{case}");
    }
    assert_eq!(
        app.stream_messages("SYNC").await,
        0,
        "no refused push reached JetStream"
    );

    let token = push_token(good.clone(), "test-push-key-1");
    let r = push(
        &app,
        Some(&token),
        &json!({"message": {"data": "%%%", "messageId": "x"}}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = push(&app, Some(&token), &body).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(app.stream_messages("SYNC").await, 1);
}

#[tokio::test]
async fn gmail_push_delivered_three_times_makes_one_searchable_email_and_one_event() {
    let (app, fake) = google_app(&["ingest", "embedding"], |_| {}).await;
    fake.state
        .lock()
        .unwrap()
        .deliver("old-1", "Welcome", "Welcome to the practice", &["INBOX"]);
    let user = connect(&app, &fake, chrono::Duration::hours(1)).await;
    // The first sync (as after sign-in) stores the existing mail and the history id.
    sync_gmail(&app, user).await;
    eventually("first sync", Duration::from_secs(30), || async {
        emails(&app, user).await == 1 && idle(&app, user).await
    })
    .await;

    fake.state.lock().unwrap().deliver(
        "new-1",
        "Estate plan for the Hendersons",
        "Please review the trust documents and the beneficiary designations before Friday.",
        &["INBOX", "UNREAD"],
    );
    let history = fake.state.lock().unwrap().history_id;
    let token = push_token(claims(&app), "test-push-key-1");
    for _ in 0..3 {
        // Pub/Sub redelivers with the same messageId until it gets a 2xx in time.
        let r = push(&app, Some(&token), &push_body("pubsub-777", history)).await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    let id = crate::doc_id(user, "gmail", "new-1");
    crate::wait_indexed(&app, &[id]).await;
    let api_token = app
        .tokens
        .issue(user, EMAIL, chrono::Duration::hours(1))
        .unwrap();
    let hits = app
        .search(&api_token, &[("q", "trust beneficiary designations")])
        .await;
    assert_eq!(
        crate::titles(&hits).first().map(String::as_str),
        Some("Estate plan for the Hendersons")
    );
    let doc = db::documents::get(&app.db, id).await.unwrap().unwrap();
    assert_eq!(doc.metadata["thread_id"], "thread-new-1");
    assert_eq!(doc.metadata["labels"], json!(["INBOX", "UNREAD"]));

    let syncs = app
        .subject_counts("SYNC", &format!("sync.{user}.gmail"))
        .await;
    assert_eq!(
        syncs.values().sum::<usize>(),
        2,
        "the first sync and one for the three pushes"
    );
    eventually("run finished", Duration::from_secs(10), || async {
        idle(&app, user).await
    })
    .await;
    let received = app
        .subject_counts("EVENTS", &format!("events.{user}.gmail.email.received"))
        .await;
    assert_eq!(
        received.values().sum::<usize>(),
        2,
        "old-1 and new-1, once each"
    );
}

#[tokio::test]
async fn push_signing_keys_are_fetched_cached_and_refetched_for_a_new_key_id() {
    use gateway::google_jwt::{JwtError, PushVerifier};
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let google = MockServer::start().await;
    let keys: Value =
        serde_json::from_str(include_str!("../../data/push_signer.jwks.json")).unwrap();
    let mut retired = keys.clone();
    retired["keys"][0]["kid"] = json!("retired-key-0");
    let serve = |set: &Value, cache: &str| {
        Mock::given(method("GET"))
            .and(path("/oauth2/v3/certs"))
            .respond_with(
                ResponseTemplate::new(200)
                    .insert_header("cache-control", cache)
                    .set_body_json(set),
            )
            .up_to_n_times(1)
    };
    // Google's endpoint, in the order it answers: before the rotation (cached for an
    // hour), after it (cached for an hour), after it but already stale, then down.
    serve(
        &retired,
        "public, max-age=3600, must-revalidate, no-transform",
    )
    .mount(&google)
    .await;
    serve(&keys, "public, max-age=3600").mount(&google).await;
    serve(&keys, "public, max-age=0").mount(&google).await;
    Mock::given(method("GET"))
        .and(path("/oauth2/v3/certs"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&google)
        .await;
    let fetches = || async { google.received_requests().await.unwrap().len() };

    let mut config = common::Config {
        public_url: "https://assistant.example.com".into(),
        google_jwks: String::new(),
        google_jwks_url: format!("{}/oauth2/v3/certs", google.uri()),
        gmail_push_service_account: PUSH_ACCOUNT.into(),
        ..common::Config::default()
    };
    config.gmail_push_audience = String::new();
    let verifier = || {
        PushVerifier::new(&config, reqwest::Client::new())
            .unwrap()
            .with_refetch_interval(Duration::from_millis(300))
    };
    let now = chrono::Utc::now().timestamp();
    let token = push_token(
        json!({
            "aud": "https://assistant.example.com/api/webhooks/gmail",
            "iss": "https://accounts.google.com", "email": PUSH_ACCOUNT, "email_verified": true,
            "iat": now, "exp": now + 3600,
        }),
        "test-push-key-1",
    );
    let bearer = format!("Bearer {token}");
    let first = verifier();
    assert_eq!(
        first.verify(Some(&bearer)).await,
        Err(JwtError::UnknownKey),
        "the key set does not have this key yet"
    );
    assert_eq!(fetches().await, 1);
    assert_eq!(first.verify(Some(&bearer)).await, Err(JwtError::UnknownKey));
    assert_eq!(
        fetches().await,
        1,
        "an unknown key id does not refetch at once"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        first.verify(Some(&bearer)).await,
        Ok(()),
        "the rotated set has it"
    );
    assert_eq!(fetches().await, 2);
    assert_eq!(first.verify(Some(&bearer)).await, Ok(()));
    assert_eq!(fetches().await, 2, "cached for max-age");

    // A set that is stale at once is fetched again; while Google is down the stale set
    // still verifies.
    let second = verifier();
    assert_eq!(second.verify(Some(&bearer)).await, Ok(()));
    assert_eq!(fetches().await, 3);
    assert_eq!(second.verify(Some(&bearer)).await, Ok(()));
    assert_eq!(fetches().await, 4, "stale: fetched again, answered 503");
    // Without any set, a push cannot be checked: an error Pub/Sub retries, not a 401.
    assert_eq!(
        verifier().verify(Some(&bearer)).await,
        Err(JwtError::KeysUnavailable)
    );
}

/// Over HTTPS the flow cookie is `__Host-` prefixed (Secure, Path=/, no Domain), so a sibling
/// subdomain cannot plant one to log a victim into the attacker's account.
#[tokio::test]
async fn the_flow_cookie_is_host_prefixed_over_https() {
    let (app, _fake) = google_app(&[], |c| {
        c.public_url = "https://assistant.example.com".into();
    })
    .await;
    let r = browser()
        .get(format!("{}/api/auth/google/start", app.url))
        .send()
        .await
        .unwrap();
    let (_, line) = set_cookie(&r, "__Host-oauth_flow").expect("a __Host- flow cookie");
    assert!(
        line.contains("Path=/;") && line.contains("Secure"),
        "{line}"
    );
    assert!(!line.contains("Domain"), "{line}");
}

async fn me(app: &TestApp, session: &str) -> Value {
    let r = browser()
        .get(format!("{}/api/auth/me", app.url))
        .header(COOKIE, session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

/// Users are Google accounts (`sub`), not addresses: a renamed account stays the same user,
/// and an address Google gives to a new account does not open the old owner's data.
#[tokio::test]
async fn google_users_are_matched_by_account_not_address() {
    let (app, fake) = google_app(&[], |_| {}).await;
    let first = me(&app, &sign_in(&app).await).await;
    assert_eq!(first["email"], EMAIL);

    fake.state.lock().unwrap().email = "renamed@example.com".into();
    let renamed = me(&app, &sign_in(&app).await).await;
    assert_eq!(
        renamed["user_id"], first["user_id"],
        "same account, same user"
    );
    assert_eq!(renamed["email"], "renamed@example.com");

    // A user known by address only (made by `ctl token`) is taken over by the first Google
    // account that signs in with that verified address...
    let (known, _) = app.user("known@example.com").await;
    {
        let mut g = fake.state.lock().unwrap();
        g.sub = "2000000000000000001".into();
        g.email = "known@example.com".into();
    }
    let taken = me(&app, &sign_in(&app).await).await;
    assert_eq!(taken["user_id"], known.0.to_string());

    // ...but once bound, another account with the same address is refused.
    fake.state.lock().unwrap().sub = "3000000000000000001".into();
    let r = sign_in_returning(&app, "/").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(
        set_cookie(&r, "session").is_none(),
        "no session for the newcomer"
    );
}

/// A first sync larger than one run shows its progress in `GET /api/connections`: items
/// read of Gmail's estimate, never going back across the continuations that carry it, and
/// no progress once the pass is over.
#[tokio::test]
async fn a_first_gmail_sync_reports_its_progress_across_continuations() {
    let (app, fake) = google_app(&["ingest"], |c| {
        c.sync_max_items = 4;
        c.sync_interval_secs = 3600;
    })
    .await;
    const MESSAGES: i64 = 24;
    {
        let mut g = fake.state.lock().unwrap();
        for i in 1..=MESSAGES {
            g.deliver(
                &format!("m{i}"),
                &format!("Subject {i}"),
                &format!("Body {i}"),
                &["INBOX"],
            );
        }
        g.read_delay = Duration::from_millis(40);
    }
    let user = connect(&app, &fake, chrono::Duration::hours(1)).await;
    let token = app
        .tokens
        .issue(user, EMAIL, chrono::Duration::hours(1))
        .unwrap();
    sync_gmail(&app, user).await;

    let mut seen: Vec<(i64, Option<i64>)> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let finished = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the sync did not finish: {seen:?}"
        );
        let body = crate::rules::get_json(&app, &token, "/api/connections").await;
        let gmail = body["connections"][0]["resources"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["resource"] == "gmail"))
            .cloned();
        if let Some(gmail) = gmail {
            match gmail["progress"].as_object() {
                Some(p) => {
                    assert_eq!(gmail["syncing"], true, "{gmail}");
                    seen.push((p["done"].as_i64().unwrap(), p["total"].as_i64()));
                }
                None if gmail["last_sync_at"].is_string() && !seen.is_empty() => break gmail,
                None => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(finished["syncing"], false, "{finished}");
    assert_eq!(finished["items_synced"], MESSAGES, "{finished}");
    assert!(
        seen.windows(2).all(|w| w[0].0 <= w[1].0),
        "progress never goes back: {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|&(done, total)| done > 0 && done < MESSAGES && total == Some(MESSAGES)),
        "a pass under way shows how far it is of Gmail's estimate: {seen:?}"
    );
    assert!(
        seen.iter()
            .all(|&(_, total)| total.is_none_or(|t| t == MESSAGES)),
        "one estimate per pass, not one per continuation: {seen:?}"
    );
    assert_eq!(emails(&app, user).await, MESSAGES);
}
