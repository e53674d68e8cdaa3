//! Slack, read with the person's own token (never the app's): the conversations this person
//! is in (`users.conversations`), their history oldest first from each channel's stored `ts`,
//! thread replies, and user names (`users.info`, cached per run). Events API deliveries come
//! for the whole workspace; each user stores one only for a conversation they are in, so
//! colleagues in one workspace never see each other's private channels. Cursor:
//! `{"channels": {"C123": "1700000000.000100"}}`, whose keys are the person's conversations as
//! of the last listing.

use super::{Names, Outcome, Run, SyncResult, base};
use chrono::{DateTime, Utc};
use common::events::DocumentInput;
use common::ids::Source;
use providers::ProviderError;
use serde_json::{Value, json};
use std::collections::HashMap;

/// Slack answers 200 with `ok: false`; these errors mean the grant is gone.
const REVOKED: [&str; 4] = [
    "invalid_auth",
    "token_revoked",
    "account_inactive",
    "not_authed",
];

async fn call(run: &Run<'_>, method: &str, query: &[(&str, String)]) -> SyncResult<Value> {
    let url = format!("{}/{method}", base(&run.sync.config.slack_api_base));
    let response: Value = run.api().get(&url, query).await?;
    if response["ok"] == true {
        return Ok(response);
    }
    let error = response["error"]
        .as_str()
        .unwrap_or("unknown_error")
        .to_owned();
    if REVOKED.contains(&error.as_str()) {
        db::connections::mark_revoked(
            &run.sync.db,
            run.user,
            "slack",
            &format!("revoked: {error}"),
        )
        .await?;
        return Err(ProviderError::Revoked(error).into());
    }
    Err(ProviderError::Refused(format!("{method}: {error}")).into())
}

/// Names for user and channel ids, looked up once per run.
#[derive(Default)]
struct Directory {
    users: HashMap<String, String>,
    channels: HashMap<String, String>,
}

impl Directory {
    async fn user(&mut self, run: &Run<'_>, id: &str) -> SyncResult<String> {
        if let Some(n) = self.users.get(id) {
            return Ok(n.clone());
        }
        let info = call(run, "users.info", &[("user", id.to_owned())]).await?;
        let u = &info["user"];
        let name = [
            &u["profile"]["display_name"],
            &u["real_name"],
            &u["profile"]["real_name"],
            &u["name"],
        ]
        .into_iter()
        .find_map(|v| v.as_str().filter(|s| !s.is_empty()))
        .unwrap_or(id)
        .to_owned();
        self.users.insert(id.to_owned(), name.clone());
        Ok(name)
    }

    async fn channel(&mut self, run: &Run<'_>, id: &str) -> SyncResult<String> {
        if let Some(n) = self.channels.get(id) {
            return Ok(n.clone());
        }
        let info = call(run, "conversations.info", &[("channel", id.to_owned())]).await?;
        let name = info["channel"]["name"].as_str().unwrap_or(id).to_owned();
        self.channels.insert(id.to_owned(), name.clone());
        Ok(name)
    }
}

/// Connections made before per-person access (with the app's token) cannot tell whose
/// conversations are whose: they stop, and the user is asked to connect again.
async fn require_person(run: &Run<'_>) -> SyncResult<()> {
    if db::connections::account_user(&run.sync.db, run.user, "slack")
        .await?
        .is_some()
    {
        return Ok(());
    }
    db::connections::mark_revoked(
        &run.sync.db,
        run.user,
        "slack",
        "connect Slack again: per-person access is needed",
    )
    .await?;
    Err(ProviderError::Revoked("a Slack connection without per-person access".into()).into())
}

/// Whether the person is in `channel`: from the last listing, else asked of Slack with the
/// person's token (`is_member`; a private channel they are not in is `channel_not_found`).
async fn is_member(run: &Run<'_>, channel: &str) -> SyncResult<bool> {
    let cursor = db::sync_state::cursor(&run.sync.db, run.user, "slack").await?;
    if cursor["channels"].get(channel).is_some() {
        return Ok(true);
    }
    match call(
        run,
        "conversations.info",
        &[("channel", channel.to_owned())],
    )
    .await
    {
        Ok(info) => Ok(info["channel"]["is_member"] == true),
        Err(super::SyncError::Provider(ProviderError::Refused(_))) => Ok(false),
        Err(e) => Err(e),
    }
}

