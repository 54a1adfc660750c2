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
//! * [`EventMetrics`] turns the consumer's typed [`Event`]s into connection, ack and
//!   redelivery metrics; install it with
//!   [`ConsumerBuilder::on_event`](tower_mqtt::ConsumerBuilder::on_event).
//!
//! # Span
//!
//! Name `process {filter}` — the subscription filter that matched (e.g.
//! `process sensors/+/temp`), not the topic, to keep span names low-cardinality.
//!
//! | attribute | value |
//! |---|---|
//! | `messaging.system` | `"mqtt"` |
//! | `messaging.operation.type` | `"process"` |
//! | `messaging.operation.name` | `"process"` |
//! | `messaging.destination.name` | the topic |
//! | `messaging.destination.template` | the subscription filter |
//! | `messaging.consumer.group.name` | the shared group, when set |
//! | `messaging.client.id` | the connection's client id (`<id>_<n>`) |
//! | `messaging.message.id` | the packet id |
//! | `messaging.message.body.size` | payload bytes |
//! | `server.address`, `server.port` | the broker |
//! | `messaging.mqtt.qos`, `messaging.mqtt.dup`, `messaging.mqtt.retain` | delivery flags |
//! | `messaging.mqtt.disposition` | `ack`, `leave`, `redeliver` or `reject`, decided with the layer's [`AckPolicy`] (give it the consumer's) |
//! | `error.type` | on failure: `timeout` for tower's timeout, else the service's error type name, else `_OTHER` |
//!
//! # Metrics
//!
//! | instrument | kind | unit | attributes |
//! |---|---|---|---|
//! | `messaging.client.consumed.messages` | counter | `{message}` | system, operation, destination template, consumer group |
//! | `messaging.process.duration` | histogram | `s` | the same, plus `error.type` on failure |
//! | `tower_mqtt.messages.inflight` | up-down counter | `{message}` | the same |
//! | `tower_mqtt.acks` | counter ([`EventMetrics`]) | `{message}` | `messaging.mqtt.disposition`, `tower_mqtt.status` |
//! | `tower_mqtt.redeliveries` | counter ([`EventMetrics`]) | `{message}` | — (messages received with DUP set) |
//! | `tower_mqtt.connections.active` | up-down counter ([`EventMetrics`]) | `{connection}` | — |
//! | `tower_mqtt.reconnects` | counter ([`EventMetrics`]) | `{connection}` | — |
//!
//! Destination names (topics) are deliberately not metric attributes: topics often
//! carry device ids, which would make every series unique.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context as TaskContext, Poll};
use std::time::Instant;

use opentelemetry::global::{self, BoxedTracer};
use opentelemetry::metrics::{Counter, Histogram, Meter, MeterProvider, UpDownCounter};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    FutureExt as _, SpanBuilder, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_mqtt::{AckPolicy, BoxError, Event, Message, Status as CallStatus};
use tower_service::Service;

/// Instrumentation scope name used for the tracer and the meter.
pub const SCOPE: &str = "tower-mqtt";

struct Shared {
    tracer: BoxedTracer,
    propagator: TraceContextPropagator,
    consumed: Counter<u64>,
    duration: Histogram<f64>,
    inflight: UpDownCounter<i64>,
}

/// Layer that traces and measures every message; see the [module docs](self).
#[derive(Clone)]
pub struct OtelLayer {
    shared: Arc<Shared>,
    // Outside the shared state, so setting it never rebuilds (or loses) the tracer.
    policy: AckPolicy,
}

impl std::fmt::Debug for OtelLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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
    pub fn new() -> Self {
        let tracer = global::tracer(SCOPE);
        Self::build(tracer, &global::meter(SCOPE))
    }

    /// Use these providers instead of the global ones.
    pub fn with_providers<T, S>(tracer_provider: &T, meter_provider: &dyn MeterProvider) -> Self
    where
        T: TracerProvider,
        T::Tracer: opentelemetry::trace::Tracer<Span = S> + Send + Sync + 'static,
        S: opentelemetry::trace::Span + Send + Sync + 'static,
    {
        let tracer = BoxedTracer::new(Box::new(tracer_provider.tracer(SCOPE)));
        Self::build(tracer, &meter_provider.meter(SCOPE))
    }

    fn build(tracer: BoxedTracer, meter: &Meter) -> Self {
        OtelLayer {
            shared: Arc::new(Shared {
                tracer,
                propagator: TraceContextPropagator::new(),
                consumed: meter
                    .u64_counter("messaging.client.consumed.messages")
                    .with_unit("{message}")
                    .with_description("Messages delivered to the service")
                    .build(),
                duration: meter
                    .f64_histogram("messaging.process.duration")
                    .with_unit("s")
                    .with_description("Duration of the service call for one message")
                    .build(),
                inflight: meter
                    .i64_up_down_counter("tower_mqtt.messages.inflight")
                    .with_unit("{message}")
                    .with_description("Messages being processed")
                    .build(),
            }),
            policy: AckPolicy::default(),
        }
    }

    /// The rules the consumer uses, so spans can record the disposition (default:
    /// [`AckPolicy::default`], the consumer's default).
    pub fn ack_policy(mut self, policy: AckPolicy) -> Self {
        self.policy = policy;
        self
    }
}

