use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_mqtt::testing::test_message;
use tower_mqtt::{BoxError, Disposition, Message, Permanent, Redeliver};

use super::{Batch, BatchConfigError, BatchFailed, BatchLayer, BatchPanicked, BatchResponse};

/// What the batch service saw: when, the key, the payloads.
type Seen<K> = (Instant, K, Vec<String>);

/// A batch service that reports every batch and answers with `respond(batch)`.
fn recording<K, F>(
    respond: F,
) -> (
    impl Service<Batch<Message, K>, Response = BatchResponse, Error = BoxError, Future = impl Send>
        + Send
        + 'static,
    mpsc::UnboundedReceiver<Seen<K>>,
)
where
    K: Clone + Send + 'static,
    F: Fn(&Batch<Message, K>) -> Result<BatchResponse, BoxError> + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let svc = service_fn(move |batch: Batch<Message, K>| {
        let payloads = batch
            .iter()
            .map(|m| String::from_utf8_lossy(m.payload()).into_owned())
            .collect();
        let _ = tx.send((Instant::now(), batch.key().clone(), payloads));
        let result = respond(&batch);
        async move { result }
    });
    (svc, rx)
}

fn all_ok<K>(_: &Batch<Message, K>) -> Result<BatchResponse, BoxError> {
    Ok(BatchResponse::new())
}

fn msg(topic: &str, payload: &str) -> Message {
    test_message(topic, payload.to_owned())
}