pub async fn changes(run: &mut Run<'_>, mut cursor: Value) -> SyncResult<Outcome> {
    require_person(run).await?;
    if !cursor["channels"].is_object() {
        cursor = json!({ "channels": {} });
    }
    let mut names = Directory::default();
    let mut channels = Vec::new();
    let mut page: Option<String> = None;
    loop {
        let mut query = vec![
            ("types", "public_channel,private_channel".to_owned()),
            ("exclude_archived", "true".to_owned()),
            ("limit", "200".to_owned()),
        ];
        if let Some(p) = &page {
            query.push(("cursor", p.clone()));
        }
        let response = call(run, "users.conversations", &query).await?;
        for c in response["channels"].as_array().into_iter().flatten() {
            if let Some(id) = c["id"].as_str() {
                names
                    .channels
                    .insert(id.to_owned(), c["name"].as_str().unwrap_or(id).to_owned());
                channels.push(id.to_owned());
            }
        }
        page = next_cursor(&response);
        if page.is_none() {
            break;
        }
    }
    // Conversations the person has left are no longer theirs to receive.
    if let Some(known) = cursor["channels"].as_object_mut() {
        let before = known.len();
        known.retain(|id, _| channels.contains(id));
        if known.len() != before {
            run.save_cursor(&cursor).await?;
        }
    }
    for channel in channels {
        let oldest = cursor["channels"][&channel].as_str().map(str::to_owned);
        let (latest, complete) = history(run, &mut names, &channel, oldest).await?;
        if let Some(ts) = latest {
            cursor["channels"][&channel] = json!(ts);
            run.save_cursor(&cursor).await?;
        }
        if !complete {
            run.continue_later();
            return Ok(Outcome::Continued);
        }
    }
    Ok(Outcome::Done)
}

/// One channel on demand (`POST /api/sync/slack {"channel": ..}`), from its stored ts.
pub async fn channel(run: &mut Run<'_>, channel: &str) -> SyncResult<Outcome> {
    require_person(run).await?;
    if !is_member(run, channel).await? {
        run.skip(channel, "not a conversation this user is in", None)
            .await?;
        return Ok(Outcome::Done);
    }
    // Reads the cursor but does not move it: the channel-wide run owns it.
    let cursor = db::sync_state::cursor(&run.sync.db, run.user, "slack").await?;
    let oldest = cursor["channels"][channel].as_str().map(str::to_owned);
    let mut names = Directory::default();
    let (_, complete) = history(run, &mut names, channel, oldest).await?;
    if complete {
        return Ok(Outcome::Done);
    }
    // The rest of the channel comes with a workspace run, which moves the cursor.
    run.continue_later();
    Ok(Outcome::Continued)
}

fn next_cursor(response: &Value) -> Option<String> {
    response["response_metadata"]["next_cursor"]
        .as_str()
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
}

fn ts_key(ts: &str) -> f64 {
    ts.parse().unwrap_or(0.0)
}

/// Stores a channel's messages newer than `oldest`, oldest first, with thread replies.
/// Returns the newest stored ts and whether the channel is complete (not cut by the limit).
async fn history(
    run: &mut Run<'_>,
    names: &mut Directory,
    channel: &str,
    oldest: Option<String>,
) -> SyncResult<(Option<String>, bool)> {
    let oldest = oldest.unwrap_or_else(|| {
        let days = i64::from(run.sync.config.gmail_initial_days);
        (Utc::now() - chrono::Duration::days(days))
            .timestamp()
            .to_string()
    });
    // Slack pages newest first; gather the window, then store oldest first so the cursor
    // can stop anywhere.
    let mut messages = Vec::new();
    let mut page: Option<String> = None;
    loop {
        let mut query = vec![
            ("channel", channel.to_owned()),
            ("oldest", oldest.clone()),
            ("inclusive", "false".to_owned()),
            ("limit", "200".to_owned()),
        ];
        if let Some(p) = &page {
            query.push(("cursor", p.clone()));
        }
        let response = call(run, "conversations.history", &query).await?;
        messages.extend(response["messages"].as_array().cloned().unwrap_or_default());
        page = next_cursor(&response);
        if page.is_none() || response["has_more"] == false {
            break;
        }
    }
    messages.sort_by(|a, b| {
        ts_key(a["ts"].as_str().unwrap_or("0")).total_cmp(&ts_key(b["ts"].as_str().unwrap_or("0")))
    });
    let mut latest = None;
    for message in &messages {
        if run.at_limit() {
            return Ok((latest, false));
        }
        let Some(ts) = message["ts"].as_str() else {
            continue;
        };
        store(run, names, channel, message).await?;
        if message["reply_count"].as_u64().unwrap_or(0) > 0 {
            let replies = call(
                run,
                "conversations.replies",
                &[("channel", channel.to_owned()), ("ts", ts.to_owned())],
            )
            .await?;
            for reply in replies["messages"].as_array().into_iter().flatten() {
                if reply["ts"] != message["ts"] {
                    store(run, names, channel, reply).await?;
                }
            }
        }
        latest = Some(ts.to_owned());
    }
    Ok((latest, true))
}

