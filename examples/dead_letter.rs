//! Run with: cargo run --example dead_letter
//!
//! Needs an MQTT broker: by default `mqtt://127.0.0.1:1883` (e.g. `mosquitto -p 1883 -d`,
//! or `apt-get install -y mosquitto`), or the one in `MQTT_URL`
//! (`MQTT_URL=mqtt://broker:1883 cargo run --example dead_letter`).
//!
//! JSON readings go into a store; a reading that is not valid JSON goes to a dead-letter
//! topic, and is acknowledged only once the broker has the dead letter. The stack:
//!
//! ```text
//! dead_letter → catch_panic → retry_messages(3) → timeout → decode_json::<Reading>() → store
//! ```
//!
//! The example publishes its own readings (2 % invalid, the store busy on 5 % of first
//! attempts) through the consumer's confirmed `Publisher`, watches the dead-letter topic
//! with a second consumer, and stops once every reading is stored or dead-lettered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tower::{service_fn, ServiceBuilder};
use tower_mqtt::{
    BoxError, CancellationToken, Config, Consumer, Event, Message, ProtoVer, Publish, QoS,
};
use tower_mqtt_layers::decode::Decoded;
use tower_mqtt_layers::retry::{Attempt, RetryPolicy, Transient};
use tower_mqtt_layers::ServiceBuilderExt;

const READINGS: usize = 1_000;

#[derive(Debug, serde::Deserialize)]
struct Reading {
    sensor: String,
    celsius: f64,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt().with_env_filter("error").init();
    let url = std::env::var("MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into());
    let config = Config::from_url(&url)?
        .client_id(format!("dead-letter-example-{}", std::process::id()))
        .proto_ver(ProtoVer::V5);
    let run = std::process::id();
    let (readings, dead) = (
        format!("example/{run}/readings"),
        format!("example/{run}/dead"),
    );

    // Both consumers say when they have subscribed.
    let subscribed = Arc::new(Notify::new());
    let on_subscribed = |subscribed: &Arc<Notify>| {
        let subscribed = subscribed.clone();
        move |e: &Event<'_>| {
            if matches!(e, Event::SubscriptionSuccess { .. }) {
                subscribed.notify_one();
            }
        }
    };

    // The consumer under test, and its publisher for dead letters and for the demo data.
    let consumer = Consumer::builder(config.clone())
        .topic(format!("{readings}/+"), QoS::AtLeastOnce)
        .on_event(on_subscribed(&subscribed))
        .build()?;
    let publisher = consumer.publisher()?;

    // A second consumer shows what arrives on the dead-letter topic.
    let (letters_tx, mut letters) = mpsc::unbounded_channel();
    let watcher = Consumer::builder(config.client_id(format!("dead-letter-watcher-{run}")))
        .topic(format!("{dead}/#"), QoS::AtLeastOnce)
        .on_event(on_subscribed(&subscribed))
        .build()?;
    let stop = CancellationToken::new();
    let watching = tokio::spawn(watcher.run(
        service_fn(move |m: Message| {
            let _ = letters_tx.send(m);
            async { Ok::<_, BoxError>(()) }
        }),
        stop.clone(),
    ));

    let stored: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let (store, (stored_tx, mut stored_rx)) = (stored.clone(), mpsc::unbounded_channel());
    let dead_topic = dead.clone();
    let service = ServiceBuilder::new()
        .dead_letter(publisher.clone(), move |m| {
            let sensor = m.topic().rsplit('/').next().unwrap_or("unknown");
            format!("{dead_topic}/{sensor}")
        })
        .catch_panic()
        .retry_messages(RetryPolicy::new(3))
        .timeout(Duration::from_secs(5))
        .decode_json::<Reading>()
        .service_fn(move |Decoded { message, value }: Decoded<Reading>| {
            let (store, stored_tx) = (store.clone(), stored_tx.clone());
            async move {
                // The "database" is busy for one first attempt in twenty.
                if Attempt::of(&message) == 1 && message.pkid() % 20 == 0 {
                    return Err::<(), BoxError>(Transient::new("database busy").into());
                }
                let _ = value.celsius;
                *store.lock().unwrap().entry(value.sensor).or_default() += 1;
                let _ = stored_tx.send(());
                Ok(())
            }
        });
    let consuming = tokio::spawn(consumer.run(service, stop.clone()));

    // Demo data, each publish confirmed by the broker; every 50th is not JSON.
    subscribed.notified().await;
    subscribed.notified().await;
    let mut invalid = 0;
    for i in 0..READINGS {
        let payload = if i % 50 == 7 {
            invalid += 1;
            format!("sensor-{i} reads 21.5 °C")
        } else {
            format!(r#"{{"sensor":"sensor-{}","celsius":21.5}}"#, i % 10)
        };
        let topic = format!("{readings}/sensor-{}", i % 10);
        publisher.publish(Publish::new(topic, payload)).await?;
    }

    // Wait until every dead letter has arrived and every valid reading is stored.
    let mut shown = Vec::new();
    while shown.len() < invalid {
        let letter = tokio::time::timeout(Duration::from_secs(30), letters.recv())
            .await?
            .ok_or("the watcher stopped")?;
        shown.push(letter);
    }
    for _ in 0..READINGS - invalid {
        stored_rx.recv().await.ok_or("the consumer stopped")?;
    }
    stop.cancel();
    consuming.await??;
    watching.await??;

    let first = &shown[0];
    let property = |name| {
        first
            .properties()
            .and_then(|p| p.user_property(name))
            .unwrap_or("-")
    };
    let stored = stored.lock().unwrap().values().sum::<usize>();
    println!(
        "published {READINGS}; stored {stored}; dead-lettered {} to {dead}/<sensor>",
        shown.len()
    );
    println!(
        "first dead letter: payload {:?}\n  x-original-topic: {}\n  x-error: {}\n  x-attempts: {}",
        String::from_utf8_lossy(first.payload()),
        property("x-original-topic"),
        property("x-error"),
        property("x-attempts"),
    );
    Ok(())
}
