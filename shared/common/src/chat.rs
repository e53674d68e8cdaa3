//! What the agent tells a client about a turn, as it happens. Each event carries the turn's own
//! sequence number (the SSE `id`): a client that reconnects with `Last-Event-ID: n` is sent
//! every event after `n`, and the agent republishing an event after a crash is deduplicated
//! by that number.

use crate::UserId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The subject (without the deployment prefix) of one turn's events, in the TURNS stream.
pub fn turn_subject(user: UserId, turn: Uuid) -> String {
    format!("turns.{user}.{turn}")
}

/// The core NATS subject that tells the agent running `turn` to stop now.
pub fn cancel_subject(turn: Uuid) -> String {
    format!("chatcancel.{turn}")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnEvent {
    /// 1, 2, 3... within the turn.
    pub seq: u64,
    pub turn_id: Uuid,
    #[serde(flatten)]
    pub body: TurnEventBody,
}

impl TurnEvent {
    /// The `Nats-Msg-Id`: one event per turn and sequence number.
    pub fn dedup_key(&self) -> String {
        format!("turnev:{}:{}", self.turn_id, self.seq)
    }

    pub fn is_terminal(&self) -> bool {
        matches!(
            self.body,
            TurnEventBody::Done(_) | TurnEventBody::Error { .. }
        )
    }
}

/// Event types, as SSE `event:` names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum TurnEventBody {
    /// More answer text.
    Delta { text: String },
    /// The model asked for a tool.
    ToolCall {
        id: String,
        name: String,
        arguments: serde_json::Value,
    },
    /// A tool finished: a short summary, not the whole result.
    ToolResult {
        id: String,
        name: String,
        ok: bool,
        summary: String,
    },
    /// A write waits for the user's approval.
    ApprovalRequired {
        approval_id: Uuid,
        tool: String,
        arguments: serde_json::Value,
        reason: String,
        expires_at: DateTime<Utc>,
    },
    /// The answer cites a source (sent once per source, when first cited).
    Citation(Citation),
    /// The turn is over: the whole answer, what it cites and what it cost.
    Done(Finished),
    /// The turn failed or was cancelled.
    Error { code: String, message: String },
}

impl TurnEventBody {
    pub fn name(&self) -> &'static str {
        match self {
            TurnEventBody::Delta { .. } => "delta",
            TurnEventBody::ToolCall { .. } => "tool_call",
            TurnEventBody::ToolResult { .. } => "tool_result",
            TurnEventBody::ApprovalRequired { .. } => "approval_required",
            TurnEventBody::Citation(_) => "citation",
            TurnEventBody::Done(_) => "done",
            TurnEventBody::Error { .. } => "error",
        }
    }
}

/// A source the answer cites: `[n]` in the text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Citation {
    /// The marker number in the answer text.
    pub n: u32,
    pub document_id: Uuid,
    pub title: String,
    pub source: String,
    pub kind: String,
    pub external_id: String,
    pub occurred_at: Option<DateTime<Utc>>,
    /// Where the user can open it (Gmail thread, HubSpot record, Calendar event), if known.
    pub link: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub model_calls: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finished {
    pub text: String,
    pub citations: Vec<Citation>,
    pub usage: Usage,
    /// `done`, or `waiting_approval` when writes wait for the user.
    pub status: String,
}

/// The TURNS stream's name in `bus`'s namespace.
fn turns_stream(bus: &crate::Bus) -> String {
    bus.ns.stream("TURNS")
}

/// Publishes one event of a turn and waits for JetStream to store it. The same `seq`
/// published twice (a redelivered turn) is stored once.
pub async fn publish(
    bus: &crate::Bus,
    user: UserId,
    event: &TurnEvent,
) -> Result<crate::bus::Published, crate::BusError> {
    let payload = serde_json::to_vec(event).expect("a turn event always serializes");
    bus.publish_raw(
        &turn_subject(user, event.turn_id),
        &event.dedup_key(),
        payload,
    )
    .await
}

/// Every event of the turn so far and then each new one as it is stored, in order, from the
/// TURNS stream. Stops after the terminal event.
pub async fn follow(
    bus: &crate::Bus,
    user: UserId,
    turn: Uuid,
) -> Result<impl futures::Stream<Item = TurnEvent> + Send + 'static, crate::consumer::BoxError> {
    use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
    use futures::StreamExt;
    let consumer = bus
        .js
        .create_consumer_on_stream(
            OrderedConfig {
                filter_subject: bus.ns.subject(&turn_subject(user, turn)),
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            },
            turns_stream(bus),
        )
        .await?;
    let messages = consumer.messages().await?;
    let events = messages.filter_map(|m| async move {
        let m = m.ok()?;
        serde_json::from_slice::<TurnEvent>(&m.payload).ok()
    });
    // Ends right after the terminal event, without waiting for another.
    let events = futures::stream::unfold(
        (Box::pin(events), false),
        |(mut events, ended)| async move {
            if ended {
                return None;
            }
            let event = events.next().await?;
            let ended = event.is_terminal();
            Some((event, (events, ended)))
        },
    );
    Ok(events)
}

