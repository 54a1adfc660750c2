//! Read pacing (`ConsumerBuilder::read_pacing`): above its rate a connection tries
//! holding its reads back, compares, and reports the comparison as
//! `Event::ReadPacing`; below its rate, or with `ReadPacing::Off`, it never holds.
//! Whatever it decides, every message arrives exactly once.

mod support;

use std::time::Duration;

use support::consumer::*;
use support::*;
use tower_mqtt::{ConfigError, QoS as Q, ReadPacing};

/// Publish `n` QoS 1 messages `"<prefix>-<i>"` at about `per_ms` per millisecond (a
/// steady stream, not a flood), and return once the broker has acknowledged them all.
async fn publish_stream(broker: &Broker, topic: &str, prefix: &str, n: usize, per_ms: usize) {
    let (client, mut eventloop) =
        rumqttc::AsyncClient::new(mqtt_options(broker, &unique("stream")), 1000);
    let topic = topic.to_owned();
    let prefix = prefix.to_owned();
    let send = async move {
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        for i in 0..n {
            if i % per_ms == 0 {
                tick.tick().await;
            }
            let payload = format!("{prefix}-{i}").into_bytes();
            client
                .publish(topic.as_str(), rumqttc::QoS::AtLeastOnce, false, payload)
                .await
                .expect("the harness client's queue is open");
        }
        client
    };
    let confirm = async {
        let mut acked = 0;
        while acked < n {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => panic!("the stream's publisher failed after {acked} of {n}: {e}"),
            }
        }
    };
    let (client, ()) = tokio::join!(send, confirm);
    client.disconnect().await.expect("queue DISCONNECT");
    // Let the event loop write the DISCONNECT.
    while eventloop.poll().await.is_ok() {}
}

fn pacing_event(e: &Ev) -> bool {
    matches!(e, Ev::Pacing { .. })
}

#[tokio::test]
async fn above_its_rate_a_connection_compares_holding_and_loses_nothing() {
    with_timeout(Duration::from_secs(120), async {
        let broker = Broker::start(BrokerOptions::default());
        let (id, topic) = (unique("pace"), unique("t"));
        let processed = Processed::default();
        let running = spawn(
            builder(config(&broker, &id), &topic, Q::AtLeastOnce)
                .max_inflight(200)
                .read_pacing(ReadPacing::Above(100)),
            recording_service(&processed),
        );
        running.events.wait_subscribed(1, 1).await;
        // ~5,000 messages per second for ~0.6 s: far above the threshold, and a
        // consumer that waits for each millisecond's messages.
        let n = 3_000;
        publish_stream(&broker, &topic, "p", n, 5).await;
        running
            .events
            .wait_successes(n, Duration::from_secs(60))
            .await;
        // A comparison concluded while the stream ran (holding, then reading at once):
        // it names both rates, whichever won.
        running
            .events
            .wait(Duration::from_secs(10), |e| {
                matches!(e, Ev::Pacing { direct_rate: Some(_), held_rate, .. } if *held_rate > 0)
            })
            .await;
        running.stop().await.unwrap();
        assert_eq!(processed.distinct(), n, "every message arrived");
        assert!(
            processed.duplicates().is_empty(),
            "none twice: {:?}",
            processed.duplicates()
        );
        for i in 0..n {
            assert!(processed.contains(format!("p-{i}").as_bytes()), "p-{i}");
        }
    })
    .await;
}

#[tokio::test]
async fn below_its_rate_or_when_off_a_connection_never_holds() {
    with_timeout(Duration::from_secs(120), async {
        let broker = Broker::start(BrokerOptions::default());
        // The default threshold (20,000 per second) against ~1,000 per second.
        let (id, topic) = (unique("slow"), unique("t"));
        let slow = spawn(
            builder(config(&broker, &id), &topic, Q::AtLeastOnce),
            recording_service(&Processed::default()),
        );
        slow.events.wait_subscribed(1, 1).await;
        publish_stream(&broker, &topic, "s", 500, 1).await;
        slow.events
            .wait_successes(500, Duration::from_secs(60))
            .await;
        // Off, against a flood as fast as the broker delivers it.
        let (id, flood_topic) = (unique("off"), unique("t"));
        let off = spawn(
            builder(config(&broker, &id), &flood_topic, Q::AtLeastOnce)
                .max_inflight(1000)
                .read_pacing(ReadPacing::Off),
            recording_service(&Processed::default()),
        );
        off.events.wait_subscribed(1, 1).await;
        publish_many_within(
            &broker,
            &flood_topic,
            rumqttc::QoS::AtLeastOnce,
            payloads("f", 5_000),
            Duration::from_secs(60),
        )
        .await;
        off.events
            .wait_successes(5_000, Duration::from_secs(60))
            .await;
        let (slow_events, off_events) = (slow.events.clone(), off.events.clone());
        slow.stop().await.unwrap();
        off.stop().await.unwrap();
        assert_eq!(
            slow_events.count(pacing_event),
            0,
            "{:?}",
            slow_events.all()
        );
        assert_eq!(off_events.count(pacing_event), 0, "{:?}", off_events.all());
    })
    .await;
}

#[test]
fn a_zero_rate_is_refused_naming_the_option_and_the_fix() {
    let err = tower_mqtt::Consumer::builder(tower_mqtt::Config::new("127.0.0.1").client_id("c"))
        .topic("t", Q::AtLeastOnce)
        .read_pacing(ReadPacing::Above(0))
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, ConfigError::InvalidOptionValue { option, .. } if option == "read_pacing"),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.starts_with("read_pacing: "), "{text}");
    assert!(text.contains("ReadPacing::Off"), "{text}");
    assert_eq!(ReadPacing::default(), ReadPacing::Above(20_000));
}

#[cfg(feature = "serde")]
#[test]
fn read_pacing_loads_from_a_config_file() {
    use tower_mqtt::ConsumerOptions;
    let load = |json: &str| serde_json::from_str::<ConsumerOptions>(json);
    assert_eq!(
        load(r#"{ "read_pacing": "off" }"#).unwrap().read_pacing,
        Some(ReadPacing::Off)
    );
    assert_eq!(
        load(r#"{ "read_pacing": 20000 }"#).unwrap().read_pacing,
        Some(ReadPacing::Above(20_000))
    );
    let err = load(r#"{ "read_pacing": "fast" }"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"off\" or a rate"), "{err}");
}
