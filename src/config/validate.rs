//! The checks on a [`Config`] that [`ConsumerBuilder::build`](crate::ConsumerBuilder::build)
//! runs before its own (topics, concurrency, acknowledgement rules, backoff).

use std::time::Duration;

use super::{Config, ProtoVer, Will, MAX_PACKET_SIZE_LIMIT};
use crate::error::ConfigError;

/// A check of the TLS and websocket settings; see [`validate`].
pub(crate) type TransportCheck = fn(&Config) -> Result<(), ConfigError>;

/// Check everything about `config` that can be checked without a broker and return the
/// client id the connections are named after (`<id>_<index>`): the configured one, or
/// a generated one with `clean_start(true)`.
///
/// The checks run in a fixed order and the first problem found is returned, so the
/// same error wins whenever several apply. `max_inflight` is what an explicit
/// Receive-Maximum must equal. `transport` checks the TLS and websocket settings
/// (files, names, paths); it is passed in because the transport sits above `config`.
pub(crate) fn validate(
    config: &Config,
    max_inflight: usize,
    transport: TransportCheck,
) -> Result<String, ConfigError> {
    connection(config)?;
    if let Some(e) = config.migrated.errors.first() {
        return Err(e.clone());
    }
    // Each endpoint's host is its TLS server name and websocket authority.
    for endpoint in &config.endpoints() {
        transport(&config.at(endpoint))?;
    }
    if let Some(will) = &config.will {
        check_will(will)?;
    }
    properties(config, max_inflight)?;
    client_id(config)
}

/// Protocol, address, credentials and the connection's limits and timers.
fn connection(c: &Config) -> Result<(), ConfigError> {
    if c.proto_ver == ProtoVer::V3 {
        return Err(ConfigError::UnsupportedProtocol);
    }
    super::endpoint::check_list(c)?;
    if c.host.trim().is_empty() {
        return Err(ConfigError::EmptyHost);
    }
    if c.port == 0 {
        return Err(ConfigError::InvalidPort);
    }
    if c.password.is_some() && c.username.is_none() {
        return Err(ConfigError::PasswordWithoutUsername);
    }
    let ka = c.keepalive;
    if ka > Duration::from_secs(65_535) || (!ka.is_zero() && ka < Duration::from_secs(1)) {
        return Err(ConfigError::InvalidKeepalive(ka));
    }
    if c.proto_ver == ProtoVer::V5 && !c.clean_start {
        if c.session_expiry.as_secs() == 0 {
            return Err(ConfigError::InvalidSessionExpiry(
                "an MQTT 5 session with expiry 0 ends when the connection closes, so clean_start(false) would keep nothing; use at least 1 s (default 24 h)",
            ));
        }
        if c.session_expiry.as_secs() > u64::from(u32::MAX) {
            return Err(ConfigError::InvalidSessionExpiry(
                "at most 4294967295 s (u32::MAX, which MQTT 5 treats as never expiring)",
            ));
        }
    }
    if c.max_packet_size < 1024 || c.max_packet_size > MAX_PACKET_SIZE_LIMIT {
        return Err(ConfigError::InvalidMaxPacketSize(c.max_packet_size));
    }
    if c.connect_timeout.is_zero() {
        return Err(ConfigError::ZeroDuration("connect_timeout"));
    }
    Ok(())
}

fn check_will(will: &Will) -> Result<(), ConfigError> {
    if will.topic.is_empty() {
        return Err(ConfigError::InvalidWill(
            "empty topic; set the topic the broker should publish the will to",
        ));
    }
    if will.topic.contains(['+', '#', '\0']) {
        return Err(ConfigError::InvalidWill(
            "the topic must not contain '+', '#' or NUL (it is a topic name, not a filter)",
        ));
    }
    if will.topic.len() > 65_535 || will.payload.len() > 65_535 {
        return Err(ConfigError::InvalidWill(
            "topic and payload are limited to 65535 bytes each",
        ));
    }
    Ok(())
}

