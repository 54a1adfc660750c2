//! Telemetry: what happened to connections, subscriptions and messages.
//!
//! Every event is a [`tracing`] event with a stable target and stable field names:
//!
//! | event | target | level | fields |
//! |---|---|---|---|
//! | producer.init | `tower_mqtt::producer` | INFO | `producer_index`, `client_id` |
//! | producer.terminate | `tower_mqtt::producer` | INFO | `producer_index`, `client_id`, `reason` |
//! | connection.up | `tower_mqtt::connection` | INFO | `producer_index`, `client_id`, `session_present` |
//! | connection.down | `tower_mqtt::connection` | WARN | `producer_index`, `client_id`, `reason` |
//! | subscription.success | `tower_mqtt::subscription` | INFO | `producer_index`, `client_id`, `topic`, `requested_qos`, `granted_qos` |
//! | subscription.error | `tower_mqtt::subscription` | ERROR | `producer_index`, `client_id`, `topic`, `reason` |
//! | receive_message.start | `tower_mqtt::receive_message` | DEBUG | `producer_index`, `client_id`, `topic`, `qos`, `pkid`, `dup` |
//! | receive_message.ack | `tower_mqtt::receive_message` | DEBUG | `producer_index`, `client_id`, `topic`, `qos`, `pkid`, `status`, `disposition`, `duration_us` |
//!
//! The `event` field of each carries its name (`event = "connection.up"`).

use std::fmt;
use std::time::Duration;

use crate::config::QoS;
use crate::disposition::Disposition;

/// Why a connection went down or could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DownReason {
    /// CONNACK: bad user name or password.
    BadCredentials,
    /// CONNACK: not authorized.
    NotAuthorized,
    /// CONNACK: the server is unavailable.
    ServerUnavailable,
    /// CONNACK or DISCONNECT: the server is busy.
    ServerBusy,
    /// CONNACK or DISCONNECT: a quota was exceeded.
    QuotaExceeded,
    /// CONNACK refused for another reason; `code` is the raw return/reason code.
    Refused {
        /// Raw CONNACK return code (MQTT 3.1.1) or reason code (MQTT 5).
        code: u8,
        /// Readable name of the code.
        name: String,
    },
    /// The host name did not resolve.
    Dns(String),
    /// Nothing listens at the address (TCP connection refused).
    ConnectionRefused,
    /// No TCP connection or no CONNACK within `connect_timeout`.
    Timeout,
    /// The broker did not answer a PINGREQ within half a keepalive interval.
    KeepaliveTimeout,
    /// The broker closed the connection.
    Closed,
    /// MQTT 5 DISCONNECT from the server with this reason code.
    ServerDisconnect {
        /// Raw reason code.
        code: u8,
    },
    /// A packet larger than `max_packet_size` arrived.
    PacketTooLarge {
        /// Size of the packet, when known.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The broker sent something that is not valid MQTT.
    Protocol(String),
    /// Any other I/O error.
    Io {
        /// The error kind.
        kind: std::io::ErrorKind,
        /// The error message.
        message: String,
    },
}

impl fmt::Display for DownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownReason::BadCredentials => f.write_str("bad user name or password"),
            DownReason::NotAuthorized => f.write_str("not authorized"),
            DownReason::ServerUnavailable => f.write_str("server unavailable"),
            DownReason::ServerBusy => f.write_str("server busy"),
            DownReason::QuotaExceeded => f.write_str("quota exceeded"),
            DownReason::Refused { code, name } => {
                write!(f, "connection refused by broker: {name} (code {code})")
            }
            DownReason::Dns(e) => write!(f, "DNS lookup failed: {e}"),
            DownReason::ConnectionRefused => f.write_str("TCP connection refused"),
            DownReason::Timeout => f.write_str("timed out connecting"),
            DownReason::KeepaliveTimeout => f.write_str("broker did not answer PINGREQ"),
            DownReason::Closed => f.write_str("connection closed by broker"),
            DownReason::ServerDisconnect { code } => {
                write!(f, "broker sent DISCONNECT (reason 0x{code:02x})")
            }
            DownReason::PacketTooLarge { size, limit } => write!(
                f,
                "incoming packet of {size} bytes exceeds max_packet_size ({limit}); raise Config::max_packet_size"
            ),
            DownReason::Protocol(e) => write!(f, "protocol error: {e}"),
            DownReason::Io { kind, message } => write!(f, "I/O error ({kind:?}): {message}"),
        }
    }
}

impl std::error::Error for DownReason {}

impl DownReason {
    pub(crate) fn from_io(err: std::io::Error) -> Self {
        use std::io::ErrorKind;
        match err.kind() {
            ErrorKind::ConnectionRefused => DownReason::ConnectionRefused,
            ErrorKind::TimedOut => DownReason::Timeout,
            ErrorKind::UnexpectedEof
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe => DownReason::Closed,
            kind => DownReason::Io {
                kind,
                message: err.to_string(),
            },
        }
    }
}

/// Identity of the connection an event is about.
#[derive(Clone, Copy)]
pub(crate) struct Who<'a> {
    pub(crate) producer_index: usize,
    pub(crate) client_id: &'a str,
}

pub(crate) fn producer_init(who: Who<'_>) {
    tracing::info!(target: "tower_mqtt::producer", event = "producer.init",
        producer_index = who.producer_index, client_id = who.client_id, "producer started");
}

pub(crate) fn producer_terminate(who: Who<'_>, reason: &str) {
    tracing::info!(target: "tower_mqtt::producer", event = "producer.terminate",
        producer_index = who.producer_index, client_id = who.client_id, reason, "producer stopped");
}

pub(crate) fn connection_up(who: Who<'_>, session_present: bool) {
    tracing::info!(target: "tower_mqtt::connection", event = "connection.up",
        producer_index = who.producer_index, client_id = who.client_id, session_present, "connected");
}

pub(crate) fn connection_down(who: Who<'_>, reason: &DownReason) {
    tracing::warn!(target: "tower_mqtt::connection", event = "connection.down",
        producer_index = who.producer_index, client_id = who.client_id, reason = %reason, "connection down");
}

pub(crate) fn subscription_success(who: Who<'_>, topic: &str, requested: QoS, granted: QoS) {
    tracing::info!(target: "tower_mqtt::subscription", event = "subscription.success",
        producer_index = who.producer_index, client_id = who.client_id, topic,
        requested_qos = requested as u8, granted_qos = granted as u8, "subscribed");
}

pub(crate) fn subscription_error(who: Who<'_>, topic: &str, reason: &str) {
    tracing::error!(target: "tower_mqtt::subscription", event = "subscription.error",
        producer_index = who.producer_index, client_id = who.client_id, topic, reason, "subscription refused");
}

pub(crate) fn message_start(who: Who<'_>, topic: &str, qos: QoS, pkid: u16, dup: bool) {
    tracing::debug!(target: "tower_mqtt::receive_message", event = "receive_message.start",
        producer_index = who.producer_index, client_id = who.client_id, topic,
        qos = qos as u8, pkid, dup, "message received");
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn message_ack(
    who: Who<'_>,
    topic: &str,
    qos: QoS,
    pkid: u16,
    success: bool,
    disposition: Disposition,
    elapsed: Duration,
) {
    tracing::debug!(target: "tower_mqtt::receive_message", event = "receive_message.ack",
        producer_index = who.producer_index, client_id = who.client_id, topic,
        qos = qos as u8, pkid, status = if success { "success" } else { "failure" },
        disposition = disposition.as_str(), duration_us = elapsed.as_micros() as u64,
        "message decided");
}
