//! `tower_mqtt::testing`: messages without a broker, and the disposition a service's
//! result would get.

use std::time::Duration;

use tower::{service_fn, ServiceBuilder};
use tower_mqtt::testing::{disposition, test_message, TestMessage};
use tower_mqtt::{AckPolicy, BoxError, Disposition, Message, OnFailure, OnSuccess, QoS};

fn policy(on_failure: OnFailure) -> AckPolicy {
    AckPolicy {
        on_success: OnSuccess::Ack,
        on_failure,
    }
}

#[tokio::test]
async fn test_messages_carry_what_a_broker_would_send() {
    let m = test_message("sensors/7/temp", "21.5")
        .with_qos(QoS::ExactlyOnce)
        .with_dup(true)
        .with_retain(true)
        .with_pkid(42)
        .with_user_property("traceparent", "00-abc-def-01");
    assert_eq!(m.topic(), "sensors/7/temp");
    assert_eq!(m.payload().as_ref(), b"21.5");
    assert_eq!(m.qos(), QoS::ExactlyOnce);
    assert!(m.dup() && m.retain());
    assert_eq!(m.pkid(), 42);
    assert_eq!(m.producer_index(), 0);
    assert_eq!(m.subscription(), Some("sensors/7/temp"));
    assert_eq!(
        m.properties().unwrap().user_property("traceparent"),
        Some("00-abc-def-01")
    );
    assert_eq!(test_message("a", "x").with_qos(QoS::AtMostOnce).pkid(), 0);
}

#[tokio::test]
async fn the_disposition_follows_the_policy() {
    let svc = service_fn(|m: Message| async move {
        if m.payload().as_ref() == b"bad" {
            Err::<(), BoxError>("bad payload".into())
        } else {
            Ok(())
        }
    });
    let ok = || test_message("t", "good");
    let bad = || test_message("t", "bad");
    assert_eq!(
        disposition(svc, ok(), policy(OnFailure::Noop)).await,
        Disposition::Ack
    );
    for (rule, expected) in [
        (OnFailure::Noop, Disposition::Leave),
        (OnFailure::Ack, Disposition::Ack),
        (OnFailure::Redeliver, Disposition::Redeliver),
        (OnFailure::Reject, Disposition::Reject),
    ] {
        assert_eq!(disposition(svc, bad(), policy(rule)).await, expected);
    }
}

#[tokio::test]
async fn a_timeout_layer_turns_a_slow_call_into_a_failure() {
    let slow = ServiceBuilder::new()
        .timeout(Duration::from_millis(10))
        .service(service_fn(|_m: Message| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<(), BoxError>(())
        }));
    assert_eq!(
        disposition(slow, test_message("t", "x"), AckPolicy::default()).await,
        Disposition::Redeliver
    );
}
