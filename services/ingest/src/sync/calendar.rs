//! Google Calendar (primary calendar): a full listing of the last `CALENDAR_INITIAL_DAYS`
//! the first time, then `syncToken` incremental sync; 410 Gone means the token expired and the run starts over in full.
//! Recurring events are stored as their series (with the RRULE) plus each changed
//! instance; cancellations delete the stored event and announce `calendar.event.cancelled`.
//! Cursor: `{"sync_token": "..", "page": "..", "time_min": ".."}`.

use super::{Names, Outcome, Run, SyncError, SyncResult, base};
use chrono::{DateTime, NaiveDate, Utc};
use common::events::DocumentInput;
use common::ids::Source;
use providers::ProviderError;
use rand::RngCore;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventList {
    #[serde(default)]
    items: Vec<Value>,
    next_page_token: Option<String>,
    next_sync_token: Option<String>,
    /// The calendar's time zone (IANA), which becomes the user's.
    time_zone: Option<String>,
}

fn events_url(run: &Run<'_>) -> String {
    format!(
        "{}/calendars/primary/events",
        base(&run.sync.config.calendar_api_base)
    )
}

pub async fn changes(run: &mut Run<'_>, cursor: Value) -> SyncResult<Outcome> {
    let sync_token = cursor["sync_token"].as_str().map(str::to_owned);
    let page = cursor["page"].as_str().map(str::to_owned);
    let time_min = cursor["time_min"].as_str().map(str::to_owned);
    match list(run, sync_token.clone(), page, time_min).await {
        Err(SyncError::Provider(ProviderError::Status { status: 410, .. }))
            if sync_token.is_some() =>
        {
            tracing::info!(user.id = %run.user, "calendar sync token expired; full sync");
            run.save_cursor(&json!({})).await?;
            list(run, None, None, None).await
        }
        other => other,
    }
}

/// One listing: incremental from `sync_token`, or full from `time_min` (the window start,
/// kept in the cursor so every page of one listing asks the same question).
async fn list(
    run: &mut Run<'_>,
    sync_token: Option<String>,
    mut page: Option<String>,
    time_min: Option<String>,
) -> SyncResult<Outcome> {
    let api = run.api();
    let incremental = sync_token.is_some();
    // A full listing covers the configured window; Google still ends it with a sync token
    // that then reports every later change, inside the window or not.
    let time_min = (!incremental).then(|| {
        time_min.unwrap_or_else(|| {
            let days = i64::from(run.sync.config.calendar_initial_days);
            (Utc::now() - chrono::Duration::days(days))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        })
    });
    loop {
        let mut params = vec![("maxResults", run.limit().clamp(1, 2500).to_string())];
        if let Some(t) = &sync_token {
            params.push(("syncToken", t.clone()));
        }
        if let Some(t) = &time_min {
            params.push(("timeMin", t.clone()));
        }
        if let Some(p) = &page {
            params.push(("pageToken", p.clone()));
        }
        let list: EventList = api.get(&events_url(run), &params).await?;
        if let Some(zone) = &list.time_zone
            && zone.parse::<chrono_tz::Tz>().is_ok()
        {
            db::users::set_time_zone(&run.sync.db, run.user, zone).await?;
        }
        for event in &list.items {
            apply(run, event, incremental).await?;
        }
        page = list.next_page_token;
        match (&page, list.next_sync_token) {
            (None, Some(next)) => {
                run.save_cursor(&json!({ "sync_token": next })).await?;
                return Ok(Outcome::Done);
            }
            (None, None) => {
                // Google always ends with a sync token; keep the old one if it did not.
                run.save_cursor(&json!({ "sync_token": sync_token }))
                    .await?;
                return Ok(Outcome::Done);
            }
            (Some(next), _) if run.at_limit() => {
                run.save_cursor(
                    &json!({ "sync_token": sync_token, "page": next, "time_min": time_min }),
                )
                .await?;
                run.continue_later();
                return Ok(Outcome::Continued);
            }
            (Some(_), _) => {}
        }
    }
}

async fn apply(run: &mut Run<'_>, event: &Value, incremental: bool) -> SyncResult<()> {
    let Some(id) = event["id"].as_str() else {
        return Ok(());
    };
    let attendees: Vec<&str> = event["attendees"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["email"].as_str())
        .collect();
    let summary = json!({
        "event_id": id,
        "title": event["summary"],
        "start": event["start"],
        "end": event["end"],
        "organizer": event["organizer"]["email"],
        "attendees": attendees,
        "recurring_event_id": event["recurringEventId"],
    });
    if event["status"] == "cancelled" {
        // A full listing has no cancellations to announce; an incremental one does.
        if incremental {
            run.remove(id, "calendar.event.cancelled", summary).await?;
        }
        return Ok(());
    }
    let doc = to_document(event);
    if doc.body.len() > run.sync.config.sync_max_item_bytes {
        let size = doc.body.len() as i64;
        run.skip(
            id,
            &format!("event description is {size} bytes, over the limit"),
            Some(size),
        )
        .await?;
        return Ok(());
    }
    run.store(
        doc,
        Names {
            created: "calendar.event.created",
            updated: Some("calendar.event.updated"),
        },
        summary,
    )
    .await?;
    Ok(())
}

