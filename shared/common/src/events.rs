//! The versioned event envelope carried by every JetStream message, and the subjects each
//! event is published on. Subjects carry the user, so one tenant can be replayed alone.

use crate::ids::{DocumentId, Kind, Source, UserId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Current envelope version; consumers reject versions they do not know.
pub const ENVELOPE_VERSION: u16 = 1;

/// Which lane a document and its indexing travel in. Interactive work (the API, webhooks,
/// incremental syncs) has consumers of its own that bulk work (first syncs, imports,
/// replays, a tenant's documents past its interactive share) cannot get ahead of, and the
/// embedder serves interactive texts first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lane {
    #[default]
    Interactive,
    Bulk,
}

impl Lane {
    pub fn is_interactive(&self) -> bool {
        *self == Lane::Interactive
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Envelope schema version.
    pub v: u16,
    /// Unique id of this event.
    pub id: Uuid,
    pub user_id: UserId,
    /// When the event was created.
    pub at: DateTime<Utc>,
    /// The lane of a document submission and of its indexing (`bulk` subjects); absent for
    /// interactive work.
    #[serde(default, skip_serializing_if = "Lane::is_interactive")]
    pub lane: Lane,
    #[serde(flatten)]
    pub event: Event,
}

impl Envelope {
    pub fn new(user_id: UserId, event: Event) -> Self {
        Self {
            v: ENVELOPE_VERSION,
            id: Uuid::new_v4(),
            user_id,
            at: Utc::now(),
            lane: Lane::Interactive,
            event,
        }
    }

    /// The same event in `lane`.
    pub fn in_lane(mut self, lane: Lane) -> Self {
        self.lane = lane;
        self
    }

    /// The subject, without the deployment prefix, that this event is published on.
    pub fn subject(&self) -> String {
        let user = self.user_id;
        match &self.event {
            Event::DocumentSubmitted(_) if self.lane == Lane::Bulk => {
                format!("bulk.{user}.documents")
            }
            Event::DocUpserted(d) if self.lane == Lane::Bulk => {
                format!("bulk.{user}.{}.doc.upserted", d.source)
            }
            Event::DocumentSubmitted(_) => format!("ingest.{user}.documents"),
            Event::WebhookReceived(w) => format!("webhooks.{user}.{}", w.source),
            Event::DocUpserted(d) => format!("events.{user}.{}.doc.upserted", d.source),
            Event::Domain(d) => format!("events.{user}.{}.{}", d.source, d.name),
            Event::SyncRequested(s) => format!("sync.{user}.{}", s.resource.as_str()),
            Event::TurnRequested(_) => format!("chat.{user}.turns"),
            Event::ApprovalsSettled(_) => format!("tools.{user}.approved"),
            Event::TaskAdvance(_) => format!("tools.{user}.tasks"),
        }
    }

