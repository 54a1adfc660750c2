//! Connection settings: where the broker is and how to talk to it.
//!
//! [`Config`] describes one MQTT connection. The [`ConsumerBuilder`](crate::ConsumerBuilder)
//! adds what to subscribe to and how to acknowledge, then validates everything at once in
//! [`build`](crate::ConsumerBuilder::build).
//!
//! ## Transports
//!
//! | transport | how | notes |
//! |---|---|---|
//! | TCP | default, or `mqtt://host:port` | |
//! | TLS | [`Config::tls`] with [`TlsOptions`], or `mqtts://` | rustls (TLS 1.2/1.3); verifies the server against [`TlsOptions::ca_file`] or the system roots; [`TlsOptions::server_name`] verifies (and sends as SNI) another name than the host; [`TlsOptions::client_cert_files`] for mutual TLS |
//! | websocket | [`Config::websocket`]`(path)`, or `ws://host:port/path` | `mqtt` subprotocol; over TLS (`wss://`) when [`Config::tls`] is set too |
//!
//! TLS and websocket support are the cargo features `tls` and `websocket`, both on by
//! default; without one, `build()` rejects a configuration that needs it with
//! `ConfigError::Unsupported`.
//!
//! TLS and websocket failures are reported as typed
//! [`DownReason`](crate::DownReason)s: `TlsUnknownCa`, `TlsCertificateExpired`,
//! `TlsBadCertificate`, `TlsClientCertRequired`, `TlsClientCertRejected`,
//! `TlsHandshake`, `WebSocket`.
//!
//! ## Options of off_broadway_emqtt
//!
//! Every option of off_broadway_emqtt's `:config` either works or is rejected by
//! `build()` with a typed [`ConfigError`]; none is accepted and ignored. The "name"
//! column is what [`Config::emqtt_option`] accepts, for carrying a config over as is.
//!
//! | emqtt option (name) | here | notes |
//! |---|---|---|
//! | `host`, `port` | [`Config::new`], [`Config::port`], [`Config::from_url`] | URL schemes `mqtt`, `mqtts`, `ws`, `wss` |
//! | `username`, `password` | [`Config::username`], [`Config::password`] | never printed; a refused login is `DownReason::BadCredentials` or `NotAuthorized` (mosquitto 2.0 answers a wrong password with the latter), retried with backoff |
//! | `ssl` | [`Config::tls`] | `true` enables TLS with default [`TlsOptions`], `false` removes it |
//! | `ssl_opts.cacertfile` | [`TlsOptions::ca_file`] | read and checked by `build()` |
//! | `ssl_opts.verify` | verify is the default; `"verify_none"` = [`TlsOptions::danger_accept_invalid_certs`] | |
//! | `ssl_opts.server_name_indication` | [`TlsOptions::server_name`] | |
//! | `ssl_opts.certfile`, `ssl_opts.keyfile` | [`TlsOptions::client_cert_files`] | |
//! | `ws_path` | [`Config::websocket`] | actually used (the original ignored it) |
//! | `connect_timeout` (s) | [`Config::connect_timeout`] | TCP + TLS + websocket + CONNACK; `DownReason::Timeout` |
//! | `bridge_mode` | [`Config::bridge_mode`] | MQTT 3.1.1 protocol level `0x84`; with MQTT 5: `ConfigError::Unsupported` (no such flag) |
//! | `clientid` | [`Config::client_id`] | `_N` appended per connection |
//! | `clean_start` | [`Config::clean_start`] | MQTT 5 sessions last [`Config::session_expiry`] |
//! | `proto_ver` | [`Config::proto_ver`] | `"v4"`, `"v5"`; `"v3"` is `ConfigError::UnsupportedProtocol` |
//! | `keepalive` (s) | [`Config::keepalive`] | a silent broker is detected within 1.5× keepalive (`DownReason::KeepaliveTimeout`) |
//! | `will_topic`, `will_payload`, `will_retain`, `will_qos` | [`Config::will`] with [`Will`] | published by the broker when the connection ends without DISCONNECT |
//! | `reconnect` (count / `OptionValue::Infinity`) | [`ConsumerBuilder::max_reconnect_attempts`](crate::ConsumerBuilder::max_reconnect_attempts) | a count ends `run` with `RunError::ReconnectLimit` carrying the last reason; infinity retries forever with backoff. The consumer always reconnects and re-subscribes; `0` ends `run` at the first failure |
//! | `reconnect_timeout` (s) | [`ConsumerBuilder::reconnect_backoff`](crate::ConsumerBuilder::reconnect_backoff)`(t, t)` | waits are drawn from `t/2..=t` (jitter); replaces the builder's backoff |
//! | `force_ping` | `true`: what the consumer always does | a PINGREQ goes out every keepalive interval whatever else is sent; `false` is `ConfigError::Unsupported` |
//! | `retry_interval` | `ConfigError::Unsupported` | nothing to resend: a consumer publishes nothing, and MQTT 5 forbids resending except on reconnect; redelivery of failures is [`OnFailure::Redeliver`](crate::OnFailure::Redeliver) |
//! | `ack_timeout` | `ConfigError::Unsupported` | CONNACK is bounded by `connect_timeout`, SUBACK and PINGRESP by keepalive |
//! | `low_mem` | `ConfigError::Unsupported` | memory is bounded by `max_inflight` and `max_packet_size` |
//! | `custom_auth_callbacks` | `ConfigError::Unsupported` | MQTT 5 enhanced authentication needs an AUTH exchange that rumqttc's client does not have and this consumer does not implement |
//! | `properties` (a map) | one [`Config::connect_property`] per property (or `emqtt_option("properties.<Name>", v)`) | see below |
//!
//! MQTT 5 CONNECT properties ([`Config::connect_property`] names; `build()` rejects
//! every one of them with MQTT 3.1.1, as `ConfigError::RequiresMqtt5`):
//!
//! | property | here |
//! |---|---|
//! | `User-Property` | [`Config::user_property`], sent in order |
//! | `Request-Problem-Information` | [`Config::request_problem_info`] |
//! | `Request-Response-Information` | [`Config::request_response_info`] |
//! | `Receive-Maximum` | always sent as [`ConsumerBuilder::max_inflight`](crate::ConsumerBuilder::max_inflight); a different explicit value is `ConfigError::ConflictingOption` |
//! | `Session-Expiry-Interval` | always sent from [`Config::session_expiry`] (not at all with `clean_start(true)`); a different explicit value is `ConfigError::ConflictingOption` |
//! | `Topic-Alias-Maximum` | [`Config::topic_alias_max`]: `0` only; above 0 is `ConfigError::Unsupported` (aliased topics are not resolved) |
//! | `Maximum-Packet-Size` | `ConfigError::Unsupported`: brokers silently drop larger messages; [`Config::max_packet_size`] fails loudly instead |
//! | `Authentication-Method`, `Authentication-Data` | `ConfigError::Unsupported` (no AUTH exchange, as `custom_auth_callbacks`) |
//!
//! An unknown name is `ConfigError::UnknownOption`; a value of the wrong type is
//! `ConfigError::InvalidOptionValue` (which never shows the value).

