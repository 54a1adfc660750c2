//! `build()` rejects bad configuration with a typed error naming the option — no
//! broker needed.

use std::time::Duration;

use tower_mqtt::{Config, ConfigError, Consumer, ConsumerBuilder, OnFailure, ProtoVer, QoS};

fn base() -> ConsumerBuilder {
    Consumer::builder(Config::new("localhost").client_id("id")).topic("a/b", QoS::AtLeastOnce)
}

fn err(builder: ConsumerBuilder) -> ConfigError {
    builder.build().expect_err("configuration must be rejected")
}

#[test]
fn a_valid_configuration_builds() {
    let consumer = base()
        .topic("sensors/+/temp", QoS::ExactlyOnce)
        .shared_group("g")
        .concurrency(3)
        .build()
        .unwrap();
    assert_eq!(consumer.client_id(2), "id_2");
}

#[test]
fn no_topic_is_rejected() {
    let e = err(Consumer::builder(Config::new("h").client_id("id")));
    assert_eq!(e, ConfigError::NoTopic);
    assert!(e.to_string().starts_with("topic:"));
}

#[test]
fn invalid_topic_filters_are_rejected_with_the_reason() {
    for filter in ["", "a/#/b", "a#", "a/b+", "+a", "$share/g/a", "a\0b"] {
        match err(base().topic(filter, QoS::AtLeastOnce)) {
            ConfigError::InvalidTopic { filter: f, reason } => {
                assert_eq!(f, filter);
                assert!(!reason.is_empty());
            }
            other => panic!("{filter:?}: {other:?}"),
        }
    }
}

#[test]
fn a_duplicate_topic_is_rejected() {
    assert_eq!(
        err(base().topic("a/b", QoS::AtMostOnce)),
        ConfigError::DuplicateTopic("a/b".into())
    );
}

#[test]
fn concurrency_zero_or_without_group_is_rejected() {
    assert_eq!(err(base().concurrency(0)), ConfigError::ZeroConcurrency);
    let e = err(base().concurrency(2));
    assert_eq!(e, ConfigError::ConcurrencyWithoutGroup(2));
    assert!(e.to_string().contains("shared_group"), "{e}");
}

#[test]
fn max_inflight_out_of_range_is_rejected() {
    assert_eq!(
        err(base().max_inflight(0)),
        ConfigError::InvalidMaxInflight(0)
    );
    assert_eq!(
        err(base().max_inflight(70_000)),
        ConfigError::InvalidMaxInflight(70_000)
    );
}

#[test]
fn invalid_shared_group_names_are_rejected() {
    for group in ["", "a/b", "a+", "#"] {
        assert_eq!(
            err(base().shared_group(group)),
            ConfigError::InvalidSharedGroup(group.into())
        );
    }
}

#[test]
fn a_persistent_session_without_client_id_is_rejected() {
    let e = err(Consumer::builder(Config::new("h")).topic("a", QoS::AtLeastOnce));
    assert_eq!(e, ConfigError::MissingClientId);
    assert!(e.to_string().starts_with("client_id:"));
    // With clean_start(true) an id is generated (and Redeliver is not allowed).
    Consumer::builder(Config::new("h").clean_start(true))
        .topic("a", QoS::AtLeastOnce)
        .on_failure(OnFailure::Noop)
        .build()
        .unwrap();
}

#[test]
fn redeliver_without_a_session_is_rejected() {
    let e = err(
        Consumer::builder(Config::new("h").client_id("id").clean_start(true))
            .topic("a", QoS::AtLeastOnce),
    );
    assert_eq!(e, ConfigError::RedeliverNeedsSession);
}

#[test]
fn bad_client_ids_are_rejected() {
    for id in ["", "a\0b"] {
        assert!(matches!(
            err(Consumer::builder(Config::new("h").client_id(id)).topic("a", QoS::AtLeastOnce)),
            ConfigError::InvalidClientId { .. }
        ));
    }
}

#[test]
fn mqtt31_is_rejected() {
    let e = err(
        Consumer::builder(Config::new("h").client_id("id").proto_ver(ProtoVer::V3))
            .topic("a", QoS::AtLeastOnce),
    );
    assert_eq!(e, ConfigError::UnsupportedProtocol);
    assert!(e.to_string().contains("V4"), "{e}");
}