    /// The `Nats-Msg-Id` for this event: stable across redeliveries of the same content, so
    /// JetStream drops duplicates inside its window.
    pub fn dedup_key(&self) -> String {
        match &self.event {
            Event::DocumentSubmitted(d) => format!(
                "doc:{}",
                short_hash(&[
                    self.user_id.to_string().as_str(),
                    d.source.as_str(),
                    &d.external_id,
                    &d.content_hash(),
                ])
            ),
            Event::WebhookReceived(w) => format!(
                "wh:{}",
                short_hash(&[
                    self.user_id.to_string().as_str(),
                    w.source.as_str(),
                    &w.webhook_id
                ])
            ),
            Event::DocUpserted(d) => format!(
                "upserted:{}:{}:{}",
                d.document_id, d.content_hash, d.caused_by
            ),
            Event::Domain(d) => format!(
                "dom:{}",
                short_hash(&[
                    self.user_id.to_string().as_str(),
                    d.source.as_str(),
                    &d.name,
                    &d.entity_id,
                    &d.version,
                ])
            ),
            Event::SyncRequested(s) => format!(
                "sync:{}",
                short_hash(&[
                    self.user_id.to_string().as_str(),
                    s.resource.as_str(),
                    &s.request_id,
                ])
            ),
            Event::TurnRequested(t) => format!("turn:{}", t.turn_id),
            Event::ApprovalsSettled(t) => format!("settled:{}", t.turn_id),
            Event::TaskAdvance(t) => format!("task:{}:{}:{}", t.task_id, t.step, t.reason),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope always serializes")
    }

    pub fn from_slice(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let envelope: Envelope = serde_json::from_slice(bytes)?;
        if envelope.v != ENVELOPE_VERSION {
            return Err(EnvelopeError::Version(envelope.v));
        }
        Ok(envelope)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("malformed event: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("unknown envelope version {0}")]
    Version(u16),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Event {
    /// A document handed to the API, to be stored and indexed.
    #[serde(rename = "document.submitted")]
    DocumentSubmitted(DocumentInput),
    /// A verified webhook delivery, to be normalized by ingest.
    #[serde(rename = "webhook.received")]
    WebhookReceived(WebhookReceived),
    /// A document was created or its content changed in Postgres.
    #[serde(rename = "doc.upserted")]
    DocUpserted(DocUpserted),
    /// Something changed at a provider (`email.received`, `contact.updated`...), for rules.
    #[serde(rename = "domain")]
    Domain(DomainEvent),
    /// A command to sync one resource of one user; handled by ingest, never in the gateway.
    #[serde(rename = "sync.requested")]
    SyncRequested(SyncRequested),
    /// A user message stored as a turn, for the agent to answer.
    #[serde(rename = "turn.requested")]
    TurnRequested(TurnRequested),
    /// Every approval a turn waited for is settled: run what was approved (and the calls held
    /// with it), once, and add the results to the conversation.
    #[serde(rename = "approvals.settled")]
    ApprovalsSettled(ApprovalsSettled),
    /// A task has something to do: it was started, its wait ended (an event or the deadline),
    /// an approval it waited for was decided, or a turn it asked for ended. The executor runs
    /// it from where it is, each step once.
    #[serde(rename = "task.advance")]
    TaskAdvance(TaskAdvance),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskAdvance {
    pub task_id: Uuid,
    /// The step concerned (for `timeout`, the wait whose deadline passed), and why (`start`,
    /// `matched`, `timeout`, `approval:<invocation>`, `turn:<turn>`...): with the task id, the
    /// dedup key.
    pub step: i32,
    pub reason: String,
}

impl Envelope {
    /// Hands task `task` of `user` to the executor, to run from where it is.
    pub fn task_advance(user: UserId, task: Uuid, step: i32, reason: impl Into<String>) -> Self {
        Self::new(
            user,
            Event::TaskAdvance(TaskAdvance {
                task_id: task,
                step,
                reason: reason.into(),
            }),
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalsSettled {
    pub turn_id: Uuid,
}

/// A turn to answer: its message and conversation are in Postgres.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnRequested {
    pub turn_id: Uuid,
    pub conversation_id: Uuid,
}

/// A change at a provider, published after it is stored. `name` is `<entity>.<action>`:
/// `email.received`, `email.sent`, `email.deleted`, `calendar.event.created|updated|cancelled`,
/// `contact.created|updated|deleted`, `company.*`, `deal.updated`, `note.created`,
/// `slack.message.posted`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainEvent {
    pub source: Source,
    pub name: String,
    /// The provider's id for the entity (message id, event id, object id, channel:ts).
    pub entity_id: String,
    pub document_id: Option<DocumentId>,
    /// What changed: the stored content hash for upserts, `deleted` for deletions. The same
    /// change announced twice (a sync after a webhook) has one dedup key.
    pub version: String,
    /// A small summary for rules (subject, sender, title...), never full bodies.
    #[serde(default = "empty_object")]
    pub data: serde_json::Value,
    /// Read by a first sync: the account's past, which rules do not fire on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub history: bool,
}

/// A resource the sync keeps in step with a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    Gmail,
    Calendar,
    Hubspot,
    Slack,
}

impl Resource {
    pub const ALL: [Resource; 4] = [
        Resource::Gmail,
        Resource::Calendar,
        Resource::Hubspot,
        Resource::Slack,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Gmail => "gmail",
            Resource::Calendar => "calendar",
            Resource::Hubspot => "hubspot",
            Resource::Slack => "slack",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == value)
    }

    /// The OAuth connection that grants access to this resource.
    pub fn provider(self) -> &'static str {
        match self {
            Resource::Gmail | Resource::Calendar => "google",
            Resource::Hubspot => "hubspot",
            Resource::Slack => "slack",
        }
    }

    /// The resources one provider connection grants.
    pub fn of_provider(provider: &str) -> Vec<Resource> {
        Self::ALL
            .into_iter()
            .filter(|r| r.provider() == provider)
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncRequested {
    pub resource: Resource,
    /// Why: `connect`, `webhook`, `manual`, `schedule`, `continuation`, `retry`.
    pub reason: String,
    /// Unique per request; the dedup key, so a webhook delivered three times or a schedule
    /// tick seen by two replicas is one sync.
    pub request_id: String,
    #[serde(default)]
    pub scope: SyncScope,
}

/// What part of the resource to sync.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SyncScope {
    /// Everything changed since the stored cursor (a full sync when there is none).
    #[default]
    Changes,
    /// One Slack channel.
    SlackChannel { channel: String },
    /// One HubSpot object (`contacts`, `companies`, `deals`, `notes`); `deleted` when the
    /// webhook said so.
    HubspotObject {
        object_type: String,
        id: String,
        #[serde(default)]
        deleted: bool,
    },
    /// One Slack event delivered by the Events API (a message, an edit, a deletion).
    SlackEvent { event: serde_json::Value },
    /// Create or renew the push subscription (Gmail watch, Calendar channel).
    Watch,
}

/// One document as clients submit it. Validated by the gateway before it is published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocumentInput {
    pub source: Source,
    pub kind: Kind,
    pub external_id: String,
    pub title: String,
    pub body: String,
    #[serde(default = "empty_object")]
    pub metadata: serde_json::Value,
    pub occurred_at: Option<DateTime<Utc>>,
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}

impl DocumentInput {
    /// Hash of everything that, when changed, should re-index the document.
    pub fn content_hash(&self) -> String {
        // No metadata and empty metadata are the same content.
        let metadata = match &self.metadata {
            serde_json::Value::Null => "{}".to_owned(),
            m => m.to_string(),
        };
        let occurred = self.occurred_at.map(|t| t.to_rfc3339()).unwrap_or_default();
        short_hash(&[
            self.kind.as_str(),
            &self.title,
            &self.body,
            &metadata,
            &occurred,
        ])
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookReceived {
    pub source: Source,
    /// The sender's delivery id (`webhook-id`), the dedup key.
    pub webhook_id: String,
    pub received_at: DateTime<Utc>,
    pub payload: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocUpserted {
    pub document_id: DocumentId,
    pub source: Source,
    pub kind: Kind,
    pub content_hash: String,
    /// `true` when the document did not exist before.
    pub created: bool,
    /// The message that caused this event (`STREAM:sequence`). A redelivery of that message
    /// makes the same event (deduplicated); a replay or a new submission makes a new one.
    pub caused_by: String,
    /// Index it again even when this content is indexed already (`ctl reindex`, after a
    /// change to what is indexed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub again: bool,
    /// Only product intelligence reads it again (`ctl insights reprocess`); the index is left
    /// as it is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insights_only: bool,
}

/// Core NATS subject (under the deployment prefix) where the embedding service answers
/// query-embedding requests, so only that service holds the model in memory.
pub const EMBED_QUERY_SUBJECT: &str = "embed.query";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmbedQuery {
    pub text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmbedQueryReply {
    pub vector: Option<Vec<f32>>,
    pub error: Option<String>,
}

/// Core NATS subject (under the deployment prefix) where tool-executor, which holds the model
/// client, compiles a plain-language instruction into a rule trigger for the gateway.
pub const RULES_COMPILE_SUBJECT: &str = "rules.compile";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompileRequest {
    pub text: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CompileReply {
    /// `when <pattern> [if <condition>]`, already checked by the parser.
    pub trigger: Option<String>,
    /// The text is a preference or a fact to remember, not something to do on events.
    #[serde(default)]
    pub memory: bool,
    pub error: Option<String>,
    pub model: Option<String>,
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
}

/// Hex SHA-256 of the parts, each length-prefixed so `("ab","c")` and `("a","bc")` differ.
pub fn short_hash(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(&hasher.finalize()[..16])
}

/// The domain event that asks for the documents stored before product intelligence was turned
/// on (or widened) to be read: `insight.backlog.requested`, `{"after": <document id>, "run"}`.
/// The insights pipeline queues one page of them per delivery and announces the next.
pub const INSIGHTS_BACKLOG: &str = "backlog.requested";

/// The event that starts (`after` = nil) or continues reading a user's backlog: documents
/// stored before `before` (those stored since are read by their own events); `run` names the
/// run, so a second run is not taken for a repeat of the first.
pub fn insights_backlog(
    user: UserId,
    run: &str,
    after: uuid::Uuid,
    before: DateTime<Utc>,
) -> Envelope {
    Envelope::new(
        user,
        Event::Domain(DomainEvent {
            source: Source::parse("insight").expect("valid source"),
            name: INSIGHTS_BACKLOG.to_owned(),
            entity_id: format!("backlog:{run}"),
            document_id: None,
            version: after.to_string(),
            data: serde_json::json!({"after": after, "run": run, "before": before}),
            history: false,
        }),
    )
}

/// The domain event that reads the next page of a preview of candidate insights settings
/// (`insight.preview.requested`, `{"preview", "after": <document id>}`); the page after the
/// last groups what was found and writes the report.
pub const INSIGHTS_PREVIEW: &str = "preview.requested";

pub fn insights_preview(user: UserId, preview: uuid::Uuid, after: uuid::Uuid) -> Envelope {
    Envelope::new(
        user,
        Event::Domain(DomainEvent {
            source: Source::parse("insight").expect("valid source"),
            name: INSIGHTS_PREVIEW.to_owned(),
            entity_id: format!("preview:{preview}"),
            document_id: None,
            version: after.to_string(),
            data: serde_json::json!({"preview": preview, "after": after}),
            history: false,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> DocumentInput {
        DocumentInput {
            source: Source::parse("gmail").unwrap(),
            kind: Source::parse("email").unwrap(),
            external_id: "msg-1".into(),
            title: "Quarterly review".into(),
            body: "Let's meet Tuesday.".into(),
            metadata: serde_json::json!({"from": "client@example.com"}),
            occurred_at: None,
        }
    }

    #[test]
    fn envelope_round_trips_with_type_tag() {
        let user = UserId(Uuid::nil());
        let mut envelope = Envelope::new(user, Event::DocumentSubmitted(doc()));
        envelope.id = Uuid::nil();
        envelope.at = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .unwrap()
            .into();
        insta::assert_json_snapshot!(envelope);
        let back = Envelope::from_slice(&envelope.to_bytes()).unwrap();
        assert_eq!(back, envelope);
        assert_eq!(
            envelope.subject(),
            "ingest.00000000-0000-0000-0000-000000000000.documents"
        );
    }

    #[test]
    fn dedup_key_follows_content() {
        let user = UserId(Uuid::nil());
        let a = Envelope::new(user, Event::DocumentSubmitted(doc()));
        let b = Envelope::new(user, Event::DocumentSubmitted(doc()));
        assert_eq!(a.dedup_key(), b.dedup_key(), "same content, same key");
        let mut changed = doc();
        changed.body.push('!');
        let c = Envelope::new(user, Event::DocumentSubmitted(changed));
        assert_ne!(a.dedup_key(), c.dedup_key());
    }

    #[test]
    fn unknown_version_is_rejected() {
        let mut value = serde_json::to_value(Envelope::new(
            UserId(Uuid::nil()),
            Event::DocumentSubmitted(doc()),
        ))
        .unwrap();
        value["v"] = 99.into();
        let err = Envelope::from_slice(value.to_string().as_bytes()).unwrap_err();
        assert!(matches!(err, EnvelopeError::Version(99)));
    }
}
