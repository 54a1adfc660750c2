//! Telemetry: what happened to connections, subscriptions and messages.
//!
#![doc = include_str!("../docs/telemetry.md")]

use std::time::Duration;

use crate::config::{Endpoint, QoS};
use crate::disposition::Disposition;
pub use crate::error::DownReason;

/// Whether a service call succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// The service returned `Ok`.
    Success,
    /// The service returned `Err` (or the call was abandoned at the drain timeout).
    Failure,
}

impl Status {
    /// `"success"` or `"failure"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }
}

/// A telemetry event, borrowed from the connection that emits it.
///
/// Every variant but `BrokerDropped` carries `producer_index` and `client_id` (with its
/// `_N` suffix), so events from several connections can be told apart and correlated.
/// `BrokerDropped` comes from the consumer's side connection (`<client_id>_sys`) and
/// concerns the whole broker.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A connection slot started.
    ProducerInit {
        /// Connection index.
        producer_index: usize,
        /// Client id.
        client_id: &'a str,
    },
    /// A connection slot stopped for good.
    ProducerTerminate {
        /// Connection index.
        producer_index: usize,
        /// Client id.
        client_id: &'a str,
        /// `"shutdown"` or the error that ended it.
        reason: &'a str,
    },
    /// CONNACK accepted.
    ConnectionUp {
        /// Connection index.
        producer_index: usize,
        /// Client id.
        client_id: &'a str,
        /// Whether the broker resumed an existing session.
        session_present: bool,
        /// The broker connected to (one of [`Config::hosts`](crate::Config::hosts)).
        endpoint: &'a Endpoint,
    },
    /// A connection ended or could not be made.
    ConnectionDown {
        /// Connection index.
        producer_index: usize,
        /// Client id.
        client_id: &'a str,
        /// Why.
        reason: &'a DownReason,
        /// The broker the connection was to, or the attempt was made to. The next
        /// attempt goes to the next endpoint of a failover list.
        endpoint: &'a Endpoint,
    },
    /// The broker granted a subscription.
    SubscriptionSuccess {
        /// Connection index.
        producer_index: usize,
        /// Client id.
        client_id: &'a str,
        /// The filter as subscribed (with `$share/<group>/` when grouped).
        topic: &'a str,
        /// QoS asked for.
        requested_qos: QoS,
        /// QoS granted; lower than requested when the broker downgraded it.
        granted_qos: QoS,
    },
    /// The broker refused a subscription.
    SubscriptionError {
        /// Connection index.
        producer_index: usize,
        /// Client id.
        client_id: &'a str,
        /// The filter as subscribed.
        topic: &'a str,
        /// SUBACK reason code (0x80 for MQTT 3.1.1 failure).
        reason_code: u8,
        /// Name of the reason code.
        reason: &'a str,
    },
    /// A PUBLISH arrived and is handed to the service.
    MessageStart {
        /// Connection index.
        producer_index: usize,
        /// Client id.
        client_id: &'a str,
        /// Topic.
        topic: &'a str,
        /// Delivered QoS.
        qos: QoS,
        /// Packet id.
        pkid: u16,
        /// DUP flag.
        dup: bool,
    },
    /// A service call finished and its disposition was decided. For QoS 1/2 the
    /// acknowledgement (if any) goes out once every earlier message is decided.
    MessageAck {
        /// Connection index.
        producer_index: usize,
        /// Client id.
        client_id: &'a str,
        /// Topic.
        topic: &'a str,
        /// Delivered QoS.
        qos: QoS,
        /// Packet id.
        pkid: u16,
        /// Service outcome.
        status: Status,
        /// What happens to the message.
        disposition: Disposition,
        /// Time from `MessageStart` to the end of the service call.
        duration: Duration,
    },
    /// A service call finished after the connection its message arrived on closed. It
    /// is not acknowledged (its packet id may name another message now); the broker
    /// redelivers the message on the resumed session.
    MessageStale {
        /// Connection index.
        producer_index: usize,
        /// Client id.
        client_id: &'a str,
        /// Topic.
        topic: &'a str,
        /// Packet id on the closed connection.
        pkid: u16,
        /// Service outcome.
        status: Status,
    },
    /// Read pacing ([`ReadPacing`](crate::ReadPacing)) compared the message rate of a
    /// connection with and without holding its reads, or stopped holding because the
    /// rate fell below its threshold. At most one per 20 ms measurement; usually one per
    /// second or less.
    ReadPacing {
        /// Connection index.
        producer_index: usize,
        /// Client id.
        client_id: &'a str,
        /// Whether the connection holds its reads from now on.
        holding: bool,
        /// Messages per second measured while holding.
        held_rate: u64,
        /// Messages per second measured reading at once, just before or after; `None`
        /// when holding stopped because `held_rate` fell below the threshold.
        direct_rate: Option<u64>,
    },
    /// The broker's count of messages it threw away grew (mosquitto's
    /// `$SYS/broker/publish/messages/dropped`, read by
    /// [`ConsumerBuilder::watch_broker_drops`](crate::ConsumerBuilder::watch_broker_drops)).
    ///
    /// The counter is **broker-wide**: the drops may be anyone's (an offline session
    /// of another client, a full queue of this consumer). mosquitto counts a message
    /// over `max_queued_messages` (or `max_queued_bytes`) for an offline session and for
    /// an online client whose in-flight window is full; the broker log names the client
    /// (`Outgoing messages are being dropped for client …`).
    BrokerDropped {
        /// Client id of the side connection, `<client_id>_sys`.
        client_id: &'a str,
        /// Messages dropped since the previous value this consumer saw.
        dropped: u64,
        /// The broker's counter: messages dropped since it started.
        total: u64,
    },
}

