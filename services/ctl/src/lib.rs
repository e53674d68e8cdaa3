//! What the operator's CLI does, as functions tests can call: dead-letter requeue, per-user
//! replay, demo data.

use async_nats::jetstream::consumer::{self, DeliverPolicy};
use chrono::{DateTime, Utc};
use common::UserId;
use common::bus::Bus;
use common::events::{DocUpserted, DocumentInput, Envelope, Event, Lane};
use common::ids::{DocumentId, Source};
use common::intake::{self, Accepted, Limits};
use common::topology::Topology;
use db::DatabaseConnection;
use db::documents::KeyFilter;
use futures::StreamExt;
use std::time::Duration;

/// Sends a dead letter back to its subject (with a fresh message id, so JetStream's dedup
/// window does not swallow it) and marks it requeued.
pub async fn requeue(db: &DatabaseConnection, bus: &Bus, id: i64) -> anyhow::Result<u64> {
    let letter = db::dead_letters::get(db, id).await?;
    anyhow::ensure!(
        letter.requeued_at.is_none(),
        "dead letter {id} was already requeued"
    );
    let msg_id = format!("requeue:{}:{}", letter.id, Utc::now().timestamp_millis());
    let published = bus
        .publish_raw(&letter.subject, &msg_id, letter.payload.clone())
        .await?;
    db::dead_letters::mark_requeued(db, id).await?;
    Ok(published.sequence)
}

/// Queues documents (one user's, or everyone's) to be chunked and embedded again, on the bulk
/// lane, and returns how many. For after a change to what is indexed (the chunk heading, an
/// embedding model of the same dimensions), so documents indexed before catch up. Search
/// keeps finding a document by its old chunks until the new ones replace them, and new
/// documents keep the interactive lane meanwhile.
pub async fn reindex(
    db: &DatabaseConnection,
    bus: &Bus,
    user: Option<UserId>,
) -> anyhow::Result<u64> {
    announce_again(db, bus, user, &KeyFilter::default(), false).await
}

/// Queues a user's documents (of one source, within a window) to be read again by product
/// intelligence only, on the bulk lane: after a change of classifier or threshold their items
/// are derived again and replace the old ones. Returns how many.
pub async fn reprocess_insights(
    db: &DatabaseConnection,
    bus: &Bus,
    user: UserId,
    filter: &KeyFilter,
) -> anyhow::Result<u64> {
    announce_again(db, bus, Some(user), filter, true).await
}

