use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_mqtt::disposition::marker;
use tower_mqtt::testing::{disposition, test_message, TestMessage};
use tower_mqtt::{AckPolicy, BoxError, Disposition, Message, OnFailure, OnSuccess, Permanent};
use tower_service::Service;

use super::*;
use crate::ServiceBuilderExt;

/// `max_deliveries(limit)` over a service that always fails and counts its calls.
fn always_failing(
    limit: u32,
    calls: &Arc<AtomicU32>,
) -> impl Service<Message, Response = (), Error = BoxError, Future = impl Send> + Clone {
    let calls = calls.clone();
    ServiceBuilder::new()
        .max_deliveries(limit)
        .unwrap()
        .service_fn(move |_: Message| {
            calls.fetch_add(1, Ordering::Relaxed);
            async { Err::<(), BoxError>("the database rejects it".into()) }
        })
}

fn too_many(error: &BoxError) -> &TooManyDeliveries {
    let permanent = error
        .downcast_ref::<Permanent>()
        .unwrap_or_else(|| panic!("not in a Permanent marker: {error}"));
    std::error::Error::source(permanent)
        .and_then(|e| e.downcast_ref::<TooManyDeliveries>())
        .unwrap_or_else(|| panic!("not TooManyDeliveries: {error}"))
}

#[tokio::test]
async fn deliveries_up_to_the_limit_reach_the_service() {
    let calls = Arc::new(AtomicU32::new(0));
    let svc = always_failing(3, &calls);
    for count in 1..=3 {
        let message = test_message("t", "x").with_delivery_count(count);
        let error = svc.clone().oneshot(message).await.unwrap_err();
        assert_eq!(error.to_string(), "the database rejects it");
        assert_eq!(marker(&*error), None, "the consumer's rule decides");
    }
    assert_eq!(calls.load(Ordering::Relaxed), 3);
}

#[tokio::test]
async fn above_the_limit_the_service_is_not_called_and_the_error_is_permanent() {
    let calls = Arc::new(AtomicU32::new(0));
    let svc = always_failing(3, &calls);
    for count in [4, 5, u32::MAX] {
        let message = test_message("orders/eu", "x").with_delivery_count(count);
        let error = svc.clone().oneshot(message).await.unwrap_err();
        let e = too_many(&error);
        assert_eq!(
            (e.topic(), e.deliveries(), e.limit()),
            ("orders/eu", count, 3)
        );
        assert_eq!(marker(&*error), Some(Disposition::Reject));
        assert!(
            error
                .to_string()
                .starts_with("permanent failure: the message on topic"),
            "{error}"
        );
    }
    assert_eq!(calls.load(Ordering::Relaxed), 0);
}

/// What the consumer does with the result: its own rule up to the limit, then an
/// acknowledgement as failed (never a redelivery), whatever `on_failure` says.
#[tokio::test]
async fn the_consumer_acknowledges_a_message_above_the_limit_as_failed() {
    let calls = Arc::new(AtomicU32::new(0));
    let svc = always_failing(2, &calls);
    let at = |count| test_message("t", "x").with_delivery_count(count);
    let redeliver = AckPolicy::default();
    assert_eq!(redeliver.on_failure, OnFailure::Redeliver);
    assert_eq!(
        disposition(svc.clone(), at(1), redeliver).await,
        Disposition::Redeliver
    );
    assert_eq!(
        disposition(svc.clone(), at(2), redeliver).await,
        Disposition::Redeliver
    );
    assert_eq!(
        disposition(svc.clone(), at(3), redeliver).await,
        Disposition::Reject
    );
    let noop = AckPolicy {
        on_success: OnSuccess::Ack,
        on_failure: OnFailure::Noop,
    };
    assert_eq!(disposition(svc, at(3), noop).await, Disposition::Reject);
    assert_eq!(calls.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn successes_pass_unchanged() {
    let svc = ServiceBuilder::new()
        .max_deliveries(1)
        .unwrap()
        .service_fn(|m: Message| async move { Ok::<_, BoxError>(m.delivery_count()) });
    assert_eq!(svc.oneshot(test_message("t", "x")).await.unwrap(), 1);
}

#[test]
fn a_limit_of_zero_is_a_typed_error() {
    assert_eq!(
        MaxDeliveriesLayer::new(0).unwrap_err(),
        InvalidMaxDeliveries::Zero
    );
    assert_eq!(
        MaxDeliveries::new((), 0).unwrap_err(),
        InvalidMaxDeliveries::Zero
    );
    let error = ServiceBuilder::new().max_deliveries(0).unwrap_err();
    assert_eq!(
        error.to_string(),
        "max_deliveries(0): the limit is how many deliveries of a message the service may \
         see, so it must be at least 1 (1 stops a message after its first failed delivery)"
    );
    assert_eq!(MaxDeliveriesLayer::new(7).unwrap().limit(), 7);
    assert_eq!(MaxDeliveries::new((), 7).unwrap().limit(), 7);
}

#[tokio::test]
async fn service_layer_and_future_are_debug() {
    let layer = MaxDeliveriesLayer::new(1).unwrap();
    assert_eq!(format!("{layer:?}"), "MaxDeliveriesLayer { limit: 1 }");
    let mut svc = tower_layer::Layer::layer(
        &layer,
        service_fn(|_: Message| async { Ok::<_, BoxError>(()) }),
    );
    assert!(format!("{svc:?}").starts_with("MaxDeliveries"), "{svc:?}");
    let called = svc.ready().await.unwrap().call(test_message("t", "x"));
    assert_eq!(
        format!("{called:?}"),
        r#"ResponseFuture { state: "called" }"#
    );
    called.await.unwrap();
    let stopped = svc
        .ready()
        .await
        .unwrap()
        .call(test_message("t", "x").with_delivery_count(2));
    assert!(
        format!("{stopped:?}").contains("too_many: Some(TooManyDeliveries"),
        "{stopped:?}"
    );
    stopped.await.unwrap_err();
}