impl Event<'_> {
    /// The event's stable name, e.g. `"connection.up"`.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Event::ProducerInit { .. } => "producer.init",
            Event::ProducerTerminate { .. } => "producer.terminate",
            Event::ConnectionUp { .. } => "connection.up",
            Event::ConnectionDown { .. } => "connection.down",
            Event::SubscriptionSuccess { .. } => "subscription.success",
            Event::SubscriptionError { .. } => "subscription.error",
            Event::MessageStart { .. } => "receive_message.start",
            Event::MessageAck { .. } => "receive_message.ack",
            Event::MessageStale { .. } => "receive_message.stale",
            Event::ReadPacing { .. } => "connection.read_pacing",
            Event::BrokerDropped { .. } => "broker.dropped",
        }
    }
}

/// A user hook receiving every event.
pub(crate) type Hook = std::sync::Arc<dyn Fn(&Event<'_>) + Send + Sync>;

/// Emits [`Event::BrokerDropped`]: a `tracing` warning plus the user's hook.
pub(crate) fn broker_dropped(hook: Option<&Hook>, client_id: &str, dropped: u64, total: u64) {
    tracing::warn!(target: "tower_mqtt::broker", event = "broker.dropped", client_id, dropped,
        total, "the broker dropped messages (max_queued_messages?): see its log for which client");
    if let Some(hook) = hook {
        hook(&Event::BrokerDropped {
            client_id,
            dropped,
            total,
        });
    }
}

/// Emits the events of one connection slot: a `tracing` event plus the user's hook.
#[derive(Clone)]
pub(crate) struct Emitter {
    pub(crate) producer_index: usize,
    pub(crate) client_id: std::sync::Arc<str>,
    pub(crate) hook: Option<Hook>,
}

impl Emitter {
    /// Whether the per-message events ([`Event::MessageStart`], [`Event::MessageAck`])
    /// can reach anyone: the user's hook (fixed when the consumer is built), or their
    /// `tracing` events, which are at DEBUG level: the global maximum level the
    /// subscribers asked for (one atomic load, the check the `tracing` macros make
    /// first) says whether they can be enabled at all. When this is `false` those events
    /// cost this check, and the driver does not read the clock for `MessageAck`'s
    /// duration. Should the maximum level rise while a call runs, its DEBUG event goes
    /// out without `duration_us`.
    #[inline]
    pub(crate) fn wants_message_events(&self) -> bool {
        use tracing::level_filters::{LevelFilter, STATIC_MAX_LEVEL};
        self.hook.is_some()
            || (STATIC_MAX_LEVEL >= LevelFilter::DEBUG
                && LevelFilter::current() >= LevelFilter::DEBUG)
    }

    fn hook(&self, event: &Event<'_>) {
        if let Some(hook) = &self.hook {
            hook(event);
        }
    }

    pub(crate) fn producer_init(&self) {
        let (producer_index, client_id) = (self.producer_index, &*self.client_id);
        tracing::info!(target: "tower_mqtt::producer", event = "producer.init",
            producer_index, client_id, "producer started");
        self.hook(&Event::ProducerInit {
            producer_index,
            client_id,
        });
    }

    pub(crate) fn producer_terminate(&self, reason: &str) {
        let (producer_index, client_id) = (self.producer_index, &*self.client_id);
        tracing::info!(target: "tower_mqtt::producer", event = "producer.terminate",
            producer_index, client_id, reason, "producer stopped");
        self.hook(&Event::ProducerTerminate {
            producer_index,
            client_id,
            reason,
        });
    }

    pub(crate) fn connection_up(&self, session_present: bool, endpoint: &Endpoint) {
        let (producer_index, client_id) = (self.producer_index, &*self.client_id);
        tracing::info!(target: "tower_mqtt::connection", event = "connection.up",
            producer_index, client_id, session_present, endpoint = %endpoint, "connected");
        self.hook(&Event::ConnectionUp {
            producer_index,
            client_id,
            session_present,
            endpoint,
        });
    }

    pub(crate) fn read_pacing(&self, holding: bool, held_rate: u64, direct_rate: Option<u64>) {
        let (producer_index, client_id) = (self.producer_index, &*self.client_id);
        tracing::debug!(target: "tower_mqtt::connection", event = "connection.read_pacing",
            producer_index, client_id, holding, held_rate, direct_rate,
            "read pacing: {}", if holding { "holding reads" } else { "reading at once" });
        self.hook(&Event::ReadPacing {
            producer_index,
            client_id,
            holding,
            held_rate,
            direct_rate,
        });
    }

    pub(crate) fn connection_down(&self, reason: &DownReason, endpoint: &Endpoint) {
        let (producer_index, client_id) = (self.producer_index, &*self.client_id);
        tracing::warn!(target: "tower_mqtt::connection", event = "connection.down",
            producer_index, client_id, reason = %reason, endpoint = %endpoint,
            "connection down");
        self.hook(&Event::ConnectionDown {
            producer_index,
            client_id,
            reason,
            endpoint,
        });
    }

    pub(crate) fn subscription_success(&self, topic: &str, requested_qos: QoS, granted_qos: QoS) {
        let (producer_index, client_id) = (self.producer_index, &*self.client_id);
        tracing::info!(target: "tower_mqtt::subscription", event = "subscription.success",
            producer_index, client_id, topic, requested_qos = requested_qos as u8,
            granted_qos = granted_qos as u8, "subscribed");
        self.hook(&Event::SubscriptionSuccess {
            producer_index,
            client_id,
            topic,
            requested_qos,
            granted_qos,
        });
    }

    pub(crate) fn subscription_error(&self, topic: &str, reason_code: u8, reason: &str) {
        let (producer_index, client_id) = (self.producer_index, &*self.client_id);
        tracing::error!(target: "tower_mqtt::subscription", event = "subscription.error",
            producer_index, client_id, topic, reason_code, reason, "subscription refused");
        self.hook(&Event::SubscriptionError {
            producer_index,
            client_id,
            topic,
            reason_code,
            reason,
        });
    }

    /// [`Event::MessageStart`]; inlined down to [`Self::wants_message_events`] when it
    /// goes nowhere.
    #[inline]
    pub(crate) fn message_start(&self, topic: &str, qos: QoS, pkid: u16, dup: bool) {
        if self.wants_message_events() {
            self.emit_message_start(topic, qos, pkid, dup);
        }
    }

    #[inline(never)]
    fn emit_message_start(&self, topic: &str, qos: QoS, pkid: u16, dup: bool) {
        let (producer_index, client_id) = (self.producer_index, &*self.client_id);
        tracing::debug!(target: "tower_mqtt::receive_message", event = "receive_message.start",
            producer_index, client_id, topic, qos = qos as u8, pkid, dup, "message received");
        self.hook(&Event::MessageStart {
            producer_index,
            client_id,
            topic,
            qos,
            pkid,
            dup,
        });
    }

    /// [`Event::MessageAck`]; inlined down to [`Self::wants_message_events`] when it
    /// goes nowhere. `duration` is `None` when nobody wanted it as the call started.
    #[inline]
    pub(crate) fn message_ack(
        &self,
        topic: &str,
        qos: QoS,
        pkid: u16,
        status: Status,
        disposition: Disposition,
        duration: Option<Duration>,
    ) {
        if self.wants_message_events() {
            self.emit_message_ack(topic, qos, pkid, status, disposition, duration);
        }
    }

    #[inline(never)]
    fn emit_message_ack(
        &self,
        topic: &str,
        qos: QoS,
        pkid: u16,
        status: Status,
        disposition: Disposition,
        duration: Option<Duration>,
    ) {
        let (producer_index, client_id) = (self.producer_index, &*self.client_id);
        tracing::debug!(target: "tower_mqtt::receive_message", event = "receive_message.ack",
            producer_index, client_id, topic, qos = qos as u8, pkid, status = status.as_str(),
            disposition = disposition.as_str(),
            duration_us = duration.map(|d| d.as_micros() as u64), "message decided");
        // With a hook, `wants_message_events` held when the call started: `duration` is set.
        debug_assert!(self.hook.is_none() || duration.is_some());
        let duration = duration.unwrap_or_default();
        self.hook(&Event::MessageAck {
            producer_index,
            client_id,
            topic,
            qos,
            pkid,
            status,
            disposition,
            duration,
        });
    }

    pub(crate) fn message_stale(&self, topic: &str, pkid: u16, status: Status) {
        let (producer_index, client_id) = (self.producer_index, &*self.client_id);
        tracing::debug!(target: "tower_mqtt::receive_message", event = "receive_message.stale",
            producer_index, client_id, topic, pkid, status = status.as_str(),
            "result not acknowledged: its connection is closed; the broker redelivers the message");
        self.hook(&Event::MessageStale {
            producer_index,
            client_id,
            topic,
            pkid,
            status,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::{Emitter, Event, Status};
    use crate::config::QoS;
    use crate::disposition::Disposition;

    fn emitter(hook: Option<super::Hook>) -> Emitter {
        Emitter {
            producer_index: 0,
            client_id: "c_0".into(),
            hook,
        }
    }

    #[test]
    fn a_hook_gets_every_message_event_with_its_duration() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let hook: super::Hook = {
            let seen = seen.clone();
            Arc::new(move |e: &Event<'_>| {
                let entry = match e {
                    Event::MessageStart { pkid, .. } => (*pkid, None),
                    Event::MessageAck { pkid, duration, .. } => (*pkid, Some(*duration)),
                    _ => return,
                };
                seen.lock().unwrap().push(entry);
            })
        };
        let events = emitter(Some(hook));
        assert!(events.wants_message_events());
        events.message_start("t", QoS::AtLeastOnce, 7, false);
        let d = Duration::from_micros(1500);
        events.message_ack(
            "t",
            QoS::AtLeastOnce,
            7,
            Status::Success,
            Disposition::Ack,
            Some(d),
        );
        assert_eq!(*seen.lock().unwrap(), [(7, None), (7, Some(d))]);
    }

    #[test]
    fn message_events_are_wanted_by_a_debug_subscriber_and_not_by_nobody() {
        // A DEBUG subscriber for this thread only: the events must be wanted then.
        let calls = Arc::new(AtomicU32::new(0));
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer({
                let calls = calls.clone();
                move || {
                    calls.fetch_add(1, Ordering::Relaxed);
                    std::io::sink()
                }
            })
            .finish();
        let events = emitter(None);
        tracing::subscriber::with_default(subscriber, || {
            assert!(events.wants_message_events());
            events.message_ack(
                "t",
                QoS::AtMostOnce,
                0,
                Status::Success,
                Disposition::Ack,
                None,
            );
        });
        assert_eq!(
            calls.load(Ordering::Relaxed),
            1,
            "the DEBUG event was written"
        );
        // Without one, it depends on the process's other subscribers (other tests):
        // wanted exactly when some subscriber may enable DEBUG.
        let debug = tracing::level_filters::LevelFilter::current()
            >= tracing::level_filters::LevelFilter::DEBUG;
        assert_eq!(events.wants_message_events(), debug);
    }
}
