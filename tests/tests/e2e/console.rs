//! The web console in a real browser: Debian's Chromium, driven by playwright-core
//! (`tests/browser/console.test.mjs`), against every service and the fake model, with the demo
//! tenant loaded as `make run` loads it. The browser script checks what a person sees; this
//! test checks what happened behind it (the approved email sent exactly once).

use crate::assistant_writes::connect_google;
use crate::fakes::FakeGoogle;
use assistant_tests::fake_model::{
    FakeModel, Reply, last_message, tier1_reply, tier2_reply_picking, tool_results,
};
use assistant_tests::{TestApp, eventually, test_config};
use common::config::ChatProvider;
use common::intake::Limits;
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Whether the fake model takes a text for product feedback: a sentence of some length that
/// asks for something or says what is wrong (not a greeting or small talk).
fn feedback(text: &str) -> bool {
    const CUES: [&str; 16] = [
        "need",
        "please",
        "could we",
        "would",
        "wish",
        "export",
        "slow",
        "takes",
        "broken",
        "fail",
        "stopped",
        "signs me out",
        "can't",
        "cannot",
        "is there a way",
        "missing",
    ];
    let lower = text.to_lowercase();
    text.split_whitespace().count() >= 4 && CUES.iter().any(|c| lower.contains(c))
}

/// A transcript line's words without its `[00:01:02] Speaker: ` prefix, as a model quotes them.
fn spoken(line: &str) -> &str {
    match line.split_once(": ") {
        Some((prefix, words)) if prefix.starts_with('[') => words,
        _ => line,
    }
}

/// What the fake model says: emails when asked to send, otherwise searches the mail and
/// answers citing the 401(k) email (slowly, in many pieces, when asked to).
fn console_model(request: &Value) -> Reply {
    if let Some(reply) =
        tier1_reply(request, |text| if feedback(text) { 9 } else { 2 }).or_else(|| {
            tier2_reply_picking(request, |s| {
                s.iter().copied().find(|s| feedback(s)).map(spoken)
            })
        })
    {
        return reply;
    }
    let question = request["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned();
    if last_message(request)["role"] == "user" {
        if question.starts_with("Send") {
            return Reply::tool(
                "send_email",
                json!({"to": ["maria.alvarez@example.com"], "subject": "Your 401(k) rollover",
                       "body": "Hi Maria, rolling it into your IRA keeps it simple. Shall we talk on Thursday?"}),
            );
        }
        return Reply::tool("search_emails", json!({"query": "Maria 401(k) rollover"}));
    }
    let source = tool_results(request)
        .iter()
        .flat_map(|r| r["results"].as_array().cloned().unwrap_or_default())
        .find(|r| r["title"].as_str().unwrap_or("").contains("401(k)"))
        .and_then(|r| r["source"].as_u64());
    match source {
        Some(n) if question.contains("slowly") => Reply::text(
            &format!(
                "Maria Alvarez left Brightline Logistics in September [{n}]. {} She still has about $212,000 in their 401(k) [{n}].",
                "She asks whether to roll it into her IRA or leave it where it is. ".repeat(4)
            ),
            3,
        ),
        Some(n) => Reply::text(
            &format!("Maria Alvarez has about $212,000 in her old Brightline 401(k) [{n}]."),
            6,
        ),
        None if question.starts_with("Send") => {
            Reply::text("The email waits for your approval.", 6)
        }
        None => Reply::text("I could not find it.", 6),
    }
}

/// Messages in the advisor's fake mailbox, read by the sync the browser starts.
const GMAIL_MESSAGES: usize = 30;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Chromium and the script's packages, as `make test` installs them.
fn browser() -> PathBuf {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "Chromium is missing at {chromium}: `make test` installs Debian's chromium package"
    );
    assert!(
        repo_root()
            .join("tests/browser/node_modules/playwright-core")
            .exists(),
        "tests/browser/node_modules is missing: `make test` runs `npm ci` there"
    );
    PathBuf::from(chromium)
}

