//! No user can exhaust what all users share: each per-user bound answers 429 (or records the
//! firing as `quota_exceeded`) naming the bound and when it frees up. One test per bound.

use crate::assistant_writes::EMAIL;
use crate::chat::{read_events, stream};
use crate::rules::{count, engine_idle, get_json, post_rule, publish, rule};
use assistant_tests::fake_model::{FakeModel, Reply};
use assistant_tests::{TestApp, eventually, test_config};
use common::UserId;
use common::config::ChatProvider;
use serde_json::{Value, json};
use std::time::Duration;

async fn app_with(model: Option<&FakeModel>, change: impl FnOnce(&mut common::Config)) -> TestApp {
    let mut config = test_config().await;
    if let Some(fake) = model {
        config.chat_provider = ChatProvider::Openai;
        config.chat_base_url = fake.url.clone();
        config.chat_model = "fake-model".into();
    }
    config.sync_interval_secs = 0;
    change(&mut config);
    TestApp::spawn_with(config, &assistant_tests::SERVICES).await
}

async fn refused(r: reqwest::Response, limit: &str) -> Value {
    let status = r.status();
    let retry_after = r.headers().get("retry-after").cloned();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "quota_exceeded", "{body}");
    assert_eq!(body["limit"], limit, "{body}");
    if body["resets_at"].is_string() {
        assert!(retry_after.is_some(), "{body}");
    }
    body
}

