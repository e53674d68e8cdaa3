//! Local stand-ins for Google (OAuth, userinfo, Gmail), following the documented request and
//! response shapes: an authorization server that checks PKCE and client credentials,
//! issues and rotates tokens and answers `invalid_grant`, and a Gmail mailbox with
//! `messages.list` pagination, `history.list` (404 for a stale id), deletions, 401 for
//! unknown tokens and 429 with `Retry-After` on demand; and a primary calendar with
//! `events.list` pages, sync tokens (410 Gone once expired), recurring series and their
//! instances, cancellations, `events.watch` and `channels.stop`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

pub const CLIENT_ID: &str = "test-client.apps.googleusercontent.com";
pub const CLIENT_SECRET: &str = "test-client-secret";

/// A message to deliver into the fake mailbox.
pub struct Mail<'a> {
    pub id: &'a str,
    pub thread: &'a str,
    pub from: &'a str,
    pub subject: &'a str,
    pub body: &'a str,
    pub labels: &'a [&'a str],
    /// Extra headers: `In-Reply-To`, `References`, `Message-ID`.
    pub headers: &'a [(&'a str, &'a str)],
}

#[derive(Default)]
pub struct Google {
    /// code → (PKCE challenge, redirect_uri)
    codes: HashMap<String, (String, String)>,
    pub valid_access: HashSet<String>,
    pub valid_refresh: HashSet<String>,
    pub refreshes: usize,
    pub code_exchanges: usize,
    issued: usize,
    pub email: String,
    pub sub: String,
    /// Gmail: messages by id, in arrival order.
    pub messages: BTreeMap<String, Value>,
    pub order: Vec<String>,
    /// (history id, record) for `history.list`.
    pub history: Vec<(u64, Value)>,
    pub history_id: u64,
    /// `history.list` with a start id below this answers 404.
    pub oldest_history: u64,
    /// The next this-many Gmail calls answer 429 with `Retry-After: 1`.
    pub throttle: usize,
    pub gmail_calls: usize,
    /// Calendar: event id → (change sequence, event), the sequence a sync token names.
    pub events: BTreeMap<String, (u64, Value)>,
    pub calendar_seq: u64,
    /// Sync tokens naming a sequence below this answer 410 Gone.
    pub oldest_sync_token: u64,
    /// Every `events.list` query, for asserting how the client asked.
    pub calendar_lists: Vec<HashMap<String, String>>,
    /// `events.watch` request bodies, and the channel ids `channels.stop` was asked for.
    pub watches: Vec<Value>,
    pub stopped: Vec<String>,
    /// Tokens revoked through the revocation endpoint; Gmail `users.stop` calls.
    pub revoked: Vec<String>,
    pub gmail_stops: usize,
    /// Messages sent through `messages.send`: (id, the decoded RFC 822 text).
    pub sent: Vec<(String, String)>,
    /// `events.insert` calls, duplicates (409) included.
    pub inserts: usize,
    /// How long `messages.send` and `events.insert` take to answer (the effect is stored
    /// first): a process that dies meanwhile made it without learning so.
    pub write_delay: std::time::Duration,
    /// How long `messages.get` takes to answer (a mailbox that takes a while to read).
    pub read_delay: std::time::Duration,
}

impl Google {
    /// Creates or changes a calendar event (a new change sequence).
    pub fn put_event(&mut self, event: Value) {
        self.calendar_seq += 1;
        let id = event["id"].as_str().expect("events have ids").to_owned();
        let mut event = event;
        event["kind"] = json!("calendar#event");
        event["etag"] = json!(format!("\"{}\"", self.calendar_seq));
        event["updated"] = json!(format!(
            "2026-11-24T10:{:02}:00.000Z",
            self.calendar_seq % 60
        ));
        if event.get("status").is_none() {
            event["status"] = json!("confirmed");
        }
        self.events.insert(id, (self.calendar_seq, event));
    }

