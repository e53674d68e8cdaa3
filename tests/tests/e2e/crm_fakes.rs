//! Local stand-ins for HubSpot and Slack with state, following their documented request
//! and response shapes. HubSpot: the OAuth token endpoint (code and refresh, rotating),
//! CRM search with a `GTE` filter on the last-modified property, ascending sort and
//! `after` paging, single-object reads with associations, 404 for deleted objects,
//! refresh-token deletion, 401 for
//! unknown tokens and one 503 on demand. Slack: `oauth.v2.access` (with the workspace),
//! `users.conversations`, `conversations.history` (newest first, `oldest` exclusive, cursor
//! pages), `conversations.replies`, `users.info`, `conversations.info`, `auth.revoke`, `ok: false` errors
//! in a 200 and 429 with `Retry-After` on demand.

use crate::fakes::form;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

fn bearer(r: &Request) -> Option<String> {
    r.headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_owned)
}

fn query(r: &Request) -> HashMap<String, String> {
    r.url.query_pairs().into_owned().collect()
}

pub const HUBSPOT_CLIENT_ID: &str = "hubspot-client";
pub const HUBSPOT_CLIENT_SECRET: &str = "hubspot-client-secret-for-tests";

#[derive(Default)]
pub struct HubSpot {
    /// object type → id → (last modified ms, properties)
    pub objects: HashMap<String, BTreeMap<String, (i64, Value)>>,
    /// "contacts:1" → ["companies:9001", ..]
    pub associations: HashMap<String, Vec<String>>,
    pub valid_access: HashSet<String>,
    pub valid_refresh: HashSet<String>,
    issued: usize,
    pub refreshes: usize,
    /// Every search request body, by object type.
    pub searches: Vec<(String, Value)>,
    pub reads: usize,
    /// The next this-many API calls answer 503.
    pub unavailable: usize,
    pub served_503: usize,
    /// Refresh tokens deleted through `DELETE /oauth/v1/refresh-tokens/{token}`.
    pub revoked: Vec<String>,
    /// Objects created through the API: (object type, id, the request body).
    pub created: Vec<(String, String, Value)>,
    /// `PATCH` updates: (object type, id, properties).
    pub updated: Vec<(String, String, Value)>,
    /// How long a create takes to answer (it is stored before): a process that dies
    /// meanwhile has made the object without learning its id.
    pub create_delay: std::time::Duration,
    /// How long a new or changed object stays out of search results (HubSpot's search index
    /// trails writes by a few seconds): a lookup made meanwhile finds nothing.
    pub search_lag: std::time::Duration,
    /// "contacts:1" → every version put, oldest first: what `propertiesWithHistory` reports.
    pub versions: HashMap<String, Vec<(i64, Value)>>,
}

impl HubSpot {
    pub fn issue(&mut self) -> (String, String) {
        self.issued += 1;
        let access = format!("hs-access-{}", self.issued);
        let refresh = format!("hs-refresh-{}", self.issued);
        self.valid_access.insert(access.clone());
        self.valid_refresh.insert(refresh.clone());
        assistant_tests::mark_sensitive(&access);
        assistant_tests::mark_sensitive(&refresh);
        (access, refresh)
    }

    /// Creates or changes an object, last modified at `modified` ms.
    pub fn put(&mut self, object_type: &str, id: &str, modified: i64, properties: Value) {
        self.versions
            .entry(format!("{object_type}:{id}"))
            .or_default()
            .push((modified, properties.clone()));
        self.objects
            .entry(object_type.to_owned())
            .or_default()
            .insert(id.to_owned(), (modified, properties));
    }

    pub fn associate(&mut self, from: &str, to: &str) {
        self.associations
            .entry(from.to_owned())
            .or_default()
            .push(to.to_owned());
    }
}

