//! Feature `testing`: `tower_mqtt::testing::TestBroker` used as an application's own
//! integration test would use it — only the public API, no harness from `tests/support`.

#![cfg(feature = "testing")]

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tower::service_fn;
use tower_mqtt::testing::{TestBroker, TestBrokerError};
use tower_mqtt::{CancellationToken, Config, Consumer, Event, Message, QoS};

const LIMIT: Duration = Duration::from_secs(60);
/// How long the session check waits for "nothing more" from a broker on this machine.
const QUIET: Duration = Duration::from_millis(300);

/// A consumer of `topic` for `broker`, running `service` in a task; returns once its
/// subscription is granted, with the token that stops it and its task.
async fn run_consumer<F>(
    broker: &TestBroker,
    client_id: &str,
    topic: &str,
    service: F,
) -> (
    String,
    CancellationToken,
    tokio::task::JoinHandle<Result<(), tower_mqtt::RunError>>,
)
where
    F: Fn(Message) -> Result<(), &'static str> + Clone + Send + Sync + 'static,
{
    let (subscribed_tx, mut subscribed) = mpsc::unbounded_channel();
    let consumer = Consumer::builder(broker.config(client_id))
        .topic(topic, QoS::AtLeastOnce)
        .on_event(move |event| {
            if matches!(event, Event::SubscriptionSuccess { .. }) {
                let _ = subscribed_tx.send(());
            }
        })
        .build()
        .unwrap();
    let id = consumer.client_id(0);
    let shutdown = CancellationToken::new();
    let service = service_fn(move |m: Message| {
        let result = service(m);
        async move { result }
    });
    let run = tokio::spawn(consumer.run(service, shutdown.clone()));
    subscribed.recv().await.expect("the consumer subscribed");
    (id, shutdown, run)
}

async fn with_timeout<F: std::future::Future>(fut: F) -> F::Output {
    tokio::time::timeout(LIMIT, fut)
        .await
        .expect("the test finished within its time limit")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_processes_what_the_recording_publisher_sent_and_leaves_the_session_empty() {
    with_timeout(async {
        let broker = TestBroker::start().unwrap();
        let (processed_tx, mut processed) = mpsc::unbounded_channel::<Bytes>();
        let (client_id, shutdown, run) =
            run_consumer(&broker, "ingest", "readings/#", move |m: Message| {
                processed_tx
                    .send(m.payload().clone())
                    .map_err(|_| "test over")
            })
            .await;

        let mut publisher = broker.publisher().await.unwrap();
        publisher.publish_numbered("readings/a", 200).await.unwrap();
        publisher
            .publish("readings/b", [Bytes::from_static(b"{\"t\": 21.5}")])
            .await
            .unwrap();
        assert_eq!(publisher.sent().len(), 201);
        assert_eq!(publisher.sent()[7].payload, "7");
        assert_eq!(publisher.sent()[200].topic, "readings/b");
        let mut sent: Vec<Bytes> = publisher.sent().iter().map(|m| m.payload.clone()).collect();
        publisher.disconnect().await.unwrap();

        let mut seen = Vec::new();
        while seen.len() < 201 {
            seen.push(processed.recv().await.expect("the service is running"));
        }
        shutdown.cancel();
        run.await.unwrap().unwrap();

        sent.sort();
        seen.sort();
        assert_eq!(seen, sent);

        let session = broker.drain_session(&client_id, QUIET).await.unwrap();
        assert!(session.session_present, "the consumer's session was kept");
        assert!(session.messages.is_empty(), "{:?}", session.messages);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_the_session_and_the_check_returns_what_it_holds() {
    with_timeout(async {
        let mut broker = TestBroker::start().unwrap();
        // A consumer subscribes, then stops: its session stays on the broker.
        let (client_id, shutdown, run) =
            run_consumer(&broker, "offline", "jobs/#", |_| Ok(())).await;
        shutdown.cancel();
        run.await.unwrap().unwrap();

        let mut publisher = broker.publisher().await.unwrap();
        publisher.publish_numbered("jobs/x", 20).await.unwrap();
        publisher.disconnect().await.unwrap();
        broker.restart().unwrap();

        let session = broker.drain_session(&client_id, QUIET).await.unwrap();
        assert!(session.session_present);
        let payloads: Vec<&[u8]> = session.messages.iter().map(|m| &m.payload[..]).collect();
        let expected: Vec<String> = (0..20).map(|i| i.to_string()).collect();
        let expected: Vec<&[u8]> = expected.iter().map(String::as_bytes).collect();
        assert_eq!(payloads, expected, "queued across the restart, in order");
        assert!(session
            .messages
            .iter()
            .all(|m| m.topic == "jobs/x" && m.qos == QoS::AtLeastOnce));

        // The check acknowledged them: a second one finds nothing.
        let again = broker.drain_session(&client_id, QUIET).await.unwrap();
        assert!(again.messages.is_empty(), "{:?}", again.messages);
    })
    .await;
}

#[tokio::test]
async fn url_and_config_name_the_broker_and_a_session_check_on_a_new_id_says_so() {
    with_timeout(async {
        let broker = TestBroker::start().unwrap();
        let from_url = Config::from_url(&broker.url()).unwrap();
        assert_eq!(
            (from_url.host(), from_url.get_port()),
            (broker.host(), broker.port())
        );
        let config = broker.config("ingest");
        assert_eq!(config.get_client_id(), Some("ingest"));
        assert_eq!(config.get_port(), broker.port());
        assert!(broker.data_dir().join("mosquitto.conf").exists());

        let session = broker.drain_session("never-seen", QUIET).await.unwrap();
        assert!(!session.session_present);
        assert!(session.messages.is_empty());
        assert!(broker.log().contains("never-seen"), "{}", broker.log());

        // Bad input is a typed error saying what to pass instead.
        let e = broker.drain_session("", QUIET).await.unwrap_err();
        assert!(matches!(e, TestBrokerError::EmptyClientId), "{e:?}");
        assert!(e.to_string().contains("consumer.client_id(0)"), "{e}");
    })
    .await;
}
