//! Rules, standing instructions and tasks that wait, on the real stack: events from the
//! providers' fakes (or published as ingest publishes them), the rules engine, the executor,
//! the fake model for compiling and tier 2.

use crate::assistant_writes::{EMAIL, connect_google, connect_hubspot};
use crate::crm_fakes::FakeHubSpot;
use crate::fakes::{FakeGoogle, Mail};
use assistant_tests::fake_model::{FakeModel, Reply, last_message};
use assistant_tests::{TestApp, eventually, test_config};
use common::UserId;
use common::config::ChatProvider;
use common::events::{DomainEvent, Envelope, Event};
use common::ids::Source;
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

pub(crate) async fn rules_app(
    model: Option<&FakeModel>,
    hubspot: Option<&FakeHubSpot>,
    google: Option<&FakeGoogle>,
) -> TestApp {
    let mut config = test_config().await;
    if let Some(fake) = model {
        config.chat_provider = ChatProvider::Openai;
        config.chat_base_url = fake.url.clone();
        config.chat_model = "fake-model".into();
    }
    if let Some(h) = hubspot {
        h.configure(&mut config);
    }
    if let Some(g) = google {
        g.configure(&mut config);
    }
    config.sync_interval_secs = 0;
    TestApp::spawn_with(config, &assistant_tests::SERVICES).await
}