use std::fmt;

use crate::error::ConfigError;
use std::time::Duration;

/// MQTT protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ProtoVer {
    /// MQTT 3.1. Not supported: `build()` rejects it with
    /// [`ConfigError::UnsupportedProtocol`].
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
/// which reports every problem as a [`ConfigError`] naming the option.
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

/// What [`Config::emqtt_option`] recorded for `build()` to apply or reject.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Migrated {
    /// `reconnect`: `Some(None)` is `infinity`.
    pub(crate) reconnect: Option<Option<u32>>,
    /// `reconnect_timeout`.
    pub(crate) reconnect_timeout: Option<Duration>,
    /// Problems found while recording; `build()` returns the first.
    pub(crate) errors: Vec<ConfigError>,
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
            tls: None,
            websocket_path: None,
            will: None,
            bridge_mode: false,
            properties: ConnectProperties::default(),
            migrated: Migrated::default(),
        }
    }

    /// Connection settings from a URL:
    ///
    /// | scheme | transport | default port |
    /// |---|---|---|
    /// | `mqtt://`, `tcp://` | TCP | 1883 |
    /// | `mqtts://`, `ssl://`, `tls://` | TLS, verifying the server against the system roots | 8883 |
    /// | `ws://` | websocket | 80 |
    /// | `wss://` | websocket over TLS | 443 |
    ///
    /// `user:password@` sets the credentials (percent-decoded, so `p%40ss` is `p@ss`).
    /// A websocket URL's path is the websocket path (`/mqtt` when the URL has none);
    /// an `mqtt(s)` URL must not have a path. Queries and fragments are rejected.
    /// Everything else keeps its default and can be changed with the other setters,
    /// e.g. `.tls(TlsOptions::new().ca_file(...))` to replace the system roots.
    ///
    /// ```
    /// use tower_mqtt::Config;
    /// let config = Config::from_url("mqtts://ingest:s3cr%40t@broker.example.com")?;
    /// let ws = Config::from_url("ws://127.0.0.1:9001/mqtt")?;
    /// # Ok::<(), tower_mqtt::ConfigError>(())
    /// ```
    pub fn from_url(url: &str) -> Result<Config, ConfigError> {
        parse_url(url)
    }

    /// Connect over TLS (`ssl` + `ssl_opts` in off_broadway_emqtt). The server's
    /// certificate is verified by default; see [`TlsOptions`].
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Speak MQTT over a websocket at `path` (e.g. `"/mqtt"`): `ws://host:port/path`,
    /// or `wss://` when [`tls`](Self::tls) is set too. The upgrade request asks for the
    /// `mqtt` subprotocol. (`ws_path` in off_broadway_emqtt, which accepted and ignored it.)
    pub fn websocket(mut self, path: impl Into<String>) -> Self {
        self.websocket_path = Some(path.into());
        self
    }

    /// Last will: the broker publishes it when this connection ends without a
    /// DISCONNECT (a crash, a cut network, a keepalive timeout), never after a clean
    /// shutdown.
    pub fn will(mut self, will: Will) -> Self {
        self.will = Some(will);
        self
    }

    /// MQTT 3.1.1 bridge mode: CONNECT carries protocol level `0x84`, which tells
    /// brokers that know it (mosquitto) that the client is a bridge. MQTT 5 has no such
    /// flag, so `build()` rejects it with [`ProtoVer::V5`]. Default `false`.
    pub fn bridge_mode(mut self, bridge: bool) -> Self {
        self.bridge_mode = bridge;
        self
    }

    /// MQTT 5: add a User Property to CONNECT (repeatable; order is kept). `build()`
    /// rejects it with MQTT 3.1.1, which has no properties.
    pub fn user_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties
            .user_properties
            .push((key.into(), value.into()));
        self
    }

    /// MQTT 5 Request Problem Information (broker default: `true`).
    pub fn request_problem_info(mut self, request: bool) -> Self {
        self.properties.request_problem_info = Some(request);
        self
    }

    /// MQTT 5 Request Response Information (broker default: `false`).
    pub fn request_response_info(mut self, request: bool) -> Self {
        self.properties.request_response_info = Some(request);
        self
    }

    /// MQTT 5 Topic Alias Maximum. Only `0` (the default: no aliases) is accepted; a
    /// larger value lets the broker send aliased topics, which the consumer does not
    /// resolve, so `build()` rejects it.
    pub fn topic_alias_max(mut self, max: u16) -> Self {
        self.properties.topic_alias_max = Some(max);
        self
    }

    /// Set an MQTT 5 CONNECT property by its specification name, as in
    /// off_broadway_emqtt's `properties` map (`"Receive-Maximum"`, …). See the
    /// [option table](crate::config#options-of-off_broadway_emqtt) for which names are
    /// passed through and which `build()` rejects.
    pub fn connect_property(mut self, name: &str, value: impl Into<OptionValue>) -> Self {
        self.set_property(name, value.into());
        self
    }

    /// Set an option by its off_broadway_emqtt name, to carry an existing `:config`
    /// over unchanged. Supported names map onto the typed setters; names of
    /// behaviour this crate does not have are recorded so that `build()` returns
    /// [`ConfigError::Unsupported`] with the reason and what to use instead. See the
    /// [option table](crate::config#options-of-off_broadway_emqtt).
    ///
    /// ```
    /// use tower_mqtt::{config::OptionValue, Config, Consumer, ConfigError, QoS};
    /// let config = Config::new("127.0.0.1")
    ///     .emqtt_option("clientid", "ingest")
    ///     .emqtt_option("keepalive", 30)
    ///     .emqtt_option("reconnect", OptionValue::Infinity);
    /// assert!(Consumer::builder(config.clone()).topic("a", QoS::AtLeastOnce).build().is_ok());
    ///
    /// let err = Consumer::builder(config.emqtt_option("low_mem", true))
    ///     .topic("a", QoS::AtLeastOnce)
    ///     .build()
    ///     .unwrap_err();
    /// assert!(matches!(err, ConfigError::Unsupported { .. }));
    /// ```
    pub fn emqtt_option(self, name: &str, value: impl Into<OptionValue>) -> Self {
        self.apply_emqtt(name, value.into())
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

/// A value for [`Config::emqtt_option`] and [`Config::connect_property`], shaped like
/// the Elixir terms off_broadway_emqtt takes.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OptionValue {
    /// `true` / `false`.
    Bool(bool),
    /// A non-negative integer (seconds for durations, as in off_broadway_emqtt).
    Int(u64),
    /// A string, or an atom such as `"v5"` or `"verify_none"`.
    Str(String),
    /// `:infinity`.
    Infinity,
    /// A key/value pair (MQTT 5 `User-Property`).
    Pair(String, String),
}

