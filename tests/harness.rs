//! Self-test of the integration-test harness in `tests/support`.

mod support;

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use support::*;

/// Upper bound for any single test here.
const TEST_LIMIT: Duration = Duration::from_secs(15);
/// Timeout for individual waits inside a test.
const T: Duration = Duration::from_secs(5);

fn payloads(prefix: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("{prefix}-{i}").into_bytes())
        .collect()
}

fn bodies(publishes: &[Publish]) -> Vec<Vec<u8>> {
    publishes.iter().map(|p| p.payload.to_vec()).collect()
}

fn connectable(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

#[tokio::test]
async fn broker_starts_and_accepts_a_connection() {
    with_timeout(TEST_LIMIT, async {
        let broker = Broker::start(BrokerOptions::default());
        assert_eq!(broker.host(), "127.0.0.1");
        assert_ne!(broker.port(), 1883, "must never use the system broker");
        assert!(broker.data_dir().join("mosquitto.conf").is_file());
        assert!(broker.log().contains("mosquitto version"));

        let id = unique("hello");
        let client = TestClient::connect(&broker, &id, true, false).await;
        assert!(!client.session_present());
        broker
            .wait_for_log(&format!(" as {id} (p2, c1, k30)."), T)
            .await;
        client.disconnect(T).await;
        assert_eq!(
            broker.count_in_log(&format!("Client {id} disconnected.")),
            1
        );
    })
    .await;
}

#[tokio::test]
async fn restart_keeps_the_port_and_a_persistent_session() {
    with_timeout(TEST_LIMIT, async {
        let mut broker = Broker::start(BrokerOptions {
            persistence: true,
            ..BrokerOptions::default()
        });
        let port = broker.port();
        let session = unique("session");
        let base = unique("restart");

        // Create the persistent session, then leave it offline.
        let mut client = TestClient::connect(&broker, &session, false, false).await;
        client
            .subscribe(&format!("{base}/#"), QoS::AtLeastOnce, T)
            .await;
        client.disconnect(T).await;

        let sent = payloads("queued", 50);
        publish_many(
            &broker,
            &format!("{base}/data"),
            QoS::AtLeastOnce,
            sent.clone(),
        )
        .await;
        // SIGKILL loses whatever is not in the persistence file yet; mosquitto
        // 2.0.11 with `autosave_interval 1` saves only every ~2 s, so wait for
        // an actual save instead of sleeping.
        broker.wait_for_autosave(T).await;

        let old_pid = broker.pid();
        broker.restart();
        assert_eq!(broker.port(), port);
        assert_ne!(broker.pid(), old_pid);
        assert_eq!(
            broker.count_in_log("mosquitto version 2"),
            4,
            "2 starts × (starting + running)"
        );

        let marker = format!("{base}/marker");
        let got = drain_session(&broker, &session, &marker, T).await;
        assert_eq!(bodies(&got), sent);
        assert!(got.iter().all(|p| !p.dup && p.qos == QoS::AtLeastOnce));

        // The drain acked everything, so the session is now empty.
        assert!(drain_session(&broker, &session, &marker, T)
            .await
            .is_empty());
    })
    .await;
}

#[tokio::test]
async fn stop_keeps_the_broker_down_until_start_again() {
    with_timeout(TEST_LIMIT, async {
        let mut broker = Broker::start(BrokerOptions::default());
        let port = broker.port();
        broker.stop();
        assert_eq!(broker.pid(), None);
        assert!(!connectable(port));

        broker.start_again();
        assert_eq!(broker.port(), port);
        let client = TestClient::connect(&broker, &unique("back"), true, false).await;
        client.disconnect(T).await;
    })
    .await;
}

#[tokio::test]
async fn dropping_the_broker_kills_mosquitto_and_removes_its_dir() {
    with_timeout(TEST_LIMIT, async {
        let broker = Broker::start(BrokerOptions::default());
        let pid = broker.pid().expect("running");
        let proc_dir = format!("/proc/{pid}");
        let data_dir = broker.data_dir().to_path_buf();
        let port = broker.port();
        assert!(Path::new(&proc_dir).exists());

        drop(broker);
        // Killed *and* reaped, so not even a zombie is left.
        assert!(
            !Path::new(&proc_dir).exists(),
            "mosquitto {pid} still exists"
        );
        assert!(!data_dir.exists());
        assert!(!connectable(port));
    })
    .await;
}

#[tokio::test]
async fn subscribe_collect_receives_1000_qos1_messages_from_publish_many() {
    with_timeout(TEST_LIMIT, async {
        let broker = Broker::start(BrokerOptions::default());
        let topic = unique("flood");
        let mut collector = subscribe_collect(&broker, &topic, QoS::AtLeastOnce).await;

        let sent = payloads("m", 1000);
        publish_many(&broker, &topic, QoS::AtLeastOnce, sent.clone()).await;

        let got = collector.wait_for(1000, T).await;
        assert_eq!(bodies(&got), sent, "all 1000, in order");
        assert!(got
            .iter()
            .all(|p| p.qos == QoS::AtLeastOnce && p.topic == topic));
        assert!(collector
            .collect_for(Duration::from_millis(100))
            .await
            .is_empty());
        collector.disconnect(T).await;
    })
    .await;
}

#[tokio::test]
async fn publish_many_completes_every_qos_with_a_small_broker_window() {
    with_timeout(TEST_LIMIT, async {
        // mosquitto drops a QoS 2 publisher that exceeds this window;
        // publish_many must adapt to it.
        let broker = Broker::start(BrokerOptions {
            max_inflight_messages: Some(5),
            ..BrokerOptions::default()
        });
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let topic = unique("qos");
            let mut collector = subscribe_collect(&broker, &topic, QoS::ExactlyOnce).await;
            let sent = payloads("q", 300);
            // Returns only after the broker has processed all of them, so a
            // QoS 0 subscriber on loopback gets every one.
            publish_many(&broker, &topic, qos, sent.clone()).await;
            let got = collector.wait_for(300, T).await;
            assert_eq!(bodies(&got), sent, "{qos:?}");
            assert!(got.iter().all(|p| p.qos == qos));
            collector.disconnect(T).await;
        }
    })
    .await;
}

