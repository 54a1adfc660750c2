use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context as TaskContext, Poll};
use std::time::Instant;

use opentelemetry::context::WithContext;
use opentelemetry::trace::{Status, TraceContextExt};
use opentelemetry::{Context, KeyValue};
use pin_project_lite::pin_project;
use tower_mqtt::BoxError;

use super::disposition::Decider;
use super::layer::Shared;

pin_project! {
    /// Response future of [`Otel`](super::Otel): the inner call, run with the message's
    /// span as the current context. The span ends and the metrics are recorded when it
    /// completes, or when it is dropped unfinished.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: WithContext<F>,
        guard: Guard,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: WithContext<F>, guard: Guard) -> Self {
        Self { inner, guard }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("guard", &self.guard)
            .finish_non_exhaustive()
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError> + 'static,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx)).map_err(Into::into);
        this.guard.finish(&result, std::any::type_name::<E>());
        Poll::Ready(result)
    }
}

/// A low-cardinality class of a failure for `error.type`; `static_type` is the
/// service's error type.
fn error_type(e: &BoxError, static_type: &'static str) -> &'static str {
    if e.is::<tower::timeout::error::Elapsed>() {
        "timeout"
    } else if static_type.contains("dyn ") {
        // A boxed error type says nothing about the failure.
        "_OTHER"
    } else {
        static_type
    }
}

/// Ends the span and records the metrics exactly once: when the call completes, or when
/// it is dropped before that (shutdown, a timeout above the layer).
pub(super) struct Guard {
    shared: Arc<Shared>,
    cx: Context,
    metric_attrs: Vec<KeyValue>,
    decider: Decider,
    started: Instant,
    done: bool,
}

impl Guard {
    /// Start timing a call whose span is current in `cx`.
    pub(super) fn new(
        shared: Arc<Shared>,
        cx: Context,
        metric_attrs: Vec<KeyValue>,
        decider: Decider,
    ) -> Self {
        Self {
            shared,
            cx,
            metric_attrs,
            decider,
            started: Instant::now(),
            done: false,
        }
    }

    /// The call returned `result`; `service_error` names the service's error type.
    fn finish<T>(&mut self, result: &Result<T, BoxError>, service_error: &'static str) {
        self.done = true;
        let span = self.cx.span();
        let disposition = self.decider.disposition(result);
        span.set_attribute(KeyValue::new(
            "messaging.mqtt.disposition",
            disposition.as_str(),
        ));
        let error_type = match result {
            Ok(_) => None,
            Err(e) => {
                let class = error_type(e, service_error);
                span.set_attribute(KeyValue::new("error.type", class));
                span.set_status(Status::error(e.to_string()));
                Some(class)
            }
        };
        self.shared.metrics.finished(
            std::mem::take(&mut self.metric_attrs),
            self.started.elapsed(),
            error_type,
        );
        span.end();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.done {
            self.shared.metrics.abandoned(&self.metric_attrs);
            let span = self.cx.span();
            span.set_status(Status::error("cancelled"));
            span.set_attribute(KeyValue::new("error.type", "cancelled"));
            span.end();
        }
    }
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("span", self.cx.span().span_context())
            .field("decider", &self.decider)
            .field("started", &self.started)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}