impl<S> Layer<S> for OtelLayer {
    type Service = Otel<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Otel {
            inner,
            shared: self.shared.clone(),
            policy: self.policy,
        }
    }
}

/// Service produced by [`OtelLayer`].
#[derive(Clone)]
pub struct Otel<S> {
    inner: S,
    shared: Arc<Shared>,
    policy: AckPolicy,
}

impl<S: std::fmt::Debug> std::fmt::Debug for Otel<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Otel")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// Reads W3C trace context from a message's MQTT 5 user properties.
struct UserProperties<'a>(&'a Message);

impl Extractor for UserProperties<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.properties()?.user_property(key)
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .properties()
            .map(|p| p.user_properties.iter().map(|(k, _)| k.as_str()).collect())
            .unwrap_or_default()
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
        let shared = &self.shared;
        let parent = if message.properties().is_some() {
            shared
                .propagator
                .extract_with_context(&Context::current(), &UserProperties(&message))
        } else {
            Context::current()
        };
        let origin = message.origin();
        let filter = message.subscription().unwrap_or(message.topic()).to_owned();

        let mut metric_attrs = Vec::with_capacity(5);
        metric_attrs.push(KeyValue::new("messaging.system", "mqtt"));
        metric_attrs.push(KeyValue::new("messaging.operation.name", "process"));
        metric_attrs.push(KeyValue::new(
            "messaging.destination.template",
            filter.clone(),
        ));
        if let Some(group) = origin.shared_group() {
            metric_attrs.push(KeyValue::new(
                "messaging.consumer.group.name",
                group.to_owned(),
            ));
        }

        let mut attrs = metric_attrs.clone();
        attrs.extend([
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
        ]);
        let span = shared.tracer.build_with_context(
            SpanBuilder::from_name(format!("process {filter}"))
                .with_kind(SpanKind::Consumer)
                .with_attributes(attrs),
            &parent,
        );
        let cx = parent.with_span(span);

        shared.inflight.add(1, &metric_attrs);
        // Current during `call` too, so spans a service opens before returning its
        // future nest as well as those opened while it runs.
        let inner = {
            let _attached = cx.clone().attach();
            self.inner.call(message)
        };
        ResponseFuture {
            inner: inner.with_context(cx.clone()),
            guard: Guard {
                shared: shared.clone(),
                policy: self.policy,
                cx,
                metric_attrs,
                started: Instant::now(),
                done: false,
            },
        }
    }
}

/// Ends the span and records the metrics once, even if the call is dropped.
struct Guard {
    shared: Arc<Shared>,
    policy: AckPolicy,
    cx: Context,
    metric_attrs: Vec<KeyValue>,
    started: Instant,
    done: bool,
}

impl Guard {
    fn finish(&mut self, result: &Result<(), BoxError>, error_type: Option<Cow<'static, str>>) {
        self.done = true;
        let span = self.cx.span();
        let disposition = self.policy.decide(result);
        span.set_attribute(KeyValue::new(
            "messaging.mqtt.disposition",
            disposition.as_str(),
        ));
        let mut attrs = std::mem::take(&mut self.metric_attrs);
        self.shared.inflight.add(-1, &attrs);
        self.shared.consumed.add(1, &attrs);
        if let Err(e) = result {
            let error_type = error_type.unwrap_or(Cow::Borrowed("_OTHER"));
            span.set_attribute(KeyValue::new("error.type", error_type.clone()));
            span.set_status(Status::error(e.to_string()));
            attrs.push(KeyValue::new("error.type", error_type));
        }
        self.shared
            .duration
            .record(self.started.elapsed().as_secs_f64(), &attrs);
        span.end();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.done {
            // The call was dropped before it finished (shutdown, a timeout above us).
            self.shared.inflight.add(-1, &self.metric_attrs);
            let span = self.cx.span();
            span.set_status(Status::error("cancelled"));
            span.set_attribute(KeyValue::new("error.type", "cancelled"));
            span.end();
        }
    }
}

