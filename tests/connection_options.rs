#![cfg(all(feature = "tls", feature = "websocket"))]
//! Every connection option of off_broadway_emqtt, one behaviour test per row of the
//! option table (issue 3): it works against a real mosquitto listener, or `build()`
//! rejects it with a typed `ConfigError`.

mod support;

use std::time::{Duration, Instant};

use support::consumer::*;
use support::proxy::{first_connect_v5, Proxy};
use support::*;
use tower::service_fn;
use tower_mqtt::config::{OptionValue, TlsOptions, Will};
use tower_mqtt::{
    BoxError, Config, ConfigError, Consumer, ConsumerBuilder, DownReason, Message, ProtoVer,
    QoS as Q, RunError, Status,
};

const USER: &str = "alice";
/// Needs percent-encoding in a URL.
const PASSWORD: &str = "p@ss:w0rd";

fn auth_broker() -> Broker {
    Broker::start(BrokerOptions {
        users: vec![(USER.into(), PASSWORD.into())],
        ..BrokerOptions::default()
    })
}

fn tls_broker() -> Broker {
    Broker::start(BrokerOptions {
        tls: true,
        ..BrokerOptions::default()
    })
}

/// Config for `port` on 127.0.0.1 with the harness's short timeouts.
fn config_at(port: u16, id: &str) -> Config {
    Config::new("127.0.0.1")
        .port(port)
        .client_id(id)
        .keepalive(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(5))
}

/// TLS verified against the broker's test CA, for the name in its certificate.
fn test_ca(broker: &Broker) -> TlsOptions {
    TlsOptions::new()
        .ca_file(&broker.pki().ca)
        .server_name(Pki::SERVER_NAME)
}

/// Runs a consumer with `config`, proves it receives a message published on the
/// broker's plain listener, and returns it still running.
async fn consumes(broker: &Broker, config: Config) -> Running {
    consumes_with(broker, config, |b| b).await
}

/// [`consumes`] with more builder settings.
async fn consumes_with(
    broker: &Broker,
    config: Config,
    more: impl FnOnce(ConsumerBuilder) -> ConsumerBuilder,
) -> Running {
    let topic = unique("t");
    let processed = Processed::default();
    let running = spawn(
        more(builder(config, &topic, Q::AtLeastOnce)),
        recording_service(&processed),
    );
    running.events.wait_subscribed(1, 1).await;
    publish_many(broker, &topic, QoS::AtLeastOnce, [b"hello".to_vec()]).await;
    running
        .events
        .wait(Duration::from_secs(20), |e| {
            matches!(
                e,
                Ev::Ack {
                    status: Status::Success,
                    ..
                }
            )
        })
        .await;
    assert!(processed.contains(b"hello"));
    running
}

/// Runs a consumer with `config` until its first ConnectionDown and returns the reason.
async fn first_down(config: Config) -> DownReason {
    let running = spawn(
        builder(config, &unique("t"), Q::AtLeastOnce)
            .reconnect_backoff(Duration::from_millis(200), Duration::from_millis(400)),
        service_fn(|_m: Message| async { Ok::<_, BoxError>(()) }),
    );
    running
        .events
        .wait(Duration::from_secs(20), |e| matches!(e, Ev::Down(..)))
        .await;
    let reason = running
        .events
        .all()
        .into_iter()
        .find_map(|e| match e {
            Ev::Down(_, r) => Some(r),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        running.events.count(|e| matches!(e, Ev::Up { .. })),
        0,
        "must never connect"
    );
    running.stop().await.unwrap();
    reason
}

fn build_err(config: Config) -> ConfigError {
    Consumer::builder(config)
        .topic("a/b", Q::AtLeastOnce)
        .build()
        .expect_err("must be rejected")
}

// --- host, port, from_url ---------------------------------------------------------

#[tokio::test]
async fn host_port_from_mqtt_url_with_percent_encoded_credentials() {
    with_timeout(Duration::from_secs(60), async {
        let broker = auth_broker();
        let id = unique("url");
        let url = format!("mqtt://{USER}:p%40ss%3Aw0rd@127.0.0.1:{}", broker.port());
        let config = Config::from_url(&url).unwrap().client_id(&id);
        let running = consumes(&broker, config).await;
        assert!(
            broker
                .log()
                .contains(&format!("as {id}_0 (p2, c0, k30, u'{USER}')")),
            "{}",
            broker.log_tail(10)
        );
        running.stop().await.unwrap();
    })
    .await;
}

// --- username, password -----------------------------------------------------------

#[tokio::test]
async fn username_password_work_against_a_password_file_listener() {
    with_timeout(Duration::from_secs(60), async {
        let broker = auth_broker();
        for proto in [ProtoVer::V4, ProtoVer::V5] {
            let id = unique("auth");
            let config = config(&broker, &id)
                .proto_ver(proto)
                .username(USER)
                .password(PASSWORD);
            consumes(&broker, config).await.stop().await.unwrap();
        }
    })
    .await;
}

async fn wrong_password_is_retried_with_backoff(proto: ProtoVer) {
    let broker = auth_broker();
    let min = Duration::from_millis(200);
    let running = spawn(
        builder(
            config(&broker, &unique("badpw"))
                .proto_ver(proto)
                .username(USER)
                .password("wrong"),
            &unique("t"),
            Q::AtLeastOnce,
        )
        .reconnect_backoff(min, Duration::from_millis(400)),
        service_fn(|_m: Message| async { Ok::<_, BoxError>(()) }),
    );
    running
        .events
        .wait_count(5, Duration::from_secs(20), |e| matches!(e, Ev::Down(..)))
        .await;
    // mosquitto 2.0.11 answers a wrong password with "not authorized" (3.1.1 return
    // code 5, MQTT 5 reason 0x87), not "bad user name or password".
    for e in running.events.all() {
        if let Ev::Down(_, reason) = e {
            assert_eq!(reason, DownReason::NotAuthorized);
        }
    }
    let times = running.events.times(|e| matches!(e, Ev::Down(..)));
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= min / 2, "reconnected after {gap:?}: a hot loop");
    }
    assert_eq!(running.events.count(|e| matches!(e, Ev::Up { .. })), 0);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn username_password_wrong_password_is_bad_credentials_retried_with_backoff_v4() {
    with_timeout(
        Duration::from_secs(60),
        wrong_password_is_retried_with_backoff(ProtoVer::V4),
    )
    .await;
}