async fn announce_again(
    db: &DatabaseConnection,
    bus: &Bus,
    user: Option<UserId>,
    filter: &KeyFilter,
    insights_only: bool,
) -> anyhow::Result<u64> {
    // A run of its own, so JetStream's dedup window does not swallow a second run.
    let run = format!("reindex:{}", Utc::now().timestamp_millis());
    let mut after = uuid::Uuid::nil();
    let mut queued = 0;
    loop {
        let page = db::documents::keys_after(db, user, after, 500, filter).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        let envelopes = page
            .into_iter()
            .map(|d| {
                let event = DocUpserted {
                    document_id: DocumentId(d.id),
                    source: Source::parse(&d.source).map_err(anyhow::Error::msg)?,
                    kind: Source::parse(&d.kind).map_err(anyhow::Error::msg)?,
                    content_hash: d.content_hash,
                    created: false,
                    caused_by: run.clone(),
                    again: true,
                    insights_only,
                };
                Ok(Envelope::new(UserId(d.user_id), Event::DocUpserted(event)).in_lane(Lane::Bulk))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        bus.publish_all(&envelopes).await?;
        queued += envelopes.len() as u64;
    }
    Ok(queued)
}

/// Themes as an operator reads them: one line each, most mentioned first.
pub fn themes_table(themes: &[db::insights::Theme]) -> String {
    use std::fmt::Write;
    let mut out = String::from(
        "theme                                 kind             items accounts last seen             title\n",
    );
    for t in themes {
        let _ = writeln!(
            out,
            "{}  {:<15}  {:>5} {:>8} {}  {}",
            t.id,
            t.kind,
            t.items,
            t.accounts,
            t.last_seen.format("%Y-%m-%d %H:%M"),
            t.title
        );
    }
    out
}

#[derive(Debug, Clone, Default)]
pub struct ReplayReport {
    pub republished: u64,
    pub last_sequence: u64,
}

/// Republishes one user's messages from a stream (all, or since a time) so every consumer
/// processes them again. Handlers are idempotent, so this repairs without duplicating.
/// Stops at the stream's last sequence as of the start, never chasing its own output.
pub async fn replay(
    bus: &Bus,
    stream: &str,
    user: UserId,
    since: Option<DateTime<Utc>>,
) -> anyhow::Result<ReplayReport> {
    let topology = Topology::shipped()?;
    let def = topology
        .streams
        .iter()
        .find(|s| s.name.eq_ignore_ascii_case(stream))
        .ok_or_else(|| anyhow::anyhow!("no stream named {stream}"))?;
    let root = def.subjects[0].trim_end_matches(".>");
    let mut js_stream = bus.js.get_stream(bus.ns.stream(&def.name)).await?;
    let end = js_stream.info().await?.state.last_sequence;
    let run = Utc::now().timestamp_millis();
    let config = consumer::pull::Config {
        filter_subject: bus.ns.subject(&format!("{root}.{user}.>")),
        deliver_policy: match since {
            Some(t) => DeliverPolicy::ByStartTime {
                start_time: time::OffsetDateTime::from_unix_timestamp(t.timestamp())?,
            },
            None => DeliverPolicy::All,
        },
        ack_policy: consumer::AckPolicy::None,
        inactive_threshold: Duration::from_secs(60),
        ..Default::default()
    };
    let reader = js_stream.create_consumer(config).await?;
    let mut report = ReplayReport::default();
    loop {
        let pending = reader.clone().info().await?.num_pending;
        if pending == 0 {
            break;
        }
        let mut batch = reader.fetch().max_messages(256).messages().await?;
        let mut done = false;
        while let Some(msg) = batch.next().await {
            let msg = msg.map_err(|e| anyhow::anyhow!(e))?;
            let seq = msg.info().map_err(|e| anyhow::anyhow!(e))?.stream_sequence;
            if seq > end {
                done = true;
                break;
            }
            let (subject, payload) = replayed(bus.ns.strip(msg.subject.as_str()), &msg.payload);
            bus.publish_raw(&subject, &format!("replay:{run}:{seq}"), payload)
                .await?;
            report.republished += 1;
            report.last_sequence = seq;
            if seq == end {
                done = true;
                break;
            }
        }
        if done {
            break;
        }
    }
    Ok(report)
}

/// Where a replayed message goes: documents and their indexing in the bulk lane (a replay
/// must not delay anyone's new work), everything else where it was.
fn replayed(subject: &str, payload: &[u8]) -> (String, Vec<u8>) {
    match Envelope::from_slice(payload) {
        Ok(envelope)
            if matches!(
                envelope.event,
                Event::DocumentSubmitted(_) | Event::DocUpserted(_)
            ) =>
        {
            let envelope = envelope.in_lane(Lane::Bulk);
            (envelope.subject(), envelope.to_bytes())
        }
        _ => (subject.to_owned(), payload.to_vec()),
    }
}

/// The demo tenant's data, shipped in the repository.
pub const DEMO_DATA: &str = include_str!("../../../demo/advisor.json");

/// The product team's demo: customers in HubSpot, Slack feedback, two call transcripts and a
/// few emails.
pub const PRODUCT_DEMO_DATA: &str = include_str!("../../../demo/product.json");

/// Loads the demo documents for `user` through the same intake as the HTTP API.
pub async fn load_demo(bus: &Bus, user: UserId, limits: &Limits) -> anyhow::Result<Vec<Accepted>> {
    let docs: Vec<DocumentInput> = serde_json::from_str(DEMO_DATA)?;
    submit_all(bus, user, docs, limits).await
}

/// The product team's demo for `user`: product intelligence turned on for every source, the
/// CRM records stored first (so the customers of the messages resolve), then the messages.
pub async fn load_product_demo(
    db: &DatabaseConnection,
    bus: &Bus,
    user: UserId,
    limits: &Limits,
) -> anyhow::Result<Vec<Accepted>> {
    db::insights::save_settings(
        db,
        user,
        &db::insights::Settings {
            enabled: true,
            ..Default::default()
        },
    )
    .await?;
    let docs: Vec<DocumentInput> = serde_json::from_str(PRODUCT_DEMO_DATA)?;
    let (crm, messages): (Vec<_>, Vec<_>) = docs
        .into_iter()
        .partition(|d| d.source.as_str() == "hubspot");
    let mut accepted = submit_all(bus, user, crm, limits).await?;
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(60) {
        let mut stored = 0;
        for a in &accepted {
            if db::documents::get(db, a.id).await?.is_some() {
                stored += 1;
            }
        }
        if stored == accepted.len() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    accepted.extend(submit_all(bus, user, messages, limits).await?);
    Ok(accepted)
}

pub async fn submit_all(
    bus: &Bus,
    user: UserId,
    docs: Vec<DocumentInput>,
    limits: &Limits,
) -> anyhow::Result<Vec<Accepted>> {
    let mut accepted = Vec::with_capacity(docs.len());
    for batch in docs.chunks(limits.max_batch) {
        let batch = intake::admit_batch(batch.to_vec(), limits)?;
        accepted.extend(intake::submit(bus, user, batch, &[]).await?);
    }
    Ok(accepted)
}

/// Rules as an operator reads them: one line each, per user.
pub fn rules_table(rules: &[db::rules::Rule]) -> String {
    use std::fmt::Write;
    let mut out = String::from(
        "user                                  rule                                  kind         active alone text\n",
    );
    for r in rules {
        let text: String = r.text.chars().take(70).collect();
        let more = if r.text.chars().count() > 70 {
            "…"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{}  {}  {:<11}  {:<6} {:<5} {text}{more}",
            r.user_id,
            r.id,
            r.kind,
            if r.active { "yes" } else { "no" },
            if r.act_without_approval { "yes" } else { "no" },
        );
    }
    out
}

/// A backtest as an operator reads it: what would have fired, when, and why.
pub fn backtest_report(result: &actions::rules::Backtest) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "{} events read, {} matched{}\n",
        result.events_read,
        result.matched,
        if result.truncated {
            " (stopped at the limit)"
        } else {
            ""
        }
    );
    for w in &result.would_fire {
        let lookups: Vec<String> = w
            .lookups
            .iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect();
        let _ = writeln!(
            out,
            "{}  {}  tier {}{}{}",
            w.at,
            w.event_type,
            w.tier,
            if w.history { "  (history)" } else { "" },
            if lookups.is_empty() {
                String::new()
            } else {
                format!("  [{}]", lookups.join(", "))
            }
        );
        for step in &w.steps {
            let _ = writeln!(out, "    {step}");
        }
    }
    out
}

/// Demo rules: a structured rule for every new CRM contact, and one for unknown senders whose
/// writes wait for approval (the demo has no model, so no plain-language instructions).
pub async fn load_demo_rules(db: &DatabaseConnection, user: UserId) -> anyhow::Result<usize> {
    let texts = [
        "when hubspot.contact.created then create_task type=welcome_call priority=high contact={{event.id}}",
        "when gmail.email.received if from_domain != \"harborwealth.example\" and not contact_exists(from) \
         then create_contact email={{event.from_email}} firstname={{event.from_name}}; \
         create_note contact={{steps.1.contact_id}} body=\"First email: {{event.subject}}\"",
    ];
    for (i, text) in texts.iter().enumerate() {
        let id = uuid::Uuid::new_v5(&user.0, format!("demo-rule-{i}").as_bytes());
        let compiled =
            actions::rules::compile(text).map_err(|e| anyhow::anyhow!("demo rule {i}: {e}"))?;
        db::rules::create(
            db,
            user,
            &db::rules::NewRule {
                id,
                text: (*text).to_owned(),
                kind: "structured".into(),
                compiled: Some(
                    serde_json::json!({"rule": compiled.compiled, "canonical": compiled.rule.to_string()}),
                ),
                triggers: compiled.triggers,
                act_without_approval: false,
            },
        )
        .await?;
    }
    Ok(texts.len())
}

/// `--setting K=V` pairs as the settings a preview tries: `V` is JSON where it parses (`4`,
/// `0.6`, `["a","b"]`, `null`), else text; a list setting takes each text value given for
/// it as one element (`--setting sources=slack --setting sources=gmail`).
pub fn setting_patch(
    pairs: &[String],
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    use serde_json::Value;
    let lists = serde_json::to_value(db::insights::Settings::default())?;
    let mut patch = serde_json::Map::new();
    for pair in pairs {
        let (key, raw) = pair
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--setting {pair}: expected NAME=VALUE"))?;
        let key = key.trim();
        let value = serde_json::from_str::<Value>(raw).unwrap_or_else(|_| Value::from(raw));
        match (&lists[key], value) {
            (Value::Array(_), Value::String(text)) => {
                let slot = patch
                    .entry(key.to_owned())
                    .or_insert_with(|| Value::Array(Vec::new()));
                match slot {
                    Value::Array(list) => list.push(Value::String(text)),
                    _ => anyhow::bail!("--setting {key}: given both as a list and as text"),
                }
            }
            (_, value) => {
                patch.insert(key.to_owned(), value);
            }
        }
    }
    Ok(patch)
}

/// A preview's report as the operator reads it.
pub fn preview_text(p: &db::previews::Preview) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "preview {} ({}) of {} .. {}: {}/{} messages read",
        p.id, p.status, p.from, p.to, p.read, p.messages
    );
    if let Some(e) = &p.error {
        let _ = writeln!(out, "failed: {e}");
    }
    let Some(r) = &p.report else {
        return out;
    };
    let m = &r.messages;
    let _ = writeln!(
        out,
        "messages: {} read, {} extracted, {} below the bar, {} skipped (live: {} read, {} extracted)",
        m.read, m.extracted, m.below, m.skipped, m.live_read, m.live_extracted
    );
    let i = &r.items;
    let _ = writeln!(
        out,
        "items: {} (live {}): {} added, {} removed, {} kept, {} of another kind, {} like a dismissed quote",
        i.preview, i.live, i.added, i.removed, i.kept, i.changed_kind, i.like_dismissed
    );
    for (label, examples) in [
        ("added", &i.examples_added),
        ("removed", &i.examples_removed),
        ("other kind", &i.examples_changed_kind),
    ] {
        for e in examples {
            let was = e
                .was
                .as_deref()
                .map(|w| format!(" (was {w})"))
                .unwrap_or_default();
            let _ = writeln!(out, "  {label}: [{}{was}] {}", e.kind, e.quote);
        }
    }
    let t = &r.themes;
    let _ = writeln!(
        out,
        "themes: {} (live {}): {} formed, {} merged, {} split, {} gone",
        t.preview,
        t.live,
        t.formed.len(),
        t.merged.len(),
        t.split.len(),
        t.gone.len()
    );
    for f in &t.formed {
        let _ = writeln!(out, "  formed: {} ({} items)", f.title, f.items);
    }
    let names = |parts: &[db::previews::ThemeRef]| {
        parts
            .iter()
            .map(|p| format!("{} ({})", p.title, p.items))
            .collect::<Vec<_>>()
            .join(" + ")
    };
    for g in &t.merged {
        let _ = writeln!(out, "  merged: {} <- {}", g.theme.title, names(&g.parts));
    }
    for g in &t.split {
        let _ = writeln!(out, "  split: {} -> {}", g.theme.title, names(&g.parts));
    }
    for g in &t.gone {
        let _ = writeln!(out, "  gone: {} ({} items)", g.title, g.items);
    }
    match r.agreement {
        Some(ari) => {
            let _ = writeln!(
                out,
                "agreement with the live grouping: ARI {ari:.3} over {} items",
                r.compared
            );
        }
        None => {
            let _ = writeln!(out, "agreement with the live grouping: no items in common");
        }
    }
    let c = &r.curations;
    let _ = writeln!(
        out,
        "curations: {} considered, {} kept only as constraints, {} pinned items no longer found",
        c.considered,
        c.kept_by_constraint.len(),
        c.lost.len()
    );
    for k in &c.kept_by_constraint {
        let _ = writeln!(
            out,
            "  kept by constraint: {} by {} at {} ({})",
            k.action, k.actor, k.created_at, k.id
        );
    }
    out
}

