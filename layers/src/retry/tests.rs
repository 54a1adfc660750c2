use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_mqtt::testing::{disposition, test_message};
use tower_mqtt::{
    AckPolicy, BoxError, Disposition, Message, OnFailure, OnSuccess, Permanent, Redeliver, Reject,
    RejectReason,
};

use super::*;
use crate::ServiceBuilderExt;

const MS: Duration = Duration::from_millis(1);

/// Every call: (attempt number the message carried, when).
#[derive(Clone, Default)]
struct Calls(Arc<Mutex<Vec<(u32, Instant)>>>);

impl Calls {
    /// Record a call and return its attempt number.
    fn record(&self, message: &Message) -> u32 {
        let attempt = Attempt::of(message);
        self.0.lock().unwrap().push((attempt, Instant::now()));
        attempt
    }
    fn attempts(&self) -> Vec<u32> {
        self.0.lock().unwrap().iter().map(|(a, _)| *a).collect()
    }
    /// The waits between consecutive calls.
    fn gaps(&self) -> Vec<Duration> {
        let calls = self.0.lock().unwrap();
        calls.windows(2).map(|w| w[1].1 - w[0].1).collect()
    }
}

/// A service that fails with `error(attempt)` until `succeed_on`, recording its calls.
fn failing_until(
    calls: &Calls,
    succeed_on: u32,
    error: fn(u32) -> BoxError,
) -> impl tower::Service<Message, Response = (), Error = BoxError, Future = impl Send> + Clone {
    let calls = calls.clone();
    service_fn(move |message: Message| {
        let attempt = calls.record(&message);
        async move {
            if attempt >= succeed_on {
                Ok(())
            } else {
                Err(error(attempt))
            }
        }
    })
}

fn transient(attempt: u32) -> BoxError {
    Transient::new(format!("busy on attempt {attempt}")).into()
}

fn no_jitter(max_attempts: u32, min: Duration, max: Duration) -> RetryPolicy {
    RetryPolicy::new(max_attempts)
        .backoff(min, max, 0.0)
        .expect("valid backoff")
}

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_after_exponentially_growing_waits() {
    let calls = Calls::default();
    let svc = ServiceBuilder::new()
        .retry_messages(no_jitter(4, 100 * MS, Duration::from_secs(10)))
        .service(failing_until(&calls, 4, transient));
    svc.oneshot(test_message("t", "x"))
        .await
        .expect("the 4th attempt succeeds");
    assert_eq!(calls.attempts(), [1, 2, 3, 4]);
    assert_eq!(calls.gaps(), [100 * MS, 200 * MS, 400 * MS]);
}

#[tokio::test(start_paused = true)]
async fn the_wait_stops_growing_at_max() {
    let calls = Calls::default();
    let svc = ServiceBuilder::new()
        .retry_messages(no_jitter(5, 100 * MS, 250 * MS))
        .service(failing_until(&calls, u32::MAX, transient));
    svc.oneshot(test_message("t", "x")).await.unwrap_err();
    assert_eq!(calls.gaps(), [100 * MS, 200 * MS, 250 * MS, 250 * MS]);
}

#[tokio::test(start_paused = true)]
async fn jitter_adds_up_to_its_share_and_differs_between_messages() {
    let policy = RetryPolicy::new(3)
        .backoff(100 * MS, Duration::from_secs(10), 1.0)
        .expect("valid backoff");
    let mut first_waits = Vec::new();
    for _ in 0..8 {
        let calls = Calls::default();
        let svc = ServiceBuilder::new()
            .retry_messages(policy.clone())
            .service(failing_until(&calls, u32::MAX, transient));
        svc.oneshot(test_message("t", "x")).await.unwrap_err();
        let gaps = calls.gaps();
        assert_eq!(gaps.len(), 2);
        assert!((100 * MS..=200 * MS).contains(&gaps[0]), "{gaps:?}");
        assert!((200 * MS..=400 * MS).contains(&gaps[1]), "{gaps:?}");
        first_waits.push(gaps[0]);
    }
    first_waits.sort();
    first_waits.dedup();
    assert!(
        first_waits.len() > 1,
        "every message waited exactly {first_waits:?}: the jitter repeats"
    );
}

