use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_mqtt::testing::{disposition, test_message};
use tower_mqtt::{AckPolicy, BoxError, Disposition, Message, OnFailure, OnSuccess};
use tower_service::Service;

use super::*;
use crate::ServiceBuilderExt;

fn panicked(error: &BoxError) -> &Panicked {
    error
        .downcast_ref::<Panicked>()
        .unwrap_or_else(|| panic!("not a Panicked error: {error}"))
}

#[tokio::test]
async fn a_panic_in_call_becomes_an_error() {
    let svc = ServiceBuilder::new()
        .catch_panic()
        .service_fn(|_: Message| {
            if true {
                panic!("bad topic");
            }
            async { Ok::<_, BoxError>(()) }
        });
    let error = svc.oneshot(test_message("t", "x")).await.unwrap_err();
    assert_eq!(panicked(&error).message(), Some("bad topic"));
    assert_eq!(error.to_string(), "the service panicked: bad topic");
}

#[tokio::test]
async fn a_panic_in_the_future_becomes_an_error() {
    let svc = ServiceBuilder::new()
        .catch_panic()
        .service_fn(|m: Message| async move {
            let n: u32 = std::str::from_utf8(m.payload())?.parse()?;
            assert!(n < 10, "reading {n} is out of range");
            Ok::<_, BoxError>(n)
        });
    assert_eq!(svc.oneshot(test_message("t", "7")).await.unwrap(), 7);
    let error = svc.oneshot(test_message("t", "12")).await.unwrap_err();
    assert_eq!(
        panicked(&error).message(),
        Some("reading 12 is out of range")
    );
}

#[tokio::test]
async fn a_payload_that_is_not_a_string_still_fails_the_message() {
    let svc = ServiceBuilder::new()
        .catch_panic()
        .service_fn(|_: Message| async {
            std::panic::panic_any(42_u32);
            #[allow(unreachable_code)] // The type of the future's output.
            Ok::<_, BoxError>(())
        });
    let error = svc.oneshot(test_message("t", "x")).await.unwrap_err();
    assert_eq!(panicked(&error).message(), None);
    assert_eq!(
        error.to_string(),
        "the service panicked (with a payload that is not a string)"
    );
}

/// One panicking message: the service goes on with the next ones.
#[tokio::test]
async fn the_service_keeps_working_after_a_panic() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let mut svc = ServiceBuilder::new()
        .catch_panic()
        .service_fn(move |m: Message| {
            c.fetch_add(1, Ordering::Relaxed);
            async move {
                assert_ne!(&m.payload()[..], b"boom", "boom");
                Ok::<_, BoxError>(())
            }
        });
    for payload in ["a", "boom", "b", "boom", "c"] {
        let result = svc
            .ready()
            .await
            .unwrap()
            .call(test_message("t", payload))
            .await;
        assert_eq!(result.is_err(), payload == "boom", "{payload}");
    }
    assert_eq!(calls.load(Ordering::Relaxed), 5);
}

#[tokio::test]
async fn errors_pass_unchanged() {
    let svc = ServiceBuilder::new()
        .catch_panic()
        .service_fn(|_: Message| async { Err::<(), _>(std::io::Error::other("disk full")) });
    let error = svc.oneshot(test_message("t", "x")).await.unwrap_err();
    assert!(error.is::<std::io::Error>());
}

/// A panic is a failure like any other: the consumer's rule decides.
#[tokio::test]
async fn the_consumer_rule_decides_what_a_panic_does_to_the_message() {
    let svc = ServiceBuilder::new()
        .catch_panic()
        .service_fn(|_: Message| async {
            panic!("always");
            #[allow(unreachable_code)] // The type of the future's output.
            Ok::<_, BoxError>(())
        });
    let d = disposition(svc, test_message("t", "x"), AckPolicy::default()).await;
    assert_eq!(d, Disposition::Redeliver);
    let reject = AckPolicy {
        on_success: OnSuccess::Ack,
        on_failure: OnFailure::Reject,
    };
    assert_eq!(
        disposition(svc, test_message("t", "x"), reject).await,
        Disposition::Reject
    );
}

/// The layer takes any request type: here it sits below a decode layer.
#[cfg(feature = "json")]
#[tokio::test]
async fn it_fits_below_a_layer_that_changes_the_request() {
    use crate::decode::Decoded;
    let svc = ServiceBuilder::new()
        .decode_json::<u8>()
        .catch_panic()
        .service_fn(|d: Decoded<u8>| async move {
            assert!(d.value > 0, "zero");
            Ok::<_, BoxError>(())
        });
    let error = svc.oneshot(test_message("t", "0")).await.unwrap_err();
    assert_eq!(panicked(&error).message(), Some("zero"));
}

#[tokio::test]
async fn service_layer_and_future_are_debug() {
    let layer = CatchPanicLayer::new();
    assert_eq!(format!("{layer:?}"), "CatchPanicLayer { _priv: () }");
    let mut svc = tower_layer::Layer::layer(
        &layer,
        service_fn(|m: Message| {
            assert_ne!(&m.payload()[..], b"call", "in call");
            async move {
                assert_ne!(&m.payload()[..], b"future", "in the future");
                Ok::<_, BoxError>(())
            }
        }),
    );
    assert!(format!("{svc:?}").starts_with("CatchPanic"), "{svc:?}");
    let fine = svc.ready().await.unwrap().call(test_message("t", "x"));
    assert_eq!(format!("{fine:?}"), r#"ResponseFuture { state: "called" }"#);
    fine.await.unwrap();
    let in_call = svc.ready().await.unwrap().call(test_message("t", "call"));
    assert!(format!("{in_call:?}").contains("in call"), "{in_call:?}");
    in_call.await.unwrap_err();
    let mut in_future = Box::pin(svc.ready().await.unwrap().call(test_message("t", "future")));
    (&mut in_future).await.unwrap_err();
    // The panicked future has been dropped.
    assert!(
        format!("{in_future:?}").contains("panicked: None"),
        "{in_future:?}"
    );
}
