//! The per-message instruments of [`OtelLayer`](super::OtelLayer) and the event-driven
//! [`EventMetrics`].

use std::sync::Mutex;
use std::time::Duration;

use opentelemetry::metrics::{Counter, Histogram, Meter, UpDownCounter};
use opentelemetry::KeyValue;
use tower_mqtt::{Event, Message, Status as CallStatus};

/// The instruments [`OtelLayer`](super::OtelLayer) records for every message.
#[derive(Debug)]
pub(super) struct MessageMetrics {
    consumed: Counter<u64>,
    duration: Histogram<f64>,
    inflight: UpDownCounter<i64>,
}

impl MessageMetrics {
    /// Create the instruments on `meter`.
    pub(super) fn new(meter: &Meter) -> Self {
        Self {
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
        }
    }

    /// The attributes of every per-message data point for `message` (no topic: see the
    /// cardinality note in the [module docs](super)).
    pub(super) fn attributes(message: &Message, filter: &str) -> Vec<KeyValue> {
        let mut attrs = Vec::with_capacity(5);
        attrs.push(KeyValue::new("messaging.system", "mqtt"));
        attrs.push(KeyValue::new("messaging.operation.name", "process"));
        attrs.push(KeyValue::new(
            "messaging.destination.template",
            filter.to_owned(),
        ));
        if let Some(group) = message.origin().shared_group() {
            attrs.push(KeyValue::new(
                "messaging.consumer.group.name",
                group.to_owned(),
            ));
        }
        attrs
    }

    /// A call started.
    pub(super) fn started(&self, attrs: &[KeyValue]) {
        self.inflight.add(1, attrs);
    }

    /// A call finished after `elapsed`; `error_type` is set when it failed.
    pub(super) fn finished(
        &self,
        mut attrs: Vec<KeyValue>,
        elapsed: Duration,
        error_type: Option<&'static str>,
    ) {
        self.inflight.add(-1, &attrs);
        self.consumed.add(1, &attrs);
        if let Some(error_type) = error_type {
            attrs.push(KeyValue::new("error.type", error_type));
        }
        self.duration.record(elapsed.as_secs_f64(), &attrs);
    }

    /// A call was dropped before it finished: it is no longer in flight, and neither
    /// consumed nor timed.
    pub(super) fn abandoned(&self, attrs: &[KeyValue]) {
        self.inflight.add(-1, attrs);
    }
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
    #[must_use]
    pub fn new(meter: &Meter) -> Self {
        Self {
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
