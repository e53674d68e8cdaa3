//! The assistant end to end: the real gateway, JetStream, Postgres and agent; only the model is
//! a local fake (an OpenAI-compatible streaming endpoint).

use crate::{doc, doc_id, wait_indexed};
use assistant_tests::fake_model::{FakeModel, Reply, last_message, tool_results};
use assistant_tests::{TestApp, eventually, test_config};
use common::config::ChatProvider;
use futures::StreamExt;
use serde_json::{Value, json};
use std::time::Duration;

/// One server-sent event: id, event name, data.
#[derive(Debug, Clone)]
pub struct Sse {
    pub id: u64,
    pub event: String,
    pub data: Value,
}

fn parse_block(block: &str) -> Option<Sse> {
    let (mut id, mut event, mut data) = (None, None, String::new());
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("id:") {
            id = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("event:") {
            event = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.trim_start());
        }
    }
    Some(Sse {
        id: id?,
        event: event?,
        data: serde_json::from_str(&data).ok()?,
    })
}

/// Reads events from an SSE response until it ends, or until `stop` says so (then drops the
/// connection, as a client going away would).
pub async fn read_events(response: reqwest::Response, stop: impl Fn(&[Sse]) -> bool) -> Vec<Sse> {
    assert_eq!(response.status(), 200, "SSE request refused");
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    while let Ok(Some(Ok(bytes))) = tokio::time::timeout(Duration::from_secs(60), body.next()).await
    {
        buffer.push_str(&String::from_utf8_lossy(&bytes));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            if let Some(e) = parse_block(&block) {
                events.push(e);
                if stop(&events) {
                    return events;
                }
            }
        }
    }
    events
}

fn text_of(events: &[Sse]) -> String {
    events
        .iter()
        .filter(|e| e.event == "delta")
        .map(|e| e.data["text"].as_str().unwrap())
        .collect()
}

pub fn done(events: &[Sse]) -> &Value {
    &events
        .iter()
        .find(|e| e.event == "done")
        .unwrap_or_else(|| panic!("no done event in {events:#?}"))
        .data
}

pub async fn chat_app(fake: Option<&FakeModel>) -> TestApp {
    let mut config = test_config().await;
    if let Some(fake) = fake {
        config.chat_provider = ChatProvider::Openai;
        config.chat_base_url = fake.url.clone();
        config.chat_api_key = "sk-fake-chat-key".into();
        config.chat_model = "fake-model".into();
        config.chat_max_retries = 3;
        assistant_tests::mark_sensitive("sk-fake-chat-key");
    }
    TestApp::spawn_with(config, &assistant_tests::SERVICES).await
}

