//! `make bench` for the rules engine: many users' rules loaded, an event published, the tool
//! invocation the engine hands to the executor seen on the TOOLS stream; and how much of the
//! demo tenant's event stream tier 1 lets through to the model.

use crate::bench::{Env, Stats, stats};
use common::UserId;
use common::events::{DomainEvent, Envelope, Event};
use common::ids::Source;
use futures::StreamExt;
use futures::future::join_all;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use uuid::Uuid;

/// The users and, per user, the rule the benchmark's events fire.
pub struct Loaded {
    pub users: Vec<(UserId, Uuid)>,
    pub rules: usize,
}

fn rule_texts(u: usize) -> Vec<String> {
    vec![
        format!("when gmail.email.received if from_domain == \"client{u}.example\" then log text=\"from {{{{event.from_email}}}}\""),
        "when gmail.email.received if subject contains \"urgent\" and not contact_exists(from) then notify text=\"urgent: {{event.subject}}\"".into(),
        "when hubspot.contact.created then create_task type=welcome_call priority=high contact={{event.id}}".into(),
        "when hubspot.deal.updated if dealstage == \"closedwon\" then notify text=\"won {{event.title}}\"".into(),
        format!("when calendar.event.created if organizer != \"u{u}@advisor.example\" then send_email to={{{{event.organizer}}}} subject=\"Agenda\" body=\"Agenda attached\""),
        "when slack.message.posted if channel_name == \"clients\" then log text=\"{{event.user_name}}\"".into(),
        "when gmail.* if labels contains \"IMPORTANT\" then log text=\"important\"".into(),
        "when calendar.event.cancelled then notify text=\"cancelled: {{event.title}}\"".into(),
        "when hubspot.contact.updated if lifecyclestage == \"customer\" and email matches \"@(gmail|yahoo)\\\\.com$\" then log".into(),
        "when gmail.email.sent if to_emails contains \"compliance@advisor.example\" then log".into(),
    ]
}

/// `users` users with 10 rules each.
pub async fn load(env: &Env, users: usize) -> anyhow::Result<Loaded> {
    let mut loaded = Loaded {
        users: Vec::with_capacity(users),
        rules: 0,
    };
    for chunk in (0..users).collect::<Vec<_>>().chunks(50) {
        let made = join_all(chunk.iter().map(|u| async move {
            let user = db::users::ensure(&env.db, &format!("u{u}@advisor.example")).await?;
            let mut first = Uuid::nil();
            for (i, text) in rule_texts(*u).iter().enumerate() {
                let id = Uuid::new_v5(&user.0, format!("bench-rule-{i}").as_bytes());
                let c = actions::rules::compile(text)
                    .map_err(|e| anyhow::anyhow!("bench rule {i}: {e}"))?;
                db::rules::create(
                    &env.db,
                    user,
                    &db::rules::NewRule {
                        id,
                        text: text.clone(),
                        kind: "structured".into(),
                        compiled: Some(
                            json!({"rule": c.compiled, "canonical": c.rule.to_string()}),
                        ),
                        triggers: c.triggers,
                        act_without_approval: false,
                    },
                )
                .await?;
                if i == 0 {
                    first = id;
                }
            }
            anyhow::Ok((user, first))
        }))
        .await;
        for m in made {
            loaded.users.push(m?);
            loaded.rules += 10;
        }
    }
    Ok(loaded)
}

fn email_event(user: UserId, u: usize, n: usize) -> Envelope {
    Envelope::new(
        user,
        Event::Domain(DomainEvent {
            source: Source::parse("gmail").expect("valid source"),
            name: "email.received".into(),
            entity_id: format!("bench-{u}-{n}"),
            document_id: None,
            version: Uuid::new_v4().to_string(),
            data: json!({"from": format!("Client <a{n}@client{u}.example>"), "subject": "hello", "labels": ["INBOX"]}),
            history: false,
        }),
    )
}

type Waiters = Arc<Mutex<HashMap<Uuid, oneshot::Sender<Instant>>>>;

/// Hands every task start seen on TOOLS to whoever waits for that task.
async fn watch_tools(env: &Env) -> anyhow::Result<Waiters> {
    let waiters: Waiters = Arc::default();
    let mut subscriber = env
        .bus
        .client
        .subscribe(env.bus.ns.subject("tools.*.tasks"))
        .await?;
    let w = waiters.clone();
    tokio::spawn(async move {
        while let Some(message) = subscriber.next().await {
            let at = Instant::now();
            let Ok(envelope) = Envelope::from_slice(&message.payload) else {
                continue;
            };
            if let Event::TaskAdvance(t) = envelope.event
                && t.reason == "start"
                && let Some(tx) = w.lock().unwrap().remove(&t.task_id)
            {
                let _ = tx.send(at);
            }
        }
    });
    Ok(waiters)
}

/// Event published → tool invocation on TOOLS, one event at a time, over random users.
pub async fn latency(env: &Env, loaded: &Loaded, n: usize) -> anyhow::Result<Stats> {
    let waiters = watch_tools(env).await?;
    let mut latencies = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let u = (i * 7919) % loaded.users.len();
        let (user, rule) = loaded.users[u];
        let event = email_event(user, u, i);
        let (tx, rx) = oneshot::channel();
        waiters
            .lock()
            .unwrap()
            .insert(Uuid::new_v5(&rule, event.id.as_bytes()), tx);
        let sent = Instant::now();
        env.bus.publish(&event).await?;
        let seen = tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .map_err(|_| anyhow::anyhow!("no invocation for event {i} within 10 s"))??;
        latencies.push(seen - sent);
    }
    Ok(stats(latencies, started.elapsed()))
}

