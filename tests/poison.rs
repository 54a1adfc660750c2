//! Poison messages across redeliveries, against a real mosquitto: the consumer counts
//! a failed message's deliveries (`Message::delivery_count`) across the connections of
//! its slot, and `tower-mqtt-layers`' `max_deliveries(n)` stops it after `n`.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::consumer::{builder, config, left_in_session, rqos, spawn, Ev};
use support::proxy::{ack_reasons, Proxy};
use support::{publish_many, unique, with_timeout, Broker, BrokerOptions};
use tower::{service_fn, ServiceBuilder};
use tower_mqtt::{
    BoxError, Disposition, DownReason, Message, OnFailure, ProtoVer, QoS as Q, Status,
};
use tower_mqtt_layers::ServiceBuilderExt;

/// How long a wait for consumer events may take.
const WAIT: Duration = Duration::from_secs(30);

/// What the service saw of one call: payload, delivery count, DUP flag.
type Seen = Arc<Mutex<Vec<(String, u32, bool)>>>;

/// Record a call of the service; returns the payload as text.
fn record(seen: &Seen, m: &Message) -> String {
    let payload = String::from_utf8_lossy(m.payload()).into_owned();
    seen.lock()
        .unwrap()
        .push((payload.clone(), m.delivery_count(), m.dup()));
    payload
}

/// The counts the service saw for `payload`, in call order.
fn counts(seen: &Seen, payload: &str) -> Vec<(u32, bool)> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|(p, _, _)| p == payload)
        .map(|(_, count, dup)| (*count, *dup))
        .collect()
}

fn is_redelivery(e: &Ev) -> bool {
    matches!(e, Ev::Down(_, DownReason::Redelivery { .. }))
}

/// Whether `e` is the decision `disposition` for a message.
fn decided(e: &Ev, disposition: Disposition) -> bool {
    matches!(e, Ev::Ack { disposition: d, .. } if *d == disposition)
}

/// A message that always fails, under the default `OnFailure::Redeliver`, with
/// `max_deliveries(LIMIT)`: the service sees it with delivery counts 1..=LIMIT in order,
/// each on a new connection of the slot (one redelivery cycle each); delivery LIMIT + 1
/// does not reach the service and is acknowledged as failed (MQTT 5: reason 0x80 on the
/// wire), so the session holds nothing afterwards. A message published before it and
/// one published after it are processed once, with count 1.
async fn a_poison_message_stops_after_its_limit(qos: Q, proto: ProtoVer) {
    const LIMIT: u32 = 4;
    let broker = Broker::start(BrokerOptions::default());
    let proxy = Proxy::start(broker.port()).await;
    let (id, topic) = (unique("poison"), unique("t"));
    let seen = Seen::default();
    let s = seen.clone();
    let svc = ServiceBuilder::new()
        .max_deliveries(LIMIT)
        .expect("a limit above 0")
        .service_fn(move |m: Message| {
            let poison = record(&s, &m) == "poison";
            async move {
                if poison {
                    Err::<(), BoxError>("this message can never be stored".into())
                } else {
                    Ok(())
                }
            }
        });
    let config = config(&broker, &id).port(proxy.port()).proto_ver(proto);
    let running = spawn(
        builder(config, &topic, qos)
            .on_failure(OnFailure::Redeliver)
            .redeliver_after(Duration::from_millis(100)),
        svc,
    );
    running.events.wait_subscribed(1, 1).await;

    publish_many(&broker, &topic, rqos(qos), [b"before".to_vec()]).await;
    running.events.wait_successes(1, WAIT).await;
    publish_many(&broker, &topic, rqos(qos), [b"poison".to_vec()]).await;
    let rejected = |e: &Ev| decided(e, Disposition::Reject);
    running.events.wait(WAIT, rejected).await;
    // The slot goes on: a later message is a first delivery again.
    publish_many(&broker, &topic, rqos(qos), [b"after".to_vec()]).await;
    running.events.wait_successes(2, WAIT).await;
    let events = running.events.all();
    running.stop().await.expect("a clean shutdown");

    // Deliveries 1..=LIMIT reached the service, in order; the first without DUP.
    let expected: Vec<(u32, bool)> = (1..=LIMIT).map(|n| (n, n > 1)).collect();
    assert_eq!(counts(&seen, "poison"), expected, "{events:#?}");
    assert_eq!(counts(&seen, "before"), [(1, false)]);
    assert_eq!(counts(&seen, "after"), [(1, false)]);

    // Each failure came back through one session resume, with the same packet id.
    let cycles = events.iter().filter(|e| is_redelivery(e)).count();
    assert_eq!(cycles, LIMIT as usize, "{events:#?}");
    let poison_pkids: Vec<(u16, bool)> = events
        .iter()
        .filter_map(|e| match e {
            Ev::Start { pkid, dup, .. } => Some((*pkid, *dup)),
            _ => None,
        })
        .skip(1) // "before"
        .take(LIMIT as usize + 1)
        .collect();
    assert_eq!(poison_pkids.len(), LIMIT as usize + 1, "{events:#?}");
    let pkid = poison_pkids[0].0;
    assert!(
        poison_pkids
            .iter()
            .enumerate()
            .all(|(i, &(p, dup))| p == pkid && dup == (i > 0)),
        "the broker resends with the same packet id and DUP set: {poison_pkids:?}"
    );
    let redelivered = events
        .iter()
        .filter(|e| decided(e, Disposition::Redeliver))
        .count();
    assert_eq!(redelivered, LIMIT as usize, "{events:#?}");
    // Stopped without a call: its result is a failure.
    let stopped: Vec<&Ev> = events.iter().filter(|e| rejected(e)).collect();
    assert!(
        matches!(
            stopped[..],
            [Ev::Ack {
                status: Status::Failure,
                ..
            }]
        ),
        "{stopped:?}"
    );

    // On the wire: the last connection acknowledged the poison message as failed.
    let recordings = proxy.recordings();
    assert_eq!(
        recordings.len(),
        LIMIT as usize + 1,
        "one connection per delivery"
    );
    let last_acks = ack_reasons(recordings.last().unwrap());
    let reason = if proto == ProtoVer::V5 { 0x80 } else { 0x00 };
    assert!(
        last_acks.contains(&(pkid, reason)),
        "{last_acks:x?} (poison: packet id {pkid})"
    );
    for rec in &recordings[..LIMIT as usize] {
        assert!(
            !ack_reasons(rec).iter().any(|&(p, _)| p == pkid),
            "acknowledged before its limit: {:x?}",
            ack_reasons(rec)
        );
    }

    // Each resume closed its connection with a DISCONNECT, then the shutdown did.
    let left = left_in_session(&broker, &id, &topic, cycles + 1).await;
    assert!(
        left.is_empty(),
        "{} message(s) left in the session: {left:?}",
        left.len()
    );
}