impl fmt::Debug for OptionValue {
    // Values may be passwords: only their shape is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionValue::Bool(b) => write!(f, "Bool({b})"),
            OptionValue::Int(n) => write!(f, "Int({n})"),
            OptionValue::Str(_) => f.write_str("Str(<redacted>)"),
            OptionValue::Infinity => f.write_str("Infinity"),
            OptionValue::Pair(..) => f.write_str("Pair(<redacted>)"),
        }
    }
}

impl From<bool> for OptionValue {
    fn from(v: bool) -> Self {
        OptionValue::Bool(v)
    }
}
impl From<&str> for OptionValue {
    fn from(v: &str) -> Self {
        OptionValue::Str(v.to_owned())
    }
}
impl From<String> for OptionValue {
    fn from(v: String) -> Self {
        OptionValue::Str(v)
    }
}
impl From<(&str, &str)> for OptionValue {
    fn from((k, v): (&str, &str)) -> Self {
        OptionValue::Pair(k.to_owned(), v.to_owned())
    }
}
macro_rules! int_value {
    ($($t:ty),*) => {$(
        impl From<$t> for OptionValue {
            fn from(v: $t) -> Self {
                // A negative number is never valid here; u64::MAX fails every range check.
                OptionValue::Int(u64::try_from(v).unwrap_or(u64::MAX))
            }
        }
    )*};
}
int_value!(u8, u16, u32, u64, usize, i32, i64);

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
        Will {
            topic: topic.into(),
            payload: payload.into(),
            qos: QoS::AtMostOnce,
            retain: false,
        }
    }

    /// QoS of the will message (default 0).
    pub fn qos(mut self, qos: QoS) -> Self {
        self.qos = qos;
        self
    }

    /// Whether the broker publishes the will as retained (default `false`).
    pub fn retain(mut self, retain: bool) -> Self {
        self.retain = retain;
        self
    }
}

