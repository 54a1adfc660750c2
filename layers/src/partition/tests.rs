use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_mqtt::testing::test_message;
use tower_mqtt::{BoxError, Message};
use tower_service::Service;

use super::*;
use crate::ServiceBuilderExt;

const MS: Duration = Duration::from_millis(1);

/// (topic, payload, start, end) of every call.
type Log = Arc<Mutex<Vec<(String, String, Instant, Instant)>>>;

/// A partitioned-by-topic service whose calls take as long as the payload's number
/// says (in ms), recording each call.
fn recording(
    log: &Log,
) -> impl Service<
    Message,
    Response = (),
    Error = BoxError,
    Future = impl std::future::Future<Output = Result<(), BoxError>> + Send,
> + Clone
       + Send {
    let log = log.clone();
    ServiceBuilder::new()
        .layer(PartitionLayer::by_topic())
        .service_fn(move |m: Message| {
            let log = log.clone();
            async move {
                let payload = std::str::from_utf8(m.payload())?.to_owned();
                let ms: u64 = payload.split('-').nth(1).unwrap_or("0").parse()?;
                let start = Instant::now();
                tokio::time::sleep(Duration::from_millis(ms)).await;
                log.lock()
                    .unwrap()
                    .push((m.topic().to_owned(), payload, start, Instant::now()));
                Ok::<_, BoxError>(())
            }
        })
}