pub(crate) async fn post_rule(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    app.http
        .post(format!("{}/api/rules", app.url))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

pub(crate) async fn get_json(app: &TestApp, token: &str, path: &str) -> Value {
    let r = app
        .http
        .get(format!("{}{path}", app.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

pub(crate) async fn rule(app: &TestApp, token: &str, text: &str, alone: bool) -> Uuid {
    let r = post_rule(
        app,
        token,
        json!({"text": text, "act_without_approval": alone}),
    )
    .await;
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().parse().unwrap()
}

/// A domain event as ingest publishes it.
pub(crate) async fn publish(
    app: &TestApp,
    user: UserId,
    source: &str,
    name: &str,
    entity: &str,
    data: Value,
) -> Envelope {
    let envelope = Envelope::new(
        user,
        Event::Domain(DomainEvent {
            source: Source::parse(source).unwrap(),
            name: name.into(),
            entity_id: entity.into(),
            document_id: None,
            version: Uuid::new_v4().to_string(),
            data,
            history: false,
        }),
    );
    app.bus.publish(&envelope).await.unwrap();
    envelope
}

/// The same event once more under another message id, as a replay of the stream delivers it.
pub(crate) async fn replay(app: &TestApp, envelope: &Envelope) {
    app.bus
        .publish_raw(
            &envelope.subject(),
            &format!("replay-{}", Uuid::new_v4()),
            envelope.to_bytes(),
        )
        .await
        .unwrap();
}

/// Until the rules engine has taken and acknowledged every event so far.
pub(crate) async fn engine_idle(app: &TestApp) {
    eventually("the rules engine idle", Duration::from_secs(20), || async {
        let consumer = app
            .bus
            .js
            .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
                "rules-engine",
                app.bus.ns.stream("EVENTS"),
            )
            .await;
        match consumer {
            Ok(mut c) => c
                .info()
                .await
                .map(|i| i.num_pending == 0 && i.num_ack_pending == 0)
                .unwrap_or(false),
            Err(_) => false,
        }
    })
    .await;
}

pub(crate) async fn count(app: &TestApp, sql: &str) -> i64 {
    app.scalar_i64(sql).await
}

pub(crate) async fn sync_gmail(app: &TestApp, token: &str) {
    let r = app
        .http
        .post(format!("{}/api/sync/gmail", app.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
}

pub(crate) async fn gmail_synced(app: &TestApp, user: UserId, emails: i64) {
    eventually("the mailbox synced", Duration::from_secs(30), || async {
        count(
            app,
            &format!("SELECT count(*) FROM documents WHERE user_id = '{user}' AND source = 'gmail'"),
        )
        .await
            >= emails
            && count(
                app,
                &format!("SELECT count(*) FROM sync_state WHERE user_id = '{user}' AND resource = 'gmail' AND lease_until IS NULL AND last_sync_at IS NOT NULL"),
            )
            .await
                == 1
    })
    .await;
}

#[tokio::test]
async fn rules_are_parsed_printed_and_refused_with_line_and_column() {
    let app = rules_app(None, None, None).await;
    let (_, token) = app.user(EMAIL).await;

    let r = post_rule(
        &app,
        &token,
        json!({"text": "when hubspot.contact.created then create_task type=welcome_email priority=high"}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["kind"], "structured");
    assert_eq!(created["active"], true);
    let canonical = created["compiled"]["canonical"].as_str().unwrap();
    assert_eq!(
        canonical,
        "when hubspot.contact.created then create_task type=welcome_email priority=high"
    );
    let id = created["id"].as_str().unwrap();

    // The canonical text is a rule too, and it parses to the same rule.
    let again: Value = post_rule(&app, &token, json!({"text": canonical}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["compiled"]["rule"], created["compiled"]["rule"]);

    let r = post_rule(
        &app,
        &token,
        json!({"text": "when gmail.email.received\n  if from_domain != \"harborwealth.example\" and\n  then create_contact email={{event.from}}"}),
    )
    .await;
    assert_eq!(r.status(), 422);
    let error: Value = r.json().await.unwrap();
    assert_eq!(error["code"], "rule_syntax");
    assert_eq!(error["field"], "text");
    assert_eq!(error["position"]["line"], 3);
    assert_eq!(error["position"]["column"], 3);
    assert_eq!(error["position"]["found"], "`then`");
    assert!(
        error["detail"]
            .as_str()
            .unwrap()
            .contains("line 3, column 3"),
        "{error}"
    );

    // Plain language needs a model, and none is configured here.
    let r = post_rule(
        &app,
        &token,
        json!({"text": "Tell me when a client emails about taxes"}),
    )
    .await;
    assert_eq!(r.status(), 422);
    let error: Value = r.json().await.unwrap();
    assert!(
        error["detail"].as_str().unwrap().contains("CHAT_PROVIDER"),
        "{error}"
    );
    // As something to remember it is kept as written.
    let r = post_rule(
        &app,
        &token,
        json!({"text": "Greg prefers calls", "memory": true}),
    )
    .await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.json::<Value>().await.unwrap()["kind"], "memory");

    // Changing the text recompiles it; a broken change is refused and the rule kept.
    let r = app
        .http
        .put(format!("{}/api/rules/{id}", app.url))
        .bearer_auth(&token)
        .json(&json!({"text": "when hubspot.contact.created then notify"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let r = app
        .http
        .put(format!("{}/api/rules/{id}", app.url))
        .bearer_auth(&token)
        .json(&json!({"text": "when hubspot.* if lifecyclestage == \"customer\" then notify text=\"{{event.title}} changed\"", "active": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let changed: Value = r.json().await.unwrap();
    assert_eq!(changed["active"], false);
    assert_eq!(
        changed["compiled"]["canonical"],
        "when hubspot.* if lifecyclestage == \"customer\" then notify text=\"{{event.title}} changed\""
    );
    let firings = get_json(&app, &token, &format!("/api/rules/{id}/firings")).await;
    assert_eq!(firings["firings"], json!([]));
    let r = app
        .http
        .get(format!("{}/api/rules/{}/firings", app.url, Uuid::new_v4()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn an_unknown_sender_gets_one_contact_and_one_note_however_often_the_event_comes() {
    let hubspot = FakeHubSpot::start().await;
    let google = FakeGoogle::start(EMAIL).await;
    let app = rules_app(None, Some(&hubspot), Some(&google)).await;
    let (user, token) = app.user(EMAIL).await;
    connect_hubspot(&app, &hubspot, user).await;
    connect_google(&app, &google, user).await;
    // The mailbox's past: read by the first sync, never fired on.
    google
        .state
        .lock()
        .unwrap()
        .deliver("old-1", "Last year's statement", "Attached.", &["INBOX"]);
    sync_gmail(&app, &token).await;
    gmail_synced(&app, user, 1).await;

    let rule_id = rule(
        &app,
        &token,
        "when gmail.email.received if from_domain != \"harborwealth.example\" and not contact_exists(from) \
         then create_contact email={{event.from_email}} firstname={{event.from_name}}; \
         create_note contact={{steps.1.contact_id}} body=\"Emailed us: {{event.subject}}\"",
        true,
    )
    .await;
    google.state.lock().unwrap().deliver_mail(&Mail {
        id: "m-sara",
        thread: "t-sara",
        from: "Sara <sara.lee@client.example>",
        subject: "Opening an account",
        body: "Hello, I would like to open an account with you.",
        labels: &["INBOX"],
        // Gmail verified the sender: the rule may act alone about her.
        headers: &[(
            "Authentication-Results",
            "mx.google.com; dkim=pass header.i=@client.example; spf=pass smtp.mailfrom=sara.lee@client.example; dmarc=pass (p=NONE) header.from=client.example",
        )],
    });
    // A colleague's email: the condition says no.
    google.state.lock().unwrap().deliver_mail(&Mail {
        id: "m-ops",
        thread: "t-ops",
        from: "Ops <ops@harborwealth.example>",
        subject: "Desk move",
        body: "Friday.",
        labels: &["INBOX"],
        headers: &[],
    });
    sync_gmail(&app, &token).await;
    eventually(
        "the contact and the note",
        Duration::from_secs(30),
        || async {
            let h = hubspot.state.lock().unwrap();
            h.created.iter().any(|(t, _, _)| t == "notes")
        },
    )
    .await;
    let (contacts, notes) = {
        let h = hubspot.state.lock().unwrap();
        let of = |kind: &str| {
            h.created
                .iter()
                .filter(|(t, _, _)| t == kind)
                .cloned()
                .collect::<Vec<_>>()
        };
        (of("contacts"), of("notes"))
    };
    assert_eq!(contacts.len(), 1, "{contacts:?}");
    assert_eq!(
        contacts[0].2["properties"]["email"],
        "sara.lee@client.example"
    );
    assert_eq!(contacts[0].2["properties"]["firstname"], "Sara");
    assert_eq!(notes.len(), 1);
    assert!(
        notes[0].2["properties"]["hs_note_body"]
            .as_str()
            .unwrap()
            .starts_with("Emailed us: Opening an account")
    );
    // The note is on the contact the first step created.
    assert_eq!(
        notes[0].2["associations"][0]["to"]["id"],
        contacts[0].1.as_str()
    );

    // The event again, three times at once, then the whole stream replayed.
    let firings = get_json(&app, &token, &format!("/api/rules/{rule_id}/firings")).await;
    let firings = firings["firings"].as_array().unwrap().clone();
    assert_eq!(firings.len(), 1, "{firings:?}");
    assert_eq!(firings[0]["tier"], 1);
    assert_eq!(firings[0]["event_type"], "gmail.email.received");
    assert_eq!(
        firings[0]["detail"]["lookups"]["contact_exists(sara.lee@client.example)"],
        false
    );
    let event_id = firings[0]["event_id"].as_str().unwrap();
    let stored = stored_event(&app, user, event_id).await;
    futures::future::join_all((0..3).map(|_| replay(&app, &stored))).await;
    for envelope in all_events(&app, user).await {
        replay(&app, &envelope).await;
    }
    let task = firings[0]["task_id"].as_str().unwrap().to_owned();
    eventually("the task done", Duration::from_secs(20), || async {
        get_json(&app, &token, &format!("/api/tasks/{task}")).await["state"] == "done"
    })
    .await;
    // Give the replayed events time to go through the engine and the executor.
    engine_idle(&app).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let created = |kind: &str| {
        hubspot
            .state
            .lock()
            .unwrap()
            .created
            .iter()
            .filter(|(t, _, _)| t == kind)
            .count()
    };
    assert_eq!(created("contacts"), 1);
    assert_eq!(created("notes"), 1);
    let firings = get_json(&app, &token, &format!("/api/rules/{rule_id}/firings")).await;
    assert_eq!(firings["firings"].as_array().unwrap().len(), 1);
    // The audit tells why: the rule, the task, both steps.
    let audit = get_json(&app, &token, &format!("/api/audit?rule={rule_id}")).await;
    let tools: Vec<&str> = audit["invocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["tool"].as_str().unwrap())
        .collect();
    assert_eq!(tools.len(), 2, "{audit}");
    assert!(tools.contains(&"create_contact") && tools.contains(&"create_note"));
    let detail = get_json(&app, &token, &format!("/api/tasks/{task}")).await;
    assert_eq!(detail["origin"], "rule");
    assert_eq!(detail["invocations"].as_array().unwrap().len(), 2);
    assert_eq!(
        detail["context"]["event"]["from_email"],
        "sara.lee@client.example"
    );
}

/// The envelope of a stored event, read back from the EVENTS stream.
async fn stored_event(app: &TestApp, user: UserId, id: &str) -> Envelope {
    all_events(app, user)
        .await
        .into_iter()
        .find(|e| e.id.to_string() == id)
        .expect("the event is in the stream")
}

async fn all_events(app: &TestApp, user: UserId) -> Vec<Envelope> {
    let (events, _) = actions::rules::past_events(&app.bus, user, None, None, 10_000)
        .await
        .unwrap();
    events
}

#[tokio::test]
async fn one_users_rules_never_fire_on_another_users_events() {
    let hubspot = FakeHubSpot::start().await;
    let app = rules_app(None, Some(&hubspot), None).await;
    let (alice, alice_token) = app.user("alice@harborwealth.example").await;
    let (bob, _) = app.user("bob@harborwealth.example").await;
    connect_hubspot(&app, &hubspot, alice).await;
    let welcome = rule(
        &app,
        &alice_token,
        "when hubspot.contact.created then create_task type=welcome_email priority=high contact={{event.id}}",
        true,
    )
    .await;
    // Bob's new contact: Alice's rule never sees it.
    publish(
        &app,
        bob,
        "hubspot",
        "contact.created",
        "contact:7001",
        json!({"object_type": "contacts", "id": "7001", "email": "x@client.example"}),
    )
    .await;
    // Alice's: her rule creates the welcome task.
    publish(
        &app,
        alice,
        "hubspot",
        "contact.created",
        "contact:7002",
        json!({"object_type": "contacts", "id": "7002", "email": "y@client.example"}),
    )
    .await;
    eventually("Alice's welcome task", Duration::from_secs(20), || async {
        hubspot
            .state
            .lock()
            .unwrap()
            .created
            .iter()
            .any(|(t, _, _)| t == "tasks")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tasks: Vec<Value> = hubspot
        .state
        .lock()
        .unwrap()
        .created
        .iter()
        .filter(|(t, _, _)| t == "tasks")
        .map(|(_, _, body)| body.clone())
        .collect();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["properties"]["hs_task_subject"], "Welcome email");
    assert_eq!(tasks[0]["properties"]["hs_task_priority"], "HIGH");
    assert_eq!(tasks[0]["associations"][0]["to"]["id"], "7002");
    assert_eq!(
        count(
            &app,
            &format!("SELECT count(*) FROM rule_firings WHERE user_id = '{bob}'")
        )
        .await,
        0
    );
    let firings = get_json(&app, &alice_token, &format!("/api/rules/{welcome}/firings")).await;
    assert_eq!(firings["firings"].as_array().unwrap().len(), 1);
    assert_eq!(firings["firings"][0]["event"]["id"], "7002");
}

#[tokio::test]
async fn a_chain_of_rules_that_would_loop_stops_at_the_bound() {
    let hubspot = FakeHubSpot::start().await;
    let app = rules_app(None, Some(&hubspot), None).await;
    let (user, token) = app.user(EMAIL).await;
    connect_hubspot(&app, &hubspot, user).await;
    hubspot.state.lock().unwrap().put(
        "contacts",
        "9100",
        1,
        json!({"email": "loop@client.example", "jobtitle": "0"}),
    );
    // Each update changes the contact, whose update fires the rule again.
    let looping = rule(
        &app,
        &token,
        "when hubspot.contact.updated then update_contact contact={{event.id}} jobtitle={{event.entity_id}}-{{event.at}}",
        true,
    )
    .await;
    let bound = app.config.rules_max_chain_depth as usize;
    updates_until_the_bound(&app, user, looping).await;
    let firings = get_json(&app, &token, &format!("/api/rules/{looping}/firings")).await;
    let firings = firings["firings"].as_array().unwrap();
    let stopped: Vec<&Value> = firings
        .iter()
        .filter(|f| f["status"] == "chain_stopped")
        .collect();
    assert_eq!(stopped.len(), 1, "{firings:?}");
    assert_eq!(stopped[0]["depth"], bound);
    assert_eq!(stopped[0]["detail"]["chain"]["bound"], bound);
    assert!(stopped[0]["task_id"].is_null());
    // Every firing below the bound acted once; the one at the bound did not.
    assert_eq!(hubspot.state.lock().unwrap().updated.len(), bound);
}

#[tokio::test]
async fn a_backtest_lists_what_would_have_fired_and_touches_nothing() {
    let hubspot = FakeHubSpot::start().await;
    let app = rules_app(None, Some(&hubspot), None).await;
    let (user, token) = app.user(EMAIL).await;
    connect_hubspot(&app, &hubspot, user).await;
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    publish(
        &app,
        user,
        "gmail",
        "email.received",
        "p-1",
        json!({"from": "Ann <ann@client.example>", "subject": "Tax question"}),
    )
    .await;
    publish(
        &app,
        user,
        "gmail",
        "email.received",
        "p-2",
        json!({"from": "Bo <bo@client.example>", "subject": "Lunch"}),
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
    // Another user's event is never read.
    let (other, _) = app.user("other@harborwealth.example").await;
    publish(
        &app,
        other,
        "gmail",
        "email.received",
        "p-9",
        json!({"from": "Cy <cy@client.example>", "subject": "Tax"}),
    )
    .await;
    // The engine has seen them before the rule below exists.
    engine_idle(&app).await;
    let id = rule(
        &app,
        &token,
        "when gmail.email.received if subject contains \"tax\" then create_contact email={{event.from_email}}; notify text=\"{{event.subject}}\"",
        true,
    )
    .await;
    let r = app
        .http
        .post(format!("{}/api/rules/{id}/backtest", app.url))
        .bearer_auth(&token)
        .json(&json!({"from": before}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let result: Value = r.json().await.unwrap();
    assert_eq!(result["events_read"], 3, "{result}");
    assert_eq!(result["matched"], 1);
    let fired = &result["would_fire"][0];
    assert_eq!(fired["event_type"], "gmail.email.received");
    assert_eq!(fired["tier"], 1);
    assert_eq!(fired["steps"][0], "create_contact email=ann@client.example");
    assert_eq!(fired["steps"][1], "notify text=\"Tax question\"");
    // A range after everything reads nothing; a reversed range is refused.
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    let r = app
        .http
        .post(format!("{}/api/rules/{id}/backtest", app.url))
        .bearer_auth(&token)
        .json(&json!({"from": later, "to": before}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    // The operator's view: the same backtest and the rule listed with its user.
    let stored = db::rules::get(&app.db, user, id).await.unwrap().unwrap();
    let compiled = actions::rules::stored(&stored).unwrap();
    let report = ctl::backtest_report(
        &actions::rules::backtest(&app.db, &app.bus, user, &compiled, Some(before), None, 100)
            .await
            .unwrap(),
    );
    assert!(report.starts_with("3 events read, 1 matched\n"), "{report}");
    assert!(
        report.contains("gmail.email.received  tier 1\n"),
        "{report}"
    );
    assert!(
        report.contains("    create_contact email=ann@client.example\n"),
        "{report}"
    );
    let table = ctl::rules_table(&db::rules::all(&app.db, Some(user)).await.unwrap());
    assert_eq!(table.lines().count(), 2, "{table}");
    assert!(
        table.contains(&format!(
            "{user}  {id}  structured   yes    yes   when gmail.email.received"
        )),
        "{table}"
    );
    // Nothing was executed or recorded.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(hubspot.state.lock().unwrap().created.is_empty());
    for table in ["rule_firings", "tasks", "tool_invocations", "notifications"] {
        assert_eq!(
            count(&app, &format!("SELECT count(*) FROM {table}")).await,
            0,
            "{table}"
        );
    }
}

#[tokio::test]
async fn an_instruction_is_compiled_to_a_trigger_and_only_matching_events_reach_the_model() {
    let hubspot = FakeHubSpot::start().await;
    // Compiling, then tier 2: the model reads the event and proposes a contact.
    let fake = FakeModel::responding(|request| {
        let system = request["messages"][0]["content"]
            .as_str()
            .unwrap_or_default();
        if system.contains("compile") {
            return Reply::text(
                "{\"trigger\": \"when gmail.email.received if not contact_exists(from)\"}",
                200,
            );
        }
        let last = last_message(request);
        if last["role"] == "tool" && last["tool_call_id"] == "event" {
            return Reply::tool(
                "create_contact",
                json!({"email": "new.client@client.example", "firstname": "New"}),
            );
        }
        Reply::text("Proposed a contact for the sender.", 50)
    })
    .await;
    let app = rules_app(Some(&fake), Some(&hubspot), None).await;
    let (user, token) = app.user(EMAIL).await;
    connect_hubspot(&app, &hubspot, user).await;
    hubspot.state.lock().unwrap().put(
        "contacts",
        "501",
        1,
        json!({"email": "known@client.example"}),
    );
    let known = json!({"documents": [{
        "source": "hubspot", "kind": "contact", "external_id": "contact:501", "title": "Known Client",
        "body": "Email: known@client.example",
        "metadata": {"object_type": "contacts", "id": "501", "properties": {"email": "known@client.example"}}
    }]});
    assert_eq!(app.post_documents(&token, &known).await.status(), 202);
    eventually(
        "the known contact stored",
        Duration::from_secs(20),
        || async {
            count(
                &app,
                &format!(
                    "SELECT count(*) FROM documents WHERE user_id = '{user}' AND kind = 'contact'"
                ),
            )
            .await
                == 1
        },
    )
    .await;

    let r = post_rule(
        &app,
        &token,
        json!({"text": "When someone emails me who is not in HubSpot, create a contact for them"}),
    )
    .await;
    let status = r.status();
    let created: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["kind"], "instruction");
    assert_eq!(
        created["compiled"]["trigger"],
        "when gmail.email.received if not contact_exists(from)"
    );
    let id = created["id"].as_str().unwrap().to_owned();
    let compile_calls = fake.calls();

    // Tier 1 decides these: a known sender, and an event of another type.
    publish(
        &app,
        user,
        "gmail",
        "email.received",
        "k-1",
        json!({"from": "Known <known@client.example>", "from_verified": true, "subject": "Hi"}),
    )
    .await;
    publish(
        &app,
        user,
        "calendar",
        "calendar.event.created",
        "e-1",
        json!({"title": "Review"}),
    )
    .await;
    // Tier 2 for this one.
    publish(
        &app,
        user,
        "gmail",
        "email.received",
        "n-1",
        json!({"from": "New Client <new.client@client.example>", "from_verified": true, "subject": "Hello"}),
    )
    .await;
    eventually("the model decided", Duration::from_secs(30), || async {
        get_json(&app, &token, &format!("/api/rules/{id}/firings")).await["firings"][0]["status"]
            == "acted"
    })
    .await;
    let firing =
        get_json(&app, &token, &format!("/api/rules/{id}/firings")).await["firings"][0].clone();
    assert_eq!(firing["tier"], 2);
    // The decision: which model, what it cost, what it proposed.
    let decision = &firing["detail"]["decision"];
    assert_eq!(decision["model"], "fake-model");
    assert!(
        decision["usage"]["input_tokens"].as_u64().unwrap() > 0,
        "{decision}"
    );
    assert_eq!(decision["writes"][0]["tool"], "create_contact");
    assert_eq!(firing["event"]["from_email"], "new.client@client.example");
    assert_eq!(
        get_json(&app, &token, &format!("/api/rules/{id}/firings")).await["firings"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // One model call for the one event that passed tier 1 (its write then waits).
    assert_eq!(fake.calls(), compile_calls + 1);
    let turn_request = &fake.received()[compile_calls].body;
    // The instruction is the user's words; the event reaches the model as a tool result.
    let messages = turn_request["messages"].as_array().unwrap();
    let user_message = messages.iter().find(|m| m["role"] == "user").unwrap();
    assert!(
        user_message["content"]
            .as_str()
            .unwrap()
            .contains("not in HubSpot")
    );
    assert!(
        !user_message["content"]
            .as_str()
            .unwrap()
            .contains("new.client@client.example")
    );
    // A rule's write into the CRM waits for approval unless the user allowed it to act alone.
    let approvals = get_json(&app, &token, "/api/approvals").await;
    let approval = &approvals["invocations"][0];
    assert_eq!(approval["tool"], "create_contact");
    assert_eq!(approval["rule_id"], id.as_str());
    assert!(hubspot.state.lock().unwrap().created.is_empty());
    let r = app
        .http
        .post(format!(
            "{}/api/approvals/{}/approve",
            app.url,
            approval["id"].as_str().unwrap()
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    eventually(
        "the approved contact created",
        Duration::from_secs(20),
        || async {
            hubspot
                .state
                .lock()
                .unwrap()
                .created
                .iter()
                .any(|(t, _, b)| {
                    t == "contacts" && b["properties"]["email"] == "new.client@client.example"
                })
        },
    )
    .await;
}

/// Announces contact 9100's update once per level of the chain bound, and once more, the way
/// ingest does when HubSpot reports each change, waiting for each round's firing and task.
pub(crate) async fn updates_until_the_bound(app: &TestApp, user: UserId, looping: Uuid) {
    for round in 0..=app.config.rules_max_chain_depth as usize {
        publish(
            app,
            user,
            "hubspot",
            "contact.updated",
            "contact:9100",
            json!({"object_type": "contacts", "id": "9100"}),
        )
        .await;
        eventually("the round handled", Duration::from_secs(30), || async {
            count(
                app,
                &format!("SELECT count(*) FROM rule_firings WHERE rule_id = '{looping}'"),
            )
            .await
                > round as i64
                && count(
                    app,
                    &format!(
                        "SELECT count(*) FROM tasks WHERE rule_id = '{looping}' AND state <> 'done'"
                    ),
                )
                .await
                    == 0
        })
        .await;
    }
}

pub(crate) async fn approve(app: &TestApp, token: &str, id: &str) {
    let r = app
        .http
        .post(format!("{}/api/approvals/{id}/approve", app.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
}

pub(crate) async fn approvals(app: &TestApp, token: &str) -> Vec<Value> {
    get_json(app, token, "/api/approvals").await["invocations"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn a_rule_never_sends_email_on_its_own_and_sends_once_when_approved() {
    let google = FakeGoogle::start(EMAIL).await;
    let app = rules_app(None, None, Some(&google)).await;
    let (user, token) = app.user(EMAIL).await;
    connect_google(&app, &google, user).await;
    let agenda = rule(
        &app,
        &token,
        "when calendar.event.created if organizer != \"dana@harborwealth.example\" \
         then send_email to={{event.organizer}} subject=\"Agenda: {{event.title}}\" \
         body=\"Hello, here is the agenda we will follow: goals, portfolio review, next steps.\"",
        // Even a rule allowed to act alone never emails people without asking.
        true,
    )
    .await;
    let booked = publish(
        &app,
        user,
        "calendar",
        "calendar.event.created",
        "ev-1",
        json!({"title": "Annual review", "organizer": "sara@client.example", "attendees": ["sara@client.example", EMAIL]}),
    )
    .await;
    // Booked by Dana herself: the condition says no.
    publish(
        &app,
        user,
        "calendar",
        "calendar.event.created",
        "ev-2",
        json!({"title": "Desk time", "organizer": EMAIL}),
    )
    .await;
    eventually(
        "the email waits for approval",
        Duration::from_secs(20),
        || async { !approvals(&app, &token).await.is_empty() },
    )
    .await;
    engine_idle(&app).await;
    let waiting = approvals(&app, &token).await;
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0]["tool"], "send_email");
    assert_eq!(waiting[0]["rule_id"], agenda.to_string());
    assert_eq!(
        waiting[0]["arguments"]["to"],
        json!(["sara@client.example"])
    );
    assert_eq!(waiting[0]["arguments"]["subject"], "Agenda: Annual review");
    assert!(google.state.lock().unwrap().sent.is_empty());
    approve(&app, &token, waiting[0]["id"].as_str().unwrap()).await;
    eventually("the agenda sent", Duration::from_secs(20), || async {
        !google.state.lock().unwrap().sent.is_empty()
    })
    .await;
    let task = waiting[0]["task_id"].as_str().unwrap().to_owned();
    eventually("the task done", Duration::from_secs(20), || async {
        get_json(&app, &token, &format!("/api/tasks/{task}")).await["state"] == "done"
    })
    .await;
    // The event replayed: nothing new to approve, nothing sent again.
    replay(&app, &booked).await;
    engine_idle(&app).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(google.state.lock().unwrap().sent.len(), 1);
    assert!(approvals(&app, &token).await.is_empty());
}

#[tokio::test]
async fn an_advisor_says_it_in_chat_and_the_assistant_keeps_it_as_a_rule() {
    const SAID: &str = "When someone emails me who is not in HubSpot, create a contact for them with a note about the email";
    let fake = FakeModel::responding(|request| {
        let system = request["messages"][0]["content"].as_str().unwrap_or_default();
        if system.contains("compile") {
            return Reply::text(
                "Here it is: {\"trigger\": \"when gmail.email.received if not contact_exists(from)\"}",
                200,
            );
        }
        let last = last_message(request);
        if last["role"] == "user" {
            return Reply::tool("create_rule", json!({"text": SAID}));
        }
        Reply::text("From now on I will do that.", 50)
    })
    .await;
    let app = rules_app(Some(&fake), None, None).await;
    let (_, token) = app.user(EMAIL).await;
    let r = crate::chat::message(&app, &token, json!({"message": SAID}), None).await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let rules = get_json(&app, &token, "/api/rules").await;
    let rules = rules["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0]["kind"], "instruction");
    assert_eq!(rules[0]["text"], SAID);
    assert_eq!(
        rules[0]["compiled"]["trigger"],
        "when gmail.email.received if not contact_exists(from)"
    );
    // The model was told how the rule was understood, to tell the user.
    let told = fake
        .received()
        .into_iter()
        .map(|r| r.body)
        .find(|b| last_message(b)["role"] == "tool")
        .expect("the tool result reached the model");
    let content = last_message(&told)["content"].as_str().unwrap().to_owned();
    assert!(content.contains("contact_exists(from)"), "{content}");
}