/// PEM data, from a file (read at each connection attempt) or in memory.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Pem {
    File(std::path::PathBuf),
    Bytes(Vec<u8>),
}

impl Pem {
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn read(&self) -> std::io::Result<Vec<u8>> {
        match self {
            Pem::File(path) => std::fs::read(path),
            Pem::Bytes(bytes) => Ok(bytes.clone()),
        }
    }
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pem::File(path) => write!(f, "File({path:?})"),
            Pem::Bytes(bytes) => write!(f, "Bytes({} bytes)", bytes.len()),
        }
    }
}

/// PEM holding a private key: never shown, not even its length.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SecretPem(pub(crate) Pem);

impl fmt::Debug for SecretPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            // A path is not key material.
            Pem::File(path) => write!(f, "File({path:?})"),
            Pem::Bytes(_) => f.write_str("\"<redacted>\""),
        }
    }
}

/// TLS settings for [`Config::tls`] (rustls; TLS 1.2 and 1.3).
///
/// By default the server certificate is verified against the operating system's
/// trusted roots and the host name given to [`Config::new`].
///
/// ```
/// use tower_mqtt::{config::TlsOptions, Config};
/// let config = Config::new("10.0.0.7")
///     .port(8883)
///     .tls(TlsOptions::new()
///         .ca_file("/etc/mqtt/ca.pem")
///         .server_name("broker.internal")
///         .client_cert_files("/etc/mqtt/client.pem", "/etc/mqtt/client.key"));
/// ```
#[derive(Clone, PartialEq, Eq, Default)]
pub struct TlsOptions {
    pub(crate) ca: Option<Pem>,
    pub(crate) accept_invalid_certs: bool,
    pub(crate) server_name: Option<String>,
    pub(crate) client_auth: Option<(Pem, SecretPem)>,
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsOptions")
            .field("ca", &self.ca)
            .field("danger_accept_invalid_certs", &self.accept_invalid_certs)
            .field("server_name", &self.server_name)
            .field(
                "client_cert",
                &self.client_auth.as_ref().map(|(cert, _)| cert),
            )
            .field("client_key", &self.client_auth.as_ref().map(|(_, key)| key))
            .finish()
    }
}

impl TlsOptions {
    /// Verify the server against the system's trusted roots.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trust only the CA certificates in this PEM file (`ssl_opts.cacertfile`). Read at
    /// `build()` (to check it) and at each connection attempt (so it can be rotated).
    pub fn ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.ca = Some(Pem::File(path.into()));
        self
    }

    /// Trust only the CA certificates in this PEM text.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca = Some(Pem::Bytes(pem.into()));
        self
    }

    /// Verify the server certificate against `name` and send it as SNI, instead of the
    /// host given to [`Config::new`] (`ssl_opts.server_name_indication`). Lets you
    /// connect to an IP address whose certificate names a host.
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Present a client certificate (mutual TLS; `ssl_opts.certfile` / `keyfile`): a PEM
    /// certificate chain and a PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub fn client_cert_files(
        mut self,
        cert: impl Into<std::path::PathBuf>,
        key: impl Into<std::path::PathBuf>,
    ) -> Self {
        self.client_auth = Some((Pem::File(cert.into()), SecretPem(Pem::File(key.into()))));
        self
    }

    /// Like [`client_cert_files`](Self::client_cert_files), from PEM text. The key never
    /// appears in `Debug` output.
    pub fn client_cert_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.client_auth = Some((Pem::Bytes(cert.into()), SecretPem(Pem::Bytes(key.into()))));
        self
    }

    /// **Do not verify the server certificate at all** (`ssl_opts.verify:
    /// :verify_none`). Anyone between you and the broker can read and change the
    /// traffic, credentials included. For tests against self-signed brokers only.
    pub fn danger_accept_invalid_certs(mut self) -> Self {
        self.accept_invalid_certs = true;
        self
    }
}

