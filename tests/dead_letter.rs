//! The dead-letter layer against a real broker (a private mosquitto per test): what it
//! publishes, and what it does to the original's acknowledgement.

mod support;

use std::time::Duration;

use support::consumer::{builder, config, left_in_session, spawn, Ev};
use support::{publish_many, unique, with_timeout, Broker, BrokerOptions, QoS};
use tokio::sync::mpsc;
use tower::ServiceBuilder;
use tower_mqtt::{BoxError, ConsumerBuilder, Disposition, Message, OnFailure, ProtoVer, QoS as Q};
use tower_mqtt_layers::decode::Decoded;
use tower_mqtt_layers::ServiceBuilderExt;

const WAIT: Duration = Duration::from_secs(20);

#[derive(Debug, serde::Deserialize)]
struct Reading {
    #[allow(dead_code)] // decoded to prove the payload is a reading
    celsius: f64,
}

/// A consumer of `dead/<topic>` that hands every message it receives to the channel.
async fn watch_dead_letters(
    broker: &Broker,
    proto: ProtoVer,
    topic: &str,
) -> (mpsc::UnboundedReceiver<Message>, support::consumer::Running) {
    let (tx, rx) = mpsc::unbounded_channel();
    let watcher = spawn(
        builder(
            config(broker, &unique("dlq")).proto_ver(proto),
            &format!("dead/{topic}"),
            Q::AtLeastOnce,
        ),
        tower::service_fn(move |m: Message| {
            let _ = tx.send(m);
            async { Ok::<_, BoxError>(()) }
        }),
    );
    watcher.events.wait_subscribed(1, 1).await;
    (rx, watcher)
}

/// The consumer under test: dead letters to `dead/<topic>`, JSON readings, a service
/// that accepts every reading.
fn consumer(builder: ConsumerBuilder) -> support::consumer::Running {
    let publisher = builder.clone().build().unwrap().publisher().unwrap();
    let service = ServiceBuilder::new()
        .dead_letter(publisher, |m| format!("dead/{}", m.topic()))
        .decode_json::<Reading>()
        .service_fn(|_: Decoded<Reading>| async { Ok::<_, BoxError>(()) });
    spawn(builder, service)
}

/// A payload that does not decode is dead-lettered with its headers (MQTT 5: user
/// properties; MQTT 3.1.1: the envelope), and only then acknowledged: the session holds
/// nothing afterwards, and the valid reading beside it is processed as usual.
#[tokio::test]
async fn a_payload_that_does_not_decode_is_dead_lettered_and_the_original_acknowledged() {
    with_timeout(Duration::from_secs(90), async {
        let broker = Broker::start(BrokerOptions::default());
        for proto in [ProtoVer::V5, ProtoVer::V4] {
            let (id, topic) = (unique("dl"), unique("t"));
            let (mut dead, watcher) = watch_dead_letters(&broker, proto, &topic).await;
            let running = consumer(
                builder(
                    config(&broker, &id).proto_ver(proto),
                    &topic,
                    Q::AtLeastOnce,
                )
                .on_failure(OnFailure::Redeliver),
            );
            running.events.wait_subscribed(1, 1).await;
            let bad = "21 °C";
            publish_many(
                &broker,
                &topic,
                QoS::AtLeastOnce,
                [bad.into(), br#"{"celsius":21}"#.to_vec()],
            )
            .await;
            running
                .events
                .wait_count(2, WAIT, |e| matches!(e, Ev::Ack { .. }))
                .await;
            let events = running.events.all();
            running.stop().await.expect("a clean shutdown");
            for e in &events {
                if let Ev::Ack { disposition, .. } = e {
                    assert_eq!(*disposition, Disposition::Ack, "{proto:?}: {events:#?}");
                }
            }

            let letter = tokio::time::timeout(WAIT, dead.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(letter.topic(), format!("dead/{topic}"));
            if proto == ProtoVer::V5 {
                assert_eq!(letter.payload().as_ref(), bad.as_bytes());
                let p = letter.properties().expect("user properties");
                assert_eq!(p.user_property("x-original-topic"), Some(topic.as_str()));
                assert_eq!(p.user_property("x-attempts"), Some("1"));
                assert_eq!(p.user_property("x-delivery-count"), Some("1"));
                let error = p.user_property("x-error").unwrap();
                assert!(error.contains("JSON"), "{error}");
            } else {
                let text = std::str::from_utf8(letter.payload()).unwrap();
                let (headers, payload) = text.split_once("\n\n").expect("an envelope");
                assert_eq!(payload, bad);
                let lines: Vec<&str> = headers.lines().collect();
                assert_eq!(lines[0], format!("x-original-topic: {topic}"));
                assert!(
                    lines[1].starts_with("x-error: ") && lines[1].contains("JSON"),
                    "{lines:?}"
                );
                assert_eq!(lines[2], "x-attempts: 1");
                assert_eq!(lines[3], "x-delivery-count: 1");
            }
            assert!(
                left_in_session(&broker, &id, &topic, 1).await.is_empty(),
                "{proto:?}"
            );
            watcher.stop().await.unwrap();
        }
    })
    .await;
}

/// A dead letter the broker refuses (MQTT 5 PUBACK 0x87 from an ACL) is not a dead
/// letter: the original is not acknowledged, comes back, and is still in the session
/// after the consumer stops.
#[tokio::test]
async fn a_dead_letter_the_broker_refuses_leaves_the_original_unacknowledged() {
    with_timeout(Duration::from_secs(60), async {
        let broker = Broker::start(BrokerOptions {
            dynsec_deny_publish: Some("dead/#".into()),
            ..BrokerOptions::default()
        });
        let (id, topic) = (unique("dl-refused"), unique("t"));
        let running = consumer(
            builder(
                config(&broker, &id).proto_ver(ProtoVer::V5),
                &topic,
                Q::AtLeastOnce,
            )
            .on_failure(OnFailure::Redeliver)
            .redeliver_after(Duration::from_millis(100)),
        );
        running.events.wait_subscribed(1, 1).await;
        publish_many(&broker, &topic, QoS::AtLeastOnce, [b"not json".to_vec()]).await;
        // Withheld for redelivery, then back with DUP set.
        running
            .events
            .wait(WAIT, |e| {
                matches!(
                    e,
                    Ev::Ack {
                        disposition: Disposition::Redeliver,
                        ..
                    }
                )
            })
            .await;
        running
            .events
            .wait(WAIT, |e| matches!(e, Ev::Start { dup: true, .. }))
            .await;
        let events = running.events.all();
        running.stop().await.expect("a clean shutdown");
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, Ev::Ack { disposition, .. } if disposition.acknowledges())),
            "never acknowledged: {events:#?}"
        );
        let disconnects = broker.count_in_log(&format!("Client {id}_0 disconnected"));
        let left = left_in_session(&broker, &id, &topic, disconnects).await;
        assert_eq!(left.len(), 1, "the original is still on the broker");
        assert_eq!(left[0].payload.as_ref(), b"not json");
    })
    .await;
}

