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
