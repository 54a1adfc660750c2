//! The failure-handling layers against a real broker (a private mosquitto per test):
//! what they do to acknowledgements, redeliveries and the consumer itself.
//!
//! Every test runs the stack of the `ServiceBuilderExt` example:
//! `catch_panic()` / `retry_messages(..)` / `decode_json::<Reading>()`.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{left_in_session, publish, spawn, unique, with_timeout, Broker, Ev};
use tower::ServiceBuilder;
use tower_mqtt::{Consumer, Disposition, DownReason, OnFailure, ProtoVer, RejectReason, Status};
use tower_mqtt_layers::decode::Decoded;
use tower_mqtt_layers::retry::{Attempt, RetryPolicy, Transient};
use tower_mqtt_layers::ServiceBuilderExt;

#[derive(Debug, serde::Deserialize)]
struct Reading {
    sensor: String,
    celsius: f64,
}

/// The whole stack, over a handler that fails the first `failures` calls for each
/// sensor with a transient error and panics on readings of 100 °C or more. Records
/// every call: sensor -> (calls, attempt numbers seen).
fn stack(
    attempts: u32,
    failures: u32,
    calls: &Arc<Mutex<HashMap<String, Vec<u32>>>>,
) -> impl tower::Service<
    tower_mqtt::Message,
    Response = (),
    Error = tower_mqtt::BoxError,
    Future = impl std::future::Future<Output = Result<(), tower_mqtt::BoxError>> + Send,
> + Clone
       + Send
       + 'static {
    let policy = RetryPolicy::new(attempts)
        .backoff(Duration::from_millis(10), Duration::from_millis(50), 0.5)
        .expect("a valid backoff");
    let calls = calls.clone();
    ServiceBuilder::new()
        .catch_panic()
        .retry_messages(policy)
        .decode_json::<Reading>()
        .service_fn(move |Decoded { message, value }: Decoded<Reading>| {
            let seen = {
                let mut calls = calls.lock().unwrap();
                let mine = calls.entry(value.sensor.clone()).or_default();
                mine.push(Attempt::of(&message));
                mine.len()
            };
            async move {
                assert!(
                    value.celsius < 100.0,
                    "{} reads {} °C",
                    value.sensor,
                    value.celsius
                );
                if seen <= failures as usize {
                    return Err::<(), tower_mqtt::BoxError>(Transient::new("database busy").into());
                }
                Ok(())
            }
        })
}

fn reading(sensor: &str, celsius: f64) -> String {
    format!(r#"{{"sensor":"{sensor}","celsius":{celsius}}}"#)
}

fn redeliveries(events: &[Ev]) -> usize {
    events
        .iter()
        .filter(|e| {
            matches!(
                e,
                Ev::Down(DownReason::Redelivery { .. }) | Ev::Start { dup: true, .. }
            )
        })
        .count()
}

/// (a) Three attempts turn two transient failures into one success inside one service
/// call: every message is acknowledged on its first delivery, no redelivery.
#[tokio::test]
async fn retry_turns_two_transient_failures_into_one_success_without_a_redelivery() {
    with_timeout(Duration::from_secs(60), async {
        let broker = Broker::start();
        let (id, topic) = (unique("retry"), unique("t"));
        let calls = Arc::default();
        // The consumer's own rule would redeliver a failure quickly.
        let builder = Consumer::builder(broker.config(&id))
            .on_failure(OnFailure::Redeliver)
            .redeliver_after(Duration::from_millis(100));
        let running = spawn(builder, &topic, stack(3, 2, &calls)).await;
        let sensors: Vec<String> = (0..5).map(|i| format!("s{i}")).collect();
        let payloads: Vec<String> = sensors.iter().map(|s| reading(s, 21.5)).collect();
        publish(&broker, &topic, &payloads).await;
        running
            .events
            .wait_count(5, |e| matches!(e, Ev::Ack { .. }))
            .await;
        let events = running.events.all();
        running.stop().await.expect("a clean shutdown");

        for e in &events {
            if let Ev::Ack {
                status,
                disposition,
                ..
            } = e
            {
                assert_eq!(
                    (*status, *disposition),
                    (Status::Success, Disposition::Ack),
                    "{events:#?}"
                );
            }
        }
        assert_eq!(redeliveries(&events), 0, "{events:#?}");
        let calls = calls.lock().unwrap().clone();
        for sensor in &sensors {
            assert_eq!(
                calls[sensor],
                [1, 2, 3],
                "{sensor}: attempts seen by the service"
            );
        }
        assert!(left_in_session(&broker, &id, &topic).await.is_empty());
    })
    .await;
}

/// The control for (a): with two attempts the second failure reaches the consumer,
/// whose rule brings the message back by resuming the session (the third call, on the
/// redelivery, succeeds). So the test above would see a redelivery if there were one.
#[tokio::test]
async fn with_too_few_attempts_the_consumer_redelivers() {
    with_timeout(Duration::from_secs(60), async {
        let broker = Broker::start();
        let (id, topic) = (unique("retry-control"), unique("t"));
        let calls = Arc::default();
        let builder = Consumer::builder(broker.config(&id))
            .on_failure(OnFailure::Redeliver)
            .redeliver_after(Duration::from_millis(100));
        let running = spawn(builder, &topic, stack(2, 2, &calls)).await;
        publish(&broker, &topic, &[reading("s0", 21.5)]).await;
        running
            .events
            .wait_count(1, |e| {
                matches!(
                    e,
                    Ev::Ack {
                        status: Status::Success,
                        ..
                    }
                )
            })
            .await;
        let events = running.events.all();
        running.stop().await.expect("a clean shutdown");

        assert!(
            events
                .iter()
                .any(|e| matches!(e, Ev::Down(DownReason::Redelivery { .. }))),
            "{events:#?}"
        );
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Ev::Start { dup: true, .. })),
            "{events:#?}"
        );
        // Two attempts on the first delivery, a fresh first attempt on the redelivery.
        assert_eq!(calls.lock().unwrap()["s0"], [1, 2, 1]);
        assert!(left_in_session(&broker, &id, &topic).await.is_empty());
    })
    .await;
}

