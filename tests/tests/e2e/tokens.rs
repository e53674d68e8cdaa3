//! API tokens: a signature is not enough. The user must exist, the token must be this
//! deployment's (issuer, audience), and a token can be revoked alone or with everything else
//! the user holds.

use assistant_tests::{TestApp, eventually, test_config};
use common::UserId;
use common::auth::Tokens;
use reqwest::StatusCode;
use std::time::{Duration, Instant};

async fn status(app: &TestApp, token: &str) -> StatusCode {
    status_at(app, &app.url, token).await
}

async fn status_at(app: &TestApp, url: &str, token: &str) -> StatusCode {
    app.http
        .get(format!("{url}/api/connections"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn a_valid_signature_for_a_missing_user_or_another_deployment_is_refused() {
    let app = TestApp::spawn_only(&[]).await;
    let (_, token) = app.user("real@example.com").await;
    assert_eq!(status(&app, &token).await, StatusCode::OK);
    let ghost = app
        .tokens
        .issue(
            UserId(uuid::Uuid::new_v4()),
            "ghost@example.com",
            chrono::Duration::hours(1),
        )
        .unwrap();
    assert_eq!(
        status(&app, &ghost).await,
        StatusCode::UNAUTHORIZED,
        "no such user"
    );
    let elsewhere = Tokens::new(&app.config.secret_key, "https://staging.example.com");
    let (user, _) = app.user("real@example.com").await;
    let foreign = elsewhere
        .issue(user, "real@example.com", chrono::Duration::hours(1))
        .unwrap();
    assert_eq!(
        status(&app, &foreign).await,
        StatusCode::UNAUTHORIZED,
        "other issuer"
    );

    // A user deleted since the token was issued.
    let (gone, gone_token) = app.user("gone@example.com").await;
    assert_eq!(status(&app, &gone_token).await, StatusCode::OK);
    app.scalar_i64(&format!(
        "WITH d AS (DELETE FROM users WHERE id = '{}' RETURNING 1) SELECT count(*) FROM d",
        gone
    ))
    .await;
    // The deletion is announced by the database when it commits (see the tests below).
    eventually(
        "the deleted user's token is refused",
        Duration::from_secs(3),
        || async { status(&app, &gone_token).await == StatusCode::UNAUTHORIZED },
    )
    .await;
}

#[tokio::test]
async fn one_token_or_everything_can_be_revoked() {
    let app = TestApp::spawn_only(&[]).await;
    let (user, first) = app.user("owner@example.com").await;
    let (_, second) = app.user("owner@example.com").await;
    let (_, other_user) = app.user("other@example.com").await;

    // Sign out one client: that token stops working, the other one does not.
    let r = app
        .http
        .delete(format!("{}/api/auth/token", app.url))
        .bearer_auth(&first)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(status(&app, &first).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(&app, &second).await, StatusCode::OK);

    // A browser session of the same user.
    db::sessions::create(
        &app.db,
        "session-secret-for-test",
        user,
        chrono::Utc::now() + chrono::Duration::hours(1),
    )
    .await
    .unwrap();
    let with_session = || {
        app.http
            .get(format!("{}/api/auth/me", app.url))
            .header("cookie", "session=session-secret-for-test")
            .send()
    };
    assert_eq!(with_session().await.unwrap().status(), StatusCode::OK);

    // Sign out everywhere: every token and session so far, not other users'.
    let r = app
        .http
        .post(format!("{}/api/auth/revoke-all", app.url))
        .bearer_auth(&second)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(status(&app, &second).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        with_session().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status(&app, &other_user).await, StatusCode::OK);

    // A token issued afterwards works again (iat is in whole seconds).
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let (_, fresh) = app.user("owner@example.com").await;
    assert_eq!(status(&app, &fresh).await, StatusCode::OK);
}

/// Two gateways remember that a token is good; revoking it through one, signing out
/// everywhere, or deleting the user with plain SQL is refused by both at once: the database
/// announces it when it commits. The memory lasts a minute here, so only the announcement can
/// explain the refusal.
#[tokio::test]
async fn a_revocation_reaches_every_gateway_when_it_commits() {
    let mut config = test_config().await;
    config.auth_cache_secs = 60;
    let mut app = TestApp::spawn_with(config, &[]).await;
    let b = app.another_gateway("gateway-b").await;
    let a = app.url.clone();
    let (_, first) = app.user("replicas@example.com").await;
    let (_, second) = app.user("replicas@example.com").await;
    let (gone, third) = app.user("deleted@example.com").await;
    for token in [&first, &second, &third] {
        for url in [&a, &b] {
            // Twice: the second answer comes from memory.
            assert_eq!(status_at(&app, url, token).await, StatusCode::OK);
            assert_eq!(status_at(&app, url, token).await, StatusCode::OK);
        }
    }
    let remembered = app.metrics().await;
    assert!(
        remembered.contains("auth_validity_total{answer=\"memory\"}"),
        "the gateways answered from memory: {remembered}"
    );

    // One token, revoked at gateway A: refused by A at once, by B within the announcement.
    let r = app
        .http
        .delete(format!("{a}/api/auth/token"))
        .bearer_auth(&first)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(status_at(&app, &a, &first).await, StatusCode::UNAUTHORIZED);
    let started = Instant::now();
    eventually(
        "gateway B refuses the revoked token",
        Duration::from_secs(3),
        || async { status_at(&app, &b, &first).await == StatusCode::UNAUTHORIZED },
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(3));

    // Signing out everywhere, as `ctl revoke` does it (plain SQL, no gateway involved).
    let (user, _) = app.user("replicas@example.com").await;
    db::users::revoke_everything(&app.db, user).await.unwrap();
    for url in [&a, &b] {
        eventually(
            "both gateways refuse after sign-out everywhere",
            Duration::from_secs(3),
            || async { status_at(&app, url, &second).await == StatusCode::UNAUTHORIZED },
        )
        .await;
    }

    // The user deleted.
    app.scalar_i64(&format!(
        "WITH d AS (DELETE FROM users WHERE id = '{gone}' RETURNING 1) SELECT count(*) FROM d"
    ))
    .await;
    for url in [&a, &b] {
        eventually(
            "both gateways refuse the deleted user",
            Duration::from_secs(3),
            || async { status_at(&app, url, &third).await == StatusCode::UNAUTHORIZED },
        )
        .await;
    }
}

/// Should an announcement ever be lost (here: the user deleted with triggers off), a gateway
/// stops trusting its memory after `AUTH_CACHE_SECS`.
#[tokio::test]
async fn a_lost_announcement_is_bounded_by_the_cache_lifetime() {
    let mut config = test_config().await;
    config.auth_cache_secs = 2;
    let app = TestApp::spawn_with(config, &[]).await;
    let (gone, token) = app.user("unannounced@example.com").await;
    // Wait until the gateway listens (it remembers nothing before), then remember the token.
    eventually(
        "the gateway answers from memory",
        Duration::from_secs(5),
        || async {
            status(&app, &token).await == StatusCode::OK
                && app
                    .metrics()
                    .await
                    .contains("auth_validity_total{answer=\"memory\"}")
        },
    )
    .await;
    let deleted = Instant::now();
    app.scalar_i64(&format!(
        "WITH r AS (SELECT set_config('session_replication_role', 'replica', true)),
              d AS (DELETE FROM users WHERE id = '{gone}' AND (SELECT count(*) FROM r) = 1 RETURNING 1)
         SELECT count(*) FROM d"
    ))
    .await;
    assert_eq!(
        app.scalar_i64(&format!("SELECT count(*) FROM users WHERE id = '{gone}'"))
            .await,
        0,
        "the user is gone"
    );
    // Unannounced, the memory still answers for a moment...
    assert_eq!(status(&app, &token).await, StatusCode::OK);
    // ...and no longer than its lifetime.
    eventually(
        "the token is refused once the memory expires",
        Duration::from_secs(5),
        || async { status(&app, &token).await == StatusCode::UNAUTHORIZED },
    )
    .await;
    assert!(deleted.elapsed() < Duration::from_secs(5));
}
