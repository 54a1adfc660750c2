//! A result that arrives after its connection was cut is never acknowledged on the
//! next connection (rumqttc acks by packet id only, so it could ack another message).

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::consumer::*;
use support::proxy::Proxy;
use support::*;
use tokio::sync::Notify;
use tower::service_fn;
use tower_mqtt::{BoxError, Disposition, Message, OnFailure, QoS as Q, Status};

async fn no_stale_ack_after_a_cut(qos: Q) {
    let broker = Broker::start(BrokerOptions::default());
    let proxy = Proxy::start(broker.port()).await;
    let id = unique("stale");
    let topic = unique("t");
    let release = Arc::new(Notify::new());
    let r = release.clone();
    // First delivery: hold the call until released, then succeed. The redelivery on
    // the next connection fails (left unacked). If the first result leaked onto the
    // second connection as an ack, the broker would drop the message.
    let svc = service_fn(move |m: Message| {
        let r = r.clone();
        async move {
            if m.dup() {
                return Err::<(), BoxError>("redelivery fails".into());
            }
            r.notified().await;
            Ok(())
        }
    });
    let running = spawn(
        builder(config(&broker, &id).port(proxy.port()), &topic, qos).on_failure(OnFailure::Noop),
        svc,
    );
    running.events.wait_subscribed(1, 1).await;
    publish_many(&broker, &topic, rqos(qos), [b"only".to_vec()]).await;
    running
        .events
        .wait(Duration::from_secs(10), |e| {
            matches!(e, Ev::Start { dup: false, .. })
        })
        .await;

    proxy.cut_all();
    running
        .events
        .wait(Duration::from_secs(10), |e| {
            matches!(
                e,
                Ev::Ack {
                    status: Status::Failure,
                    disposition: Disposition::Leave,
                    ..
                }
            )
        })
        .await;
    assert_eq!(
        running
            .events
            .count(|e| matches!(e, Ev::Start { dup: true, .. })),
        1
    );

    // Now the first call succeeds: its result belongs to the dead connection.
    release.notify_one();
    running
        .events
        .wait(Duration::from_secs(10), |e| {
            matches!(
                e,
                Ev::Stale {
                    status: Status::Success,
                    ..
                }
            )
        })
        .await;
    running.stop().await.unwrap();
    let left = left_in_session(&broker, &id, &topic, 1).await;
    assert_eq!(left.len(), 1, "the message must still be unacknowledged");
    assert_eq!(&left[0].payload[..], b"only");
}

#[tokio::test]
async fn no_stale_ack_after_a_connection_cut_mid_processing_at_qos1() {
    with_timeout(
        Duration::from_secs(60),
        no_stale_ack_after_a_cut(Q::AtLeastOnce),
    )
    .await;
}

#[tokio::test]
async fn no_stale_ack_after_a_connection_cut_mid_processing_at_qos2() {
    with_timeout(
        Duration::from_secs(60),
        no_stale_ack_after_a_cut(Q::ExactlyOnce),
    )
    .await;
}