pin_project! {
    /// Response future of [`Otel`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: opentelemetry::context::WithContext<F>,
        guard: Guard,
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
        let result = ready!(this.inner.poll(cx));
        match result {
            Ok(response) => {
                this.guard.finish(&Ok(()), None);
                Poll::Ready(Ok(response))
            }
            Err(e) => {
                let name = std::any::type_name::<E>();
                let e: BoxError = e.into();
                let kind = error_type(&e, name);
                let as_result = Err(e);
                this.guard.finish(&as_result, Some(kind));
                Poll::Ready(as_result.map(|()| unreachable!()))
            }
        }
    }
}

/// A low-cardinality class for `error.type`.
fn error_type(e: &BoxError, static_type: &'static str) -> Cow<'static, str> {
    if e.is::<tower::timeout::error::Elapsed>() {
        return Cow::Borrowed("timeout");
    }
    // A concrete error type names the failure well; a boxed one says nothing.
    if !static_type.contains("dyn ") {
        return Cow::Borrowed(static_type);
    }
    Cow::Borrowed("_OTHER")
}

/// The MQTT 5 user properties that carry `cx`'s trace to a consumer: add them to the
/// PUBLISH (e.g. rumqttc's `PublishProperties::user_properties`).
pub fn trace_context_properties(cx: &Context) -> Vec<(String, String)> {
    struct Props(Vec<(String, String)>);
    impl Injector for Props {
        fn set(&mut self, key: &str, value: String) {
            self.0.push((key.to_owned(), value));
        }
    }
    let mut props = Props(Vec::with_capacity(2));
    TraceContextPropagator::new().inject_context(cx, &mut props);
    props.0
}

/// Connection, acknowledgement and redelivery metrics from the consumer's events.
///
/// ```no_run
/// # use tower_mqtt::{Config, Consumer, QoS};
/// use tower_mqtt_layers::otel::EventMetrics;
/// let metrics = EventMetrics::new(&opentelemetry::global::meter("tower-mqtt"));
/// let consumer = Consumer::builder(Config::new("localhost").client_id("ingest"))
///     .topic("a/#", QoS::AtLeastOnce)
///     .on_event(move |event| metrics.record(event))
///     .build();
/// ```
pub struct EventMetrics {
    acks: Counter<u64>,
    redeliveries: Counter<u64>,
    active: UpDownCounter<i64>,
    reconnects: Counter<u64>,
    /// Per connection index: (ever connected, connected now).
    state: Mutex<Vec<(bool, bool)>>,
}

impl std::fmt::Debug for EventMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventMetrics").finish_non_exhaustive()
    }
}

impl EventMetrics {
    /// Create the instruments on `meter`.
    pub fn new(meter: &Meter) -> Self {
        EventMetrics {
            acks: meter
                .u64_counter("tower_mqtt.acks")
                .with_unit("{message}")
                .with_description("Decided messages, by disposition")
                .build(),
            redeliveries: meter
                .u64_counter("tower_mqtt.redeliveries")
                .with_unit("{message}")
                .with_description("Messages received again (DUP set)")
                .build(),
            active: meter
                .i64_up_down_counter("tower_mqtt.connections.active")
                .with_unit("{connection}")
                .with_description("Connections currently up")
                .build(),
            reconnects: meter
                .u64_counter("tower_mqtt.reconnects")
                .with_unit("{connection}")
                .with_description("Successful connections after the first, per connection slot")
                .build(),
            state: Mutex::new(Vec::new()),
        }
    }

    /// Update the metrics for one event.
    pub fn record(&self, event: &Event<'_>) {
        match *event {
            Event::MessageAck {
                disposition,
                status,
                ..
            } => self.acks.add(
                1,
                &[
                    KeyValue::new("messaging.mqtt.disposition", disposition.as_str()),
                    KeyValue::new(
                        "tower_mqtt.status",
                        match status {
                            CallStatus::Success => "success",
                            CallStatus::Failure => "failure",
                        },
                    ),
                ],
            ),
            Event::MessageStart { dup: true, .. } => self.redeliveries.add(1, &[]),
            Event::ConnectionUp { producer_index, .. } => {
                let (ever, now) = self.swap_state(producer_index, true);
                if ever {
                    self.reconnects.add(1, &[]);
                }
                if !now {
                    self.active.add(1, &[]);
                }
            }
            Event::ConnectionDown { producer_index, .. }
            | Event::ProducerTerminate { producer_index, .. } => {
                let (_, now) = self.swap_state(producer_index, false);
                if now {
                    self.active.add(-1, &[]);
                }
            }
            _ => {}
        }
    }

    /// Set "connected now" for a connection; return the previous (ever, now).
    fn swap_state(&self, index: usize, up: bool) -> (bool, bool) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.len() <= index {
            state.resize(index + 1, (false, false));
        }
        let previous = state[index];
        state[index] = (previous.0 || up, up);
        previous
    }
}