/// One `Retry` service (one policy) for many messages: each message starts over at
/// attempt 1 with the shortest wait.
#[tokio::test(start_paused = true)]
async fn each_message_has_its_own_attempts_and_backoff() {
    let calls = Calls::default();
    let mut svc = ServiceBuilder::new()
        .retry_messages(no_jitter(3, 100 * MS, Duration::from_secs(10)))
        .service(failing_until(&calls, 3, transient));
    for _ in 0..3 {
        let start = calls.0.lock().unwrap().len();
        svc.ready()
            .await
            .unwrap()
            .call(test_message("t", "x"))
            .await
            .unwrap();
        let c = calls.0.lock().unwrap();
        let mine: Vec<u32> = c[start..].iter().map(|(a, _)| *a).collect();
        assert_eq!(mine, [1, 2, 3]);
        assert_eq!(c[start + 1].1 - c[start].1, 100 * MS);
    }
}

#[tokio::test(start_paused = true)]
async fn exhausted_attempts_return_the_last_error_unchanged() {
    let calls = Calls::default();
    let svc = ServiceBuilder::new()
        .retry_messages(no_jitter(3, MS, MS))
        .service(failing_until(&calls, u32::MAX, transient));
    let error = svc.oneshot(test_message("t", "x")).await.unwrap_err();
    assert_eq!(calls.attempts(), [1, 2, 3]);
    assert!(error.is::<Transient>());
    assert_eq!(error.to_string(), "transient failure: busy on attempt 3");
}

/// Exhausted retries leave the decision to the consumer's rule: with the default rule
/// the message is redelivered.
#[tokio::test(start_paused = true)]
async fn after_the_last_attempt_the_consumer_rule_decides() {
    let calls = Calls::default();
    let svc = ServiceBuilder::new()
        .retry_messages(no_jitter(2, MS, MS))
        .service(failing_until(&calls, u32::MAX, transient));
    let d = disposition(svc.clone(), test_message("t", "x"), AckPolicy::default()).await;
    assert_eq!(d, Disposition::Redeliver);
    let reject = AckPolicy {
        on_success: OnSuccess::Ack,
        on_failure: OnFailure::Reject,
    };
    assert_eq!(
        disposition(svc, test_message("t", "x"), reject).await,
        Disposition::Reject
    );
    assert_eq!(calls.attempts(), [1, 2, 1, 2]);
}

