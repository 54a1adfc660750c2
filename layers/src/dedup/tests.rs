use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_mqtt::disposition::marker;
use tower_mqtt::testing::{disposition, test_message, TestMessage};
use tower_mqtt::{AckPolicy, BoxError, Disposition, Message};
use tower_service::Service;

use super::*;
use crate::ServiceBuilderExt;

/// A message with the id `id` in its `message-id` user property.
fn with_id(id: &str) -> Message {
    test_message("orders/eu", id.to_owned()).with_user_property(DEFAULT_PROPERTY, id)
}

/// `dedup` over a service that counts its calls per payload and fails the payloads in
/// `failing`.
fn counting(
    dedup: DedupLayer,
    calls: &Arc<Mutex<Vec<String>>>,
    failing: &'static [&'static str],
) -> impl Service<Message, Response = (), Error = BoxError, Future = impl Send> + Clone {
    let calls = calls.clone();
    ServiceBuilder::new()
        .dedup(dedup)
        .service_fn(move |m: Message| {
            let payload = String::from_utf8_lossy(m.payload()).into_owned();
            calls.lock().unwrap().push(payload.clone());
            async move {
                if failing.contains(&payload.as_str()) {
                    Err::<(), BoxError>(format!("{payload} failed").into())
                } else {
                    Ok(())
                }
            }
        })
}

fn memory(capacity: usize) -> MemoryStore {
    MemoryStore::new(capacity).unwrap()
}

fn calls_of(calls: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
    calls.lock().unwrap().clone()
}