fn when(value: &Value) -> Option<DateTime<Utc>> {
    if let Some(t) = value["dateTime"].as_str() {
        return DateTime::parse_from_rfc3339(t)
            .ok()
            .map(|t| t.with_timezone(&Utc));
    }
    let day = NaiveDate::parse_from_str(value["date"].as_str()?, "%Y-%m-%d").ok()?;
    Some(day.and_hms_opt(0, 0, 0)?.and_utc())
}

/// A calendar event as a document: title, time, place, attendees, description.
pub fn to_document(event: &Value) -> DocumentInput {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let attendees: Vec<String> = event["attendees"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    let who = p["displayName"]
                        .as_str()
                        .or(p["email"].as_str())
                        .unwrap_or("?");
                    format!(
                        "{who} ({})",
                        p["responseStatus"].as_str().unwrap_or("needsAction")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let start = when(&event["start"]);
    let mut lines = Vec::new();
    if let Some(s) = start {
        lines.push(format!("When: {}", s.format("%Y-%m-%d %H:%M UTC")));
    }
    if let Some(l) = event["location"].as_str() {
        lines.push(format!("Where: {l}"));
    }
    if let Some(r) = event["recurrence"].as_array() {
        let rules: Vec<String> = r
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect();
        lines.push(format!("Repeats: {}", rules.join("; ")));
    }
    if !attendees.is_empty() {
        lines.push(format!("Attendees: {}", attendees.join(", ")));
    }
    let description = event["description"]
        .as_str()
        .map(|d| {
            if d.contains('<') {
                super::html_to_text(d)
            } else {
                d.to_owned()
            }
        })
        .unwrap_or_default();
    if !description.is_empty() {
        lines.push(String::new());
        lines.push(description);
    }
    DocumentInput {
        source: Source::parse("calendar").expect("valid source"),
        kind: Source::parse("meeting").expect("valid kind"),
        external_id: text(&event["id"]),
        title: event["summary"]
            .as_str()
            .unwrap_or("(untitled event)")
            .to_owned(),
        body: lines.join("\n"),
        metadata: json!({
            "start": event["start"],
            "end": event["end"],
            "status": event["status"],
            "organizer": event["organizer"]["email"],
            "attendees": event["attendees"],
            "recurrence": event["recurrence"],
            "recurring_event_id": event["recurringEventId"],
            "original_start": event["originalStartTime"],
            "html_link": event["htmlLink"],
            "updated": event["updated"],
        }),
        occurred_at: start,
    }
}

/// Opens a push channel on the primary calendar, then stops the channels it replaces.
pub async fn watch(run: &Run<'_>) -> SyncResult<()> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Channel {
        resource_id: Option<String>,
        expiration: Option<String>,
    }
    let old = db::sync_state::channels_of(&run.sync.db, run.user, "calendar").await?;
    let id = uuid::Uuid::new_v4().to_string();
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let token = hex::encode(secret);
    let address = format!(
        "{}/api/webhooks/calendar",
        base(&run.sync.config.public_url)
    );
    let body = json!({
        "id": id, "type": "web_hook", "address": address, "token": token,
        "params": { "ttl": "604800" }
    });
    let channel: Channel = match run
        .api()
        .post(&format!("{}/watch", events_url(run)), &body)
        .await
    {
        Ok(c) => c,
        // Google only pushes to public HTTPS addresses; the scheduled sync still runs.
        Err(ProviderError::Status {
            status: 400,
            detail,
        }) => {
            tracing::warn!(%detail, "Calendar refused the push channel; scheduled sync only");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let expires_at = channel
        .expiration
        .and_then(|ms| ms.parse::<i64>().ok())
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .unwrap_or_else(|| Utc::now() + chrono::Duration::days(7));
    db::sync_state::save_channel(
        &run.sync.db,
        &db::sync_state::Channel {
            id: id.clone(),
            user_id: run.user,
            resource: "calendar".into(),
            token_hash: Some(db::sessions::hash(&token)),
            resource_id: channel.resource_id,
            expires_at,
        },
    )
    .await?;
    let stop = format!("{}/channels/stop", base(&run.sync.config.calendar_api_base));
    for c in old {
        let body = json!({ "id": c.id, "resourceId": c.resource_id });
        if let Err(e) = run.api().post::<Value>(&stop, &body).await {
            tracing::debug!(error = %e, "old calendar channel not stopped; it expires on its own");
        }
        db::sync_state::delete_channel(&run.sync.db, &c.id).await?;
    }
    tracing::info!(user.id = %run.user, channel.id = %id, %expires_at, "calendar channel active");
    Ok(())
}