/// Calls `svc` with each (topic, payload) in order and runs every call to completion,
/// concurrently.
async fn call_all<S>(svc: &mut S, messages: &[(&str, String)])
where
    S: Service<Message, Response = (), Error = BoxError>,
    S::Future: Send + 'static,
{
    let mut handles = Vec::new();
    for (topic, payload) in messages {
        let future = svc
            .ready()
            .await
            .unwrap()
            .call(test_message(topic, payload.clone()));
        handles.push(tokio::spawn(future));
    }
    for h in handles {
        h.await.unwrap().unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn one_key_runs_one_at_a_time_in_call_order_and_keys_run_concurrently() {
    let log = Log::default();
    let mut svc = recording(&log);
    // Earlier messages take longer: without the layer they would finish last.
    let messages: Vec<(&str, String)> = (0..10)
        .map(|i| {
            let topic = if i % 2 == 0 { "a" } else { "b" };
            (topic, format!("{i}-{}", 20 - 2 * i))
        })
        .collect();
    call_all(&mut svc, &messages).await;

    let log = log.lock().unwrap().clone();
    let mut by_key: HashMap<&str, Vec<&(String, String, Instant, Instant)>> = HashMap::new();
    for entry in &log {
        by_key.entry(entry.0.as_str()).or_default().push(entry);
    }
    for (key, calls) in &by_key {
        let order: Vec<&str> = calls
            .iter()
            .map(|c| c.1.split('-').next().unwrap())
            .collect();
        let expected: Vec<String> = messages
            .iter()
            .enumerate()
            .filter(|(_, (t, _))| t == key)
            .map(|(i, _)| i.to_string())
            .collect();
        assert_eq!(order, expected, "key {key}");
        for pair in calls.windows(2) {
            assert!(pair[1].2 >= pair[0].3, "{key}: overlapping calls {pair:?}");
        }
    }
    // The two keys overlapped: a's first call and b's first call started together.
    assert_eq!(by_key["a"][0].2, by_key["b"][0].2);
}

#[tokio::test(start_paused = true)]
async fn poll_ready_waits_while_max_waiting_messages_wait() {
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    let mut svc = ServiceBuilder::new()
        .layer(PartitionLayer::by_topic().max_waiting(2).unwrap())
        .service_fn(move |_: Message| {
            let g = g.clone();
            async move {
                g.acquire().await.unwrap().forget();
                Ok::<_, BoxError>(())
            }
        });
    let mut calls = Vec::new();
    for _ in 0..3 {
        let f = svc.ready().await.unwrap().call(test_message("k", "x"));
        calls.push(tokio::spawn(f));
    }
    // One runs, two wait: no room for a third waiting message, whatever its key.
    tokio::task::yield_now().await;
    assert_eq!(svc.waiting(), 2);
    let pending = tokio::time::timeout(100 * MS, svc.ready()).await;
    assert!(pending.is_err(), "ready with 2 of 2 waiting");
    // The running call finishes: the next one runs, and there is room again.
    gate.add_permits(1);
    svc.ready().await.unwrap();
    let other = tokio::spawn(svc.call(test_message("other", "x")));
    gate.add_permits(3);
    for c in calls {
        c.await.unwrap().unwrap();
    }
    other.await.unwrap().unwrap();
    assert_eq!(svc.waiting(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_call_hands_its_turn_to_the_next() {
    let started = Arc::new(Mutex::new(Vec::new()));
    let s = started.clone();
    let mut svc = ServiceBuilder::new()
        .partition_by(|m: &Message| m.topic().to_owned())
        .service_fn(move |m: Message| {
            s.lock().unwrap().push(m.payload().clone());
            async {
                std::future::pending::<()>().await;
                Ok::<_, BoxError>(())
            }
        });
    let mut calls = Vec::new();
    for payload in ["1", "2", "3"] {
        let f = svc.ready().await.unwrap().call(test_message("k", payload));
        calls.push(tokio::spawn(f));
    }
    let [first, second, third] = <[_; 3]>::try_from(calls).unwrap();
    tokio::time::sleep(MS).await;
    assert_eq!(*started.lock().unwrap(), ["1"]);
    // A waiting call is dropped: it never runs, and it no longer counts as waiting.
    second.abort();
    let _ = second.await;
    assert_eq!(svc.waiting(), 1);
    // The running call is dropped (a shutdown's drain timeout, say): the next one runs.
    first.abort();
    let _ = first.await;
    tokio::time::sleep(MS).await;
    assert_eq!(*started.lock().unwrap(), ["1", "3"]);
    assert_eq!(svc.waiting(), 0);
    third.abort();
}

/// `Consumer::run` clones the stack per connection: the clones share the lanes.
#[tokio::test(start_paused = true)]
async fn clones_share_the_lanes() {
    let log = Log::default();
    let mut one = recording(&log);
    let mut two = one.clone();
    let a = one.ready().await.unwrap().call(test_message("k", "0-10"));
    let b = two.ready().await.unwrap().call(test_message("k", "1-1"));
    let (a, b) = tokio::join!(a, b);
    a.unwrap();
    b.unwrap();
    let log = log.lock().unwrap();
    assert_eq!(log[0].1, "0-10");
    assert!(log[1].2 >= log[0].3, "{log:?}");
}

#[tokio::test]
async fn errors_of_the_inner_service_pass_through() {
    let svc = ServiceBuilder::new()
        .layer(PartitionLayer::by_topic())
        .service_fn(|_: Message| async { Err::<(), _>(std::io::Error::other("disk full")) });
    let error = svc.oneshot(test_message("t", "x")).await.unwrap_err();
    assert!(error.is::<std::io::Error>(), "{error}");
}

#[test]
fn zero_max_waiting_is_a_typed_error() {
    let error = PartitionLayer::by_topic().max_waiting(0).unwrap_err();
    assert_eq!(error, InvalidMaxWaiting);
    assert!(error.to_string().contains("at least 1"), "{error}");
}

#[tokio::test]
async fn layer_service_and_future_are_debug() {
    let layer = PartitionLayer::by_topic();
    assert_eq!(
        format!("{layer:?}"),
        "PartitionLayer { max_waiting: 1024, .. }"
    );
    let mut svc = tower_layer::Layer::layer(
        &layer,
        service_fn(|_: Message| async { Ok::<_, BoxError>(()) }),
    );
    assert!(format!("{svc:?}").starts_with("Partition {"), "{svc:?}");
    let future = svc.ready().await.unwrap().call(test_message("t", "x"));
    assert!(
        format!("{future:?}").starts_with(r#"ResponseFuture { state: "queued""#),
        "{future:?}"
    );
    future.await.unwrap();
}

/// `for_requests` keys requests that are not messages (here `(key, seq, ms)` tuples
/// standing for keyed batches): requests of one key finish in call order whatever
/// their latencies, and different keys overlap.
#[tokio::test(start_paused = true)]
async fn requests_of_any_type_keep_their_key_order() {
    let done: Arc<Mutex<Vec<(u8, u32)>>> = Arc::default();
    let d = done.clone();
    let mut svc = ServiceBuilder::new()
        .layer(PartitionLayer::for_requests(|r: &(u8, u32, u64)| r.0))
        .service_fn(move |(key, seq, ms): (u8, u32, u64)| {
            let d = d.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                d.lock().unwrap().push((key, seq));
                Ok::<_, BoxError>(())
            }
        });
    let start = Instant::now();
    let mut handles = Vec::new();
    for seq in 0..20u32 {
        let key = (seq % 2) as u8;
        // Later requests are faster: without the layer they would finish first.
        let ms = u64::from(20 - seq);
        let future = svc.ready().await.unwrap().call((key, seq, ms));
        handles.push(tokio::spawn(future));
    }
    for handle in handles {
        handle.await.unwrap().unwrap();
    }
    let done = done.lock().unwrap();
    for key in 0..2u8 {
        let seqs: Vec<u32> = done.iter().filter(|r| r.0 == key).map(|r| r.1).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "key {key}: {seqs:?}");
        assert_eq!(seqs.len(), 10);
    }
    // Each key runs its ten requests one after another (sum of its latencies), and the
    // two keys at the same time: the whole run takes about the slower key's sum.
    let key0: u64 = (0..20).filter(|s| s % 2 == 0).map(|s| 20 - s).sum();
    assert!(
        start.elapsed() < Duration::from_millis(key0 + 5),
        "{:?}",
        start.elapsed()
    );
}