#[tokio::test(start_paused = true)]
async fn a_success_is_recorded_and_a_copy_is_acknowledged_without_a_call() {
    let store = memory(100);
    let dedup = DedupLayer::new(store.clone());
    let stats = dedup.stats();
    let calls = Arc::default();
    let svc = counting(dedup, &calls, &[]);
    let policy = AckPolicy::default();

    assert_eq!(
        disposition(svc.clone(), with_id("a"), policy).await,
        Disposition::Ack
    );
    assert!(store.is_recorded("a"));
    let copy = with_id("a").with_delivery_count(2);
    assert_eq!(
        disposition(svc.clone(), copy, policy).await,
        Disposition::Ack
    );
    assert_eq!(
        disposition(svc, with_id("b"), policy).await,
        Disposition::Ack
    );

    assert_eq!(calls_of(&calls), ["a", "b"]);
    assert_eq!((stats.processed(), stats.duplicates()), (2, 1));
    assert_eq!(store.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failure_is_not_recorded_and_its_redelivery_is_processed() {
    let store = memory(100);
    let calls = Arc::default();
    let svc = counting(DedupLayer::new(store.clone()), &calls, &["bad"]);

    let error = svc.clone().oneshot(with_id("bad")).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "bad failed",
        "the inner error, unchanged"
    );
    assert_eq!(marker(&*error), None, "the consumer's rule decides");
    assert!(!store.is_recorded("bad"));
    assert!(store.is_empty(), "the lease was released");
    svc.clone().oneshot(with_id("bad")).await.unwrap_err();
    assert_eq!(calls_of(&calls), ["bad", "bad"]);
}

#[tokio::test(start_paused = true)]
async fn a_recorded_id_is_processed_again_after_its_ttl() {
    let store = memory(100);
    let dedup = DedupLayer::new(store.clone())
        .ttl(Duration::from_secs(60))
        .unwrap();
    let calls = Arc::default();
    let svc = counting(dedup, &calls, &[]);

    svc.clone().oneshot(with_id("a")).await.unwrap();
    tokio::time::advance(Duration::from_secs(59)).await;
    svc.clone().oneshot(with_id("a")).await.unwrap();
    assert_eq!(calls_of(&calls), ["a"], "a duplicate within the ttl");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(!store.is_recorded("a"));
    svc.clone().oneshot(with_id("a")).await.unwrap();
    assert_eq!(calls_of(&calls), ["a", "a"], "processed again after it");
}

#[tokio::test(start_paused = true)]
async fn a_full_memory_store_evicts_the_oldest_id_first() {
    let store = memory(2);
    let calls = Arc::default();
    let svc = counting(DedupLayer::new(store.clone()), &calls, &[]);

    for id in ["a", "b", "c"] {
        svc.clone().oneshot(with_id(id)).await.unwrap();
    }
    assert_eq!(store.len(), 2);
    assert!(!store.is_recorded("a"), "the oldest went first");
    assert!(store.is_recorded("b") && store.is_recorded("c"));
    svc.clone().oneshot(with_id("c")).await.unwrap();
    svc.clone().oneshot(with_id("a")).await.unwrap();
    assert_eq!(calls_of(&calls), ["a", "b", "c", "a"]);
    // Recording "a" again evicted "b", now the oldest.
    assert!(!store.is_recorded("b") && store.is_recorded("c"));
}

/// A copy that arrives while its id is processed is neither processed nor
/// acknowledged: it is sent back (a `Redeliver` marker), and once the first call has
/// succeeded, the next copy is a duplicate.
#[tokio::test(start_paused = true)]
async fn a_copy_of_an_id_in_progress_is_sent_back() {
    let (release, released) = oneshot::channel::<()>();
    let released = Arc::new(Mutex::new(Some(released)));
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let dedup = DedupLayer::new(memory(100));
    let stats = dedup.stats();
    let svc = ServiceBuilder::new()
        .dedup(dedup)
        .service_fn(move |_m: Message| {
            c.fetch_add(1, Ordering::Relaxed);
            let wait = released.lock().unwrap().take();
            async move {
                if let Some(wait) = wait {
                    wait.await.unwrap();
                }
                Ok::<_, BoxError>(())
            }
        });

    let first = tokio::spawn(svc.clone().oneshot(with_id("a")));
    tokio::task::yield_now().await;
    let error = svc.clone().oneshot(with_id("a")).await.unwrap_err();
    assert_eq!(marker(&*error), Some(Disposition::Redeliver));
    let in_progress = std::error::Error::source(&*error)
        .and_then(|e| e.downcast_ref::<InProgress>())
        .unwrap_or_else(|| panic!("not InProgress: {error}"));
    assert_eq!(in_progress.key(), "a");
    assert_eq!(
        disposition(svc.clone(), with_id("a"), AckPolicy::default()).await,
        Disposition::Redeliver
    );

    release.send(()).unwrap();
    first.await.unwrap().unwrap();
    assert_eq!(
        disposition(svc, with_id("a"), AckPolicy::default()).await,
        Disposition::Ack
    );
    assert_eq!(calls.load(Ordering::Relaxed), 1);
    assert_eq!(
        (stats.processed(), stats.in_progress(), stats.duplicates()),
        (1, 2, 1)
    );
}

/// A call that never finishes (a crash) holds its id for the lease only.
#[tokio::test(start_paused = true)]
async fn an_abandoned_lease_expires() {
    let store = memory(100);
    let lease = Duration::from_secs(5);
    assert_eq!(
        store.claim("a", "t1", lease).await.unwrap(),
        Claim::Acquired
    );
    assert_eq!(store.claim("a", "t2", lease).await.unwrap(), Claim::Held);
    tokio::time::advance(lease).await;
    assert_eq!(
        store.claim("a", "t2", lease).await.unwrap(),
        Claim::Acquired
    );
    // The first holder's release does not remove the second one's lease.
    store.release("a", "t1").await.unwrap();
    assert_eq!(store.claim("a", "t3", lease).await.unwrap(), Claim::Held);
    store.release("a", "t2").await.unwrap();
    assert!(store.is_empty());
    // Nor does a late release remove a record.
    store.record("a", Duration::from_secs(60)).await.unwrap();
    store.release("a", "t2").await.unwrap();
    assert_eq!(store.claim("a", "t4", lease).await.unwrap(), Claim::Done);
}

#[tokio::test]
async fn a_message_without_an_id_passes_through_by_default() {
    let dedup = DedupLayer::new(memory(100));
    let stats = dedup.stats();
    let calls = Arc::default();
    let svc = counting(dedup, &calls, &[]);
    let plain = || test_message("t", "no-id");
    svc.clone().oneshot(plain()).await.unwrap();
    svc.clone().oneshot(plain()).await.unwrap();
    let empty = plain().with_user_property(DEFAULT_PROPERTY, "");
    svc.clone().oneshot(empty).await.unwrap();
    assert_eq!(calls_of(&calls).len(), 3, "no check without an id");
    assert_eq!((stats.unkeyed(), stats.processed()), (3, 0));
}

#[tokio::test]
async fn a_message_without_an_id_fails_permanently_with_fail_without_key() {
    let dedup = DedupLayer::new(memory(100))
        .user_property("x-id")
        .unwrap()
        .fail_without_key();
    let calls = Arc::default();
    let svc = counting(dedup, &calls, &[]);
    // `message-id` is not the configured property.
    let error = svc.clone().oneshot(with_id("a")).await.unwrap_err();
    assert_eq!(marker(&*error), Some(Disposition::Reject));
    assert!(
        error
            .to_string()
            .contains("has no dedup key (user property \"x-id\")"),
        "{error}"
    );
    assert_eq!(
        disposition(svc.clone(), with_id("a"), AckPolicy::default()).await,
        Disposition::Reject
    );
    let keyed = test_message("t", "k").with_user_property("x-id", "k");
    svc.oneshot(keyed).await.unwrap();
    assert_eq!(calls_of(&calls), ["k"]);
}

#[tokio::test]
async fn key_fn_names_the_id() {
    let dedup = DedupLayer::new(memory(100))
        .key_fn(|m: &Message| m.topic().strip_prefix("orders/").map(str::to_owned));
    let calls = Arc::default();
    let svc = counting(dedup, &calls, &[]);
    for topic in ["orders/1", "orders/1", "orders/2", "other"] {
        svc.clone()
            .oneshot(test_message(topic, topic))
            .await
            .unwrap();
    }
    assert_eq!(calls_of(&calls), ["orders/1", "orders/2", "other"]);
}

/// A store that fails the operations named in `failing`.
#[derive(Clone)]
struct Broken {
    memory: MemoryStore,
    failing: &'static [&'static str],
}

