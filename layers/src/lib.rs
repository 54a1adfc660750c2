//! MQTT-aware [tower] middleware for [`tower_mqtt`].
//!
//! This crate will hold the layers that know about MQTT messages: OpenTelemetry
//! spans and metrics, payload decoding, retry policies, dead-lettering, batching,
//! ordering and routing. Layers never acknowledge messages themselves; they shape
//! the `Result` that the core consumer turns into an acknowledgement.
#![forbid(unsafe_code)]
