//! The declared JetStream topology (`nats/jetstream.toml`), with a deployment prefix applied
//! to every stream and subject, and the idempotent apply step that creates or updates it.

use async_nats::jetstream::{self, consumer, stream};
use serde::Deserialize;
use std::time::Duration;

/// The definitions shipped in the repository, compiled in so every binary applies the same.
pub const DEFINITIONS: &str = include_str!("../../../nats/jetstream.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct Topology {
    #[serde(rename = "stream")]
    pub streams: Vec<StreamDef>,
    #[serde(rename = "consumer")]
    pub consumers: Vec<ConsumerDef>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StreamDef {
    pub name: String,
    pub subjects: Vec<String>,
    #[serde(default)]
    pub description: String,
    pub max_age_secs: u64,
    pub duplicate_window_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ConsumerDef {
    pub stream: String,
    pub durable: String,
    pub filter_subject: String,
    pub ack_wait_secs: u64,
    pub max_deliver: i64,
    pub max_ack_pending: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("nats/jetstream.toml is invalid: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("no consumer named {0} in nats/jetstream.toml")]
    UnknownConsumer(String),
    #[error("could not apply stream {name}: {source}")]
    Stream {
        name: String,
        #[source]
        source: async_nats::Error,
    },
    #[error("could not apply consumer {name}: {source}")]
    Consumer {
        name: String,
        #[source]
        source: async_nats::Error,
    },
}

/// Prefixes names so that several deployments (or tests) share one NATS server safely.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespace {
    prefix: String,
}

impl Namespace {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    pub fn subject(&self, subject: &str) -> String {
        if self.prefix.is_empty() {
            subject.to_owned()
        } else {
            format!("{}.{subject}", self.prefix)
        }
    }

    /// The subject without this namespace's prefix.
    pub fn strip<'a>(&self, subject: &'a str) -> &'a str {
        if self.prefix.is_empty() {
            return subject;
        }
        subject
            .strip_prefix(&self.prefix)
            .and_then(|s| s.strip_prefix('.'))
            .unwrap_or(subject)
    }

    pub fn stream(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}_{name}", self.prefix.to_uppercase())
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl Topology {
    pub fn shipped() -> Result<Self, TopologyError> {
        Ok(toml::from_str(DEFINITIONS)?)
    }

    /// The shipped topology with the configuration's overrides applied.
    pub fn for_config(config: &crate::Config) -> Result<Self, TopologyError> {
        let mut topology = Self::shipped()?;
        if config.consumer_ack_wait_secs > 0 {
            for c in &mut topology.consumers {
                c.ack_wait_secs = config.consumer_ack_wait_secs;
            }
        }
        Ok(topology)
    }

    pub fn consumer(&self, durable: &str) -> Result<&ConsumerDef, TopologyError> {
        self.consumers
            .iter()
            .find(|c| c.durable == durable)
            .ok_or_else(|| TopologyError::UnknownConsumer(durable.into()))
    }

    pub fn stream_config(&self, ns: &Namespace, def: &StreamDef) -> stream::Config {
        stream::Config {
            name: ns.stream(&def.name),
            subjects: def.subjects.iter().map(|s| ns.subject(s)).collect(),
            description: Some(def.description.clone()),
            max_age: Duration::from_secs(def.max_age_secs),
            duplicate_window: Duration::from_secs(def.duplicate_window_secs),
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            ..Default::default()
        }
    }

    pub fn consumer_config(&self, ns: &Namespace, def: &ConsumerDef) -> consumer::pull::Config {
        consumer::pull::Config {
            durable_name: Some(def.durable.clone()),
            filter_subject: ns.subject(&def.filter_subject),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(def.ack_wait_secs),
            max_deliver: def.max_deliver,
            max_ack_pending: def.max_ack_pending,
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        }
    }

    /// Creates or updates every stream and consumer. Safe to run from many processes at once.
    pub async fn apply(
        &self,
        js: &jetstream::Context,
        ns: &Namespace,
    ) -> Result<(), TopologyError> {
        for def in &self.streams {
            let config = self.stream_config(ns, def);
            let name = config.name.clone();
            js.create_or_update_stream(config)
                .await
                .map_err(|e| TopologyError::Stream {
                    name: name.clone(),
                    source: e.into(),
                })?;
        }
        for def in &self.consumers {
            self.apply_consumer(js, ns, def).await?;
        }
        Ok(())
    }

    pub async fn apply_consumer(
        &self,
        js: &jetstream::Context,
        ns: &Namespace,
        def: &ConsumerDef,
    ) -> Result<consumer::PullConsumer, TopologyError> {
        // Create-or-update: a consumer whose declared settings changed is brought up to date.
        js.create_consumer_on_stream(self.consumer_config(ns, def), ns.stream(&def.stream))
            .await
            .map_err(|e| TopologyError::Consumer {
                name: def.durable.clone(),
                source: e.into(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_definitions_parse_and_every_consumer_has_its_stream() {
        let t = Topology::shipped().unwrap();
        for c in &t.consumers {
            let s = t.streams.iter().find(|s| s.name == c.stream).unwrap();
            let root = s.subjects[0].trim_end_matches('>');
            assert!(c.filter_subject.starts_with(root), "{}", c.durable);
        }
    }

    #[test]
    fn namespace_prefixes_streams_and_subjects() {
        let ns = Namespace::new("t42");
        assert_eq!(ns.stream("EVENTS"), "T42_EVENTS");
        assert_eq!(ns.subject("events.>"), "t42.events.>");
        assert_eq!(ns.strip("t42.events.u.doc"), "events.u.doc");
        let prod = Namespace::default();
        assert_eq!(prod.stream("EVENTS"), "EVENTS");
        assert_eq!(prod.subject("events.>"), "events.>");
    }
}
