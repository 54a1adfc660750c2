//! # tower-mqtt
//!
//! At-least-once MQTT ingestion through [tower] `Service`s. Every PUBLISH the broker
//! sends runs through your service stack — timeouts, retries, concurrency limits,
//! tracing, anything built with `tower::ServiceBuilder` — and the stack's `Result`
//! decides whether the message is acknowledged or comes back.
//!
//! * `Ok` → acknowledged (PUBACK / PUBREC), in arrival order, on the connection it
//!   arrived on.
//! * `Err` → by default left unacknowledged and brought back by resuming the session
//!   ([`OnFailure::Redeliver`]); see [`disposition`] for every rule.
//!
//! ```no_run
//! use std::time::Duration;
//! use tokio_util::sync::CancellationToken;
//! use tower::{service_fn, ServiceBuilder};
//! use tower_mqtt::{BoxError, Config, Consumer, Message, QoS};
//!
//! # async fn example() -> Result<(), BoxError> {
//! let consumer = Consumer::builder(Config::new("127.0.0.1").client_id("ingest"))
//!     .topic("sensors/+/temp", QoS::AtLeastOnce)
//!     .max_inflight(100)
//!     .build()?;
//!
//! let service = ServiceBuilder::new()
//!     .timeout(Duration::from_secs(5))
//!     .service(service_fn(|msg: Message| async move {
//!         store(msg.topic(), msg.payload()).await
//!     }));
//!
//! let shutdown = CancellationToken::new();
//! consumer.run(service, shutdown).await?;
//! # Ok(()) }
//! # async fn store(_: &str, _: &[u8]) -> Result<(), BoxError> { Ok(()) }
//! ```
//!
//! ## Guarantees
//!
//! * A message is acknowledged only after its service call returned `Ok` (or a failure
//!   rule says so), never before, and never on a connection other than the one it
//!   arrived on.
//! * Each connection holds at most `max_inflight` messages (running calls plus
//!   acknowledgements waiting for an earlier message); beyond that it stops reading.
//! * Reconnects back off exponentially with jitter, and re-subscribe whenever the
//!   broker has no session for the client.
//! * Shutdown drains: calls in progress finish (up to the drain timeout) and are
//!   acknowledged before DISCONNECT.
//!
//! ## Telemetry
//!
//! See [`event`] for the `tracing` events and their fields.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
#[path = "fuzz.rs"]
pub mod __fuzz;
pub mod config;
mod consumer;
pub mod disposition;
mod driver;
pub mod error;
pub mod event;
pub mod guarantees;
mod message;
pub mod migration;
#[cfg(feature = "serde")]
mod options;
pub mod publisher;
mod retire;
pub mod scale_out;
pub mod signal;
mod sys_watch;
pub mod testing;
mod topic;
mod transport;

pub use config::{Config, Endpoint, OptionValue, ProtoVer, QoS, ReadPacing, TlsOptions, Will};
pub use consumer::{Consumer, ConsumerBuilder};
pub use disposition::{
    AckPolicy, Classify, Disposition, OnFailure, OnSuccess, Permanent, Redeliver, Reject,
    RejectReason,
};
pub use error::{BoxError, ConfigError, DownReason, RunError, ServicePanicked};
pub use event::{Event, Status};
pub use message::{Message, Origin, PublishProperties};
#[cfg(feature = "serde")]
pub use options::{BackoffBounds, ConsumerOptions, Subscription};
pub use publisher::{Publish, PublishError, Publisher, PublisherBuilder};
pub use tokio_util::sync::CancellationToken;
