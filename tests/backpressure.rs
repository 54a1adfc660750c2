//! Each connection holds at most `max_inflight` messages: concurrent service calls
//! plus acknowledgements waiting behind an earlier message. Beyond that it stops
//! reading, whatever the QoS and whatever the broker sends.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::consumer::*;
use support::*;
use tokio::sync::Notify;
use tower::service_fn;
use tower_mqtt::{BoxError, Message, ProtoVer, QoS as Q};

async fn calls_never_exceed_max_inflight(qos: Q, proto: ProtoVer) {
    let broker = Broker::start(BrokerOptions::default());
    let id = unique("bp");
    let topic = unique("t");
    let (max_inflight, n) = (8, 2000);
    let current = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (c, pk) = (current.clone(), peak.clone());
    let svc = service_fn(move |_m: Message| {
        let now = c.fetch_add(1, Ordering::SeqCst) + 1;
        pk.fetch_max(now, Ordering::SeqCst);
        let c = c.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            c.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, BoxError>(())
        }
    });
    let running = spawn(
        builder(config(&broker, &id).proto_ver(proto), &topic, qos).max_inflight(max_inflight),
        svc,
    );
    running.events.wait_subscribed(1, 1).await;
    // A flood: everything is published as fast as the broker takes it.
    publish_many_within(
        &broker,
        &topic,
        rqos(qos),
        payloads("f", n),
        Duration::from_secs(60),
    )
    .await;
    running
        .events
        .wait_successes(n, Duration::from_secs(60))
        .await;
    running.stop().await.unwrap();
    let peak = peak.load(Ordering::SeqCst);
    assert!(
        peak <= max_inflight,
        "{peak} concurrent calls with max_inflight {max_inflight}"
    );
    assert!(peak >= 2, "calls do run concurrently (peak {peak})");
}

#[tokio::test]
async fn concurrent_calls_never_exceed_max_inflight_under_a_flood_at_qos0() {
    with_timeout(
        Duration::from_secs(120),
        calls_never_exceed_max_inflight(Q::AtMostOnce, ProtoVer::V4),
    )
    .await;
}

#[tokio::test]
async fn concurrent_calls_never_exceed_max_inflight_under_a_flood_at_qos1() {
    with_timeout(
        Duration::from_secs(120),
        calls_never_exceed_max_inflight(Q::AtLeastOnce, ProtoVer::V4),
    )
    .await;
}

#[tokio::test]
async fn concurrent_calls_never_exceed_max_inflight_under_a_flood_at_qos2() {
    with_timeout(
        Duration::from_secs(120),
        calls_never_exceed_max_inflight(Q::ExactlyOnce, ProtoVer::V4),
    )
    .await;
}

#[tokio::test]
async fn concurrent_calls_never_exceed_max_inflight_with_mqtt5() {
    with_timeout(
        Duration::from_secs(120),
        calls_never_exceed_max_inflight(Q::AtLeastOnce, ProtoVer::V5),
    )
    .await;
}

/// A slow message at the head holds its successors' acks; those waiting acks count
/// toward max_inflight, so no new message is taken until the slow one is decided.
#[tokio::test]
async fn acks_waiting_behind_a_slow_message_count_toward_max_inflight() {
    with_timeout(Duration::from_secs(60), async {
        let broker = Broker::start(BrokerOptions::default());
        let id = unique("held");
        let topic = unique("t");
        let release = Arc::new(Notify::new());
        let r = release.clone();
        let svc = service_fn(move |m: Message| {
            let r = r.clone();
            async move {
                if m.payload().as_ref() == b"slow" {
                    r.notified().await;
                }
                Ok::<_, BoxError>(())
            }
        });
        let running = spawn(
            builder(config(&broker, &id), &topic, Q::AtLeastOnce).max_inflight(5),
            svc,
        );
        running.events.wait_subscribed(1, 1).await;
        let mut messages = vec![b"slow".to_vec()];
        messages.extend(payloads("fast", 20));
        publish_many(&broker, &topic, rqos(Q::AtLeastOnce), messages).await;
        // Four fast messages finish but wait behind "slow": five held.
        running
            .events
            .wait_count(4, Duration::from_secs(10), |e| matches!(e, Ev::Ack { .. }))
            .await;
        // Give the consumer a chance to misbehave before releasing the slow call.
        tokio::time::sleep(Duration::from_millis(300)).await;
        release.notify_one();
        running
            .events
            .wait_count(21, Duration::from_secs(10), |e| matches!(e, Ev::Ack { .. }))
            .await;
        let log = running.events.clone();
        running.stop().await.unwrap();

        let events = log.all();
        let slow_ack = events
            .iter()
            .position(|e| matches!(e, Ev::Ack { pkid, .. } if *pkid == first_pkid(&events)))
            .expect("slow message decided");
        let sixth_start = events
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(e, Ev::Start { .. }))
            .nth(5)
            .map(|(i, _)| i)
            .expect("a sixth message started");
        assert!(
            sixth_start > slow_ack,
            "a sixth message started while five were held (event {sixth_start} before {slow_ack})"
        );
    })
    .await;
}

