//! Run with: cargo run --example quickstart
//!
//! Zero setup: the example starts its own MQTT broker in-process (rumqttd, on a free
//! 127.0.0.1 port), publishes JSON sensor readings to it at QoS 1, and stores them in
//! batches with a `tower_mqtt::Consumer` whose stack is built from `tower` and
//! `tower-mqtt-layers`:
//!
//! ```text
//! Traced (a span per message) → dead_letter → retry_messages(3) → timeout
//!     → decode_json::<Reading>() → batch(50 / 20 ms, 2 in flight) → store
//! ```
//!
//! * One reading in 200 is not JSON: `decode_json` rejects it, and `dead_letter`
//!   publishes it to `dead/<topic>` through the consumer's confirmed `Publisher`; it is
//!   acknowledged once the broker has the dead letter. A second consumer counts what
//!   arrives there.
//! * The "database" (the batch service) is busy for one reading in 1000 on its first
//!   attempt: it fails just that reading of the batch with a `Transient` error, and
//!   `retry_messages` tries it again (in a later batch) inside the same call.
//! * Every other reading is stored with its batch, one "transaction" per batch.
//!
//! On a terminal a progress line shows how far it got; at the end a summary says what
//! was stored, retried and dead-lettered, and what happened on the wire (counters fed
//! by `ConsumerBuilder::on_event`). Ctrl-C stops it cleanly.
//!
//! Arguments: `cargo run --example quickstart -- [READINGS]` (default 10000).
//! Logging: `RUST_LOG` (default `info`), e.g. `RUST_LOG=tower_mqtt=debug,quickstart=debug`.
//! The embedded broker's own logs are off unless `RUST_LOG` names it (`rumqttd=info`),
//! and so are the dead-letter layer's warnings (`tower_mqtt_layers::dead_letter=warn`).

