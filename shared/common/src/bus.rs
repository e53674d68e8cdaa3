//! The one way events are published: prefixed subject, `Nats-Msg-Id` from the event's stable
//! key, W3C trace context in the headers, and an answer only once JetStream has acked.

use crate::events::Envelope;
use crate::telemetry;
use crate::topology::{Namespace, Topology, TopologyError};
use async_nats::jetstream::{self, context::PublishAckFuture};
use async_nats::{HeaderMap, header};
use futures::future::try_join_all;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("publish to {subject} failed: {source}")]
    Publish {
        subject: String,
        #[source]
        source: async_nats::jetstream::context::PublishError,
    },
    #[error("not connected to NATS; {subject} not published")]
    Disconnected { subject: String },
    #[error("no PubAck from JetStream for {subject} within {timeout:?}")]
    Timeout { subject: String, timeout: Duration },
    #[error(transparent)]
    Topology(#[from] TopologyError),
}

/// A published message as JetStream recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub sequence: u64,
    /// `true` when JetStream had already stored a message with the same `Nats-Msg-Id`.
    pub duplicate: bool,
}

#[derive(Clone)]
pub struct Bus {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub ns: Namespace,
    publish_timeout: Duration,
}

impl Bus {
    /// Connects, retrying in the background if the server is not up yet: a service starts and
    /// reports not-ready instead of crashing.
    pub async fn connect(
        url: &str,
        prefix: &str,
        publish_timeout: Duration,
    ) -> Result<Self, BusError> {
        let client = async_nats::ConnectOptions::new()
            .name("assistant")
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(3))
            .connect(url)
            .await
            .map_err(|source| BusError::Connect {
                url: url.to_owned(),
                source,
            })?;
        // Give the first connection a moment, so a command-line tool's first publish does not
        // find the client still connecting; a service just reports not-ready meanwhile.
        let deadline = Instant::now() + publish_timeout;
        while client.connection_state() != async_nats::connection::State::Connected
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self::from_client(client, prefix, publish_timeout))
    }

    pub fn from_client(
        client: async_nats::Client,
        prefix: &str,
        publish_timeout: Duration,
    ) -> Self {
        let js = jetstream::ContextBuilder::new()
            .timeout(publish_timeout)
            .build(client.clone());
        Self {
            client,
            js,
            ns: Namespace::new(prefix),
            publish_timeout,
        }
    }

    /// Creates or updates the shipped streams and consumers (with the configuration's
    /// overrides) under this bus's namespace.
    pub async fn apply_topology(&self, config: &crate::Config) -> Result<Topology, BusError> {
        let topology = Topology::for_config(config)?;
        topology.apply(&self.js, &self.ns).await?;
        Ok(topology)
    }

    fn headers(msg_id: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::NATS_MESSAGE_ID, msg_id);
        telemetry::inject_context(&mut headers);
        headers
    }

    async fn send(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Vec<u8>,
    ) -> Result<(String, PublishAckFuture), BusError> {
        // The client would queue the message until it reconnects and deliver it after we have
        // already answered "failed": refuse instead, so a failure means "not published".
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(BusError::Disconnected { subject });
        }
        let ack = self
            .js
            .publish_with_headers(subject.clone(), headers, payload.into())
            .await
            .map_err(|source| BusError::Publish {
                subject: subject.clone(),
                source,
            })?;
        Ok((subject, ack))
    }

    async fn confirm(&self, subject: String, ack: PublishAckFuture) -> Result<Published, BusError> {
        let started = Instant::now();
        let result = tokio::time::timeout(self.publish_timeout, ack).await;
        metrics::histogram!("nats_publish_duration_seconds").record(started.elapsed());
        match result {
            Ok(Ok(ack)) => Ok(Published {
                sequence: ack.sequence,
                duplicate: ack.duplicate,
            }),
            Ok(Err(source)) => Err(BusError::Publish { subject, source }),
            Err(_) => Err(BusError::Timeout {
                subject,
                timeout: self.publish_timeout,
            }),
        }
    }

    /// Publishes one event and waits for its PubAck.
    pub async fn publish(&self, envelope: &Envelope) -> Result<Published, BusError> {
        let (subject, ack) = self
            .send(
                self.ns.subject(&envelope.subject()),
                Self::headers(&envelope.dedup_key()),
                envelope.to_bytes(),
            )
            .await?;
        self.confirm(subject, ack).await
    }

    /// Publishes every event, pipelined, and answers once all are acked (or the first fails).
    pub async fn publish_all(&self, envelopes: &[Envelope]) -> Result<Vec<Published>, BusError> {
        let mut pending = Vec::with_capacity(envelopes.len());
        for envelope in envelopes {
            pending.push(
                self.send(
                    self.ns.subject(&envelope.subject()),
                    Self::headers(&envelope.dedup_key()),
                    envelope.to_bytes(),
                )
                .await?,
            );
        }
        try_join_all(pending.into_iter().map(|(s, ack)| self.confirm(s, ack))).await
    }

    /// Publishes raw bytes to an unprefixed subject with an explicit message id (requeue, replay).
    pub async fn publish_raw(
        &self,
        subject: &str,
        msg_id: &str,
        payload: Vec<u8>,
    ) -> Result<Published, BusError> {
        let (subject, ack) = self
            .send(self.ns.subject(subject), Self::headers(msg_id), payload)
            .await?;
        self.confirm(subject, ack).await
    }

    /// Whether the connection is up and every declared stream exists.
    pub async fn streams_ready(&self) -> bool {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return false;
        }
        let Ok(topology) = Topology::shipped() else {
            return false;
        };
        for def in &topology.streams {
            let check = tokio::time::timeout(
                Duration::from_secs(2),
                self.js.get_stream_no_info(self.ns.stream(&def.name)),
            );
            if !matches!(check.await, Ok(Ok(_))) {
                return false;
            }
        }
        true
    }
}
