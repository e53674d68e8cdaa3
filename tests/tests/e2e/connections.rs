//! Provider connections in Postgres: tokens encrypted at rest, bound to their owner, rotatable.

use assistant_tests::TestApp;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::secrets::KeyRing;
use db::connections::{self, Account, TokenSet};
use sea_orm::{ConnectionTrait, EntityTrait};

fn ring(spec: &[(&str, u8)]) -> KeyRing {
    let text: Vec<String> = spec
        .iter()
        .map(|(id, b)| format!("{id}:{}", STANDARD.encode([*b; 32])))
        .collect();
    KeyRing::parse(&text.join(",")).unwrap()
}

#[tokio::test]
async fn tokens_are_encrypted_owner_bound_revocable_and_rotatable() {
    let app = TestApp::spawn_only(&[]).await;
    let (alice, _) = app.user("alice@example.com").await;
    let (bob, _) = app.user("bob@example.com").await;
    let k1 = ring(&[("k1", 1)]);
    let tokens = TokenSet {
        access_token: "ya29.access-alice".into(),
        refresh_token: Some("1//refresh-alice".into()),
        expires_at: Some(
            chrono::DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z")
                .unwrap()
                .into(),
        ),
    };
    connections::save_tokens(
        &app.db,
        &k1,
        alice,
        "google",
        &Account {
            id: "alice-sub".into(),
            name: String::new(),
            scopes: "gmail.modify calendar".into(),
            user: None,
        },
        &tokens,
    )
    .await
    .unwrap();
    assert_eq!(
        connections::tokens(&app.db, &k1, alice, "google")
            .await
            .unwrap(),
        Some(tokens.clone())
    );
    assert_eq!(
        app.scalar_i64("SELECT count(*) FROM connections WHERE access_token_enc LIKE '%access-alice%' OR refresh_token_enc LIKE '%refresh-alice%'").await,
        0,
        "no token in clear"
    );

    // A refresh that brings no new refresh token keeps the stored one.
    let refreshed = TokenSet {
        access_token: "ya29.second".into(),
        refresh_token: None,
        expires_at: None,
    };
    connections::save_tokens(
        &app.db,
        &k1,
        alice,
        "google",
        &Account {
            id: "alice-sub".into(),
            name: String::new(),
            scopes: "gmail.modify calendar".into(),
            user: None,
        },
        &refreshed,
    )
    .await
    .unwrap();
    let now = connections::tokens(&app.db, &k1, alice, "google")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (now.access_token.as_str(), now.refresh_token.as_deref()),
        ("ya29.second", Some("1//refresh-alice"))
    );

    // Alice's ciphertext copied into Bob's row does not decrypt for Bob.
    connections::save_tokens(
        &app.db,
        &k1,
        bob,
        "google",
        &Account {
            id: "bob-sub".into(),
            name: String::new(),
            scopes: "".into(),
            user: None,
        },
        &refreshed,
    )
    .await
    .unwrap();
    app.db
        .execute_unprepared(&format!(
            "UPDATE connections SET access_token_enc = (SELECT access_token_enc FROM connections WHERE user_id = '{alice}') WHERE user_id = '{bob}'"
        ))
        .await
        .unwrap();
    assert!(
        connections::tokens(&app.db, &k1, bob, "google")
            .await
            .is_err()
    );

    // Rotation: a new current key; old values still read, then get re-encrypted.
    let k2 = ring(&[("k2", 2), ("k1", 1)]);
    let first = connections::rotate_keys(&app.db, &k2).await.unwrap();
    assert_eq!(first.rotated, 1, "alice's row re-encrypted");
    assert_eq!(
        first.failed.len(),
        1,
        "bob's corrupt row reported, left as it was"
    );
    assert!(
        first.failed[0].1.contains("cannot decrypt"),
        "{:?}",
        first.failed
    );
    connections::delete(&app.db, bob, "google").await.unwrap();
    let second = connections::rotate_keys(&app.db, &k2).await.unwrap();
    assert_eq!(
        second,
        connections::Rotation::default(),
        "nothing left to rotate"
    );
    let k2_only = ring(&[("k2", 2)]);
    assert_eq!(
        connections::tokens(&app.db, &k2_only, alice, "google")
            .await
            .unwrap()
            .unwrap()
            .access_token,
        "ya29.second"
    );

    // invalid_grant: revoked, tokens dropped, status says why.
    connections::mark_revoked(&app.db, alice, "google", "invalid_grant")
        .await
        .unwrap();
    assert_eq!(
        connections::tokens(&app.db, &k2, alice, "google")
            .await
            .unwrap(),
        None
    );
    let listed = connections::list(&app.db, alice).await.unwrap();
    assert_eq!(
        (listed[0].status.as_str(), listed[0].last_error.as_deref()),
        ("revoked", Some("invalid_grant"))
    );
    assert!(connections::delete(&app.db, alice, "google").await.unwrap());
    assert!(connections::list(&app.db, alice).await.unwrap().is_empty());
}