#[tokio::test]
async fn drain_session_counts_redelivered_unacked_messages_as_dup() {
    with_timeout(TEST_LIMIT, async {
        let broker = Broker::start(BrokerOptions::default());
        let id = unique("consumer");
        let base = unique("dup");
        let data = format!("{base}/data");

        // A consumer that receives 5 messages, acks none, and crashes.
        let mut consumer = TestClient::connect(&broker, &id, false, true).await;
        consumer
            .subscribe(&format!("{base}/#"), QoS::AtLeastOnce, T)
            .await;
        let unacked = payloads("unacked", 5);
        publish_many(&broker, &data, QoS::AtLeastOnce, unacked.clone()).await;
        assert_eq!(bodies(&consumer.next_publishes(5, T).await), unacked);
        consumer.kill(T).await;

        // Three more queue up while it is offline.
        let queued = payloads("queued", 3);
        publish_many(&broker, &data, QoS::AtLeastOnce, queued.clone()).await;

        let (got, dups) = drain_session_with_dups(&broker, &id, &format!("{base}/marker"), T).await;
        assert_eq!(bodies(&got), [unacked, queued].concat());
        assert_eq!(dups, 5);
        assert!(got[..5].iter().all(|p| p.dup) && got[5..].iter().all(|p| !p.dup));
    })
    .await;
}

#[tokio::test]
async fn wait_for_log_panics_with_the_log_tail_on_timeout() {
    with_timeout(TEST_LIMIT, async {
        let broker = Broker::start(BrokerOptions::default());
        let waiter = tokio::spawn(async move {
            broker
                .wait_for_log("never logged", Duration::from_millis(100))
                .await;
        });
        let panic = waiter.await.expect_err("must time out").into_panic();
        let message = panic
            .downcast_ref::<String>()
            .expect("formatted panic message");
        assert!(message.contains("\"never logged\""), "{message}");
        assert!(message.contains("mosquitto log tail"), "{message}");
        assert!(message.contains("mosquitto version 2"), "{message}");
    })
    .await;
}
