//! Graceful shutdown: in-flight calls finish and are acknowledged; nothing processed
//! is left unacknowledged and nothing unprocessed is acknowledged.

mod support;

use std::time::Duration;

use support::consumer::*;
use support::*;
use tower::service_fn;
use tower_mqtt::{BoxError, Message, QoS as Q};

fn shuffled(payload: &[u8]) -> Duration {
    let h = payload
        .iter()
        .fold(3u32, |a, b| a.wrapping_mul(33) ^ u32::from(*b));
    Duration::from_micros(u64::from(h % 2000))
}

async fn shutdown_mid_stream(qos: Q) {
    let broker = Broker::start(BrokerOptions::default());
    let id = unique("stop");
    let topic = unique("t");
    let n = 2000;
    let disconnected = format!("Client {id}_0 disconnected");

    // The stream waits as a backlog in the session, so the consumer is stopped in the
    // middle of it whatever the publisher's speed.
    let pre = spawn(
        builder(config(&broker, &id), &topic, qos),
        service_fn(|_m: Message| async { Ok::<_, BoxError>(()) }),
    );
    pre.events.wait_subscribed(1, 1).await;
    pre.stop().await.unwrap();
    broker
        .wait_for_log_count(&disconnected, 1, Duration::from_secs(10))
        .await;
    publish_many_within(
        &broker,
        &topic,
        rqos(qos),
        payloads("s", n),
        Duration::from_secs(60),
    )
    .await;

    let first = Processed::default();
    let f = first.clone();
    let svc = service_fn(move |m: Message| {
        let f = f.clone();
        async move {
            tokio::time::sleep(shuffled(m.payload())).await;
            f.record(m.payload());
            Ok::<_, BoxError>(())
        }
    });
    let a = spawn(builder(config(&broker, &id), &topic, qos), svc);
    a.events
        .wait_count(n / 4, Duration::from_secs(30), |e| {
            matches!(e, Ev::Ack { .. })
        })
        .await;
    a.stop().await.expect("graceful shutdown");
    let first_set = first.set();
    assert!(first_set.len() < n, "stopped mid-stream");
    broker
        .wait_for_log_count(&disconnected, 2, Duration::from_secs(10))
        .await;

    let second = Processed::default();
    let s = second.clone();
    let b = spawn(
        builder(config(&broker, &id), &topic, qos),
        service_fn(move |m: Message| {
            s.record(m.payload());
            async { Ok::<_, BoxError>(()) }
        }),
    );
    b.events
        .wait_successes(n - first_set.len(), Duration::from_secs(30))
        .await;
    b.stop().await.unwrap();

    let second_set = second.set();
    let overlap: Vec<_> = first_set.intersection(&second_set).collect();
    assert!(
        overlap.is_empty(),
        "{} message(s) processed before shutdown came back: their acks were lost",
        overlap.len()
    );
    assert_eq!(first_set.len() + second_set.len(), n, "nothing lost");
    assert!(first.duplicates().is_empty() && second.duplicates().is_empty());
}

#[tokio::test]
async fn shutdown_mid_stream_loses_nothing_and_acks_everything_processed_at_qos1() {
    with_timeout(
        Duration::from_secs(120),
        shutdown_mid_stream(Q::AtLeastOnce),
    )
    .await;
}

#[tokio::test]
async fn shutdown_mid_stream_loses_nothing_and_acks_everything_processed_at_qos2() {
    with_timeout(
        Duration::from_secs(120),
        shutdown_mid_stream(Q::ExactlyOnce),
    )
    .await;
}

#[tokio::test]
async fn the_drain_timeout_abandons_a_hung_call_without_acking_it() {
    with_timeout(Duration::from_secs(60), async {
        let broker = Broker::start(BrokerOptions::default());
        let id = unique("hung");
        let topic = unique("t");
        let svc = service_fn(|m: Message| async move {
            if m.payload().as_ref() == b"hang" {
                std::future::pending::<()>().await;
            }
            Ok::<_, BoxError>(())
        });
        let running = spawn(
            builder(config(&broker, &id), &topic, Q::AtLeastOnce)
                .drain_timeout(Duration::from_millis(300)),
            svc,
        );
        running.events.wait_subscribed(1, 1).await;
        let mut messages = vec![b"hang".to_vec()];
        messages.extend(payloads("ok", 5));
        publish_many(&broker, &topic, rqos(Q::AtLeastOnce), messages).await;
        running
            .events
            .wait_successes(5, Duration::from_secs(10))
            .await;
        let started = tokio::time::Instant::now();
        running
            .stop()
            .await
            .expect("shutdown returns despite the hung call");
        assert!(started.elapsed() < Duration::from_secs(10));
        let left = left_in_session(&broker, &id, &topic, 1).await;
        let left: Vec<_> = left.iter().map(|p| p.payload.to_vec()).collect();
        assert_eq!(
            left,
            vec![b"hang".to_vec()],
            "only the abandoned message comes back"
        );
    })
    .await;
}
