//! `serde::Deserialize` for [`Config`] and its parts (feature `serde`), so the
//! connection can come from a config file in any serde format.
//!
//! Deserializing only calls the setters; every range and combination is checked by
//! [`ConsumerBuilder::build`](crate::ConsumerBuilder::build) exactly as for a `Config`
//! built in code. What can only be told while reading (an unknown field, a wrong type,
//! a duration without a unit, a URL that does not parse, two settings for one thing) is
//! a deserialization error whose message names the field.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::tls::TlsOptions;
use super::url::parse_proto;
use super::{Config, ProtoVer, QoS, Will};
use crate::error::ConfigError;

/// What a duration field accepts, for error messages.
const DURATION_FORMAT: &str =
    "a duration with a unit, e.g. \"250ms\", \"5s\", \"1m30s\" (units: ms, s, m, h, d)";

/// Parse a duration such as `"250ms"`, `"30s"` or `"1h30m"`: one or more whole
/// numbers, each followed by a unit (`ms`, `s`, `m`, `h`, `d`), optionally separated
/// by spaces. A bare number is rejected, so `"30"` cannot be read as the wrong unit.
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let millis_per_unit: u64 = match &rest[..unit] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return None,
        };
        total = total.checked_add(Duration::from_millis(number.checked_mul(millis_per_unit)?))?;
        rest = rest[unit..].trim_start();
    }
    Some(total)
}

/// `deserialize_with` for a duration field written as [`parse_duration`] reads it.
pub(crate) fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_duration(&text)
        .ok_or_else(|| de::Error::invalid_value(de::Unexpected::Str(&text), &DURATION_FORMAT))
}

/// [`duration`] for an optional field (use with `#[serde(default)]`).
pub(crate) fn optional_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    duration(deserializer).map(Some)
}

/// `0`, `1` or `2`.
impl<'de> Deserialize<'de> for QoS {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct QosVisitor;
        impl Visitor<'_> for QosVisitor {
            type Value = QoS;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a QoS of 0, 1 or 2")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<QoS, E> {
                match v {
                    0 => Ok(QoS::AtMostOnce),
                    1 => Ok(QoS::AtLeastOnce),
                    2 => Ok(QoS::ExactlyOnce),
                    _ => Err(E::invalid_value(de::Unexpected::Unsigned(v), &self)),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<QoS, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
                }
            }
        }
        deserializer.deserialize_u8(QosVisitor)
    }
}

/// `"v4"` (or `"3.1.1"`, `4`) and `"v5"` (or `"5"`, `5`), as in a URL's `proto=`.
impl<'de> Deserialize<'de> for ProtoVer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ProtoVisitor;
        impl Visitor<'_> for ProtoVisitor {
            type Value = ProtoVer;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"v4\" (or \"3.1.1\") for MQTT 3.1.1, \"v5\" (or \"5\") for MQTT 5")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ProtoVer, E> {
                parse_proto(v).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ProtoVer, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ProtoVer, E> {
                self.visit_str(&v.to_string())
            }
        }
        deserializer.deserialize_any(ProtoVisitor)
    }
}

/// Either a URL string (read by [`Config::from_url`]) or a table of the builder's
/// option names; see the "From a config file" section of the [`config`](crate::config)
/// docs.
impl<'de> Deserialize<'de> for Config {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ConfigVisitor;
        impl<'de> Visitor<'de> for ConfigVisitor {
            type Value = Config;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a broker URL such as \"mqtt://127.0.0.1:1883?client_id=ingest\", or a table with at least `host`")
            }
            fn visit_str<E: de::Error>(self, url: &str) -> Result<Config, E> {
                // The error names the option and never shows a password.
                Config::from_url(url).map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Config, A::Error> {
                let table = ConfigTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(table.into_config())
            }
        }
        deserializer.deserialize_any(ConfigVisitor)
    }
}

/// The table form of [`Config`]: one field per setter, named as the setter.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigTable {
    host: String,
    port: Option<u16>,
    client_id: Option<String>,
    username: Option<String>,
    password: Option<String>,
    clean_start: Option<bool>,
    proto_ver: Option<ProtoVer>,
    #[serde(default, deserialize_with = "optional_duration")]
    keepalive: Option<Duration>,
    #[serde(default, deserialize_with = "optional_duration")]
    session_expiry: Option<Duration>,
    #[serde(default, deserialize_with = "optional_duration")]
    connect_timeout: Option<Duration>,
    max_packet_size: Option<usize>,
    tls: Option<TlsOptions>,
    websocket: Option<String>,
    will: Option<Will>,
    bridge_mode: Option<bool>,
    /// `[[key, value], ...]`, sent in this order (one `user_property` call each).
    #[serde(default)]
    user_properties: Vec<(String, String)>,
    request_problem_info: Option<bool>,
    request_response_info: Option<bool>,
    topic_alias_max: Option<u16>,
}

