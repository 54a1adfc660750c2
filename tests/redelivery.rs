//! What happens to failures: Noop, Redeliver, Ack, Reject.

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::consumer::*;
use support::*;
use tower::service_fn;
use tower_mqtt::{
    BoxError, Disposition, DownReason, Message, OnFailure, ProtoVer, QoS as Q, Status,
};

async fn noop_failures_come_back(qos: Q) {
    let broker = Broker::start(BrokerOptions::default());
    let id = unique("noop");
    let topic = unique("t");
    let svc = service_fn(|m: Message| async move {
        if m.payload().starts_with(b"bad") {
            Err::<(), BoxError>("rejected by the test".into())
        } else {
            Ok(())
        }
    });
    let first = spawn(
        builder(config(&broker, &id), &topic, qos).on_failure(OnFailure::Noop),
        svc,
    );
    first.events.wait_subscribed(1, 1).await;
    let mut messages = Vec::new();
    for i in 0..10 {
        messages.push(format!("good-{i}").into_bytes());
        if i % 2 == 0 {
            messages.push(format!("bad-{i}").into_bytes());
        }
    }
    publish_many(&broker, &topic, rqos(qos), messages).await;
    first
        .events
        .wait_count(15, Duration::from_secs(20), |e| matches!(e, Ev::Ack { .. }))
        .await;
    assert_eq!(
        first.events.count(|e| matches!(
            e,
            Ev::Ack {
                disposition: Disposition::Leave,
                ..
            }
        )),
        5
    );
    first.stop().await.unwrap();
    broker
        .wait_for_log(
            &format!("Client {id}_0 disconnected"),
            Duration::from_secs(10),
        )
        .await;

    // The next session gets exactly the five failures back, marked as redeliveries.
    let processed = Processed::default();
    let p = processed.clone();
    let second = spawn(
        builder(config(&broker, &id), &topic, qos),
        service_fn(move |m: Message| {
            p.record(m.payload());
            async { Ok::<_, BoxError>(()) }
        }),
    );
    second
        .events
        .wait_successes(5, Duration::from_secs(20))
        .await;
    let expected: HashSet<Vec<u8>> = (0..10)
        .step_by(2)
        .map(|i| format!("bad-{i}").into_bytes())
        .collect();
    assert_eq!(processed.set(), expected);
    assert_eq!(
        second
            .events
            .count(|e| matches!(e, Ev::Start { dup: true, .. })),
        5,
        "redelivered messages carry DUP"
    );
    second.stop().await.unwrap();
}

#[tokio::test]
async fn noop_failures_come_back_on_the_next_session_at_qos1() {
    with_timeout(
        Duration::from_secs(60),
        noop_failures_come_back(Q::AtLeastOnce),
    )
    .await;
}

#[tokio::test]
async fn noop_failures_come_back_on_the_next_session_at_qos2() {
    with_timeout(
        Duration::from_secs(60),
        noop_failures_come_back(Q::ExactlyOnce),
    )
    .await;
}

/// Every message fails on its first attempt; Redeliver must bring each one back on a
/// resumed session until the whole stream is processed.
async fn redeliver_finishes_when_every_first_attempt_fails(
    qos: Q,
    proto: ProtoVer,
    max_inflight: usize,
) {
    let broker = Broker::start(BrokerOptions::default());
    let id = unique("redeliver");
    let topic = unique("t");
    let n = 1000;
    let attempted = Arc::new(Mutex::new(HashSet::new()));
    let processed = Processed::default();
    let (a, p) = (attempted.clone(), processed.clone());
    let svc = service_fn(move |m: Message| {
        let first_attempt = a.lock().unwrap().insert(m.payload().clone());
        if !first_attempt {
            p.record(m.payload());
        }
        async move {
            if first_attempt {
                Err::<(), BoxError>("first attempt fails".into())
            } else {
                Ok(())
            }
        }
    });
    let running = spawn(
        builder(config(&broker, &id).proto_ver(proto), &topic, qos)
            .on_failure(OnFailure::Redeliver)
            .max_inflight(max_inflight)
            .redeliver_after(Duration::from_millis(200)),
        svc,
    );
    running.events.wait_subscribed(1, 1).await;
    publish_many(&broker, &topic, rqos(qos), payloads("r", n)).await;
    running
        .events
        .wait_successes(n, Duration::from_secs(90))
        .await;
    let cycles = running
        .events
        .count(|e| matches!(e, Ev::Down(_, DownReason::Redelivery { .. })));
    let redelivered = running
        .events
        .count(|e| matches!(e, Ev::Start { dup: true, .. }));
    running.stop().await.unwrap();

    assert_eq!(processed.distinct(), n);
    assert!(
        processed.duplicates().is_empty(),
        "{:?}",
        processed.duplicates()
    );
    assert!(cycles >= 1, "failures came back through session resumes");
    assert!(
        redelivered >= n,
        "each message came back with DUP set ({redelivered})"
    );
    let left = left_in_session(&broker, &id, &topic, 1).await;
    assert!(left.is_empty(), "{} left unacknowledged", left.len());
}