/// Call the batcher for each `(topic, payload)`; the futures are returned unpolled
/// (the worker does not need them polled to batch).
fn send<S>(svc: &mut S, messages: &[(&str, &str)]) -> Vec<S::Future>
where
    S: Service<Message>,
{
    messages.iter().map(|(t, p)| svc.call(msg(t, p))).collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

const LONG: Duration = Duration::from_secs(3600);

/// Batches of up to `max_size`, one per topic, flushed by size or window only.
fn by_topic(max_size: usize) -> BatchLayer<Message, String> {
    BatchLayer::builder()
        .max_size(max_size)
        .max_wait(LONG)
        .batch_key(|m: &Message| m.topic().to_owned())
        .build()
        .unwrap()
}

/// Batches of up to `max_size`, flushed by size or window only.
fn by_size(max_size: usize) -> BatchLayer<Message> {
    BatchLayer::builder()
        .max_size(max_size)
        .max_wait(LONG)
        .build()
        .unwrap()
}

/// Every call succeeds.
async fn all_succeed<F>(calls: impl IntoIterator<Item = F>)
where
    F: std::future::Future<Output = Result<(), BoxError>>,
{
    for call in calls {
        call.await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_batch_is_flushed_when_it_reaches_max_size() {
    let (inner, mut batches) = recording(all_ok);
    let mut svc = by_size(3).layer(inner);
    let start = Instant::now();
    let calls = send(&mut svc, &[("t", "a"), ("t", "b")]);
    assert!(
        tokio::time::timeout(Duration::from_secs(60), batches.recv())
            .await
            .is_err(),
        "two of three: no batch yet"
    );
    let mut more = send(&mut svc, &[("t", "c"), ("t", "d")]);
    let (at, (), payloads) = batches.recv().await.unwrap();
    assert_eq!(payloads, strings(&["a", "b", "c"]));
    assert_eq!(
        at - start,
        Duration::from_secs(60),
        "flushed by size at once"
    );
    all_succeed(calls.into_iter().chain(more.drain(..1))).await;
}

#[tokio::test(start_paused = true)]
async fn a_batch_is_flushed_when_max_wait_has_passed_since_its_first_message() {
    let (inner, mut batches) = recording(all_ok);
    let layer = BatchLayer::builder()
        .max_size(10)
        .max_wait(Duration::from_millis(100))
        .build()
        .unwrap();
    let mut svc = layer.layer(inner);
    let start = Instant::now();
    let first = send(&mut svc, &[("t", "a")]);
    tokio::time::sleep(Duration::from_millis(40)).await;
    let second = send(&mut svc, &[("t", "b")]);
    let (at, (), payloads) = batches.recv().await.unwrap();
    assert_eq!(payloads, strings(&["a", "b"]));
    assert_eq!(
        at - start,
        Duration::from_millis(100),
        "max_wait after the first"
    );
    all_succeed(first.into_iter().chain(second)).await;
    // The next batch has a timer of its own.
    let start = Instant::now();
    let third = send(&mut svc, &[("t", "c")]);
    let (at, (), payloads) = batches.recv().await.unwrap();
    assert_eq!(payloads, strings(&["c"]));
    assert_eq!(at - start, Duration::from_millis(100));
    all_succeed(third).await;
}

#[tokio::test(start_paused = true)]
async fn each_key_has_its_own_batch_and_the_service_sees_the_key() {
    let (inner, mut batches) = recording(all_ok);
    let mut svc = by_topic(2).layer(inner);
    let calls = send(
        &mut svc,
        &[("a", "a1"), ("b", "b1"), ("a", "a2"), ("b", "b2")],
    );
    let (_, key, payloads) = batches.recv().await.unwrap();
    assert_eq!((key.as_str(), payloads), ("a", strings(&["a1", "a2"])));
    let (_, key, payloads) = batches.recv().await.unwrap();
    assert_eq!((key.as_str(), payloads), ("b", strings(&["b1", "b2"])));
    all_succeed(calls).await;
}

#[tokio::test(start_paused = true)]
async fn at_most_concurrency_batches_are_in_the_service_at_once() {
    let (now, most, calls) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let (n, m, c) = (now.clone(), most.clone(), calls.clone());
    let inner = service_fn(move |_: Batch<Message>| {
        let (n, m) = (n.clone(), m.clone());
        c.fetch_add(1, Ordering::SeqCst);
        let running = n.fetch_add(1, Ordering::SeqCst) + 1;
        m.fetch_max(running, Ordering::SeqCst);
        async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            n.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, BoxError>(())
        }
    });
    let layer = BatchLayer::builder()
        .max_size(1)
        .concurrency(2)
        .build()
        .unwrap();
    let mut svc = layer.layer(inner);
    let start = Instant::now();
    let messages: Vec<(&str, &str)> = (0..6).map(|_| ("t", "x")).collect();
    all_succeed(send(&mut svc, &messages)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 6);
    assert_eq!(most.load(Ordering::SeqCst), 2, "two at once, never more");
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(30),
        "three rounds of two"
    );
}

#[tokio::test(start_paused = true)]
async fn each_message_gets_its_own_result_and_a_failed_batch_fails_every_message() {
    let (inner, mut batches) =
        recording(
            |batch: &Batch<Message>| match batch.items()[0].payload().as_ref() {
                b"per-message" => Ok(BatchResponse::new()
                    .fail(1, "row locked")
                    .fail(2, Permanent::new("constraint violated"))),
                b"whole" => Err(Redeliver::new("database down").into()),
                _ => panic!("the batch service panics"),
            },
        );
    let mut svc = by_size(3).layer(inner);
    let dispositions = |results: Vec<Result<(), BoxError>>| -> Vec<Disposition> {
        let origin = msg("t", "").origin_shared();
        results.iter().map(|r| origin.disposition(r)).collect()
    };
    let run = |svc: &mut _, first: &'static str| {
        let calls = send(svc, &[("t", first), ("t", "1"), ("t", "2")]);
        futures_util::future::join_all(calls)
    };

    let results = run(&mut svc, "per-message").await;
    assert_eq!(results[1].as_ref().unwrap_err().to_string(), "row locked");
    assert_eq!(
        dispositions(results),
        [
            Disposition::Ack,
            Disposition::Redeliver,
            Disposition::Reject
        ]
    );

    let results = run(&mut svc, "whole").await;
    for (i, r) in results.iter().enumerate() {
        let failed = r
            .as_ref()
            .unwrap_err()
            .downcast_ref::<BatchFailed>()
            .unwrap();
        assert_eq!((failed.batch_size(), failed.index()), (3, i));
        assert!(failed.to_string().contains("database down"), "{failed}");
    }
    assert_eq!(
        dispositions(results),
        [Disposition::Redeliver; 3],
        "the marker applies to each"
    );

    let results = run(&mut svc, "panic").await;
    for r in &results {
        let failed = r
            .as_ref()
            .unwrap_err()
            .downcast_ref::<BatchFailed>()
            .unwrap();
        let cause = std::error::Error::source(failed).unwrap();
        assert!(cause.is::<BatchPanicked>(), "{cause}");
        assert!(cause.to_string().contains("the batch service panics"));
    }
    // The batcher lives on after the panic.
    assert_eq!(batches.recv().await.unwrap().2.len(), 3);
    assert_eq!(batches.recv().await.unwrap().2.len(), 3);
    assert_eq!(batches.recv().await.unwrap().2.len(), 3);
    let results = run(&mut svc, "per-message").await;
    assert!(results[0].is_ok());
}

