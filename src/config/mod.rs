//! Connection settings: where the broker is and how to talk to it.
//!
//! [`Config`] describes one MQTT connection. The [`ConsumerBuilder`](crate::ConsumerBuilder)
//! adds what to subscribe to and how to acknowledge, then validates everything at once in
//! [`build`](crate::ConsumerBuilder::build).
//!
#![doc = include_str!("../../docs/options.md")]

// This file holds the data (Config, QoS, ProtoVer, Will, Secret) and its setters; the
// option tables above live in docs/options.md. tls.rs: TlsOptions and PEM data. url.rs:
// Config::from_url. env.rs: Config::from_env. emqtt.rs: the off_broadway_emqtt names.
// validate.rs: the checks of ConsumerBuilder::build. de.rs: Deserialize (feature serde).

use std::fmt;
use std::time::Duration;

#[cfg(feature = "serde")]
mod de;
mod emqtt;
mod endpoint;
mod env;
mod pacing;
mod tls;
mod url;
mod validate;

pub use emqtt::OptionValue;
pub use endpoint::Endpoint;
pub use pacing::ReadPacing;
pub use tls::TlsOptions;

#[cfg(feature = "serde")]
pub(crate) use de::{duration, optional_duration, set};
pub(crate) use emqtt::Migrated;
#[cfg(feature = "tls")] // only the TLS transport reads PEM data
pub(crate) use tls::Pem;
pub(crate) use validate::validate;

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
    /// The first endpoint (or the only one).
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The rest of a failover list ([`Config::hosts`]), in order.
    pub(crate) more_hosts: Vec<Endpoint>,
    /// `hosts([])` was given: `build()` says so.
    pub(crate) empty_host_list: bool,
    pub(crate) client_id: Option<String>,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<Secret>,
    pub(crate) clean_start: bool,
    pub(crate) proto_ver: ProtoVer,
    pub(crate) keepalive: Duration,
    pub(crate) session_expiry: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_packet_size: usize,
    pub(crate) tls: Option<TlsOptions>,
    /// `Some(path)`: speak MQTT over a websocket at this path (`ws://`, or `wss://` with TLS).
    pub(crate) websocket_path: Option<String>,
    pub(crate) will: Option<Will>,
    pub(crate) bridge_mode: bool,
    pub(crate) properties: ConnectProperties,
    pub(crate) migrated: Migrated,
}

/// MQTT 5 CONNECT properties given explicitly (see [`Config::connect_property`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ConnectProperties {
    pub(crate) user_properties: Vec<(String, String)>,
    pub(crate) request_problem_info: Option<bool>,
    pub(crate) request_response_info: Option<bool>,
    pub(crate) topic_alias_max: Option<u16>,
    /// Checked against `max_inflight` by `build()`.
    pub(crate) receive_maximum: Option<u16>,
    /// Checked against `session_expiry` by `build()`.
    pub(crate) session_expiry: Option<u32>,
}