/// The events of a turn stored so far, without waiting for more.
pub async fn stored(
    bus: &crate::Bus,
    user: UserId,
    turn: Uuid,
) -> Result<Vec<TurnEvent>, crate::consumer::BoxError> {
    let subject = bus.ns.subject(&turn_subject(user, turn));
    let stream = bus.js.get_stream_no_info(turns_stream(bus)).await?;
    let last = match stream.get_last_raw_message_by_subject(&subject).await {
        Ok(m) => serde_json::from_slice::<TurnEvent>(&m.payload)?.seq,
        Err(e)
            if matches!(
                e.kind(),
                async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound
            ) =>
        {
            return Ok(Vec::new());
        }
        Err(e) => return Err(e.into()),
    };
    use futures::StreamExt;
    let mut events = Box::pin(follow(bus, user, turn).await?);
    let mut out = Vec::new();
    while let Some(event) =
        tokio::time::timeout(std::time::Duration::from_secs(5), events.next()).await?
    {
        let seq = event.seq;
        out.push(event);
        if seq >= last {
            break;
        }
    }
    Ok(out)
}

/// A turn's events as they are published, for a turn this caller is about to queue: a plain
/// NATS subscription (no consumer to create, so nothing between the agent's first word and the
/// client), opened before the turn is published so it cannot miss the start. Plain
/// subscriptions do not promise delivery, so a gap in the sequence, or a quiet spell, switches
/// to the TURNS stream, which has every event, and carries on after the last one given.
pub struct Live {
    subscriber: async_nats::Subscriber,
}

impl Live {
    /// Subscribes to `turn`'s events; call before the turn is published.
    pub async fn subscribe(
        bus: &crate::Bus,
        user: UserId,
        turn: Uuid,
    ) -> Result<Self, crate::consumer::BoxError> {
        let subscriber = bus
            .client
            .subscribe(bus.ns.subject(&turn_subject(user, turn)))
            .await?;
        Ok(Self { subscriber })
    }

    /// The events in order from the first, ending after the terminal one.
    pub fn events(
        self,
        bus: crate::Bus,
        user: UserId,
        turn: Uuid,
    ) -> impl futures::Stream<Item = TurnEvent> + Send + 'static {
        use futures::StreamExt;
        type Fallback = std::pin::Pin<Box<dyn futures::Stream<Item = TurnEvent> + Send>>;
        struct State {
            live: Option<async_nats::Subscriber>,
            stored: Option<Fallback>,
            next: u64,
            ended: bool,
            bus: crate::Bus,
            user: UserId,
            turn: Uuid,
        }
        let state = State {
            live: Some(self.subscriber),
            stored: None,
            next: 1,
            ended: false,
            bus,
            user,
            turn,
        };
        futures::stream::unfold(state, |mut s| async move {
            loop {
                if s.ended {
                    return None;
                }
                if let Some(stored) = s.stored.as_mut() {
                    let event = stored.next().await?;
                    if event.seq < s.next {
                        continue;
                    }
                    s.next = event.seq + 1;
                    s.ended = event.is_terminal();
                    return Some((event, s));
                }
                let live = s.live.as_mut()?;
                let received =
                    tokio::time::timeout(std::time::Duration::from_secs(5), live.next()).await;
                let event = match received {
                    Ok(Some(m)) => serde_json::from_slice::<TurnEvent>(&m.payload).ok(),
                    _ => None,
                };
                match event {
                    Some(e) if e.seq < s.next => continue,
                    Some(e) if e.seq == s.next => {
                        s.next = e.seq + 1;
                        s.ended = e.is_terminal();
                        return Some((e, s));
                    }
                    // A gap, a quiet spell or a closed subscription: the stream has it all.
                    _ => {
                        s.live = None;
                        match follow(&s.bus, s.user, s.turn).await {
                            Ok(f) => s.stored = Some(Box::pin(f)),
                            Err(e) => {
                                tracing::warn!(error = %e, "turn events unavailable");
                                return None;
                            }
                        }
                    }
                }
            }
        })
    }
}
