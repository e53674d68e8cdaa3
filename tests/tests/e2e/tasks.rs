//! Tasks that wait, on the real stack: a rule's task parked until an event or its deadline,
//! a task started in chat that waits for the reply to the email it sent, and a task step that
//! happens once although the executor dies after calling the provider.

use crate::assistant_writes::{EMAIL, connect_google, connect_hubspot};
use crate::crm_fakes::FakeHubSpot;
use crate::fakes::{FakeGoogle, Mail};
use crate::rules::{
    approvals, approve, count, get_json, gmail_synced, publish, rule, rules_app, sync_gmail,
};
use assistant_tests::eventually;
use assistant_tests::fake_model::{FakeModel, Reply, last_message};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test]
async fn a_wait_times_out_when_no_event_comes() {
    let app = rules_app(None, None, None).await;
    let (user, token) = app.user(EMAIL).await;
    let waiting = rule(
        &app,
        &token,
        "when gmail.email.received if subject contains \"proposal\" then log text=\"proposal from {{event.from_email}}\"; \
         wait for gmail.email.received if subject contains \"signed\" within 2s \
         else notify text=\"No signed copy yet after {{event.subject}}\"",
        false,
    )
    .await;
    publish(
        &app,
        user,
        "gmail",
        "email.received",
        "m-1",
        json!({"from": "Sara <sara@client.example>", "subject": "Our proposal"}),
    )
    .await;
    eventually("the task waits", Duration::from_secs(20), || async {
        !get_json(&app, &token, "/api/tasks?state=waiting").await["tasks"]
            .as_array()
            .unwrap()
            .is_empty()
    })
    .await;
    let task = get_json(&app, &token, "/api/tasks?state=waiting").await["tasks"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let detail = get_json(&app, &token, &format!("/api/tasks/{task}")).await;
    assert_eq!(detail["rule_id"], waiting.to_string());
    assert_eq!(detail["waits"][0]["state"], "waiting");
    assert!(detail["waits"][0]["until"].is_string());
    assert_eq!(
        detail["waits"][0]["waits_for"],
        "wait for gmail.email.received if subject contains \"signed\" within 2s else notify text=\"No signed copy yet after {{event.subject}}\""
    );
    // Another email that is not the signed copy does not end the wait.
    publish(
        &app,
        user,
        "gmail",
        "email.received",
        "m-2",
        json!({"from": "Sara <sara@client.example>", "subject": "Lunch?"}),
    )
    .await;
    eventually("the wait timed out", Duration::from_secs(20), || async {
        get_json(&app, &token, &format!("/api/tasks/{task}")).await["state"] == "timed_out"
    })
    .await;
    let notes = get_json(&app, &token, "/api/notifications").await;
    let notes = notes["notifications"].as_array().unwrap();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0]["text"], "No signed copy yet after Our proposal");
    assert_eq!(notes[0]["task_id"], task.as_str());
    let detail = get_json(&app, &token, &format!("/api/tasks/{task}")).await;
    assert_eq!(detail["waits"][0]["state"], "timed_out");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("rule_firings_total{tier=\"1\",status=\"fired\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tasks{state=\"timed_out\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("task_wait_timeouts_total 1"), "{metrics}");
    assert!(metrics.contains("rules_active 1"), "{metrics}");
    // A signed copy now is too late: nothing more happens.
    publish(
        &app,
        user,
        "gmail",
        "email.received",
        "m-3",
        json!({"from": "Sara <sara@client.example>", "subject": "signed"}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        get_json(&app, &token, "/api/notifications").await["notifications"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_task_from_chat_waits_for_the_reply_and_resumes_once_even_when_the_reply_comes_first() {
    let google = FakeGoogle::start(EMAIL).await;
    let fake = FakeModel::responding(|request| {
        let last = last_message(request);
        match (last["role"].as_str(), last["tool_call_id"].as_str()) {
            (Some("user"), _) => Reply::tool(
                "start_task",
                json!({
                    "title": "Meeting with Sara",
                    "steps": "send_email to=sara@client.example subject=\"When are you free?\" body=\"Hi Sara, when could we meet next week?\"; \
                              wait for reply within 3d else notify text=\"Sara has not replied about the meeting\"; \
                              ask_assistant text=\"Book the meeting at the time Sara proposes and send her a confirmation\""
                }),
            ),
            // The task's step: the reply is in view; book the time it proposes.
            (Some("tool"), Some("event")) => Reply::tool(
                "create_calendar_event",
                json!({"summary": "Meeting with Sara", "start": "2026-12-03T15:00:00Z", "end": "2026-12-03T16:00:00Z", "attendees": ["sara@client.example"]}),
            ),
            _ => Reply::text("I emailed Sara once you approve, and I will book the meeting when she replies.", 40),
        }
    })
    .await;
    let app = rules_app(Some(&fake), None, Some(&google)).await;
    let (user, token) = app.user(EMAIL).await;
    connect_google(&app, &google, user).await;
    sync_gmail(&app, &token).await;
    gmail_synced(&app, user, 0).await;

    let r = crate::chat::message(
        &app,
        &token,
        json!({"message": "Email Sara (sara@client.example) to ask when she is free; when she replies, book the meeting and send her a confirmation; if she has not replied in 3 days, remind me"}),
        None,
    )
    .await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    // The approval is recorded during the turn; the task waits once the turn has ended.
    eventually(
        "the email waits for approval and the task with it",
        Duration::from_secs(20),
        || async {
            approvals(&app, &token)
                .await
                .iter()
                .any(|a| a["tool"] == "send_email")
                && get_json(&app, &token, "/api/tasks").await["tasks"][0]["state"]
                    == "waiting_approval"
        },
    )
    .await;
    let tasks = get_json(&app, &token, "/api/tasks").await;
    let task = tasks["tasks"][0].clone();
    assert_eq!(task["origin"], "chat");
    assert_eq!(task["state"], "waiting_approval");
    assert_eq!(task["steps"].as_array().unwrap().len(), 3);
    let task_id = task["id"].as_str().unwrap().to_owned();
    // The wait is registered with the email, before it is sent.
    let detail = get_json(&app, &token, &format!("/api/tasks/{task_id}")).await;
    assert_eq!(detail["waits"][0]["state"], "pending");
    let message_id = detail["waits"][0]["expect"]["message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message_id.ends_with("@assistant.invalid>"));

    // Gmail is slow to confirm the send; Sara answers before it does.
    google.state.lock().unwrap().write_delay = Duration::from_secs(4);
    let send = approvals(&app, &token).await[0].clone();
    assert_eq!(send["task_id"], task_id.as_str());
    approve(&app, &token, send["id"].as_str().unwrap()).await;
    eventually(
        "the email reached Gmail",
        Duration::from_secs(20),
        || async { !google.state.lock().unwrap().sent.is_empty() },
    )
    .await;
    let (sent_id, raw) = google.state.lock().unwrap().sent[0].clone();
    assert!(raw.contains(&format!("Message-ID: {message_id}")));
    let thread = format!("thread-{sent_id}");
    google.state.lock().unwrap().deliver_mail(&Mail {
        id: "reply-1",
        thread: &thread,
        from: "Sara <sara@client.example>",
        subject: "Re: When are you free?",
        body: "Thursday at 3pm works for me.",
        labels: &["INBOX"],
        headers: &[("In-Reply-To", &message_id), ("References", &message_id)],
    });
    sync_gmail(&app, &token).await;

    eventually("the meeting proposed", Duration::from_secs(40), || async {
        approvals(&app, &token)
            .await
            .iter()
            .any(|a| a["tool"] == "create_calendar_event")
    })
    .await;
    eventually("the task done", Duration::from_secs(20), || async {
        get_json(&app, &token, &format!("/api/tasks/{task_id}")).await["state"] == "done"
    })
    .await;
    let detail = get_json(&app, &token, &format!("/api/tasks/{task_id}")).await;
    assert_eq!(detail["waits"][0]["state"], "matched");
    assert_eq!(
        detail["context"]["reply"]["from_email"],
        "sara@client.example"
    );
    assert_eq!(
        detail["context"]["reply"]["subject"],
        "Re: When are you free?"
    );
    // The reply came while the send was still unconfirmed: it ended the wait before the task
    // reached it.
    let sent_at = detail["invocations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["tool"] == "send_email")
        .unwrap()["finished_at"]
        .as_str()
        .unwrap()
        .parse::<chrono::DateTime<chrono::Utc>>()
        .unwrap();
    let matched_at = detail["waits"][0]["resolved_at"]
        .as_str()
        .unwrap()
        .parse::<chrono::DateTime<chrono::Utc>>()
        .unwrap();
    assert!(matched_at < sent_at, "matched {matched_at}, sent {sent_at}");
    // The model saw the reply as data in the task's own turn, and proposed the meeting once.
    let turn_requests: Vec<Value> = fake
        .received()
        .into_iter()
        .map(|r| r.body)
        .filter(|b| last_message(b)["tool_call_id"] == "event")
        .collect();
    assert_eq!(turn_requests.len(), 1);
    let data = last_message(&turn_requests[0])["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        data.contains("Thursday at 3pm") || data.contains("Re: When are you free?"),
        "{data}"
    );
    let invites: Vec<Value> = approvals(&app, &token)
        .await
        .into_iter()
        .filter(|a| a["tool"] == "create_calendar_event")
        .collect();
    assert_eq!(invites.len(), 1);
    assert_eq!(invites[0]["task_id"], task_id.as_str());
    assert_eq!(google.state.lock().unwrap().sent.len(), 1);
    // Nothing to remind about: the reply came.
    assert_eq!(
        get_json(&app, &token, "/api/notifications").await["notifications"],
        json!([])
    );
}

#[tokio::test]
async fn a_rules_note_is_created_once_when_the_executor_dies_after_calling_hubspot() {
    let hubspot = FakeHubSpot::start().await;
    hubspot.state.lock().unwrap().create_delay = Duration::from_secs(3);
    let mut app = rules_app(None, Some(&hubspot), None).await;
    let (user, token) = app.user(EMAIL).await;
    connect_hubspot(&app, &hubspot, user).await;
    hubspot.state.lock().unwrap().put(
        "contacts",
        "301",
        1,
        json!({"email": "greg@client.example"}),
    );
    rule(
        &app,
        &token,
        "when gmail.email.received if from_email == \"greg@client.example\" then create_note contact={{event.from_email}} body=\"Greg wrote: {{event.subject}}\"",
        true,
    )
    .await;
    publish(
        &app,
        user,
        "gmail",
        "email.received",
        "g-1",
        json!({"from": "Greg <greg@client.example>", "from_verified": true, "subject": "Moving to Denver"}),
    )
    .await;
    eventually(
        "HubSpot received the note",
        Duration::from_secs(20),
        || async { !hubspot.state.lock().unwrap().created.is_empty() },
    )
    .await;
    // Dies while HubSpot is still answering: the note exists, the executor never learned so.
    app.kill("tool-executor").await;
    app.start("tool-executor").await;
    eventually("the task done", Duration::from_secs(30), || async {
        count(&app, "SELECT count(*) FROM tasks WHERE state = 'done'").await == 1
    })
    .await;
    let created = hubspot.state.lock().unwrap().created.clone();
    assert_eq!(created.len(), 1, "exactly one note: {created:#?}");
    assert!(
        created[0].2["properties"]["hs_note_body"]
            .as_str()
            .unwrap()
            .starts_with("Greg wrote: Moving to Denver")
    );
    assert_eq!(created[0].2["associations"][0]["to"]["id"], "301");
    // The second attempt looked for the note before creating it again.
    assert_eq!(
        count(
            &app,
            "SELECT attempts::bigint FROM tool_invocations WHERE tool = 'create_note'"
        )
        .await,
        2
    );
    let key: String = {
        let rows = app
            .db
            .query_all_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                "SELECT idempotency_key FROM tool_invocations",
            ))
            .await
            .unwrap();
        rows[0].try_get("", "idempotency_key").unwrap()
    };
    assert!(key.starts_with("rule:") && key.ends_with(":0"), "{key}");
}

#[tokio::test]
async fn a_task_whose_approval_expires_ends_and_its_write_never_runs() {
    let hubspot = FakeHubSpot::start().await;
    let app = rules_app(None, Some(&hubspot), None).await;
    let (user, token) = app.user(EMAIL).await;
    connect_hubspot(&app, &hubspot, user).await;
    rule(
        &app,
        &token,
        "when gmail.email.received then create_contact email={{event.from_email}}; notify text=\"added {{event.from_email}}\"",
        // Not allowed to act alone: the contact waits for the user.
        false,
    )
    .await;
    publish(
        &app,
        user,
        "gmail",
        "email.received",
        "x-1",
        json!({"from": "Vic <vic@client.example>", "subject": "Hi"}),
    )
    .await;
    eventually("the write waits", Duration::from_secs(20), || async {
        !approvals(&app, &token).await.is_empty()
    })
    .await;
    let waiting = approvals(&app, &token).await;
    assert!(
        waiting[0]["approval_reason"]
            .as_str()
            .unwrap()
            .contains("rule"),
        "{waiting:?}"
    );
    let task = waiting[0]["task_id"].as_str().unwrap().to_owned();
    // Nobody approves it in time.
    app.db
        .execute_unprepared("UPDATE tool_invocations SET expires_at = now() - interval '1 second'")
        .await
        .unwrap();
    eventually("the task ended", Duration::from_secs(20), || async {
        get_json(&app, &token, &format!("/api/tasks/{task}")).await["state"] == "failed"
    })
    .await;
    let detail = get_json(&app, &token, &format!("/api/tasks/{task}")).await;
    assert!(
        detail["error"]
            .as_str()
            .unwrap()
            .contains("not approved in time"),
        "{detail}"
    );
    assert_eq!(detail["invocations"][0]["status"], "expired");
    // Expired is final: approving now is refused, and nothing reached HubSpot.
    let r = app
        .http
        .post(format!(
            "{}/api/approvals/{}/approve",
            app.url,
            waiting[0]["id"].as_str().unwrap()
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert!(hubspot.state.lock().unwrap().created.is_empty());
    assert_eq!(
        count(&app, "SELECT count(*) FROM notifications").await,
        0,
        "the step after the expired one never ran"
    );
}
