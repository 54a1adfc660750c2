//! Secrets (passwords, private keys) never show up in `Debug` output, error messages or
//! logs.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::consumer::*;
use support::*;
use tower::service_fn;
use tower_mqtt::config::{OptionValue, TlsOptions};
use tower_mqtt::{BoxError, Config, Consumer, Message, ProtoVer, QoS as Q};

const PASSWORD: &str = "hunter2-very-secret";
const KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7-not-a-real-key\n-----END PRIVATE KEY-----\n";

fn assert_clean(what: &str, text: &str) {
    for secret in [
        PASSWORD,
        "hunter2",
        "MIIEvQ",
        "not-a-real-key",
        "PRIVATE KEY",
    ] {
        assert!(
            !text.contains(secret),
            "{what} shows a secret ({secret:?}):\n{text}"
        );
    }
}

fn secret_config() -> Config {
    Config::new("127.0.0.1")
        .client_id("id")
        .username("alice")
        .password(PASSWORD)
        .tls(
            TlsOptions::new()
                .ca_pem("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
                .client_cert_pem("-----BEGIN CERTIFICATE-----\n", KEY_PEM),
        )
}

#[test]
fn debug_of_config_tls_options_builder_and_consumer_hides_secrets() {
    let config = secret_config();
    assert_clean("Config", &format!("{config:?}"));
    assert_clean("Config (pretty)", &format!("{config:#?}"));
    let tls = TlsOptions::new().client_cert_pem("cert", KEY_PEM);
    assert_clean("TlsOptions", &format!("{tls:?}"));

    let from_url = Config::from_url(&format!("mqtts://alice:{PASSWORD}@host")).unwrap();
    assert_clean("Config::from_url", &format!("{from_url:?}"));
    let from_emqtt = Config::new("h")
        .emqtt_option("username", "alice")
        .emqtt_option("password", PASSWORD);
    assert_clean("Config::emqtt_option", &format!("{from_emqtt:?}"));
    assert_clean("OptionValue", &format!("{:?}", OptionValue::from(PASSWORD)));

    let builder = Consumer::builder(
        Config::new("h")
            .client_id("id")
            .username("u")
            .password(PASSWORD),
    )
    .topic("a", Q::AtLeastOnce);
    assert_clean("ConsumerBuilder", &format!("{builder:?}"));
    let consumer = builder.build().unwrap();
    let with_tls = Consumer::builder(secret_config()).topic("a", Q::AtLeastOnce);
    assert_clean("ConsumerBuilder with TLS", &format!("{with_tls:?}"));
    assert_clean("Consumer", &format!("{consumer:?}"));
}

#[test]
fn errors_never_echo_secrets() {
    // A URL that fails to parse, with a password in it.
    let e = Config::from_url(&format!("mqtt://alice:{PASSWORD}@host:notaport")).unwrap_err();
    assert_clean("InvalidUrl", &format!("{e} {e:?}"));
    // A password of the wrong type through emqtt_option.
    let e = Consumer::builder(
        Config::new("h")
            .client_id("id")
            .emqtt_option("password", ("x", PASSWORD)),
    )
    .topic("a", Q::AtLeastOnce)
    .build()
    .unwrap_err();
    assert_clean("InvalidOptionValue", &format!("{e} {e:?}"));
    // A client key that does not parse.
    let e = Consumer::builder(
        Config::new("h").client_id("id").tls(
            TlsOptions::new()
                .danger_accept_invalid_certs()
                .client_cert_pem(
                    "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                    KEY_PEM,
                ),
        ),
    )
    .topic("a", Q::AtLeastOnce)
    .build()
    .unwrap_err();
    assert_clean("InvalidTls", &format!("{e} {e:?}"));
}

/// Everything the consumer logs, at every level.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(feature = "tls")]
#[tokio::test]
async fn logs_of_failing_and_succeeding_authenticated_connections_hide_secrets() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    with_timeout(Duration::from_secs(60), async {
        let broker = Broker::start(BrokerOptions {
            users: vec![("alice".into(), PASSWORD.into())],
            mtls: true,
            ..BrokerOptions::default()
        });
        // Wrong password (the secret itself is a prefix of the right one's neighbour).
        for proto in [ProtoVer::V4, ProtoVer::V5] {
            let running = spawn(
                builder(
                    config(&broker, &unique("badauth"))
                        .proto_ver(proto)
                        .username("alice")
                        .password(format!("{PASSWORD}-wrong")),
                    &unique("t"),
                    Q::AtLeastOnce,
                ),
                service_fn(|_m: Message| async { Ok::<_, BoxError>(()) }),
            );
            running
                .events
                .wait_count(2, Duration::from_secs(20), |e| matches!(e, Ev::Down(..)))
                .await;
            running.stop().await.unwrap();
        }
        // A good login over mutual TLS with the key held in memory.
        let pki = broker.pki().clone();
        let key = std::fs::read(&pki.client_key).unwrap();
        let cert = std::fs::read(&pki.client_cert).unwrap();
        let key_body = String::from_utf8(key.clone()).unwrap();
        let running = spawn(
            builder(
                Config::new("127.0.0.1")
                    .port(broker.mtls_port())
                    .client_id(unique("goodauth"))
                    .username("alice")
                    .password(PASSWORD)
                    .tls(
                        TlsOptions::new()
                            .ca_file(&pki.ca)
                            .server_name(Pki::SERVER_NAME)
                            .client_cert_pem(cert, key),
                    ),
                &unique("t"),
                Q::AtLeastOnce,
            ),
            service_fn(|_m: Message| async { Ok::<_, BoxError>(()) }),
        );
        running.events.wait_subscribed(1, 1).await;
        running.stop().await.unwrap();

        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(log.contains("connection.down"), "{log}");
        assert!(log.contains("connection.up"), "{log}");
        assert_clean("the tracing log", &log);
        let key_line = key_body.lines().nth(1).unwrap();
        assert!(!log.contains(key_line), "the log shows the client key");
    })
    .await;
}