use std::collections::{BTreeMap, HashSet};
use std::io::{IsTerminal, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tower::{layer::layer_fn, service_fn, Service, ServiceBuilder};
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

use tower_mqtt::{
    BoxError, CancellationToken, Config, Consumer, Disposition, DownReason, Event, Message, QoS,
};
use tower_mqtt_layers::batch::{Batch, BatchLayer, BatchResponse};
use tower_mqtt_layers::decode::Decoded;
use tower_mqtt_layers::retry::{Attempt, RetryPolicy, Transient};
use tower_mqtt_layers::ServiceBuilderExt;

/// Typical temperature of each simulated sensor, in °C.
const SENSORS: [f64; 5] = [21.3, 19.8, 23.1, 18.6, 22.4];
/// One reading in this many is not JSON (dead-lettered).
const INVALID_EVERY: u64 = 200;
/// One reading in this many finds the database busy on its first attempt (retried).
const BUSY_EVERY: u64 = 1000;

/// A reading as published: `{"seq":42,"sensor":"sensor-3","celsius":21.5}`.
#[derive(Debug, serde::Deserialize)]
struct Reading {
    seq: u64,
    sensor: String,
    celsius: f64,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // RUST_LOG as usual (default `info`). The embedded broker logs a lot, including
    // spurious errors on every clean disconnect, so it stays quiet unless named.
    let mut filter = std::env::var("RUST_LOG").unwrap_or_default();
    if filter.trim().is_empty() {
        filter = "info".to_owned();
    }
    if !filter.contains("rumqttd") {
        filter.push_str(",rumqttd=off");
    }
    // Each dead letter is a warning; here they are expected, and the summary counts them.
    if !filter.contains("dead_letter") {
        filter.push_str(",tower_mqtt_layers::dead_letter=error");
    }
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&filter)?)
        .init();

    let readings: u64 = match std::env::args().nth(1) {
        Some(arg) => arg.parse().map_err(|e| format!("READINGS {arg:?}: {e}"))?,
        None => 10_000,
    };
    if readings == 0 {
        return Err("READINGS must be at least 1".into());
    }
    let invalid = (0..readings).filter(|s| s % INVALID_EVERY == 13).count() as u64;

    // 1. An MQTT broker inside this process.
    let port = start_embedded_broker(readings)?;
    tracing::info!(port, "embedded rumqttd broker listening on 127.0.0.1");
    let config = Config::new("127.0.0.1").port(port).client_id("quickstart");

    // 2. The consumer, with hooks counting what happens on the wire.
    let counters = Arc::new(Counters::default());
    let subscribed = Arc::new(tokio::sync::Notify::new());
    let consumer = Consumer::builder(config.clone())
        .topic("sensors/+/temp", QoS::AtLeastOnce)
        // Up to 100 messages at once (the embedded broker's window too): room for two
        // batches of 50 in flight. Every message ends acknowledged here (stored, or
        // dead-lettered), and acknowledgements leave in arrival order, which rumqttd
        // 0.20 requires (it accepts a PUBACK only for its oldest unacknowledged
        // message, so a consumer that leaves failures for redelivery needs
        // `max_inflight(1)` with it; mosquitto and EMQX have no such limit).
        .max_inflight(100)
        .on_event({
            let (counters, subscribed) = (counters.clone(), subscribed.clone());
            move |event| counters.record(event, &subscribed)
        })
        .build()?;
    // Dead letters go out on the consumer's own confirmed publisher (`quickstart_pub`).
    let publisher = consumer.publisher()?;

    // 3. A second consumer counts the dead letters that reach the broker.
    let dead_letters: Arc<Mutex<HashSet<Bytes>>> = Arc::default();
    // Cancelled once every reading is stored or dead-lettered, or by Ctrl-C / SIGTERM.
    let shutdown = tower_mqtt::signal::shutdown_on_signals();
    let watcher = Consumer::builder(config.clone().client_id("quickstart-dead-letters"))
        .topic("dead/#", QoS::AtLeastOnce)
        .on_event({
            let subscribed = subscribed.clone();
            move |event| {
                if let Event::SubscriptionSuccess { .. } = event {
                    subscribed.notify_one();
                }
            }
        })
        .build()?;
    let watching = tokio::spawn(watcher.run(
        service_fn({
            let dead_letters = dead_letters.clone();
            move |m: Message| {
                // On MQTT 3.1.1 the dead letter is an envelope around the original
                // payload; each is counted once.
                dead_letters.lock().unwrap().insert(m.payload().clone());
                async { Ok::<_, BoxError>(()) }
            }
        }),
        shutdown.clone(),
    ));

    // 4. The service stack. Outermost first; every connection gets a clone, and the
    //    clones share one batcher.
    let stats = Arc::new(Mutex::new(Stats::default()));
    let batches = BatchLayer::builder()
        .max_size(50)
        .max_wait(Duration::from_millis(20))
        .concurrency(2)
        .build()?;
    let store = service_fn({
        let stats = stats.clone();
        move |batch: Batch<Decoded<Reading>>| {
            let stats = stats.clone();
            async move {
                // One round trip to the "database" per batch.
                tokio::time::sleep(Duration::from_millis(1)).await;
                let mut response = BatchResponse::new();
                let mut stats = stats.lock().unwrap();
                stats.batches += 1;
                for (i, Decoded { message, value }) in batch.iter().enumerate() {
                    let attempt = Attempt::of(message);
                    if value.seq % BUSY_EVERY == 7 && attempt == 1 {
                        tracing::debug!(seq = value.seq, "database busy (first attempt)");
                        response = response.fail(i, Transient::new("database busy"));
                        continue;
                    }
                    stats.record(value, attempt);
                }
                Ok::<_, BoxError>(response)
            }
        }
    });
    let service = ServiceBuilder::new()
        .layer(layer_fn(Traced))
        .dead_letter(publisher, |m: &Message| format!("dead/{}", m.topic()))
        .retry_messages(RetryPolicy::new(3))
        // Per attempt: a stuck batch fails its messages, and they are tried again.
        .timeout(Duration::from_secs(5))
        .decode_json::<Reading>()
        .batch(batches)
        .service(store);

    let started = Instant::now();
    let consumer_task = tokio::spawn(consumer.run(service, shutdown.clone()));

    // 5. Publish once both subscriptions are in place (the broker keeps nothing for a
    //    topic nobody subscribes to yet).
    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(10), subscribed.notified())
            .await
            .map_err(|_| "the consumers did not subscribe within 10 s")?;
    }
    let publishing = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            if let Err(e) = publish(port, readings).await {
                tracing::error!(error = %e, "publishing failed; stopping");
                shutdown.cancel();
            }
        }
    });

    // 6. Until every reading is stored or dead-lettered: a progress line on a terminal.
    let progress = Progress {
        stats: stats.clone(),
        dead_letters: dead_letters.clone(),
        readings,
        started,
    };
    let limit = Duration::from_secs(60 + readings / 1_000);
    let finished = tokio::time::timeout(limit, progress.run(invalid, &shutdown)).await;
    shutdown.cancel();
    consumer_task.await??;
    watching.await??;
    publishing.abort();
    let elapsed = started.elapsed();
    if finished.is_err() {
        return Err(format!("not every reading arrived within {limit:?}").into());
    }

    // 7. Summary.
    let stats = stats.lock().unwrap();
    let dead = dead_letters.lock().unwrap().len() as u64;
    let c = &*counters;
    println!();
    println!("== tower-mqtt quickstart summary ==");
    println!(
        "readings processed : {} of {readings} ({} stored, {dead} dead-lettered as not JSON)",
        stats.stored + dead,
        stats.stored,
    );
    println!(
        "batches            : {} ({:.1} readings each on average)",
        stats.batches,
        stats.deliveries as f64 / stats.batches.max(1) as f64
    );
    println!(
        "retried            : {} readings found the database busy and were stored on a later attempt",
        stats.retried
    );
    println!(
        "duplicates         : {} stored readings delivered again",
        stats.duplicates
    );
    println!(
        "on the wire        : {} acknowledged, {} withheld for redelivery",
        c.acked.load(Ordering::Relaxed),
        c.withheld.load(Ordering::Relaxed),
    );
    println!(
        "connections        : {} opened, {} closed to have failures redelivered, {} lost",
        c.connections.load(Ordering::Relaxed),
        c.redelivery_cycles.load(Ordering::Relaxed),
        c.lost.load(Ordering::Relaxed),
    );
    println!("per-sensor averages:");
    for (sensor, (count, sum)) in &stats.per_sensor {
        println!(
            "  {sensor:<10} {count:>6} readings, avg {:.2} °C",
            sum / *count as f64
        );
    }
    let secs = elapsed.as_secs_f64();
    println!(
        "elapsed            : {:.2} s, {:.0} msg/s",
        secs,
        (stats.stored + dead) as f64 / secs
    );
    if stats.stored + dead < readings {
        return Err(format!(
            "only {} of {readings} readings processed",
            stats.stored + dead
        )
        .into());
    }
    Ok(())
}

