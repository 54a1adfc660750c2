//! Failover across a list of brokers (`Config::hosts`): a consumer whose broker dies
//! moves to the next one, events name the endpoint, the backoff is waited once per
//! round of the list, and bad lists are typed errors. Also: subscribing on every
//! connection (whatever `session_present` says) resends no retained message with
//! MQTT 5 and loses nothing from a resumed session.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::cluster::{Conn, ConnLog};
use support::consumer::{payloads, recording_service, rqos, Processed};
use support::proxy::Proxy;
use support::*;
use tokio::time::Instant;
use tower::service_fn;
use tower_mqtt::{
    BoxError, Config, ConfigError, Consumer, ConsumerBuilder, Endpoint, Message, ProtoVer,
    QoS as Q, RunError,
};

fn up_at(endpoint: &str) -> impl Fn(&Conn) -> bool + '_ {
    move |c| matches!(c, Conn::Up { endpoint: e, .. } if e == endpoint)
}

fn endpoint(broker: &Broker) -> Endpoint {
    Endpoint::new(broker.host(), broker.port())
}

/// Start `builder`'s consumer with `recorder` as its hook.
fn run(
    builder: ConsumerBuilder,
    recorder: &ConnLog,
    processed: &Processed,
) -> (
    tower_mqtt::CancellationToken,
    tokio::task::JoinHandle<Result<(), RunError>>,
) {
    let consumer = builder
        .on_event(recorder.hook())
        .build()
        .expect("valid configuration");
    let shutdown = tower_mqtt::CancellationToken::new();
    let handle = tokio::spawn(consumer.run(recording_service(processed), shutdown.clone()));
    (shutdown, handle)
}

async fn wait_processed(processed: &Processed, payload: &[u8], recorder: &ConnLog) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !processed.contains(payload) {
        assert!(
            Instant::now() < deadline,
            "{:?} not processed; events {:#?}",
            String::from_utf8_lossy(payload),
            recorder.all()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `id` at `broker` through `proxy` (which can cut the connection).
fn via_proxy(broker: &Broker, proxy: &Proxy, id: &str, proto: ProtoVer) -> Config {
    Config::new(broker.host())
        .port(proxy.port())
        .client_id(id)
        .proto_ver(proto)
        .keepalive(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(5))
}

fn list_config(endpoints: &[Endpoint], id: &str) -> Config {
    Config::new("unused")
        .hosts(endpoints.iter().cloned())
        .client_id(id)
        .keepalive(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(5))
}

#[tokio::test]
async fn a_consumer_moves_to_the_next_broker_when_its_broker_is_killed() {
    with_timeout(Duration::from_secs(60), async {
        let mut a = Broker::start(BrokerOptions::default());
        let b = Broker::start(BrokerOptions::default());
        let (ea, eb) = (endpoint(&a).to_string(), endpoint(&b).to_string());
        let (id, topic) = (unique("failover"), unique("t"));
        let (recorder, processed) = (ConnLog::default(), Processed::default());
        let builder = Consumer::builder(list_config(&[endpoint(&a), endpoint(&b)], &id))
            .topic(&topic, Q::AtLeastOnce)
            .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500));
        let (shutdown, handle) = run(builder, &recorder, &processed);

        recorder
            .wait_count(1, Duration::from_secs(10), |c| *c == Conn::Subscribed)
            .await;
        publish_many(&a, &topic, QoS::AtLeastOnce, [b"on-a".to_vec()]).await;
        wait_processed(&processed, b"on-a", &recorder).await;

        a.stop(); // SIGKILL: the consumer must move to b
        recorder
            .wait_count(1, Duration::from_secs(20), up_at(&eb))
            .await;
        // b has no session for us: the consumer subscribes there.
        recorder
            .wait_count(2, Duration::from_secs(10), |c| *c == Conn::Subscribed)
            .await;
        publish_many(&b, &topic, QoS::AtLeastOnce, [b"on-b".to_vec()]).await;
        wait_processed(&processed, b"on-b", &recorder).await;

        // Up at a, down at a, then at once up at b: no failed attempt in between.
        let seen: Vec<Conn> = recorder
            .all()
            .into_iter()
            .map(|(_, c)| c)
            .filter(|c| *c != Conn::Subscribed)
            .collect();
        assert_eq!(
            seen,
            [
                Conn::Up {
                    endpoint: ea.clone(),
                    session_present: false
                },
                Conn::Down { endpoint: ea },
                Conn::Up {
                    endpoint: eb,
                    session_present: false
                },
            ]
        );
        assert!(processed.duplicates().is_empty());
        shutdown.cancel();
        handle.await.unwrap().unwrap();
    })
    .await;
}

