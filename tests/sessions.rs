//! Sessions that really persist: MQTT 5 needs a Session Expiry Interval, which
//! `clean_start(false)` sets for you.

mod support;

use std::time::Duration;

use support::consumer::*;
use support::*;
use tower::service_fn;
use tower_mqtt::{BoxError, Message, ProtoVer, QoS as Q};

async fn session_survives_consumer_restart(proto: ProtoVer) {
    let broker = Broker::start(BrokerOptions::default());
    let id = unique("sess");
    let topic = unique("t");
    let ok = || service_fn(|_m: Message| async { Ok::<_, BoxError>(()) });

    let first = spawn(
        builder(
            config(&broker, &id).proto_ver(proto),
            &topic,
            Q::AtLeastOnce,
        ),
        ok(),
    );
    first.events.wait_subscribed(1, 1).await;
    first.stop().await.unwrap();
    broker
        .wait_for_log(
            &format!("Client {id}_0 disconnected"),
            Duration::from_secs(10),
        )
        .await;

    // Published while no consumer is connected: only the session can keep them.
    publish_many(
        &broker,
        &topic,
        rqos(Q::AtLeastOnce),
        payloads("offline", 50),
    )
    .await;

    let second = spawn(
        builder(
            config(&broker, &id).proto_ver(proto),
            &topic,
            Q::AtLeastOnce,
        ),
        ok(),
    );
    second
        .events
        .wait_successes(50, Duration::from_secs(20))
        .await;
    assert!(matches!(
        second
            .events
            .all()
            .iter()
            .find(|e| matches!(e, Ev::Up { .. })),
        Some(Ev::Up {
            session_present: true,
            ..
        })
    ));
    second.stop().await.unwrap();
}

#[tokio::test]
async fn an_mqtt5_session_survives_a_consumer_restart() {
    with_timeout(
        Duration::from_secs(60),
        session_survives_consumer_restart(ProtoVer::V5),
    )
    .await;
}

#[tokio::test]
async fn an_mqtt311_session_survives_a_consumer_restart() {
    with_timeout(
        Duration::from_secs(60),
        session_survives_consumer_restart(ProtoVer::V4),
    )
    .await;
}

/// The contrast: an MQTT 5 session with expiry 0 ends with the connection. Only
/// reachable with clean_start(true) here, since build() rejects expiry 0 otherwise.
#[tokio::test]
async fn an_mqtt5_clean_start_session_keeps_nothing() {
    with_timeout(Duration::from_secs(60), async {
        let broker = Broker::start(BrokerOptions::default());
        let id = unique("clean");
        let topic = unique("t");
        let ok = || service_fn(|_m: Message| async { Ok::<_, BoxError>(()) });
        let cfg = || {
            config(&broker, &id)
                .proto_ver(ProtoVer::V5)
                .clean_start(true)
        };
        let first = spawn(
            builder(cfg(), &topic, Q::AtLeastOnce).on_failure(tower_mqtt::OnFailure::Noop),
            ok(),
        );
        first.events.wait_subscribed(1, 1).await;
        first.stop().await.unwrap();
        let second = spawn(
            builder(cfg(), &topic, Q::AtLeastOnce).on_failure(tower_mqtt::OnFailure::Noop),
            ok(),
        );
        second
            .events
            .wait(Duration::from_secs(10), |e| matches!(e, Ev::Up { .. }))
            .await;
        assert!(second.events.all().contains(&Ev::Up {
            index: 0,
            session_present: false
        }));
        second.stop().await.unwrap();
    })
    .await;
}