#[tokio::test]
async fn the_console_signs_in_chats_with_citations_approves_resumes_and_shows_themes_in_chromium() {
    let chromium = browser();
    let google = FakeGoogle::start(common::demo::ADVISOR_EMAIL).await;
    let fake = FakeModel::responding(console_model).await;
    // A model that takes its time, so a reload lands in the middle of an answer.
    fake.set_piece_delay(Duration::from_millis(40));
    let mut config = test_config().await;
    config.app_env = "development".into();
    config.chat_provider = ChatProvider::Openai;
    config.chat_base_url = fake.url.clone();
    config.chat_model = "fake-model".into();
    google.configure(&mut config);
    // Syncs run when the browser asks for them.
    config.sync_interval_secs = 3600;
    // The fake model's price, for the usage page's cost.
    config.model_prices = "fake-model=1.00/2.00".into();
    let app = TestApp::spawn_served(config, &assistant_tests::SERVICES).await;

    // The demo tenant, as `make run` loads it.
    let limits = Limits {
        max_batch: app.config.max_batch_documents,
        max_body_bytes: app.config.max_document_bytes,
    };
    let advisor = db::users::ensure(&app.db, common::demo::ADVISOR_EMAIL)
        .await
        .unwrap();
    let advisor_docs = ctl::load_demo(&app.bus, advisor, &limits).await.unwrap();
    ctl::load_demo_rules(&app.db, advisor).await.unwrap();
    connect_google(&app, &google, advisor).await;
    // A mailbox that takes a while to read, so the connections page shows a sync's progress
    // when the browser asks for one.
    {
        let mut g = google.state.lock().unwrap();
        for i in 1..=GMAIL_MESSAGES {
            g.deliver(
                &format!("newsletter{i}"),
                &format!("Weekly market newsletter {i}"),
                "Markets were calm this week.",
                &["INBOX"],
            );
        }
        g.read_delay = Duration::from_millis(100);
    }
    // Not due (in one statement, so the scheduler never sees it due): the first sync is the
    // browser's.
    app.db
        .execute_unprepared(&format!(
            "INSERT INTO sync_state (user_id, resource, next_run_at)
             VALUES ('{}', 'gmail', now() + interval '1 hour')",
            advisor.0
        ))
        .await
        .unwrap();
    let product = db::users::ensure(&app.db, common::demo::PRODUCT_EMAIL)
        .await
        .unwrap();
    ctl::load_product_demo(&app.db, &app.bus, product, &limits)
        .await
        .unwrap();
    let ids: Vec<_> = advisor_docs.iter().map(|a| a.id).collect();
    crate::wait_indexed(&app, &ids).await;
    eventually(
        "the product demo has themes",
        Duration::from_secs(90),
        || async {
            app.scalar_i64(&format!(
                "SELECT count(*) FROM insight_themes WHERE user_id = '{}'",
                product.0
            ))
            .await
                > 0
        },
    )
    .await;

    // A task that waits: a review booked, and no agenda email yet.
    let advisor_token = app
        .tokens
        .issue(
            advisor,
            common::demo::ADVISOR_EMAIL,
            chrono::Duration::minutes(30),
        )
        .unwrap();
    crate::rules::rule(
        &app,
        &advisor_token,
        "when calendar.event.created if title contains \"review\" \
         then log text=\"Review booked: {{event.title}}\"; \
         wait for gmail.email.received if subject contains \"agenda\" within 3d \
         else notify text=\"No agenda yet for {{event.title}}\"",
        false,
    )
    .await;
    crate::rules::publish(
        &app,
        advisor,
        "calendar",
        "calendar.event.created",
        "review-1",
        json!({"title": "Annual review with Maria Alvarez", "organizer": common::demo::ADVISOR_EMAIL}),
    )
    .await;
    eventually("the task waits", Duration::from_secs(30), || async {
        crate::rules::get_json(&app, &advisor_token, "/api/tasks?state=waiting").await["tasks"]
            .as_array()
            .is_some_and(|t| t.len() == 1)
    })
    .await;

    let shots = repo_root().join("target/console-screenshots");
    let output = tokio::process::Command::new("node")
        .args(["--test", "--test-reporter=spec", "--test-concurrency=1"])
        .arg("tests/browser/console.test.mjs")
        .current_dir(repo_root())
        .env("BASE_URL", &app.url)
        .env("CHROMIUM", &chromium)
        .env("SHOTS", &shots)
        .env("GMAIL_MESSAGES", GMAIL_MESSAGES.to_string())
        .env("README_SHOTS", repo_root().join("docs/screenshots"))
        .kill_on_drop(true)
        .output()
        .await
        .expect("node runs (make test installs Node.js)");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{report}");
    assert!(
        output.status.success(),
        "the browser tests failed (screenshots in {}):\n{report}",
        shots.display()
    );

    // Behind the approval card: the email went out once, to whom the card said.
    let sent = google.state.lock().unwrap().sent.clone();
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert!(
        sent[0].1.contains("maria.alvarez@example.com"),
        "{}",
        sent[0].1
    );

    // The cost the usage page showed is the tokens at the configured price.
    let usage = crate::rules::get_json(&app, &advisor_token, "/api/usage").await;
    let days = usage["days"].as_array().unwrap();
    assert!(!days.is_empty(), "{usage}");
    for day in days {
        let expected = (day["input_tokens"].as_f64().unwrap() * 1.0
            + day["output_tokens"].as_f64().unwrap() * 2.0)
            / 1e6;
        assert!(
            (day["cost_usd"].as_f64().unwrap() - expected).abs() < 1e-12,
            "{day}"
        );
    }
}

