//! HubSpot CRM: contacts, companies, deals and notes, incremental by last-modified date
//! through the CRM search API (ascending, so the cursor only moves forward), each object
//! read with its associations. Webhooks sync one object. Cursor:
//! `{"since": {"contacts": ms, ...}, "seen": {"contacts": ["id", ..]}}`.

use super::{Names, Outcome, Run, SyncResult, base};
use chrono::{DateTime, Utc};
use common::consumer::HandleError;
use common::events::DocumentInput;
use common::ids::Source;
use providers::ProviderError;
use serde::Deserialize;
use serde_json::{Value, json};

pub const OBJECT_TYPES: [&str; 4] = ["contacts", "companies", "deals", "notes"];

fn properties(object_type: &str) -> &'static [&'static str] {
    match object_type {
        "contacts" => &[
            "firstname",
            "lastname",
            "email",
            "phone",
            "company",
            "jobtitle",
            "lifecyclestage",
            "lastmodifieddate",
        ],
        "companies" => &[
            "name",
            "domain",
            "industry",
            "description",
            "city",
            "hs_lastmodifieddate",
        ],
        "deals" => &[
            "dealname",
            "amount",
            "dealstage",
            "pipeline",
            "closedate",
            "hs_lastmodifieddate",
        ],
        _ => &["hs_note_body", "hs_timestamp", "hs_lastmodifieddate"],
    }
}

/// Properties whose history is kept (`db::accounts`): what an account was worth when.
fn tracked(object_type: &str) -> &'static [&'static str] {
    match object_type {
        "companies" => &["lifecyclestage"],
        "contacts" => &["lifecyclestage"],
        "deals" => &["dealstage", "amount"],
        _ => &[],
    }
}

fn modified_property(object_type: &str) -> &'static str {
    if object_type == "contacts" {
        "lastmodifieddate"
    } else {
        "hs_lastmodifieddate"
    }
}

fn singular(object_type: &str) -> &'static str {
    match object_type {
        "contacts" => "contact",
        "companies" => "company",
        "deals" => "deal",
        _ => "note",
    }
}

#[derive(Debug, Deserialize)]
struct SearchPage {
    #[serde(default)]
    results: Vec<Value>,
    total: Option<u64>,
    paging: Option<Paging>,
}

#[derive(Debug, Deserialize)]
struct Paging {
    next: Option<Next>,
}

#[derive(Debug, Deserialize)]
struct Next {
    after: String,
}

fn api_base(run: &Run<'_>) -> String {
    base(&run.sync.config.hubspot_api_base).to_owned()
}

