//! Scaling down without stranding messages: after `concurrency(2)`, a consumer with
//! `concurrency(1)` and `drain_retired_sessions(2)` also drains and ends the session of
//! connection 1, which nobody would resume otherwise.

mod support;

use std::time::Duration;

use support::consumer::{
    builder, config, left_in_session, recording_service, spawn, Ev, Processed,
};
use support::{publish_many, unique, with_timeout, Broker, BrokerOptions, QoS, TestClient};
use tower_mqtt::{ProtoVer, QoS as Q};

const WAIT: Duration = Duration::from_secs(30);

/// Run `concurrency(2)`, stop, publish 400 while nobody is connected (the broker splits
/// them over both sessions), then run `concurrency(1)`, draining retired sessions or not.
/// Returns the distinct messages processed, and the broker and ids for the checks.
async fn scale_down(proto: ProtoVer, drain: bool) -> (Broker, String, String, Processed) {
    let broker = Broker::start(BrokerOptions::default());
    let (id, topic) = (unique("scale"), unique("t"));
    let cfg = || config(&broker, &id).proto_ver(proto);
    let group = |b: tower_mqtt::ConsumerBuilder| b.shared_group("g");

    let processed = Processed::default();
    let two = spawn(
        group(builder(cfg(), &topic, Q::AtLeastOnce)).concurrency(2),
        recording_service(&processed),
    );
    two.events.wait_subscribed(2, 1).await;
    two.stop().await.unwrap();

    let payloads: Vec<Vec<u8>> = (0..N).map(|i| format!("m{i}").into_bytes()).collect();
    publish_many(&broker, &topic, QoS::AtLeastOnce, payloads).await;

    let mut one = group(builder(cfg(), &topic, Q::AtLeastOnce)).concurrency(1);
    if drain {
        one = one.drain_retired_sessions(2);
    }
    let running = spawn(one, recording_service(&processed));
    running.events.wait_subscribed(1, 1).await;
    if drain {
        running
            .events
            .wait_count(N, WAIT, |e| matches!(e, Ev::Ack { .. }))
            .await;
        // Stopped at the first run, then the retired slot's DISCONNECT, then the
        // clean-start connection that ends the session.
        broker
            .wait_for_log_count(&format!("Client {id}_1 disconnected"), 3, WAIT)
            .await;
    }
    running.stop().await.unwrap();
    (broker, id, topic, processed)
}

const N: usize = 400;

#[tokio::test]
async fn a_retired_session_is_drained_and_ended_mqtt5() {
    with_timeout(Duration::from_secs(120), async {
        drained_and_ended(ProtoVer::V5).await;
    })
    .await;
}

#[tokio::test]
async fn a_retired_session_is_drained_and_ended_mqtt311() {
    with_timeout(Duration::from_secs(120), async {
        drained_and_ended(ProtoVer::V4).await;
    })
    .await;
}

/// The control: without the option, connection 1's share stays stranded in its session.
#[tokio::test]
async fn without_the_option_the_retired_share_is_stranded() {
    with_timeout(Duration::from_secs(120), async {
        let (broker, id, _, processed) = scale_down(ProtoVer::V5, false).await;
        // Connection 1's session is still there, and hands out what it held.
        let mut session = TestClient::connect(&broker, &format!("{id}_1"), false, false).await;
        assert!(
            session.session_present(),
            "connection 1's session is on the broker"
        );
        let stranded = session.next_publish(WAIT).await;
        assert!(
            !processed.contains(&stranded.payload),
            "a message the consumer never processed was waiting in it"
        );
    })
    .await;
}

async fn drained_and_ended(proto: ProtoVer) {
    let (broker, id, topic, processed) = scale_down(proto, true).await;
    assert_eq!(
        processed.distinct(),
        N,
        "{proto:?}: every message processed, those of connection 1 through the retired slot"
    );
    let probe = TestClient::connect(&broker, &format!("{id}_1"), false, false).await;
    assert!(
        !probe.session_present(),
        "{proto:?}: the retired session is ended"
    );
    probe.disconnect(WAIT).await;
    assert!(
        left_in_session(&broker, &id, &topic, 2).await.is_empty(),
        "{proto:?}"
    );
}

/// Replicas with their own client ids (`<a>`, `<b>`) share a group; after `<b>` is
/// retired, `<a>` drains `<b>_0` with `drain_sessions`: every message is processed, and
/// `<b>`'s session is ended.
#[tokio::test]
async fn a_retired_replica_session_is_drained_by_name() {
    with_timeout(Duration::from_secs(120), async {
        let broker = Broker::start(BrokerOptions::default());
        let (a, b, topic) = (unique("replica-a"), unique("replica-b"), unique("t"));
        let replica = |id: &str| {
            builder(
                config(&broker, id).proto_ver(ProtoVer::V5),
                &topic,
                Q::AtLeastOnce,
            )
            .shared_group("g")
        };
        let processed = Processed::default();
        for id in [&a, &b] {
            let running = spawn(replica(id), recording_service(&processed));
            running.events.wait_subscribed(1, 1).await;
            running.stop().await.unwrap();
        }
        let payloads: Vec<Vec<u8>> = (0..N).map(|i| format!("m{i}").into_bytes()).collect();
        publish_many(&broker, &topic, QoS::AtLeastOnce, payloads).await;

        let running = spawn(
            replica(&a).drain_sessions([format!("{b}_0")]),
            recording_service(&processed),
        );
        running
            .events
            .wait_count(N, WAIT, |e| matches!(e, Ev::Ack { .. }))
            .await;
        // The first run's DISCONNECT, the drained slot's, then the clean-start
        // connection that ends the session.
        broker
            .wait_for_log_count(&format!("Client {b}_0 disconnected"), 3, WAIT)
            .await;
        running.stop().await.unwrap();

        assert_eq!(processed.distinct(), N, "replica b's share came through a");
        let probe = TestClient::connect(&broker, &format!("{b}_0"), false, false).await;
        assert!(!probe.session_present(), "replica b's session is ended");
        probe.disconnect(WAIT).await;
    })
    .await;
}

/// `drain_sessions` refuses what would harm: one of the consumer's own connections, an
/// empty id, and `clean_start(true)` (no session to drain).
#[test]
fn drain_sessions_refuses_its_own_connections_empty_ids_and_clean_start() {
    use tower_mqtt::{Config, ConfigError, Consumer};
    let base = || {
        Consumer::builder(Config::new("127.0.0.1").client_id("ingest-0"))
            .topic("t", Q::AtLeastOnce)
            .shared_group("g")
            .concurrency(2)
    };
    let own = base().drain_sessions(["ingest-0_1"]).build().unwrap_err();
    assert!(
        matches!(&own, ConfigError::ConflictingOption { option, .. } if option.contains("ingest-0_1")),
        "{own}"
    );
    let empty = base().drain_sessions([""]).build().unwrap_err();
    assert!(
        matches!(empty, ConfigError::InvalidClientId { .. }),
        "{empty}"
    );
    let clean = Consumer::builder(
        Config::new("127.0.0.1")
            .client_id("ingest-0")
            .clean_start(true),
    )
    .topic("t", Q::AtLeastOnce)
    .on_failure(tower_mqtt::OnFailure::Ack)
    .drain_sessions(["ingest-1_0"])
    .build()
    .unwrap_err();
    assert!(
        matches!(&clean, ConfigError::ConflictingOption { option, .. } if option == "drain_sessions"),
        "{clean}"
    );
    assert!(base().drain_sessions(["ingest-2_0"]).build().is_ok());
}
