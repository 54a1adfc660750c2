//! The failure-handling layers of `tower-mqtt-layers` against a real broker (a private
//! mosquitto per test): what they do to acknowledgements, redeliveries and the
//! consumer itself.
//!
//! Every test runs the stack of the `ServiceBuilderExt` example:
//! `catch_panic()` / `retry_messages(..)` / `decode_json::<Reading>()`.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::consumer::{builder, config, left_in_session, spawn, Ev};
use support::proxy::{ack_reasons, Proxy};
use support::{publish_many, unique, with_timeout, Broker, BrokerOptions, QoS};
use tower::ServiceBuilder;
use tower_mqtt::{
    ConsumerBuilder, Disposition, DownReason, OnFailure, ProtoVer, QoS as Q, RejectReason, Status,
};
use tower_mqtt_layers::decode::Decoded;
use tower_mqtt_layers::retry::{Attempt, RetryPolicy, Transient};
use tower_mqtt_layers::ServiceBuilderExt;

/// How long a wait for consumer events may take.
const WAIT: Duration = Duration::from_secs(20);

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

/// A consumer of `topic` (QoS 1) whose own rule redelivers a failure quickly.
fn redelivering(config: tower_mqtt::Config, topic: &str) -> ConsumerBuilder {
    builder(config, topic, Q::AtLeastOnce)
        .on_failure(OnFailure::Redeliver)
        .redeliver_after(Duration::from_millis(100))
}

fn reading(sensor: &str, celsius: f64) -> String {
    format!(r#"{{"sensor":"{sensor}","celsius":{celsius}}}"#)
}

/// Publish every payload with QoS 1; returns once the broker acknowledged them all.
async fn publish(broker: &Broker, topic: &str, payloads: &[String]) {
    let payloads = payloads.iter().map(|p| p.clone().into_bytes());
    publish_many(broker, topic, QoS::AtLeastOnce, payloads).await;
}

fn is_redelivery(e: &Ev) -> bool {
    matches!(e, Ev::Down(_, DownReason::Redelivery { .. }))
}

fn redeliveries(events: &[Ev]) -> usize {
    events
        .iter()
        .filter(|e| is_redelivery(e) || matches!(e, Ev::Start { dup: true, .. }))
        .count()
}

/// (a) Three attempts turn two transient failures into one success inside one service
/// call: every message is acknowledged on its first delivery, no redelivery.
#[tokio::test]
async fn retry_turns_two_transient_failures_into_one_success_without_a_redelivery() {
    with_timeout(Duration::from_secs(60), async {
        let broker = Broker::start(BrokerOptions::default());
        let (id, topic) = (unique("retry"), unique("t"));
        let calls = Arc::default();
        let running = spawn(
            redelivering(config(&broker, &id), &topic),
            stack(3, 2, &calls),
        );
        running.events.wait_subscribed(1, 1).await;
        let sensors: Vec<String> = (0..5).map(|i| format!("s{i}")).collect();
        let payloads: Vec<String> = sensors.iter().map(|s| reading(s, 21.5)).collect();
        publish(&broker, &topic, &payloads).await;
        running
            .events
            .wait_count(5, WAIT, |e| matches!(e, Ev::Ack { .. }))
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
        assert!(left_in_session(&broker, &id, &topic, 1).await.is_empty());
    })
    .await;
}

/// The control for (a): with two attempts the second failure reaches the consumer,
/// whose rule brings the message back by resuming the session (the third call, on the
/// redelivery, succeeds). So the test above would see a redelivery if there were one.
#[tokio::test]
async fn with_too_few_attempts_the_consumer_redelivers() {
    with_timeout(Duration::from_secs(60), async {
        let broker = Broker::start(BrokerOptions::default());
        let (id, topic) = (unique("retry-control"), unique("t"));
        let calls = Arc::default();
        let running = spawn(
            redelivering(config(&broker, &id), &topic),
            stack(2, 2, &calls),
        );
        running.events.wait_subscribed(1, 1).await;
        publish(&broker, &topic, &[reading("s0", 21.5)]).await;
        running.events.wait_successes(1, WAIT).await;
        let events = running.events.all();
        running.stop().await.expect("a clean shutdown");

        assert!(events.iter().any(is_redelivery), "{events:#?}");
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Ev::Start { dup: true, .. })),
            "{events:#?}"
        );
        // Two attempts on the first delivery, a fresh first attempt on the redelivery.
        assert_eq!(calls.lock().unwrap()["s0"], [1, 2, 1]);
        // Each redelivery closed its connection with a DISCONNECT, then the shutdown did.
        let disconnects = 1 + events.iter().filter(|e| is_redelivery(e)).count();
        assert!(left_in_session(&broker, &id, &topic, disconnects)
            .await
            .is_empty());
    })
    .await;
}

