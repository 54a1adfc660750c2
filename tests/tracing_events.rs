//! The `tracing` events: stable targets and field names.
//!
//! Alone in its own test binary on purpose: tracing caches each callsite's interest
//! process-wide, so a test running in parallel without a subscriber could make these
//! callsites invisible to the scoped subscriber installed here.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::consumer::*;
use support::*;
use tower::service_fn;
use tower_mqtt::{BoxError, Message, QoS as Q};

/// A `tracing` layer that records each event's target and fields.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Captured>>>);

/// One captured event: its target and its fields, formatted.
type Captured = (String, HashMap<String, String>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Fields(HashMap<String, String>);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.insert(field.name().to_owned(), format!("{value:?}"));
            }
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                self.0.insert(field.name().to_owned(), value.to_owned());
            }
        }
        let mut fields = Fields(HashMap::new());
        event.record(&mut fields);
        self.0
            .lock()
            .unwrap()
            .push((event.metadata().target().to_owned(), fields.0));
    }
}

#[tokio::test]
async fn tracing_events_have_stable_targets_and_fields() {
    use tracing_subscriber::layer::SubscriberExt;
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry()
        .with(capture.clone())
        .with(tracing_subscriber::filter::LevelFilter::DEBUG);
    let _guard = tracing::subscriber::set_default(subscriber);
    with_timeout(Duration::from_secs(60), async {
        let mut broker = Broker::start(BrokerOptions::default());
        let id = unique("tr");
        let topic = unique("t");
        let running = spawn(
            builder(config(&broker, &id), &topic, Q::AtLeastOnce),
            service_fn(|_m: Message| async { Ok::<_, BoxError>(()) }),
        );
        running.events.wait_subscribed(1, 1).await;
        publish_many(&broker, &topic, rqos(Q::AtLeastOnce), [b"x".to_vec()]).await;
        running
            .events
            .wait(Duration::from_secs(10), |e| matches!(e, Ev::Ack { .. }))
            .await;
        broker.restart(); // a connection.down, then a reconnect
        running
            .events
            .wait_count(2, Duration::from_secs(20), |e| matches!(e, Ev::Up { .. }))
            .await;
        running.stop().await.unwrap();
    })
    .await;

    let events = capture.0.lock().unwrap().clone();
    let expect: [(&str, &str, &[&str]); 7] = [
        (
            "producer.init",
            "tower_mqtt::producer",
            &["producer_index", "client_id"],
        ),
        (
            "producer.terminate",
            "tower_mqtt::producer",
            &["producer_index", "client_id", "reason"],
        ),
        (
            "connection.up",
            "tower_mqtt::connection",
            &["producer_index", "client_id", "session_present", "endpoint"],
        ),
        (
            "subscription.success",
            "tower_mqtt::subscription",
            &[
                "producer_index",
                "client_id",
                "topic",
                "requested_qos",
                "granted_qos",
            ],
        ),
        (
            "receive_message.start",
            "tower_mqtt::receive_message",
            &["producer_index", "client_id", "topic", "qos", "pkid", "dup"],
        ),
        (
            "receive_message.ack",
            "tower_mqtt::receive_message",
            &[
                "producer_index",
                "client_id",
                "topic",
                "qos",
                "pkid",
                "status",
                "disposition",
                "duration_us",
            ],
        ),
        (
            "connection.down",
            "tower_mqtt::connection",
            &["producer_index", "client_id", "reason", "endpoint"],
        ),
    ];
    for (name, target, fields) in expect {
        let (t, f) = events
            .iter()
            .find(|(_, f)| f.get("event").map(String::as_str) == Some(name))
            .unwrap_or_else(|| {
                let names: Vec<_> = events.iter().filter_map(|(_, f)| f.get("event")).collect();
                panic!("no {name} event among {names:?}")
            });
        assert_eq!(t, target, "{name}");
        for field in fields {
            assert!(f.contains_key(*field), "{name} lacks {field}: {f:?}");
        }
    }
}