fn modified_property(object_type: &str) -> &'static str {
    if object_type == "contacts" {
        "lastmodifieddate"
    } else {
        "hs_lastmodifieddate"
    }
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn hubspot_object(object_type: &str, id: &str, modified: i64, properties: &Value) -> Value {
    let mut p = properties.clone();
    p[modified_property(object_type)] = json!(iso(modified));
    p["hs_object_id"] = json!(id);
    json!({
        "id": id, "properties": p, "createdAt": iso(modified - 86_400_000),
        "updatedAt": iso(modified), "archived": false,
    })
}

fn hubspot_error(status: u16, category: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "status": "error", "message": message, "category": category,
        "correlationId": "5c2e1bc8-0000-4000-8000-000000000000"
    }))
}

pub struct FakeHubSpot {
    pub server: MockServer,
    pub state: Arc<Mutex<HubSpot>>,
}

impl FakeHubSpot {
    pub async fn start() -> Self {
        assistant_tests::mark_sensitive(HUBSPOT_CLIENT_SECRET);
        let server = MockServer::start().await;
        let state = Arc::new(Mutex::new(HubSpot::default()));

        let s = state.clone();
        Mock::given(method("POST"))
            .and(path("/oauth/v1/token"))
            .respond_with(move |r: &Request| {
                let f = form(r);
                let get = |k: &str| f.get(k).cloned().unwrap_or_default();
                if get("client_id") != HUBSPOT_CLIENT_ID
                    || get("client_secret") != HUBSPOT_CLIENT_SECRET
                {
                    return hubspot_error(400, "BAD_CLIENT_ID", "missing or unknown client id");
                }
                let mut h = s.lock().unwrap();
                let ok = match get("grant_type").as_str() {
                    "authorization_code" => get("code") == "hs-code",
                    "refresh_token" => {
                        let ok = h.valid_refresh.remove(&get("refresh_token"));
                        h.refreshes += usize::from(ok);
                        ok
                    }
                    _ => false,
                };
                if !ok {
                    return ResponseTemplate::new(400).set_body_json(json!({
                        "status": "BAD_REFRESH_TOKEN", "message": "missing or invalid refresh token"
                    }));
                }
                let (access, refresh) = h.issue();
                ResponseTemplate::new(200).set_body_json(json!({
                    "access_token": access, "refresh_token": refresh, "expires_in": 1800,
                    "token_type": "bearer"
                }))
            })
            .mount(&server)
            .await;

        let s = state.clone();
        Mock::given(method("DELETE"))
            .and(path_regex(r"^/oauth/v1/refresh-tokens/.+"))
            .respond_with(move |r: &Request| {
                let token = r.url.path().trim_start_matches("/oauth/v1/refresh-tokens/");
                let mut h = s.lock().unwrap();
                if !h.valid_refresh.remove(token) {
                    return hubspot_error(404, "NOT_FOUND", "refresh token not found");
                }
                h.valid_access.clear();
                h.revoked.push(token.to_owned());
                ResponseTemplate::new(204)
            })
            .mount(&server)
            .await;

        let s = state.clone();
        Mock::given(path_regex(r"^/crm/v3/objects/.*"))
            .respond_with(move |r: &Request| crm(&mut s.lock().unwrap(), r))
            .mount(&server)
            .await;
        Self { server, state }
    }

    pub fn uri(&self) -> String {
        self.server.uri()
    }

    pub fn configure(&self, config: &mut common::Config) {
        config.hubspot_client_id = HUBSPOT_CLIENT_ID.into();
        config.hubspot_client_secret = HUBSPOT_CLIENT_SECRET.into();
        config.hubspot_auth_url = format!("{}/oauth/authorize", self.uri());
        config.hubspot_api_base = self.uri();
    }
}

