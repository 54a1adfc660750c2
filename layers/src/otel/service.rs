use std::fmt;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use opentelemetry::trace::{FutureExt as _, SpanBuilder, SpanKind, TraceContextExt, Tracer as _};
use opentelemetry::KeyValue;
use tower_mqtt::{AckPolicy, BoxError, Message};
use tower_service::Service;

use super::disposition::Decider;
use super::future::{Guard, ResponseFuture};
use super::layer::Shared;
use super::metrics::MessageMetrics;
use super::propagation::parent_context;

/// Middleware that runs every call of the inner service inside a CONSUMER span and
/// records its metrics; made by [`OtelLayer`](super::OtelLayer).
#[derive(Clone)]
pub struct Otel<S> {
    inner: S,
    shared: Arc<Shared>,
    policy: Option<AckPolicy>,
}

impl<S> Otel<S> {
    pub(super) fn new(inner: S, shared: Arc<Shared>, policy: Option<AckPolicy>) -> Self {
        Self {
            inner,
            shared,
            policy,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwrap the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug> fmt::Debug for Otel<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Otel")
            .field("inner", &self.inner)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl<S> Service<Message> for Otel<S>
where
    S: Service<Message>,
    S::Error: Into<BoxError> + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, message: Message) -> Self::Future {
        let parent = parent_context(&message);
        let filter = message.subscription().unwrap_or(message.topic());
        let metric_attrs = MessageMetrics::attributes(&message, filter);

        let more = span_attributes(&message);
        let mut span_attrs = Vec::with_capacity(metric_attrs.len() + more.len());
        span_attrs.extend_from_slice(&metric_attrs);
        span_attrs.extend(more);
        let span = self.shared.tracer.build_with_context(
            SpanBuilder::from_name(format!("process {filter}"))
                .with_kind(SpanKind::Consumer)
                .with_attributes(span_attrs),
            &parent,
        );
        let cx = parent.with_span(span);

        self.shared.metrics.started(&metric_attrs);
        let guard = Guard::new(
            self.shared.clone(),
            cx.clone(),
            metric_attrs,
            Decider::new(self.policy, &message),
        );
        // Current during `call` too, so spans a service opens before returning its
        // future nest as well as those opened while it runs.
        let inner = {
            let _attached = cx.clone().attach();
            self.inner.call(message)
        };
        ResponseFuture::new(inner.with_context(cx), guard)
    }
}

/// The span attributes beyond the metric attributes (see the [module docs](super)).
fn span_attributes(message: &Message) -> [KeyValue; 10] {
    let origin = message.origin();
    [
        KeyValue::new("messaging.operation.type", "process"),
        KeyValue::new("messaging.destination.name", message.topic().to_owned()),
        KeyValue::new("messaging.client.id", origin.client_id().to_owned()),
        KeyValue::new("messaging.message.id", message.pkid().to_string()),
        KeyValue::new(
            "messaging.message.body.size",
            message.payload().len() as i64,
        ),
        KeyValue::new("server.address", origin.host().to_owned()),
        KeyValue::new("server.port", i64::from(origin.port())),
        KeyValue::new("messaging.mqtt.qos", message.qos() as i64),
        KeyValue::new("messaging.mqtt.dup", message.dup()),
        KeyValue::new("messaging.mqtt.retain", message.retain()),
    ]
}