/// `builder` with `setter(value)` applied when `value` is set: how a loaded option
/// that was left out keeps the builder's value.
pub(crate) fn set<B, T>(builder: B, value: Option<T>, setter: impl FnOnce(B, T) -> B) -> B {
    match value {
        Some(value) => setter(builder, value),
        None => builder,
    }
}

impl ConfigTable {
    fn into_config(self) -> Config {
        let mut c = Config::new(self.host);
        c = set(c, self.port, Config::port);
        c = set(c, self.client_id, |c, v| c.client_id(v));
        c = set(c, self.username, |c, v| c.username(v));
        c = set(c, self.password, |c, v| c.password(v));
        c = set(c, self.clean_start, Config::clean_start);
        c = set(c, self.proto_ver, Config::proto_ver);
        c = set(c, self.keepalive, Config::keepalive);
        c = set(c, self.session_expiry, Config::session_expiry);
        c = set(c, self.connect_timeout, Config::connect_timeout);
        c = set(c, self.max_packet_size, Config::max_packet_size);
        c = set(c, self.tls, Config::tls);
        c = set(c, self.websocket, |c, v| c.websocket(v));
        c = set(c, self.will, Config::will);
        c = set(c, self.bridge_mode, Config::bridge_mode);
        for (key, value) in self.user_properties {
            c = c.user_property(key, value);
        }
        c = set(c, self.request_problem_info, Config::request_problem_info);
        c = set(c, self.request_response_info, Config::request_response_info);
        set(c, self.topic_alias_max, Config::topic_alias_max)
    }
}

/// A table: `ca_file` or `ca_pem`, `server_name`, `client_cert_file` with
/// `client_key_file` or `client_cert_pem` with `client_key_pem`,
/// `danger_accept_invalid_certs`. An empty table verifies against the system roots.
impl<'de> Deserialize<'de> for TlsOptions {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        TlsTable::deserialize(deserializer)?
            .into_options()
            .map_err(de::Error::custom)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsTable {
    ca_file: Option<PathBuf>,
    ca_pem: Option<String>,
    server_name: Option<String>,
    client_cert_file: Option<PathBuf>,
    client_key_file: Option<PathBuf>,
    client_cert_pem: Option<String>,
    client_key_pem: Option<String>,
    #[serde(default)]
    danger_accept_invalid_certs: bool,
}

impl TlsTable {
    fn into_options(self) -> Result<TlsOptions, ConfigError> {
        let mut tls = TlsOptions::new();
        tls = match (self.ca_file, self.ca_pem) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::ConflictingOption {
                    option: "tls.ca_pem".into(),
                    other: "tls.ca_file",
                    resolution:
                        "give the CA certificates once: a file (ca_file) or PEM text (ca_pem)",
                })
            }
            (Some(file), None) => tls.ca_file(file),
            (None, Some(pem)) => tls.ca_pem(pem),
            (None, None) => tls,
        };
        if let Some(name) = self.server_name {
            tls = tls.server_name(name);
        }
        tls = match (
            self.client_cert_file,
            self.client_key_file,
            self.client_cert_pem,
            self.client_key_pem,
        ) {
            (None, None, None, None) => tls,
            (Some(cert), Some(key), None, None) => tls.client_cert_files(cert, key),
            (None, None, Some(cert), Some(key)) => tls.client_cert_pem(cert, key),
            _ => {
                return Err(ConfigError::InvalidTls {
                    option: "client_cert",
                    reason: "give client_cert_file together with client_key_file, or client_cert_pem together with client_key_pem".into(),
                })
            }
        };
        if self.danger_accept_invalid_certs {
            tls = tls.danger_accept_invalid_certs();
        }
        Ok(tls)
    }
}

/// A table: `topic`, `payload` (text), `qos` (default 0), `retain` (default `false`).
impl<'de> Deserialize<'de> for Will {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct WillTable {
            topic: String,
            payload: String,
            qos: Option<QoS>,
            retain: Option<bool>,
        }
        let t = WillTable::deserialize(deserializer)?;
        let will = set(Self::new(t.topic, t.payload), t.qos, Self::qos);
        Ok(set(will, t.retain, Self::retain))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit_and_add_up() {
        let ms = Duration::from_millis;
        for (text, expected) in [
            ("250ms", ms(250)),
            ("5s", ms(5_000)),
            ("1m30s", ms(90_000)),
            ("1h 30m", ms(5_400_000)),
            ("2d", ms(172_800_000)),
            ("0s", Duration::ZERO),
        ] {
            assert_eq!(parse_duration(text), Some(expected), "{text}");
        }
        for bad in [
            "",
            "30",
            "5 s",
            "5sec",
            "-1s",
            "1.5s",
            "s",
            "99999999999999999999d",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