impl Broken {
    /// `op` on the memory store, unless it is one of the failing ones.
    fn run<T: Send + 'static>(
        &self,
        op: &'static str,
        memory: impl FnOnce(&MemoryStore) -> StoreFuture<T>,
    ) -> StoreFuture<T> {
        if self.failing.contains(&op) {
            Box::pin(async move { Err(StoreError::new(op, "connection refused")) })
        } else {
            memory(&self.memory)
        }
    }
}

impl DedupStore for Broken {
    fn claim(&self, key: &str, token: &str, lease: Duration) -> StoreFuture<Claim> {
        self.run("claim", |m| m.claim(key, token, lease))
    }
    fn record(&self, key: &str, ttl: Duration) -> StoreFuture<()> {
        self.run("record", |m| m.record(key, ttl))
    }
    fn release(&self, key: &str, token: &str) -> StoreFuture<()> {
        self.run("release", |m| m.release(key, token))
    }
}

#[tokio::test]
async fn an_unreachable_store_sends_the_message_back_unprocessed() {
    let broken = Broken {
        memory: memory(100),
        failing: &["claim"],
    };
    let dedup = DedupLayer::new(broken);
    let stats = dedup.stats();
    let calls = Arc::default();
    let svc = counting(dedup, &calls, &[]);
    let error = svc.clone().oneshot(with_id("a")).await.unwrap_err();
    assert_eq!(marker(&*error), Some(Disposition::Redeliver));
    assert_eq!(
        error.to_string(),
        "redeliver: dedup store: claim failed: connection refused"
    );
    let policy = AckPolicy {
        on_failure: tower_mqtt::OnFailure::Ack,
        ..AckPolicy::default()
    };
    assert_eq!(
        disposition(svc, with_id("a"), policy).await,
        Disposition::Redeliver,
        "whatever the consumer's rule"
    );
    assert!(calls_of(&calls).is_empty());
    assert_eq!(stats.store_failures(), 2);
}

