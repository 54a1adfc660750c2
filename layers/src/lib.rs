//! MQTT-aware [tower] middleware for [`tower_mqtt`].
//!
//! Layers never acknowledge messages themselves: they shape the `Result` that the core
//! consumer turns into an acknowledgement (see `tower_mqtt::disposition`).
//!
//! | module | feature | what |
//! |---|---|---|
//! | [`otel`] | `otel` | OpenTelemetry CONSUMER spans, metrics and W3C trace-context propagation over MQTT 5 user properties |
//! | [`retry`] | `retry` | retry transient failures (timeouts, [`Transient`](retry::Transient) errors) with exponential backoff and jitter, within one service call; the attempt number in the message's extensions |
//! | [`decode`] | `decode`, `json` | decode payloads into a `T` (JSON with serde_json, or any [`Decoder`](decode::Decoder)); a payload that does not decode is rejected (MQTT 5 reason 0x99), never retried or redelivered |
//! | [`catch_panic`] | `catch-panic` | a panic in the service fails that one message instead of the connection |
//! | [`poison`] | `poison` | a message above `n` deliveries ([`Message::delivery_count`](tower_mqtt::Message::delivery_count)) fails permanently without reaching the service, so it is acknowledged (or dead-lettered) instead of redelivered forever |
//! | [`dead_letter`] | `dead-letter` | publish a message the consumer would drop to a dead-letter topic, and let it be acknowledged only once the broker has the dead letter |
//! | [`rate_limit`] | `rate-limit` | a rate limit (token bucket) shared by every connection of a consumer, `Clone` as `Consumer::run` requires; which tower layers need `.buffer(n)` |
//! | [`router`] | `router` | send each message to the most specific route whose topic filter matches, with the wildcards' captures in its extensions and a fallback |
//! | [`partition`] | `partition` | messages with the same key (the topic, or any function of the message) one at a time in arrival order, different keys concurrently, with a bounded wait queue |
//! | [`batch`] | `batch` | collect messages (or decoded values) into batches for a `Service<Batch<R>>`, by size, time and the consumer's window, across connections; each message keeps its own result |
//!
//! [`ServiceBuilderExt`] adds the failure-handling layers to `tower::ServiceBuilder`
//! (`.dead_letter(publisher, topic)`, `.catch_panic()`, `.retry_messages(policy)`,
//! `.decode_json::<T>()`,
//! `.decode(decoder)`, `.max_deliveries(n)`), and the flow layers (`.batch(..)`,
//! `.partition_by(key)`, `.shared_rate_limit(n, per)`).
//!
#![cfg_attr(
    any(
        feature = "retry",
        feature = "decode",
        feature = "catch-panic",
        feature = "dead-letter",
        feature = "poison"
    ),
    doc = include_str!("../docs/failure.md")
)]
//!
//! [tower]: https://docs.rs/tower
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod attempts;
#[cfg(feature = "batch")]
pub mod batch;
#[cfg(any(
    feature = "retry",
    feature = "decode",
    feature = "catch-panic",
    feature = "dead-letter",
    feature = "poison",
    feature = "partition",
    feature = "rate-limit",
    feature = "batch"
))]
mod builder;
#[cfg(feature = "catch-panic")]
pub mod catch_panic;
#[cfg(feature = "dead-letter")]
pub mod dead_letter;
#[cfg(feature = "decode")]
pub mod decode;
#[cfg(feature = "otel")]
pub mod otel;
#[cfg(feature = "partition")]
pub mod partition;
#[cfg(feature = "poison")]
pub mod poison;
#[cfg(feature = "rate-limit")]
pub mod rate_limit;
#[cfg(feature = "retry")]
pub mod retry;
#[cfg(feature = "router")]
pub mod router;

#[cfg(any(
    feature = "retry",
    feature = "decode",
    feature = "catch-panic",
    feature = "dead-letter",
    feature = "poison",
    feature = "partition",
    feature = "rate-limit",
    feature = "batch"
))]
pub use self::builder::ServiceBuilderExt;
