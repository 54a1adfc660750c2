//! Run with: cargo run --example router
//!
//! Needs an MQTT broker: by default `mqtt://127.0.0.1:1883` (e.g. `mosquitto -p 1883 -d`),
//! or the one in `MQTT_URL`.
//!
//! One consumer, one subscription (`…/devices/#`), and a `Router` that sends each
//! message to the most specific route for its topic, with the device id captured from
//! the topic (`{device}`). A topic no route knows goes to the router's fallback, a
//! permanent "no route" error, which the dead-letter layer above it publishes to a
//! dead-letter topic before the consumer acknowledges the original.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, Notify};
use tower::{service_fn, ServiceBuilder};
use tower_mqtt::{
    BoxError, CancellationToken, Config, Consumer, Event, Message, ProtoVer, Publish, QoS,
};
use tower_mqtt_layers::router::{Params, Router};
use tower_mqtt_layers::ServiceBuilderExt;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let url = std::env::var("MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into());
    let run = std::process::id();
    let config = Config::from_url(&url)?
        .client_id(format!("router-example-{run}"))
        .proto_ver(ProtoVer::V5);
    let base = format!("example/{run}");

    let (seen_tx, mut seen) = mpsc::unbounded_channel::<String>();
    let (telemetry_tx, status_tx) = (seen_tx.clone(), seen_tx.clone());
    let telemetry = service_fn(move |m: Message| {
        let device = Params::of(&m)
            .and_then(|p| p.get("device"))
            .unwrap_or("?")
            .to_owned();
        let _ = telemetry_tx.send(format!(
            "telemetry from {device}: {}",
            String::from_utf8_lossy(m.payload())
        ));
        async { Ok::<_, BoxError>(()) }
    });
    let status = service_fn(move |m: Message| {
        let device = Params::of(&m)
            .and_then(|p| p.get("device"))
            .unwrap_or("?")
            .to_owned();
        let _ = status_tx.send(format!(
            "status of {device}: {}",
            String::from_utf8_lossy(m.payload())
        ));
        async { Ok::<_, BoxError>(()) }
    });
    let router = Router::new()
        .route(&format!("{base}/devices/{{device}}/telemetry"), telemetry)?
        .route(&format!("{base}/devices/{{device}}/status"), status)?;

    let subscribed = Arc::new(Notify::new());
    let ready = subscribed.clone();
    let consumer = Consumer::builder(config)
        .topic(format!("{base}/devices/#"), QoS::AtLeastOnce)
        .on_event(move |e| {
            if matches!(e, Event::SubscriptionSuccess { .. }) {
                ready.notify_one();
            }
        })
        .build()?;
    let publisher = consumer.publisher()?;
    let dead = Arc::new(AtomicUsize::new(0));
    let (dead_count, dead_tx) = (dead.clone(), seen_tx);
    let dead_base = base.clone();
    let service = ServiceBuilder::new()
        .dead_letter(publisher.clone(), move |m| {
            dead_count.fetch_add(1, Ordering::Relaxed);
            let _ = dead_tx.send(format!("no route for {}: dead-lettered", m.topic()));
            format!("{dead_base}/dead")
        })
        .service(router);
    let stop = CancellationToken::new();
    let consuming = tokio::spawn(consumer.run(service, stop.clone()));
    subscribed.notified().await;

    let messages = [
        ("devices/7/telemetry", "21.5 °C"),
        ("devices/7/status", "online"),
        ("devices/9/telemetry", "19.0 °C"),
        ("devices/9/firmware", "v2.1"), // no route
    ];
    for (topic, payload) in messages {
        publisher
            .publish(Publish::new(format!("{base}/{topic}"), payload))
            .await?;
    }
    for _ in 0..messages.len() {
        println!("{}", seen.recv().await.ok_or("the consumer stopped")?);
    }
    stop.cancel();
    consuming.await??;
    println!(
        "routed {}, dead-lettered {}",
        messages.len() - dead.load(Ordering::Relaxed),
        dead.load(Ordering::Relaxed)
    );
    Ok(())
}