    /// Cancels an event; incremental listings return it with `status: cancelled`.
    pub fn cancel_event(&mut self, id: &str) {
        let mut event = self
            .events
            .get(id)
            .map(|(_, e)| json!({"id": e["id"], "recurringEventId": e["recurringEventId"], "originalStartTime": e["originalStartTime"]}))
            .unwrap_or_else(|| json!({"id": id}));
        event["status"] = json!("cancelled");
        self.put_event(event);
    }

    pub fn issue(&mut self) -> (String, String) {
        self.issued += 1;
        let access = format!("ya29.fake-{}", self.issued);
        let refresh = format!("1//refresh-{}", self.issued);
        self.valid_access.insert(access.clone());
        self.valid_refresh.insert(refresh.clone());
        assistant_tests::mark_sensitive(&access);
        assistant_tests::mark_sensitive(&refresh);
        (access, refresh)
    }

    /// A new message in the inbox, recorded in history.
    pub fn deliver(&mut self, id: &str, subject: &str, body: &str, labels: &[&str]) {
        let thread = format!("thread-{id}");
        self.deliver_mail(&Mail {
            id,
            thread: &thread,
            from: "Client <client@example.com>",
            subject,
            body,
            labels,
            headers: &[],
        });
    }

    /// A new message as described, recorded in history.
    pub fn deliver_mail(&mut self, m: &Mail<'_>) {
        self.history_id += 1;
        let mut headers = vec![
            json!({"name": "Subject", "value": m.subject}),
            json!({"name": "From", "value": m.from}),
            json!({"name": "To", "value": self.email}),
        ];
        for (name, value) in m.headers {
            headers.push(json!({"name": name, "value": value}));
        }
        let (id, body) = (m.id, m.body);
        let message = json!({
            "id": id, "threadId": m.thread, "labelIds": m.labels,
            "snippet": body.chars().take(40).collect::<String>(),
            "historyId": self.history_id.to_string(),
            "internalDate": (1_764_000_000_000u64 + self.history_id * 1000).to_string(),
            "sizeEstimate": body.len() + 500,
            "payload": {
                "mimeType": "multipart/alternative",
                "headers": headers,
                "parts": [
                    {"mimeType": "text/plain", "body": {"size": body.len(), "data": URL_SAFE_NO_PAD.encode(body)}},
                    {"mimeType": "text/html", "body": {"size": body.len(), "data": URL_SAFE_NO_PAD.encode(format!("<p>{body}</p>"))}}
                ]
            }
        });
        self.messages.insert(id.to_owned(), message);
        self.order.push(id.to_owned());
        self.history.push((
            self.history_id,
            json!({"id": self.history_id.to_string(), "messagesAdded": [{"message": {"id": id, "threadId": m.thread, "labelIds": m.labels}}]}),
        ));
    }

    pub fn delete(&mut self, id: &str) {
        self.history_id += 1;
        self.messages.remove(id);
        self.order.retain(|m| m != id);
        self.history.push((
            self.history_id,
            json!({"id": self.history_id.to_string(), "messagesDeleted": [{"message": {"id": id}}]}),
        ));
    }
}

pub struct FakeGoogle {
    pub server: MockServer,
    pub state: Arc<Mutex<Google>>,
}

/// A form-encoded request body as a map.
pub fn form(request: &Request) -> HashMap<String, String> {
    url::form_urlencoded::parse(&request.body)
        .into_owned()
        .collect()
}

fn query(request: &Request) -> Vec<(String, String)> {
    request.url.query_pairs().into_owned().collect()
}