fn record_error(config: &mut Config, error: ConfigError) {
    config.migrated.errors.push(error);
}

fn expect_bool(config: &mut Config, name: &str, value: &OptionValue) -> Option<bool> {
    match value {
        OptionValue::Bool(b) => Some(*b),
        _ => {
            record_error(config, invalid_value(name, "a boolean"));
            None
        }
    }
}

fn expect_int(config: &mut Config, name: &str, value: &OptionValue, max: u64) -> Option<u64> {
    match value {
        OptionValue::Int(n) if *n <= max => Some(*n),
        _ => {
            record_error(
                config,
                invalid_value(name, "a non-negative integer in range"),
            );
            None
        }
    }
}

fn expect_str(config: &mut Config, name: &str, value: OptionValue) -> Option<String> {
    match value {
        OptionValue::Str(s) => Some(s),
        _ => {
            record_error(config, invalid_value(name, "a string"));
            None
        }
    }
}

fn invalid_value(name: &str, expected: &'static str) -> ConfigError {
    ConfigError::InvalidOptionValue {
        option: name.to_owned(),
        expected,
    }
}

fn unsupported(name: &str, why: &'static str, instead: &'static str) -> ConfigError {
    ConfigError::Unsupported {
        option: name.to_owned(),
        why,
        instead,
    }
}

impl Config {
    fn tls_mut(&mut self) -> &mut TlsOptions {
        self.tls.get_or_insert_with(TlsOptions::new)
    }

