//! What every service shares: configuration, ids, the event envelope and its subjects, the
//! JetStream topology, the publish helper, the consumer runtime, telemetry and tokens.

pub mod auth;
pub mod bus;
pub mod chat;
pub mod config;
pub mod consumer;
pub mod demo;
pub mod email;
pub mod events;
pub mod ids;
pub mod intake;
pub mod normalize;
pub mod redact;
pub mod secrets;
pub mod shutdown;
pub mod slots;
pub mod status;
pub mod telemetry;
pub mod topology;

pub use bus::{Bus, BusError};
pub use config::Config;
pub use events::{Envelope, Event};
pub use ids::{DocumentId, UserId};
