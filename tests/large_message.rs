//! Large payloads: 1 MiB passes by default; a packet over the limit is reported loudly
//! and stays on the broker, never dropped silently.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::consumer::*;
use support::*;
use tower::service_fn;
use tower_mqtt::{BoxError, DownReason, Message, QoS as Q, Status};

#[tokio::test]
async fn a_one_mib_payload_is_processed_intact() {
    with_timeout(Duration::from_secs(60), async {
        let broker = Broker::start(BrokerOptions::default());
        let id = unique("big");
        let topic = unique("t");
        let payload: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
        let received = Arc::new(Mutex::new(Vec::new()));
        let r = received.clone();
        let running = spawn(
            builder(config(&broker, &id), &topic, Q::AtLeastOnce),
            service_fn(move |m: Message| {
                r.lock().unwrap().push(m.payload().clone());
                async { Ok::<_, BoxError>(()) }
            }),
        );
        running.events.wait_subscribed(1, 1).await;
        publish_many(&broker, &topic, rqos(Q::AtLeastOnce), [payload.clone()]).await;
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
        running.stop().await.unwrap();
        let received = received.lock().unwrap();
        assert_eq!(received.len(), 1);
        assert!(
            received[0].as_ref() == payload.as_slice(),
            "payload arrived intact"
        );
    })
    .await;
}

#[tokio::test]
async fn a_packet_over_max_packet_size_is_reported_and_kept_on_the_broker() {
    with_timeout(Duration::from_secs(60), async {
        let broker = Broker::start(BrokerOptions::default());
        let id = unique("toobig");
        let topic = unique("t");
        let running = spawn(
            builder(
                config(&broker, &id).max_packet_size(16 * 1024),
                &topic,
                Q::AtLeastOnce,
            ),
            service_fn(|_m: Message| async { Ok::<_, BoxError>(()) }),
        );
        running.events.wait_subscribed(1, 1).await;
        publish_many(
            &broker,
            &topic,
            rqos(Q::AtLeastOnce),
            [vec![7u8; 32 * 1024]],
        )
        .await;
        running
            .events
            .wait(Duration::from_secs(20), |e| {
                matches!(
                    e,
                    Ev::Down(_, DownReason::PacketTooLarge { limit: 16384, .. })
                )
            })
            .await;
        assert_eq!(running.events.count(|e| matches!(e, Ev::Start { .. })), 0);
        running.stop().await.unwrap();
        // Still there for a consumer with a large enough limit.
        let left =
            drain_session(&broker, &format!("{id}_0"), &topic, Duration::from_secs(20)).await;
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].payload.len(), 32 * 1024);
    })
    .await;
}
