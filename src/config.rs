//! Connection settings: where the broker is and how to talk to it.
//!
//! [`Config`] describes one MQTT connection. The [`ConsumerBuilder`](crate::ConsumerBuilder)
//! adds what to subscribe to and how to acknowledge, then validates everything at once in
//! [`build`](crate::ConsumerBuilder::build).

use std::fmt;
use std::time::Duration;

/// MQTT protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ProtoVer {
    /// MQTT 3.1. Not supported: `build()` rejects it with
    /// [`ConfigError::UnsupportedProtocol`](crate::ConfigError::UnsupportedProtocol).
    V3,
    /// MQTT 3.1.1 (protocol level 4). The default.
    #[default]
    V4,
    /// MQTT 5.
    V5,
}

/// MQTT quality of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QoS {
    /// QoS 0: delivered at most once, never acknowledged.
    AtMostOnce = 0,
    /// QoS 1: delivered at least once, acknowledged with PUBACK.
    AtLeastOnce = 1,
    /// QoS 2: delivered exactly once by the broker, acknowledged with PUBREC
    /// (and PUBCOMP once the broker releases it).
    ExactlyOnce = 2,
}

impl QoS {
    pub(crate) fn to_rumqttc(self) -> rumqttc::mqttbytes::QoS {
        match self {
            QoS::AtMostOnce => rumqttc::mqttbytes::QoS::AtMostOnce,
            QoS::AtLeastOnce => rumqttc::mqttbytes::QoS::AtLeastOnce,
            QoS::ExactlyOnce => rumqttc::mqttbytes::QoS::ExactlyOnce,
        }
    }

    pub(crate) fn from_rumqttc(qos: rumqttc::mqttbytes::QoS) -> Self {
        match qos {
            rumqttc::mqttbytes::QoS::AtMostOnce => QoS::AtMostOnce,
            rumqttc::mqttbytes::QoS::AtLeastOnce => QoS::AtLeastOnce,
            rumqttc::mqttbytes::QoS::ExactlyOnce => QoS::ExactlyOnce,
        }
    }

    pub(crate) fn to_v5(self) -> rumqttc::v5::mqttbytes::QoS {
        match self {
            QoS::AtMostOnce => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
            QoS::AtLeastOnce => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            QoS::ExactlyOnce => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
        }
    }

    pub(crate) fn from_v5(qos: rumqttc::v5::mqttbytes::QoS) -> Self {
        match qos {
            rumqttc::v5::mqttbytes::QoS::AtMostOnce => QoS::AtMostOnce,
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce => QoS::AtLeastOnce,
            rumqttc::v5::mqttbytes::QoS::ExactlyOnce => QoS::ExactlyOnce,
        }
    }
}

/// Default largest incoming packet: enough for a 1 MiB payload plus topic and properties.
pub const DEFAULT_MAX_PACKET_SIZE: usize = 1024 * 1024 + 64 * 1024;
/// Largest packet MQTT can encode (256 MiB), and so the largest `max_packet_size`.
pub const MAX_PACKET_SIZE_LIMIT: usize = 268_435_455;

/// A password that never shows up in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(pub(crate) String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// How to reach and talk to the broker.
///
/// ```
/// use std::time::Duration;
/// use tower_mqtt::{Config, ProtoVer};
///
/// let config = Config::new("127.0.0.1")
///     .port(1883)
///     .client_id("ingest")
///     .proto_ver(ProtoVer::V5)
///     .keepalive(Duration::from_secs(30));
/// ```
///
/// Nothing is checked until [`ConsumerBuilder::build`](crate::ConsumerBuilder::build),
/// which reports every problem as a [`ConfigError`](crate::ConfigError) naming the option.
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) client_id: Option<String>,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<Secret>,
    pub(crate) clean_start: bool,
    pub(crate) proto_ver: ProtoVer,
    pub(crate) keepalive: Duration,
    pub(crate) session_expiry: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_packet_size: usize,
}

impl Config {
    /// Connection settings for the broker at `host`, port 1883.
    pub fn new(host: impl Into<String>) -> Self {
        Config {
            host: host.into(),
            port: 1883,
            client_id: None,
            username: None,
            password: None,
            clean_start: false,
            proto_ver: ProtoVer::V4,
            keepalive: Duration::from_secs(30),
            session_expiry: Duration::from_secs(24 * 60 * 60),
            connect_timeout: Duration::from_secs(60),
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
        }
    }

    /// Broker TCP port. Default 1883.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Client identifier. Each connection appends `_N`, its producer index.
    ///
    /// Required with `clean_start(false)` (the default): a generated id could never
    /// resume its session, so messages left unacknowledged would be stranded.
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    /// User name sent in CONNECT.
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// Password sent in CONNECT. Requires [`username`](Self::username). Never printed.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(Secret(password.into()));
        self
    }

    /// Whether the broker should discard the session on connect. Default `false`, so a
    /// restarted consumer resumes its session and the broker redelivers what was left
    /// unacknowledged.
    pub fn clean_start(mut self, clean_start: bool) -> Self {
        self.clean_start = clean_start;
        self
    }

    /// MQTT protocol version. Default [`ProtoVer::V4`] (MQTT 3.1.1).
    pub fn proto_ver(mut self, proto_ver: ProtoVer) -> Self {
        self.proto_ver = proto_ver;
        self
    }

    /// Keepalive interval, in whole seconds (0 disables keepalive). Default 30 s.
    ///
    /// A PINGREQ goes out every interval; a broker that does not answer within half an
    /// interval more is treated as gone, so a dead broker is noticed within 1.5× keepalive.
    pub fn keepalive(mut self, keepalive: Duration) -> Self {
        self.keepalive = keepalive;
        self
    }

    /// MQTT 5 Session Expiry Interval sent with `clean_start(false)`. Default 24 hours.
    ///
    /// MQTT 5 ends a session when the connection closes unless this is non-zero, so
    /// `clean_start(false)` alone would keep nothing. Ignored by MQTT 3.1.1, whose
    /// persistent sessions last until the broker expires them.
    pub fn session_expiry(mut self, session_expiry: Duration) -> Self {
        self.session_expiry = session_expiry;
        self
    }

    /// How long to wait for the TCP connection and the CONNACK. Default 60 s.
    pub fn connect_timeout(mut self, connect_timeout: Duration) -> Self {
        self.connect_timeout = connect_timeout;
        self
    }

    /// Largest incoming packet accepted, in bytes. Default
    /// [`DEFAULT_MAX_PACKET_SIZE`] (a 1 MiB payload fits); at most
    /// [`MAX_PACKET_SIZE_LIMIT`] (256 MiB). A larger packet closes the connection with
    /// [`DownReason::PacketTooLarge`](crate::DownReason::PacketTooLarge) and stays on the
    /// broker. It is not sent as MQTT 5 Maximum Packet Size, because brokers silently
    /// discard messages above that limit.
    pub fn max_packet_size(mut self, bytes: usize) -> Self {
        self.max_packet_size = bytes;
        self
    }
}