    fn apply_emqtt(mut self, name: &str, value: OptionValue) -> Self {
        let c = &mut self;
        match name {
            "host" => {
                if let Some(v) = expect_str(c, name, value) {
                    c.host = v;
                }
            }
            "port" => {
                if let Some(v) = expect_int(c, name, &value, u64::from(u16::MAX)) {
                    c.port = v as u16;
                }
            }
            "username" => {
                if let Some(v) = expect_str(c, name, value) {
                    c.username = Some(v);
                }
            }
            "password" => {
                if let Some(v) = expect_str(c, name, value) {
                    c.password = Some(Secret(v));
                }
            }
            "clientid" => {
                if let Some(v) = expect_str(c, name, value) {
                    c.client_id = Some(v);
                }
            }
            "clean_start" => {
                if let Some(v) = expect_bool(c, name, &value) {
                    c.clean_start = v;
                }
            }
            "proto_ver" => match expect_str(c, name, value).as_deref() {
                Some("v3") => c.proto_ver = ProtoVer::V3,
                Some("v4") => c.proto_ver = ProtoVer::V4,
                Some("v5") => c.proto_ver = ProtoVer::V5,
                Some(_) => record_error(c, invalid_value(name, "\"v3\", \"v4\" or \"v5\"")),
                None => {}
            },
            "keepalive" => {
                if let Some(v) = expect_int(c, name, &value, u64::MAX) {
                    c.keepalive = Duration::from_secs(v);
                }
            }
            "connect_timeout" => {
                if let Some(v) = expect_int(c, name, &value, u64::MAX) {
                    c.connect_timeout = Duration::from_secs(v);
                }
            }
            "bridge_mode" => {
                if let Some(v) = expect_bool(c, name, &value) {
                    c.bridge_mode = v;
                }
            }
            "ssl" => {
                if let Some(v) = expect_bool(c, name, &value) {
                    if v {
                        c.tls_mut();
                    } else {
                        c.tls = None;
                    }
                }
            }
            "ssl_opts.cacertfile" => {
                if let Some(v) = expect_str(c, name, value) {
                    c.tls_mut().ca = Some(Pem::File(v.into()));
                }
            }
            "ssl_opts.server_name_indication" => {
                if let Some(v) = expect_str(c, name, value) {
                    c.tls_mut().server_name = Some(v);
                }
            }
            "ssl_opts.verify" => match expect_str(c, name, value).as_deref() {
                Some("verify_peer") => c.tls_mut().accept_invalid_certs = false,
                Some("verify_none") => c.tls_mut().accept_invalid_certs = true,
                Some(_) => record_error(c, invalid_value(name, "\"verify_peer\" or \"verify_none\"")),
                None => {}
            },
            "ssl_opts.certfile" | "ssl_opts.keyfile" => {
                if let Some(v) = expect_str(c, name, value) {
                    let tls = c.tls_mut();
                    let (mut cert, mut key) = tls
                        .client_auth
                        .take()
                        .unwrap_or((Pem::File("".into()), SecretPem(Pem::File("".into()))));
                    if name == "ssl_opts.certfile" {
                        cert = Pem::File(v.into());
                    } else {
                        key = SecretPem(Pem::File(v.into()));
                    }
                    tls.client_auth = Some((cert, key));
                }
            }
            "ws_path" => {
                if let Some(v) = expect_str(c, name, value) {
                    c.websocket_path = Some(v);
                }
            }
            "will_topic" => {
                if let Some(v) = expect_str(c, name, value) {
                    let will = c.will.get_or_insert_with(|| Will::new("", ""));
                    will.topic = v;
                }
            }
            "will_payload" => {
                if let Some(v) = expect_str(c, name, value) {
                    let will = c.will.get_or_insert_with(|| Will::new("", ""));
                    will.payload = v.into();
                }
            }
            "will_retain" => {
                if let Some(v) = expect_bool(c, name, &value) {
                    c.will.get_or_insert_with(|| Will::new("", "")).retain = v;
                }
            }
            "will_qos" => {
                let qos = match &value {
                    OptionValue::Int(0) => Some(QoS::AtMostOnce),
                    OptionValue::Int(1) => Some(QoS::AtLeastOnce),
                    OptionValue::Int(2) => Some(QoS::ExactlyOnce),
                    _ => None,
                };
                match qos {
                    Some(q) => c.will.get_or_insert_with(|| Will::new("", "")).qos = q,
                    None => record_error(c, invalid_value(name, "0, 1 or 2")),
                }
            }
            "reconnect" => match value {
                OptionValue::Infinity => c.migrated.reconnect = Some(None),
                OptionValue::Int(n) if n <= u64::from(u32::MAX) => {
                    c.migrated.reconnect = Some(Some(n as u32))
                }
                _ => record_error(c, invalid_value(name, "a count or OptionValue::Infinity")),
            },
            "reconnect_timeout" => {
                if let Some(v) = expect_int(c, name, &value, u64::MAX) {
                    c.migrated.reconnect_timeout = Some(Duration::from_secs(v));
                }
            }
            "retry_interval" => record_error(c, unsupported(
                name,
                "it resends unacknowledged packets on the same connection; a consumer sends no PUBLISH of its own, and for incoming messages MQTT 5 forbids resending except after a reconnect (mosquitto stopped doing it in 1.5)",
                "redelivery by resuming the session: OnFailure::Redeliver with ConsumerBuilder::redeliver_after",
            )),
            "ack_timeout" => record_error(c, unsupported(
                name,
                "it times out acknowledgements of packets the client sent; the only ones a consumer waits for are CONNACK, covered by connect_timeout, SUBACK and PINGRESP, covered by keepalive",
                "Config::connect_timeout and Config::keepalive",
            )),
            "force_ping" => match value {
                OptionValue::Bool(true) => {} // what the consumer always does; see the table
                OptionValue::Bool(false) => record_error(c, unsupported(
                    name,
                    "the consumer always sends PINGREQ every keepalive interval, whatever else is sent, because the PINGRESP is how it notices a broker that stopped answering",
                    "remove the option, or set it to true (the actual behaviour)",
                )),
                _ => record_error(c, invalid_value(name, "a boolean")),
            },
            "low_mem" => record_error(c, unsupported(
                name,
                "it is an emqtt-internal memory mode with no counterpart; memory here is bounded by the messages held and the largest packet",
                "ConsumerBuilder::max_inflight and Config::max_packet_size",
            )),
            "custom_auth_callbacks" => record_error(c, unsupported(
                name,
                "MQTT 5 enhanced authentication needs an AUTH exchange during CONNECT, which neither rumqttc's client nor this consumer implements",
                "username/password, or a TLS client certificate (TlsOptions::client_cert_files)",
            )),
            "properties" => record_error(c, unsupported(
                name,
                "a property map cannot be given as one value here",
                "Config::connect_property(name, value) for each property, or the typed setters",
            )),
            other => match other.strip_prefix("properties.") {
                Some(property) => c.set_property(property, value),
                None => record_error(c, ConfigError::UnknownOption(other.to_owned())),
            },
        }
        self
    }