/// Events/s through the engine: `n` events published at once, timed until the last one's
/// invocation is on TOOLS.
pub async fn throughput(env: &Env, loaded: &Loaded, n: usize) -> anyhow::Result<Stats> {
    let waiters = watch_tools(env).await?;
    let mut events = Vec::with_capacity(n);
    let mut receivers = Vec::with_capacity(n);
    for i in 0..n {
        let u = i % loaded.users.len();
        let (user, rule) = loaded.users[u];
        let event = email_event(user, u, 1_000_000 + i);
        let (tx, rx) = oneshot::channel();
        waiters
            .lock()
            .unwrap()
            .insert(Uuid::new_v5(&rule, event.id.as_bytes()), tx);
        events.push(event);
        receivers.push(rx);
    }
    let started = Instant::now();
    for chunk in events.chunks(500) {
        env.bus.publish_all(chunk).await?;
    }
    let mut latencies = Vec::with_capacity(n);
    for rx in receivers {
        let seen = tokio::time::timeout(Duration::from_secs(120), rx)
            .await
            .map_err(|_| anyhow::anyhow!("the engine did not keep up within 120 s"))??;
        latencies.push(seen - started);
    }
    let elapsed = started.elapsed();
    Ok(stats(latencies, elapsed))
}

/// The demo tenant's rules (its structured ones and three plain-language instructions with the
/// triggers a model compiles them to) over the demo tenant's event stream (its sample data as
/// the events its arrival makes): how many events tier 1 lets through to the model.
pub async fn demo_tier2_share(env: &Env) -> anyhow::Result<(usize, usize)> {
    let user = db::users::ensure(&env.db, "bench-demo@harborwealth.example").await?;
    let limits = common::intake::Limits {
        max_batch: env.config.max_batch_documents,
        max_body_bytes: env.config.max_document_bytes,
    };
    let docs: Vec<common::events::DocumentInput> = serde_json::from_str(ctl::DEMO_DATA)?;
    ctl::load_demo(&env.bus, user, &limits).await?;
    ctl::load_demo_rules(&env.db, user).await?;
    let instructions = [
        (
            "When a client asks about taxes, RMDs or rollovers, draft a reply for me to review",
            "when gmail.email.received if subject matches \"(?i)tax|rmd|rollover|401\\\\(k\\\\)\" and is_client(from)",
        ),
        (
            "If a prospect emails me, remind me to call them the same day",
            "when gmail.email.received if contact_exists(from) and not is_client(from)",
        ),
        (
            "When a client books a meeting, send them the agenda template",
            "when calendar.event.created if is_client(organizer)",
        ),
    ];
    for (i, (text, trigger)) in instructions.iter().enumerate() {
        let parsed = rules::parse_rule(&format!("{trigger} then log"))
            .map_err(|e| anyhow::anyhow!("{trigger}: {e}"))?;
        let rule = rules::Rule {
            patterns: parsed.patterns,
            condition: parsed.condition,
            steps: vec![rules::Step::Act(rules::Action {
                name: "ask_assistant".into(),
                params: vec![("text".into(), (*text).into())],
            })],
        };
        db::rules::create(
            &env.db,
            user,
            &db::rules::NewRule {
                id: Uuid::new_v5(&user.0, format!("demo-instruction-{i}").as_bytes()),
                text: (*text).into(),
                kind: "instruction".into(),
                compiled: Some(json!({"rule": rule, "trigger": trigger})),
                triggers: rule.keys(),
                act_without_approval: false,
            },
        )
        .await?;
    }
    // The contacts must be stored for the lookups to answer as they would.
    let deadline = Instant::now() + Duration::from_secs(60);
    while crate::bench::count_documents(env, user).await? < docs.len() as i64 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the demo data was not stored in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut through = 0;
    for doc in &docs {
        let (source, name) = match (doc.source.as_str(), doc.kind.as_str()) {
            ("gmail", _) if doc.metadata["labels"].to_string().contains("SENT") => {
                ("gmail", "email.sent")
            }
            ("gmail", _) => ("gmail", "email.received"),
            ("gcal", _) => ("calendar", "calendar.event.created"),
            ("hubspot", kind) => ("hubspot", kind_event(kind)),
            (other, _) => (other, "unknown.created"),
        };
        let mut data = doc.metadata.clone();
        data["subject"] = json!(doc.title);
        data["title"] = json!(doc.title);
        let view = rules::view::build(source, name, &doc.external_id, "", &data);
        let keys = rules::Pattern::keys_for(view["type"].as_str().unwrap_or_default());
        let mut reaches_model = false;
        for r in db::rules::candidates(&env.db, user, &keys).await? {
            let Some(compiled) = actions::rules::stored(&r) else {
                continue;
            };
            let mut answers = Default::default();
            if actions::rules::needs_model(&compiled)
                && actions::rules::matches(&env.db, user, &compiled, &view, &mut answers).await?
            {
                reaches_model = true;
            }
        }
        through += usize::from(reaches_model);
    }
    Ok((through, docs.len()))
}

fn kind_event(kind: &str) -> &'static str {
    match kind {
        "contact" => "contact.created",
        "note" => "note.created",
        "deal" => "deal.updated",
        _ => "object.created",
    }
}
