use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};
use tower_mqtt::testing::test_message;
use tower_mqtt::{BoxError, Message};
use tower_service::Service;

use super::*;
use crate::ServiceBuilderExt;

const MS: Duration = Duration::from_millis(1);

/// A limited service that records when each call reached it.
fn recording(
    layer: SharedRateLimitLayer,
    calls: &Arc<Mutex<Vec<Instant>>>,
) -> SharedRateLimit<
    impl Service<
            Message,
            Response = (),
            Error = BoxError,
            Future = impl std::future::Future<Output = Result<(), BoxError>> + Send,
        > + Clone
        + Send,
> {
    let calls = calls.clone();
    ServiceBuilder::new()
        .layer(layer)
        .service_fn(move |_: Message| {
            calls.lock().unwrap().push(Instant::now());
            async { Ok::<_, BoxError>(()) }
        })
}

/// Offsets of `calls` from `start`, in ms.
fn offsets(start: Instant, calls: &Mutex<Vec<Instant>>) -> Vec<u128> {
    let calls = calls.lock().unwrap();
    calls.iter().map(|t| (*t - start).as_millis()).collect()
}

/// Makes `n` calls one after the other; returns when each reached the inner service,
/// in ms from now.
async fn calls_at<S>(svc: &mut S, calls: &Mutex<Vec<Instant>>, n: usize) -> Vec<u128>
where
    S: Service<Message, Response = (), Error = BoxError>,
{
    calls.lock().unwrap().clear();
    let start = Instant::now();
    for _ in 0..n {
        call_once(svc).await;
    }
    offsets(start, calls)
}

async fn call_once<S>(svc: &mut S)
where
    S: Service<Message, Response = (), Error = BoxError>,
{
    svc.ready()
        .await
        .unwrap()
        .call(test_message("t", "x"))
        .await
        .unwrap();
}

fn per_second(num: u32) -> SharedRateLimitLayer {
    SharedRateLimitLayer::new(num, Duration::from_secs(1)).unwrap()
}

#[tokio::test(start_paused = true)]
async fn calls_are_spaced_at_the_rate() {
    let calls = Arc::default();
    let mut svc = recording(per_second(5), &calls);
    assert_eq!(calls_at(&mut svc, &calls, 5).await, [0, 200, 400, 600, 800]);
}

/// A caller that comes a little late (a timer firing after its deadline) does not push
/// the schedule back, so timer lag does not lower the long-run rate.
#[tokio::test(start_paused = true)]
async fn a_late_caller_keeps_the_schedule() {
    let calls = Arc::default();
    let mut svc = recording(per_second(5), &calls);
    let start = Instant::now();
    call_once(&mut svc).await;
    tokio::time::sleep(250 * MS).await;
    for _ in 0..3 {
        call_once(&mut svc).await;
    }
    assert_eq!(offsets(start, &calls), [0, 250, 400, 600]);
    // More than one interval late: a new schedule starts, with no catch-up burst.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(calls_at(&mut svc, &calls, 2).await, [0, 200]);
}

/// Faster than the timer's millisecond ticks (5,000 a second: one permit every
/// 200 µs), the waiters catch up on the permits they woke late for, so the rate holds:
/// 1,000 calls take 200 ms of (paused) time, not one tick each.
#[tokio::test(start_paused = true)]
async fn rates_above_the_timer_resolution_hold() {
    let calls = Arc::default();
    let mut svc = recording(per_second(5_000), &calls);
    let at = calls_at(&mut svc, &calls, 1_000).await;
    let last = *at.last().unwrap();
    assert!((195..=210).contains(&last), "the 1,000th call at {last} ms");
    // Never ahead of the schedule by more than the catch-up window.
    for (i, ms) in at.iter().enumerate() {
        let due = i as u128 / 5;
        assert!(*ms + 10 >= due, "call {i} at {ms} ms, due at {due} ms");
    }
}

/// `Consumer::run` clones the stack per connection: the clones draw on one budget.
#[tokio::test(start_paused = true)]
async fn clones_share_one_budget() {
    let calls = Arc::default();
    let one = recording(per_second(10), &calls);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut clone = one.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                call_once(&mut clone).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // 20 calls over four clones at 10/s: 100 ms apart, the last at 1.9 s.
    let mut at = offsets(start, &calls);
    at.sort_unstable();
    assert_eq!(at, (0..20).map(|i| i * 100).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn a_burst_passes_at_once_after_a_quiet_period() {
    let calls = Arc::default();
    let mut svc = recording(per_second(10).burst(3).unwrap(), &calls);
    assert_eq!(calls_at(&mut svc, &calls, 5).await, [0, 0, 0, 100, 200]);
    // Quiet for a second: the burst is back, then the steady rate.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(calls_at(&mut svc, &calls, 4).await, [0, 0, 0, 100]);
}

#[tokio::test(start_paused = true)]
async fn poll_ready_is_pending_until_a_permit_is_free() {
    let calls = Arc::default();
    let mut svc = recording(per_second(1), &calls);
    call_once(&mut svc).await;
    let early = tokio::time::timeout(900 * MS, svc.ready()).await;
    assert!(early.is_err(), "ready before the next permit");
    tokio::time::timeout(200 * MS, svc.ready())
        .await
        .expect("ready once the permit is due")
        .unwrap();
}

#[tokio::test]
async fn errors_of_the_inner_service_pass_through() {
    let svc = ServiceBuilder::new()
        .shared_rate_limit(100, Duration::from_secs(1))
        .unwrap()
        .service_fn(|_: Message| async { Err::<(), _>(std::io::Error::other("disk full")) });
    let error = svc.oneshot(test_message("t", "x")).await.unwrap_err();
    assert_eq!(error.to_string(), "disk full");
}

#[test]
fn bad_rates_are_typed_errors_naming_the_option() {
    let second = Duration::from_secs(1);
    assert_eq!(
        SharedRateLimitLayer::new(0, second).unwrap_err(),
        InvalidRate::ZeroNum
    );
    assert_eq!(
        SharedRateLimitLayer::new(10, Duration::ZERO).unwrap_err(),
        InvalidRate::TooFast
    );
    assert_eq!(
        SharedRateLimitLayer::new(2_000_000_000, second).unwrap_err(),
        InvalidRate::TooFast
    );
    let error = SharedRateLimitLayer::new(1, second)
        .unwrap()
        .burst(0)
        .unwrap_err();
    assert_eq!(error, InvalidRate::ZeroBurst);
    assert!(error.to_string().contains("burst"), "{error}");
    assert!(InvalidRate::TooFast.to_string().contains(" per "));
}

#[test]
fn layer_and_service_are_debug_and_clone() {
    fn clone<T: Clone>(t: &T) -> T {
        t.clone()
    }
    let layer = SharedRateLimitLayer::new(4, Duration::from_secs(1)).unwrap();
    assert_eq!(
        format!("{:?}", clone(&layer)),
        "SharedRateLimitLayer { interval: 250ms, burst: 1 }"
    );
    let svc = tower_layer::Layer::layer(
        &layer,
        tower::service_fn(|_: Message| async { Ok::<_, BoxError>(()) }),
    );
    assert!(format!("{:?}", clone(&svc)).starts_with("SharedRateLimit {"));
}
