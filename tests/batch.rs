//! The batch layer against a real broker (a private mosquitto per test): what batch
//! results do to acknowledgements and redeliveries, and that a batch never waits for
//! messages the consumer's window keeps the broker from sending.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::consumer::{builder, config, left_in_session, payloads, spawn, Ev};
use support::{publish_many, unique, with_timeout, Broker, BrokerOptions, QoS};
use tower::ServiceBuilder;
use tower_mqtt::{BoxError, ConsumerBuilder, Disposition, Message, OnFailure, QoS as Q};
use tower_mqtt_layers::batch::{Batch, BatchLayer, BatchResponse};
use tower_mqtt_layers::ServiceBuilderExt;

const WAIT: Duration = Duration::from_secs(20);

/// One message as the batch service saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    payload: String,
    dup: bool,
    connection: usize,
}

/// Every batch the batch service was called with, in call order.
#[derive(Clone, Default)]
struct Batches(Arc<Mutex<Vec<Vec<Seen>>>>);

impl Batches {
    fn record(&self, batch: &Batch<Message>) -> Vec<Seen> {
        let seen: Vec<Seen> = batch
            .iter()
            .map(|m| Seen {
                payload: String::from_utf8_lossy(m.payload()).into_owned(),
                dup: m.dup(),
                connection: m.producer_index(),
            })
            .collect();
        self.0.lock().unwrap().push(seen.clone());
        seen
    }

    fn all(&self) -> Vec<Vec<Seen>> {
        self.0.lock().unwrap().clone()
    }
}

/// A consumer of `topic` (QoS 1) whose failures are redelivered quickly.
fn redelivering(config: tower_mqtt::Config, topic: &str) -> ConsumerBuilder {
    builder(config, topic, Q::AtLeastOnce)
        .on_failure(OnFailure::Redeliver)
        .redeliver_after(Duration::from_millis(100))
}

/// A batch layer over a batch service that records each batch and answers with
/// `respond(its messages)`.
fn batching<F>(
    layer: BatchLayer<Message>,
    batches: &Batches,
    respond: F,
) -> impl tower::Service<
    Message,
    Response = (),
    Error = BoxError,
    Future = impl std::future::Future<Output = Result<(), BoxError>> + Send,
> + Clone
       + Send
       + 'static
where
    F: Fn(&[Seen]) -> Result<BatchResponse, BoxError> + Send + Sync + 'static,
{
    let batches = batches.clone();
    ServiceBuilder::new()
        .batch(layer)
        .service_fn(move |batch: Batch<Message>| {
            let result = respond(&batches.record(&batch));
            async move { result }
        })
}

fn layer(max_size: usize, max_wait: Duration) -> BatchLayer<Message> {
    BatchLayer::builder()
        .max_size(max_size)
        .max_wait(max_wait)
        .build()
        .expect("valid batch options")
}

/// What one consumer run did.
struct Outcome {
    broker: Broker,
    id: String,
    topic: String,
    batches: Vec<Vec<Seen>>,
    events: Vec<Ev>,
}

impl Outcome {
    /// The broker holds nothing for connection 0 after the consumer stopped.
    async fn assert_session_empty(&self) {
        let disconnects = self
            .broker
            .count_in_log(&format!("Client {}_0 disconnected", self.id));
        let left = left_in_session(&self.broker, &self.id, &self.topic, disconnects).await;
        assert!(left.is_empty(), "left in the session: {left:?}");
    }
}

/// Run a redelivering consumer (adjusted by `consumer`, with `connections` connections)
/// through `layer` and a batch service answering `respond`, publish `messages`, wait
/// for `successes` successful calls, stop.
async fn run<F>(
    layer: BatchLayer<Message>,
    consumer: impl FnOnce(ConsumerBuilder) -> ConsumerBuilder,
    connections: usize,
    messages: Vec<Vec<u8>>,
    successes: usize,
    respond: F,
) -> Outcome
where
    F: Fn(&[Seen]) -> Result<BatchResponse, BoxError> + Send + Sync + 'static,
{
    let broker = Broker::start(BrokerOptions::default());
    let (id, topic) = (unique("batch"), unique("t"));
    let batches = Batches::default();
    let service = batching(layer, &batches, respond);
    let running = spawn(
        consumer(redelivering(config(&broker, &id), &topic)),
        service,
    );
    running.events.wait_subscribed(connections, 1).await;
    publish_many(&broker, &topic, QoS::AtLeastOnce, messages).await;
    running.events.wait_successes(successes, WAIT).await;
    let events = running.events.all();
    running.stop().await.expect("a clean shutdown");
    Outcome {
        broker,
        id,
        topic,
        batches: batches.all(),
        events,
    }
}