impl Config {
    /// Connection settings for the broker at `host`, port 1883.
    pub fn new(host: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            port: 1883,
            more_hosts: Vec::new(),
            empty_host_list: false,
            client_id: None,
            username: None,
            password: None,
            clean_start: false,
            proto_ver: ProtoVer::V4,
            keepalive: Duration::from_secs(30),
            session_expiry: Duration::from_secs(24 * 60 * 60),
            connect_timeout: Duration::from_secs(60),
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            tls: None,
            websocket_path: None,
            will: None,
            bridge_mode: false,
            properties: ConnectProperties::default(),
            migrated: Migrated::default(),
        }
    }

    /// Connect over TLS (`ssl` + `ssl_opts` in off_broadway_emqtt). The server's
    /// certificate is verified by default; see [`TlsOptions`].
    #[must_use]
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Speak MQTT over a websocket at `path` (e.g. `"/mqtt"`): `ws://host:port/path`,
    /// or `wss://` when [`tls`](Self::tls) is set too. The upgrade request asks for the
    /// `mqtt` subprotocol. (`ws_path` in off_broadway_emqtt, which accepted and ignored it.)
    #[must_use]
    pub fn websocket(mut self, path: impl Into<String>) -> Self {
        self.websocket_path = Some(path.into());
        self
    }

    /// Last will: the broker publishes it when this connection ends without a
    /// DISCONNECT (a crash, a cut network, a keepalive timeout), never after a clean
    /// shutdown.
    #[must_use]
    pub fn will(mut self, will: Will) -> Self {
        self.will = Some(will);
        self
    }

    /// MQTT 3.1.1 bridge mode: CONNECT carries protocol level `0x84`, which tells
    /// brokers that know it (mosquitto) that the client is a bridge. MQTT 5 has no such
    /// flag, so `build()` rejects it with [`ProtoVer::V5`]. Default `false`.
    #[must_use]
    pub fn bridge_mode(mut self, bridge: bool) -> Self {
        self.bridge_mode = bridge;
        self
    }

    /// MQTT 5: add a User Property to CONNECT (repeatable; order is kept). `build()`
    /// rejects it with MQTT 3.1.1, which has no properties.
    #[must_use]
    pub fn user_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties
            .user_properties
            .push((key.into(), value.into()));
        self
    }

    /// MQTT 5 Request Problem Information (broker default: `true`).
    #[must_use]
    pub fn request_problem_info(mut self, request: bool) -> Self {
        self.properties.request_problem_info = Some(request);
        self
    }

    /// MQTT 5 Request Response Information (broker default: `false`).
    #[must_use]
    pub fn request_response_info(mut self, request: bool) -> Self {
        self.properties.request_response_info = Some(request);
        self
    }

    /// MQTT 5 Topic Alias Maximum. Only `0` (the default: no aliases) is accepted; a
    /// larger value lets the broker send aliased topics, which the consumer does not
    /// resolve, so `build()` rejects it.
    #[must_use]
    pub fn topic_alias_max(mut self, max: u16) -> Self {
        self.properties.topic_alias_max = Some(max);
        self
    }

    /// Broker TCP port. Default 1883. With a failover list ([`hosts`](Self::hosts)),
    /// the port of the first endpoint.
    #[must_use]
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Client identifier. Each connection appends `_N`, its index.
    ///
    /// Required with `clean_start(false)` (the default): a generated id could never
    /// resume its session, so messages left unacknowledged would be stranded.
    #[must_use]
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    /// User name sent in CONNECT.
    #[must_use]
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// Password sent in CONNECT. Requires [`username`](Self::username). Never printed.
    #[must_use]
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(Secret(password.into()));
        self
    }

    /// Whether the broker should discard the session on connect. Default `false`, so a
    /// restarted consumer resumes its session and the broker redelivers what was left
    /// unacknowledged.
    #[must_use]
    pub fn clean_start(mut self, clean_start: bool) -> Self {
        self.clean_start = clean_start;
        self
    }

    /// MQTT protocol version. Default [`ProtoVer::V4`] (MQTT 3.1.1).
    #[must_use]
    pub fn proto_ver(mut self, proto_ver: ProtoVer) -> Self {
        self.proto_ver = proto_ver;
        self
    }

    /// Keepalive interval, in whole seconds (0 disables keepalive). Default 30 s.
    ///
    /// A PINGREQ goes out every interval; a broker that does not answer within half an
    /// interval more is treated as gone, so a dead broker is noticed within 1.5× keepalive.
    #[must_use]
    pub fn keepalive(mut self, keepalive: Duration) -> Self {
        self.keepalive = keepalive;
        self
    }

    /// MQTT 5 Session Expiry Interval sent with `clean_start(false)`. Default 24 hours.
    ///
    /// MQTT 5 ends a session when the connection closes unless this is non-zero, so
    /// `clean_start(false)` alone would keep nothing. Ignored by MQTT 3.1.1, whose
    /// persistent sessions last until the broker expires them.
    #[must_use]
    pub fn session_expiry(mut self, session_expiry: Duration) -> Self {
        self.session_expiry = session_expiry;
        self
    }

    /// How long to wait for the TCP connection and the CONNACK. Default 60 s.
    #[must_use]
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
    #[must_use]
    pub fn max_packet_size(mut self, bytes: usize) -> Self {
        self.max_packet_size = bytes;
        self
    }
}

