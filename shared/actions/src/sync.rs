//! Sync requests: the command ingest runs, and the on-demand request a user (or the agent, or
//! an operator) makes for one connected resource.

use crate::{ActionError, Result};
use common::UserId;
use common::bus::Bus;
use common::events::{Envelope, Event, Resource, SyncRequested, SyncScope};
use db::DatabaseConnection;

/// A sync command for ingest, published on `sync.<user>.<resource>`.
pub fn command(
    user: UserId,
    resource: Resource,
    reason: &str,
    request_id: String,
    scope: SyncScope,
) -> Envelope {
    Envelope::new(
        user,
        Event::SyncRequested(SyncRequested {
            resource,
            reason: reason.into(),
            request_id,
            scope,
        }),
    )
}

/// What to sync, as asked: nothing narrows it to the changes since the last run.
#[derive(Debug, Clone, Default)]
pub struct Narrowing {
    /// Slack: one channel id.
    pub channel: Option<String>,
    /// HubSpot: `contacts`, `companies`, `deals` or `notes` (with `object_id`).
    pub object_type: Option<String>,
    pub object_id: Option<String>,
}

/// The scope a narrowing means for `resource`, or the field at fault.
pub fn scope(resource: Resource, narrowing: Narrowing) -> Result<SyncScope> {
    match (resource, narrowing) {
        (
            Resource::Slack,
            Narrowing {
                channel: Some(channel),
                object_type: None,
                object_id: None,
            },
        ) => Ok(SyncScope::SlackChannel { channel }),
        (
            Resource::Hubspot,
            Narrowing {
                channel: None,
                object_type: Some(object_type),
                object_id: Some(id),
            },
        ) => {
            if !["contacts", "companies", "deals", "notes"].contains(&object_type.as_str()) {
                return Err(ActionError::invalid(
                    "object_type",
                    "must be contacts, companies, deals or notes",
                ));
            }
            // It becomes part of a HubSpot API path: digits only, as HubSpot's ids are.
            if id.is_empty() || id.len() > 20 || !id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ActionError::invalid(
                    "object_id",
                    "must be a HubSpot object id (digits)",
                ));
            }
            Ok(SyncScope::HubspotObject {
                object_type,
                id,
                deleted: false,
            })
        }
        (
            _,
            Narrowing {
                channel: None,
                object_type: None,
                object_id: None,
            },
        ) => Ok(SyncScope::Changes),
        (_, _) => Err(ActionError::invalid(
            "body",
            "channel is for slack; object_type with object_id for hubspot",
        )),
    }
}

/// Queues a sync of `resource` for `user`, who must have it connected; answers the request
/// id once JetStream has the command.
pub async fn request(
    db: &DatabaseConnection,
    bus: &Bus,
    user: UserId,
    resource: Resource,
    scope: SyncScope,
    reason: &str,
) -> Result<String> {
    let connected = db::connections::list(db, user)
        .await?
        .into_iter()
        .any(|c| c.provider == resource.provider() && c.status != "revoked");
    if !connected {
        return Err(ActionError::NotFound(format!(
            "{} is not connected",
            resource.provider()
        )));
    }
    let request_id = uuid::Uuid::new_v4().to_string();
    let command = command(user, resource, reason, request_id.clone(), scope);
    bus.publish(&command)
        .await
        .map_err(ActionError::Unavailable)?;
    Ok(request_id)
}
