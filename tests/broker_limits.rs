//! Broker settings that silently drop messages (issue 12 §2), on a real mosquitto.
//!
//! mosquitto 2.0.11 queues at most `max_queued_messages` (default 1000) per session
//! beyond its in-flight window, for offline sessions *and* for an online client whose
//! window is full, and throws the rest away; only its log says so, and its `$SYS`
//! counter `$SYS/broker/publish/messages/dropped` counts them.
//!
//! Every test here makes the window full on purpose: the service waits at a gate, so the
//! consumer holds `max_inflight` (= MQTT 5 Receive Maximum = the broker's window)
//! messages and acknowledges none while a burst is published. With the gate closed the
//! mechanism is exact: the broker sends the window, queues `max_queued_messages`, and
//! drops the rest. Then the gate opens and the consumer processes what the broker kept;
//! the broker's drop counter accounts for the rest.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::consumer::*;
use support::*;
use tokio::sync::{watch, Notify};
use tower::service_fn;
use tower_mqtt::{BoxError, ConsumerBuilder, Event, Message, ProtoVer, QoS as Q};

use support::consumer::Running;

/// The consumer's window, sent as Receive Maximum so the broker's window is the same.
const WINDOW: usize = 100;
/// The burst: more than `WINDOW` + mosquitto's default queue of 1000.
const BURST: usize = 3000;
/// mosquitto's default `max_queued_messages`.
const DEFAULT_QUEUE: usize = 1000;
/// Written by mosquitto (2.0.11) when it starts dropping for a client.
const DROP_LINE: &str = "Outgoing messages are being dropped for client";
/// mosquitto's broker-wide count of dropped messages.
const DROPPED_TOPIC: &str = "$SYS/broker/publish/messages/dropped";

/// Broker options: `max_queued_messages` as given (`None`: mosquitto's default) and
/// `$SYS` published every second.
fn broker_with_queue(max_queued_messages: Option<u32>) -> Broker {
    Broker::start(BrokerOptions {
        max_queued_messages,
        extra_config: "sys_interval 1\n".into(),
        ..BrokerOptions::default()
    })
}

/// What a gated burst left the consumer with.
struct Burst {
    /// Distinct messages processed.
    processed: Processed,
    /// The consumer, still running.
    running: Running,
}

impl Burst {
    async fn stop(self) {
        assert!(
            self.processed.duplicates().is_empty(),
            "nothing is processed twice (no failure, no reconnect): {:?}",
            self.processed.duplicates()
        );
        self.running
            .stop()
            .await
            .expect("the consumer stops cleanly");
    }
}

/// Runs a consumer (MQTT 5, `max_inflight(WINDOW)`, QoS 1) whose service waits at a
/// gate, publishes `BURST` messages, waits for the window to be full, opens the gate and
/// waits until `expected` distinct messages were processed; the consumer keeps running.
/// `extra` adds builder options; `before_burst` runs once the consumer is subscribed.
///
/// No end-of-stream marker: mosquitto 2.0.11 sends a message published while others
/// are queued straight into a free in-flight slot, ahead of the queue, so a marker
/// proves nothing about what came before it. The counts are checked against the
/// broker's own drop counter instead.
async fn gated_burst(
    broker: &Broker,
    id: &str,
    expected: usize,
    extra: impl FnOnce(ConsumerBuilder) -> ConsumerBuilder,
    before_burst: impl std::future::Future<Output = ()>,
) -> Burst {
    let topic = unique("burst");
    let (open, gate) = watch::channel(false);
    let processed = Processed::default();
    let progress = Arc::new(Notify::new());
    let svc = service_fn({
        let (processed, progress) = (processed.clone(), progress.clone());
        move |m: Message| {
            let (mut gate, processed, progress) =
                (gate.clone(), processed.clone(), progress.clone());
            async move {
                gate.wait_for(|open| *open).await?;
                processed.record(m.payload());
                progress.notify_waiters();
                Ok::<_, BoxError>(())
            }
        }
    });
    let config = config(broker, id).proto_ver(ProtoVer::V5);
    let consumer = extra(builder(config, &topic, Q::AtLeastOnce).max_inflight(WINDOW));
    let running = spawn(consumer, svc);
    running.events.wait_subscribed(1, 1).await;
    before_burst.await;

    publish_many_within(
        broker,
        &topic,
        QoS::AtLeastOnce,
        payloads("b", BURST),
        Duration::from_secs(60),
    )
    .await;
    // The window is full: WINDOW calls wait at the gate, nothing is acknowledged.
    running
        .events
        .wait_count(WINDOW, Duration::from_secs(20), |e| {
            matches!(e, Ev::Start { .. })
        })
        .await;
    open.send(true).expect("the service holds the gate");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let notified = progress.notified();
        if processed.distinct() >= expected {
            break;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            panic!(
                "{} of the {expected} expected messages processed within 30 s; broker log:\n{}",
                processed.distinct(),
                broker.log_tail(20)
            );
        }
    }
    Burst { processed, running }
}

/// Reads `$SYS/broker/publish/messages/dropped` with a plain subscriber until it shows
/// `expected` (the broker publishes it every `sys_interval` when it changed); returns
/// every value seen.
async fn wait_for_dropped_counter(sys: &mut Collector, expected: u64) -> Vec<u64> {
    let mut seen = Vec::new();
    while seen.last() != Some(&expected) {
        let publish = sys.wait_for(1, Duration::from_secs(10)).await.remove(0);
        let value = std::str::from_utf8(&publish.payload)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{DROPPED_TOPIC} is not a number: {publish:?}"));
        seen.push(value);
        assert!(
            value <= expected,
            "{DROPPED_TOPIC} went past {expected}: {seen:?}"
        );
    }
    seen
}

