//! Colleagues in one Slack workspace: each indexes only the conversations they are in, read
//! with their own token; live events of the workspace reach everyone's queue but are kept only
//! by members; a channel asked for by id is read only for a member; one colleague's
//! disconnect never revokes another's access; events match connections by workspace id, never
//! by a name.

use crate::crm_fakes::{FakeSlack, SLACK_TEAM};
use crate::fakes::FakeGoogle;
use crate::google::EMAIL;
use crate::sync::{command, connect_slack, disconnect, docs, sync_now};
use assistant_tests::{TestApp, eventually, test_config};
use common::events::{Envelope, Event, Resource, SyncScope};
use serde_json::json;
use std::time::Duration;

const ALICE_TOKEN: &str = "xoxp-alice-user-token-1111";
const BOB_TOKEN: &str = "xoxp-bob-user-token-2222";

async fn body_count(app: &TestApp, user: common::UserId, text: &str) -> i64 {
    app.scalar_i64(&format!(
        "SELECT count(*) FROM documents WHERE user_id = '{user}' AND body LIKE '%{text}%'"
    ))
    .await
}

#[tokio::test]
async fn colleagues_in_one_workspace_see_only_their_own_conversations() {
    let google = FakeGoogle::start(EMAIL).await;
    let slack = FakeSlack::start(ALICE_TOKEN).await;
    let mut config = test_config().await;
    google.configure(&mut config);
    slack.configure(&mut config);
    config.sync_interval_secs = 0;
    let app = TestApp::spawn_with(config, &["ingest"]).await;
    assistant_tests::mark_sensitive("acquisition of Harbor Wealth");
    {
        let mut s = slack.state.lock().unwrap();
        s.channels = vec![
            ("C01GENERAL".into(), "general".into(), true),
            ("G0BOARD".into(), "board".into(), true),
        ];
        s.private.insert("G0BOARD".into());
        s.add_person(BOB_TOKEN, "U5678", &["C01GENERAL"]);
        s.users.insert("U01RITA".into(), "Rita".into());
        s.post("C01GENERAL", "U01RITA", "Team lunch on Friday.");
        s.post(
            "G0BOARD",
            "U01RITA",
            "Confidential: acquisition of Harbor Wealth.",
        );
    }

    connect_slack(&app, &slack).await;
    let alice = db::users::ensure(&app.db, EMAIL).await.unwrap();
    {
        let mut g = google.state.lock().unwrap();
        g.email = "bob@example.com".into();
        g.sub = "2000000000000000002".into();
        slack.state.lock().unwrap().consenting = Some(BOB_TOKEN.into());
    }
    connect_slack(&app, &slack).await;
    let bob = db::users::ensure(&app.db, "bob@example.com").await.unwrap();
    assert_ne!(alice, bob);

    eventually(
        "both workspaces synced",
        Duration::from_secs(30),
        || async { docs(&app, alice, "slack").await == 2 && docs(&app, bob, "slack").await == 1 },
    )
    .await;
    assert_eq!(
        body_count(&app, bob, "acquisition").await,
        0,
        "bob is not on the board"
    );
    assert_eq!(body_count(&app, alice, "acquisition").await, 1);
    {
        // Everything was read with people's own tokens, never the app's.
        let s = slack.state.lock().unwrap();
        assert!(s.calls.iter().all(|(m, _)| m != "auth.test"));
    }

    // A live event in the private channel reaches both colleagues' queues (the workspace's
    // events are not addressed to a person); only the member keeps it.
    let event = json!({"type": "message", "channel": "G0BOARD", "user": "U01RITA",
                       "text": "Board call moved to 3pm, acquisition of Harbor Wealth on the agenda.",
                       "ts": "1764000100.000100"});
    let marker = json!({"type": "message", "channel": "C01GENERAL", "user": "U01RITA",
                        "text": "Marker after the board message.", "ts": "1764000200.000100"});
    for user in [alice, bob] {
        for e in [&event, &marker] {
            let scope = SyncScope::SlackEvent { event: e.clone() };
            let envelope =
                Envelope::new(user, Event::SyncRequested(command(Resource::Slack, scope)));
            app.bus.publish(&envelope).await.unwrap();
        }
    }
    eventually("events processed", Duration::from_secs(20), || async {
        body_count(&app, alice, "Board call moved").await == 1
            && body_count(&app, bob, "Marker after").await == 1
            && body_count(&app, alice, "Marker after").await == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(body_count(&app, bob, "Board call moved").await, 0);
    assert_eq!(body_count(&app, bob, "acquisition").await, 0);

    // Bob asks for the board channel by id: not read, and recorded why.
    sync_now(&app, bob, "slack", Some(json!({"channel": "G0BOARD"}))).await;
    eventually("the refusal recorded", Duration::from_secs(20), || async {
        app.scalar_i64(&format!(
            "SELECT count(*) FROM skipped_items WHERE user_id = '{bob}' AND external_id = 'G0BOARD'"
        ))
        .await
            == 1
    })
    .await;
    assert_eq!(body_count(&app, bob, "acquisition").await, 0);

    // Bob disconnects: his own token is revoked, Alice keeps working.
    disconnect(&app, bob, "slack").await;
    {
        let s = slack.state.lock().unwrap();
        assert!(s.revoked_tokens.contains(BOB_TOKEN));
        assert!(!s.revoked_tokens.contains(ALICE_TOKEN));
    }
    slack
        .state
        .lock()
        .unwrap()
        .post("C01GENERAL", "U01RITA", "Still here after Bob left.");
    sync_now(&app, alice, "slack", None).await;
    eventually("alice still syncs", Duration::from_secs(20), || async {
        body_count(&app, alice, "Still here").await == 1
    })
    .await;
}

#[tokio::test]
async fn workspace_events_match_connections_by_id_never_by_name() {
    let app = TestApp::spawn_only(&[]).await;
    let ring = app.config.key_ring().unwrap();
    let (member, _) = app.user("member@example.com").await;
    let (impostor, _) = app.user("impostor@example.com").await;
    let save = |user, id: &str, name: &str| {
        let ring = ring.clone();
        let db = app.db.clone();
        let (id, name) = (id.to_owned(), name.to_owned());
        async move {
            db::connections::save_tokens(
                &db,
                &ring,
                user,
                "slack",
                &db::connections::Account {
                    id,
                    name,
                    scopes: "channels:history".into(),
                    user: Some("U1".into()),
                },
                &db::connections::TokenSet {
                    access_token: "xoxp-x".into(),
                    refresh_token: None,
                    expires_at: None,
                },
            )
            .await
            .unwrap();
        }
    };
    save(member, SLACK_TEAM, "Wealth Partners").await;
    // Another workspace that named itself after ours.
    save(impostor, "T0IMPOSTOR", SLACK_TEAM).await;
    let matched = db::connections::users_by_account(&app.db, "slack", SLACK_TEAM)
        .await
        .unwrap();
    assert_eq!(matched, vec![member]);
}