#[tokio::test]
async fn a_poison_message_is_counted_and_stopped_after_its_limit_mqtt5_qos1() {
    with_timeout(
        Duration::from_secs(90),
        a_poison_message_stops_after_its_limit(Q::AtLeastOnce, ProtoVer::V5),
    )
    .await;
}

#[tokio::test]
async fn a_poison_message_is_counted_and_stopped_after_its_limit_mqtt311_qos1() {
    with_timeout(
        Duration::from_secs(90),
        a_poison_message_stops_after_its_limit(Q::AtLeastOnce, ProtoVer::V4),
    )
    .await;
}

#[tokio::test]
async fn a_poison_message_is_counted_and_stopped_after_its_limit_mqtt5_qos2() {
    with_timeout(
        Duration::from_secs(90),
        a_poison_message_stops_after_its_limit(Q::ExactlyOnce, ProtoVer::V5),
    )
    .await;
}

#[tokio::test]
async fn a_poison_message_is_counted_and_stopped_after_its_limit_mqtt311_qos2() {
    with_timeout(
        Duration::from_secs(90),
        a_poison_message_stops_after_its_limit(Q::ExactlyOnce, ProtoVer::V4),
    )
    .await;
}

/// The count lives in the consumer's memory: a message left unacknowledged by one
/// consumer comes back to the next one (same client id, resumed session) with DUP set,
/// and counts 2 there, since the broker says it was sent before; when it fails again
/// there and comes back once more, it counts 3.
#[tokio::test]
async fn a_new_consumer_counts_a_redelivered_message_from_two() {
    with_timeout(Duration::from_secs(90), async {
        let broker = Broker::start(BrokerOptions::default());
        let (id, topic) = (unique("poison-restart"), unique("t"));
        let failing = |seen: &Seen, fail_until: u32| {
            let seen = seen.clone();
            service_fn(move |m: Message| {
                record(&seen, &m);
                let count = m.delivery_count();
                async move {
                    if count < fail_until {
                        Err::<(), BoxError>("not yet".into())
                    } else {
                        Ok(())
                    }
                }
            })
        };

        // The first consumer leaves the message unacknowledged (Noop) and stops.
        let first_seen = Seen::default();
        let first = spawn(
            builder(config(&broker, &id), &topic, Q::AtLeastOnce).on_failure(OnFailure::Noop),
            failing(&first_seen, u32::MAX),
        );
        first.events.wait_subscribed(1, 1).await;
        publish_many(&broker, &topic, rqos(Q::AtLeastOnce), [b"m".to_vec()]).await;
        first
            .events
            .wait(WAIT, |e| decided(e, Disposition::Leave))
            .await;
        first.stop().await.expect("a clean shutdown");
        assert_eq!(counts(&first_seen, "m"), [(1, false)]);
        broker
            .wait_for_log(&format!("Client {id}_0 disconnected"), WAIT)
            .await;

        // The next consumer: 2 (nothing remembered, DUP set), fails, comes back as 3.
        let second_seen = Seen::default();
        let second = spawn(
            builder(config(&broker, &id), &topic, Q::AtLeastOnce)
                .redeliver_after(Duration::from_millis(100)),
            failing(&second_seen, 3),
        );
        second.events.wait_successes(1, WAIT).await;
        second.stop().await.expect("a clean shutdown");
        assert_eq!(counts(&second_seen, "m"), [(2, true), (3, true)]);
        // Two clean DISCONNECTs before (first consumer, second's redelivery), then
        // the shutdown's.
        assert!(left_in_session(&broker, &id, &topic, 3).await.is_empty());
    })
    .await;
}
