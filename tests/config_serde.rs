//! Feature `serde`: `Config` and `ConsumerOptions` loaded from TOML and JSON files. No
//! broker needed: what a loaded file configures is compared with the same settings
//! made in code.

#![cfg(feature = "serde")]

use std::time::Duration;

use serde::Deserialize;
use tower_mqtt::config::TlsOptions;
use tower_mqtt::{
    BackoffBounds, Config, ConfigError, Consumer, ConsumerOptions, OnFailure, ProtoVer, QoS,
    Subscription, Will,
};

/// What an application would put in its own settings type.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    broker: Config,
    #[serde(default)]
    consumer: ConsumerOptions,
}

fn load(toml_text: &str) -> Result<Settings, toml::de::Error> {
    toml::from_str(toml_text)
}

/// The message of a TOML error without the quoted source line.
fn toml_message(toml_text: &str) -> String {
    load(toml_text)
        .expect_err("the file must be rejected")
        .message()
        .to_owned()
}

const FULL: &str = r#"
[broker]
host = "broker.example.com"
port = 8883
client_id = "ingest"
username = "ingest"
password = "s3cret-pw"
clean_start = false
proto_ver = "v5"
keepalive = "45s"
session_expiry = "2h"
connect_timeout = "10s"
max_packet_size = 2097152
websocket = "/mqtt"
bridge_mode = false
user_properties = [["region", "eu"], ["app", "ingest"]]
request_problem_info = true
request_response_info = false
topic_alias_max = 0
tls = { server_name = "broker.internal", client_cert_pem = "CERT", client_key_pem = "KEY-MATERIAL" }
will = { topic = "status/ingest", payload = "gone", qos = 1, retain = true }

[consumer]
topics = [
    { filter = "sensors/+/temp", qos = 1 },
    { filter = "sensors/+/humidity", qos = 2 },
]
shared_group = "ingest"
concurrency = 3
max_inflight = 50
on_success = "ack"
on_failure = "reject"
drain_timeout = "5s"
redeliver_after = "250ms"
reconnect_backoff = { min = "200ms", max = "1m" }
max_reconnect_attempts = 7
"#;

#[test]
fn a_full_toml_file_configures_what_the_same_builder_calls_configure() {
    let settings = load(FULL).unwrap();

    let in_code = Config::new("broker.example.com")
        .port(8883)
        .client_id("ingest")
        .username("ingest")
        .password("s3cret-pw")
        .clean_start(false)
        .proto_ver(ProtoVer::V5)
        .keepalive(Duration::from_secs(45))
        .session_expiry(Duration::from_secs(7200))
        .connect_timeout(Duration::from_secs(10))
        .max_packet_size(2 << 20)
        .websocket("/mqtt")
        .bridge_mode(false)
        .user_property("region", "eu")
        .user_property("app", "ingest")
        .request_problem_info(true)
        .request_response_info(false)
        .topic_alias_max(0)
        .tls(
            TlsOptions::new()
                .server_name("broker.internal")
                .client_cert_pem("CERT", "KEY-MATERIAL"),
        )
        .will(
            Will::new("status/ingest", "gone")
                .qos(QoS::AtLeastOnce)
                .retain(true),
        );
    assert_eq!(format!("{:?}", settings.broker), format!("{in_code:?}"));
    assert_eq!(settings.broker.tls_options(), in_code.tls_options());

    let mut expected = ConsumerOptions::default();
    expected.topics = vec![
        Subscription::new("sensors/+/temp", QoS::AtLeastOnce),
        Subscription::new("sensors/+/humidity", QoS::ExactlyOnce),
    ];
    expected.shared_group = Some("ingest".into());
    expected.concurrency = Some(3);
    expected.max_inflight = Some(50);
    expected.on_success = Some(tower_mqtt::OnSuccess::Ack);
    expected.on_failure = Some(OnFailure::Reject);
    expected.drain_timeout = Some(Duration::from_secs(5));
    expected.redeliver_after = Some(Duration::from_millis(250));
    expected.reconnect_backoff = Some(BackoffBounds::new(
        Duration::from_millis(200),
        Duration::from_secs(60),
    ));
    expected.max_reconnect_attempts = Some(7);
    assert_eq!(settings.consumer, expected);

    // Applied to a builder, the options make the same consumer as the builder calls
    // (Consumer's Debug shows every setting, durations and backoff included). A plain
    // TCP broker, so that build() has no TLS files or websocket path to check.
    let broker = || Config::new("127.0.0.1").client_id("ingest");
    let from_file = Consumer::builder(broker())
        .options(settings.consumer)
        .build()
        .unwrap();
    let from_code = Consumer::builder(broker())
        .topic("sensors/+/temp", QoS::AtLeastOnce)
        .topic("sensors/+/humidity", QoS::ExactlyOnce)
        .shared_group("ingest")
        .concurrency(3)
        .max_inflight(50)
        .on_success(tower_mqtt::OnSuccess::Ack)
        .on_failure(OnFailure::Reject)
        .drain_timeout(Duration::from_secs(5))
        .redeliver_after(Duration::from_millis(250))
        .reconnect_backoff(Duration::from_millis(200), Duration::from_secs(60))
        .max_reconnect_attempts(Some(7))
        .build()
        .unwrap();
    assert_eq!(format!("{from_file:?}"), format!("{from_code:?}"));
    assert_eq!(from_file.client_id(2), "ingest_2");
}