#[tokio::test]
async fn username_password_wrong_password_is_bad_credentials_retried_with_backoff_v5() {
    with_timeout(
        Duration::from_secs(60),
        wrong_password_is_retried_with_backoff(ProtoVer::V5),
    )
    .await;
}

// --- ssl, ssl_opts ----------------------------------------------------------------

#[tokio::test]
async fn ssl_cacertfile_works_against_a_tls_listener() {
    with_timeout(Duration::from_secs(60), async {
        let broker = tls_broker();
        let pki = broker.pki().clone();
        // As carried over from an off_broadway_emqtt :config ...
        let id = unique("tls");
        let config = config_at(broker.tls_port(), &id)
            .emqtt_option("ssl", true)
            .emqtt_option("ssl_opts.cacertfile", pki.ca.to_str().unwrap())
            .emqtt_option("ssl_opts.server_name_indication", Pki::SERVER_NAME);
        consumes(&broker, config).await.stop().await.unwrap();
        // ... and from an mqtts:// URL with the typed options.
        let url = format!("mqtts://127.0.0.1:{}", broker.tls_port());
        let config = Config::from_url(&url)
            .unwrap()
            .client_id(unique("tls"))
            .tls(test_ca(&broker));
        consumes(&broker, config).await.stop().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn ssl_verify_peer_is_the_default_and_a_wrong_ca_fails_with_unknown_ca() {
    with_timeout(Duration::from_secs(60), async {
        let broker = tls_broker();
        let other = tempfile::tempdir().unwrap();
        let other_pki = Pki::generate(other.path(), false);
        let config = config_at(broker.tls_port(), &unique("wrongca")).tls(
            TlsOptions::new()
                .ca_file(&other_pki.ca)
                .server_name(Pki::SERVER_NAME),
        );
        assert_eq!(first_down(config).await, DownReason::TlsUnknownCa);
    })
    .await;
}

#[tokio::test]
async fn ssl_verify_none_is_danger_accept_invalid_certs() {
    with_timeout(Duration::from_secs(60), async {
        let broker = tls_broker();
        let other = tempfile::tempdir().unwrap();
        let other_pki = Pki::generate(other.path(), false);
        // Wrong CA and a name the certificate does not have: accepted anyway.
        let config = config_at(broker.tls_port(), &unique("noverify")).tls(
            TlsOptions::new()
                .ca_file(&other_pki.ca)
                .danger_accept_invalid_certs(),
        );
        consumes(&broker, config).await.stop().await.unwrap();
        // The emqtt spelling maps onto the same thing.
        let config = config_at(broker.tls_port(), &unique("noverify"))
            .emqtt_option("ssl", true)
            .emqtt_option("ssl_opts.verify", "verify_none");
        consumes(&broker, config).await.stop().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn ssl_verify_an_expired_server_certificate_fails_with_tls_certificate_expired() {
    with_timeout(Duration::from_secs(60), async {
        let broker = Broker::start(BrokerOptions {
            tls: true,
            expired_server_cert: true,
            ..BrokerOptions::default()
        });
        let config = config_at(broker.tls_port(), &unique("expired")).tls(test_ca(&broker));
        assert_eq!(first_down(config).await, DownReason::TlsCertificateExpired);
    })
    .await;
}

#[tokio::test]
async fn ssl_server_name_indication_verifies_another_name_than_the_host() {
    with_timeout(Duration::from_secs(60), async {
        let broker = tls_broker();
        // The certificate names broker.test, not 127.0.0.1: without the override the
        // name check fails ...
        let config = config_at(broker.tls_port(), &unique("sni"))
            .tls(TlsOptions::new().ca_file(&broker.pki().ca));
        match first_down(config).await {
            DownReason::TlsBadCertificate(e) => {
                assert!(e.to_lowercase().contains("name"), "{e}")
            }
            other => panic!("expected TlsBadCertificate, got {other:?}"),
        }
        // ... with it, connecting to 127.0.0.1 verifies broker.test and works.
        let config = config_at(broker.tls_port(), &unique("sni")).tls(test_ca(&broker));
        consumes(&broker, config).await.stop().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn ssl_certfile_keyfile_mtls_works_and_a_missing_client_cert_is_a_tls_reason() {
    with_timeout(Duration::from_secs(60), async {
        let broker = Broker::start(BrokerOptions {
            mtls: true,
            ..BrokerOptions::default()
        });
        let pki = broker.pki().clone();
        let config = config_at(broker.mtls_port(), &unique("mtls"))
            .tls(test_ca(&broker).client_cert_files(&pki.client_cert, &pki.client_key));
        consumes(&broker, config).await.stop().await.unwrap();

        let config = config_at(broker.mtls_port(), &unique("mtls"))
            .emqtt_option("ssl", true)
            .emqtt_option("ssl_opts.cacertfile", pki.ca.to_str().unwrap())
            .emqtt_option("ssl_opts.server_name_indication", Pki::SERVER_NAME)
            .emqtt_option("ssl_opts.certfile", pki.client_cert.to_str().unwrap())
            .emqtt_option("ssl_opts.keyfile", pki.client_key.to_str().unwrap());
        consumes(&broker, config).await.stop().await.unwrap();

        let config = config_at(broker.mtls_port(), &unique("nocert")).tls(test_ca(&broker));
        assert_eq!(first_down(config).await, DownReason::TlsClientCertRequired);

        // A client certificate from a CA the broker does not trust: rejected by an alert.
        let other = tempfile::tempdir().unwrap();
        let other_pki = Pki::generate(other.path(), false);
        let config = config_at(broker.mtls_port(), &unique("badcert"))
            .tls(test_ca(&broker).client_cert_files(&other_pki.client_cert, &other_pki.client_key));
        match first_down(config).await {
            DownReason::TlsClientCertRejected(alert) => assert!(!alert.is_empty()),
            other => panic!("expected TlsClientCertRejected, got {other:?}"),
        }
    })
    .await;
}

// --- ws_path ----------------------------------------------------------------------

#[tokio::test]
async fn ws_path_websocket_transport_works_and_sends_the_path() {
    with_timeout(Duration::from_secs(60), async {
        let broker = Broker::start(BrokerOptions {
            websockets: true,
            ..BrokerOptions::default()
        });
        // A recording proxy shows what goes over the wire.
        let proxy = Proxy::start(broker.ws_port()).await;
        let url = format!("ws://127.0.0.1:{}/some/ws-path", proxy.port());
        let config = Config::from_url(&url).unwrap().client_id(unique("ws"));
        consumes(&broker, config).await.stop().await.unwrap();
        let upstream = proxy.recordings()[0].upstream.lock().unwrap().clone();
        let request = String::from_utf8_lossy(&upstream).to_lowercase();
        assert!(
            request.starts_with("get /some/ws-path http/1.1\r\n"),
            "{request}"
        );
        assert!(
            request.contains("sec-websocket-protocol: mqtt\r\n"),
            "{request}"
        );

        // Not a websockets listener: a typed websocket reason, not a bare "closed".
        let config = config_at(broker.port(), &unique("ws")).websocket("/mqtt");
        match first_down(config).await {
            DownReason::WebSocket(e) => assert!(e.contains("websockets listener"), "{e}"),
            other => panic!("expected DownReason::WebSocket, got {other:?}"),
        }

        // The emqtt option name, too.
        let config = config_at(broker.ws_port(), &unique("ws")).emqtt_option("ws_path", "/mqtt");
        consumes(&broker, config).await.stop().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn ws_path_websocket_over_tls_works() {
    with_timeout(Duration::from_secs(60), async {
        let broker = Broker::start(BrokerOptions {
            wss: true,
            ..BrokerOptions::default()
        });
        let url = format!("wss://127.0.0.1:{}/mqtt", broker.wss_port());
        let config = Config::from_url(&url)
            .unwrap()
            .client_id(unique("wss"))
            .tls(test_ca(&broker));
        consumes(&broker, config).await.stop().await.unwrap();
    })
    .await;
}

// --- connect_timeout --------------------------------------------------------------

#[tokio::test]
async fn connect_timeout_a_black_hole_times_out_within_the_bound() {
    with_timeout(Duration::from_secs(30), async {
        // Accepted by the kernel (backlog) but never read or answered: no CONNACK.
        let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = hole.local_addr().unwrap().port();
        let bound = Duration::from_secs(1);
        let consumer = Consumer::builder(
            config_at(port, &unique("hole"))
                .emqtt_option("connect_timeout", 1)
                .emqtt_option("reconnect", 0),
        )
        .topic("a", Q::AtLeastOnce)
        .build()
        .unwrap();
        let started = Instant::now();
        let result = consumer
            .run(
                service_fn(|_m: Message| async { Ok::<_, BoxError>(()) }),
                tower_mqtt::CancellationToken::new(),
            )
            .await;
        let elapsed = started.elapsed();
        match result {
            Err(RunError::ReconnectLimit { last, attempts, .. }) => {
                assert_eq!(last, DownReason::Timeout);
                assert_eq!(attempts, 1);
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(
            elapsed >= bound && elapsed < bound + Duration::from_millis(900),
            "{elapsed:?}"
        );
        drop(hole);
    })
    .await;
}

// --- bridge_mode ------------------------------------------------------------------

#[tokio::test]
async fn bridge_mode_sends_the_bridge_bit_and_mosquitto_sees_a_bridge() {
    with_timeout(Duration::from_secs(60), async {
        let broker = Broker::start(BrokerOptions::default());
        let id = unique("bridge");
        let bridged = config(&broker, &id).emqtt_option("bridge_mode", true);
        consumes(&broker, bridged).await.stop().await.unwrap();
        let log = broker.log();
        assert!(
            log.lines()
                .any(|l| l.contains("New bridge connected from")
                    && l.contains(&format!(" as {id}_0 "))),
            "{}",
            broker.log_tail(10)
        );
        // MQTT 5 has no bridge flag.
        match build_err(
            config(&broker, &id)
                .proto_ver(ProtoVer::V5)
                .bridge_mode(true),
        ) {
            ConfigError::Unsupported { option, .. } => assert_eq!(option, "bridge_mode"),
            other => panic!("{other:?}"),
        }
    })
    .await;
}

// --- clientid, clean_start, proto_ver -----------------------------------------------

#[tokio::test]
async fn clientid_each_connection_appends_its_index() {
    with_timeout(Duration::from_secs(60), async {
        let broker = Broker::start(BrokerOptions::default());
        let id = unique("cid");
        let running = spawn(
            builder(
                config(&broker, &id).emqtt_option("clientid", id.as_str()),
                "a/b",
                Q::AtLeastOnce,
            )
            .shared_group("g")
            .concurrency(2),
            service_fn(|_m: Message| async { Ok::<_, BoxError>(()) }),
        );
        running.events.wait_subscribed(2, 1).await;
        for i in 0..2 {
            broker
                .wait_for_log(&format!("as {id}_{i} ("), Duration::from_secs(5))
                .await;
        }
        running.stop().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn clean_start_false_with_mqtt5_session_expiry_resumes_the_session() {
    with_timeout(Duration::from_secs(60), async {
        let broker = Broker::start(BrokerOptions::default());
        let id = unique("session");
        let topic = unique("t");
        let make = || {
            builder(
                config(&broker, &id)
                    .proto_ver(ProtoVer::V5)
                    .emqtt_option("clean_start", false),
                &topic,
                Q::AtLeastOnce,
            )
        };
        let first = spawn(
            make(),
            service_fn(|_m: Message| async { Ok::<_, BoxError>(()) }),
        );
        first.events.wait_subscribed(1, 1).await;
        first.stop().await.unwrap();
        broker
            .wait_for_log(
                &format!("Client {id}_0 disconnected"),
                Duration::from_secs(5),
            )
            .await;
        let second = spawn(
            make(),
            service_fn(|_m: Message| async { Ok::<_, BoxError>(()) }),
        );
        second
            .events
            .wait(Duration::from_secs(20), |e| matches!(e, Ev::Up { .. }))
            .await;
        assert!(second.events.all().contains(&Ev::Up {
            index: 0,
            session_present: true
        }));
        second.stop().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn proto_ver_v4_and_v5_connect_and_v3_is_rejected() {
    with_timeout(Duration::from_secs(60), async {
        let broker = Broker::start(BrokerOptions::default());
        for (name, level) in [("v4", "p2"), ("v5", "p5")] {
            let id = unique(name);
            let config = config(&broker, &id).emqtt_option("proto_ver", name);
            consumes(&broker, config).await.stop().await.unwrap();
            assert!(
                broker.log().contains(&format!("as {id}_0 ({level}, ")),
                "{}",
                broker.log_tail(10)
            );
        }
        assert_eq!(
            build_err(config(&broker, "x").emqtt_option("proto_ver", "v3")),
            ConfigError::UnsupportedProtocol
        );
    })
    .await;
}

// --- keepalive --------------------------------------------------------------------

/// `kill -<signal> <pid>` through the shell's builtin (no procps needed).
fn signal(signal: &str, pid: u32) -> std::process::ExitStatus {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("kill -{signal} {pid}"))
        .status()
        .expect("run sh")
}

/// Sends SIGCONT when dropped, so a failed assertion never leaves mosquitto stopped.
struct Resume(u32);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = signal("CONT", self.0);
    }
}

#[tokio::test]
async fn keepalive_a_broker_that_stops_answering_is_detected_within_1_5x_keepalive() {
    with_timeout(Duration::from_secs(60), async {
        let broker = Broker::start(BrokerOptions::default());
        let keepalive = Duration::from_secs(2);
        let running = spawn(
            builder(
                config(&broker, &unique("ka")).emqtt_option("keepalive", 2),
                &unique("t"),
                Q::AtLeastOnce,
            ),
            service_fn(|_m: Message| async { Ok::<_, BoxError>(()) }),
        );
        running.events.wait_subscribed(1, 1).await;
        let pid = broker.pid().unwrap();
        let stopped_at = tokio::time::Instant::now();
        assert!(signal("STOP", pid).success());
        let _resume = Resume(pid);
        running
            .events
            .wait(Duration::from_secs(10), |e| matches!(e, Ev::Down(..)))
            .await;
        let down_at = running.events.times(|e| matches!(e, Ev::Down(..)))[0];
        assert!(running
            .events
            .all()
            .contains(&Ev::Down(0, DownReason::KeepaliveTimeout)));
        // The last PINGRESP came at most one interval before the stop; the broker is
        // declared gone half an interval after the next PINGREQ.
        let took = down_at - stopped_at;
        assert!(
            took <= keepalive.mul_f64(1.5) + Duration::from_millis(300),
            "{took:?}"
        );
        running.stop().await.unwrap();
    })
    .await;
}

// --- retry_interval, ack_timeout, force_ping, low_mem, custom_auth_callbacks ---------

#[test]
fn retry_interval_ack_timeout_force_ping_low_mem_are_typed_unsupported_errors() {
    for (name, value) in [
        ("retry_interval", OptionValue::Int(30)),
        ("ack_timeout", OptionValue::Int(30)),
        ("force_ping", OptionValue::Bool(false)),
        ("low_mem", OptionValue::Bool(true)),
    ] {
        match build_err(Config::new("h").client_id("id").emqtt_option(name, value)) {
            ConfigError::Unsupported {
                option,
                why,
                instead,
            } => {
                assert_eq!(option, name);
                assert!(!why.is_empty() && !instead.is_empty());
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    // force_ping true is what the consumer always does.
    Consumer::builder(
        Config::new("h")
            .client_id("id")
            .emqtt_option("force_ping", true),
    )
    .topic("a", Q::AtLeastOnce)
    .build()
    .unwrap();
    assert_eq!(
        build_err(
            Config::new("h")
                .client_id("id")
                .emqtt_option("no_such_option", 1)
        ),
        ConfigError::UnknownOption("no_such_option".into())
    );
}

#[test]
fn custom_auth_callbacks_is_a_typed_error_naming_the_limitation() {
    for (name, config) in [
        (
            "custom_auth_callbacks",
            Config::new("h").emqtt_option("custom_auth_callbacks", "MyAuth"),
        ),
        (
            "properties.Authentication-Method",
            Config::new("h")
                .proto_ver(ProtoVer::V5)
                .connect_property("Authentication-Method", "SCRAM-SHA-1"),
        ),
    ] {
        let e = build_err(config.client_id("id"));
        match &e {
            ConfigError::Unsupported { option, why, .. } => {
                assert_eq!(option, name);
                assert!(
                    why.contains("AUTH exchange") && why.contains("rumqttc"),
                    "{why}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}

// --- will -------------------------------------------------------------------------

async fn will_is_published_when_cut(proto: ProtoVer) {
    let broker = Broker::start(BrokerOptions::default());
    let proxy = Proxy::start(broker.port()).await;
    let will_topic = unique("will");
    let mut watcher = subscribe_collect(&broker, &will_topic, QoS::AtLeastOnce).await;
    let running = spawn(
        builder(
            config_at(proxy.port(), &unique("will"))
                .proto_ver(proto)
                .emqtt_option("will_topic", will_topic.as_str())
                .emqtt_option("will_payload", "gone")
                .emqtt_option("will_qos", 1)
                .emqtt_option("will_retain", false),
            &unique("t"),
            Q::AtLeastOnce,
        ),
        service_fn(|_m: Message| async { Ok::<_, BoxError>(()) }),
    );
    running.events.wait_subscribed(1, 1).await;
    proxy.cut_all();
    let will = watcher.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(&will[0].payload[..], b"gone");
    assert_eq!(will[0].topic, will_topic);
    assert_eq!(will[0].qos, QoS::AtLeastOnce);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn will_is_published_when_the_connection_is_cut_v4() {
    with_timeout(
        Duration::from_secs(60),
        will_is_published_when_cut(ProtoVer::V4),
    )
    .await;
}

#[tokio::test]
async fn will_is_published_when_the_connection_is_cut_v5() {
    with_timeout(
        Duration::from_secs(60),
        will_is_published_when_cut(ProtoVer::V5),
    )
    .await;
}

#[tokio::test]
async fn will_is_not_published_after_a_clean_shutdown() {
    with_timeout(Duration::from_secs(60), async {
        let broker = Broker::start(BrokerOptions::default());
        let will_topic = unique("will");
        let mut watcher = subscribe_collect(&broker, &will_topic, QoS::AtLeastOnce).await;
        for proto in [ProtoVer::V4, ProtoVer::V5] {
            let id = unique("will");
            let running = spawn(
                builder(
                    config(&broker, &id)
                        .proto_ver(proto)
                        .will(Will::new(will_topic.clone(), "gone").qos(Q::AtLeastOnce)),
                    &unique("t"),
                    Q::AtLeastOnce,
                ),
                service_fn(|_m: Message| async { Ok::<_, BoxError>(()) }),
            );
            running.events.wait_subscribed(1, 1).await;
            running.stop().await.unwrap();
            broker
                .wait_for_log(
                    &format!("Client {id}_0 disconnected."),
                    Duration::from_secs(5),
                )
                .await;
            // A marker published after the disconnect is queued behind any will.
            publish_many(&broker, &will_topic, QoS::AtLeastOnce, [b"marker".to_vec()]).await;
            let got = watcher.wait_for(1, Duration::from_secs(10)).await;
            assert_eq!(
                &got[0].payload[..],
                b"marker",
                "{proto:?}: a will arrived first"
            );
        }
    })
    .await;
}

// --- reconnect, reconnect_timeout ---------------------------------------------------

#[tokio::test]
async fn reconnect_count_ends_run_with_an_error_carrying_the_last_reason() {
    with_timeout(Duration::from_secs(60), async {
        let broker = auth_broker();
        let running = spawn(
            builder(
                config(&broker, &unique("limit"))
                    .username(USER)
                    .password("wrong")
                    .emqtt_option("reconnect", 2)
                    .emqtt_option("reconnect_timeout", 1),
                &unique("t"),
                Q::AtLeastOnce,
            ),
            service_fn(|_m: Message| async { Ok::<_, BoxError>(()) }),
        );
        let events = running.events.clone();
        match running.join().await {
            Err(RunError::ReconnectLimit { attempts, last, .. }) => {
                assert_eq!(attempts, 3);
                assert_eq!(last, DownReason::NotAuthorized);
            }
            other => panic!("{other:?}"),
        }
        // reconnect_timeout 1 s: each wait is exactly 1 s (min = max leaves no jitter).
        let times = events.times(|e| matches!(e, Ev::Down(..)));
        assert_eq!(times.len(), 3);
        for pair in times.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(gap >= Duration::from_millis(500), "{gap:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn reconnect_infinity_retries_forever_with_backoff() {
    with_timeout(Duration::from_secs(60), async {
        let mut broker = Broker::start(BrokerOptions::default());
        broker.stop();
        let running = spawn(
            builder(
                config(&broker, &unique("forever"))
                    .emqtt_option("reconnect", OptionValue::Infinity),
                &unique("t"),
                Q::AtLeastOnce,
            )
            .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(100)),
            service_fn(|_m: Message| async { Ok::<_, BoxError>(()) }),
        );
        running
            .events
            .wait_count(15, Duration::from_secs(20), |e| matches!(e, Ev::Down(..)))
            .await;
        let times = running.events.times(|e| matches!(e, Ev::Down(..)));
        for pair in times.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(25));
        }
        // Still trying: once the broker is back, it connects.
        broker.start_again();
        running.events.wait_subscribed(1, 1).await;
        running.stop().await.unwrap();
    })
    .await;
}

// --- properties (MQTT 5 CONNECT) ----------------------------------------------------

#[tokio::test]
async fn properties_mqtt5_connect_properties_are_passed_through() {
    with_timeout(Duration::from_secs(60), async {
        let broker = Broker::start(BrokerOptions::default());
        let proxy = Proxy::start(broker.port()).await;
        let config = config_at(proxy.port(), &unique("props"))
            .proto_ver(ProtoVer::V5)
            .user_property("app", "ingest")
            .connect_property("User-Property", ("region", "eu"))
            .request_problem_info(false)
            .connect_property("Request-Response-Information", 1)
            .connect_property("Topic-Alias-Maximum", 0)
            .connect_property("Receive-Maximum", 7)
            .session_expiry(Duration::from_secs(600))
            .connect_property("Session-Expiry-Interval", 600);
        consumes_with(&broker, config, |b| b.max_inflight(7))
            .await
            .stop()
            .await
            .unwrap();
        let connect = first_connect_v5(&proxy.recordings()[0]);
        let p = connect.properties.expect("CONNECT properties");
        assert_eq!(
            p.user_properties,
            vec![
                ("app".to_owned(), "ingest".to_owned()),
                ("region".to_owned(), "eu".to_owned())
            ]
        );
        assert_eq!(p.request_problem_info, Some(0));
        assert_eq!(p.request_response_info, Some(1));
        assert_eq!(p.topic_alias_max, Some(0));
        assert_eq!(p.receive_maximum, Some(7));
        assert_eq!(p.session_expiry_interval, Some(600));
        assert_eq!(p.max_packet_size, None);
    })
    .await;
}

#[test]
fn properties_conflicts_and_unsupported_properties_are_typed_errors() {
    let v5 = || Config::new("h").client_id("id").proto_ver(ProtoVer::V5);
    // Receive-Maximum comes from max_inflight (default 100).
    match build_err(v5().connect_property("Receive-Maximum", 10)) {
        ConfigError::ConflictingOption { option, other, .. } => {
            assert_eq!(
                (option.as_str(), other),
                ("properties.Receive-Maximum", "max_inflight")
            )
        }
        e => panic!("{e:?}"),
    }
    match build_err(v5().connect_property("Session-Expiry-Interval", 5)) {
        ConfigError::ConflictingOption { other, .. } => assert_eq!(other, "session_expiry"),
        e => panic!("{e:?}"),
    }
    for config in [
        v5().topic_alias_max(10),
        v5().connect_property("Maximum-Packet-Size", 1024),
    ] {
        assert!(matches!(build_err(config), ConfigError::Unsupported { .. }));
    }
    assert_eq!(
        build_err(Config::new("h").client_id("id").user_property("a", "b")),
        ConfigError::RequiresMqtt5("user_property")
    );
    assert_eq!(
        build_err(v5().connect_property("Bogus-Property", 1)),
        ConfigError::UnknownOption("properties.Bogus-Property".into())
    );
    assert!(matches!(
        build_err(
            Config::new("h")
                .client_id("id")
                .emqtt_option("properties", 1)
        ),
        ConfigError::Unsupported { .. }
    ));
}

// --- ACL ---------------------------------------------------------------------------

/// A consumer subscribed to an allowed and a denied filter: returns its events once a
/// message on the allowed topic was processed, after one was published to the denied
/// topic first (so a delivered denied message would have been seen).
async fn allowed_and_denied(broker: &Broker, config: Config, prefix: &str) -> Vec<Ev> {
    let allowed = format!("allowed/{prefix}");
    let denied = format!("denied/{prefix}");
    let processed = Processed::default();
    let running = spawn(
        builder(config, &allowed, Q::AtLeastOnce).topic(&denied, Q::AtLeastOnce),
        recording_service(&processed),
    );
    running
        .events
        .wait_count(2, Duration::from_secs(20), |e| {
            matches!(e, Ev::SubOk { .. } | Ev::SubErr { .. })
        })
        .await;
    publish_many(broker, &denied, QoS::AtLeastOnce, [b"secret".to_vec()]).await;
    publish_many(broker, &allowed, QoS::AtLeastOnce, [b"fine".to_vec()]).await;
    running
        .events
        .wait(
            Duration::from_secs(20),
            |e| matches!(e, Ev::Ack { topic, .. } if *topic == allowed),
        )
        .await;
    assert!(
        !processed.contains(b"secret"),
        "an ACL-denied message was delivered"
    );
    let events = running.events.all();
    assert_eq!(
        events.iter().filter(|e| matches!(e, Ev::Down(..))).count(),
        0,
        "the consumer must keep its connection: {events:?}"
    );
    running.stop().await.unwrap();
    events
}

fn sub_err(events: &[Ev], prefix: &str) -> Option<u8> {
    events.iter().find_map(|e| match e {
        Ev::SubErr { topic, code, .. } if topic.starts_with(prefix) => Some(*code),
        _ => None,
    })
}

/// With mosquitto's dynamic-security plugin, a `subscribePattern` deny refuses the
/// SUBSCRIBE: SUBACK 0x87 (Not authorized) on MQTT 5, 0x80 (Failure) on 3.1.1. The
/// consumer reports it as a subscription error and keeps consuming the other filter.
#[tokio::test]
async fn acl_denied_subscription_is_a_subscription_error_and_other_topics_keep_working() {
    with_timeout(Duration::from_secs(60), async {
        let broker = Broker::start(BrokerOptions {
            dynsec_deny_subscribe: Some("denied/#".into()),
            ..BrokerOptions::default()
        });
        for (proto, code) in [(ProtoVer::V5, 0x87), (ProtoVer::V4, 0x80)] {
            let prefix = unique("t");
            let config = config(&broker, &unique("acl")).proto_ver(proto);
            let events = allowed_and_denied(&broker, config, &prefix).await;
            assert_eq!(
                sub_err(&events, "denied/"),
                Some(code),
                "{proto:?}: {events:?}"
            );
            assert!(events
                .iter()
                .any(|e| matches!(e, Ev::SubOk { topic, .. } if topic.starts_with("allowed/"))));
        }
    })
    .await;
}

/// With a plain `acl_file`, mosquitto 2.0.11 grants every SUBSCRIBE (even for a
/// `topic deny` rule) and enforces the ACL only when delivering: the broker reports
/// nothing, so the consumer sees a granted subscription that never delivers, and the
/// other filter keeps working. Measured on MQTT 5 and 3.1.1 alike.
#[tokio::test]
async fn acl_file_denied_topic_is_granted_by_mosquitto_but_never_delivered() {
    with_timeout(Duration::from_secs(60), async {
        let broker = Broker::start(BrokerOptions {
            users: vec![(USER.into(), PASSWORD.into())],
            acl: Some(format!(
                "topic readwrite #\n\nuser {USER}\ntopic read allowed/#\ntopic deny denied/#\n"
            )),
            ..BrokerOptions::default()
        });
        for proto in [ProtoVer::V5, ProtoVer::V4] {
            let config = config(&broker, &unique("acl"))
                .proto_ver(proto)
                .username(USER)
                .password(PASSWORD);
            let events = allowed_and_denied(&broker, config, &unique("t")).await;
            assert_eq!(sub_err(&events, "denied/"), None, "{proto:?}: {events:?}");
        }
    })
    .await;
}

#[test]
fn reconnect_and_ssl_opts_misuse_are_typed_errors() {
    // reconnect and max_reconnect_attempts set to different limits.
    let e = Consumer::builder(
        Config::new("h")
            .client_id("id")
            .emqtt_option("reconnect", 3),
    )
    .topic("a", Q::AtLeastOnce)
    .max_reconnect_attempts(Some(5))
    .build()
    .unwrap_err();
    assert!(
        matches!(&e, ConfigError::ConflictingOption { option, other: "max_reconnect_attempts", .. } if option == "reconnect"),
        "{e:?}"
    );
    // A client certificate without its key.
    match build_err(
        Config::new("h")
            .client_id("id")
            .emqtt_option("ssl", true)
            .emqtt_option("ssl_opts.verify", "verify_none")
            .emqtt_option("ssl_opts.certfile", "/nonexistent/client.pem"),
    ) {
        ConfigError::InvalidTls { option, .. } => assert_eq!(option, "client_cert"),
        e => panic!("{e:?}"),
    }
    // An unreadable CA file is caught by build(), not by a reconnect loop.
    match build_err(
        Config::new("h")
            .client_id("id")
            .tls(TlsOptions::new().ca_file("/nonexistent/ca.pem")),
    ) {
        ConfigError::InvalidTls { option, reason } => {
            assert_eq!(option, "ca_file");
            assert!(reason.contains("/nonexistent/ca.pem"), "{reason}");
        }
        e => panic!("{e:?}"),
    }
}
