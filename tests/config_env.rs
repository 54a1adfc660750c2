//! `Config::from_env` and `Config::from_env_prefixed` against the real process
//! environment. Its own test binary with a single test function, so changing the
//! environment races with nothing.

use std::time::Duration;

use tower_mqtt::{Config, ConfigError, Consumer, ProtoVer, QoS};

#[test]
fn config_from_the_process_environment() {
    std::env::set_var(
        "MQTT_URL",
        "mqtt://ingest@127.0.0.1:1999?proto=v5&keepalive=10&clean_start=false",
    );
    std::env::set_var("MQTT_PASSWORD", "hunter2");
    std::env::set_var("MQTT_CLIENT_ID", "ingest-7");
    let config = Config::from_env().unwrap();
    assert_eq!((config.host(), config.get_port()), ("127.0.0.1", 1999));
    assert_eq!(config.get_username(), Some("ingest"));
    assert_eq!(config.get_client_id(), Some("ingest-7"));
    assert_eq!(config.get_proto_ver(), ProtoVer::V5);
    assert_eq!(config.get_keepalive(), Duration::from_secs(10));
    assert!(!config.get_clean_start());
    assert!(!format!("{config:?}").contains("hunter2"));
    // Ready for the builder as is.
    Consumer::builder(config)
        .topic("sensors/#", QoS::AtLeastOnce)
        .build()
        .unwrap();

    // A second broker under a prefix; the unprefixed variables are not consulted.
    std::env::set_var(
        "AUDIT_MQTT_URL",
        "mqtts://audit.example.com?client_id=audit",
    );
    let audit = Config::from_env_prefixed("AUDIT").unwrap();
    assert_eq!(
        (audit.host(), audit.get_port()),
        ("audit.example.com", 8883)
    );
    assert!(audit.is_tls());
    assert_eq!(audit.get_client_id(), Some("audit"));
    assert_eq!(audit.get_username(), None);

    // A password in both places is a conflict, and the error shows neither.
    std::env::set_var("AUDIT_MQTT_URL", "mqtts://a:hunter2@audit.example.com");
    std::env::set_var("AUDIT_MQTT_USERNAME", "a2");
    let e = Config::from_env_prefixed("AUDIT").unwrap_err();
    assert!(
        matches!(&e, ConfigError::ConflictingOption { option, .. } if option == "AUDIT_MQTT_USERNAME"),
        "{e:?}"
    );
    std::env::remove_var("AUDIT_MQTT_USERNAME");
    std::env::set_var("AUDIT_MQTT_PASSWORD", "hunter3");
    let e = Config::from_env_prefixed("AUDIT").unwrap_err();
    assert!(
        matches!(&e, ConfigError::ConflictingOption { option, .. } if option == "AUDIT_MQTT_PASSWORD"),
        "{e:?}"
    );
    assert!(!format!("{e} {e:?}").contains("hunter"), "{e}");

    // Without MQTT_URL: a typed error naming the variable and what to set.
    std::env::remove_var("MQTT_URL");
    let e = Config::from_env().unwrap_err();
    match &e {
        ConfigError::MissingEnvVar { var } => {
            assert_eq!(var, "MQTT_URL");
        }
        other => panic!("{other:?}"),
    }
    let message = e.to_string();
    assert!(message.starts_with("MQTT_URL: "), "{message}");
    assert!(message.contains("mqtt://"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
    let e = Config::from_env_prefixed("INGEST").unwrap_err();
    assert!(
        matches!(&e, ConfigError::MissingEnvVar { var } if var == "INGEST_MQTT_URL"),
        "{e:?}"
    );
}