#[tokio::test]
async fn a_failed_record_still_acknowledges_the_processed_message() {
    let store = memory(100);
    let broken = Broken {
        memory: store.clone(),
        failing: &["record", "release"],
    };
    let dedup = DedupLayer::new(broken);
    let stats = dedup.stats();
    let calls = Arc::default();
    let svc = counting(dedup, &calls, &["bad"]);
    assert_eq!(
        disposition(svc.clone(), with_id("a"), AckPolicy::default()).await,
        Disposition::Ack
    );
    assert_eq!((stats.processed(), stats.record_failures()), (0, 1));
    // The lease still holds copies off until it expires.
    assert_eq!(
        disposition(svc.clone(), with_id("a"), AckPolicy::default()).await,
        Disposition::Redeliver
    );
    // A failed release returns the service's own error.
    let error = svc.oneshot(with_id("bad")).await.unwrap_err();
    assert_eq!(error.to_string(), "bad failed");
    assert_eq!(calls_of(&calls), ["a", "bad"]);
}

#[test]
fn options_out_of_range_are_typed_errors() {
    let layer = || DedupLayer::new(memory(1));
    assert_eq!(
        layer().ttl(Duration::ZERO).unwrap_err(),
        InvalidDedup::ZeroTtl
    );
    assert_eq!(
        layer().lease(Duration::ZERO).unwrap_err(),
        InvalidDedup::ZeroLease
    );
    assert_eq!(
        layer().user_property("").unwrap_err(),
        InvalidDedup::EmptyPropertyName
    );
    assert_eq!(MemoryStore::new(0).unwrap_err(), InvalidDedup::ZeroCapacity);
    assert!(InvalidDedup::ZeroLease
        .to_string()
        .starts_with("dedup lease must be above zero"));
    // Far-off durations do not overflow.
    let _ = layer()
        .ttl(Duration::MAX)
        .unwrap()
        .lease(Duration::MAX)
        .unwrap();
}

#[tokio::test]
async fn a_ttl_of_duration_max_is_kept() {
    let store = memory(1);
    store.record("a", Duration::MAX).await.unwrap();
    assert!(store.is_recorded("a"));
}

#[tokio::test]
async fn service_layer_and_future_are_debug() {
    let layer = DedupLayer::new(memory(7));
    let text = format!("{layer:?}");
    assert!(
        text.contains(r#"key: "user property \"message-id\"""#) && text.contains("ttl: 86400s"),
        "{text}"
    );
    let mut svc = tower_layer::Layer::layer(
        &layer,
        service_fn(|_: Message| async { Ok::<_, BoxError>(()) }),
    );
    assert!(format!("{svc:?}").starts_with("Dedup { inner:"), "{svc:?}");
    let future = svc.ready().await.unwrap().call(with_id("a"));
    assert_eq!(
        format!("{future:?}"),
        r#"ResponseFuture { state: "claiming", key: Some("a") }"#
    );
    future.await.unwrap();
    assert_eq!(
        format!("{:?}", svc.stats()),
        "DedupStats { processed: 1, duplicates: 0, in_progress: 0, unkeyed: 0, \
         store_failures: 0, record_failures: 0 }"
    );
    assert_eq!(
        format!("{:?}", MemoryStore::new(7).unwrap()),
        "MemoryStore { capacity: 7, len: 0 }"
    );
}

#[test]
fn lease_tokens_differ() {
    let tokens: std::collections::HashSet<String> = (0..1000).map(|_| new_token()).collect();
    assert_eq!(tokens.len(), 1000);
}
