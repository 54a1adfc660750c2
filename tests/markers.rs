//! Marker errors and classifiers decide one message's disposition, checked on the wire
//! (MQTT 5 reason codes in PUBACK / PUBREC, decoded from a recording proxy) and by
//! asking the broker what it still holds for the session.

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::consumer::*;
use support::proxy::{ack_reasons, Proxy};
use support::*;
use tower::service_fn;
use tower_mqtt::disposition::{Permanent, Redeliver, Reject, RejectReason};
use tower_mqtt::{BoxError, Disposition, Message, OnFailure, ProtoVer, QoS as Q, Status};

/// An error type of the service's own that wraps the marker: markers are found through
/// the source chain.
#[derive(Debug)]
struct Wrapped(BoxError);

impl std::fmt::Display for Wrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "handler failed")
    }
}

impl std::error::Error for Wrapped {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// Every message fails with `make()`; the consumer's own rule is `OnFailure::Redeliver`,
/// which the marker must override. Returns the reason codes seen on the wire and checks
/// that nothing is left in the session.
async fn marked_failures_are_acknowledged(
    qos: Q,
    make: fn() -> BoxError,
    expect: Disposition,
) -> Vec<u8> {
    let broker = Broker::start(BrokerOptions::default());
    let proxy = Proxy::start(broker.port()).await;
    let id = unique("marker");
    let topic = unique("t");
    let n = 20;
    let svc = service_fn(move |_m: Message| async move { Err::<(), BoxError>(make()) });
    let config = config(&broker, &id)
        .port(proxy.port())
        .proto_ver(ProtoVer::V5);
    let running = spawn(builder(config, &topic, qos), svc);
    running.events.wait_subscribed(1, 1).await;
    publish_many(&broker, &topic, rqos(qos), payloads("m", n)).await;
    running
        .events
        .wait_count(n, Duration::from_secs(20), |e| {
            matches!(e, Ev::Ack { status: Status::Failure, disposition, .. } if *disposition == expect)
        })
        .await;
    running.stop().await.expect("clean shutdown");
    let recordings = proxy.recordings();
    assert_eq!(
        recordings.len(),
        1,
        "no redelivery reconnect: the marker wins"
    );
    let reasons: Vec<u8> = ack_reasons(&recordings[0])
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    assert_eq!(reasons.len(), n, "every marked message is acknowledged");
    let left = left_in_session(&broker, &id, &topic, 1).await;
    assert!(
        left.is_empty(),
        "{} marked message(s) came back",
        left.len()
    );
    reasons
}

#[tokio::test]
async fn a_reject_marker_sends_its_reason_code_in_the_puback() {
    with_timeout(Duration::from_secs(60), async {
        let reasons = marked_failures_are_acknowledged(
            Q::AtLeastOnce,
            || Reject::new(RejectReason::PayloadFormatInvalid, "not JSON").into(),
            Disposition::RejectWith(RejectReason::PayloadFormatInvalid),
        )
        .await;
        assert!(reasons.iter().all(|&r| r == 0x99), "{reasons:x?}");
    })
    .await;
}

#[tokio::test]
async fn a_reject_marker_inside_another_error_sends_its_reason_code_in_the_pubrec() {
    with_timeout(Duration::from_secs(60), async {
        let reasons = marked_failures_are_acknowledged(
            Q::ExactlyOnce,
            || {
                let marker = Reject::new(RejectReason::ImplementationSpecificError, "no");
                Box::new(Wrapped(marker.into()))
            },
            Disposition::RejectWith(RejectReason::ImplementationSpecificError),
        )
        .await;
        assert!(reasons.iter().all(|&r| r == 0x83), "{reasons:x?}");
    })
    .await;
}

#[tokio::test]
async fn a_permanent_marker_is_acknowledged_as_failed_and_never_redelivered() {
    with_timeout(Duration::from_secs(60), async {
        let reasons = marked_failures_are_acknowledged(
            Q::AtLeastOnce,
            || Permanent::new("schema mismatch").into(),
            Disposition::Reject,
        )
        .await;
        assert!(reasons.iter().all(|&r| r == 0x80), "{reasons:x?}");
    })
    .await;
}

/// With `OnFailure::Ack` (failures are dropped), a message whose first attempt fails
/// with the `Redeliver` marker still comes back, with DUP set, and succeeds; plain
/// failures are acknowledged and dropped.
#[tokio::test]
async fn a_redeliver_marker_brings_the_message_back_whatever_on_failure_says() {
    with_timeout(Duration::from_secs(60), async {
        let broker = Broker::start(BrokerOptions::default());
        let proxy = Proxy::start(broker.port()).await;
        let id = unique("redeliver-marker");
        let topic = unique("t");
        let seen = Arc::new(Mutex::new(HashSet::new()));
        let s = seen.clone();
        let svc = service_fn(move |m: Message| {
            let first = s.lock().unwrap().insert(m.payload().clone());
            let marked = m.payload().starts_with(b"retry");
            async move {
                match (first, marked) {
                    (true, true) => Err::<(), BoxError>(Redeliver::new("db busy").into()),
                    (_, false) => Err("bad input".into()),
                    (false, true) => Ok(()),
                }
            }
        });
        let config = config(&broker, &id)
            .port(proxy.port())
            .proto_ver(ProtoVer::V5);
        let running = spawn(
            builder(config, &topic, Q::AtLeastOnce)
                .on_failure(OnFailure::Ack)
                .redeliver_after(Duration::from_millis(200)),
            svc,
        );
        running.events.wait_subscribed(1, 1).await;
        let mut messages = payloads("retry", 5);
        messages.extend(payloads("drop", 5));
        publish_many(&broker, &topic, rqos(Q::AtLeastOnce), messages).await;
        running
            .events
            .wait_successes(5, Duration::from_secs(20))
            .await;
        let events = running.events.all();
        running.stop().await.expect("clean shutdown");

        let redelivered = events
            .iter()
            .filter(|e| matches!(e, Ev::Start { dup: true, .. }))
            .count();
        assert_eq!(redelivered, 5, "exactly the marked messages come back");
        let dropped = events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Ev::Ack {
                        status: Status::Failure,
                        disposition: Disposition::Ack,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(dropped, 5, "plain failures follow on_failure(Ack)");
        assert!(proxy.recordings().len() >= 2, "the session was resumed");
        let left = left_in_session(&broker, &id, &topic, 1).await;
        assert!(left.is_empty(), "{} message(s) left", left.len());
    })
    .await;
}

/// A classifier closure replaces on_success / on_failure: here every failure is
/// rejected, which MQTT 5 carries as reason 0x80.
#[tokio::test]
async fn a_classifier_closure_decides_failures() {
    with_timeout(Duration::from_secs(60), async {
        let broker = Broker::start(BrokerOptions::default());
        let proxy = Proxy::start(broker.port()).await;
        let id = unique("classify");
        let topic = unique("t");
        let svc = service_fn(|m: Message| async move {
            if m.payload().starts_with(b"ok") {
                Ok(())
            } else {
                Err::<(), BoxError>("no".into())
            }
        });
        let config = config(&broker, &id)
            .port(proxy.port())
            .proto_ver(ProtoVer::V5);
        let classify = |r: Result<(), &BoxError>| match r {
            Ok(()) => Disposition::Ack,
            Err(_) => Disposition::Reject,
        };
        let running = spawn(
            builder(config, &topic, Q::AtLeastOnce).classify(classify),
            svc,
        );
        running.events.wait_subscribed(1, 1).await;
        let mut messages = payloads("ok", 3);
        messages.extend(payloads("no", 3));
        publish_many(&broker, &topic, rqos(Q::AtLeastOnce), messages).await;
        running
            .events
            .wait_count(6, Duration::from_secs(20), |e| matches!(e, Ev::Ack { .. }))
            .await;
        running.stop().await.expect("clean shutdown");
        let mut reasons: Vec<u8> = ack_reasons(&proxy.recordings()[0])
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        reasons.sort_unstable();
        assert_eq!(reasons, [0x00, 0x00, 0x00, 0x80, 0x80, 0x80]);
    })
    .await;
}

#[test]
fn classify_and_on_failure_together_are_a_typed_error() {
    let classify = |_: Result<(), &BoxError>| Disposition::Ack;
    let err = tower_mqtt::Consumer::builder(tower_mqtt::Config::new("localhost").client_id("c"))
        .topic("t", Q::AtLeastOnce)
        .on_failure(OnFailure::Ack)
        .classify(classify)
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, tower_mqtt::ConfigError::ConflictingOption { option, .. } if option == "classify"),
        "{err:?}"
    );
    assert!(err.to_string().contains("classify"), "{err}");
}

/// With a classifier there is no `on_failure(Redeliver)` to refuse under
/// `clean_start(true)`: a `Redeliver` decision becomes `Leave` at run time instead.
#[test]
fn a_classifier_is_allowed_with_clean_start() {
    let classify = |_: Result<(), &BoxError>| Disposition::Redeliver;
    tower_mqtt::Consumer::builder(tower_mqtt::Config::new("localhost").clean_start(true))
        .topic("t", Q::AtLeastOnce)
        .classify(classify)
        .build()
        .expect("a classifier needs no session");
}