#[tokio::test]
async fn the_backoff_is_waited_once_per_round_of_the_list() {
    with_timeout(Duration::from_secs(60), async {
        // Two endpoints with nothing listening: every attempt is refused at once.
        let mut a = Broker::start(BrokerOptions::default());
        let mut b = Broker::start(BrokerOptions::default());
        let list = [endpoint(&a), endpoint(&b)];
        a.stop();
        b.stop();
        let backoff = Duration::from_secs(2);
        let recorder = ConnLog::default();
        let builder = Consumer::builder(list_config(&list, &unique("rounds")))
            .topic(unique("t"), Q::AtLeastOnce)
            .reconnect_backoff(backoff, backoff)
            .max_reconnect_attempts(Some(5));
        let (_shutdown, handle) = run(builder, &recorder, &Processed::default());
        match handle.await.unwrap() {
            Err(RunError::ReconnectLimit { attempts: 6, .. }) => {}
            other => panic!("expected the reconnect limit after 6 attempts: {other:?}"),
        }
        let downs: Vec<(Instant, String)> = recorder
            .all()
            .into_iter()
            .filter_map(|(t, c)| match c {
                Conn::Down { endpoint } => Some((t, endpoint)),
                _ => None,
            })
            .collect();
        let order: Vec<&str> = downs.iter().map(|(_, e)| e.as_str()).collect();
        let (a, b) = (list[0].to_string(), list[1].to_string());
        assert_eq!(order, [&a, &b, &a, &b, &a, &b]);
        for (i, pair) in downs.windows(2).enumerate() {
            let gap = pair[1].0 - pair[0].0;
            if i % 2 == 0 {
                // a failed: b is tried without waiting the backoff.
                assert!(gap < backoff, "attempt {} waited {gap:?}", i + 2);
            } else {
                // A whole round failed: the backoff before a again.
                assert!(gap >= backoff, "attempt {} waited only {gap:?}", i + 2);
            }
        }
    })
    .await;
}

#[test]
fn bad_host_lists_are_typed_errors_naming_the_option() {
    let build = |config: Config| {
        Consumer::builder(config.client_id("x"))
            .topic("t", Q::AtLeastOnce)
            .build()
            .map(|_| ())
            .unwrap_err()
    };
    for (config, endpoint) in [
        (Config::new("a").hosts(Vec::<Endpoint>::new()), ""),
        (Config::new("a").hosts([("a", 1883), ("b", 0)]), "b:0"),
        (Config::new("a").hosts([("a", 1883), (" ", 1)]), " :1"),
        (Config::new("a").hosts([("a", 1883), ("a", 1883)]), "a:1883"),
        (
            Config::from_url("mqtt://a:1883,a:1883?client_id=x").unwrap(),
            "a:1883",
        ),
    ] {
        let err = build(config);
        assert!(
            matches!(&err, ConfigError::InvalidEndpoint { endpoint: e, .. } if e == endpoint),
            "{err:?}"
        );
        assert!(err.to_string().starts_with("hosts: "), "{err}");
    }
    for url in ["mqtt://a,,b", "mqtt://a:1883,", "mqtt://a,b:x"] {
        assert!(
            matches!(Config::from_url(url), Err(ConfigError::InvalidUrl { .. })),
            "{url}"
        );
    }
    let err = "broker-1".parse::<Endpoint>().unwrap_err();
    assert!(err.to_string().starts_with("hosts: "), "{err}");
}

