//! Stream and consumer status, read from JetStream: for `ctl streams` and `/metrics`.

use crate::bus::Bus;
use crate::topology::Topology;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct StreamStatus {
    pub name: String,
    pub messages: u64,
    pub bytes: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub consumers: Vec<ConsumerStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConsumerStatus {
    pub name: String,
    /// Messages delivered at least once.
    pub delivered: u64,
    /// Messages acknowledged in order (everything up to here is done).
    pub ack_floor: u64,
    /// Messages not yet delivered: the consumer's lag.
    pub pending: u64,
    /// Delivered but not yet acknowledged.
    pub ack_pending: usize,
    pub redelivered: usize,
}

/// Status of every declared stream and consumer; missing ones are left out.
pub async fn read(bus: &Bus) -> Vec<StreamStatus> {
    let Ok(topology) = Topology::shipped() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for def in &topology.streams {
        let name = bus.ns.stream(&def.name);
        let Ok(stream) = bus.js.get_stream(&name).await else {
            continue;
        };
        let info = stream.cached_info().clone();
        let mut consumers = Vec::new();
        for c in topology.consumers.iter().filter(|c| c.stream == def.name) {
            if let Ok(ci) = stream.consumer_info(&c.durable).await {
                consumers.push(ConsumerStatus {
                    name: c.durable.clone(),
                    delivered: ci.delivered.stream_sequence,
                    ack_floor: ci.ack_floor.stream_sequence,
                    pending: ci.num_pending,
                    ack_pending: ci.num_ack_pending,
                    redelivered: ci.num_redelivered,
                });
            }
        }
        out.push(StreamStatus {
            name,
            messages: info.state.messages,
            bytes: info.state.bytes,
            first_seq: info.state.first_sequence,
            last_seq: info.state.last_sequence,
            consumers,
        });
    }
    out
}