/// Stores a preview of the candidate settings (`patch` over the user's) on `[from, to)` and
/// queues its reading; the embedding service reads it into shadow tables.
pub async fn request_preview(
    db: &DatabaseConnection,
    bus: &Bus,
    config: &common::Config,
    user: UserId,
    requested_by: &str,
    window: (DateTime<Utc>, DateTime<Utc>),
    patch: &serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<db::previews::Preview> {
    let live = db::insights::settings(db, user).await?;
    let (from, to) = window;
    let settings = db::previews::candidate(&live, from, to, patch)
        .map_err(|e| anyhow::anyhow!("{}: {}", e.field, e.reason))?;
    settings
        .model_reachable(config, "--model")
        .map_err(|e| anyhow::anyhow!("{}: {}", e.field, e.reason))?;
    let preview = db::previews::create(db, user, requested_by, from, to, &settings).await?;
    if let Err(e) = bus
        .publish(&common::events::insights_preview(
            user,
            preview.id,
            uuid::Uuid::nil(),
        ))
        .await
    {
        db::previews::discard(db, user, preview.id).await?;
        return Err(e.into());
    }
    Ok(preview)
}

/// Waits for a preview to be read and grouped (or to fail), calling `progress` as it reads.
pub async fn await_preview(
    db: &DatabaseConnection,
    user: UserId,
    id: uuid::Uuid,
    timeout: Duration,
    mut progress: impl FnMut(&db::previews::Preview),
) -> anyhow::Result<db::previews::Preview> {
    let started = std::time::Instant::now();
    loop {
        let p = db::previews::get(db, user, id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("preview {id} is gone"))?;
        progress(&p);
        if !matches!(p.status.as_str(), "queued" | "running") {
            return Ok(p);
        }
        anyhow::ensure!(
            started.elapsed() < timeout,
            "preview {id} is still {} after {} s ({} of {} messages read); it goes on reading: GET /api/insights/previews/{id} shows it, and `ctl insights apply` applies it once ready",
            p.status,
            timeout.as_secs(),
            p.read,
            p.messages
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
