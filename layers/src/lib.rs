//! MQTT-aware [tower] middleware for [`tower_mqtt`].
//!
//! Layers never acknowledge messages themselves: they shape the `Result` that the core
//! consumer turns into an acknowledgement (see `tower_mqtt::disposition`).
//!
//! | module | feature | what |
//! |---|---|---|
//! | [`otel`] | `otel` | OpenTelemetry CONSUMER spans, metrics and W3C trace-context propagation over MQTT 5 user properties |
//!
//! [tower]: https://docs.rs/tower
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "otel")]
pub mod otel;