fn param(request: &Request, name: &str) -> Option<String> {
    query(request)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

fn oauth_error(error: &str) -> ResponseTemplate {
    ResponseTemplate::new(400)
        .set_body_json(json!({"error": error, "error_description": format!("fake: {error}")}))
}

impl FakeGoogle {
    pub async fn start(email: &str) -> Self {
        assistant_tests::mark_sensitive(email);
        assistant_tests::mark_sensitive(CLIENT_SECRET);
        let server = MockServer::start().await;
        let state = Arc::new(Mutex::new(Google {
            email: email.to_owned(),
            sub: "1098765432101234567".into(),
            history_id: 1000,
            ..Google::default()
        }));

        // Authorization endpoint: the user consents at once; the code remembers the challenge.
        let s = state.clone();
        Mock::given(method("GET"))
            .and(path("/o/oauth2/v2/auth"))
            .respond_with(move |r: &Request| {
                let get = |k| param(r, k).unwrap_or_default();
                if get("client_id") != CLIENT_ID
                    || get("code_challenge_method") != "S256"
                    || get("response_type") != "code"
                {
                    return ResponseTemplate::new(400).set_body_string("bad authorization request");
                }
                let mut g = s.lock().unwrap();
                let code = format!("code-{}", g.codes.len() + 1);
                g.codes
                    .insert(code.clone(), (get("code_challenge"), get("redirect_uri")));
                let mut to = url::Url::parse(&get("redirect_uri")).unwrap();
                to.query_pairs_mut()
                    .append_pair("code", &code)
                    .append_pair("state", &get("state"));
                ResponseTemplate::new(302).insert_header("location", to.as_str())
            })
            .mount(&server)
            .await;

        // Token endpoint: code exchange (PKCE checked) and refresh (rotating).
        let s = state.clone();
        Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(move |r: &Request| {
                let f = form(r);
                let get = |k: &str| f.get(k).cloned().unwrap_or_default();
                // client_secret_basic or client_secret_post, as RFC 6749 allows.
                let basic = r
                    .headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Basic "))
                    .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                    .map(|b| String::from_utf8_lossy(&b).into_owned());
                let authenticated = basic.as_deref() == Some(&format!("{CLIENT_ID}:{CLIENT_SECRET}"))
                    || (get("client_id") == CLIENT_ID && get("client_secret") == CLIENT_SECRET);
                if !authenticated {
                    return oauth_error("invalid_client");
                }
                let mut g = s.lock().unwrap();
                match get("grant_type").as_str() {
                    "authorization_code" => {
                        // One use per code.
                        let Some((challenge, redirect)) = g.codes.remove(&get("code")) else {
                            return oauth_error("invalid_grant");
                        };
                        let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(get("code_verifier").as_bytes()));
                        if computed != challenge || redirect != get("redirect_uri") {
                            return oauth_error("invalid_grant");
                        }
                        g.code_exchanges += 1;
                        let (access, refresh) = g.issue();
                        ResponseTemplate::new(200).set_body_json(json!({
                            "access_token": access, "refresh_token": refresh, "expires_in": 3599,
                            "token_type": "Bearer",
                            "scope": "openid https://www.googleapis.com/auth/userinfo.email https://www.googleapis.com/auth/gmail.modify https://www.googleapis.com/auth/calendar",
                        }))
                    }
                    "refresh_token" => {
                        let old = get("refresh_token");
                        if !g.valid_refresh.remove(&old) {
                            return oauth_error("invalid_grant");
                        }
                        g.refreshes += 1;
                        let (access, refresh) = g.issue();
                        ResponseTemplate::new(200).set_body_json(json!({
                            "access_token": access, "refresh_token": refresh, "expires_in": 3599, "token_type": "Bearer",
                        }))
                    }
                    _ => oauth_error("unsupported_grant_type"),
                }
            })
            .mount(&server)
            .await;

        // Revocation (RFC 7009 as Google serves it): a refresh token takes its access
        // tokens with it; an unknown token is `invalid_token`.
        let s = state.clone();
        Mock::given(method("POST"))
            .and(path("/revoke"))
            .respond_with(move |r: &Request| {
                let token = form(r).get("token").cloned().unwrap_or_default();
                let mut g = s.lock().unwrap();
                let known = g.valid_refresh.remove(&token) | g.valid_access.remove(&token);
                if !known {
                    return ResponseTemplate::new(400).set_body_json(
                        json!({"error": "invalid_token", "error_description": "Token expired or revoked"}),
                    );
                }
                if token.starts_with("1//") {
                    // The whole grant goes.
                    g.valid_access.clear();
                    g.valid_refresh.clear();
                }
                g.revoked.push(token);
                ResponseTemplate::new(200).set_body_json(json!({}))
            })
            .mount(&server)
            .await;

        let s = state.clone();
        Mock::given(method("GET"))
            .and(path("/v1/userinfo"))
            .respond_with(move |r: &Request| {
                let g = s.lock().unwrap();
                if !authorized(&g, r) {
                    return ResponseTemplate::new(401);
                }
                ResponseTemplate::new(200).set_body_json(json!({"sub": g.sub, "email": g.email, "email_verified": true, "name": "Test Advisor"}))
            })
            .mount(&server)
            .await;

        let s = state.clone();
        Mock::given(path_regex(r"^/calendar/v3/.*"))
            .respond_with(move |r: &Request| calendar(&mut s.lock().unwrap(), r))
            .mount(&server)
            .await;

        let s = state.clone();
        Mock::given(path_regex(r"^/gmail/v1/users/me/.*"))
            .respond_with(move |r: &Request| gmail(&mut s.lock().unwrap(), r))
            .mount(&server)
            .await;

        Self { server, state }
    }

    pub fn uri(&self) -> String {
        self.server.uri()
    }

    /// Points a config at this fake.
    pub fn configure(&self, config: &mut common::Config) {
        let base = self.uri();
        config.google_client_id = CLIENT_ID.into();
        config.google_client_secret = CLIENT_SECRET.into();
        config.google_auth_url = format!("{base}/o/oauth2/v2/auth");
        config.google_token_url = format!("{base}/token");
        config.google_userinfo_url = format!("{base}/v1/userinfo");
        config.google_revoke_url = format!("{base}/revoke");
        config.gmail_api_base = base.clone();
        config.calendar_api_base = format!("{base}/calendar/v3");
    }
}

