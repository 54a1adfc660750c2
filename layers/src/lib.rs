//! MQTT-aware [tower] middleware for [`tower_mqtt`].
//!
//! Layers never acknowledge messages themselves: they shape the `Result` that the core
//! consumer turns into an acknowledgement (see `tower_mqtt::disposition`).
//!
//! | module | feature | what |
//! |---|---|---|
//! | [`otel`][otel] | `otel` | OpenTelemetry CONSUMER spans, metrics and W3C trace-context propagation over MQTT 5 user properties |
//! | [`retry`][retry] | `retry` | retry transient failures (timeouts, `Transient` errors) with exponential backoff and jitter, within one service call; the attempt number in the message's extensions |
//! | [`decode`][decode] | `decode`, `json` | decode payloads into a `T` (JSON with serde_json, or any `Decoder`); a payload that does not decode is rejected (MQTT 5 reason 0x99), never retried or redelivered |
//! | [`catch_panic`][catch_panic] | `catch-panic` | a panic in the service fails that one message instead of the connection |
//! | [`poison`][poison] | `poison` | a message above `n` deliveries ([`Message::delivery_count`](tower_mqtt::Message::delivery_count)) fails permanently without reaching the service, so it is acknowledged (or dead-lettered) instead of redelivered forever |
//! | [`dead_letter`][dead_letter] | `dead-letter` | publish a message the consumer would drop to a dead-letter topic, and let it be acknowledged only once the broker has the dead letter |
//! | [`rate_limit`][rate_limit] | `rate-limit` | a rate limit (token bucket) shared by every connection of a consumer, `Clone` as `Consumer::run` requires; which tower layers need `.buffer(n)` |
//! | [`router`][router] | `router` | send each message to the most specific route whose topic filter matches, with the wildcards' captures in its extensions and a fallback |
//! | [`partition`][partition] | `partition` | messages with the same key (the topic, or any function of the message) one at a time in arrival order, different keys concurrently, with a bounded wait queue |
//! | [`batch`][batch] | `batch` | collect messages (or decoded values) into batches for a `Service<Batch<R>>`, by size, time and the consumer's window, across connections; each message keeps its own result |
//! | [`dedup`][dedup] | `dedup`, `dedup-redis` | effectively-once: a message whose id (an MQTT 5 user property, or any function of it) was processed is acknowledged without calling the service again; ids in a bounded in-memory store or in Redis (shared by processes), recorded after success with a TTL |
//!
//! [`ServiceBuilderExt`][ServiceBuilderExt] adds the failure-handling layers to `tower::ServiceBuilder`
//! (`.dead_letter(publisher, topic)`, `.catch_panic()`, `.retry_messages(policy)`,
//! `.decode_json::<T>()`,
//! `.decode(decoder)`, `.max_deliveries(n)`), and the flow layers (`.batch(..)`,
//! `.partition_by(key)`, `.shared_rate_limit(n, per)`, `.dedup(layer)`).
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
//! # Features
//!
//! Every layer is behind its own cargo feature and none is on by default: enable what
//! you use, e.g. `tower-mqtt-layers = { version = "0.1", features = ["retry", "json",
//! "dead-letter"] }`. Items of a feature are marked with it on docs.rs, which documents
//! every feature.
//!
//! [tower]: https://docs.rs/tower
#![cfg_attr(feature = "otel", doc = "[otel]: crate::otel")]
#![cfg_attr(not(feature = "otel"), doc = "[otel]: #features")]
#![cfg_attr(feature = "retry", doc = "[retry]: crate::retry")]
#![cfg_attr(not(feature = "retry"), doc = "[retry]: #features")]
#![cfg_attr(feature = "decode", doc = "[decode]: crate::decode")]
#![cfg_attr(not(feature = "decode"), doc = "[decode]: #features")]
#![cfg_attr(feature = "catch-panic", doc = "[catch_panic]: crate::catch_panic")]
#![cfg_attr(not(feature = "catch-panic"), doc = "[catch_panic]: #features")]
#![cfg_attr(feature = "poison", doc = "[poison]: crate::poison")]
#![cfg_attr(not(feature = "poison"), doc = "[poison]: #features")]
#![cfg_attr(feature = "dead-letter", doc = "[dead_letter]: crate::dead_letter")]
#![cfg_attr(not(feature = "dead-letter"), doc = "[dead_letter]: #features")]
#![cfg_attr(feature = "rate-limit", doc = "[rate_limit]: crate::rate_limit")]
#![cfg_attr(not(feature = "rate-limit"), doc = "[rate_limit]: #features")]
#![cfg_attr(feature = "router", doc = "[router]: crate::router")]
#![cfg_attr(not(feature = "router"), doc = "[router]: #features")]
#![cfg_attr(feature = "partition", doc = "[partition]: crate::partition")]
#![cfg_attr(not(feature = "partition"), doc = "[partition]: #features")]
#![cfg_attr(feature = "batch", doc = "[batch]: crate::batch")]
#![cfg_attr(not(feature = "batch"), doc = "[batch]: #features")]
#![cfg_attr(feature = "dedup", doc = "[dedup]: crate::dedup")]
#![cfg_attr(not(feature = "dedup"), doc = "[dedup]: #features")]
#![cfg_attr(
    any(
        feature = "retry",
        feature = "decode",
        feature = "catch-panic",
        feature = "dead-letter",
        feature = "poison",
        feature = "partition",
        feature = "rate-limit",
        feature = "batch",
        feature = "dedup"
    ),
    doc = "[ServiceBuilderExt]: crate::ServiceBuilderExt"
)]
#![cfg_attr(
    not(any(
        feature = "retry",
        feature = "decode",
        feature = "catch-panic",
        feature = "dead-letter",
        feature = "poison",
        feature = "partition",
        feature = "rate-limit",
        feature = "batch",
        feature = "dedup"
    )),
    doc = "[ServiceBuilderExt]: #features"
)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod attempts;
#[cfg(feature = "batch")]
#[cfg_attr(docsrs, doc(cfg(feature = "batch")))]
pub mod batch;
#[cfg(any(
    feature = "retry",
    feature = "decode",
    feature = "catch-panic",
    feature = "dead-letter",
    feature = "poison",
    feature = "partition",
    feature = "rate-limit",
    feature = "batch",
    feature = "dedup"
))]
mod builder;
#[cfg(feature = "catch-panic")]
#[cfg_attr(docsrs, doc(cfg(feature = "catch-panic")))]
pub mod catch_panic;
#[cfg(feature = "dead-letter")]
#[cfg_attr(docsrs, doc(cfg(feature = "dead-letter")))]
pub mod dead_letter;
#[cfg(feature = "decode")]
#[cfg_attr(docsrs, doc(cfg(feature = "decode")))]
pub mod decode;
#[cfg(feature = "dedup")]
#[cfg_attr(docsrs, doc(cfg(feature = "dedup")))]
pub mod dedup;
#[cfg(feature = "otel")]
#[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
pub mod otel;
#[cfg(feature = "partition")]
#[cfg_attr(docsrs, doc(cfg(feature = "partition")))]
pub mod partition;
#[cfg(feature = "poison")]
#[cfg_attr(docsrs, doc(cfg(feature = "poison")))]
pub mod poison;
#[cfg(feature = "rate-limit")]
#[cfg_attr(docsrs, doc(cfg(feature = "rate-limit")))]
pub mod rate_limit;
#[cfg(feature = "retry")]
#[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
pub mod retry;
#[cfg(feature = "router")]
#[cfg_attr(docsrs, doc(cfg(feature = "router")))]
pub mod router;

#[cfg(any(
    feature = "retry",
    feature = "decode",
    feature = "catch-panic",
    feature = "dead-letter",
    feature = "poison",
    feature = "partition",
    feature = "rate-limit",
    feature = "batch",
    feature = "dedup"
))]
pub use self::builder::ServiceBuilderExt;
