//! Errors: bad configuration, and why a running consumer stopped.

use std::fmt;

/// Boxed error type used where a layer or the service adds a failure.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A configuration problem found by [`ConsumerBuilder::build`](crate::ConsumerBuilder::build).
///
/// Each variant names the option at fault; its message says how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No `topic(...)` was added.
    #[error("topic: no topic to subscribe to; add at least one with ConsumerBuilder::topic(filter, qos)")]
    NoTopic,
    /// A topic filter is not valid MQTT.
    #[error("topic: invalid topic filter {filter:?}: {reason}")]
    InvalidTopic {
        /// The filter as given.
        filter: String,
        /// What is wrong with it and how to fix it.
        reason: &'static str,
    },
    /// The same topic filter was added twice.
    #[error("topic: filter {0:?} was added twice; add each filter once")]
    DuplicateTopic(String),
    /// `concurrency(0)`.
    #[error("concurrency: must be at least 1 (the number of broker connections)")]
    ZeroConcurrency,
    /// `concurrency(n)` with `n > 1` but no shared group.
    #[error("concurrency: {0} connections would each receive every message; set shared_group(name) so the broker splits messages between them, or use concurrency(1)")]
    ConcurrencyWithoutGroup(usize),
    /// `max_inflight` outside `1..=65535`.
    #[error(
        "max_inflight: {0} is out of range; use 1..=65535 (MQTT Receive Maximum is a 16-bit value)"
    )]
    InvalidMaxInflight(usize),
    /// The shared group name is empty or contains `/`, `+` or `#`.
    #[error(
        "shared_group: invalid group name {0:?}; use a non-empty name without '/', '+' or '#'"
    )]
    InvalidSharedGroup(String),
    /// `clean_start(false)` without a client id.
    #[error("client_id: clean_start(false) keeps a session on the broker, which only the same client id can resume; set Config::client_id(...) or use clean_start(true)")]
    MissingClientId,
    /// The client id is empty, too long or contains NUL.
    #[error("client_id: invalid client id {id:?}: {reason}")]
    InvalidClientId {
        /// The client id as given.
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// MQTT 3.1 was requested.
    #[error("proto_ver: MQTT 3.1 (ProtoVer::V3) is not supported; use ProtoVer::V4 (MQTT 3.1.1) or ProtoVer::V5")]
    UnsupportedProtocol,
    /// The host is empty.
    #[error("host: empty host name; pass the broker's host name or IP address to Config::new")]
    EmptyHost,
    /// An endpoint of a failover list ([`Config::hosts`](crate::Config::hosts), or a
    /// comma list in a URL) is unusable, or the list is empty.
    #[error("hosts: endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as `host:port` (empty for an empty list).
        endpoint: String,
        /// What is wrong with it and how to fix it.
        reason: &'static str,
    },
    /// The port is 0.
    #[error("port: 0 is not a valid broker port; the MQTT default is 1883")]
    InvalidPort,
    /// A password without a user name.
    #[error("password: MQTT sends a password only together with a user name; set Config::username(...) as well")]
    PasswordWithoutUsername,
    /// Keepalive not expressible in MQTT.
    #[error(
        "keepalive: {0:?} is out of range; use 0 (disabled) or whole seconds from 1 s to 65535 s"
    )]
    InvalidKeepalive(std::time::Duration),
    /// MQTT 5 session that would expire at once, or an expiry over the 32-bit limit.
    #[error("session_expiry: {0}")]
    InvalidSessionExpiry(&'static str),
    /// `max_packet_size` out of range.
    #[error("max_packet_size: {0} bytes is out of range; use 1 KiB (1024) to 256 MiB (268435455)")]
    InvalidMaxPacketSize(usize),
    /// Redelivery needs a session that survives reconnecting.
    #[error("on_failure: OnFailure::Redeliver brings failures back by resuming the session, which clean_start(true) discards; use clean_start(false), or OnFailure::Noop / OnFailure::Ack")]
    RedeliverNeedsSession,
    /// A duration option that must be non-zero is zero.
    #[error("{0}: must be greater than zero")]
    ZeroDuration(&'static str),
    /// The reconnect backoff bounds are inverted.
    #[error(
        "reconnect_backoff: the minimum delay ({min:?}) is greater than the maximum ({max:?})"
    )]
    InvalidBackoff {
        /// Minimum delay as given.
        min: std::time::Duration,
        /// Maximum delay as given.
        max: std::time::Duration,
    },
    /// [`Config::from_url`](crate::Config::from_url) could not parse the URL.
    #[error("url: cannot use {url:?}: {reason}")]
    InvalidUrl {
        /// The URL, with any password replaced by `***`.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An option of off_broadway_emqtt (or a CONNECT property) whose behaviour this
    /// crate does not have. Nothing is accepted and silently ignored.
    #[error("{option}: not supported: {why}; instead use {instead}")]
    Unsupported {
        /// The option's name, as given.
        option: String,
        /// Why it is not supported.
        why: &'static str,
        /// What to use instead.
        instead: &'static str,
    },
    /// [`Config::emqtt_option`](crate::Config::emqtt_option) or
    /// [`Config::connect_property`](crate::Config::connect_property) got a name it does
    /// not know.
    #[error("{0}: unknown option name; see the option table in the tower_mqtt::config docs")]
    UnknownOption(String),
    /// An option got a value of the wrong type or out of range (the value is not shown:
    /// it may be a secret).
    #[error("{option}: invalid value; expected {expected}")]
    InvalidOptionValue {
        /// The option's name.
        option: String,
        /// What it accepts.
        expected: &'static str,
    },
    /// [`Config::from_env`](crate::Config::from_env) found no broker URL variable.
    #[error("{var}: not set; set it to the broker URL, e.g. mqtt://user@broker:1883?client_id=ingest (the format of Config::from_url)")]
    MissingEnvVar {
        /// The variable's name (with its prefix, e.g. `INGEST_MQTT_URL`).
        var: String,
    },
    /// Two options set the same thing to different values.
    #[error("{option}: conflicts with {other}; {resolution}")]
    ConflictingOption {
        /// The option given explicitly.
        option: String,
        /// The option it conflicts with.
        other: &'static str,
        /// How to resolve it.
        resolution: &'static str,
    },
    /// A TLS setting cannot be used (unreadable file, no certificate in the CA file, a
    /// key that does not parse, a bad server name).
    #[error("tls: {option}: {reason}")]
    InvalidTls {
        /// Which TLS setting.
        option: &'static str,
        /// What is wrong (never contains key material).
        reason: String,
    },
    /// The last will is unusable.
    #[error("will: {0}")]
    InvalidWill(&'static str),
    /// The websocket path is unusable.
    #[error("websocket: invalid path {0:?}; it must start with '/' and contain no spaces")]
    InvalidWebsocketPath(String),
    /// Something that starts a background task was called outside a tokio runtime.
    #[error("{0}: no tokio runtime is running here; call it from async code running on tokio (e.g. inside #[tokio::main])")]
    NoRuntime(&'static str),
    /// An MQTT 5 option was set while using MQTT 3.1.1.
    #[error("{0}: an MQTT 5 CONNECT property; MQTT 3.1.1 has none. Use ProtoVer::V5 or remove it")]
    RequiresMqtt5(&'static str),
}

/// The service panicked while handling one message (in `call` or in its future).
///
/// The consumer catches the panic, so the connection carries on: the message fails
/// with this error, and the consumer's failure rule decides what happens to it (by
/// default it is redelivered). The panic hook still runs (by default it prints the
/// panic). `tower-mqtt-layers`' `catch_panic` layer does the same inside a stack, so
/// that layers above it (retry, dead-letter) see the failure too.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the service panicked: {message}")]
pub struct ServicePanicked {
    /// The panic message (`"<non-string panic payload>"` when it was not a string).
    pub message: String,
}

impl ServicePanicked {
    /// From a payload caught by `catch_unwind`.
    pub(crate) fn from_payload(payload: &(dyn std::any::Any + Send)) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "<non-string panic payload>".to_owned());
        Self { message }
    }
}

/// Why [`Consumer::run`](crate::Consumer::run) returned an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The broker could not be reached within the configured number of attempts.
    #[error("connection {producer_index}: gave up after {attempts} failed connection attempts; last reason: {last}")]
    ReconnectLimit {
        /// Which connection gave up.
        producer_index: usize,
        /// How many attempts failed in a row.
        attempts: u32,
        /// Why the last one failed.
        last: DownReason,
    },
    /// The service reported an error from `poll_ready`; tower treats that as fatal.
    #[error("connection {producer_index}: the service failed in poll_ready: {source}")]
    ServiceNotReady {
        /// Which connection's service failed.
        producer_index: usize,
        /// The service's error.
        source: BoxError,
    },
    /// A connection task panicked (a panic in the service's `call` or future is caught
    /// and fails that message instead, see [`ServicePanicked`]; this is any other).
    #[error("connection task panicked: {0}")]
    Panicked(String),
}

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
    /// Not a fault: the connection was closed on purpose to resume the session, so the
    /// broker redelivers this many withheld failures ([`OnFailure::Redeliver`](crate::OnFailure::Redeliver)).
    Redelivery {
        /// Failures waiting for redelivery.
        failures: usize,
    },
    /// TLS: the broker's certificate is not signed by a trusted CA (check
    /// [`TlsOptions::ca_file`](crate::config::TlsOptions::ca_file)).
    TlsUnknownCa,
    /// TLS: the broker's certificate has expired or is not valid yet.
    TlsCertificateExpired,
    /// TLS: the broker's certificate was rejected for another reason, e.g. it is not
    /// issued for the host name (see
    /// [`TlsOptions::server_name`](crate::config::TlsOptions::server_name)).
    TlsBadCertificate(String),
    /// TLS: the broker requires a client certificate and none was sent (see
    /// [`TlsOptions::client_cert_files`](crate::config::TlsOptions::client_cert_files)).
    TlsClientCertRequired,
    /// TLS: the broker rejected the client certificate (the alert it sent).
    TlsClientCertRejected(String),
    /// TLS: the handshake failed for another reason.
    TlsHandshake(String),
    /// The websocket upgrade failed (wrong path, no `mqtt` subprotocol, not a
    /// websocket listener), or the websocket broke.
    WebSocket(String),
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
            Self::BadCredentials => f.write_str("bad user name or password"),
            Self::NotAuthorized => f.write_str("not authorized"),
            Self::ServerUnavailable => f.write_str("server unavailable"),
            Self::ServerBusy => f.write_str("server busy"),
            Self::QuotaExceeded => f.write_str("quota exceeded"),
            Self::Refused { code, name } => {
                write!(f, "connection refused by broker: {name} (code {code})")
            }
            Self::Dns(e) => write!(f, "DNS lookup failed: {e}"),
            Self::ConnectionRefused => f.write_str("TCP connection refused"),
            Self::Timeout => f.write_str("timed out connecting"),
            Self::KeepaliveTimeout => f.write_str("broker did not answer PINGREQ"),
            Self::Closed => f.write_str("connection closed by broker"),
            Self::ServerDisconnect { code } => {
                write!(f, "broker sent DISCONNECT (reason 0x{code:02x})")
            }
            Self::PacketTooLarge { size, limit } => write!(
                f,
                "incoming packet of {size} bytes exceeds max_packet_size ({limit}); raise Config::max_packet_size"
            ),
            Self::Protocol(e) => write!(f, "protocol error: {e}"),
            Self::Redelivery { failures } => {
                write!(f, "reconnecting to have {failures} failed message(s) redelivered")
            }
            Self::TlsUnknownCa => f.write_str(
                "TLS: the broker's certificate is not signed by a trusted CA (set TlsOptions::ca_file)",
            ),
            Self::TlsCertificateExpired => {
                f.write_str("TLS: the broker's certificate has expired or is not valid yet")
            }
            Self::TlsBadCertificate(e) => {
                write!(f, "TLS: the broker's certificate was rejected: {e}")
            }
            Self::TlsClientCertRequired => f.write_str(
                "TLS: the broker requires a client certificate (set TlsOptions::client_cert_files)",
            ),
            Self::TlsClientCertRejected(alert) => {
                write!(f, "TLS: the broker rejected the client certificate ({alert})")
            }
            Self::TlsHandshake(e) => write!(f, "TLS handshake failed: {e}"),
            Self::WebSocket(e) => write!(f, "websocket: {e}"),
            Self::Io { kind, message } => write!(f, "I/O error ({kind:?}): {message}"),
        }
    }
}

impl std::error::Error for DownReason {}
