//! What provider webhooks carry, read from their bodies: pure functions from bytes to what a
//! handler acts on, so that every parser is exercised on its own (tests, `make fuzz`). A body
//! that is not the provider's shape is an error that says why, never a panic.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use serde::Deserialize;
use serde_json::Value;

/// One HubSpot change a webhook announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubspotChange {
    pub portal: String,
    pub event_id: String,
    /// `contacts`, `companies` or `deals`.
    pub object_type: &'static str,
    pub object_id: String,
    pub deleted: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HubspotEvent {
    event_id: Value,
    portal_id: Value,
    subscription_type: String,
    object_id: Value,
}

fn id_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// HubSpot's array of webhook events: the changes to objects this system syncs (others, such
/// as tickets, are left out).
pub fn hubspot(body: &[u8]) -> Result<Vec<HubspotChange>, String> {
    let events: Vec<HubspotEvent> = serde_json::from_slice(body)
        .map_err(|e| format!("body is not a HubSpot event array: {e}"))?;
    Ok(events
        .into_iter()
        .filter_map(|event| {
            let (object, action) = event.subscription_type.split_once('.')?;
            let object_type = match object {
                "contact" => "contacts",
                "company" => "companies",
                "deal" => "deals",
                _ => return None,
            };
            Some(HubspotChange {
                portal: id_string(&event.portal_id),
                event_id: id_string(&event.event_id),
                object_type,
                object_id: id_string(&event.object_id),
                deleted: action == "deletion",
            })
        })
        .collect())
}

/// What a Slack Events API request asks.
#[derive(Debug, Clone, PartialEq)]
pub enum SlackRequest {
    /// Answer with the challenge.
    UrlVerification(String),
    Event {
        team: String,
        event_id: String,
        event: Value,
    },
    /// `app_rate_limited` and the like: nothing to do.
    Other,
}

#[derive(Debug, Deserialize)]
struct SlackEnvelope {
    #[serde(rename = "type")]
    kind: String,
    challenge: Option<String>,
    team_id: Option<String>,
    event_id: Option<String>,
    event: Option<Value>,
}

pub fn slack(body: &[u8]) -> Result<SlackRequest, String> {
    let request: SlackEnvelope =
        serde_json::from_slice(body).map_err(|e| format!("body is not a Slack event: {e}"))?;
    match request.kind.as_str() {
        "url_verification" => Ok(SlackRequest::UrlVerification(
            request.challenge.unwrap_or_default(),
        )),
        "event_callback" => match (request.team_id, request.event_id, request.event) {
            (Some(team), Some(event_id), Some(event)) => Ok(SlackRequest::Event {
                team,
                event_id,
                event,
            }),
            _ => Err("event_callback without team_id, event_id or event".into()),
        },
        _ => Ok(SlackRequest::Other),
    }
}

/// A Gmail notification as Pub/Sub pushes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GmailPush {
    pub message_id: String,
    pub email_address: String,
    pub history_id: String,
}

#[derive(Debug, Deserialize)]
struct PushRequest {
    message: PushMessage,
}

/// Pub/Sub sends the id twice, as `messageId` and `message_id`.
#[derive(Debug, Deserialize)]
struct PushMessage {
    data: String,
    #[serde(rename = "messageId")]
    message_id: Option<String>,
    #[serde(rename = "message_id")]
    message_id_snake: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GmailNotification {
    email_address: String,
    history_id: Value,
}

pub fn gmail_push(body: &[u8]) -> Result<GmailPush, String> {
    let push: PushRequest =
        serde_json::from_slice(body).map_err(|e| format!("body is not a Pub/Sub push: {e}"))?;
    let message_id = push
        .message
        .message_id
        .or(push.message.message_id_snake)
        .ok_or("message.messageId is missing")?;
    let data = STANDARD
        .decode(push.message.data.trim())
        .or_else(|_| URL_SAFE.decode(push.message.data.trim()))
        .map_err(|_| "message.data is not base64".to_owned())?;
    let note: GmailNotification = serde_json::from_slice(&data)
        .map_err(|e| format!("message.data is not a Gmail notification: {e}"))?;
    Ok(GmailPush {
        message_id,
        email_address: note.email_address,
        history_id: id_string(&note.history_id),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_provider_shape_is_read() {
        let changes = hubspot(br#"[{"eventId":1,"portalId":62515,"subscriptionType":"contact.deletion","objectId":123},
            {"eventId":2,"portalId":62515,"subscriptionType":"ticket.creation","objectId":9}]"#).unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(
            (changes[0].object_type, changes[0].deleted),
            ("contacts", true)
        );
        assert_eq!(changes[0].object_id, "123");
        assert!(hubspot(b"{}").is_err());
        assert_eq!(
            slack(br#"{"type":"url_verification","challenge":"abc"}"#).unwrap(),
            SlackRequest::UrlVerification("abc".into())
        );
        assert!(slack(br#"{"type":"event_callback","team_id":"T1"}"#).is_err());
        let data = STANDARD.encode(br#"{"emailAddress":"a@b.example","historyId":42}"#);
        let push =
            gmail_push(format!(r#"{{"message":{{"data":"{data}","message_id":"7"}}}}"#).as_bytes())
                .unwrap();
        assert_eq!(
            (push.message_id.as_str(), push.history_id.as_str()),
            ("7", "42")
        );
        assert!(gmail_push(br#"{"message":{"data":"!!","messageId":"1"}}"#).is_err());
    }
}