fn first_pkid(events: &[Ev]) -> u16 {
    events
        .iter()
        .find_map(|e| match e {
            Ev::Start { pkid, .. } => Some(*pkid),
            _ => None,
        })
        .expect("a message started")
}

/// With MQTT 5 the broker is told the same bound: Receive Maximum = max_inflight, and
/// clean_start(false) comes with a non-zero Session Expiry Interval.
#[tokio::test]
async fn mqtt5_connect_carries_receive_maximum_and_session_expiry() {
    with_timeout(Duration::from_secs(30), async {
        let broker = Broker::start(BrokerOptions::default());
        let proxy = support::proxy::Proxy::start(broker.port()).await;
        let config = config(&broker, &unique("rm"))
            .port(proxy.port())
            .proto_ver(ProtoVer::V5)
            .session_expiry(Duration::from_secs(3600));
        let running = spawn(
            builder(config, &unique("t"), Q::AtLeastOnce).max_inflight(37),
            service_fn(|_m: Message| async { Ok::<_, BoxError>(()) }),
        );
        running.events.wait_subscribed(1, 1).await;
        running.stop().await.unwrap();
        let connect = support::proxy::first_connect_v5(&proxy.recordings()[0]);
        let props = connect.properties.expect("CONNECT properties");
        assert_eq!(props.receive_maximum, Some(37));
        assert_eq!(props.session_expiry_interval, Some(3600));
        assert!(!connect.clean_start);
    })
    .await;
}

/// Every slot is busy for longer than the keepalive interval: reading stops, but
/// PINGREQs keep going out, so the broker does not drop the connection.
#[tokio::test]
async fn keepalive_continues_while_every_slot_is_busy() {
    with_timeout(Duration::from_secs(30), async {
        let broker = Broker::start(BrokerOptions::default());
        let proxy = support::proxy::Proxy::start(broker.port()).await;
        let id = unique("ka");
        let topic = unique("t");
        let config = config(&broker, &id)
            .port(proxy.port())
            .keepalive(Duration::from_secs(1));
        let running = spawn(
            builder(config, &topic, Q::AtLeastOnce).max_inflight(1),
            service_fn(|m: Message| async move {
                if m.payload().as_ref() == b"slow" {
                    // Three keepalive intervals: mosquitto drops a silent client after 1.5.
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
                Ok::<_, BoxError>(())
            }),
        );
        running.events.wait_subscribed(1, 1).await;
        publish_many(
            &broker,
            &topic,
            rqos(Q::AtLeastOnce),
            [b"slow".to_vec(), b"next".to_vec()],
        )
        .await;
        running
            .events
            .wait_successes(2, Duration::from_secs(10))
            .await;
        running.stop().await.unwrap();
        assert_eq!(
            keepalive_timeouts_in_log(&broker, &id),
            0,
            "broker never dropped the client"
        );
        assert_eq!(proxy.recordings().len(), 1, "one connection throughout");
        assert!(support::proxy::pingreqs_v4(&proxy.recordings()[0]) >= 2);
    })
    .await;
}

fn keepalive_timeouts_in_log(broker: &Broker, id: &str) -> usize {
    broker.count_in_log(&format!("Client {id}_0 has exceeded timeout"))
}
