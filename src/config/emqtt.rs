//! The off_broadway_emqtt bridge: [`Config::emqtt_option`] and
//! [`Config::connect_property`] take options by their Elixir names and map them onto the
//! typed settings, or record a typed error for `build()` to return.

use std::fmt;
use std::time::Duration;

use super::tls::{Pem, SecretPem, TlsOptions};
use super::{Config, ProtoVer, QoS, Secret, Will};
use crate::error::ConfigError;

/// What [`Config::emqtt_option`] recorded for `build()` to apply or reject.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Migrated {
    /// `reconnect`: `Some(None)` is `infinity` (the builder's `max_reconnect_attempts`
    /// value, given or not).
    #[allow(clippy::option_option)]
    // not given / forever / a limit: the builder's own type, wrapped
    pub(crate) reconnect: Option<Option<u32>>,
    /// `reconnect_timeout`.
    pub(crate) reconnect_timeout: Option<Duration>,
    /// Problems found while recording; `build()` returns the first.
    pub(crate) errors: Vec<ConfigError>,
}

impl Config {
    /// Set an MQTT 5 CONNECT property by its specification name, as in
    /// off_broadway_emqtt's `properties` map (`"Receive-Maximum"`, …). See the
    /// [option table](crate::config#options-of-off_broadway_emqtt) for which names are
    /// passed through and which `build()` rejects.
    #[must_use]
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
    #[must_use]
    pub fn emqtt_option(self, name: &str, value: impl Into<OptionValue>) -> Self {
        self.apply_emqtt(name, value.into())
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
            Self::Bool(b) => write!(f, "Bool({b})"),
            Self::Int(n) => write!(f, "Int({n})"),
            Self::Str(_) => f.write_str("Str(<redacted>)"),
            Self::Infinity => f.write_str("Infinity"),
            Self::Pair(..) => f.write_str("Pair(<redacted>)"),
        }
    }
}

impl From<bool> for OptionValue {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}
impl From<&str> for OptionValue {
    fn from(v: &str) -> Self {
        Self::Str(v.to_owned())
    }
}
impl From<String> for OptionValue {
    fn from(v: String) -> Self {
        Self::Str(v)
    }
}
impl From<(&str, &str)> for OptionValue {
    fn from((k, v): (&str, &str)) -> Self {
        Self::Pair(k.to_owned(), v.to_owned())
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

fn record_error(config: &mut Config, error: ConfigError) {
    config.migrated.errors.push(error);
}

fn expect_bool(config: &mut Config, name: &str, value: &OptionValue) -> Option<bool> {
    if let OptionValue::Bool(b) = value {
        Some(*b)
    } else {
        record_error(config, invalid_value(name, "a boolean"));
        None
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
    if let OptionValue::Str(s) = value {
        Some(s)
    } else {
        record_error(config, invalid_value(name, "a string"));
        None
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
