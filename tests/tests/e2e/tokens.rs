//! API tokens: a signature is not enough. The user must exist, the token must be this
//! deployment's (issuer, audience), and a token can be revoked alone or with everything else
//! the user holds.

use assistant_tests::TestApp;
use common::UserId;
use common::auth::Tokens;
use reqwest::StatusCode;

async fn status(app: &TestApp, token: &str) -> StatusCode {
    app.http
        .get(format!("{}/api/connections", app.url))
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
    assert_eq!(status(&app, &gone_token).await, StatusCode::UNAUTHORIZED);
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