#[test]
fn connection_options_are_checked() {
    let with = |c: Config| err(Consumer::builder(c).topic("a", QoS::AtLeastOnce));
    assert_eq!(
        with(Config::new(" ").client_id("i")),
        ConfigError::EmptyHost
    );
    assert_eq!(
        with(Config::new("h").client_id("i").port(0)),
        ConfigError::InvalidPort
    );
    assert_eq!(
        with(Config::new("h").client_id("i").password("p")),
        ConfigError::PasswordWithoutUsername
    );
    assert_eq!(
        with(
            Config::new("h")
                .client_id("i")
                .keepalive(Duration::from_millis(500))
        ),
        ConfigError::InvalidKeepalive(Duration::from_millis(500))
    );
    assert!(matches!(
        with(
            Config::new("h")
                .client_id("i")
                .proto_ver(ProtoVer::V5)
                .session_expiry(Duration::ZERO)
        ),
        ConfigError::InvalidSessionExpiry(_)
    ));
    assert_eq!(
        with(Config::new("h").client_id("i").max_packet_size(100)),
        ConfigError::InvalidMaxPacketSize(100)
    );
    assert_eq!(
        with(Config::new("h").client_id("i").max_packet_size(300 << 20)),
        ConfigError::InvalidMaxPacketSize(300 << 20)
    );
}

#[test]
fn durations_and_backoff_are_checked() {
    assert_eq!(
        err(base().drain_timeout(Duration::ZERO)),
        ConfigError::ZeroDuration("drain_timeout")
    );
    assert_eq!(
        err(base().redeliver_after(Duration::ZERO)),
        ConfigError::ZeroDuration("redeliver_after")
    );
    assert!(matches!(
        err(base().reconnect_backoff(Duration::from_secs(5), Duration::from_secs(1))),
        ConfigError::InvalidBackoff { .. }
    ));
}

#[test]
fn the_password_never_appears_in_debug_output() {
    let config = Config::new("h")
        .client_id("id")
        .username("user")
        .password("hunter2-secret");
    let builder = Consumer::builder(config.clone()).topic("a", QoS::AtLeastOnce);
    for text in [
        format!("{config:?}"),
        format!("{builder:?}"),
        format!("{:?}", builder.build().unwrap()),
    ] {
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("redacted"), "{text}");
    }
}

#[test]
fn getters_read_back_what_the_setters_set() {
    let c = Config::new("broker.local");
    assert_eq!(c.host(), "broker.local");
    assert_eq!(c.get_port(), 1883);
    assert_eq!(c.get_client_id(), None);
    assert_eq!(c.get_username(), None);
    assert_eq!(c.get_proto_ver(), ProtoVer::V4);
    assert!(!c.get_clean_start());
    assert_eq!(c.get_keepalive(), Duration::from_secs(30));
    assert_eq!(c.get_session_expiry(), Duration::from_secs(24 * 60 * 60));
    assert_eq!(c.get_connect_timeout(), Duration::from_secs(60));
    assert!(!c.is_tls() && c.tls_options().is_none());
    assert_eq!(c.websocket_path(), None);

    let c = c
        .port(1999)
        .client_id("ingest")
        .username("alice")
        .password("hunter2")
        .proto_ver(ProtoVer::V5)
        .clean_start(true)
        .keepalive(Duration::from_secs(10))
        .session_expiry(Duration::from_secs(3600))
        .connect_timeout(Duration::from_secs(5))
        .max_packet_size(4096)
        .tls(tower_mqtt::TlsOptions::new())
        .websocket("/mqtt");
    assert_eq!(c.get_port(), 1999);
    assert_eq!(c.get_client_id(), Some("ingest"));
    assert_eq!(c.get_username(), Some("alice"));
    assert_eq!(c.get_proto_ver(), ProtoVer::V5);
    assert!(c.get_clean_start());
    assert_eq!(c.get_keepalive(), Duration::from_secs(10));
    assert_eq!(c.get_session_expiry(), Duration::from_secs(3600));
    assert_eq!(c.get_connect_timeout(), Duration::from_secs(5));
    assert_eq!(c.get_max_packet_size(), 4096);
    assert!(c.is_tls());
    assert_eq!(c.tls_options(), Some(&tower_mqtt::TlsOptions::new()));
    assert_eq!(c.websocket_path(), Some("/mqtt"));
}

#[test]
fn getters_read_a_url() {
    let c = Config::from_url("wss://bob:pw@[::1]:9443/ws").unwrap();
    assert_eq!((c.host(), c.get_port()), ("::1", 9443));
    assert_eq!(c.get_username(), Some("bob"));
    assert!(c.is_tls());
    assert_eq!(c.websocket_path(), Some("/ws"));
}

