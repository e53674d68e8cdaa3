//! Gmail: the first sync pages through `messages.list` for the last `GMAIL_INITIAL_DAYS`
//! (the profile's `historyId` taken first, so nothing that arrives meanwhile is missed);
//! afterwards `history.list` from the stored `historyId`. A 404 there means the id is too
//! old, and the run starts a full sync. Cursor:
//! `{"history_id": "..", "page": {"mode": "full"|"history", "token": "..", "start": ".."}}`.

use super::{Names, Outcome, Run, SyncResult, base};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use common::events::DocumentInput;
use common::ids::Source;
use providers::ProviderError;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeSet;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    history_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IdRef {
    id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageList {
    #[serde(default)]
    messages: Vec<IdRef>,
    next_page_token: Option<String>,
    result_size_estimate: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HistoryList {
    #[serde(default)]
    history: Vec<History>,
    next_page_token: Option<String>,
    history_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct History {
    #[serde(default)]
    messages_added: Vec<MessageRef>,
    #[serde(default)]
    messages_deleted: Vec<MessageRef>,
    #[serde(default)]
    labels_added: Vec<MessageRef>,
    #[serde(default)]
    labels_removed: Vec<MessageRef>,
}

#[derive(Debug, Deserialize)]
struct MessageRef {
    message: IdRef,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub id: String,
    pub thread_id: Option<String>,
    #[serde(default)]
    pub label_ids: Vec<String>,
    #[serde(default)]
    pub snippet: String,
    pub internal_date: Option<String>,
    pub size_estimate: Option<i64>,
    pub payload: Option<Part>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Part {
    #[serde(default)]
    pub mime_type: String,
    #[serde(default)]
    pub filename: String,
    #[serde(default)]
    pub headers: Vec<Header>,
    pub body: Option<Body>,
    #[serde(default)]
    pub parts: Vec<Part>,
}

#[derive(Debug, Deserialize)]
pub struct Header {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Body {
    pub size: Option<i64>,
    pub data: Option<String>,
    pub attachment_id: Option<String>,
}

fn users_me(run: &Run<'_>) -> String {
    format!(
        "{}/gmail/v1/users/me",
        base(&run.sync.config.gmail_api_base)
    )
}

pub async fn changes(run: &mut Run<'_>, cursor: Value) -> SyncResult<Outcome> {
    let history_id = cursor["history_id"].as_str().map(str::to_owned);
    let page = &cursor["page"];
    match (page["mode"].as_str(), history_id) {
        (Some("full"), _) | (None, None) => {
            let start = page["start"].as_str().map(str::to_owned);
            let token = page["token"].as_str().map(str::to_owned);
            full(run, start, token).await
        }
        (_, Some(history_id)) => {
            let token = page["token"].as_str().map(str::to_owned);
            match history(run, &history_id, token).await {
                Err(super::SyncError::Provider(ProviderError::Status { status: 404, .. })) => {
                    tracing::info!(user.id = %run.user, "Gmail history id too old; full sync");
                    run.save_cursor(&json!({})).await?;
                    full(run, None, None).await
                }
                other => other,
            }
        }
        (Some(_), None) => full(run, None, None).await,
    }
}

/// Pages through recent mail. `start` is the history id taken before the first page.
async fn full(
    run: &mut Run<'_>,
    start: Option<String>,
    mut token: Option<String>,
) -> SyncResult<Outcome> {
    let api = run.api();
    let start = match start {
        Some(s) => s,
        None => {
            let profile: Profile = api.get(&format!("{}/profile", users_me(run)), &[]).await?;
            profile.history_id
        }
    };
    let query = format!("newer_than:{}d", run.sync.config.gmail_initial_days);
    loop {
        let mut params = vec![("q", query.clone()), ("maxResults", page_size(run))];
        if let Some(t) = &token {
            params.push(("pageToken", t.clone()));
        }
        let list: MessageList = api
            .get(&format!("{}/messages", users_me(run)), &params)
            .await?;
        if let Some(estimate) = list.result_size_estimate {
            // The first page's estimate counts the whole window; recorded once per pass.
            run.estimate("messages", estimate).await?;
        }
        for m in &list.messages {
            fetch_and_store(run, &m.id).await?;
        }
        token = list.next_page_token;
        match &token {
            None => {
                run.save_cursor(&json!({ "history_id": start })).await?;
                return Ok(Outcome::Done);
            }
            Some(next) if run.at_limit() => {
                run.save_cursor(
                    &json!({ "page": { "mode": "full", "token": next, "start": start } }),
                )
                .await?;
                run.continue_later();
                return Ok(Outcome::Continued);
            }
            Some(_) => {}
        }
    }
}

/// Applies history since `history_id`: new messages, deletions and label changes.
async fn history(
    run: &mut Run<'_>,
    history_id: &str,
    mut token: Option<String>,
) -> SyncResult<Outcome> {
    let api = run.api();
    loop {
        let mut params = vec![
            ("startHistoryId", history_id.to_owned()),
            ("maxResults", page_size(run)),
        ];
        for kind in [
            "messageAdded",
            "messageDeleted",
            "labelAdded",
            "labelRemoved",
        ] {
            params.push(("historyTypes", kind.to_owned()));
        }
        if let Some(t) = &token {
            params.push(("pageToken", t.clone()));
        }
        let page: HistoryList = api
            .get(&format!("{}/history", users_me(run)), &params)
            .await?;
        let mut deleted = BTreeSet::new();
        let mut changed = BTreeSet::new();
        for h in &page.history {
            for m in &h.messages_deleted {
                deleted.insert(m.message.id.clone());
            }
            for m in h
                .messages_added
                .iter()
                .chain(&h.labels_added)
                .chain(&h.labels_removed)
            {
                changed.insert(m.message.id.clone());
            }
        }
        for id in &deleted {
            run.remove(id, "email.deleted", json!({ "message_id": id }))
                .await?;
        }
        for id in changed.difference(&deleted) {
            fetch_and_store(run, id).await?;
        }
        token = page.next_page_token;
        match &token {
            None => {
                let latest = page.history_id.unwrap_or_else(|| history_id.to_owned());
                run.save_cursor(&json!({ "history_id": latest })).await?;
                return Ok(Outcome::Done);
            }
            Some(next) if run.at_limit() => {
                run.save_cursor(&json!({
                    "history_id": history_id,
                    "page": { "mode": "history", "token": next }
                }))
                .await?;
                run.continue_later();
                return Ok(Outcome::Continued);
            }
            Some(_) => {}
        }
    }
}

fn page_size(run: &Run<'_>) -> String {
    run.limit().clamp(1, 500).to_string()
}

async fn fetch_and_store(run: &mut Run<'_>, id: &str) -> SyncResult<()> {
    let url = format!("{}/messages/{id}", users_me(run));
    let message: Message = match run.api().get(&url, &[("format", "full".into())]).await {
        Ok(m) => m,
        // Deleted between the listing and now.
        Err(ProviderError::Status { status: 404, .. }) => {
            run.remove(id, "email.deleted", json!({ "message_id": id }))
                .await?;
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let max = run.sync.config.sync_max_item_bytes as i64;
    if let Some(size) = message.size_estimate.filter(|s| *s > max) {
        run.skip(
            id,
            &format!("message is {size} bytes, over the {max}-byte limit"),
            Some(size),
        )
        .await?;
        return Ok(());
    }
    let email = to_document(&message);
    let sent = message.label_ids.iter().any(|l| l == "SENT");
    // What rules read: the sender and recipients, the subject, the snippet, and what the
    // message answers (tasks waiting for a reply match on it).
    let data = json!({
        "message_id": message.id,
        "thread_id": message.thread_id,
        "from": email.metadata["from"],
        // Gmail's own Authentication-Results said DMARC (or SPF and DKIM) passed for the
        // From domain: only then is the sender who the From header says.
        "from_verified": email.metadata["from_verified"],
        "to": email.metadata["to"],
        "cc": email.metadata["cc"],
        "subject": email.title,
        "snippet": email.metadata["snippet"],
        "labels": message.label_ids,
        "rfc822_message_id": email.metadata["rfc822_message_id"],
        "in_reply_to": email.metadata["in_reply_to"],
        "references": email.metadata["references"],
    });
    let created = if sent { "email.sent" } else { "email.received" };
    run.store(
        email,
        Names {
            created,
            updated: None,
        },
        data,
    )
    .await?;
    Ok(())
}

/// A Gmail message as a document: text/plain body (else HTML as text), headers, thread,
/// labels and attachment names and sizes.
pub fn to_document(message: &Message) -> DocumentInput {
    let empty = Part {
        mime_type: String::new(),
        filename: String::new(),
        headers: vec![],
        body: None,
        parts: vec![],
    };
    let payload = message.payload.as_ref().unwrap_or(&empty);
    let header = |name: &str| {
        payload
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.clone())
    };
    let body = find_body(payload, "text/plain")
        .or_else(|| find_body(payload, "text/html").map(|h| super::html_to_text(&h)))
        .unwrap_or_else(|| message.snippet.clone());
    let mut attachments = Vec::new();
    collect_attachments(payload, &mut attachments);
    let authentication: Vec<String> = payload
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("Authentication-Results"))
        .map(|h| h.value.clone())
        .collect();
    let from_verified =
        header("From").is_some_and(|from| common::email::sender_verified(&from, &authentication));
    let occurred_at = message
        .internal_date
        .as_deref()
        .and_then(|ms| ms.parse::<i64>().ok())
        .and_then(DateTime::<Utc>::from_timestamp_millis);
    DocumentInput {
        source: Source::parse("gmail").expect("valid source"),
        kind: Source::parse("email").expect("valid kind"),
        external_id: message.id.clone(),
        title: header("Subject").unwrap_or_else(|| "(no subject)".into()),
        body,
        metadata: json!({
            "from": header("From"),
            "from_verified": from_verified,
            "to": header("To"),
            "cc": header("Cc"),
            "date": header("Date"),
            "thread_id": message.thread_id,
            "rfc822_message_id": header("Message-ID"),
            "in_reply_to": header("In-Reply-To"),
            "references": header("References"),
            "labels": message.label_ids,
            "attachments": attachments,
            "snippet": message.snippet,
        }),
        occurred_at,
    }
}

fn find_body(part: &Part, mime: &str) -> Option<String> {
    if part.mime_type.eq_ignore_ascii_case(mime)
        && part.filename.is_empty()
        && let Some(data) = part.body.as_ref().and_then(|b| b.data.as_deref())
    {
        let bytes = URL_SAFE_NO_PAD.decode(data.trim_end_matches('=')).ok()?;
        return Some(String::from_utf8_lossy(&bytes).into_owned());
    }
    part.parts.iter().find_map(|p| find_body(p, mime))
}

fn collect_attachments(part: &Part, out: &mut Vec<Value>) {
    if !part.filename.is_empty() {
        out.push(json!({
            "filename": part.filename,
            "mime_type": part.mime_type,
            "size": part.body.as_ref().and_then(|b| b.size),
            "attachment_id": part.body.as_ref().and_then(|b| b.attachment_id.clone()),
        }));
    }
    for p in &part.parts {
        collect_attachments(p, out);
    }
}

/// Starts (or renews) the Gmail watch on the configured Pub/Sub topic.
pub async fn watch(run: &Run<'_>) -> SyncResult<()> {
    let topic = &run.sync.config.gmail_pubsub_topic;
    if topic.is_empty() {
        tracing::debug!("GMAIL_PUBSUB_TOPIC is not set; no Gmail watch (scheduled sync only)");
        return Ok(());
    }
    #[derive(Deserialize)]
    struct Watch {
        expiration: String,
    }
    let url = format!("{}/watch", users_me(run));
    let watch: Watch = run.api().post(&url, &json!({ "topicName": topic })).await?;
    let expires_at = watch
        .expiration
        .parse::<i64>()
        .ok()
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .unwrap_or_else(|| Utc::now() + chrono::Duration::days(7));
    db::sync_state::save_channel(
        &run.sync.db,
        &db::sync_state::Channel {
            id: format!("gmail:{}", run.user),
            user_id: run.user,
            resource: "gmail".into(),
            token_hash: None,
            resource_id: None,
            expires_at,
        },
    )
    .await?;
    tracing::info!(user.id = %run.user, %expires_at, "Gmail watch active");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn plain_text_wins_html_is_converted_and_attachments_are_listed() {
        let message: Message = serde_json::from_value(json!({
            "id": "m1", "threadId": "t1", "labelIds": ["INBOX"], "snippet": "hi",
            "internalDate": "1764000000000", "sizeEstimate": 900,
            "payload": {
                "mimeType": "multipart/mixed",
                "headers": [{"name": "Subject", "value": "Portfolio review"}, {"name": "From", "value": "Ann <ann@example.com>"}],
                "parts": [
                    {"mimeType": "multipart/alternative", "parts": [
                        {"mimeType": "text/html", "body": {"data": b64("<p>Hello <b>there</b></p>")}},
                        {"mimeType": "text/plain", "body": {"data": b64("Hello there")}}
                    ]},
                    {"mimeType": "application/pdf", "filename": "statement.pdf", "body": {"size": 48213, "attachmentId": "a1"}}
                ]
            }
        }))
        .unwrap();
        let doc = to_document(&message);
        assert_eq!(doc.title, "Portfolio review");
        assert_eq!(doc.body, "Hello there");
        assert_eq!(doc.metadata["attachments"][0]["filename"], "statement.pdf");
        assert_eq!(doc.metadata["attachments"][0]["size"], 48213);
        assert_eq!(doc.metadata["thread_id"], "t1");
        assert_eq!(doc.occurred_at.unwrap().timestamp_millis(), 1764000000000);

        let html_only: Message = serde_json::from_value(json!({
            "id": "m2", "payload": {"mimeType": "text/html", "body": {"data": b64("<div>Rebalance <i>now</i></div>")}}
        }))
        .unwrap();
        let doc = to_document(&html_only);
        assert!(
            doc.body.contains("Rebalance") && !doc.body.contains("<div>"),
            "{}",
            doc.body
        );
        assert_eq!(doc.title, "(no subject)");
    }
}