#[test]
fn unset_options_keep_what_the_builder_had() {
    let settings = load("broker = \"mqtt://127.0.0.1?client_id=ingest\"\n").unwrap();
    assert_eq!(settings.consumer, ConsumerOptions::default());
    let from_file = Consumer::builder(settings.broker.clone())
        .topic("a/b", QoS::AtLeastOnce)
        .max_inflight(7)
        .options(settings.consumer)
        .build()
        .unwrap();
    let from_code = Consumer::builder(settings.broker)
        .topic("a/b", QoS::AtLeastOnce)
        .max_inflight(7)
        .build()
        .unwrap();
    assert_eq!(format!("{from_file:?}"), format!("{from_code:?}"));
}

#[test]
fn a_url_string_is_read_as_config_from_url() {
    let settings = load(
        "broker = \"mqtts://ingest:s3cr%40t@broker.example.com?client_id=ingest&proto=v5&keepalive=10\"\n",
    )
    .unwrap();
    let b = &settings.broker;
    assert_eq!((b.host(), b.get_port()), ("broker.example.com", 8883));
    assert_eq!(b.get_username(), Some("ingest"));
    assert_eq!(b.get_client_id(), Some("ingest"));
    assert_eq!(b.get_proto_ver(), ProtoVer::V5);
    assert_eq!(b.get_keepalive(), Duration::from_secs(10));
    assert!(b.is_tls());
    assert!(!format!("{b:?}").contains("s3cr"), "{b:?}");

    // A URL that from_url rejects gives its error text, without the password.
    let message = toml_message("broker = \"mqtt://ingest:hunter2@broker:0\"\n");
    let expected = Config::from_url("mqtt://ingest:hunter2@broker:0")
        .unwrap_err()
        .to_string();
    assert!(message.contains(&expected), "{message}");
    assert!(message.starts_with("url: "), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
    let message = toml_message("broker = \"mqtt://h?client_idd=x\"\n");
    assert!(
        message.contains("client_idd: unknown option name"),
        "{message}"
    );
}

#[test]
fn json_works_as_well() {
    let settings: Settings = serde_json::from_str(
        r#"{"broker": {"host": "127.0.0.1", "client_id": "ingest", "proto_ver": 5},
            "consumer": {"topics": [{"filter": "a/#", "qos": 1}], "on_failure": "noop"}}"#,
    )
    .unwrap();
    assert_eq!(settings.broker.get_proto_ver(), ProtoVer::V5);
    assert_eq!(settings.consumer.on_failure, Some(OnFailure::Noop));
    assert!(Consumer::builder(settings.broker)
        .options(settings.consumer)
        .build()
        .is_ok());
}

#[test]
fn an_unknown_field_is_an_error_naming_it() {
    for (file, field) in [
        ("[broker]\nhots = \"h\"\n", "hots"),
        ("[broker]\nhost = \"h\"\npasword = \"x\"\n", "pasword"),
        (
            "[broker]\nhost = \"h\"\ntls = { ca_fle = \"/ca.pem\" }\n",
            "ca_fle",
        ),
        (
            "[broker]\nhost = \"h\"\nwill = { topic = \"t\", payload = \"p\", qso = 1 }\n",
            "qso",
        ),
        (
            "broker = \"mqtt://h\"\n[consumer]\nmax_inflights = 5\n",
            "max_inflights",
        ),
        (
            "broker = \"mqtt://h\"\n[consumer]\ntopics = [{ filter = \"a\", qos = 1, retain = true }]\n",
            "retain",
        ),
        (
            "broker = \"mqtt://h\"\n[consumer]\nreconnect_backoff = { min = \"1s\", max = \"2s\", jitter = \"1s\" }\n",
            "jitter",
        ),
    ] {
        let message = toml_message(file);
        assert!(
            message.contains(&format!("unknown field `{field}`")),
            "{field}: {message}"
        );
        // The message also lists the known names, so the typo is easy to fix.
        let (_, known) = message.split_once(", expected ").expect("known names listed");
        assert!(known.starts_with('`') || known.starts_with("one of `"), "{field}: {message}");
    }
}