/// What the store has seen. Delivery is at-least-once, so readings are counted once by
/// sequence number.
#[derive(Default)]
struct Stats {
    /// Readings handed to the store (every attempt).
    deliveries: u64,
    stored: u64,
    batches: u64,
    retried: u64,
    duplicates: u64,
    done: HashSet<u64>,
    per_sensor: BTreeMap<String, (u64, f64)>,
}

impl Stats {
    /// Store a reading, on its `attempt`-th try.
    fn record(&mut self, reading: &Reading, attempt: u32) {
        self.deliveries += 1;
        if !self.done.insert(reading.seq) {
            self.duplicates += 1;
            return;
        }
        if attempt > 1 {
            self.retried += 1;
        }
        self.stored += 1;
        let entry = self
            .per_sensor
            .entry(reading.sensor.clone())
            .or_insert((0, 0.0));
        entry.0 += 1;
        entry.1 += reading.celsius;
    }
}

/// Watches the counts until every reading is stored or dead-lettered, printing a
/// progress line when stdout is a terminal.
struct Progress {
    stats: Arc<Mutex<Stats>>,
    dead_letters: Arc<Mutex<HashSet<Bytes>>>,
    readings: u64,
    started: Instant,
}

impl Progress {
    /// Returns once `readings` are accounted for (with `invalid` of them dead-lettered)
    /// or `shutdown` is cancelled.
    async fn run(&self, invalid: u64, shutdown: &CancellationToken) {
        let terminal = std::io::stdout().is_terminal();
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            let (stored, batches, retried) = {
                let s = self.stats.lock().unwrap();
                (s.stored, s.batches, s.retried)
            };
            let dead = self.dead_letters.lock().unwrap().len() as u64;
            let done = stored + dead >= self.readings && dead >= invalid;
            if terminal {
                let rate = (stored + dead) as f64 / self.started.elapsed().as_secs_f64();
                print!(
                    "\r{:>6} of {} stored or dead-lettered | {batches} batches | {retried} retried | {dead} dead letters | {rate:>6.0} msg/s ",
                    stored + dead,
                    self.readings
                );
                let _ = std::io::stdout().flush();
            }
            if done {
                if terminal {
                    println!();
                }
                return;
            }
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
        }
    }
}