fn authorized(g: &Google, r: &Request) -> bool {
    r.headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| g.valid_access.contains(t))
}

fn gmail(g: &mut Google, r: &Request) -> ResponseTemplate {
    g.gmail_calls += 1;
    if g.throttle > 0 {
        g.throttle -= 1;
        return ResponseTemplate::new(429)
            .insert_header("retry-after", "1")
            .set_body_json(json!({"error": {"code": 429, "message": "Too many concurrent requests for user", "status": "RESOURCE_EXHAUSTED"}}));
    }
    if !authorized(g, r) {
        return ResponseTemplate::new(401).set_body_json(json!({"error": {"code": 401, "message": "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED"}}));
    }
    let rest = r
        .url
        .path()
        .trim_start_matches("/gmail/v1/users/me/")
        .to_owned();
    let page = |items: Vec<Value>, key: &str, extra: Value| {
        let start: usize = param(r, "pageToken")
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        let size: usize = param(r, "maxResults")
            .and_then(|m| m.parse().ok())
            .unwrap_or(100);
        let end = (start + size).min(items.len());
        let mut body = json!({ key: items[start.min(items.len())..end] });
        if end < items.len() {
            body["nextPageToken"] = json!(end.to_string());
        }
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        ResponseTemplate::new(200).set_body_json(body)
    };
    match (r.method.as_str(), rest.as_str()) {
        ("GET", "profile") => ResponseTemplate::new(200).set_body_json(json!({
            "emailAddress": g.email, "messagesTotal": g.messages.len(), "threadsTotal": g.messages.len(),
            "historyId": g.history_id.to_string(),
        })),
        ("POST", "messages/send") => {
            let body: Value = serde_json::from_slice(&r.body).unwrap_or_default();
            let Some(raw) = body["raw"].as_str().and_then(|r| {
                base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, r.trim_end_matches('=')).ok()
            }) else {
                return google_error(400, "invalidArgument", "'raw' RFC822 payload message string or uploading message via /upload/* URL required");
            };
            let id = format!("sent-{}", g.sent.len() + 1);
            g.sent.push((id.clone(), String::from_utf8_lossy(&raw).into_owned()));
            ResponseTemplate::new(200)
                .set_body_json(json!({"id": id, "threadId": format!("thread-{id}"), "labelIds": ["SENT"]}))
                .set_delay(g.write_delay)
        }
        ("GET", "messages") if param(r, "q").is_some_and(|q| q.starts_with("rfc822msgid:")) => {
            let wanted = param(r, "q").unwrap().trim_start_matches("rfc822msgid:").to_owned();
            let found: Vec<Value> = g
                .sent
                .iter()
                .filter(|(_, raw)| raw.lines().any(|l| l.eq_ignore_ascii_case(&format!("Message-ID: {wanted}"))))
                .map(|(id, _)| json!({"id": id, "threadId": format!("thread-{id}")}))
                .collect();
            ResponseTemplate::new(200).set_body_json(json!({"messages": found, "resultSizeEstimate": found.len()}))
        }
        ("GET", "messages") => {
            // Newest first, as Gmail lists.
            let items = g.order.iter().rev().map(|id| json!({"id": id, "threadId": format!("thread-{id}")})).collect();
            page(items, "messages", json!({"resultSizeEstimate": g.order.len()}))
        }
        ("GET", "history") => {
            let start: u64 = param(r, "startHistoryId").and_then(|h| h.parse().ok()).unwrap_or(0);
            if start < g.oldest_history {
                return ResponseTemplate::new(404).set_body_json(json!({"error": {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND"}}));
            }
            let items = g.history.iter().filter(|(h, _)| *h > start).map(|(_, v)| v.clone()).collect();
            page(items, "history", json!({"historyId": g.history_id.to_string()}))
        }
        ("POST", "stop") => {
            g.gmail_stops += 1;
            ResponseTemplate::new(204)
        }
        ("POST", "watch") => ResponseTemplate::new(200).set_body_json(json!({
            "historyId": g.history_id.to_string(),
            "expiration": (chrono::Utc::now() + chrono::Duration::days(7)).timestamp_millis().to_string(),
        })),
        ("GET", id) if id.starts_with("messages/") => match g.messages.get(id.trim_start_matches("messages/")) {
            Some(m) => ResponseTemplate::new(200).set_body_json(m).set_delay(g.read_delay),
            None => ResponseTemplate::new(404).set_body_json(json!({"error": {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND"}})),
        },
        _ => ResponseTemplate::new(404),
    }
}

fn google_error(code: u16, reason: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(code).set_body_json(json!({"error": {
        "errors": [{"domain": "global", "reason": reason, "message": message}],
        "code": code, "message": message
    }}))
}

/// `events.list`, `events.watch` and `channels.stop` on the primary calendar. A page token
/// carries the listing it belongs to (`offset|since|upto`), so pages stay consistent while
/// events change; the last page carries `nextSyncToken`.
fn calendar(g: &mut Google, r: &Request) -> ResponseTemplate {
    if !authorized(g, r) {
        return google_error(401, "authError", "Invalid Credentials");
    }
    let path = r.url.path().trim_start_matches("/calendar/v3");
    match (r.method.as_str(), path) {
        ("GET", "/calendars/primary/events") => {
            let q: HashMap<String, String> = query(r).into_iter().collect();
            g.calendar_lists.push(q.clone());
            let size: usize = q
                .get("maxResults")
                .and_then(|m| m.parse().ok())
                .unwrap_or(250);
            let (offset, since, upto) = match (q.get("pageToken"), q.get("syncToken")) {
                (Some(page), _) => {
                    let parts: Vec<u64> = page.split('|').filter_map(|p| p.parse().ok()).collect();
                    if parts.len() != 3 {
                        return google_error(400, "invalid", "Invalid page token value.");
                    }
                    (parts[0] as usize, parts[1], parts[2])
                }
                (None, Some(token)) => {
                    let Some(seq) = token
                        .strip_prefix("sync-")
                        .and_then(|t| t.parse::<u64>().ok())
                    else {
                        return google_error(400, "invalid", "Invalid sync token value.");
                    };
                    if seq < g.oldest_sync_token {
                        return google_error(
                            410,
                            "fullSyncRequired",
                            "Sync token is no longer valid, a full sync is required.",
                        );
                    }
                    (0, seq, g.calendar_seq)
                }
                (None, None) => (0, 0, g.calendar_seq),
            };
            if q.contains_key("syncToken") && q.contains_key("timeMin") {
                return google_error(
                    400,
                    "syncTokenWithRequestRestrictions",
                    "Sync token cannot be used with other request restrictions.",
                );
            }
            // timeMin: a lower bound (exclusive) for an event's end time.
            let time_min = q
                .get("timeMin")
                .map(|t| chrono::DateTime::parse_from_rfc3339(t).expect("timeMin is RFC 3339"));
            let ends_after = |e: &Value| {
                let Some(min) = time_min else { return true };
                let end = e["end"]["dateTime"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .or_else(|| {
                        let day = chrono::NaiveDate::parse_from_str(
                            e["end"]["date"].as_str()?,
                            "%Y-%m-%d",
                        )
                        .ok()?;
                        Some(day.and_hms_opt(0, 0, 0)?.and_utc().fixed_offset())
                    });
                end.is_none_or(|end| end > min)
            };
            let incremental = since > 0;
            let mut changed: Vec<&(u64, Value)> = g
                .events
                .values()
                .filter(|(seq, e)| {
                    *seq > since
                        && *seq <= upto
                        // A full listing leaves out deleted events (showDeleted=false).
                        && (incremental || e["status"] != "cancelled")
                        && ends_after(e)
                })
                .collect();
            changed.sort_by_key(|(seq, _)| *seq);
            let end = (offset + size).min(changed.len());
            let items: Vec<Value> = changed[offset.min(changed.len())..end]
                .iter()
                .map(|(_, e)| e.clone())
                .collect();
            let mut body = json!({
                "kind": "calendar#events", "summary": g.email, "timeZone": "America/New_York",
                "items": items,
            });
            if end < changed.len() {
                body["nextPageToken"] = json!(format!("{end}|{since}|{upto}"));
            } else {
                body["nextSyncToken"] = json!(format!("sync-{upto}"));
            }
            ResponseTemplate::new(200).set_body_json(body)
        }
        ("POST", "/calendars/primary/events") => {
            g.inserts += 1;
            let mut event: Value = serde_json::from_slice(&r.body).unwrap_or_default();
            let id = match event["id"].as_str() {
                // Client-chosen ids: base32hex characters, 5 to 1024 of them.
                Some(id)
                    if id.len() >= 5
                        && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'v')) =>
                {
                    id.to_owned()
                }
                Some(_) => return google_error(400, "invalid", "Invalid resource id value."),
                None => format!("ev{}", g.calendar_seq + 1),
            };
            if g.events.contains_key(&id) {
                return google_error(409, "duplicate", "The requested identifier already exists.");
            }
            event["id"] = json!(id);
            event["htmlLink"] = json!(format!("https://www.google.com/calendar/event?eid={id}"));
            g.put_event(event.clone());
            let stored = g.events[&id].1.clone();
            ResponseTemplate::new(200)
                .set_body_json(stored)
                .set_delay(g.write_delay)
        }
        ("GET", p) if p.starts_with("/calendars/primary/events/") => {
            let id = p.trim_start_matches("/calendars/primary/events/");
            match g.events.get(id) {
                Some((_, e)) => ResponseTemplate::new(200).set_body_json(e),
                None => google_error(404, "notFound", "Not Found"),
            }
        }
        ("POST", "/calendars/primary/events/watch") => {
            let body: Value = serde_json::from_slice(&r.body).unwrap_or_default();
            if body["type"] != "web_hook"
                || body["id"].as_str().is_none()
                || !body["address"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("http"))
            {
                return google_error(400, "invalid", "Invalid channel.");
            }
            g.watches.push(body.clone());
            ResponseTemplate::new(200).set_body_json(json!({
                "kind": "api#channel", "id": body["id"], "token": body["token"],
                "resourceId": format!("res-{}", g.watches.len()),
                "resourceUri": "https://www.googleapis.com/calendar/v3/calendars/primary/events?alt=json",
                "expiration": (chrono::Utc::now() + chrono::Duration::days(7)).timestamp_millis().to_string(),
            }))
        }
        ("POST", "/channels/stop") => {
            let body: Value = serde_json::from_slice(&r.body).unwrap_or_default();
            g.stopped
                .push(body["id"].as_str().unwrap_or_default().to_owned());
            ResponseTemplate::new(204)
        }
        _ => google_error(404, "notFound", "Not Found"),
    }
}