/// Milliseconds since the epoch from HubSpot's ISO timestamps.
fn millis(value: &Value) -> Option<i64> {
    let text = value.as_str()?;
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Contact and deal fields that domain events carry for rules.
const RULE_FIELDS: [&str; 10] = [
    "email",
    "firstname",
    "lastname",
    "company",
    "lifecyclestage",
    "jobtitle",
    "dealname",
    "dealstage",
    "amount",
    "hs_task_subject",
];

pub async fn changes(run: &mut Run<'_>, mut cursor: Value) -> SyncResult<Outcome> {
    if !cursor.is_object() {
        cursor = json!({});
    }
    for object_type in OBJECT_TYPES {
        if object_changes(run, &mut cursor, object_type).await? == Outcome::Continued {
            return Ok(Outcome::Continued);
        }
    }
    Ok(Outcome::Done)
}

/// One object type from its cursor: `since` (ms, inclusive) and `seen` (the ids already
/// stored whose last-modified time is exactly `since`). Each query starts again from the
/// newest time stored rather than paging with `after` across runs, so an object modified
/// between two runs moves to the end of the order instead of shifting an unread one past
/// the page boundary. `after` pages only through objects that share one timestamp.
async fn object_changes(
    run: &mut Run<'_>,
    cursor: &mut Value,
    object_type: &str,
) -> SyncResult<Outcome> {
    let property = modified_property(object_type);
    let mut since = cursor["since"][object_type].as_i64().unwrap_or(0);
    let mut seen: Vec<String> = cursor["seen"][object_type]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let mut after: Option<String> = None;
    let save = |cursor: &mut Value, since: i64, seen: &[String]| {
        cursor["since"][object_type] = json!(since);
        cursor["seen"][object_type] = json!(seen);
    };
    loop {
        let mut body = json!({
            "filterGroups": [{ "filters": [{
                "propertyName": property,
                "operator": "GTE",
                "value": since.to_string(),
            }]}],
            "sorts": [{ "propertyName": property, "direction": "ASCENDING" }],
            "properties": properties(object_type),
            "limit": run.limit().clamp(1, 100),
        });
        if let Some(a) = &after {
            body["after"] = json!(a);
        }
        let url = format!("{}/crm/v3/objects/{object_type}/search", api_base(run));
        let page: SearchPage = run.api().post(&url, &body).await?;
        if let Some(total) = page.total {
            // The pass's first search of this type counts all it reads of it.
            run.estimate(object_type, total).await?;
        }
        let started_at = since;
        for object in &page.results {
            let Some(id) = object["id"].as_str() else {
                continue;
            };
            let modified = millis(&object["properties"][property]).unwrap_or(since);
            if modified <= since && seen.iter().any(|s| s == id) {
                continue;
            }
            if run.at_limit() {
                save(cursor, since, &seen);
                run.save_cursor(cursor).await?;
                run.continue_later();
                return Ok(Outcome::Continued);
            }
            one(run, object_type, id, false).await?;
            if modified > since {
                since = modified;
                seen.clear();
            }
            seen.push(id.to_owned());
        }
        let next = page.paging.and_then(|p| p.next).map(|n| n.after);
        if next.is_none() {
            save(cursor, since, &seen);
            run.save_cursor(cursor).await?;
            return Ok(Outcome::Done);
        }
        // Moved on: ask again from the newest time; stuck on one time: page through it.
        after = if since > started_at { None } else { next };
    }
}

/// Reads one object with its associations and stores it; `deleted` (from a webhook)
/// removes it instead. A 404 means it is gone.
pub async fn one(run: &mut Run<'_>, object_type: &str, id: &str, deleted: bool) -> SyncResult<()> {
    // Both end up in a URL path: only what HubSpot's own ids and types look like.
    let known_type = ["contacts", "companies", "deals", "notes"].contains(&object_type);
    if !known_type || id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(
            HandleError::poison(format!("not a HubSpot object: {object_type:?} {id:?}")).into(),
        );
    }
    let name = singular(object_type);
    let external_id = format!("{name}:{id}");
    if deleted {
        run.remove(
            &external_id,
            &format!("{name}.deleted"),
            json!({ "object_type": object_type, "id": id }),
        )
        .await?;
        return Ok(());
    }
    let url = format!("{}/crm/v3/objects/{object_type}/{id}", api_base(run));
    // Companies also bring the revenue properties the team named, with their history.
    let mut history: Vec<String> = tracked(object_type).iter().map(|p| p.to_string()).collect();
    if object_type == "companies" {
        let settings = db::insights::settings(&run.sync.db, run.user).await?;
        history.extend(settings.revenue_properties);
    }
    let mut wanted: Vec<String> = properties(object_type)
        .iter()
        .map(|p| p.to_string())
        .collect();
    wanted.extend(
        history
            .iter()
            .filter(|p| !wanted.contains(p))
            .cloned()
            .collect::<Vec<_>>(),
    );
    let mut query = vec![
        ("properties", wanted.join(",")),
        ("associations", "contacts,companies,deals".to_owned()),
    ];
    if !history.is_empty() {
        query.push(("propertiesWithHistory", history.join(",")));
    }
    let object: Value = match run.api().get(&url, &query).await {
        Ok(o) => o,
        Err(ProviderError::Status { status: 404, .. }) => {
            run.remove(
                &external_id,
                &format!("{name}.deleted"),
                json!({ "object_type": object_type, "id": id }),
            )
            .await?;
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    if object["archived"] == true {
        run.remove(
            &external_id,
            &format!("{name}.deleted"),
            json!({ "object_type": object_type, "id": id }),
        )
        .await?;
        return Ok(());
    }
    let doc = to_document(object_type, &object);
    if !history.is_empty() {
        let modified = doc.occurred_at.unwrap_or_else(Utc::now);
        let values = history_values(&object, &history);
        db::accounts::record_history(&run.sync.db, run.user, name, id, modified, &values).await?;
    }
    if doc.body.len() > run.sync.config.sync_max_item_bytes {
        let size = doc.body.len() as i64;
        run.skip(
            &external_id,
            &format!("{name} is {size} bytes, over the limit"),
            Some(size),
        )
        .await?;
        return Ok(());
    }
    // The fields rules compare (never bodies): who the contact is, where a deal stands.
    let properties: serde_json::Map<String, Value> = doc.metadata["properties"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| RULE_FIELDS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut data = json!({ "object_type": object_type, "id": id, "title": doc.title, "associations": doc.metadata["associations"] });
    if let Some(map) = data.as_object_mut() {
        for (k, v) in properties {
            map.entry(k).or_insert(v);
        }
    }
    let created = format!("{name}.created");
    let updated = format!("{name}.updated");
    run.store(
        doc,
        Names {
            created: &created,
            updated: Some(&updated),
        },
        data,
    )
    .await?;
    Ok(())
}

/// The tracked properties' values: each with when it was set where HubSpot gave its history
/// (`propertiesWithHistory`, newest first), else the current value alone.
fn history_values(object: &Value, properties: &[String]) -> Vec<db::accounts::PropertyValue> {
    let mut out = Vec::new();
    for property in properties {
        let changes = object["propertiesWithHistory"][property].as_array();
        let timed: Vec<_> = changes
            .into_iter()
            .flatten()
            .filter_map(|c| {
                let at = DateTime::<Utc>::from_timestamp_millis(millis(&c["timestamp"])?)?;
                Some(db::accounts::PropertyValue {
                    property: property.clone(),
                    value: c["value"].as_str().map(str::to_owned),
                    set_at: Some(at),
                })
            })
            .collect();
        if timed.is_empty() {
            out.push(db::accounts::PropertyValue {
                property: property.clone(),
                value: object["properties"][property]
                    .as_str()
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned),
                set_at: None,
            });
        } else {
            out.extend(timed);
        }
    }
    out
}

/// Association ids by type: `{"contacts": ["1"], "companies": [..]}`.
fn associations(object: &Value) -> Value {
    let mut out = serde_json::Map::new();
    if let Some(map) = object["associations"].as_object() {
        for (kind, value) in map {
            let ids: Vec<Value> = value["results"]
                .as_array()
                .map(|r| {
                    r.iter()
                        .filter_map(|a| {
                            a["id"]
                                .as_str()
                                .or(a["toObjectId"].as_str())
                                .map(|s| json!(s))
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.insert(kind.clone(), Value::Array(ids));
        }
    }
    Value::Object(out)
}

pub fn to_document(object_type: &str, object: &Value) -> DocumentInput {
    let p = &object["properties"];
    let s = |k: &str| p[k].as_str().filter(|v| !v.is_empty()).map(str::to_owned);
    let id = object["id"].as_str().unwrap_or_default();
    let line = |label: &str, key: &str| s(key).map(|v| format!("{label}: {v}"));
    let (kind, title, lines): (&str, String, Vec<Option<String>>) = match object_type {
        "contacts" => {
            let name = [s("firstname"), s("lastname")]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            let title = if name.is_empty() {
                s("email").unwrap_or_else(|| format!("Contact {id}"))
            } else {
                name
            };
            (
                "contact",
                title,
                vec![
                    line("Email", "email"),
                    line("Phone", "phone"),
                    line("Company", "company"),
                    line("Job title", "jobtitle"),
                    line("Lifecycle stage", "lifecyclestage"),
                ],
            )
        }
        "companies" => (
            "company",
            s("name").unwrap_or_else(|| format!("Company {id}")),
            vec![
                line("Domain", "domain"),
                line("Industry", "industry"),
                line("City", "city"),
                s("description"),
            ],
        ),
        "deals" => (
            "deal",
            s("dealname").unwrap_or_else(|| format!("Deal {id}")),
            vec![
                line("Amount", "amount"),
                line("Stage", "dealstage"),
                line("Pipeline", "pipeline"),
                line("Close date", "closedate"),
            ],
        ),
        _ => {
            let body = s("hs_note_body")
                .map(|b| super::html_to_text(&b))
                .unwrap_or_default();
            let title = body
                .lines()
                .next()
                .unwrap_or("Note")
                .chars()
                .take(80)
                .collect::<String>();
            ("note", title, vec![Some(body)])
        }
    };
    let occurred_at = if object_type == "notes" {
        millis(&p["hs_timestamp"])
    } else {
        millis(&object["updatedAt"]).or_else(|| millis(&p[modified_property(object_type)]))
    }
    .and_then(DateTime::<Utc>::from_timestamp_millis);
    DocumentInput {
        source: Source::parse("hubspot").expect("valid source"),
        kind: Source::parse(kind).expect("valid kind"),
        external_id: format!("{}:{id}", singular(object_type)),
        title,
        body: lines.into_iter().flatten().collect::<Vec<_>>().join("\n"),
        metadata: json!({
            "object_type": object_type,
            "id": id,
            "properties": p,
            "associations": associations(object),
        }),
        occurred_at,
    }
}