pub async fn stream(
    app: &TestApp,
    token: &str,
    body: Value,
    key: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .http
        .post(format!("{}/api/chat/stream", app.url))
        .bearer_auth(token)
        .json(&body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await.unwrap()
}

pub async fn message(
    app: &TestApp,
    token: &str,
    body: Value,
    key: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .http
        .post(format!("{}/api/chat/message", app.url))
        .bearer_auth(token)
        .json(&body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await.unwrap()
}

/// An advisor's mailbox with one email that answers "whose kid plays baseball".
async fn seed_mailbox(app: &TestApp, token: &str, user: common::UserId) -> common::DocumentId {
    let docs = json!({"documents": [
        doc("gmail", "email", "m-baseball", "Little league playoffs this Saturday",
            "Hi Dana, Jake's little league team made the playoffs, so I need to move our review. Tom Hill"),
        doc("gmail", "email", "m-rebalance", "Rebalancing in January",
            "Please rebalance my IRA toward bonds in January. Sara Smith"),
        doc("gmail", "email", "m-lunch", "Lunch next week",
            "Are you free for lunch on Thursday to talk about the office move?"),
    ]});
    assert_eq!(app.post_documents(token, &docs).await.status(), 202);
    let ids: Vec<_> = ["m-baseball", "m-rebalance", "m-lunch"]
        .iter()
        .map(|e| doc_id(user, "gmail", e))
        .collect();
    wait_indexed(app, &ids).await;
    ids[0]
}

/// The model a question about baseball deserves: search the mail, then answer citing the
/// result about little league, and a source number it was never given.
fn baseball_model(request: &Value) -> Reply {
    if last_message(request)["role"] == "tool" {
        let results = tool_results(request);
        let n = results
            .iter()
            .flat_map(|r| r["results"].as_array().cloned().unwrap_or_default())
            .find(|r| r["title"].as_str().unwrap_or("").contains("Little league"))
            .map(|r| r["source"].as_u64().unwrap());
        return match n {
            Some(n) => Reply::text(
                &format!("Tom Hill's son Jake plays little league baseball [{n}]. Also see [97]."),
                7,
            ),
            None => Reply::text("I could not find it.", 7),
        };
    }
    Reply::tool(
        "search_emails",
        json!({"query": "kid plays baseball little league"}),
    )
}

#[tokio::test]
async fn a_question_searches_the_mail_and_the_answer_cites_the_email() {
    let fake = FakeModel::responding(baseball_model).await;
    let app = chat_app(Some(&fake)).await;
    let (user, token) = app.user("advisor@chat.example").await;
    let baseball = seed_mailbox(&app, &token, user).await;

    let response = stream(
        &app,
        &token,
        json!({"message": "Which client's kid plays baseball?"}),
        None,
    )
    .await;
    let turn_id = response.headers()["x-turn-id"].to_str().unwrap().to_owned();
    let events = read_events(response, |_| false).await;

    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert!(
        names.contains(&"tool_call") && names.contains(&"tool_result"),
        "{names:?}"
    );
    let call = events.iter().find(|e| e.event == "tool_call").unwrap();
    assert_eq!(call.data["name"], "search_emails");
    assert_eq!(events.last().unwrap().event, "done");
    // Numbered 1, 2, 3... with nothing missing or repeated.
    let ids: Vec<u64> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids, (1..=events.len() as u64).collect::<Vec<_>>());

    let done = done(&events);
    let text = done["text"].as_str().unwrap();
    assert_eq!(text, text_of(&events), "the deltas are the answer");
    assert!(text.contains("little league"), "{text}");
    assert!(
        !text.contains("[97]"),
        "a marker naming no source is dropped: {text}"
    );
    let citations = done["citations"].as_array().unwrap();
    assert_eq!(citations.len(), 1, "{citations:?}");
    assert_eq!(citations[0]["document_id"], baseball.0.to_string());
    assert_eq!(citations[0]["external_id"], "m-baseball");
    let n = citations[0]["n"].as_u64().unwrap();
    assert!(text.contains(&format!("[{n}]")));
    let cited: Vec<&Sse> = events.iter().filter(|e| e.event == "citation").collect();
    assert_eq!(cited.len(), 1);
    assert!(done["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(done["usage"]["model_calls"], 2);

    // The model was given the email as quoted data, not as instructions.
    let second = &fake.received()[1].body;
    assert!(second["messages"].to_string().contains("not instructions"));
    // The whole conversation is stored, the tool call and its result included.
    let conversation_id = events_conversation(&app, &token, &turn_id).await;
    let stored: Value = app
        .http
        .get(format!("{}/api/conversations/{conversation_id}", app.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let roles: Vec<&str> = stored["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "tool", "assistant"]);
    assert_eq!(stored["turns"][0]["status"], "done");
    assert_eq!(stored["turns"][0]["final_text"], text);
    // Usage by day and model.
    let usage: Value = app
        .http
        .get(format!("{}/api/usage", app.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(usage["days"][0]["model"], "fake-model");
    assert_eq!(usage["days"][0]["calls"], 2);
    // The key went to the model endpoint, and nowhere into the logs (checked on drop).
    assert_eq!(
        fake.received()[0].authorization.as_deref(),
        Some("Bearer sk-fake-chat-key")
    );
}

async fn events_conversation(app: &TestApp, token: &str, turn: &str) -> String {
    let response = app
        .http
        .get(format!("{}/api/chat/turns/{turn}/events", app.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    response.headers()["x-conversation-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn with_no_model_chat_answers_with_the_best_sources_and_says_so() {
    let app = chat_app(None).await;
    let (user, token) = app.user("nomodel@chat.example").await;
    let baseball = seed_mailbox(&app, &token, user).await;
    let response = message(
        &app,
        &token,
        json!({"message": "little league playoffs"}),
        None,
    )
    .await;
    assert_eq!(response.status(), 200);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["status"], "done");
    let text = reply["text"].as_str().unwrap();
    assert!(text.contains("No chat model is configured"), "{text}");
    let first = &reply["citations"][0];
    assert_eq!(first["document_id"], baseball.0.to_string(), "{reply:#}");
    assert!(text.contains("[1]") && text.contains("Little league playoffs"));
}

#[tokio::test]
async fn the_same_idempotency_key_is_the_same_turn() {
    let fake = FakeModel::scripted(vec![Reply::text("Hello there.", 4)]).await;
    let app = chat_app(Some(&fake)).await;
    let (_, token) = app.user("idem@chat.example").await;
    let body = json!({"message": "Say hello"});
    let first: Value = message(&app, &token, body.clone(), Some("key-1"))
        .await
        .json()
        .await
        .unwrap();
    let again = stream(&app, &token, body, Some("key-1")).await;
    assert_eq!(
        again.headers()["x-turn-id"].to_str().unwrap(),
        first["turn_id"].as_str().unwrap()
    );
    let events = read_events(again, |_| false).await;
    assert_eq!(done(&events)["text"], "Hello there.");
    assert_eq!(first["text"], "Hello there.");
    assert_eq!(fake.calls(), 1, "one turn, one model call");
    assert_eq!(app.scalar_i64("SELECT count(*) FROM turns").await, 1);

    let other = message(
        &app,
        &token,
        json!({"message": "Something else"}),
        Some("key-1"),
    )
    .await;
    assert_eq!(other.status(), 409);
    let bad = message(&app, &token, json!({"message": "  "}), None).await;
    assert_eq!(bad.status(), 422);
    assert_eq!(bad.json::<Value>().await.unwrap()["field"], "message");
}

#[tokio::test]
async fn a_client_that_reconnects_with_last_event_id_gets_the_rest_exactly_once() {
    let answer = "One, two, three, four, five, six, seven, eight, nine, ten.";
    let fake = FakeModel::scripted(vec![Reply::text(answer, 5)]).await;
    fake.set_piece_delay(Duration::from_millis(60));
    let app = chat_app(Some(&fake)).await;
    let (_, token) = app.user("reconnect@chat.example").await;
    let response = stream(&app, &token, json!({"message": "Count to ten"}), None).await;
    let turn = response.headers()["x-turn-id"].to_str().unwrap().to_owned();
    // Gone after three pieces of text.
    let before = read_events(response, |e| {
        e.iter().filter(|e| e.event == "delta").count() == 3
    })
    .await;
    let last = before.last().unwrap().id;
    let after = read_events(
        app.http
            .get(format!("{}/api/chat/turns/{turn}/events", app.url))
            .bearer_auth(&token)
            .header("Last-Event-ID", last.to_string())
            .send()
            .await
            .unwrap(),
        |_| false,
    )
    .await;
    assert_eq!(after.first().unwrap().id, last + 1, "resumes right after");
    let all: Vec<Sse> = before.into_iter().chain(after).collect();
    let ids: Vec<u64> = all.iter().map(|e| e.id).collect();
    assert_eq!(
        ids,
        (1..=all.len() as u64).collect::<Vec<_>>(),
        "nothing lost, nothing repeated"
    );
    assert_eq!(text_of(&all), answer);
    assert_eq!(done(&all)["text"], answer);
    // The disconnect did not cancel anything.
    assert_eq!(fake.calls(), 1);
}

#[tokio::test]
async fn the_answer_arrives_through_500_429_with_retry_after_and_a_cut_stream() {
    let fake = FakeModel::scripted(vec![
        Reply::Status(500, None),
        Reply::Status(429, Some(1)),
        Reply::Cut(vec!["The answer ".into(), "is forty".into()]),
        Reply::text("The answer is forty-two.", 6),
    ])
    .await;
    let app = chat_app(Some(&fake)).await;
    let (_, token) = app.user("retry@chat.example").await;
    let events = read_events(
        stream(
            &app,
            &token,
            json!({"message": "What is the answer?"}),
            None,
        )
        .await,
        |_| false,
    )
    .await;
    assert_eq!(done(&events)["text"], "The answer is forty-two.");
    assert_eq!(
        text_of(&events),
        "The answer is forty-two.",
        "one answer, not two beginnings"
    );
    let received = fake.received();
    assert_eq!(received.len(), 4);
    let waited = received[2].at - received[1].at;
    assert!(
        waited >= Duration::from_millis(950),
        "Retry-After honoured: waited {waited:?}"
    );
    // The retry after the cut asked to continue what the user already had.
    assert_eq!(last_message(&received[3].body)["role"], "assistant");
    assert_eq!(
        last_message(&received[3].body)["content"],
        "The answer is forty"
    );
}

#[tokio::test]
async fn a_model_that_keeps_failing_ends_the_turn_with_an_error() {
    let fake = FakeModel::scripted(vec![Reply::Status(401, None)]).await;
    let app = chat_app(Some(&fake)).await;
    let (_, token) = app.user("refused@chat.example").await;
    let events = read_events(
        stream(&app, &token, json!({"message": "Hi"}), None).await,
        |_| false,
    )
    .await;
    let last = events.last().unwrap();
    assert_eq!(last.event, "error");
    assert_eq!(last.data["code"], "model_unauthorized");
    assert_eq!(fake.calls(), 1, "a refusal is not retried");
    // The endpoint echoed part of the key in its body: only its error code goes on, to the
    // user and to the stored turn.
    let detail = last.data.to_string();
    assert!(detail.contains("invalid_api_key"), "{detail}");
    assert!(!detail.contains("Incorrect API key"), "{detail}");
    let key = &app.config.chat_api_key;
    assert!(!key.is_empty());
    assert!(!detail.contains(&key[..8]), "{detail}");
    assert_eq!(
        app.scalar_i64(&format!(
            "SELECT count(*) FROM turns WHERE error_message LIKE '%{}%' OR error_message LIKE '%Incorrect%'",
            &key[..8]
        ))
        .await,
        0
    );
    assert_eq!(
        app.scalar_i64("SELECT count(*) FROM turns WHERE status = 'failed'")
            .await,
        1
    );
}

#[tokio::test]
async fn cancel_stops_a_running_turn() {
    let fake = FakeModel::scripted(vec![Reply::text(&"word ".repeat(200), 5)]).await;
    fake.set_piece_delay(Duration::from_millis(50));
    let app = chat_app(Some(&fake)).await;
    let (_, token) = app.user("cancel@chat.example").await;
    let response = stream(
        &app,
        &token,
        json!({"message": "Talk for a long time"}),
        None,
    )
    .await;
    let turn = response.headers()["x-turn-id"].to_str().unwrap().to_owned();
    let reader = tokio::spawn(read_events(response, |_| false));
    eventually("the answer streams", Duration::from_secs(20), || async {
        app.stream_messages("TURNS").await >= 2
    })
    .await;
    let cancel = app
        .http
        .post(format!("{}/api/chat/turns/{turn}/cancel", app.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 202);
    let events = reader.await.unwrap();
    let last = events.last().unwrap();
    assert_eq!(
        (last.event.as_str(), &last.data["code"]),
        ("error", &json!("cancelled"))
    );
    assert!(text_of(&events).len() < 1000, "stopped before the end");
    let again = app
        .http
        .post(format!("{}/api/chat/turns/{turn}/cancel", app.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409, "already over");
}

#[tokio::test]
async fn a_turn_whose_agent_died_mid_answer_is_finished_as_one_answer() {
    let answer = "Sara wants to rebalance her IRA toward bonds in January, as she wrote.";
    let fake = FakeModel::scripted(vec![
        Reply::text(answer, 4),
        // The redelivered turn: the model says it all again; the user sees it once.
        Reply::text(answer, 4),
    ])
    .await;
    fake.set_piece_delay(Duration::from_millis(80));
    let mut app = chat_app(Some(&fake)).await;
    let (_, token) = app.user("crash@chat.example").await;
    let response = stream(
        &app,
        &token,
        json!({"message": "What does Sara want?"}),
        None,
    )
    .await;
    let turn = response.headers()["x-turn-id"].to_str().unwrap().to_owned();
    let reader = tokio::spawn(read_events(response, |_| false));
    eventually(
        "part of the answer streamed",
        Duration::from_secs(20),
        || async { app.stream_messages("TURNS").await >= 4 },
    )
    .await;
    app.kill("tool-executor").await;
    app.start("tool-executor").await;
    let events = reader.await.unwrap();
    assert_eq!(done(&events)["text"], answer);
    assert_eq!(text_of(&events), answer);
    let ids: Vec<u64> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids, (1..=events.len() as u64).collect::<Vec<_>>());
    assert_eq!(fake.calls(), 2, "the crashed call was made again, once");
    // The continuation carried what the user had already seen.
    assert_eq!(last_message(&fake.received()[1].body)["role"], "assistant");
    let stored: Value = app
        .http
        .get(format!(
            "{}/api/conversations/{}",
            app.url,
            events_conversation(&app, &token, &turn).await
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stored["messages"][1]["content"], answer);
}

#[tokio::test]
async fn a_conversation_carries_its_history_into_the_next_turn() {
    let fake = FakeModel::scripted(vec![
        Reply::text("Sara Smith is your client.", 8),
        Reply::text("She wants bonds.", 8),
    ])
    .await;
    let app = chat_app(Some(&fake)).await;
    let (_, token) = app.user("history@chat.example").await;
    let first: Value = message(&app, &token, json!({"message": "Who is Sara?"}), None)
        .await
        .json()
        .await
        .unwrap();
    let conversation = first["conversation_id"].as_str().unwrap();
    let second: Value = message(
        &app,
        &token,
        json!({"conversation_id": conversation, "message": "What does she want?"}),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(second["conversation_id"], conversation);
    let messages = fake.received()[1].body["messages"].to_string();
    assert!(messages.contains("Who is Sara?") && messages.contains("Sara Smith is your client."));
    let list: Value = app
        .http
        .get(format!("{}/api/conversations", app.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["conversations"].as_array().unwrap().len(), 1);
    assert_eq!(list["conversations"][0]["title"], "Who is Sara?");
    let deleted = app
        .http
        .delete(format!("{}/api/conversations/{conversation}", app.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(app.scalar_i64("SELECT count(*) FROM messages").await, 0);
}

#[tokio::test]
async fn one_users_chat_never_sees_or_touches_anothers() {
    let fake = FakeModel::responding(baseball_model).await;
    let app = chat_app(Some(&fake)).await;
    let (alice, alice_token) = app.user("alice@chat.example").await;
    let (_, bob_token) = app.user("bob@chat.example").await;
    // Only Alice has the email; Bob asks the same question.
    seed_mailbox(&app, &alice_token, alice).await;
    let bob: Value = message(
        &app,
        &bob_token,
        json!({"message": "Which client's kid plays baseball?"}),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(bob["text"], "I could not find it.");
    assert!(bob["citations"].as_array().unwrap().is_empty());
    assert!(
        !fake.received()[1].body["messages"]
            .to_string()
            .contains("Little league")
    );

    let alices: Value = message(&app, &alice_token, json!({"message": "Hello"}), None)
        .await
        .json()
        .await
        .unwrap();
    let turn = alices["turn_id"].as_str().unwrap();
    let conversation = alices["conversation_id"].as_str().unwrap();
    for (method, path) in [
        ("GET", format!("/api/chat/turns/{turn}/events")),
        ("POST", format!("/api/chat/turns/{turn}/cancel")),
        ("GET", format!("/api/conversations/{conversation}")),
        ("DELETE", format!("/api/conversations/{conversation}")),
    ] {
        let response = app
            .http
            .request(method.parse().unwrap(), format!("{}{path}", app.url))
            .bearer_auth(&bob_token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{method} {path}");
    }
    let into_alices = message(
        &app,
        &bob_token,
        json!({"conversation_id": conversation, "message": "hi"}),
        None,
    )
    .await;
    assert_eq!(into_alices.status(), 404);
}

#[tokio::test]
async fn live_turn_events_that_miss_some_fall_back_to_the_stream_in_order() {
    use common::chat::{Finished, Live, TurnEvent, TurnEventBody, publish};
    let app = TestApp::spawn_only(&[]).await;
    let (user, _) = app.user("live@chat.example").await;
    let turn = uuid::Uuid::new_v4();
    let event = |seq: u64, body: TurnEventBody| TurnEvent {
        seq,
        turn_id: turn,
        body,
    };
    // Two events the subscription never sees (published before it existed).
    for seq in 1..=2 {
        publish(
            &app.bus,
            user,
            &event(
                seq,
                TurnEventBody::Delta {
                    text: format!("part {seq} "),
                },
            ),
        )
        .await
        .unwrap();
    }
    let live = Live::subscribe(&app.bus, user, turn).await.unwrap();
    let done = TurnEventBody::Done(Finished {
        text: "part 1 part 2 ".into(),
        citations: vec![],
        usage: Default::default(),
        status: "done".into(),
    });
    publish(&app.bus, user, &event(3, done)).await.unwrap();
    let seen: Vec<u64> = live
        .events(app.bus.clone(), user, turn)
        .map(|e| e.seq)
        .collect()
        .await;
    assert_eq!(
        seen,
        [1, 2, 3],
        "the gap is filled from the TURNS stream, in order"
    );
}