/// (b) An invalid JSON payload is acknowledged as failed (MQTT 5: reason 0x99) on its
/// first delivery, whatever the consumer's rule, is never retried, never reaches the
/// service, and is not redelivered: the session holds nothing afterwards.
#[tokio::test]
async fn invalid_json_is_acknowledged_as_failed_and_not_redelivered() {
    with_timeout(Duration::from_secs(60), async {
        let broker = Broker::start();
        let (id, topic) = (unique("decode"), unique("t"));
        let calls = Arc::default();
        let builder = Consumer::builder(broker.config(&id).proto_ver(ProtoVer::V5))
            .on_failure(OnFailure::Redeliver)
            .redeliver_after(Duration::from_millis(100));
        let running = spawn(builder, &topic, stack(3, 0, &calls)).await;
        let payloads = [
            reading("ok-1", 20.0),
            "21.5 °C".to_owned(),
            r#"{"sensor":"no-celsius"}"#.to_owned(),
            reading("ok-2", 22.0),
        ];
        publish(&broker, &topic, &payloads).await;
        running
            .events
            .wait_count(4, |e| matches!(e, Ev::Ack { .. }))
            .await;
        let events = running.events.all();
        running.stop().await.expect("a clean shutdown");

        let rejected = Disposition::RejectWith(RejectReason::PayloadFormatInvalid);
        let count = |status: Status, disposition: Disposition| {
            events
                .iter()
                .filter(|e| matches!(e, Ev::Ack { status: s, disposition: d, .. } if *s == status && *d == disposition))
                .count()
        };
        assert_eq!(count(Status::Failure, rejected), 2, "{events:#?}");
        assert_eq!(count(Status::Success, Disposition::Ack), 2, "{events:#?}");
        assert_eq!(redeliveries(&events), 0, "{events:#?}");
        let calls = calls.lock().unwrap().clone();
        let mut seen: Vec<&str> = calls.keys().map(String::as_str).collect();
        seen.sort_unstable();
        assert_eq!(seen, ["ok-1", "ok-2"], "only valid payloads reach the service");
        let left = left_in_session(&broker, &id, &topic).await;
        assert!(left.is_empty(), "{} message(s) came back: {left:?}", left.len());
    })
    .await;
}

/// (c) A panicking message fails alone: the consumer's rule (here `Reject`) applies
/// to it, the messages around it are acknowledged, and the consumer keeps its
/// connection and shuts down cleanly.
#[tokio::test]
async fn a_panicking_message_fails_alone_and_the_stream_finishes() {
    with_timeout(Duration::from_secs(60), async {
        let broker = Broker::start();
        let (id, topic) = (unique("panic"), unique("t"));
        let calls = Arc::default();
        let builder = Consumer::builder(broker.config(&id)).on_failure(OnFailure::Reject);
        let running = spawn(builder, &topic, stack(3, 0, &calls)).await;
        let payloads = [
            reading("s0", 20.0),
            reading("s1", 21.0),
            reading("hot", 150.0),
            reading("s3", 23.0),
            reading("s4", 24.0),
        ];
        publish(&broker, &topic, &payloads).await;
        running
            .events
            .wait_count(5, |e| matches!(e, Ev::Ack { .. }))
            .await;
        // The connection is still there: a later message goes through too.
        publish(&broker, &topic, &[reading("after", 25.0)]).await;
        running
            .events
            .wait_count(6, |e| matches!(e, Ev::Ack { .. }))
            .await;
        let events = running.events.all();
        running
            .stop()
            .await
            .expect("run ends cleanly, not with RunError::Panicked");

        let failed: Vec<&Ev> = events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Ev::Ack {
                        status: Status::Failure,
                        ..
                    }
                )
            })
            .collect();
        assert_eq!(failed.len(), 1, "{events:#?}");
        assert!(
            matches!(
                failed[0],
                Ev::Ack {
                    disposition: Disposition::Reject,
                    ..
                }
            ),
            "{events:#?}"
        );
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(
                    e,
                    Ev::Ack {
                        status: Status::Success,
                        ..
                    }
                ))
                .count(),
            5
        );
        // One connection throughout: no drop, no restart before the shutdown.
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, Ev::Down(_) | Ev::Terminate(_))),
            "{events:#?}"
        );
        // A panic is not transient: called once.
        assert_eq!(calls.lock().unwrap()["hot"], [1]);
        assert!(left_in_session(&broker, &id, &topic).await.is_empty());
    })
    .await;
}