/// `test_message` comes from a consumer with `max_inflight` 100 and one connection: a
/// batch never waits for a 101st message, whatever `max_size` says.
#[tokio::test(start_paused = true)]
async fn a_batch_is_flushed_at_the_window_when_max_size_is_larger() {
    let (inner, mut batches) = recording(all_ok);
    let mut svc = by_size(500).layer(inner);
    let start = Instant::now();
    let window: Vec<(&str, &str)> = (0..100).map(|_| ("t", "x")).collect();
    for _ in 0..2 {
        // As the consumer does: no more than the window until some are decided.
        let calls = send(&mut svc, &window);
        let (at, (), payloads) = batches.recv().await.unwrap();
        assert_eq!(payloads.len(), 100, "capped at max_inflight × connections");
        assert_eq!(at, start, "by size, not by the timer");
        all_succeed(calls).await;
    }
    // 50: below the window, so they may still be joined by others and wait for max_wait.
    let calls = send(&mut svc, &window[..50]);
    let (at, (), payloads) = batches.recv().await.unwrap();
    assert_eq!((payloads.len(), at - start), (50, LONG));
    all_succeed(calls).await;
}

/// Two keys share the window: 50 + 50 messages fill it, and neither batch could ever
/// reach `max_size`, so both are flushed at once.
#[tokio::test(start_paused = true)]
async fn every_open_batch_is_flushed_when_the_connections_hold_their_whole_window() {
    let (inner, mut batches) = recording(all_ok);
    let mut svc = by_topic(100).layer(inner);
    let start = Instant::now();
    let messages: Vec<(&str, &str)> = (0..100)
        .map(|i| (if i % 2 == 0 { "a" } else { "b" }, "x"))
        .collect();
    let calls = send(&mut svc, &messages);
    let mut keys = Vec::new();
    for _ in 0..2 {
        let (at, key, payloads) = batches.recv().await.unwrap();
        assert_eq!((payloads.len(), at), (50, start));
        keys.push(key);
    }
    assert_eq!(keys, ["a", "b"], "in the order they were opened");
    all_succeed(calls).await;
}

#[test]
fn options_that_cannot_work_are_typed_errors_naming_the_option() {
    let zero = BatchLayer::<Message>::builder().max_size(0).build();
    assert_eq!(zero.unwrap_err(), BatchConfigError::ZeroMaxSize);
    assert!(BatchConfigError::ZeroMaxSize
        .to_string()
        .contains("`max_size`"));
    let zero = BatchLayer::<Message>::builder().concurrency(0).build();
    assert_eq!(zero.unwrap_err(), BatchConfigError::ZeroConcurrency);
    assert!(BatchConfigError::ZeroConcurrency
        .to_string()
        .contains("`concurrency`"));
}

/// Used the way the consumer uses it: `ready` then `call`, cloned per connection.
#[tokio::test(start_paused = true)]
async fn clones_feed_the_same_batches() {
    let (inner, mut batches) = recording(all_ok);
    let svc = by_size(2).layer(inner);
    let a = svc.clone().oneshot(msg("t", "from-a"));
    let b = svc.clone().oneshot(msg("t", "from-b"));
    drop(svc);
    let (ra, rb) = tokio::join!(a, b);
    ra.unwrap();
    rb.unwrap();
    assert_eq!(
        batches.recv().await.unwrap().2,
        strings(&["from-a", "from-b"])
    );
}

/// Messages already decided still hold their places while an older message of their
/// connection sits in an open batch (their acks wait behind it): the batch of that
/// older message is flushed when the window is full, not at its `max_wait`.
#[tokio::test(start_paused = true)]
async fn decided_messages_waiting_behind_an_open_batch_count_against_the_window() {
    let (inner, mut batches) = recording(all_ok);
    let mut svc = by_topic(10).layer(inner);
    let start = Instant::now();
    let oldest = send(&mut svc, &[("slow", "first")]);
    let ten: Vec<(&str, &str)> = (0..10).map(|_| ("busy", "x")).collect();
    for _ in 0..9 {
        all_succeed(send(&mut svc, &ten)).await;
        assert_eq!(batches.recv().await.unwrap().1, "busy");
    }
    let last = send(&mut svc, &ten[..9]);
    let mut seen: Vec<(String, usize)> = Vec::new();
    for _ in 0..2 {
        let (at, key, payloads) = batches.recv().await.unwrap();
        assert_eq!(at, start, "flushed by the full window, not by the timer");
        seen.push((key, payloads.len()));
    }
    assert_eq!(seen, [("slow".to_owned(), 1), ("busy".to_owned(), 9)]);
    all_succeed(oldest.into_iter().chain(last)).await;
}