#[tokio::test]
async fn redeliver_finishes_the_stream_when_every_first_attempt_fails_at_qos1() {
    with_timeout(
        Duration::from_secs(120),
        redeliver_finishes_when_every_first_attempt_fails(Q::AtLeastOnce, ProtoVer::V4, 100),
    )
    .await;
}

#[tokio::test]
async fn redeliver_finishes_the_stream_when_every_first_attempt_fails_at_qos2() {
    with_timeout(
        Duration::from_secs(120),
        redeliver_finishes_when_every_first_attempt_fails(Q::ExactlyOnce, ProtoVer::V4, 100),
    )
    .await;
}

/// With MQTT 5 the window is exactly max_inflight (Receive Maximum), so failures fill
/// it quickly: the cycle must start as soon as they do.
#[tokio::test]
async fn redeliver_finishes_the_stream_with_mqtt5_and_a_small_window() {
    with_timeout(
        Duration::from_secs(120),
        redeliver_finishes_when_every_first_attempt_fails(Q::AtLeastOnce, ProtoVer::V5, 10),
    )
    .await;
}

async fn failures_are_acknowledged(on_failure: OnFailure, proto: ProtoVer, expect: Disposition) {
    let broker = Broker::start(BrokerOptions::default());
    let id = unique("ackfail");
    let topic = unique("t");
    let svc = service_fn(|_m: Message| async { Err::<(), BoxError>("always fails".into()) });
    let running = spawn(
        builder(
            config(&broker, &id).proto_ver(proto),
            &topic,
            Q::AtLeastOnce,
        )
        .on_failure(on_failure),
        svc,
    );
    running.events.wait_subscribed(1, 1).await;
    publish_many(&broker, &topic, rqos(Q::AtLeastOnce), payloads("f", 100)).await;
    running
        .events
        .wait_count(100, Duration::from_secs(20), |e| {
            matches!(e, Ev::Ack { status: Status::Failure, disposition, .. } if *disposition == expect)
        })
        .await;
    running.stop().await.unwrap();
    let left = left_in_session(&broker, &id, &topic, 1).await;
    assert!(
        left.is_empty(),
        "acknowledged failures must not come back ({})",
        left.len()
    );
}

#[tokio::test]
async fn ack_on_failure_acknowledges_and_drops_the_message() {
    with_timeout(
        Duration::from_secs(60),
        failures_are_acknowledged(OnFailure::Ack, ProtoVer::V4, Disposition::Ack),
    )
    .await;
}

#[tokio::test]
async fn reject_on_failure_acknowledges_with_an_error_reason_on_mqtt5() {
    with_timeout(
        Duration::from_secs(60),
        failures_are_acknowledged(OnFailure::Reject, ProtoVer::V5, Disposition::Reject),
    )
    .await;
}

/// Once failures fill the window, the connection takes no new message until the
/// redelivery reconnect, even when calls fail at once (finished inside the dispatch
/// loop). Checked over the event log: between the failure that fills the window and the
/// reconnect, no message starts.
async fn no_new_work_once_failures_fill_the_window(max_inflight: usize) {
    let broker = Broker::start(BrokerOptions::default());
    let id = unique("full");
    let topic = unique("t");
    let n = 30;
    let attempted = Arc::new(Mutex::new(HashSet::new()));
    let a = attempted.clone();
    // Fails synchronously on the first attempt: the future is ready at its first poll.
    let svc = service_fn(move |m: Message| {
        let first = a.lock().unwrap().insert(m.payload().clone());
        std::future::ready(if first {
            Err::<(), BoxError>("first attempt fails".into())
        } else {
            Ok(())
        })
    });
    let running = spawn(
        builder(config(&broker, &id), &topic, Q::AtLeastOnce)
            .max_inflight(max_inflight)
            .redeliver_after(Duration::from_secs(30)),
        svc,
    );
    running.events.wait_subscribed(1, 1).await;
    publish_many(&broker, &topic, rqos(Q::AtLeastOnce), payloads("w", n)).await;
    running
        .events
        .wait_successes(n, Duration::from_secs(60))
        .await;
    let events = running.events.all();
    running.stop().await.unwrap();

    let (mut withheld, mut closing) = (0, false);
    for (i, e) in events.iter().enumerate() {
        match e {
            Ev::Up { .. } => (withheld, closing) = (0, false),
            Ev::Ack { disposition: Disposition::Redeliver, .. } => {
                withheld += 1;
                closing |= withheld >= max_inflight;
            }
            Ev::Start { .. } => assert!(
                !closing,
                "event {i}: a message started after {withheld} failures filled a window of {max_inflight}"
            ),
            _ => {}
        }
    }
}

#[tokio::test]
async fn no_new_message_is_taken_once_failures_fill_a_window_of_one() {
    with_timeout(
        Duration::from_secs(90),
        no_new_work_once_failures_fill_the_window(1),
    )
    .await;
}

#[tokio::test]
async fn no_new_message_is_taken_once_failures_fill_a_window_of_three() {
    with_timeout(
        Duration::from_secs(90),
        no_new_work_once_failures_fill_the_window(3),
    )
    .await;
}