    fn set_property(&mut self, name: &str, value: OptionValue) {
        let option = format!("properties.{name}");
        match name {
            "User-Property" => match value {
                OptionValue::Pair(k, v) => self.properties.user_properties.push((k, v)),
                _ => record_error(self, invalid_value(&option, "a (key, value) pair")),
            },
            "Request-Problem-Information" => {
                if let Some(v) = expect_bool_or_bit(self, &option, &value) {
                    self.properties.request_problem_info = Some(v);
                }
            }
            "Request-Response-Information" => {
                if let Some(v) = expect_bool_or_bit(self, &option, &value) {
                    self.properties.request_response_info = Some(v);
                }
            }
            "Topic-Alias-Maximum" => {
                if let Some(v) = expect_int(self, &option, &value, u64::from(u16::MAX)) {
                    self.properties.topic_alias_max = Some(v as u16);
                }
            }
            "Receive-Maximum" => {
                if let Some(v) = expect_int(self, &option, &value, u64::from(u16::MAX)) {
                    self.properties.receive_maximum = Some(v as u16);
                }
            }
            "Session-Expiry-Interval" => {
                if let Some(v) = expect_int(self, &option, &value, u64::from(u32::MAX)) {
                    self.properties.session_expiry = Some(v as u32);
                }
            }
            "Maximum-Packet-Size" => record_error(self, unsupported(
                &option,
                "a broker silently discards messages larger than the client's Maximum Packet Size, which would lose them without a trace",
                "Config::max_packet_size, which is enforced on receipt and fails loudly (DownReason::PacketTooLarge) while the message stays on the broker",
            )),
            "Authentication-Method" | "Authentication-Data" => record_error(self, unsupported(
                &option,
                "MQTT 5 enhanced authentication needs an AUTH exchange during CONNECT, which neither rumqttc's client nor this consumer implements",
                "username/password, or a TLS client certificate (TlsOptions::client_cert_files)",
            )),
            _ => record_error(self, ConfigError::UnknownOption(option)),
        }
    }
}

fn expect_bool_or_bit(config: &mut Config, name: &str, value: &OptionValue) -> Option<bool> {
    match value {
        OptionValue::Bool(b) => Some(*b),
        OptionValue::Int(0) => Some(false),
        OptionValue::Int(1) => Some(true),
        _ => {
            record_error(config, invalid_value(name, "a boolean, 0 or 1"));
            None
        }
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn parse_url(url: &str) -> Result<Config, ConfigError> {
    let bad = |reason: &'static str| ConfigError::InvalidUrl {
        // Never echo the credentials back.
        url: redact_url(url),
        reason,
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("expected <scheme>://[user[:password]@]host[:port][/path]"))?;
    let (tls, ws, default_port) = match scheme.to_ascii_lowercase().as_str() {
        "mqtt" | "tcp" => (false, false, 1883),
        "mqtts" | "ssl" | "tls" => (true, false, 8883),
        "ws" => (false, true, 80),
        "wss" => (true, true, 443),
        _ => return Err(bad("unknown scheme; use mqtt, mqtts, ws or wss")),
    };
    if rest.contains('?') || rest.contains('#') {
        return Err(bad("query strings and fragments are not supported"));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("unterminated [IPv6] host"))?;
        match after {
            "" => (host, None),
            p => (
                host,
                Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| bad("junk after [IPv6] host"))?,
                ),
            ),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => return Err(bad("the port must be a number from 1 to 65535")),
        },
    };
    let mut config =
        Config::new(percent_decode(host).ok_or_else(|| bad("bad percent-encoding in host"))?)
            .port(port);
    if let Some(userinfo) = userinfo {
        let (user, pass) = match userinfo.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (userinfo, None),
        };
        let user = percent_decode(user).ok_or_else(|| bad("bad percent-encoding in user name"))?;
        config = config.username(user);
        if let Some(pass) = pass {
            let pass =
                percent_decode(pass).ok_or_else(|| bad("bad percent-encoding in password"))?;
            config = config.password(pass);
        }
    }
    if ws {
        config.websocket_path = Some(if path.is_empty() {
            "/mqtt".to_owned()
        } else {
            path.to_owned()
        });
    } else if !path.is_empty() && path != "/" {
        return Err(bad(
            "an mqtt:// or mqtts:// URL has no path; use ws:// or wss:// for a websocket path",
        ));
    }
    if tls {
        config.tls = Some(TlsOptions::new());
    }
    Ok(config)
}