/// A message that fails on every delivery is redelivered until its limit, then goes to
/// the dead-letter topic instead of looping: the service sees it three times, the dead
/// letter says it was the fourth delivery, and the session holds nothing afterwards.
#[tokio::test]
async fn a_poison_message_is_dead_lettered_after_its_delivery_limit() {
    with_timeout(Duration::from_secs(60), async {
        let broker = Broker::start(BrokerOptions::default());
        let (id, topic) = (unique("dl-poison"), unique("t"));
        let (mut dead, watcher) = watch_dead_letters(&broker, ProtoVer::V5, &topic).await;
        let builder = builder(
            config(&broker, &id).proto_ver(ProtoVer::V5),
            &topic,
            Q::AtLeastOnce,
        )
        .on_failure(OnFailure::Redeliver)
        .redeliver_after(Duration::from_millis(100));
        let publisher = builder.clone().build().unwrap().publisher().unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let calls = seen.clone();
        let service = ServiceBuilder::new()
            .dead_letter(publisher, |m| format!("dead/{}", m.topic()))
            .max_deliveries(3)
            .unwrap()
            .service_fn(move |m: Message| {
                calls.lock().unwrap().push(m.delivery_count());
                async { Err::<(), BoxError>("always fails".into()) }
            });
        let running = spawn(builder, service);
        running.events.wait_subscribed(1, 1).await;
        publish_many(&broker, &topic, QoS::AtLeastOnce, [b"poison".to_vec()]).await;
        let letter = tokio::time::timeout(WAIT, dead.recv())
            .await
            .unwrap()
            .unwrap();
        running
            .events
            .wait(WAIT, |e| {
                matches!(
                    e,
                    Ev::Ack {
                        disposition: Disposition::Ack,
                        ..
                    }
                )
            })
            .await;
        let events = running.events.all();
        running.stop().await.expect("a clean shutdown");
        assert_eq!(*seen.lock().unwrap(), [1, 2, 3], "{events:#?}");
        let p = letter.properties().expect("user properties");
        assert_eq!(p.user_property("x-delivery-count"), Some("4"));
        assert!(
            p.user_property("x-error").unwrap().contains("deliver"),
            "{p:?}"
        );
        let disconnects = broker.count_in_log(&format!("Client {id}_0 disconnected"));
        assert!(left_in_session(&broker, &id, &topic, disconnects)
            .await
            .is_empty());
        watcher.stop().await.unwrap();
    })
    .await;
}
