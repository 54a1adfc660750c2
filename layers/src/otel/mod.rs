//! OpenTelemetry for tower-mqtt (feature `otel`).
//!
//! * [`OtelLayer`] opens one CONSUMER span per message, following the OpenTelemetry
//!   messaging semantic conventions, and runs the inner service inside it, so spans the
//!   service creates through OpenTelemetry nest under it. It also records per-message
//!   metrics.
//! * When an MQTT 5 message carries `traceparent` / `tracestate` user properties (the
//!   W3C "Trace Context: MQTT" draft), the span **continues that trace as its parent**:
//!   processing one message is a continuation of the publisher's operation, which is
//!   what the messaging conventions recommend for single-message processing (links are
//!   for batches). Extraction uses the SDK's `TraceContextPropagator`.
//! * [`trace_context_properties`] is the matching helper for publishers.
//! * [`EventMetrics`] turns the consumer's typed [`Event`](tower_mqtt::Event)s into
//!   connection, ack and redelivery metrics; install it with
//!   [`ConsumerBuilder::on_event`](tower_mqtt::ConsumerBuilder::on_event).
//!
//! ```no_run
//! use tower::ServiceBuilder;
//! use tower_mqtt::{BoxError, Message};
//! use tower_mqtt_layers::otel::OtelLayer;
//!
//! let service = ServiceBuilder::new()
//!     .layer(OtelLayer::new())
//!     .service_fn(|message: Message| async move {
//!         // Spans opened here are children of the message's `process` span.
//!         Ok::<_, BoxError>(())
//!     });
//! ```
//!
#![doc = include_str!("../../docs/otel.md")]

mod disposition;
mod future;
mod layer;
mod metrics;
mod propagation;
mod service;

pub use self::future::ResponseFuture;
pub use self::layer::OtelLayer;
pub use self::metrics::EventMetrics;
pub use self::propagation::trace_context_properties;
pub use self::service::Otel;

/// Instrumentation scope name used for the tracer and the meter.
pub const SCOPE: &str = "tower-mqtt";