#[tokio::test(start_paused = true)]
async fn timeouts_below_the_layer_are_transient() {
    let calls = Calls::default();
    let c = calls.clone();
    let svc = ServiceBuilder::new()
        .retry_messages(no_jitter(3, 10 * MS, 10 * MS))
        .timeout(Duration::from_secs(1))
        .service_fn(move |message: Message| {
            let attempt = c.record(&message);
            async move {
                if attempt == 1 {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                Ok::<_, BoxError>(attempt)
            }
        });
    assert_eq!(svc.oneshot(test_message("t", "x")).await.unwrap(), 2);
    assert_eq!(calls.attempts(), [1, 2]);
    assert_eq!(calls.gaps(), [Duration::from_secs(1) + 10 * MS]);
}

#[tokio::test(start_paused = true)]
async fn rejected_and_permanent_errors_are_never_retried_whatever_the_classifier_says() {
    let always = |_: &Message, _: &BoxError| true;
    let cases: [fn(u32) -> BoxError; 4] = [
        |_| Reject::new(RejectReason::QuotaExceeded, "no").into(),
        |_| Permanent::new("schema mismatch").into(),
        // The permanent marker wins over a transient one anywhere in the chain.
        |_| Permanent::new(Transient::new("busy")).into(),
        |_| Transient::new(Permanent::new("busy")).into(),
    ];
    for (i, error) in cases.into_iter().enumerate() {
        let calls = Calls::default();
        let svc = ServiceBuilder::new()
            .retry_messages(no_jitter(5, MS, MS).classify(always))
            .service(failing_until(&calls, u32::MAX, error));
        svc.oneshot(test_message("t", "x")).await.unwrap_err();
        assert_eq!(calls.attempts(), [1], "case {i}");
    }
}

#[tokio::test(start_paused = true)]
async fn other_errors_are_not_retried_by_default() {
    let cases: [fn(u32) -> BoxError; 3] = [
        |_| "plain failure".into(),
        |_| Redeliver::new("later").into(),
        |_| Box::new(std::io::Error::other("disk")),
    ];
    for (i, error) in cases.into_iter().enumerate() {
        let calls = Calls::default();
        let svc = ServiceBuilder::new()
            .retry_messages(no_jitter(5, MS, MS))
            .service(failing_until(&calls, u32::MAX, error));
        let e = svc.oneshot(test_message("t", "x")).await.unwrap_err();
        assert_eq!(calls.attempts(), [1], "case {i}: {e}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_classifier_closure_sees_the_message_and_the_failed_attempt() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let classifier = move |message: &Message, error: &BoxError| {
        s.lock()
            .unwrap()
            .push((message.topic().to_owned(), Attempt::of(message)));
        error.to_string().contains("busy")
    };
    let calls = Calls::default();
    let svc = ServiceBuilder::new()
        .retry_messages(no_jitter(5, MS, MS).classify(classifier))
        .service(failing_until(&calls, 3, |a| format!("busy {a}").into()));
    svc.oneshot(test_message("a/b", "x")).await.unwrap();
    assert_eq!(calls.attempts(), [1, 2, 3]);
    assert_eq!(
        *seen.lock().unwrap(),
        [("a/b".to_owned(), 1), ("a/b".to_owned(), 2)]
    );
}

#[tokio::test(start_paused = true)]
async fn one_attempt_never_retries_and_zero_counts_as_one() {
    for max in [0, 1] {
        let calls = Calls::default();
        let policy = RetryPolicy::new(max);
        assert_eq!(policy.max_attempts(), 1);
        let svc = ServiceBuilder::new()
            .retry_messages(policy)
            .service(failing_until(&calls, u32::MAX, transient));
        svc.oneshot(test_message("t", "x")).await.unwrap_err();
        assert_eq!(calls.attempts(), [1]);
    }
}

/// The policy also drives tower's own `Retry`; only the first call then carries no
/// `Attempt` (which `Attempt::of` reads as 1).
#[tokio::test(start_paused = true)]
async fn the_policy_works_with_towers_own_retry() {
    let calls = Calls::default();
    let marks = Arc::new(Mutex::new(Vec::new()));
    let (c, m) = (calls.clone(), marks.clone());
    let svc = tower::ServiceBuilder::new()
        .retry(no_jitter(3, MS, MS))
        .service_fn(move |message: Message| {
            m.lock()
                .unwrap()
                .push(message.extensions().get::<Attempt>().copied());
            let attempt = c.record(&message);
            async move {
                if attempt < 3 {
                    Err::<(), BoxError>(transient(attempt))
                } else {
                    Ok(())
                }
            }
        });
    svc.oneshot(test_message("t", "x")).await.unwrap();
    assert_eq!(calls.attempts(), [1, 2, 3]);
    assert_eq!(
        *marks.lock().unwrap(),
        [None, Some(Attempt(2)), Some(Attempt(3))]
    );
}

#[test]
fn an_invalid_backoff_is_a_typed_error() {
    let e = RetryPolicy::new(3)
        .backoff(Duration::from_secs(2), Duration::from_secs(1), 0.1)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid backoff: maximum must not be less than minimum"
    );
    assert!(RetryPolicy::new(3).backoff(MS, MS, f64::NAN).is_err());
    assert!(RetryPolicy::new(3).backoff(MS, MS, -1.0).is_err());
}

#[test]
fn find_in_chain_walks_the_sources() {
    let error: BoxError = Reject::new(RejectReason::UnspecifiedError, Transient::new("x")).into();
    assert!(find_in_chain::<Transient>(&*error).is_some());
    assert!(find_in_chain::<Reject>(&*error).is_some());
    assert!(find_in_chain::<Permanent>(&*error).is_none());
    let t = Transient::new("db");
    assert_eq!(std::error::Error::source(&t).unwrap().to_string(), "db");
}

#[tokio::test]
async fn service_layer_and_future_are_debug() {
    let layer = RetryLayer::new(RetryPolicy::new(2));
    assert!(
        format!("{layer:?}").contains("max_attempts: 2"),
        "{layer:?}"
    );
    let mut svc = tower_layer::Layer::layer(
        &layer,
        service_fn(|_: Message| async { Ok::<_, BoxError>(()) }),
    );
    assert!(format!("{svc:?}").starts_with("Retry"));
    let future = svc.ready().await.unwrap().call(test_message("t", "x"));
    assert_eq!(format!("{future:?}"), "ResponseFuture { .. }");
    future.await.unwrap();
}
