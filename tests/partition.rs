//! Per-key ordering (`tower-mqtt-layers`, feature `partition`) against a real broker: a
//! private mosquitto per test.

mod support;

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::consumer::{builder, config, spawn};
use support::{publish_many_within, unique, with_timeout, Broker, BrokerOptions, QoS};
use tower::ServiceBuilder;
use tower_mqtt::{BoxError, Message, QoS as Q};
use tower_mqtt_layers::ServiceBuilderExt;

/// What the handler saw.
#[derive(Clone, Default)]
struct Seen {
    /// Sequence numbers per key (topic), in the order their calls finished.
    finished: Arc<Mutex<HashMap<String, Vec<usize>>>>,
    /// Calls per key in progress now.
    running: Arc<Mutex<HashMap<String, usize>>>,
    /// Calls that started while another call of their key was running.
    overlaps: Arc<AtomicUsize>,
    /// The most keys that had a call in progress at once.
    peak_keys: Arc<AtomicUsize>,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

/// A handler that takes 0 to 3 ms, shuffled per message, and records its message's
/// key (the topic) and sequence number (the payload) when it finishes.
fn handler(seen: &Seen) -> impl Fn(Message) -> BoxFuture + Clone {
    let seen = seen.clone();
    let seed = RandomState::new();
    move |m: Message| {
        let seen = seen.clone();
        let latency = Duration::from_micros(seed.hash_one(m.payload()) % 3_000);
        Box::pin(async move {
            let key = m.topic().to_owned();
            let seq: usize = std::str::from_utf8(m.payload())?.parse()?;
            let before = {
                let mut running = seen.running.lock().unwrap();
                let n = running.entry(key.clone()).or_default();
                *n += 1;
                let before = *n - 1;
                let keys = running.values().filter(|n| **n > 0).count();
                seen.peak_keys.fetch_max(keys, Ordering::Relaxed);
                before
            };
            if before > 0 {
                seen.overlaps.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(latency).await;
            *seen.running.lock().unwrap().get_mut(&key).unwrap() -= 1;
            seen.finished
                .lock()
                .unwrap()
                .entry(key)
                .or_default()
                .push(seq);
            Ok(())
        })
    }
}

/// Publishes `per_key` messages `0..per_key` to each of `keys` topics under `base`,
/// every key from its own publisher, all at once; returns the topics.
async fn publish_keys(broker: &Broker, base: &str, keys: usize, per_key: usize) -> Vec<String> {
    let topics: Vec<String> = (0..keys).map(|k| format!("{base}/k{k}")).collect();
    let publishers = topics.iter().map(|topic| {
        let payloads = (0..per_key).map(|i| i.to_string().into_bytes());
        publish_many_within(
            broker,
            topic,
            QoS::AtLeastOnce,
            payloads,
            Duration::from_secs(60),
        )
    });
    futures_util::future::join_all(publishers).await;
    topics
}

/// The consumer with `builder`'s options runs `service` until it has processed `per_key`
/// messages on each of `keys` topics; returns the topics.
async fn run_keys<S>(broker: &Broker, service: S, keys: usize, per_key: usize) -> Vec<String>
where
    S: tower::Service<Message, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let (id, base) = (unique("partition"), unique("p"));
    let running = spawn(
        builder(config(broker, &id), &format!("{base}/+"), Q::AtLeastOnce).max_inflight(100),
        service,
    );
    running.events.wait_subscribed(1, 1).await;
    let topics = publish_keys(broker, &base, keys, per_key).await;
    running
        .events
        .wait_successes(keys * per_key, Duration::from_secs(90))
        .await;
    running.stop().await.expect("a clean shutdown");
    topics
}

/// Per-key order holds exactly across 10,000 messages on 50 keys whose calls take
/// shuffled times, with up to 100 calls in flight at once.
#[tokio::test]
async fn per_key_order_is_preserved_under_shuffled_latencies() {
    with_timeout(Duration::from_secs(120), async {
        let broker = Broker::start(BrokerOptions::default());
        let (keys, per_key) = (50, 200);
        let seen = Seen::default();
        let service = ServiceBuilder::new()
            .partition_by(|m: &Message| m.topic().to_owned())
            .service_fn(handler(&seen));
        let topics = run_keys(&broker, service, keys, per_key).await;

        let finished = seen.finished.lock().unwrap();
        let expected: Vec<usize> = (0..per_key).collect();
        for topic in &topics {
            assert_eq!(finished[topic], expected, "order of {topic}");
        }
        assert_eq!(
            seen.overlaps.load(Ordering::Relaxed),
            0,
            "calls of one key overlapped"
        );
        // Keys did run concurrently.
        assert!(seen.peak_keys.load(Ordering::Relaxed) > 1);
    })
    .await;
}

/// The control: without the layer the same handler finishes messages of one key out of
/// order and overlapping, so the test above would notice a broken partition.
#[tokio::test]
async fn without_the_layer_the_order_is_lost() {
    with_timeout(Duration::from_secs(120), async {
        let broker = Broker::start(BrokerOptions::default());
        let (keys, per_key) = (10, 100);
        let seen = Seen::default();
        let service = ServiceBuilder::new().service_fn(handler(&seen));
        let topics = run_keys(&broker, service, keys, per_key).await;

        let finished = seen.finished.lock().unwrap();
        let expected: Vec<usize> = (0..per_key).collect();
        let out_of_order = topics.iter().filter(|t| finished[*t] != expected).count();
        assert!(out_of_order > 0, "every key in order without the layer");
        assert!(seen.overlaps.load(Ordering::Relaxed) > 0);
    })
    .await;
}