fn crm(h: &mut HubSpot, r: &Request) -> ResponseTemplate {
    if h.unavailable > 0 {
        h.unavailable -= 1;
        h.served_503 += 1;
        return ResponseTemplate::new(503).set_body_string("upstream unavailable");
    }
    if !bearer(r).is_some_and(|t| h.valid_access.contains(&t)) {
        return hubspot_error(
            401,
            "EXPIRED_AUTHENTICATION",
            "The OAuth token used to make this call expired.",
        );
    }
    let parts: Vec<String> = r
        .url
        .path()
        .trim_start_matches("/crm/v3/objects/")
        .split('/')
        .map(str::to_owned)
        .collect();
    match (r.method.as_str(), parts.as_slice()) {
        ("POST", [object_type, search]) if search == "search" => {
            let body: Value = serde_json::from_slice(&r.body).unwrap_or_default();
            h.searches.push((object_type.clone(), body.clone()));
            let filter = &body["filterGroups"][0]["filters"][0];
            let limit = body["limit"].as_u64().unwrap_or(10) as usize;
            // A lookup by value: EQ (case-insensitive, as HubSpot compares emails) or
            // CONTAINS_TOKEN on a text property.
            if matches!(
                filter["operator"].as_str(),
                Some("EQ") | Some("CONTAINS_TOKEN")
            ) && filter["propertyName"] != modified_property(object_type)
            {
                let (property, value) = (
                    filter["propertyName"].as_str().unwrap_or_default(),
                    filter["value"].as_str().unwrap_or_default().to_lowercase(),
                );
                let results: Vec<Value> = h
                    .objects
                    .get(object_type.as_str())
                    .into_iter()
                    .flatten()
                    .filter(|(_, (ms, _))| {
                        *ms <= chrono::Utc::now().timestamp_millis()
                            - h.search_lag.as_millis() as i64
                    })
                    .filter(|(_, (_, p))| {
                        let v = p[property].as_str().unwrap_or_default().to_lowercase();
                        if filter["operator"] == "EQ" {
                            v == value
                        } else {
                            v.split(|c: char| !c.is_alphanumeric()).any(|t| t == value)
                        }
                    })
                    .take(limit)
                    .map(|(id, (ms, p))| hubspot_object(object_type, id, *ms, p))
                    .collect();
                return ResponseTemplate::new(200)
                    .set_body_json(json!({"total": results.len(), "results": results}));
            }
            if limit > 200 || filter["propertyName"] != modified_property(object_type) {
                return hubspot_error(400, "VALIDATION_ERROR", "invalid search request");
            }
            let since: i64 = filter["value"]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let after: usize = body["after"]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut matching: Vec<(&String, &(i64, Value))> = h
                .objects
                .get(object_type.as_str())
                .map(|m| m.iter().filter(|(_, (ms, _))| *ms >= since).collect())
                .unwrap_or_default();
            matching.sort_by_key(|(id, (ms, _))| (*ms, id.parse::<u64>().unwrap_or(0)));
            let end = (after + limit).min(matching.len());
            let results: Vec<Value> = matching[after.min(end)..end]
                .iter()
                .map(|(id, (ms, p))| hubspot_object(object_type, id, *ms, p))
                .collect();
            let mut out = json!({"total": matching.len(), "results": results});
            if end < matching.len() {
                out["paging"] =
                    json!({"next": {"after": end.to_string(), "link": format!("?after={end}")}});
            }
            ResponseTemplate::new(200).set_body_json(out)
        }
        ("POST", [object_type]) => {
            let body: Value = serde_json::from_slice(&r.body).unwrap_or_default();
            let Some(properties) = body["properties"].as_object() else {
                return hubspot_error(400, "VALIDATION_ERROR", "properties are required");
            };
            if object_type == "contacts" {
                let email = properties
                    .get("email")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let taken = h
                    .objects
                    .get("contacts")
                    .into_iter()
                    .flatten()
                    .find(|(_, (_, p))| {
                        p["email"]
                            .as_str()
                            .is_some_and(|e| e.eq_ignore_ascii_case(email))
                    });
                if let Some((id, _)) = taken {
                    return hubspot_error(
                        409,
                        "CONFLICT",
                        &format!("Contact already exists. Existing ID: {id}"),
                    );
                }
            }
            let id = (9001 + h.created.len()).to_string();
            let now = chrono::Utc::now().timestamp_millis();
            h.put(object_type, &id, now, Value::Object(properties.clone()));
            for to in body["associations"].as_array().into_iter().flatten() {
                if let Some(other) = to["to"]["id"].as_str() {
                    h.associate(&format!("{object_type}:{id}"), &format!("contacts:{other}"));
                }
            }
            h.created
                .push((object_type.clone(), id.clone(), body.clone()));
            ResponseTemplate::new(201)
                .set_body_json(hubspot_object(
                    object_type,
                    &id,
                    now,
                    &Value::Object(properties.clone()),
                ))
                .set_delay(h.create_delay)
        }
        ("PATCH", [object_type, id]) => {
            let body: Value = serde_json::from_slice(&r.body).unwrap_or_default();
            let now = chrono::Utc::now().timestamp_millis();
            let Some((_, p)) = h
                .objects
                .get(object_type.as_str())
                .and_then(|m| m.get(id))
                .cloned()
            else {
                return hubspot_error(404, "OBJECT_NOT_FOUND", "Object not found");
            };
            let mut p = p;
            if let (Some(p), Some(changes)) = (p.as_object_mut(), body["properties"].as_object()) {
                p.extend(changes.clone());
            }
            h.put(object_type, id, now, p.clone());
            h.updated
                .push((object_type.clone(), id.clone(), body["properties"].clone()));
            ResponseTemplate::new(200).set_body_json(hubspot_object(object_type, id, now, &p))
        }
        ("GET", [object_type, id]) => {
            h.reads += 1;
            let Some((ms, p)) = h.objects.get(object_type.as_str()).and_then(|m| m.get(id)) else {
                return hubspot_error(404, "OBJECT_NOT_FOUND", "Object not found");
            };
            let mut object = hubspot_object(object_type, id, *ms, p);
            let mut by_type: BTreeMap<String, Vec<Value>> = BTreeMap::new();
            for to in h
                .associations
                .get(&format!("{object_type}:{id}"))
                .into_iter()
                .flatten()
            {
                let (kind, other) = to.split_once(':').unwrap();
                by_type.entry(kind.to_owned()).or_default().push(json!({
                    "id": other, "type": format!("{}_to_{}", object_type.trim_end_matches('s'), kind.trim_end_matches('s'))
                }));
            }
            if !by_type.is_empty() {
                object["associations"] = by_type
                    .into_iter()
                    .map(|(k, v)| (k, json!({"results": v})))
                    .collect::<serde_json::Map<_, _>>()
                    .into();
            }
            // Each asked property's values, newest first, one entry per change.
            if let Some(asked) = query(r).get("propertiesWithHistory") {
                let versions = &h.versions[&format!("{object_type}:{id}")];
                let mut history = serde_json::Map::new();
                for property in asked.split(',') {
                    let mut changes: Vec<Value> = Vec::new();
                    let mut last: Option<&Value> = None;
                    for (ms, p) in versions {
                        let Some(v) = p.get(property) else { continue };
                        if last != Some(v) {
                            changes.push(json!({"value": v, "timestamp": iso(*ms),
                                                "sourceType": "API", "sourceId": "fake"}));
                            last = Some(v);
                        }
                    }
                    changes.reverse();
                    history.insert(property.to_owned(), Value::Array(changes));
                }
                object["propertiesWithHistory"] = Value::Object(history);
            }
            ResponseTemplate::new(200).set_body_json(object)
        }
        _ => hubspot_error(404, "NOT_FOUND", "unknown endpoint"),
    }
}

