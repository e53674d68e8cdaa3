//! Incremental sync against stateful fakes: Calendar sync tokens (pages, 410 Gone, recurring
//! series and instances, cancellations), HubSpot search by last-modified date (nothing
//! missed when objects change between runs, 503 retried, 401 refreshed), Slack through its
//! OAuth connect and channel history (threads, names, limit and continuation, 429), items
//! over the size limit recorded, the scheduler (due syncs and channel renewals queued once
//! however many replicas tick), disconnect revoking at each provider, and one token refresh
//! for many concurrent callers.

use crate::crm_fakes::{FakeHubSpot, FakeSlack, SLACK_TEAM};
use crate::fakes::FakeGoogle;
use crate::google::{EMAIL, connect, sign_in};
use assistant_tests::{TestApp, eventually, test_config};
use common::UserId;
use common::events::{Resource, SyncRequested, SyncScope};
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub async fn disconnect(app: &TestApp, user: UserId, provider: &str) {
    let token = app
        .tokens
        .issue(user, EMAIL, chrono::Duration::hours(1))
        .unwrap();
    let r = app
        .http
        .delete(format!("{}/api/connections/{provider}", app.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let left = count(
        app,
        &format!(
            "SELECT count(*) FROM connections WHERE user_id = '{user}' AND provider = '{provider}'"
        ),
    )
    .await;
    assert_eq!(left, 0);
}

pub async fn sync_now(app: &TestApp, user: UserId, resource: &str, body: Option<Value>) {
    let token = app
        .tokens
        .issue(user, EMAIL, chrono::Duration::hours(1))
        .unwrap();
    let mut r = app
        .http
        .post(format!("{}/api/sync/{resource}", app.url))
        .bearer_auth(token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{:?}", r.text().await);
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    app.scalar_i64(sql).await
}

pub async fn docs(app: &TestApp, user: UserId, source: &str) -> i64 {
    count(
        app,
        &format!("SELECT count(*) FROM documents WHERE user_id = '{user}' AND source = '{source}'"),
    )
    .await
}

/// How many domain events named `name` the user's `source` published.
async fn announced(app: &TestApp, user: UserId, source: &str, name: &str) -> usize {
    app.subject_counts("EVENTS", &format!("events.{user}.{source}.{name}"))
        .await
        .values()
        .sum()
}

async fn resource_status(
    app: &TestApp,
    user: UserId,
    resource: &str,
) -> db::sync_state::ResourceStatus {
    db::sync_state::statuses(&app.db, user)
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.resource == resource)
        .unwrap()
}

async fn cursor(app: &TestApp, user: UserId, resource: &str) -> Value {
    db::sync_state::cursor(&app.db, user, resource)
        .await
        .unwrap()
}

/// The ingest sync handler, driven by the test one run at a time.
pub fn syncer(app: &TestApp) -> ingest::sync::Sync {
    let config = app.config.clone();
    ingest::sync::Sync {
        db: app.db.clone(),
        bus: app.bus.clone(),
        providers: providers::Providers::new(&config, app.db.clone(), config.key_ring().unwrap())
            .unwrap(),
        config: Arc::new(config),
    }
}

pub fn command(resource: Resource, scope: SyncScope) -> SyncRequested {
    SyncRequested {
        resource,
        reason: "test".into(),
        request_id: uuid::Uuid::new_v4().to_string(),
        scope,
    }
}

fn event_at(id: &str, summary: &str, start: &str) -> Value {
    json!({
        "id": id, "summary": summary,
        "start": {"dateTime": start, "timeZone": "America/New_York"},
        "end": {"dateTime": start, "timeZone": "America/New_York"},
        "organizer": {"email": EMAIL, "self": true},
        "htmlLink": format!("https://www.google.com/calendar/event?eid={id}"),
    })
}

#[tokio::test]
async fn calendar_sync_follows_sync_tokens_recovers_from_410_and_announces_cancellations() {
    let fake = FakeGoogle::start(EMAIL).await;
    let mut config = test_config().await;
    fake.configure(&mut config);
    config.sync_interval_secs = 0;
    config.sync_max_items = 2;
    config.sync_max_item_bytes = 4_000;
    let app = TestApp::spawn_with(config, &["ingest"]).await;
    let user = connect(&app, &fake, chrono::Duration::hours(1)).await;
    {
        let mut g = fake.state.lock().unwrap();
        let mut review = event_at(
            "review1",
            "Portfolio review with Maria Gonzalez",
            "2026-12-01T10:00:00-05:00",
        );
        review["location"] = json!("Main St office");
        review["description"] = json!("Discuss the <b>rebalancing</b> plan and fees.");
        review["attendees"] = json!([
            {"email": "maria@example.com", "displayName": "Maria Gonzalez", "responseStatus": "accepted"},
            {"email": EMAIL, "self": true, "responseStatus": "accepted"}
        ]);
        g.put_event(review);
        g.put_event(event_at(
            "lunch1",
            "Lunch with Tom",
            "2026-12-02T12:00:00-05:00",
        ));
        let mut weekly = event_at("weekly1", "Weekly team sync", "2026-11-30T09:00:00-05:00");
        weekly["recurrence"] = json!(["RRULE:FREQ=WEEKLY;BYDAY=MO"]);
        g.put_event(weekly);
        let mut moved = event_at(
            "weekly1_20261207T140000Z",
            "Weekly team sync (moved to Tuesday)",
            "2026-12-08T09:00:00-05:00",
        );
        moved["recurringEventId"] = json!("weekly1");
        moved["originalStartTime"] =
            json!({"dateTime": "2026-12-07T09:00:00-05:00", "timeZone": "America/New_York"});
        g.put_event(moved);
        // Outside the first sync's window (a year back).
        g.put_event(event_at(
            "old1",
            "Onboarding meeting, years ago",
            "2023-03-01T10:00:00-05:00",
        ));
        g.put_event(json!({
            "id": "offsite1", "summary": "Offsite agenda", "start": {"date": "2026-12-10"},
            "end": {"date": "2026-12-11"}, "description": "Agenda item. ".repeat(400),
        }));
    }

    // First sync: a full listing in pages of two, one run per page (the limit is 2).
    sync_now(&app, user, "calendar", None).await;
    eventually("full listing done", Duration::from_secs(30), || async {
        cursor(&app, user, "calendar").await["sync_token"] == "sync-6"
    })
    .await;
    assert_eq!(
        docs(&app, user, "calendar").await,
        4,
        "old1 is outside the window"
    );
    // The calendar's time zone becomes the user's: their questions' times are read in it.
    assert_eq!(
        db::users::time_zone(&app.db, user)
            .await
            .unwrap()
            .as_deref(),
        Some("America/New_York")
    );
    let skipped = count(
        &app,
        &format!(
            "SELECT count(*) FROM skipped_items WHERE user_id = '{user}' AND resource = 'calendar'
             AND external_id = 'offsite1' AND reason LIKE '%over the limit%' AND size_bytes > 4000"
        ),
    )
    .await;
    assert_eq!(
        skipped, 1,
        "the oversized event is recorded with its reason"
    );
    {
        let g = fake.state.lock().unwrap();
        assert!(g.calendar_lists.iter().all(|q| q["maxResults"] == "2"));
        assert!(!g.calendar_lists[0].contains_key("syncToken"));
        let window = &g.calendar_lists[0]["timeMin"];
        assert!(
            g.calendar_lists.iter().all(|q| &q["timeMin"] == window),
            "every page of the listing asks for the same window"
        );
        assert_eq!(
            g.calendar_lists
                .iter()
                .filter(|q| q.contains_key("pageToken"))
                .count(),
            2,
            "each continuation resumes at its page: {:?}",
            g.calendar_lists
        );
    }
    let review = db::documents::get(&app.db, crate::doc_id(user, "calendar", "review1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(review.title, "Portfolio review with Maria Gonzalez");
    for expected in [
        "When: 2026-12-01 15:00 UTC",
        "Where: Main St office",
        "Maria Gonzalez (accepted)",
        "rebalancing plan",
    ] {
        assert!(
            review.body.contains(expected),
            "{expected}: {}",
            review.body
        );
    }
    assert!(!review.body.contains("<b>"), "HTML became text");
    let weekly = db::documents::get(&app.db, crate::doc_id(user, "calendar", "weekly1"))
        .await
        .unwrap()
        .unwrap();
    assert!(
        weekly.body.contains("Repeats: RRULE:FREQ=WEEKLY;BYDAY=MO"),
        "{}",
        weekly.body
    );
    let moved = db::documents::get(
        &app.db,
        crate::doc_id(user, "calendar", "weekly1_20261207T140000Z"),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(moved.metadata["recurring_event_id"], "weekly1");
    assert_eq!(
        moved.metadata["original_start"]["dateTime"],
        "2026-12-07T09:00:00-05:00"
    );
    assert_eq!(
        announced(&app, user, "calendar", "calendar.event.created").await,
        4
    );

    // Changes since the sync token: one edit, two cancellations (one of them a single
    // occurrence of the series never stored on its own), one new event.
    {
        let mut g = fake.state.lock().unwrap();
        let mut review = g.events["review1"].1.clone();
        review["summary"] = json!("Portfolio review with Maria Gonzalez (rescheduled)");
        review["start"]["dateTime"] = json!("2026-12-03T10:00:00-05:00");
        g.put_event(review);
        g.cancel_event("lunch1");
        let mut occurrence = event_at(
            "weekly1_20261214T140000Z",
            "Weekly team sync",
            "2026-12-14T09:00:00-05:00",
        );
        occurrence["recurringEventId"] = json!("weekly1");
        g.events
            .insert("weekly1_20261214T140000Z".into(), (0, occurrence));
        g.cancel_event("weekly1_20261214T140000Z");
        g.put_event(event_at(
            "call1",
            "Call with Peter about his IRA",
            "2026-12-04T16:00:00-05:00",
        ));
    }
    sync_now(&app, user, "calendar", None).await;
    eventually("changes applied", Duration::from_secs(30), || async {
        cursor(&app, user, "calendar").await["sync_token"] == "sync-10"
    })
    .await;
    {
        let g = fake.state.lock().unwrap();
        let incremental: Vec<_> = g
            .calendar_lists
            .iter()
            .filter(|q| q.get("syncToken").map(String::as_str) == Some("sync-6"))
            .collect();
        assert!(!incremental.is_empty(), "asked with the stored sync token");
    }
    assert!(
        db::documents::get(&app.db, crate::doc_id(user, "calendar", "lunch1"))
            .await
            .unwrap()
            .is_none(),
        "a cancelled event is deleted"
    );
    let review = db::documents::get(&app.db, crate::doc_id(user, "calendar", "review1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        review.title,
        "Portfolio review with Maria Gonzalez (rescheduled)"
    );
    assert_eq!(docs(&app, user, "calendar").await, 4);
    assert_eq!(
        announced(&app, user, "calendar", "calendar.event.updated").await,
        1
    );
    assert_eq!(
        announced(&app, user, "calendar", "calendar.event.cancelled").await,
        2
    );
    assert_eq!(
        announced(&app, user, "calendar", "calendar.event.created").await,
        5
    );

    // The sync token expires: 410 Gone, then a full listing; nothing is announced twice.
    {
        let mut g = fake.state.lock().unwrap();
        g.oldest_sync_token = g.calendar_seq + 1;
        g.put_event(event_at(
            "call2",
            "Intro call with the Nguyens",
            "2026-12-05T11:00:00-05:00",
        ));
    }
    let lists_before = fake.state.lock().unwrap().calendar_lists.len();
    sync_now(&app, user, "calendar", None).await;
    eventually("full re-sync done", Duration::from_secs(30), || async {
        cursor(&app, user, "calendar").await["sync_token"] == "sync-11"
    })
    .await;
    {
        let g = fake.state.lock().unwrap();
        let after = &g.calendar_lists[lists_before..];
        assert_eq!(
            after[0].get("syncToken").map(String::as_str),
            Some("sync-10")
        );
        assert!(
            !after[1].contains_key("syncToken") && !after[1].contains_key("pageToken"),
            "410 starts a full listing: {after:?}"
        );
    }
    assert_eq!(docs(&app, user, "calendar").await, 5);
    assert_eq!(
        announced(&app, user, "calendar", "calendar.event.created").await,
        6
    );
    assert_eq!(
        announced(&app, user, "calendar", "calendar.event.updated").await,
        1
    );
    let status = count(
        &app,
        &format!(
            "SELECT count(*) FROM sync_state WHERE user_id = '{user}' AND resource = 'calendar'
             AND last_error IS NULL AND items_synced = 7"
        ),
    )
    .await;
    assert_eq!(status, 1, "six created and one update, each counted once");
}

#[tokio::test]
async fn hubspot_sync_is_incremental_and_misses_nothing_that_changes_between_runs() {
    let hubspot = FakeHubSpot::start().await;
    let mut config = test_config().await;
    hubspot.configure(&mut config);
    config.sync_interval_secs = 0;
    config.sync_max_items = 3;
    // The test drives each run itself.
    let app = TestApp::spawn_with(config, &[]).await;
    let (user, _) = app.user(EMAIL).await;
    let (access, refresh) = hubspot.state.lock().unwrap().issue();
    db::connections::save_tokens(
        &app.db,
        &app.config.key_ring().unwrap(),
        user,
        "hubspot",
        &db::connections::Account {
            id: "62515".into(),
            name: "wealth-partners.com".into(),
            scopes: "crm.objects.contacts.read".into(),
            user: None,
        },
        &db::connections::TokenSet {
            access_token: access,
            refresh_token: Some(refresh),
            expires_at: Some(chrono::Utc::now() + chrono::Duration::minutes(30)),
        },
    )
    .await
    .unwrap();
    db::sync_state::ensure(&app.db, user, "hubspot")
        .await
        .unwrap();

    const T: i64 = 1_764_000_000_000;
    {
        let mut h = hubspot.state.lock().unwrap();
        let names = [
            "Maria Gonzalez",
            "Peter Lee",
            "Ana Silva",
            "Tom Becker",
            "Lisa Wong",
            "Omar Haddad",
            "Jean Dupont",
        ];
        for (i, name) in names.iter().enumerate() {
            let (first, last) = name.split_once(' ').unwrap();
            // Contacts 5 and 6 were modified in the same millisecond.
            let n = (i + 1) as i64;
            let modified = T + 1_000 * if n == 6 { 5 } else { n };
            h.put(
                "contacts",
                &n.to_string(),
                modified,
                json!({"firstname": first, "lastname": last, "email": format!("{}@example.com", first.to_lowercase()), "jobtitle": "Client"}),
            );
        }
        h.put(
            "companies",
            "9001",
            T + 500,
            json!({"name": "Gonzalez Holdings", "domain": "gonzalez.example"}),
        );
        h.put(
            "companies",
            "9002",
            T + 600,
            json!({"name": "Lee Family Office"}),
        );
        h.put(
            "deals",
            "7001",
            T + 700,
            json!({"dealname": "Gonzalez rollover", "amount": "250000", "dealstage": "contractsent"}),
        );
        h.put(
            "notes",
            "8001",
            T + 800,
            json!({"hs_note_body": "<p>Maria wants a <strong>quarterly</strong> fee breakdown.</p>", "hs_timestamp": "2026-11-20T10:00:00.000Z"}),
        );
        h.associate("contacts:1", "companies:9001");
        h.associate("notes:8001", "contacts:1");
        h.associate("notes:8001", "deals:7001");
    }

    let sync = syncer(&app);
    let run = |n: usize| {
        let sync = sync.clone();
        async move {
            sync.handle(
                user,
                command(Resource::Hubspot, SyncScope::Changes),
                format!("TEST:{n}"),
            )
            .await
            .unwrap();
        }
    };
    let queued = || async { app.stream_messages("SYNC").await };

    run(1).await;
    assert_eq!(
        queued().await,
        1,
        "stopped at the limit with a continuation"
    );
    assert_eq!(docs(&app, user, "hubspot").await, 3);
    let c = cursor(&app, user, "hubspot").await;
    assert_eq!(c["since"]["contacts"], T + 3_000);
    assert_eq!(c["seen"]["contacts"], json!(["3"]));
    let status = resource_status(&app, user, "hubspot").await;
    let pass = status
        .pass
        .clone()
        .expect("the pass goes on in its continuation");
    assert_eq!(
        (pass.done, pass.total),
        (3, Some(7)),
        "three read of the seven contacts HubSpot's search counts: {status:?}"
    );
    assert!(status.syncing, "{status:?}");

    // Between runs, an already-synced contact changes (it moves to the end of the order)
    // and HubSpot has a moment of trouble.
    {
        let mut h = hubspot.state.lock().unwrap();
        h.put(
            "contacts",
            "1",
            T + 10_000,
            json!({"firstname": "Maria", "lastname": "Gonzalez", "email": "maria@example.com", "jobtitle": "CFO"}),
        );
        h.unavailable = 1;
    }
    let mut runs = 1;
    loop {
        let before = queued().await;
        runs += 1;
        run(runs).await;
        if queued().await == before {
            break;
        }
        assert!(runs < 10, "the sync converges");
    }
    assert_eq!(hubspot.state.lock().unwrap().served_503, 1);
    assert_eq!(
        docs(&app, user, "hubspot").await,
        11,
        "7 contacts, 2 companies, 1 deal, 1 note"
    );
    let status = resource_status(&app, user, "hubspot").await;
    assert_eq!(status.pass, None, "the pass is over: {status:?}");
    assert!(!status.syncing, "{status:?}");
    for id in 1..=7 {
        assert!(
            db::documents::get(
                &app.db,
                crate::doc_id(user, "hubspot", &format!("contact:{id}"))
            )
            .await
            .unwrap()
            .is_some(),
            "contact {id}"
        );
    }
    let maria = db::documents::get(&app.db, crate::doc_id(user, "hubspot", "contact:1"))
        .await
        .unwrap()
        .unwrap();
    assert!(maria.body.contains("Job title: CFO"), "{}", maria.body);
    assert_eq!(maria.metadata["associations"]["companies"], json!(["9001"]));
    let note = db::documents::get(&app.db, crate::doc_id(user, "hubspot", "note:8001"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(note.title, "Maria wants a **quarterly** fee breakdown.");
    assert_eq!(note.metadata["associations"]["contacts"], json!(["1"]));
    assert_eq!(note.metadata["associations"]["deals"], json!(["7001"]));
    assert_eq!(announced(&app, user, "hubspot", "contact.created").await, 7);
    assert_eq!(announced(&app, user, "hubspot", "contact.updated").await, 1);
    assert_eq!(announced(&app, user, "hubspot", "company.created").await, 2);
    assert_eq!(announced(&app, user, "hubspot", "deal.created").await, 1);
    assert_eq!(announced(&app, user, "hubspot", "note.created").await, 1);
    let c = cursor(&app, user, "hubspot").await;
    assert_eq!(c["since"]["contacts"], T + 10_000);
    assert_eq!(c["since"]["notes"], T + 800);

    // The access token stops working: one refresh, and a run with nothing new reads
    // nothing again.
    {
        let mut h = hubspot.state.lock().unwrap();
        h.valid_access.clear();
        h.reads = 0;
    }
    let events_before = app.stream_messages("EVENTS").await;
    run(100).await;
    {
        let h = hubspot.state.lock().unwrap();
        assert_eq!(h.refreshes, 1);
        assert_eq!(h.reads, 0, "only the already-seen objects came back");
        let (_, last_contacts) = h
            .searches
            .iter()
            .rev()
            .find(|(t, _)| t == "contacts")
            .unwrap();
        assert_eq!(
            last_contacts["filterGroups"][0]["filters"][0]["value"],
            (T + 10_000).to_string()
        );
    }
    assert_eq!(app.stream_messages("EVENTS").await, events_before);

    // One object on demand (a contact the advisor is looking at); a Slack scope is refused.
    let queued_before = app.stream_messages("SYNC").await;
    sync_now(
        &app,
        user,
        "hubspot",
        Some(json!({"object_type": "contacts", "object_id": "4"})),
    )
    .await;
    assert_eq!(app.stream_messages("SYNC").await, queued_before + 1);
    let token = app
        .tokens
        .issue(user, EMAIL, chrono::Duration::hours(1))
        .unwrap();
    let r = app
        .http
        .post(format!("{}/api/sync/hubspot", app.url))
        .bearer_auth(token)
        .json(&json!({"channel": "C01GENERAL"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // An object id is part of a HubSpot URL path: digits only.
    let r = app
        .http
        .post(format!("{}/api/sync/hubspot", app.url))
        .bearer_auth(
            app.tokens
                .issue(user, EMAIL, chrono::Duration::hours(1))
                .unwrap(),
        )
        .json(&json!({"object_type": "contacts", "object_id": "../../oauth/v1/refresh-tokens/x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json::<Value>().await.unwrap()["field"], "object_id");
    assert_eq!(app.stream_messages("SYNC").await, queued_before + 1);
    hubspot.state.lock().unwrap().reads = 0;
    sync.handle(
        user,
        command(
            Resource::Hubspot,
            SyncScope::HubspotObject {
                object_type: "contacts".into(),
                id: "4".into(),
                deleted: false,
            },
        ),
        "TEST:one".into(),
    )
    .await
    .unwrap();
    assert_eq!(hubspot.state.lock().unwrap().reads, 1, "one object read");

    // Disconnecting deletes the grant at HubSpot, then here.
    disconnect(&app, user, "hubspot").await;
    let h = hubspot.state.lock().unwrap();
    assert_eq!(h.revoked.len(), 1);
    assert!(
        h.valid_refresh.is_empty(),
        "the refresh token no longer works"
    );
}

/// Connects Slack through the browser flow for a signed-in user; returns the session.
pub async fn connect_slack(app: &TestApp, slack: &FakeSlack) -> String {
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let session = sign_in(app).await;
    let start = |session: String| {
        let browser = browser.clone();
        let url = format!("{}/api/auth/slack/start", app.url);
        async move {
            let r = browser
                .get(url)
                .header(COOKIE, session)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::SEE_OTHER);
            let to = url::Url::parse(r.headers()[LOCATION].to_str().unwrap()).unwrap();
            let q: HashMap<String, String> = to.query_pairs().into_owned().collect();
            let flow = r
                .headers()
                .get_all("set-cookie")
                .iter()
                .find_map(|v| {
                    let v = v.to_str().unwrap();
                    v.starts_with("oauth_flow=")
                        .then(|| v.split(';').next().unwrap().to_owned())
                })
                .unwrap();
            (to, q, flow)
        }
    };
    let callback = |state: &str, code: &str, cookies: String| {
        let url = format!(
            "{}/api/auth/slack/callback?code={code}&state={state}",
            app.url
        );
        let browser = browser.clone();
        async move {
            browser
                .get(url)
                .header(COOKIE, cookies)
                .send()
                .await
                .unwrap()
        }
    };

    let (to, q, flow) = start(session.clone()).await;
    assert!(
        to.as_str()
            .starts_with(&format!("{}/oauth/v2/authorize", slack.server.uri()))
    );
    assert_eq!(q["client_id"], crate::crm_fakes::SLACK_CLIENT_ID);
    // History is read with the person's own token (user scopes), never the app's.
    assert!(
        q["user_scope"].contains("channels:history,"),
        "Slack scopes are comma-separated: {}",
        q["user_scope"]
    );
    assert!(!q["scope"].contains("history"), "{}", q["scope"]);
    // A code Slack does not know is refused and connects nothing.
    let connected = "SELECT count(*) FROM connections WHERE provider = 'slack'";
    let before = count(app, connected).await;
    let r = callback(&q["state"], "not-a-code", format!("{flow}; {session}")).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(count(app, connected).await, before);

    let (_, q, flow) = start(session.clone()).await;
    slack
        .state
        .lock()
        .unwrap()
        .codes
        .insert("slack-code-1".into());
    let r = callback(&q["state"], "slack-code-1", format!("{flow}; {session}")).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{:?}", r.text().await);
    assert_eq!(count(app, connected).await, before + 1);
    session
}

#[tokio::test]
async fn slack_connect_then_channel_history_with_threads_names_limits_and_continuations() {
    let google = FakeGoogle::start(EMAIL).await;
    let slack = FakeSlack::start("xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy").await;
    let mut config = test_config().await;
    google.configure(&mut config);
    slack.configure(&mut config);
    config.sync_interval_secs = 0;
    config.sync_max_items = 4;
    config.sync_max_item_bytes = 2_000;
    let app = TestApp::spawn_with(config, &["ingest"]).await;

    let (m2, m4, m6) = {
        let mut s = slack.state.lock().unwrap();
        s.channels = vec![
            ("C01GENERAL".into(), "general".into(), true),
            ("C02FEEDBK".into(), "client-feedback".into(), true),
            ("C03RANDOM".into(), "random".into(), false),
        ];
        s.users.insert("U01RITA".into(), "Rita".into());
        s.users.insert("U02SAM".into(), "Sam".into());
        s.post("C01GENERAL", "U01RITA", "Morning! Market update at 10.");
        let m2 = s.post(
            "C01GENERAL",
            "U02SAM",
            "Who is preparing the Q4 fee report?",
        );
        s.reply("C01GENERAL", &m2, "U01RITA", "I am, draft by Friday.");
        s.reply(
            "C01GENERAL",
            &m2,
            "U02SAM",
            "Thanks, include the new tiers.",
        );
        s.join("C01GENERAL", "U02SAM");
        s.post(
            "C01GENERAL",
            "U01RITA",
            "Reminder: compliance training today.",
        );
        let m4 = s.post("C01GENERAL", "U01RITA", &"long log line ".repeat(200));
        s.post(
            "C02FEEDBK",
            "U02SAM",
            "Clients keep asking for a mobile app.",
        );
        let m6 = s.post(
            "C02FEEDBK",
            "U01RITA",
            "Several asked for paperless statements.",
        );
        s.post("C03RANDOM", "U01RITA", "Not a channel the app is in.");
        s.throttle = 1;
        (m2, m4, m6)
    };

    connect_slack(&app, &slack).await;
    let user = db::users::ensure(&app.db, EMAIL).await.unwrap();
    let row = db::connections::list(&app.db, user).await.unwrap();
    let conn = row.iter().find(|c| c.provider == "slack").unwrap();
    assert_eq!(conn.account_id, SLACK_TEAM);
    assert_eq!(conn.account_name, "Wealth Partners");

    // Connecting starts the first sync; the limit of 4 splits it into continuations.
    eventually("workspace synced", Duration::from_secs(30), || async {
        let c = cursor(&app, user, "slack").await;
        c["channels"]["C02FEEDBK"] == m6.as_str()
    })
    .await;
    assert_eq!(
        cursor(&app, user, "slack").await["channels"]["C01GENERAL"],
        m4.as_str()
    );
    assert_eq!(
        docs(&app, user, "slack").await,
        7,
        "#general: 3 messages and 2 replies (the join is not conversation, the oversized one is skipped); #client-feedback: 2"
    );
    assert_eq!(
        announced(&app, user, "slack", "slack.message.posted").await,
        7
    );
    let skipped = count(
        &app,
        &format!(
            "SELECT count(*) FROM skipped_items WHERE user_id = '{user}' AND resource = 'slack'
             AND external_id = 'C01GENERAL:{m4}' AND reason = 'message is 2800 bytes, over the limit'"
        ),
    )
    .await;
    assert_eq!(skipped, 1);
    let replies = count(
        &app,
        &format!(
            "SELECT count(*) FROM documents WHERE user_id = '{user}' AND source = 'slack'
             AND metadata->>'thread_ts' = '{m2}' AND external_id <> 'C01GENERAL:{m2}'"
        ),
    )
    .await;
    assert_eq!(replies, 2, "thread replies are stored");
    let sam = db::documents::get(
        &app.db,
        crate::doc_id(user, "slack", &format!("C01GENERAL:{m2}")),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(sam.title, "#general: Sam");
    assert_eq!(sam.metadata["user_name"], "Sam");
    {
        let s = slack.state.lock().unwrap();
        let histories: Vec<_> = s
            .calls
            .iter()
            .filter(|(m, _)| m == "conversations.history")
            .collect();
        assert!(
            histories.iter().all(|(_, q)| q["channel"] != "C03RANDOM"),
            "only channels the app is in"
        );
        assert!(
            histories.len() >= 4,
            "429 retried and continuations resumed: {histories:?}"
        );
        assert_eq!(s.throttle, 0);
    }

    // A new message; syncing one channel reads only what came after its stored ts.
    let m7 = slack
        .state
        .lock()
        .unwrap()
        .post("C01GENERAL", "U02SAM", "Fee report is out.");
    let calls_before = slack.state.lock().unwrap().calls.len();
    sync_now(&app, user, "slack", Some(json!({"channel": "C01GENERAL"}))).await;
    let id = crate::doc_id(user, "slack", &format!("C01GENERAL:{m7}"));
    eventually("new message stored", Duration::from_secs(20), || async {
        db::documents::get(&app.db, id).await.unwrap().is_some()
    })
    .await;
    {
        let s = slack.state.lock().unwrap();
        let (_, q) = s.calls[calls_before..]
            .iter()
            .find(|(m, _)| m == "conversations.history")
            .unwrap();
        assert_eq!(q["oldest"], m4);
        assert_eq!(q["channel"], "C01GENERAL");
    }

    // Disconnecting revokes the bot token at Slack.
    disconnect(&app, user, "slack").await;
    assert!(slack.state.lock().unwrap().revoked);
}

#[tokio::test]
async fn scheduler_queues_due_syncs_and_renewals_once_across_replicas_and_renews_channels() {
    let fake = FakeGoogle::start(EMAIL).await;
    let mut config = test_config().await;
    fake.configure(&mut config);
    config.sync_interval_secs = 900;
    let app = TestApp::spawn_with(config, &[]).await;
    let user = connect(&app, &fake, chrono::Duration::hours(1)).await;
    let (revoked, _) = app.user("former@example.com").await;
    db::connections::save_tokens(
        &app.db,
        &app.config.key_ring().unwrap(),
        revoked,
        "google",
        &db::connections::Account {
            id: "200".into(),
            name: "former@example.com".into(),
            scopes: String::new(),
            user: None,
        },
        &db::connections::TokenSet {
            access_token: "gone".into(),
            refresh_token: None,
            expires_at: None,
        },
    )
    .await
    .unwrap();
    db::connections::mark_revoked(&app.db, revoked, "google", "revoked: invalid_grant")
        .await
        .unwrap();
    for u in [user, revoked] {
        for resource in ["gmail", "calendar"] {
            db::sync_state::ensure(&app.db, u, resource).await.unwrap();
        }
        db::sync_state::save_channel(
            &app.db,
            &db::sync_state::Channel {
                id: format!("chan-old-{u}"),
                user_id: u,
                resource: "calendar".into(),
                token_hash: Some(db::sessions::hash("old-token")),
                resource_id: Some("res-old".into()),
                expires_at: chrono::Utc::now() + chrono::Duration::hours(2),
            },
        )
        .await
        .unwrap();
    }
    app.scalar_i64("WITH u AS (UPDATE sync_state SET next_run_at = now() - interval '1 minute' RETURNING 1) SELECT count(*) FROM u")
        .await;

    // Two replicas tick at the same moment.
    let (a, b) = (syncer(&app), syncer(&app));
    let (ra, rb) = tokio::join!(
        ingest::sync::scheduler::tick(&a),
        ingest::sync::scheduler::tick(&b)
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert!(ra.0 + rb.0 >= 2, "{ra:?} {rb:?}");
    let queued = app.subject_counts("SYNC", "sync.>").await;
    assert_eq!(queued.get(&format!("sync.{user}.gmail")), Some(&1));
    assert_eq!(
        queued.get(&format!("sync.{user}.calendar")),
        Some(&2),
        "one due sync and one renewal: {queued:?}"
    );
    assert!(
        !queued.keys().any(|s| s.contains(&revoked.to_string())),
        "a revoked connection is not synced: {queued:?}"
    );
    // A later tick finds nothing due; the renewal it queues again is the same command.
    ingest::sync::scheduler::tick(&a).await.unwrap();
    assert_eq!(app.stream_messages("SYNC").await, 3);

    // The renewal opens a new channel and stops the old one.
    a.handle(
        user,
        command(Resource::Calendar, SyncScope::Watch),
        "TEST:renew".into(),
    )
    .await
    .unwrap();
    let (channel_id, token) = {
        let g = fake.state.lock().unwrap();
        assert_eq!(g.watches.len(), 1);
        assert_eq!(g.stopped, vec![format!("chan-old-{user}")]);
        let w = &g.watches[0];
        assert_eq!(
            w["address"],
            format!("{}/api/webhooks/calendar", app.config.public_url)
        );
        (
            w["id"].as_str().unwrap().to_owned(),
            w["token"].as_str().unwrap().to_owned(),
        )
    };
    assert!(token.len() >= 32, "a random channel secret");
    let channels = db::sync_state::channels_of(&app.db, user, "calendar")
        .await
        .unwrap();
    assert_eq!(channels.len(), 1);
    assert_eq!(channels[0].id, channel_id);
    assert!(channels[0].expires_at > chrono::Utc::now() + chrono::Duration::days(6));

    let notify = |channel: String, token: String| {
        let (channel, token) = (channel.clone(), token.clone());
        app.http
            .post(format!("{}/api/webhooks/calendar", app.url))
            .header("x-goog-channel-id", channel)
            .header("x-goog-resource-id", "res-1")
            .header("x-goog-resource-state", "exists")
            .header("x-goog-message-number", "7")
            .header("x-goog-channel-token", token)
            .send()
    };
    assert_eq!(
        notify(format!("chan-old-{user}"), "old-token".into())
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED,
        "the replaced channel is gone"
    );
    assert_eq!(
        notify(channel_id.clone(), token.clone())
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(app.stream_messages("SYNC").await, 4);
    // With the channel renewed, nothing is due for renewal any more.
    ingest::sync::scheduler::tick(&a).await.unwrap();
    assert_eq!(app.stream_messages("SYNC").await, 4);
    // Past its expiration Google no longer sends on a channel: its token stops verifying.
    count(
        &app,
        &format!("WITH u AS (UPDATE watch_channels SET expires_at = now() - interval '1 minute' WHERE id = '{channel_id}' RETURNING 1) SELECT count(*) FROM u"),
    )
    .await;
    assert_eq!(
        notify(channel_id, token).await.unwrap().status(),
        StatusCode::UNAUTHORIZED,
        "an expired channel"
    );
    assert_eq!(app.stream_messages("SYNC").await, 4);

    // Disconnecting stops the channel at Google and revokes the grant.
    disconnect(&app, user, "google").await;
    {
        let g = fake.state.lock().unwrap();
        assert_eq!(g.stopped.last(), Some(&channels[0].id));
        assert_eq!(g.revoked.len(), 1);
    }
    let left = count(
        &app,
        &format!("SELECT count(*) FROM watch_channels WHERE user_id = '{user}'"),
    )
    .await;
    assert_eq!(left, 0);
}

#[tokio::test]
async fn concurrent_calls_refresh_an_expiring_token_once_and_store_the_rotated_one() {
    let fake = FakeGoogle::start(EMAIL).await;
    let mut config = test_config().await;
    fake.configure(&mut config);
    let app = TestApp::spawn_with(config, &[]).await;
    // Expires within the refresh margin.
    let user = connect(&app, &fake, chrono::Duration::seconds(30)).await;
    let ring = app.config.key_ring().unwrap();
    let before = db::connections::tokens(&app.db, &ring, user, "google")
        .await
        .unwrap()
        .unwrap();

    let sync = syncer(&app);
    let calls = (0..8).map(|_| {
        providers::tokens::access_token(&sync.providers, user, providers::Provider::Google, None)
    });
    let tokens: Vec<String> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        fake.state.lock().unwrap().refreshes,
        1,
        "eight callers, one refresh"
    );
    assert!(tokens.iter().all(|t| t == &tokens[0]), "{tokens:?}");
    assert_ne!(tokens[0], before.access_token);

    let after = db::connections::tokens(&app.db, &ring, user, "google")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.access_token, tokens[0]);
    let rotated = after.refresh_token.unwrap();
    assert_ne!(Some(&rotated), before.refresh_token.as_ref());
    assert!(
        fake.state.lock().unwrap().valid_refresh.contains(&rotated),
        "the rotated refresh token is the one stored"
    );
    assert!(after.expires_at.unwrap() > chrono::Utc::now() + chrono::Duration::minutes(50));
}
