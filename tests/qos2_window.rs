//! QoS 2 through mosquitto's default in-flight window (`max_inflight_messages 20`).
//!
//! mosquitto 2.0.11 was thought to stall QoS 2 deliveries behind a limited window for
//! good. Measured here it does not, with MQTT 3.1.1 and 5, a live stream and a drained
//! backlog: every message arrives, once. What mosquitto 2.0.11 refuses is a QoS 2
//! *publisher* with more exchanges open than it counts as its window (PUBREC 0x97
//! Quota Exceeded; a 3.1.1 client is then disconnected), which is what looked like a
//! stall on the receiving side (see the README's broker notes).

mod support;

use std::time::Duration;

use support::consumer::*;
use support::*;
use tower::service_fn;
use tower_mqtt::{BoxError, Message, ProtoVer, QoS as Q};

/// Messages per test.
const N: usize = 2_000;

fn consume(broker: &Broker, id: &str, topic: &str, v5: bool, processed: &Processed) -> Running {
    let p = processed.clone();
    let svc = service_fn(move |m: Message| {
        p.record(m.payload());
        async { Ok::<_, BoxError>(()) }
    });
    let config = if v5 {
        // Receive Maximum 20: the broker's own window, from the client's side too.
        config(broker, id).proto_ver(ProtoVer::V5)
    } else {
        config(broker, id)
    };
    spawn(builder(config, topic, Q::ExactlyOnce).max_inflight(20), svc)
}

/// Publish `N` QoS 2 messages, either while the consumer runs (`backlog == false`) or
/// while it is away (it then resumes its session and drains the backlog); every one is
/// processed exactly once.
async fn everything_arrives(v5: bool, backlog: bool) {
    let broker = Broker::start(BrokerOptions::default());
    assert_eq!(
        broker.options().max_inflight_messages,
        None,
        "mosquitto's default window"
    );
    let (id, topic) = (unique("q2w"), unique("q2w-t"));
    let processed = Processed::default();
    let first = consume(&broker, &id, &topic, v5, &processed);
    first.events.wait_subscribed(1, 1).await;
    let live = if backlog {
        first.stop().await.unwrap();
        None
    } else {
        Some(first)
    };
    publish_many_within(
        &broker,
        &topic,
        rqos(Q::ExactlyOnce),
        payloads("q2", N),
        Duration::from_secs(60),
    )
    .await;
    let running = match live {
        Some(running) => running,
        None => consume(&broker, &id, &topic, v5, &processed),
    };
    running
        .events
        .wait_successes(N, Duration::from_secs(60))
        .await;
    assert_eq!(processed.distinct(), N);
    assert!(
        processed.duplicates().is_empty(),
        "processed twice: {:?}",
        processed.duplicates()
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn qos2_live_stream_passes_the_default_window_v4() {
    with_timeout(Duration::from_secs(120), everything_arrives(false, false)).await;
}

#[tokio::test]
async fn qos2_live_stream_passes_the_default_window_v5() {
    with_timeout(Duration::from_secs(120), everything_arrives(true, false)).await;
}

#[tokio::test]
async fn qos2_backlog_drains_through_the_default_window_v4() {
    with_timeout(Duration::from_secs(120), everything_arrives(false, true)).await;
}

#[tokio::test]
async fn qos2_backlog_drains_through_the_default_window_v5() {
    with_timeout(Duration::from_secs(120), everything_arrives(true, true)).await;
}