pub const SLACK_CLIENT_ID: &str = "1234567890.0987654321";
pub const SLACK_CLIENT_SECRET: &str = "slack-client-secret-for-tests";
pub const SLACK_TEAM: &str = "T0FAKE123";

/// The token Slack gives the app itself (the bot); the product must never read with it.
pub const SLACK_APP_TOKEN: &str = "xoxb-app-token-shared-by-the-workspace";

#[derive(Default)]
pub struct Slack {
    /// (id, name, the first person (`token`, member U1234) is a member)
    pub channels: Vec<(String, String, bool)>,
    /// Private channels: invisible to people who are not in them.
    pub private: HashSet<String>,
    /// Other people of the workspace: their user token → (member id, their channels).
    pub people: HashMap<String, (String, HashSet<String>)>,
    /// Whose token the next OAuth consent hands out (default: `token`).
    pub consenting: Option<String>,
    /// User tokens revoked with `auth.revoke`.
    pub revoked_tokens: HashSet<String>,
    /// channel → messages, oldest first
    pub messages: HashMap<String, Vec<Value>>,
    /// "channel:thread ts" → replies, oldest first
    pub replies: HashMap<String, Vec<Value>>,
    pub users: HashMap<String, String>,
    pub token: String,
    /// code → the PKCE verifier or redirect the exchange must bring
    pub codes: HashSet<String>,
    /// Every Web API call: (method, query).
    pub calls: Vec<(String, HashMap<String, String>)>,
    /// The next this-many `conversations.history` calls answer 429 with `Retry-After: 1`.
    pub throttle: usize,
    /// `auth.revoke` was called: the token no longer works.
    pub revoked: bool,
    /// Messages are stamped from a day ago on, one second apart.
    pub epoch: i64,
    pub next_ts: i64,
}