/// Reading the settings back, e.g. to reuse the broker address for a publisher or
/// to log where the consumer connects.
///
/// A setter and a getter cannot share a name, so the getter of an option set with
/// `option(..)` is `get_option()` (as in clap's builders); options with no setter of
/// that name read as `host()`, `is_tls()`, `tls_options()` and `websocket_path()`.
/// The password has no getter.
///
/// ```
/// use std::time::Duration;
/// use tower_mqtt::{Config, ProtoVer};
///
/// let config = Config::from_url("mqtts://ingest@broker.example.com")?.proto_ver(ProtoVer::V5);
/// assert_eq!(config.host(), "broker.example.com");
/// assert_eq!(config.get_port(), 8883);
/// assert_eq!(config.get_username(), Some("ingest"));
/// assert_eq!(config.get_proto_ver(), ProtoVer::V5);
/// assert_eq!(config.get_keepalive(), Duration::from_secs(30));
/// assert!(config.is_tls() && config.websocket_path().is_none());
/// # Ok::<(), tower_mqtt::ConfigError>(())
/// ```
impl Config {
    /// Broker host name or IP address, as given to [`new`](Self::new) (an IPv6 address
    /// from a URL without its brackets); with a failover list, the first endpoint's
    /// (all of them: [`endpoints`](Self::endpoints)).
    #[must_use]
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Broker port (set with [`port`](Self::port); 1883 unless set, or the URL
    /// scheme's default).
    #[must_use]
    pub fn get_port(&self) -> u16 {
        self.port
    }

    /// Client identifier as set with [`client_id`](Self::client_id), without the
    /// `_N` each connection appends. `None` if not set.
    #[must_use]
    pub fn get_client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }

    /// User name set with [`username`](Self::username). There is no getter for the
    /// password.
    #[must_use]
    pub fn get_username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// MQTT protocol version (set with [`proto_ver`](Self::proto_ver)).
    #[must_use]
    pub fn get_proto_ver(&self) -> ProtoVer {
        self.proto_ver
    }

    /// Whether the broker discards the session on connect (set with
    /// [`clean_start`](Self::clean_start)).
    #[must_use]
    pub fn get_clean_start(&self) -> bool {
        self.clean_start
    }

    /// Keepalive interval (set with [`keepalive`](Self::keepalive)).
    #[must_use]
    pub fn get_keepalive(&self) -> Duration {
        self.keepalive
    }

    /// MQTT 5 Session Expiry Interval (set with [`session_expiry`](Self::session_expiry)).
    #[must_use]
    pub fn get_session_expiry(&self) -> Duration {
        self.session_expiry
    }

    /// Limit for connecting and the CONNACK (set with
    /// [`connect_timeout`](Self::connect_timeout)).
    #[must_use]
    pub fn get_connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Largest incoming packet accepted, in bytes (set with
    /// [`max_packet_size`](Self::max_packet_size)).
    #[must_use]
    pub fn get_max_packet_size(&self) -> usize {
        self.max_packet_size
    }

    /// Whether the connection uses TLS (set with [`tls`](Self::tls), or an `mqtts://`
    /// or `wss://` URL).
    #[must_use]
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The TLS settings, if TLS is on.
    #[must_use]
    pub fn tls_options(&self) -> Option<&TlsOptions> {
        self.tls.as_ref()
    }

    /// The websocket path if MQTT goes over a websocket (set with
    /// [`websocket`](Self::websocket), or a `ws://` or `wss://` URL); `None` for plain
    /// TCP or TLS.
    #[must_use]
    pub fn websocket_path(&self) -> Option<&str> {
        self.websocket_path.as_deref()
    }
}

/// A last-will message; see [`Config::will`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Will {
    pub(crate) topic: String,
    pub(crate) payload: bytes::Bytes,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
}

impl Will {
    /// A will published to `topic` with `payload`, QoS 0, not retained.
    pub fn new(topic: impl Into<String>, payload: impl Into<bytes::Bytes>) -> Self {
        Self {
            topic: topic.into(),
            payload: payload.into(),
            qos: QoS::AtMostOnce,
            retain: false,
        }
    }

    /// QoS of the will message (default 0).
    #[must_use]
    pub fn qos(mut self, qos: QoS) -> Self {
        self.qos = qos;
        self
    }

    /// Whether the broker publishes the will as retained (default `false`).
    #[must_use]
    pub fn retain(mut self, retain: bool) -> Self {
        self.retain = retain;
        self
    }
}
