//! Reconnecting: backoff, resubscribing when the broker lost the session, and a retry
//! limit that ends `run` with the last reason.

mod support;

use std::time::Duration;

use support::consumer::*;
use support::proxy::Proxy;
use support::*;
use tower::service_fn;
use tower_mqtt::{BoxError, DownReason, Message, QoS as Q, RunError, Status};

async fn resubscribes_after_restart(qos: Q) {
    let mut broker = Broker::start(BrokerOptions::default()); // no persistence
    let id = unique("resub");
    let topic = unique("t");
    let processed = Processed::default();
    let running = spawn(
        builder(config(&broker, &id), &topic, qos),
        recording_service(&processed),
    );
    running.events.wait_subscribed(1, 1).await;

    broker.restart(); // the broker forgets every session and subscription
                      // Reconnected to a broker without our session: it must subscribe again.
    running
        .events
        .wait_count(2, Duration::from_secs(20), |e| {
            matches!(
                e,
                Ev::Up {
                    session_present: false,
                    ..
                }
            )
        })
        .await;
    running
        .events
        .wait_count(2, Duration::from_secs(20), |e| {
            matches!(e, Ev::SubOk { .. })
        })
        .await;
    assert!(running.events.count(|e| matches!(e, Ev::Down(..))) >= 1);

    publish_many(&broker, &topic, rqos(qos), [b"after-restart".to_vec()]).await;
    running
        .events
        .wait(Duration::from_secs(20), |e| {
            matches!(
                e,
                Ev::Ack {
                    status: Status::Success,
                    ..
                }
            )
        })
        .await;
    assert!(processed.contains(b"after-restart"));
    running.stop().await.unwrap();
}

#[tokio::test]
async fn resubscribes_after_a_broker_restart_without_persistence_at_qos0() {
    with_timeout(
        Duration::from_secs(60),
        resubscribes_after_restart(Q::AtMostOnce),
    )
    .await;
}

#[tokio::test]
async fn resubscribes_after_a_broker_restart_without_persistence_at_qos1() {
    with_timeout(
        Duration::from_secs(60),
        resubscribes_after_restart(Q::AtLeastOnce),
    )
    .await;
}

#[tokio::test]
async fn resubscribes_after_a_broker_restart_without_persistence_at_qos2() {
    with_timeout(
        Duration::from_secs(60),
        resubscribes_after_restart(Q::ExactlyOnce),
    )
    .await;
}

#[tokio::test]
async fn a_broker_down_at_start_up_is_retried_with_backoff() {
    with_timeout(Duration::from_secs(60), async {
        let mut broker = Broker::start(BrokerOptions::default());
        broker.stop();
        let id = unique("down");
        let topic = unique("t");
        let processed = Processed::default();
        let running = spawn(
            builder(config(&broker, &id), &topic, Q::AtLeastOnce)
                .reconnect_backoff(Duration::from_millis(100), Duration::from_millis(400)),
            recording_service(&processed),
        );
        running
            .events
            .wait_count(4, Duration::from_secs(20), |e| matches!(e, Ev::Down(..)))
            .await;
        for ev in running.events.all() {
            if let Ev::Down(_, reason) = ev {
                assert_eq!(reason, DownReason::ConnectionRefused);
            }
        }
        // Not a hot loop: each retry waits at least the minimum backoff (asserted: half).
        let downs = running.events.times(|e| matches!(e, Ev::Down(..)));
        for pair in downs.windows(2) {
            assert!(
                pair[1] - pair[0] >= Duration::from_millis(50),
                "retried after only {:?}",
                pair[1] - pair[0]
            );
        }

        broker.start_again();
        running.events.wait_subscribed(1, 1).await;
        publish_many(&broker, &topic, rqos(Q::AtLeastOnce), [b"late".to_vec()]).await;
        running
            .events
            .wait(Duration::from_secs(20), |e| matches!(e, Ev::Ack { .. }))
            .await;
        assert!(processed.contains(b"late"));
        running.stop().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_reconnect_limit_ends_run_with_the_last_reason() {
    with_timeout(Duration::from_secs(30), async {
        let mut broker = Broker::start(BrokerOptions::default());
        broker.stop();
        let running = spawn(
            builder(
                config(&broker, &unique("limit")),
                &unique("t"),
                Q::AtLeastOnce,
            )
            .max_reconnect_attempts(Some(2)),
            recording_service(&Processed::default()),
        );
        match running.join().await {
            Err(RunError::ReconnectLimit { attempts, last, .. }) => {
                assert_eq!(attempts, 3, "the first attempt plus two retries");
                assert_eq!(last, DownReason::ConnectionRefused);
            }
            other => panic!("expected ReconnectLimit, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn shutdown_while_the_broker_is_unreachable_returns_promptly() {
    with_timeout(Duration::from_secs(30), async {
        let mut broker = Broker::start(BrokerOptions::default());
        broker.stop();
        let running = spawn(
            builder(
                config(&broker, &unique("offline")),
                &unique("t"),
                Q::AtLeastOnce,
            ),
            recording_service(&Processed::default()),
        );
        running
            .events
            .wait(Duration::from_secs(10), |e| matches!(e, Ev::Down(..)))
            .await;
        running.stop().await.expect("shutdown is not an error");
    })
    .await;
}

/// The connection is cut in the middle of a stream; the session is resumed and every
/// message is still processed and acknowledged (some twice: at-least-once).
#[tokio::test]
async fn a_connection_cut_mid_stream_loses_nothing() {
    with_timeout(Duration::from_secs(90), async {
        let broker = Broker::start(BrokerOptions::default());
        let proxy = Proxy::start(broker.port()).await;
        let id = unique("cut");
        let topic = unique("t");
        let n = 2000;
        let processed = Processed::default();
        let p = processed.clone();
        let svc = service_fn(move |m: Message| {
            p.record(m.payload());
            async {
                tokio::time::sleep(Duration::from_micros(200)).await;
                Ok::<_, BoxError>(())
            }
        });
        let running = spawn(
            builder(
                config(&broker, &id).port(proxy.port()),
                &topic,
                Q::AtLeastOnce,
            ),
            svc,
        );
        running.events.wait_subscribed(1, 1).await;
        let publish = publish_many_within(
            &broker,
            &topic,
            rqos(Q::AtLeastOnce),
            payloads("c", n),
            Duration::from_secs(60),
        );
        let cut = async {
            running
                .events
                .wait_count(n / 4, Duration::from_secs(30), |e| {
                    matches!(e, Ev::Ack { .. })
                })
                .await;
            proxy.cut_all();
        };
        tokio::join!(publish, cut);
        running
            .events
            .wait(Duration::from_secs(20), |e| {
                matches!(
                    e,
                    Ev::Up {
                        session_present: true,
                        ..
                    }
                )
            })
            .await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while processed.distinct() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} processed",
                processed.distinct()
            );
            running
                .events
                .wait_count(
                    running.events.count(|e| matches!(e, Ev::Ack { .. })) + 1,
                    Duration::from_secs(20),
                    |e| matches!(e, Ev::Ack { .. }),
                )
                .await;
        }
        running.stop().await.unwrap();
        let left = left_in_session(&broker, &id, &topic, 1).await;
        assert!(left.is_empty(), "{} left unacknowledged", left.len());
    })
    .await;
}