/// Counters fed by the `on_event` hook. The hook runs on the connection's task, so it
/// only bumps atomics.
#[derive(Default)]
struct Counters {
    acked: AtomicUsize,
    withheld: AtomicUsize,
    connections: AtomicUsize,
    redelivery_cycles: AtomicUsize,
    lost: AtomicUsize,
}

impl Counters {
    fn record(&self, event: &Event<'_>, subscribed: &tokio::sync::Notify) {
        let counter = match event {
            Event::MessageAck { disposition, .. } => match disposition {
                Disposition::Ack => &self.acked,
                Disposition::Redeliver => &self.withheld,
                _ => return,
            },
            Event::ConnectionUp { .. } => &self.connections,
            Event::ConnectionDown { reason, .. } => match reason {
                DownReason::Redelivery { .. } => &self.redelivery_cycles,
                _ => &self.lost,
            },
            Event::SubscriptionSuccess { .. } => {
                subscribed.notify_one();
                return;
            }
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Tracing middleware: every call runs inside a span naming its message.
#[derive(Clone)]
struct Traced<S>(S);

impl<S: Service<Message>> Service<Message> for Traced<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = tracing::instrument::Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, msg: Message) -> Self::Future {
        let span = tracing::info_span!(
            "reading",
            topic = msg.topic(),
            pkid = msg.pkid(),
            dup = msg.dup()
        );
        self.0.call(msg).instrument(span)
    }
}

/// Publish `readings` QoS 1 readings with a plain rumqttc client.
async fn publish(port: u16, readings: u64) -> Result<(), BoxError> {
    let mut options = rumqttc::MqttOptions::new("quickstart-publisher", "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 100);
    // The event loop does the network I/O; poll it on its own task and never await
    // the client from there.
    tokio::spawn(async move {
        loop {
            if let Err(e) = eventloop.poll().await {
                tracing::warn!(error = %e, "publisher connection error");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    for seq in 0..readings {
        let sensor = seq as usize % SENSORS.len();
        // Deterministic noise of up to ±2 °C around the sensor's typical value.
        let celsius = SENSORS[sensor] + ((seq * 7919) % 41) as f64 / 10.0 - 2.0;
        let payload = if seq % INVALID_EVERY == 13 {
            // Not JSON: rejected by `decode_json`, then dead-lettered.
            format!("reading {seq} of sensor-{sensor}: {celsius:.1} °C")
        } else {
            format!(r#"{{"seq":{seq},"sensor":"sensor-{sensor}","celsius":{celsius:.1}}}"#)
        };
        client
            .publish(
                format!("sensors/{sensor}/temp"),
                rumqttc::QoS::AtLeastOnce,
                false,
                payload,
            )
            .await?;
    }
    Ok(())
}

/// Start rumqttd on a free 127.0.0.1 port (one MQTT 3.1.1 listener) on its own thread,
/// and wait until it accepts connections.
fn start_embedded_broker(readings: u64) -> Result<u16, BoxError> {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port();
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, port));

    let mut v4 = std::collections::HashMap::new();
    v4.insert(
        "v4-1".to_owned(),
        rumqttd::ServerSettings {
            name: "v4-1".to_owned(),
            listen,
            tls: None,
            next_connection_delay_ms: 1,
            connections: rumqttd::ConnectionSettings {
                connection_timeout_ms: 5_000,
                max_payload_size: 20 * 1024,
                max_inflight_count: 100,
                auth: None,
                external_auth: None,
                dynamic_filters: true,
            },
        },
    );
    // rumqttd keeps messages in an in-memory commit log of fixed-size segments and
    // drops the oldest segment when it has too many. Use small segments, but enough of
    // them to hold every reading (~50 bytes each), so a consumer that falls behind the
    // publisher loses nothing.
    const SEGMENT: usize = 1024 * 1024;
    let segments = (readings as usize).saturating_mul(64) / SEGMENT + 2;
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 16,
            max_outgoing_packet_count: 200,
            max_segment_size: SEGMENT,
            max_segment_count: segments.max(4),
            ..Default::default()
        },
        v4: Some(v4),
        ..Default::default()
    };

    let mut broker = rumqttd::Broker::new(config);
    std::thread::Builder::new()
        .name("rumqttd".to_owned())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        })?;

    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(listen).is_err() {
        if Instant::now() > deadline {
            return Err(format!("embedded broker did not listen on {listen}").into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(port)
}