#[test]
fn a_bad_duration_is_an_error_showing_the_expected_form() {
    for (file, field) in [
        (
            "broker = \"mqtt://h\"\n[consumer]\ndrain_timeout = \"30\"\n",
            "drain_timeout",
        ),
        (
            "[broker]\nhost = \"h\"\nkeepalive = \"30 seconds\"\n",
            "keepalive",
        ),
        (
            "broker = \"mqtt://h\"\n[consumer]\nreconnect_backoff = { min = \"1.5s\", max = \"2s\" }\n",
            "min",
        ),
    ] {
        let e = load(file).unwrap_err();
        assert!(
            e.message()
                .contains("expected a duration with a unit, e.g. \"250ms\", \"5s\""),
            "{field}: {e}"
        );
        // The full TOML error points at the line, which names the field.
        assert!(e.to_string().contains(field), "{field}: {e}");
    }
    let message = toml_message("broker = \"mqtt://h\"\n[consumer]\nredeliver_after = 1\n");
    assert!(message.contains("expected a string"), "{message}");
}

#[test]
fn bad_values_of_plain_types_are_errors_listing_what_is_accepted() {
    let message = toml_message("broker = \"mqtt://h\"\n[consumer]\non_failure = \"retry\"\n");
    assert!(
        message.contains(
            "unknown variant `retry`, expected one of `redeliver`, `noop`, `ack`, `reject`"
        ),
        "{message}"
    );
    let message =
        toml_message("broker = \"mqtt://h\"\n[consumer]\ntopics = [{ filter = \"a\", qos = 3 }]\n");
    assert!(message.contains("expected a QoS of 0, 1 or 2"), "{message}");
    let message = toml_message("[broker]\nhost = \"h\"\nproto_ver = \"v3\"\n");
    assert!(message.contains("\"v4\""), "{message}");
    let message =
        toml_message("[broker]\nhost = \"h\"\ntls = { ca_file = \"/ca.pem\", ca_pem = \"PEM\" }\n");
    assert!(
        message.starts_with("tls.ca_pem: conflicts with tls.ca_file"),
        "{message}"
    );
    let message = toml_message("[broker]\nhost = \"h\"\ntls = { client_cert_file = \"/c.pem\" }\n");
    assert!(message.contains("client_key_file"), "{message}");
}

#[test]
fn values_are_checked_by_build_with_the_builders_errors() {
    let build = |file: &str| {
        let settings = load(file).unwrap();
        Consumer::builder(settings.broker)
            .options(settings.consumer)
            .build()
            .unwrap_err()
    };
    let topic = "topics = [{ filter = \"a\", qos = 1 }]\n";
    let url = "broker = \"mqtt://h?client_id=i\"\n";
    assert_eq!(
        build(&format!("{url}[consumer]\n{topic}max_inflight = 0\n")),
        ConfigError::InvalidMaxInflight(0)
    );
    assert_eq!(
        build(&format!("{url}[consumer]\n{topic}concurrency = 2\n")),
        ConfigError::ConcurrencyWithoutGroup(2)
    );
    assert_eq!(
        build(&format!("{url}[consumer]\n{topic}drain_timeout = \"0s\"\n")),
        ConfigError::ZeroDuration("drain_timeout")
    );
    assert_eq!(
        build(&format!(
            "{url}[consumer]\n{topic}reconnect_backoff = {{ min = \"2s\", max = \"1s\" }}\n"
        )),
        ConfigError::InvalidBackoff {
            min: Duration::from_secs(2),
            max: Duration::from_secs(1)
        }
    );
    assert_eq!(build(&format!("{url}[consumer]\n")), ConfigError::NoTopic);
    assert_eq!(
        build(&format!(
            "[broker]\nhost = \"h\"\nclient_id = \"i\"\nkeepalive = \"1d\"\n[consumer]\n{topic}"
        )),
        ConfigError::InvalidKeepalive(Duration::from_secs(86_400))
    );
    assert_eq!(
        build(&format!(
            "[broker]\nhost = \"h\"\nclient_id = \"i\"\nuser_properties = [[\"k\", \"v\"]]\n[consumer]\n{topic}"
        )),
        ConfigError::RequiresMqtt5("user_property")
    );
    assert_eq!(
        build(&format!(
            "[broker]\nhost = \"h\"\npassword = \"hunter2\"\n[consumer]\n{topic}"
        )),
        ConfigError::PasswordWithoutUsername
    );
}

#[test]
fn secrets_stay_redacted_after_loading() {
    let settings = load(
        r#"
[broker]
host = "h"
username = "u"
password = "hunter2-password"
tls = { client_cert_pem = "CERT", client_key_pem = "hunter2-key-material" }
"#,
    )
    .unwrap();
    for shown in [format!("{settings:?}"), format!("{settings:#?}")] {
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
    let consumer = Consumer::builder(settings.broker.clone())
        .options(settings.consumer)
        .topic("a", QoS::AtLeastOnce);
    assert!(!format!("{consumer:?}").contains("hunter2"));
    // A key file path is not key material and is shown.
    let settings = load("[broker]\nhost = \"h\"\ntls = { client_cert_file = \"/c.pem\", client_key_file = \"/k.pem\" }\n").unwrap();
    assert!(format!("{settings:?}").contains("/k.pem"));
}