/// Bridge mode and the MQTT 5 CONNECT properties.
fn properties(c: &Config, max_inflight: usize) -> Result<(), ConfigError> {
    if c.bridge_mode && c.proto_ver == ProtoVer::V5 {
        return Err(ConfigError::Unsupported {
            option: "bridge_mode".into(),
            why: "MQTT 5 has no bridge flag in CONNECT (it is an MQTT 3.1.1 extension, protocol level 0x84)",
            instead: "ProtoVer::V4 with bridge_mode(true), or drop bridge_mode with MQTT 5",
        });
    }
    let p = &c.properties;
    if c.proto_ver != ProtoVer::V5 {
        for (set, name) in [
            (!p.user_properties.is_empty(), "user_property"),
            (p.request_problem_info.is_some(), "request_problem_info"),
            (p.request_response_info.is_some(), "request_response_info"),
            (p.topic_alias_max.is_some(), "topic_alias_max"),
            (p.receive_maximum.is_some(), "properties.Receive-Maximum"),
            (
                p.session_expiry.is_some(),
                "properties.Session-Expiry-Interval",
            ),
        ] {
            if set {
                return Err(ConfigError::RequiresMqtt5(name));
            }
        }
    }
    if p.topic_alias_max.is_some_and(|m| m > 0) {
        return Err(ConfigError::Unsupported {
            option: "topic_alias_max".into(),
            why: "a Topic Alias Maximum above 0 lets the broker replace topics with aliases, which the consumer does not resolve",
            instead: "topic_alias_max(0) or leave it unset",
        });
    }
    if let Some(rm) = p.receive_maximum {
        if usize::from(rm) != max_inflight {
            return Err(ConfigError::ConflictingOption {
                option: "properties.Receive-Maximum".into(),
                other: "max_inflight",
                resolution: "Receive Maximum is always sent as max_inflight (the messages each connection holds); set ConsumerBuilder::max_inflight instead",
            });
        }
    }
    if let Some(se) = p.session_expiry {
        let sent = if c.clean_start {
            0
        } else {
            c.session_expiry.as_secs()
        };
        if u64::from(se) != sent {
            return Err(ConfigError::ConflictingOption {
                option: "properties.Session-Expiry-Interval".into(),
                other: "session_expiry",
                resolution: "Session Expiry Interval is always sent from Config::session_expiry (none with clean_start(true)); set that instead",
            });
        }
    }
    for (key, value) in &p.user_properties {
        if key.len() > 65_535 || value.len() > 65_535 {
            return Err(ConfigError::InvalidOptionValue {
                option: "user_property".into(),
                expected: "key and value of at most 65535 bytes each",
            });
        }
    }
    Ok(())
}

/// The configured client id, checked, or a generated one with `clean_start(true)`.
fn client_id(c: &Config) -> Result<String, ConfigError> {
    match (&c.client_id, c.clean_start) {
        (Some(id), _) => {
            if id.is_empty() {
                return Err(ConfigError::InvalidClientId {
                    id: id.clone(),
                    reason: "empty; leave client_id unset (with clean_start(true)) to generate one",
                });
            }
            if id.contains('\0') {
                return Err(ConfigError::InvalidClientId {
                    id: id.clone(),
                    reason: "must not contain NUL",
                });
            }
            if id.len() > 65_000 {
                return Err(ConfigError::InvalidClientId {
                    id: id.clone(),
                    reason: "longer than MQTT allows (65535 bytes including the _N suffix)",
                });
            }
            Ok(id.clone())
        }
        (None, true) => Ok(format!("tower-mqtt-{:016x}", fastrand::u64(..))),
        (None, false) => Err(ConfigError::MissingClientId),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QoS;

    fn no_transport(_: &Config) -> Result<(), ConfigError> {
        Ok(())
    }

    fn bad_transport(_: &Config) -> Result<(), ConfigError> {
        Err(ConfigError::InvalidWebsocketPath(
            "from the transport".into(),
        ))
    }

    #[test]
    fn returns_the_client_id_or_generates_one_for_a_clean_start() {
        let c = Config::new("h").client_id("ingest");
        assert_eq!(validate(&c, 100, no_transport).unwrap(), "ingest");
        let id = validate(&Config::new("h").clean_start(true), 100, no_transport).unwrap();
        assert!(id.starts_with("tower-mqtt-") && id.len() == 27, "{id}");
        assert_eq!(
            validate(&Config::new("h"), 100, no_transport),
            Err(ConfigError::MissingClientId)
        );
    }

    #[test]
    fn the_first_problem_in_check_order_wins() {
        let first =
            |c: &Config, transport: TransportCheck| validate(c, 100, transport).unwrap_err();
        // Every step fails; removing the problem of one step lets the next one show.
        let mut c = Config::new(" ")
            .proto_ver(ProtoVer::V3)
            .port(0)
            .emqtt_option("low_mem", true)
            .will(Will::new("", "bye"))
            .user_property("k", "v");
        assert_eq!(first(&c, bad_transport), ConfigError::UnsupportedProtocol);
        c = c.proto_ver(ProtoVer::V4);
        assert_eq!(first(&c, bad_transport), ConfigError::EmptyHost);
        c.host = "h".into();
        assert_eq!(first(&c, bad_transport), ConfigError::InvalidPort);
        c = c.port(1883);
        assert!(matches!(
            first(&c, bad_transport),
            ConfigError::Unsupported { option, .. } if option == "low_mem"
        ));
        c.migrated.errors.clear();
        assert_eq!(first(&c, bad_transport), bad_transport(&c).unwrap_err());
        assert!(matches!(
            first(&c, no_transport),
            ConfigError::InvalidWill(_)
        ));
        c = c.will(Will::new("w", "bye").qos(QoS::AtLeastOnce));
        assert_eq!(
            first(&c, no_transport),
            ConfigError::RequiresMqtt5("user_property")
        );
        c = c.proto_ver(ProtoVer::V5);
        assert_eq!(first(&c, no_transport), ConfigError::MissingClientId);
    }

    #[test]
    fn receive_maximum_must_equal_max_inflight() {
        let c = Config::new("h")
            .client_id("i")
            .proto_ver(ProtoVer::V5)
            .connect_property("Receive-Maximum", 10);
        assert!(validate(&c, 10, no_transport).is_ok());
        assert!(matches!(
            validate(&c, 11, no_transport),
            Err(ConfigError::ConflictingOption {
                other: "max_inflight",
                ..
            })
        ));
    }
}