impl Slack {
    /// The person a user token belongs to and their channels.
    fn person(&self, token: &str) -> Option<(String, HashSet<String>)> {
        if token == self.token {
            let mine = self
                .channels
                .iter()
                .filter(|(_, _, member)| *member)
                .map(|(id, _, _)| id.clone())
                .collect();
            return Some(("U1234".into(), mine));
        }
        self.people.get(token).cloned()
    }

    /// Another person of the workspace, member of `channels`.
    pub fn add_person(&mut self, token: &str, member: &str, channels: &[&str]) {
        assistant_tests::mark_sensitive(token);
        self.people.insert(
            token.to_owned(),
            (
                member.to_owned(),
                channels.iter().map(|c| (*c).to_owned()).collect(),
            ),
        );
    }

    /// Posts a message to a channel; returns its ts.
    pub fn post(&mut self, channel: &str, user: &str, text: &str) -> String {
        self.next_ts += 1;
        let ts = format!("{}.{:06}", self.epoch + self.next_ts, self.next_ts);
        self.messages
            .entry(channel.to_owned())
            .or_default()
            .push(json!({
                "type": "message", "user": user, "text": text, "ts": ts,
            }));
        ts
    }

    /// A reply in a thread; the parent gets `reply_count` and `latest_reply`.
    pub fn reply(&mut self, channel: &str, parent: &str, user: &str, text: &str) -> String {
        self.next_ts += 1;
        let ts = format!("{}.{:06}", self.epoch + self.next_ts, self.next_ts);
        let list = self
            .replies
            .entry(format!("{channel}:{parent}"))
            .or_default();
        list.push(
            json!({"type": "message", "user": user, "text": text, "ts": ts, "thread_ts": parent}),
        );
        let count = list.len();
        if let Some(m) = self
            .messages
            .get_mut(channel)
            .and_then(|ms| ms.iter_mut().find(|m| m["ts"] == parent))
        {
            m["thread_ts"] = json!(parent);
            m["reply_count"] = json!(count);
            m["latest_reply"] = json!(ts);
        }
        ts
    }