#[tokio::test]
async fn mosquitto_defaults_drop_a_burst_beyond_the_queue_for_an_online_consumer() {
    with_timeout(Duration::from_secs(120), async {
        let broker = broker_with_queue(None);
        let mut sys = subscribe_collect(&broker, DROPPED_TOPIC, QoS::AtMostOnce).await;
        let id = unique("defaults");
        let kept = WINDOW + DEFAULT_QUEUE;
        let burst = gated_burst(&broker, &id, kept, |b| b, async {}).await;

        // Every message is accounted for: kept and processed, or counted as dropped.
        let dropped = (BURST - kept) as u64;
        let seen = wait_for_dropped_counter(&mut sys, dropped).await;
        assert_eq!(
            burst.processed.distinct(),
            kept,
            "mosquitto's default max_queued_messages (1000): an online consumer with a full \
             window ({WINDOW}) gets its window plus 1000 queued messages of a \
             {BURST}-message burst; {DROPPED_TOPIC} went {seen:?}"
        );
        assert!(
            broker.log().contains(&format!("{DROP_LINE} {id}_0.")),
            "the broker log names the consumer it dropped for:\n{}",
            broker.log_tail(20)
        );
        burst.stop().await;
    })
    .await;
}

/// The fix on the broker's side: a queue that can hold the burst behind the full window.
async fn the_whole_burst_is_processed_with(max_queued_messages: u32) {
    let broker = broker_with_queue(Some(max_queued_messages));
    let id = unique("fixed");
    let burst = gated_burst(&broker, &id, BURST, |b| b, async {}).await;
    assert_eq!(
        broker.count_in_log(DROP_LINE),
        0,
        "max_queued_messages {max_queued_messages}: the broker queues the {BURST}-message \
         burst behind the full window and drops nothing:\n{}",
        broker.log_tail(20)
    );
    burst.stop().await;
}

#[tokio::test]
async fn an_unlimited_queue_delivers_every_message_of_the_burst() {
    with_timeout(
        Duration::from_secs(120),
        the_whole_burst_is_processed_with(0),
    )
    .await;
}

#[tokio::test]
async fn a_queue_as_large_as_the_burst_delivers_every_message() {
    let queue = u32::try_from(BURST).unwrap();
    with_timeout(
        Duration::from_secs(120),
        the_whole_burst_is_processed_with(queue),
    )
    .await;
}

/// One `Event::BrokerDropped`, owned.
#[derive(Debug, Clone, PartialEq)]
struct Dropped {
    client_id: String,
    dropped: u64,
    total: u64,
}

#[tokio::test]
async fn watch_broker_drops_reports_every_drop_of_the_burst() {
    with_timeout(Duration::from_secs(120), async {
        let broker = broker_with_queue(None);
        let id = unique("watched");
        let reports = Arc::new(Mutex::new(Vec::<Dropped>::new()));
        let reported = Arc::new(Notify::new());
        let record = {
            let (reports, reported) = (reports.clone(), reported.clone());
            move |e: &Event<'_>| {
                if let Event::BrokerDropped {
                    client_id,
                    dropped,
                    total,
                } = *e
                {
                    reports.lock().unwrap().push(Dropped {
                        client_id: client_id.to_owned(),
                        dropped,
                        total,
                    });
                    reported.notify_waiters();
                }
            }
        };
        // The side connection subscribes before the burst, so the drops are news to it.
        let sys_line = format!("{id}_sys 0 {DROPPED_TOPIC}");
        let sys_subscribed = broker.wait_for_log(&sys_line, Duration::from_secs(10));
        let kept = WINDOW + DEFAULT_QUEUE;
        let burst = gated_burst(
            &broker,
            &id,
            kept,
            |b| b.watch_broker_drops().on_event(record),
            sys_subscribed,
        )
        .await;

        // Updates come every sys_interval (1 s); wait for them to add up.
        let dropped = (BURST - kept) as u64;
        let sum = || -> u64 { reports.lock().unwrap().iter().map(|r| r.dropped).sum() };
        loop {
            let notified = reported.notified();
            if sum() >= dropped {
                break;
            }
            if tokio::time::timeout(Duration::from_secs(10), notified)
                .await
                .is_err()
            {
                panic!(
                    "BrokerDropped reports add up to {} of {dropped} dropped: {:?}",
                    sum(),
                    reports.lock().unwrap()
                );
            }
        }
        let reports = reports.lock().unwrap().clone();
        assert_eq!(
            sum(),
            dropped,
            "the reports add up to exactly the messages the consumer never got \
             ({BURST} published, {kept} kept): {reports:?}"
        );
        assert_eq!(
            reports.last().map(|r| r.total),
            Some(dropped),
            "total is the broker's counter since it started: {reports:?}"
        );
        assert!(
            reports.iter().all(|r| r.client_id == format!("{id}_sys")),
            "reported by the side connection <client_id>_sys: {reports:?}"
        );
        assert_eq!(burst.processed.distinct(), kept, "nothing else arrived");
        burst.stop().await;
    })
    .await;
}