#[test]
fn url_query_options_set_the_connection() {
    let c = Config::from_url(
        "mqtt://h:1884?client_id=ingest%2F1&clean_start=false&keepalive=30&proto=v5&session_expiry=3600&connect_timeout=10",
    )
    .unwrap();
    assert_eq!((c.host(), c.get_port()), ("h", 1884));
    assert_eq!(c.get_client_id(), Some("ingest/1"));
    assert!(!c.get_clean_start());
    assert_eq!(c.get_keepalive(), Duration::from_secs(30));
    assert_eq!(c.get_proto_ver(), ProtoVer::V5);
    assert_eq!(c.get_session_expiry(), Duration::from_secs(3600));
    assert_eq!(c.get_connect_timeout(), Duration::from_secs(10));

    for (proto, expected) in [
        ("v4", ProtoVer::V4),
        ("3.1.1", ProtoVer::V4),
        ("V5", ProtoVer::V5),
        ("5", ProtoVer::V5),
    ] {
        let c = Config::from_url(&format!("mqtt://h?proto={proto}")).unwrap();
        assert_eq!(c.get_proto_ver(), expected, "{proto}");
    }
    for (value, expected) in [("true", true), ("1", true), ("false", false), ("0", false)] {
        let c = Config::from_url(&format!("mqtts://h?clean_start={value}")).unwrap();
        assert_eq!(c.get_clean_start(), expected, "{value}");
    }
    // A websocket path and a query; empty pairs are skipped.
    let c = Config::from_url("ws://h/ws?&client_id=a@b&").unwrap();
    assert_eq!(c.websocket_path(), Some("/ws"));
    assert_eq!(c.get_client_id(), Some("a@b"));
    // The URL's options build like the setters'.
    Consumer::builder(Config::from_url("mqtt://h?client_id=ingest&proto=5").unwrap())
        .topic("a", QoS::AtLeastOnce)
        .build()
        .unwrap();
}

#[test]
fn bad_url_query_options_are_typed_errors_naming_the_option() {
    let e = Config::from_url("mqtt://h?client_id=a&keep_alive=30").unwrap_err();
    assert_eq!(e, ConfigError::UnknownOption("keep_alive".into()));
    assert!(e.to_string().starts_with("keep_alive:"), "{e}");

    let e = Config::from_url("mqtt://h?client_id=a&client_id=b").unwrap_err();
    assert!(
        matches!(&e, ConfigError::ConflictingOption { option, .. } if option == "client_id"),
        "{e:?}"
    );
    assert!(e.to_string().contains("give each query option once"), "{e}");

    for (url, option, hint) in [
        ("mqtt://h?keepalive=30s", "keepalive", "keepalive=30"),
        ("mqtt://h?keepalive=-1", "keepalive", "whole seconds"),
        (
            "mqtt://h?session_expiry=",
            "session_expiry",
            "session_expiry=3600",
        ),
        (
            "mqtt://h?connect_timeout=1.5",
            "connect_timeout",
            "whole seconds",
        ),
        (
            "mqtt://h?clean_start=yes",
            "clean_start",
            "true, false, 1 or 0",
        ),
        ("mqtt://h?clean_start", "clean_start", "true, false, 1 or 0"),
        ("mqtt://h?proto=v3", "proto", "proto=v5"),
        ("mqtt://h?client_id=", "client_id", "non-empty"),
    ] {
        match Config::from_url(url) {
            Err(e @ ConfigError::InvalidOptionValue { .. }) => {
                let text = e.to_string();
                assert!(text.starts_with(&format!("{option}:")), "{url}: {text}");
                assert!(text.contains(hint), "{url}: {text}");
            }
            other => panic!("{url}: {other:?}"),
        }
    }

    // Ranges are checked by build(), as for the setters.
    let c = Config::from_url("mqtt://h?client_id=a&keepalive=70000").unwrap();
    assert_eq!(
        err(Consumer::builder(c).topic("a", QoS::AtLeastOnce)),
        ConfigError::InvalidKeepalive(Duration::from_secs(70_000))
    );
}

#[test]
fn url_query_errors_never_show_the_password() {
    for url in [
        "mqtt://u:hunter2@h?bogus=1",
        "mqtt://u:hunter2@h?keepalive=hunter2",
        "mqtt://u:hunter2@h?client_id=a%zz",
        "mqtt://u:hunt?er2@h",
        "mqtt://u:1234?hunter2@h",
        "mqtt://u:hunter2@h?client_id=x@y&keepalive=%",
    ] {
        let e = Config::from_url(url).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{url}: {e}");
        assert!(!e.to_string().contains("hunt"), "{url}: {e}");
        assert!(!format!("{e:?}").contains("hunt"), "{url}: {e:?}");
    }
}