async fn store(
    run: &mut Run<'_>,
    names: &mut Directory,
    channel: &str,
    message: &Value,
) -> SyncResult<()> {
    // Joins, topic changes and the like are not conversation.
    if let Some(subtype) = message["subtype"].as_str()
        && !["thread_broadcast", "file_share", "bot_message"].contains(&subtype)
    {
        return Ok(());
    }
    let Some(ts) = message["ts"].as_str() else {
        return Ok(());
    };
    let text = message["text"].as_str().unwrap_or_default();
    let external_id = format!("{channel}:{ts}");
    if text.len() > run.sync.config.sync_max_item_bytes {
        run.skip(
            &external_id,
            &format!("message is {} bytes, over the limit", text.len()),
            Some(text.len() as i64),
        )
        .await?;
        return Ok(());
    }
    let user_name = match message["user"].as_str() {
        Some(u) => names.user(run, u).await?,
        None => message["username"].as_str().unwrap_or("bot").to_owned(),
    };
    let channel_name = names.channel(run, channel).await?;
    let doc = to_document(channel, &channel_name, &user_name, message);
    let data = json!({
        "channel": channel, "channel_name": channel_name, "ts": ts,
        "thread_ts": message["thread_ts"], "user": message["user"], "user_name": user_name,
    });
    run.store(
        doc,
        Names {
            created: "slack.message.posted",
            updated: Some("slack.message.edited"),
        },
        data,
    )
    .await?;
    Ok(())
}

pub fn to_document(
    channel: &str,
    channel_name: &str,
    user_name: &str,
    message: &Value,
) -> DocumentInput {
    let ts = message["ts"].as_str().unwrap_or("0");
    let occurred_at = ts
        .split('.')
        .next()
        .and_then(|s| s.parse::<i64>().ok())
        .and_then(|s| DateTime::<Utc>::from_timestamp(s, 0));
    DocumentInput {
        source: Source::parse("slack").expect("valid source"),
        kind: Source::parse("message").expect("valid kind"),
        external_id: format!("{channel}:{ts}"),
        title: format!("#{channel_name}: {user_name}"),
        body: message["text"].as_str().unwrap_or_default().to_owned(),
        metadata: json!({
            "channel": channel,
            "channel_name": channel_name,
            "user": message["user"],
            "user_name": user_name,
            "ts": ts,
            "thread_ts": message["thread_ts"],
        }),
        occurred_at,
    }
}

/// One Events API event: a new message, an edit (`message_changed`) or a deletion.
pub async fn event(run: &mut Run<'_>, event: &Value) -> SyncResult<()> {
    require_person(run).await?;
    let Some(channel) = event["channel"].as_str() else {
        return Ok(());
    };
    if event["type"] == "member_left_channel" {
        // The person left: nothing more from that conversation reaches them.
        let me = db::connections::account_user(&run.sync.db, run.user, "slack").await?;
        if me.as_deref() == event["user"].as_str() {
            let mut cursor = db::sync_state::cursor(&run.sync.db, run.user, "slack").await?;
            if let Some(known) = cursor["channels"].as_object_mut()
                && known.remove(channel).is_some()
            {
                run.save_cursor(&cursor).await?;
            }
        }
        return Ok(());
    }
    if event["type"] != "message" {
        return Ok(());
    }
    // The workspace's events reach every connected colleague; each keeps only their own.
    if !is_member(run, channel).await? {
        return Ok(());
    }
    let mut names = Directory::default();
    match event["subtype"].as_str() {
        Some("message_changed") => store(run, &mut names, channel, &event["message"]).await,
        Some("message_deleted") => {
            let ts = event["deleted_ts"].as_str().unwrap_or_default();
            run.remove(
                &format!("{channel}:{ts}"),
                "slack.message.deleted",
                json!({ "channel": channel, "ts": ts }),
            )
            .await?;
            Ok(())
        }
        _ => store(run, &mut names, channel, event).await,
    }
}
