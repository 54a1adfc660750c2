use std::fmt;
use std::sync::Arc;

use opentelemetry::global::{self, BoxedTracer};
use opentelemetry::metrics::{Meter, MeterProvider};
use opentelemetry::trace::{Span, Tracer, TracerProvider};
use tower_layer::Layer;
use tower_mqtt::AckPolicy;

use super::metrics::MessageMetrics;
use super::service::Otel;
use super::SCOPE;

/// What every service and call of one layer shares: set once by the constructor, never
/// changed afterwards (builder settings live next to it, outside the `Arc`).
pub(super) struct Shared {
    pub(super) tracer: BoxedTracer,
    pub(super) metrics: MessageMetrics,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("tracer", &self.tracer)
            .field("metrics", &self.metrics)
            .finish()
    }
}

/// [`Layer`] that traces and measures every message with [`Otel`]; see the
/// [module docs](super) for the span and the metrics.
#[derive(Clone)]
pub struct OtelLayer {
    shared: Arc<Shared>,
    policy: Option<AckPolicy>,
}

impl fmt::Debug for OtelLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtelLayer")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Default for OtelLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl OtelLayer {
    /// Use the global tracer and meter providers.
    #[must_use]
    pub fn new() -> Self {
        Self::build(global::tracer(SCOPE), &global::meter(SCOPE))
    }

    /// Use these providers instead of the global ones.
    pub fn with_providers<T, S>(tracer_provider: &T, meter_provider: &dyn MeterProvider) -> Self
    where
        T: TracerProvider,
        T::Tracer: Tracer<Span = S> + Send + Sync + 'static,
        S: Span + Send + Sync + 'static,
    {
        let tracer = BoxedTracer::new(Box::new(tracer_provider.tracer(SCOPE)));
        Self::build(tracer, &meter_provider.meter(SCOPE))
    }

    fn build(tracer: BoxedTracer, meter: &Meter) -> Self {
        Self {
            shared: Arc::new(Shared {
                tracer,
                metrics: MessageMetrics::new(meter),
            }),
            policy: None,
        }
    }

    /// Record dispositions decided with `policy` instead of the consumer's own rule.
    ///
    /// Not needed with a consumer: every message carries its consumer's rule (its
    /// `on_failure`, or its [`classify`](tower_mqtt::ConsumerBuilder::classify)), and
    /// the span records what the consumer will do
    /// ([`Origin::disposition`](tower_mqtt::Origin::disposition)). Useful where messages
    /// are made by hand (e.g. `tower_mqtt::testing`). Clones of a layer share its tracer
    /// and instruments but not this setting.
    #[must_use]
    pub fn ack_policy(mut self, policy: AckPolicy) -> Self {
        self.policy = Some(policy);
        self
    }
}

impl<S> Layer<S> for OtelLayer {
    type Service = Otel<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Otel::new(inner, self.shared.clone(), self.policy)
    }
}