    pub fn join(&mut self, channel: &str, user: &str) {
        self.next_ts += 1;
        let ts = format!("{}.{:06}", self.epoch + self.next_ts, self.next_ts);
        self.messages
            .entry(channel.to_owned())
            .or_default()
            .push(json!({
                "type": "message", "subtype": "channel_join", "user": user,
                "text": format!("<@{user}> has joined the channel"), "ts": ts,
            }));
    }
}

pub struct FakeSlack {
    pub server: MockServer,
    pub state: Arc<Mutex<Slack>>,
}

fn slack_ok(body: Value) -> ResponseTemplate {
    let mut body = body;
    body["ok"] = json!(true);
    ResponseTemplate::new(200).set_body_json(body)
}

fn slack_err(error: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({"ok": false, "error": error}))
}

/// A page of `items` from an opaque cursor (`off:N`), with Slack's `response_metadata`.
fn slack_page(items: &[Value], q: &HashMap<String, String>, key: &str) -> Value {
    let start: usize = q
        .get("cursor")
        .and_then(|c| c.strip_prefix("off:"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let limit: usize = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(100)
        .min(1000);
    let end = (start + limit).min(items.len());
    let next = if end < items.len() {
        format!("off:{end}")
    } else {
        String::new()
    };
    json!({ key: items[start.min(end)..end], "has_more": end < items.len(), "response_metadata": {"next_cursor": next} })
}

impl FakeSlack {
    pub async fn start(token: &str) -> Self {
        assistant_tests::mark_sensitive(token);
        assistant_tests::mark_sensitive(SLACK_CLIENT_SECRET);
        let server = MockServer::start().await;
        let state = Arc::new(Mutex::new(Slack {
            token: token.to_owned(),
            epoch: chrono::Utc::now().timestamp() - 86_400,
            ..Slack::default()
        }));

        let s = state.clone();
        Mock::given(method("POST"))
            .and(path("/api/oauth.v2.access"))
            .respond_with(move |r: &Request| {
                let f = form(r);
                let get = |k: &str| f.get(k).cloned().unwrap_or_default();
                let basic = r
                    .headers
                    .get("authorization")
                    .is_some();
                if basic || get("client_id") != SLACK_CLIENT_ID || get("client_secret") != SLACK_CLIENT_SECRET {
                    return slack_err("invalid_client_id");
                }
                let mut g = s.lock().unwrap();
                if !g.codes.remove(&get("code")) {
                    return slack_err("invalid_code");
                }
                let token = g.consenting.clone().unwrap_or_else(|| g.token.clone());
                let Some((member, _)) = g.person(&token) else {
                    return slack_err("invalid_code");
                };
                slack_ok(json!({
                    "access_token": SLACK_APP_TOKEN, "token_type": "bot",
                    "scope": "chat:write",
                    "bot_user_id": "U0KRQLJ9H", "app_id": "A0KRD7HC3",
                    "team": {"name": "Wealth Partners", "id": SLACK_TEAM},
                    "enterprise": null, "is_enterprise_install": false,
                    "authed_user": {
                        "id": member, "token_type": "user", "access_token": token,
                        "scope": "channels:history,channels:read,groups:history,groups:read,users:read",
                    }
                }))
            })
            .mount(&server)
            .await;

        let s = state.clone();
        Mock::given(path_regex(r"^/api/(users|conversations|auth)\..*"))
            .respond_with(move |r: &Request| web_api(&mut s.lock().unwrap(), r))
            .mount(&server)
            .await;
        Self { server, state }
    }

    pub fn configure(&self, config: &mut common::Config) {
        config.slack_client_id = SLACK_CLIENT_ID.into();
        config.slack_client_secret = SLACK_CLIENT_SECRET.into();
        config.slack_auth_url = format!("{}/oauth/v2/authorize", self.server.uri());
        config.slack_api_base = format!("{}/api", self.server.uri());
    }
}

fn web_api(g: &mut Slack, r: &Request) -> ResponseTemplate {
    let name = r.url.path().trim_start_matches("/api/").to_owned();
    let q = query(r);
    g.calls.push((name.clone(), q.clone()));
    let token = bearer(r).unwrap_or_default();
    if (g.revoked && token == g.token) || g.revoked_tokens.contains(&token) {
        return slack_err("token_revoked");
    }
    // Only people's own tokens read; the app's token is not what the product may use.
    let Some((_member, theirs)) = g.person(&token) else {
        return slack_err("invalid_auth");
    };
    let ts = |m: &Value| {
        m["ts"]
            .as_str()
            .unwrap_or("0")
            .parse::<f64>()
            .unwrap_or(0.0)
    };
    match name.as_str() {
        "users.conversations" => {
            let mine: Vec<Value> = g
                .channels
                .iter()
                .filter(|(id, _, _)| theirs.contains(id))
                .map(|(id, name, _)| json!({"id": id, "name": name, "is_channel": true, "is_member": true}))
                .collect();
            slack_ok(slack_page(&mine, &q, "channels"))
        }
        "conversations.history" => {
            if g.throttle > 0 {
                g.throttle -= 1;
                return ResponseTemplate::new(429)
                    .insert_header("retry-after", "1")
                    .set_body_json(json!({"ok": false, "error": "ratelimited"}));
            }
            let Some(channel) = q.get("channel") else {
                return slack_err("channel_not_found");
            };
            if !theirs.contains(channel) {
                return slack_err(if g.private.contains(channel) {
                    "channel_not_found"
                } else {
                    "not_in_channel"
                });
            }
            let oldest: f64 = q.get("oldest").and_then(|o| o.parse().ok()).unwrap_or(0.0);
            let inclusive = q.get("inclusive").is_some_and(|i| i == "true" || i == "1");
            let mut newest_first: Vec<Value> = g
                .messages
                .get(channel)
                .into_iter()
                .flatten()
                .filter(|m| ts(m) > oldest || (inclusive && ts(m) == oldest))
                .cloned()
                .collect();
            newest_first.reverse();
            slack_ok(slack_page(&newest_first, &q, "messages"))
        }
        "conversations.replies" => {
            let (Some(channel), Some(parent)) = (q.get("channel"), q.get("ts")) else {
                return slack_err("invalid_arguments");
            };
            if !theirs.contains(channel) {
                return slack_err("channel_not_found");
            }
            let Some(first) = g
                .messages
                .get(channel)
                .and_then(|ms| ms.iter().find(|m| m["ts"] == parent.as_str()))
                .cloned()
            else {
                return slack_err("thread_not_found");
            };
            let mut thread = vec![first];
            thread.extend(
                g.replies
                    .get(&format!("{channel}:{parent}"))
                    .cloned()
                    .unwrap_or_default(),
            );
            slack_ok(slack_page(&thread, &q, "messages"))
        }
        "users.info" => match q.get("user").and_then(|u| g.users.get(u).map(|n| (u, n))) {
            Some((id, name)) => slack_ok(json!({"user": {
                "id": id, "name": name.to_lowercase(), "real_name": name,
                "profile": {"display_name": name, "real_name": name}
            }})),
            None => slack_err("user_not_found"),
        },
        "conversations.info" => {
            match q
                .get("channel")
                .and_then(|c| g.channels.iter().find(|(id, _, _)| id == c))
            {
                Some((id, _, _)) if g.private.contains(id) && !theirs.contains(id) => {
                    slack_err("channel_not_found")
                }
                Some((id, name, _)) => slack_ok(
                    json!({"channel": {"id": id, "name": name, "is_member": theirs.contains(id)}}),
                ),
                None => slack_err("channel_not_found"),
            }
        }
        "auth.revoke" => {
            if token == g.token {
                g.revoked = true;
            }
            g.revoked_tokens.insert(token);
            slack_ok(json!({"revoked": true}))
        }
        _ => slack_err("unknown_method"),
    }
}