/// `url` with any password replaced by `***`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<not a URL>".to_owned();
    };
    let end = rest.find('/').unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{}", &rest[at + 1..])
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_set_transport_port_and_decoded_credentials() {
        let c = Config::from_url("mqtt://al%69ce:p%40ss:w@127.0.0.1:1999").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("127.0.0.1", 1999));
        assert_eq!(c.username.as_deref(), Some("alice"));
        assert_eq!(c.password, Some(Secret("p@ss:w".into())));
        assert!(c.tls.is_none() && c.websocket_path.is_none());

        let c = Config::from_url("mqtts://h").unwrap();
        assert_eq!(c.port, 8883);
        assert_eq!(c.tls, Some(TlsOptions::new()));

        let c = Config::from_url("ws://h:9001").unwrap();
        assert_eq!((c.port, c.websocket_path.as_deref()), (9001, Some("/mqtt")));
        let c = Config::from_url("wss://[::1]/x/y").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("::1", 443));
        assert_eq!(c.websocket_path.as_deref(), Some("/x/y"));
        assert!(c.tls.is_some());
    }

    #[test]
    fn emqtt_option_names_map_onto_the_typed_settings() {
        let c = Config::new("x")
            .emqtt_option("host", "broker")
            .emqtt_option("port", 1999)
            .emqtt_option("clientid", "id")
            .emqtt_option("username", "u")
            .emqtt_option("password", "p")
            .emqtt_option("clean_start", true)
            .emqtt_option("proto_ver", "v5")
            .emqtt_option("keepalive", 7)
            .emqtt_option("connect_timeout", 3)
            .emqtt_option("bridge_mode", true)
            .emqtt_option("ws_path", "/mqtt")
            .emqtt_option("ssl", true)
            .emqtt_option("ssl_opts.verify", "verify_none")
            .emqtt_option("ssl_opts.server_name_indication", "name")
            .emqtt_option("will_topic", "w")
            .emqtt_option("will_payload", "bye")
            .emqtt_option("will_qos", 2)
            .emqtt_option("will_retain", true)
            .emqtt_option("reconnect", 3)
            .emqtt_option("reconnect_timeout", 2)
            .emqtt_option("force_ping", true)
            .emqtt_option("properties.User-Property", ("k", "v"));
        assert_eq!(c.migrated.errors, vec![]);
        assert_eq!((c.host.as_str(), c.port), ("broker", 1999));
        assert_eq!(c.client_id.as_deref(), Some("id"));
        assert_eq!(c.username.as_deref(), Some("u"));
        assert_eq!(c.password, Some(Secret("p".into())));
        assert!(c.clean_start && c.bridge_mode);
        assert_eq!(c.proto_ver, ProtoVer::V5);
        assert_eq!(c.keepalive, Duration::from_secs(7));
        assert_eq!(c.connect_timeout, Duration::from_secs(3));
        assert_eq!(c.websocket_path.as_deref(), Some("/mqtt"));
        let tls = c.tls.unwrap();
        assert!(tls.accept_invalid_certs);
        assert_eq!(tls.server_name.as_deref(), Some("name"));
        assert_eq!(
            c.will,
            Some(Will::new("w", "bye").qos(QoS::ExactlyOnce).retain(true))
        );
        assert_eq!(c.migrated.reconnect, Some(Some(3)));
        assert_eq!(c.migrated.reconnect_timeout, Some(Duration::from_secs(2)));
        assert_eq!(c.properties.user_properties, vec![("k".into(), "v".into())]);

        let c = Config::new("x")
            .emqtt_option("reconnect", OptionValue::Infinity)
            .emqtt_option("port", "not a number")
            .emqtt_option("will_qos", 3);
        assert_eq!(c.migrated.reconnect, Some(None));
        assert!(matches!(
            &c.migrated.errors[..],
            [
                ConfigError::InvalidOptionValue { option: a, .. },
                ConfigError::InvalidOptionValue { option: b, .. }
            ] if a == "port" && b == "will_qos"
        ));
    }

    #[test]
    fn bad_percent_escapes_name_the_part_they_are_in() {
        for (url, reason) in [
            ("mqtt://h%4", "bad percent-encoding in host"),
            ("mqtt://h%zz:1883", "bad percent-encoding in host"),
            ("mqtt://%zz@h", "bad percent-encoding in user name"),
            ("mqtt://u%ff:pw@h", "bad percent-encoding in user name"),
            ("mqtt://u:p%4@h", "bad percent-encoding in password"),
            ("mqtt://u:p%@h", "bad percent-encoding in password"),
            ("mqtt://u:%c3%28@h", "bad percent-encoding in password"),
        ] {
            match Config::from_url(url) {
                Err(ConfigError::InvalidUrl { reason: r, .. }) => assert_eq!(r, reason, "{url}"),
                other => panic!("{url}: {other:?}"),
            }
        }
        let c = Config::from_url("mqtt://%C3%A9t%c3%a9:%25%20@h").unwrap();
        assert_eq!(c.username.as_deref(), Some("\u{e9}t\u{e9}"));
        assert_eq!(c.password, Some(Secret("% ".into())));
    }

    #[test]
    fn bad_urls_are_rejected_without_echoing_the_password() {
        for url in [
            "http://u:hunter2@h",
            "mqtt://u:hunter2@h:0",
            "mqtt://u:hunter2@h/path",
            "mqtt://u:hunter2@:1883",
            "h:1883",
            "mqtt://h?x=1",
        ] {
            let e = Config::from_url(url).unwrap_err();
            assert!(matches!(e, ConfigError::InvalidUrl { .. }), "{url}: {e:?}");
            assert!(!e.to_string().contains("hunter2"), "{e}");
            assert!(!format!("{e:?}").contains("hunter2"), "{e:?}");
        }
    }
}