/// Key rotation never overwrites tokens refreshed between its read and its write: the write
/// is a compare-and-swap, and a conflict is read again.
#[tokio::test]
async fn key_rotation_keeps_tokens_refreshed_while_it_runs() {
    let app = TestApp::spawn_only(&[]).await;
    let (alice, _) = app.user("alice@example.com").await;
    let k1 = ring(&[("k1", 1)]);
    let k2 = ring(&[("k2", 2), ("k1", 1)]);
    let account = Account {
        id: "hub-1".into(),
        name: "portal".into(),
        scopes: "crm.objects.contacts.read".into(),
        user: None,
    };
    let set = |n: u32| TokenSet {
        access_token: format!("hs-access-{n}"),
        refresh_token: Some(format!("hs-refresh-{n}")),
        expires_at: None,
    };
    connections::save_tokens(&app.db, &k1, alice, "hubspot", &account, &set(1))
        .await
        .unwrap();
    // Rotation reads the row...
    let seen = connections::sealed_rows(&app.db, None)
        .await
        .unwrap()
        .remove(0);
    // ...a refresh rotates the refresh token meanwhile (HubSpot's old one is now dead)...
    connections::save_tokens(&app.db, &k1, alice, "hubspot", &account, &set(2))
        .await
        .unwrap();
    // ...and rotation's write finds the row changed and writes nothing.
    assert_eq!(
        connections::rewrite(&app.db, &k2, &seen).await.unwrap(),
        connections::Rewrite::Conflict
    );
    let stored = connections::tokens(&app.db, &k2, alice, "hubspot")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.refresh_token.as_deref(), Some("hs-refresh-2"));
    // The whole rotation reads again and rotates the fresh tokens.
    let report = connections::rotate_keys(&app.db, &k2).await.unwrap();
    assert_eq!((report.rotated, report.failed.len()), (1, 0));
    let k2_only = ring(&[("k2", 2)]);
    let stored = connections::tokens(&app.db, &k2_only, alice, "hubspot")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.refresh_token.as_deref(), Some("hs-refresh-2"));
}

/// Webhook secrets from before encryption keep verifying and are encrypted by rotation.
#[tokio::test]
async fn plain_webhook_secrets_are_encrypted_by_rotation() {
    let app = TestApp::spawn_only(&[]).await;
    let (alice, _) = app.user("alice@example.com").await;
    let k1 = ring(&[("k1", 1)]);
    app.db
        .execute_unprepared(&format!(
            "INSERT INTO webhook_endpoints (id, user_id, source, secret) VALUES ('{}', '{}', 'legacy', 'whsec_bGVnYWN5LXNlY3JldA==')",
            uuid::Uuid::new_v4(),
            alice
        ))
        .await
        .unwrap();
    assert_eq!(db::webhooks::rotate_keys(&app.db, &k1).await.unwrap(), 1);
    assert_eq!(db::webhooks::rotate_keys(&app.db, &k1).await.unwrap(), 0);
    let rows = db::entities::webhook_endpoint::Entity::find()
        .all(&app.db)
        .await
        .unwrap();
    assert!(rows[0].secret.starts_with("v1.k1."), "{}", rows[0].secret);
    assert_eq!(
        db::webhooks::secret(Some(&k1), &rows[0]).unwrap(),
        "whsec_bGVnYWN5LXNlY3JldA=="
    );
}