/// A consumer reconnecting through `proxy` resumes its session (session_present) and
/// subscribes again; a retained message on the topic reaches the service once with
/// MQTT 5 (Retain Handling 1) and again after the reconnect with MQTT 3.1.1, whose
/// brokers send retained messages on every SUBSCRIBE. Returns how many fresh (not DUP)
/// deliveries of the retained message the service saw.
async fn retained_after_resubscribe(proto: ProtoVer) -> usize {
    let broker = Broker::start(BrokerOptions::default());
    let proxy = Proxy::start(broker.port()).await;
    let (id, topic) = (unique("retained"), unique("t"));
    let retainer = TestClient::connect(&broker, &unique("retainer"), true, false).await;
    retainer
        .client()
        .publish(&topic, QoS::AtLeastOnce, true, b"retained".to_vec())
        .await
        .unwrap();
    retainer.disconnect(Duration::from_secs(10)).await;

    let (recorder, processed) = (ConnLog::default(), Processed::default());
    let retained_seen = Arc::new(Mutex::new(0usize));
    let seen = retained_seen.clone();
    let p = processed.clone();
    let service = service_fn(move |m: Message| {
        // A DUP copy is the session resending an unacknowledged delivery (the cut can
        // come before the PUBACK got out), not the SUBSCRIBE sending it again.
        if m.payload().as_ref() == b"retained" && !m.dup() {
            assert!(
                m.retain(),
                "a retained message arrives with the retain flag"
            );
            *seen.lock().unwrap() += 1;
        }
        p.record(m.payload());
        async { Ok::<_, BoxError>(()) }
    });
    let config = via_proxy(&broker, &proxy, &id, proto);
    let consumer = Consumer::builder(config)
        .topic(&topic, Q::AtLeastOnce)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .on_event(recorder.hook())
        .build()
        .unwrap();
    let shutdown = tower_mqtt::CancellationToken::new();
    let handle = tokio::spawn(consumer.run(service, shutdown.clone()));
    recorder
        .wait_count(1, Duration::from_secs(10), |c| *c == Conn::Subscribed)
        .await;
    wait_processed(&processed, b"retained", &recorder).await;

    proxy.cut_all();
    recorder
        .wait_count(1, Duration::from_secs(20), |c| {
            matches!(
                c,
                Conn::Up {
                    session_present: true,
                    ..
                }
            )
        })
        .await;
    // Subscribed again although the session was resumed.
    recorder
        .wait_count(2, Duration::from_secs(10), |c| *c == Conn::Subscribed)
        .await;
    // Anything the SUBSCRIBE triggered arrives before a message published after it.
    publish_many(&broker, &topic, QoS::AtLeastOnce, [b"marker".to_vec()]).await;
    wait_processed(&processed, b"marker", &recorder).await;
    shutdown.cancel();
    handle.await.unwrap().unwrap();
    let n = *retained_seen.lock().unwrap();
    n
}

#[tokio::test]
async fn resubscribing_a_resumed_mqtt5_session_resends_no_retained_message() {
    with_timeout(Duration::from_secs(60), async {
        assert_eq!(retained_after_resubscribe(ProtoVer::V5).await, 1);
    })
    .await;
}

#[tokio::test]
async fn resubscribing_a_resumed_mqtt311_session_resends_the_retained_message() {
    with_timeout(Duration::from_secs(60), async {
        // Documented in docs/scale-out.md: 3.1.1 has no Retain Handling.
        assert_eq!(retained_after_resubscribe(ProtoVer::V4).await, 2);
    })
    .await;
}

#[tokio::test]
async fn resubscribing_a_resumed_session_loses_and_duplicates_nothing() {
    with_timeout(Duration::from_secs(90), async {
        for proto in [ProtoVer::V4, ProtoVer::V5] {
            let broker = Broker::start(BrokerOptions::default());
            let proxy = Proxy::start(broker.port()).await;
            let (id, topic) = (unique("resumed"), unique("t"));
            let (recorder, processed) = (ConnLog::default(), Processed::default());
            let config = via_proxy(&broker, &proxy, &id, proto);
            let builder = Consumer::builder(config)
                .topic(&topic, Q::AtLeastOnce)
                .reconnect_backoff(Duration::from_secs(1), Duration::from_secs(1));
            let (shutdown, handle) = run(builder, &recorder, &processed);
            recorder
                .wait_count(1, Duration::from_secs(10), |c| *c == Conn::Subscribed)
                .await;
            // Cut the connection and publish while the consumer is away (it waits
            // its 1 s backoff): the session queues the messages.
            proxy.cut_all();
            recorder
                .wait_count(1, Duration::from_secs(10), |c| {
                    matches!(c, Conn::Down { .. })
                })
                .await;
            let n = 200;
            publish_many(&broker, &topic, rqos(Q::AtLeastOnce), payloads("q", n)).await;
            recorder
                .wait_count(2, Duration::from_secs(20), |c| *c == Conn::Subscribed)
                .await;
            let deadline = Instant::now() + Duration::from_secs(30);
            while processed.distinct() < n {
                assert!(
                    Instant::now() < deadline,
                    "{proto:?}: {} of {n}",
                    processed.distinct()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(
                recorder.count(|c| matches!(
                    c,
                    Conn::Up {
                        session_present: true,
                        ..
                    }
                )) == 1,
                "{proto:?}: {:#?}",
                recorder.all()
            );
            assert_eq!(processed.duplicates(), Vec::<String>::new(), "{proto:?}");
            shutdown.cancel();
            handle.await.unwrap().unwrap();
        }
    })
    .await;
}