/// Tokens used today, as the model's calls record them.
async fn used_tokens(app: &TestApp, user: UserId, tokens: i64) {
    sea_orm::ConnectionTrait::execute_unprepared(
        &app.db,
        &format!(
            "INSERT INTO model_calls (id, user_id, provider, model, input_tokens, output_tokens, status)
             VALUES ('{}', '{user}', 'openai', 'fake-model', {tokens}, 0, 'ok')",
            uuid::Uuid::new_v4()
        ),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn active_rules_per_user_are_bounded() {
    let app = app_with(None, |c| c.rules_max_active_per_user = 2).await;
    let (_, token) = app.user(EMAIL).await;
    let (_, other) = app.user("other@harborwealth.example").await;
    let first = rule(&app, &token, "when gmail.* then log", false).await;
    rule(&app, &token, "when hubspot.* then log", false).await;
    let body = refused(
        post_rule(&app, &token, json!({"text": "when slack.* then log"})).await,
        "rules.active",
    )
    .await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("at most 2 active rules"),
        "{body}"
    );
    // Memories are not rules that fire; another user has their own bound.
    assert_eq!(
        post_rule(
            &app,
            &token,
            json!({"text": "Greg prefers calls", "memory": true})
        )
        .await
        .status(),
        201
    );
    assert_eq!(
        post_rule(&app, &other, json!({"text": "when gmail.* then log"}))
            .await
            .status(),
        201
    );
    // Paused, a rule frees its place; activating one past the bound is refused.
    let put = |id: uuid::Uuid, active: bool| {
        let (app, token) = (&app, &token);
        async move {
            app.http
                .put(format!("{}/api/rules/{id}", app.url))
                .bearer_auth(token)
                .json(&json!({"active": active}))
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(put(first, false).await.status(), 200);
    let third = rule(&app, &token, "when slack.* then log", false).await;
    refused(put(first, true).await, "rules.active").await;
    assert_eq!(put(third, false).await.status(), 200);
    assert_eq!(put(first, true).await.status(), 200);
}

#[tokio::test]
async fn firings_per_user_per_minute_are_bounded_and_recorded() {
    let app = app_with(None, |c| c.rules_max_firings_per_minute = 2).await;
    let (user, token) = app.user(EMAIL).await;
    let id = rule(&app, &token, "when hubspot.contact.created then log", false).await;
    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(
            publish(
                &app,
                user,
                "hubspot",
                "contact.created",
                &format!("contact:{i}"),
                json!({"id": i.to_string()}),
            )
            .await,
        );
    }
    engine_idle(&app).await;
    eventually(
        "three firings recorded",
        Duration::from_secs(20),
        || async {
            count(
                &app,
                &format!("SELECT count(*) FROM rule_firings WHERE rule_id = '{id}'"),
            )
            .await
                == 3
        },
    )
    .await;
    let firings = get_json(&app, &token, &format!("/api/rules/{id}/firings")).await;
    let statuses: Vec<&str> = firings["firings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == "quota_exceeded").count(),
        1,
        "{statuses:?}"
    );
    let stopped = firings["firings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["status"] == "quota_exceeded")
        .unwrap();
    assert_eq!(
        stopped["detail"]["quota"]["limit"],
        "rules.firings_per_minute"
    );
    assert!(stopped["detail"]["quota"]["resets_at"].is_string());
    assert!(stopped["task_id"].is_null());
    // The events again (a replay): nothing is counted twice or fired again.
    for envelope in &sent {
        crate::rules::replay(&app, envelope).await;
    }
    engine_idle(&app).await;
    assert_eq!(
        count(
            &app,
            &format!("SELECT count(*) FROM rule_firings WHERE rule_id = '{id}'")
        )
        .await,
        3
    );
    assert_eq!(
        count(
            &app,
            &format!("SELECT count(*) FROM tasks WHERE rule_id = '{id}'")
        )
        .await,
        2
    );
    let used = count(&app, &format!("SELECT coalesce(sum(used), 0)::bigint FROM quota_windows WHERE user_id = '{user}' AND name = 'rules.firings_per_minute'")).await;
    assert!(used <= 2, "{used}");
}

#[tokio::test]
async fn model_tokens_per_user_per_day_are_bounded_for_chat_compiling_and_tier_two() {
    let fake =
        FakeModel::responding(|_| Reply::text("{\"trigger\": \"when gmail.email.received\"}", 50))
            .await;
    let app = app_with(Some(&fake), |c| c.model_tokens_per_user_per_day = 1_000).await;
    let (user, token) = app.user(EMAIL).await;
    let tier2 = rule(
        &app,
        &token,
        "when hubspot.contact.created then ask_assistant text=\"look at it\"",
        false,
    )
    .await;
    used_tokens(&app, user, 1_000).await;
    let calls = fake.calls();
    let body = refused(
        stream(&app, &token, json!({"message": "hello"}), None).await,
        "model.tokens_per_day",
    )
    .await;
    let resets: chrono::DateTime<chrono::Utc> =
        body["resets_at"].as_str().unwrap().parse().unwrap();
    assert!(
        resets > chrono::Utc::now() && resets <= chrono::Utc::now() + chrono::Duration::days(1)
    );
    refused(
        post_rule(
            &app,
            &token,
            json!({"text": "Tell me when a client emails about taxes"}),
        )
        .await,
        "model.tokens_per_day",
    )
    .await;
    publish(
        &app,
        user,
        "hubspot",
        "contact.created",
        "contact:1",
        json!({"id": "1"}),
    )
    .await;
    engine_idle(&app).await;
    eventually("the firing recorded", Duration::from_secs(20), || async {
        count(&app, &format!("SELECT count(*) FROM rule_firings WHERE rule_id = '{tier2}' AND status = 'quota_exceeded'")).await == 1
    })
    .await;
    assert_eq!(fake.calls(), calls, "no model call past the bound");
    // Another user still has their day.
    let (_, other) = app.user("other@harborwealth.example").await;
    assert_eq!(
        stream(&app, &other, json!({"message": "hello"}), None)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn turns_in_flight_and_open_streams_per_user_are_bounded() {
    let fake = FakeModel::responding(|_| Reply::text(&"word ".repeat(100), 5)).await;
    fake.set_piece_delay(Duration::from_millis(50));
    let app = app_with(Some(&fake), |c| {
        c.chat_max_turns_per_user = 1;
        c.chat_max_streams_per_user = 2;
    })
    .await;
    let (_, token) = app.user(EMAIL).await;
    let first = stream(
        &app,
        &token,
        json!({"message": "tell me a long story"}),
        None,
    )
    .await;
    assert_eq!(first.status(), 200);
    let turn = first.headers()["x-turn-id"].to_str().unwrap().to_owned();
    refused(
        stream(&app, &token, json!({"message": "and another"}), None).await,
        "chat.turns_in_flight",
    )
    .await;
    // A retry of the same turn is not a new one.
    let events = |app: &TestApp, token: &str| {
        app.http
            .get(format!("{}/api/chat/turns/{turn}/events", app.url))
            .bearer_auth(token)
            .send()
    };
    let second = events(&app, &token).await.unwrap();
    assert_eq!(second.status(), 200);
    refused(events(&app, &token).await.unwrap(), "chat.streams").await;
    // Closing one frees its place.
    drop(second);
    eventually(
        "the closed stream's place freed",
        Duration::from_secs(10),
        || async { events(&app, &token).await.unwrap().status() == 200 },
    )
    .await;
    let done = read_events(first, |_| false).await;
    assert_eq!(done.last().unwrap().event, "done");
    // The turn over, a new one may start.
    assert_eq!(
        stream(&app, &token, json!({"message": "now"}), None)
            .await
            .status(),
        200
    );
}

/// A stream of a turn nobody will answer (no agent runs, and its deadlines passed) ends with
/// `turn_stalled` instead of holding its connection forever.
#[tokio::test]
async fn a_stream_of_a_turn_that_can_no_longer_finish_ends() {
    let fake = FakeModel::responding(|_| Reply::text("never asked", 5)).await;
    let mut config = test_config().await;
    config.chat_provider = ChatProvider::Openai;
    config.chat_base_url = fake.url.clone();
    config.chat_model_timeout_secs = 1;
    config.chat_max_tool_rounds = 1;
    config.chat_max_retries = 0;
    config.chat_stream_check_secs = 1;
    let app = TestApp::spawn_with(config, &["gateway"]).await;
    let (_, token) = app.user(EMAIL).await;
    let events = read_events(
        stream(&app, &token, json!({"message": "anyone there?"}), None).await,
        |_| false,
    )
    .await;
    let last = events.last().unwrap();
    assert_eq!(last.event, "error");
    assert_eq!(last.data["code"], "turn_stalled");
}

#[tokio::test]
async fn backtests_per_user_per_minute_and_their_window_are_bounded() {
    let app = app_with(None, |c| {
        c.backtests_per_user_per_minute = 1;
        c.backtest_max_days = 7;
    })
    .await;
    let (_, token) = app.user(EMAIL).await;
    let id = rule(&app, &token, "when gmail.* then log", false).await;
    let backtest = |body: Value| {
        let (app, token) = (&app, &token);
        async move {
            app.http
                .post(format!("{}/api/rules/{id}/backtest", app.url))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let long_ago = (chrono::Utc::now() - chrono::Duration::days(30)).to_rfc3339();
    let r = backtest(json!({"from": long_ago})).await;
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["field"], "from");
    assert!(
        body["detail"].as_str().unwrap().contains("7 days"),
        "{body}"
    );
    assert_eq!(backtest(json!({})).await.status(), 200);
    refused(backtest(json!({})).await, "rules.backtests_per_minute").await;
}