/// `GET /api/auth/methods`, unauthenticated as the sign-in page asks it.
async fn sign_in_methods(app: &TestApp) -> Value {
    let r = app
        .http
        .get(format!("{}/api/auth/methods", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// The session cookie a response sets, as `name=value`.
fn session_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("session="))
        .and_then(|v| v.split(';').next())
        .map(str::to_owned)
}

#[tokio::test]
async fn demo_sign_in_exists_only_in_development_for_loaded_demo_users_and_from_our_origin() {
    let mut config = test_config().await;
    config.app_env = "development".into();
    let app = TestApp::spawn_served(config, &[]).await;
    let origin = app.config.public_url.clone();
    let post = |body: Value, origin: &str| {
        app.http
            .post(format!("{}/api/auth/demo", app.url))
            .header("Origin", origin)
            .json(&body)
            .send()
    };
    // Before `make run` loads the demo users there is nothing to enter as.
    let methods = sign_in_methods(&app).await;
    assert_eq!(methods["demo"], json!([]));
    assert_eq!(methods["google"], false);
    assert_eq!(
        post(json!({"user": "advisor"}), &origin)
            .await
            .unwrap()
            .status(),
        404
    );

    let advisor = db::users::ensure(&app.db, common::demo::ADVISOR_EMAIL)
        .await
        .unwrap();
    let methods = sign_in_methods(&app).await;
    assert_eq!(methods["demo"][0]["user"], "advisor");
    assert_eq!(methods["demo"].as_array().unwrap().len(), 1, "{methods}");
    // Another site cannot sign a browser in (login CSRF); an unknown name is a 422 naming it.
    let response = post(json!({"user": "advisor"}), "https://evil.example")
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(session_cookie(&response).is_none());
    let response = post(json!({"user": "root"}), &origin).await.unwrap();
    assert_eq!(response.status(), 422);
    assert_eq!(response.json::<Value>().await.unwrap()["field"], "user");

    let response = post(json!({"user": "advisor"}), &origin).await.unwrap();
    assert_eq!(response.status(), 204);
    let cookie = session_cookie(&response).expect("a session cookie");
    let me: Value = app
        .http
        .get(format!("{}/api/auth/me", app.url))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["user_id"], advisor.0.to_string());
    assert_eq!(me["email"], common::demo::ADVISOR_EMAIL);
}

#[tokio::test]
async fn outside_development_there_is_no_demo_sign_in_even_with_the_demo_users() {
    let app = TestApp::spawn_served(test_config().await, &[]).await;
    assert_eq!(app.config.app_env, "production");
    db::users::ensure(&app.db, common::demo::ADVISOR_EMAIL)
        .await
        .unwrap();
    let methods = sign_in_methods(&app).await;
    assert_eq!(methods["demo"], json!([]));
    let response = app
        .http
        .post(format!("{}/api/auth/demo", app.url))
        .header("Origin", &app.config.public_url)
        .json(&json!({"user": "advisor"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert!(session_cookie(&response).is_none());
}

#[tokio::test]
async fn the_console_is_served_under_its_own_strict_policy_and_revalidated_by_hash() {
    let app = TestApp::spawn_only(&[]).await;
    let page = app.http.get(format!("{}/", app.url)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("/console/js/app.js"), "{html}");

    let script = app
        .http
        .get(format!("{}/console/js/app.js", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert!(
        script.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let etag = script.headers()["etag"].to_str().unwrap().to_owned();
    let again = app
        .http
        .get(format!("{}/console/js/app.js", app.url))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    for missing in [
        "/console/nope.js",
        "/console/index.html",
        "/console/../Cargo.toml",
    ] {
        let r = app
            .http
            .get(format!("{}{missing}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{missing}");
    }
    // The API keeps its own, stricter policy.
    let api = app
        .http
        .get(format!("{}/health", app.url))
        .send()
        .await
        .unwrap();
    assert!(
        api.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'none'")
    );
}

#[tokio::test]
async fn a_document_is_shown_to_its_owner_only_with_the_link_that_opens_it() {
    let app = TestApp::spawn_only(&["ingest"]).await;
    let (user, token) = app.user("reader@console.example").await;
    let (_, other) = app.user("other@console.example").await;
    let body = json!({"documents": [{"source": "gmail", "kind": "email", "external_id": "m-1",
        "title": "Rollover", "body": "Roll it into the IRA.", "metadata": {"thread_id": "t-77"}}]});
    assert_eq!(app.post_documents(&token, &body).await.status(), 202);
    let id = crate::doc_id(user, "gmail", "m-1");
    eventually(
        "the document is stored",
        Duration::from_secs(20),
        || async { db::documents::get(&app.db, id).await.unwrap().is_some() },
    )
    .await;
    let get = |token: String| {
        app.http
            .get(format!("{}/api/documents/{}", app.url, id.0))
            .bearer_auth(token)
            .send()
    };
    let doc: Value = get(token.clone()).await.unwrap().json().await.unwrap();
    assert_eq!(doc["body"], "Roll it into the IRA.");
    assert_eq!(doc["link"], "https://mail.google.com/mail/u/0/#all/t-77");
    assert_eq!(get(other).await.unwrap().status(), 404);
}