/// (b) An invalid JSON payload is acknowledged as failed (MQTT 5: reason 0x99, checked
/// on the wire) on its first delivery, whatever the consumer's rule, is never retried,
/// never reaches the service, and is not redelivered: the session holds nothing
/// afterwards.
#[tokio::test]
async fn invalid_json_is_acknowledged_as_failed_and_not_redelivered() {
    with_timeout(Duration::from_secs(60), async {
        let broker = Broker::start(BrokerOptions::default());
        let proxy = Proxy::start(broker.port()).await;
        let (id, topic) = (unique("decode"), unique("t"));
        let calls = Arc::default();
        let config = config(&broker, &id)
            .port(proxy.port())
            .proto_ver(ProtoVer::V5);
        let running = spawn(redelivering(config, &topic), stack(3, 0, &calls));
        running.events.wait_subscribed(1, 1).await;
        let payloads = [
            reading("ok-1", 20.0),
            "21.5 °C".to_owned(),
            r#"{"sensor":"no-celsius"}"#.to_owned(),
            reading("ok-2", 22.0),
        ];
        publish(&broker, &topic, &payloads).await;
        running
            .events
            .wait_count(4, WAIT, |e| matches!(e, Ev::Ack { .. }))
            .await;
        let events = running.events.all();
        running.stop().await.expect("a clean shutdown");

        let rejected = Disposition::RejectWith(RejectReason::PayloadFormatInvalid);
        let pkids = |status: Status, disposition: Disposition| -> Vec<u16> {
            let mut pkids: Vec<u16> = events
                .iter()
                .filter_map(|e| match e {
                    Ev::Ack {
                        pkid,
                        status: s,
                        disposition: d,
                        ..
                    } if *s == status && *d == disposition => Some(*pkid),
                    _ => None,
                })
                .collect();
            pkids.sort_unstable();
            pkids
        };
        let (failed, succeeded) = (
            pkids(Status::Failure, rejected),
            pkids(Status::Success, Disposition::Ack),
        );
        assert_eq!(failed.len(), 2, "{events:#?}");
        assert_eq!(succeeded.len(), 2, "{events:#?}");
        assert_eq!(redeliveries(&events), 0, "{events:#?}");
        let calls = calls.lock().unwrap().clone();
        let mut seen: Vec<&str> = calls.keys().map(String::as_str).collect();
        seen.sort_unstable();
        assert_eq!(
            seen,
            ["ok-1", "ok-2"],
            "only valid payloads reach the service"
        );

        // On the wire, on the one connection: a PUBACK with 0x99 (Payload format
        // invalid) for each rejected message, 0x00 (Success) for the others.
        let recordings = proxy.recordings();
        assert_eq!(recordings.len(), 1, "no reconnect");
        let acks = ack_reasons(&recordings[0]);
        assert_eq!(acks.len(), 4, "{acks:x?}");
        let with = |reason: u8| -> Vec<u16> {
            let mut pkids: Vec<u16> = acks
                .iter()
                .filter(|(_, r)| *r == reason)
                .map(|(pkid, _)| *pkid)
                .collect();
            pkids.sort_unstable();
            pkids
        };
        assert_eq!(with(0x99), failed, "{acks:x?}");
        assert_eq!(with(0x00), succeeded, "{acks:x?}");

        let left = left_in_session(&broker, &id, &topic, 1).await;
        assert!(
            left.is_empty(),
            "{} message(s) came back: {left:?}",
            left.len()
        );
    })
    .await;
}

/// (c) A panicking message fails alone: the consumer's rule (here `Reject`) applies
/// to it, the messages around it are acknowledged, and the consumer keeps its
/// connection and shuts down cleanly.
#[tokio::test]
async fn a_panicking_message_fails_alone_and_the_stream_finishes() {
    with_timeout(Duration::from_secs(60), async {
        let broker = Broker::start(BrokerOptions::default());
        let (id, topic) = (unique("panic"), unique("t"));
        let calls = Arc::default();
        let running = spawn(
            builder(config(&broker, &id), &topic, Q::AtLeastOnce).on_failure(OnFailure::Reject),
            stack(3, 0, &calls),
        );
        running.events.wait_subscribed(1, 1).await;
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
            .wait_count(5, WAIT, |e| matches!(e, Ev::Ack { .. }))
            .await;
        // The connection is still there: a later message goes through too.
        publish(&broker, &topic, &[reading("after", 25.0)]).await;
        running
            .events
            .wait_count(6, WAIT, |e| matches!(e, Ev::Ack { .. }))
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
                .any(|e| matches!(e, Ev::Down(..) | Ev::Terminate(..))),
            "{events:#?}"
        );
        // A panic is not transient: called once.
        assert_eq!(calls.lock().unwrap()["hot"], [1]);
        assert!(left_in_session(&broker, &id, &topic, 1).await.is_empty());
    })
    .await;
}