fn all_succeed(_: &[Seen]) -> Result<BatchResponse, BoxError> {
    Ok(BatchResponse::new())
}

fn sorted(seen: &[Seen]) -> Vec<String> {
    let mut payloads: Vec<String> = seen.iter().map(|s| s.payload.clone()).collect();
    payloads.sort();
    payloads
}

/// The first call of the batch service fails the whole batch: every message of it is
/// redelivered (DUP), comes back as one batch, succeeds, and the session holds nothing
/// afterwards.
#[tokio::test]
async fn a_batch_that_fails_is_redelivered_whole_and_then_succeeds() {
    with_timeout(Duration::from_secs(60), async {
        let calls = Arc::new(Mutex::new(0));
        let respond = move |_: &[Seen]| {
            let mut calls = calls.lock().unwrap();
            *calls += 1;
            if *calls == 1 {
                return Err("database down".into());
            }
            Ok(BatchResponse::new())
        };
        let layer = layer(5, Duration::from_secs(60));
        let out = run(layer, |b| b, 1, payloads("m", 5), 5, respond).await;

        let all = &out.batches;
        assert_eq!(all.len(), 2, "{all:#?}");
        assert_eq!(sorted(&all[0]), sorted(&all[1]), "the same messages, whole");
        assert!(all[0].iter().all(|s| !s.dup), "{all:#?}");
        assert!(all[1].iter().all(|s| s.dup), "redelivered: {all:#?}");
        let withheld = out
            .events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Ev::Ack {
                        disposition: Disposition::Redeliver,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(withheld, 5, "{:#?}", out.events);
        out.assert_session_empty().await;
    })
    .await;
}

/// A `BatchResponse` that fails two messages of six: the four others are acknowledged
/// and never come back, the two are redelivered (in a batch of their own) and then
/// succeed; the session holds nothing afterwards.
#[tokio::test]
async fn per_message_results_acknowledge_the_good_and_redeliver_the_bad() {
    with_timeout(Duration::from_secs(60), async {
        let respond = |seen: &[Seen]| {
            let mut response = BatchResponse::new();
            for (i, s) in seen.iter().enumerate() {
                if s.payload.starts_with("bad") && !s.dup {
                    response = response.fail(i, "constraint violated");
                }
            }
            Ok(response)
        };
        let messages = ["good-0", "bad-1", "good-2", "good-3", "bad-4", "good-5"];
        let messages = messages.iter().map(|m| m.as_bytes().to_vec()).collect();
        let layer = layer(6, Duration::from_millis(200));
        let out = run(layer, |b| b, 1, messages, 6, respond).await;

        let all = &out.batches;
        assert_eq!(all.len(), 2, "{all:#?}");
        assert_eq!(all[0].len(), 6);
        assert_eq!(
            sorted(&all[1]),
            ["bad-1", "bad-4"],
            "only the bad come back"
        );
        assert!(all[1].iter().all(|s| s.dup));
        out.assert_session_empty().await;
    })
    .await;
}

/// `max_inflight(10)` and `max_size(100)`: the broker never sends an 11th message while
/// ten wait in a batch, so every batch is flushed at ten, by the window. `max_wait` is a
/// minute and the test must finish in far less, so no batch waited for its timer.
#[tokio::test]
async fn a_batch_never_waits_for_its_timer_when_the_window_is_smaller_than_max_size() {
    with_timeout(Duration::from_secs(40), async {
        let layer = layer(100, Duration::from_secs(60));
        let window = |b: ConsumerBuilder| b.max_inflight(10);
        let out = run(layer, window, 1, payloads("w", 50), 50, all_succeed).await;

        let sizes: Vec<usize> = out.batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, [10; 5], "every batch flushed at the window");
    })
    .await;
}

/// Two connections in a shared group, five messages each at most: batches of ten hold
/// messages of both connections (the batcher is shared by the clones of the stack).
#[tokio::test]
async fn batches_span_the_connections_of_the_consumer() {
    with_timeout(Duration::from_secs(40), async {
        let layer = layer(10, Duration::from_secs(60));
        let group = |b: ConsumerBuilder| b.shared_group("batchers").concurrency(2).max_inflight(5);
        let out = run(layer, group, 2, payloads("s", 40), 40, all_succeed).await;

        let all = &out.batches;
        assert_eq!(all.iter().map(Vec::len).collect::<Vec<_>>(), [10; 4]);
        for batch in all {
            for connection in [0, 1] {
                assert!(
                    batch.iter().any(|s| s.connection == connection),
                    "connection {connection} in every batch: {all:#?}"
                );
            }
        }
    })
    .await;
}
