//! Run with: cargo run --example quickstart
//!
//! Zero setup: the example starts its own MQTT broker in-process (rumqttd, on a free
//! 127.0.0.1 port), publishes sensor readings to it at QoS 1, and consumes them with a
//! `tower_mqtt::Consumer` whose service stack is built with `tower::ServiceBuilder`:
//!
//! ```text
//! Traced (a span per message) → ConcurrencyLimit → Timeout → handler
//! ```
//!
//! The handler parses each reading and adds it to per-sensor statistics. One reading in
//! a thousand fails on purpose the first time it is seen: the service's `Err` leaves it
//! unacknowledged (`OnFailure::Redeliver`), the consumer resumes its session, and the
//! broker sends it again, this time to succeed. Counters fed by
//! `ConsumerBuilder::on_event` show what happened on the wire.
//!
//! Arguments: `cargo run --example quickstart -- [READINGS]` (default 10000).
//! Logging: `RUST_LOG` (default `info`), e.g. `RUST_LOG=tower_mqtt=debug,quickstart=debug`.
//! The embedded broker's own logs are off unless `RUST_LOG` names it (`rumqttd=info`).

use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tower::{layer::layer_fn, service_fn, Service, ServiceBuilder};
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

use tower_mqtt::{
    BoxError, Config, Consumer, Disposition, DownReason, Event, Message, OnFailure, QoS,
};

/// Typical temperature of each simulated sensor, in °C.
const SENSORS: [f64; 5] = [21.3, 19.8, 23.1, 18.6, 22.4];
/// One reading in this many fails on its first delivery.
const FAIL_EVERY: u64 = 1000;

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

    // 1. An MQTT broker inside this process.
    let port = start_embedded_broker(readings)?;
    tracing::info!(port, "embedded rumqttd broker listening on 127.0.0.1");

    // 2. The consumer, with hooks counting what happens on the wire.
    let counters = Arc::new(Counters::default());
    let subscribed = Arc::new(tokio::sync::Notify::new());
    let consumer = Consumer::builder(Config::new("127.0.0.1").port(port).client_id("quickstart"))
        .topic("sensors/+/temp", QoS::AtLeastOnce)
        // rumqttd 0.20 accepts a PUBACK only for its oldest unacknowledged message: a
        // consumer that acknowledges later successes while a failure waits for
        // redelivery is disconnected, and rumqttd loses the failed message. Holding one
        // message at a time means nothing is ever acknowledged past a failure. Brokers
        // that accept an acknowledgement skipping a withheld message (mosquitto, EMQX)
        // need no such limit: keep the default of 100 there, or match the broker's
        // in-flight window.
        .max_inflight(1)
        // The default, spelled out: a failed message is left unacknowledged and the
        // connection resumes its session so the broker sends it again.
        .on_failure(OnFailure::Redeliver)
        .on_event({
            let (counters, subscribed) = (counters.clone(), subscribed.clone());
            move |event| counters.record(event, &subscribed)
        })
        .build()?;

    // 3. The service stack.
    let stats = Arc::new(Mutex::new(Stats::default()));
    // Cancelled by the handler once every reading was processed, or by Ctrl-C / SIGTERM.
    let shutdown = tower_mqtt::signal::shutdown_on_signals();
    let handler = service_fn({
        let (stats, shutdown) = (stats.clone(), shutdown.clone());
        move |msg: Message| {
            let (stats, shutdown) = (stats.clone(), shutdown.clone());
            async move {
                let reading = Reading::parse(msg.payload())?;
                tracing::debug!(seq = reading.seq, "reading");
                let mut stats = stats.lock().unwrap();
                stats.deliveries += 1;
                if msg.dup() {
                    stats.dup_flagged += 1;
                }
                if reading.seq % FAIL_EVERY == 7 && stats.failed.insert(reading.seq) {
                    tracing::debug!(seq = reading.seq, "failing on purpose (first delivery)");
                    return Err::<(), BoxError>(
                        format!("reading {} failed on purpose", reading.seq).into(),
                    );
                }
                if stats.record(&reading) && stats.processed == readings {
                    shutdown.cancel();
                }
                Ok(())
            }
        }
    });
    // Outermost first. Every connection gets a clone of this stack; the clones share
    // one concurrency limit. A timeout is an `Err` like any other, so a call that takes
    // too long is redelivered too.
    let service = ServiceBuilder::new()
        .layer(layer_fn(Traced))
        .concurrency_limit(32)
        .timeout(Duration::from_secs(2))
        .service(handler);

    let started = Instant::now();
    let consumer_task = tokio::spawn(consumer.run(service, shutdown.clone()));

    // 4. Publish once the subscription is in place (the broker keeps nothing for a
    //    topic nobody subscribes to yet).
    tokio::time::timeout(Duration::from_secs(10), subscribed.notified())
        .await
        .map_err(|_| "the consumer did not subscribe within 10 s")?;
    let publisher = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            if let Err(e) = publish(port, readings).await {
                tracing::error!(error = %e, "publishing failed; stopping");
                shutdown.cancel();
            }
        }
    });

    // 5. Wait until every reading was processed (the handler then cancels `shutdown`,
    //    and `run` drains, acknowledges and disconnects).
    let limit = Duration::from_secs(60 + readings / 1_000);
    match tokio::time::timeout(limit, consumer_task).await {
        Ok(joined) => joined??,
        Err(_) => return Err(format!("not every reading arrived within {limit:?}").into()),
    }
    let elapsed = started.elapsed();
    publisher.abort();

    // 6. Summary.
    let stats = stats.lock().unwrap();
    let c = &*counters;
    println!();
    println!("== tower-mqtt quickstart summary ==");
    println!(
        "readings processed : {} of {readings} ({} deliveries)",
        stats.processed, stats.deliveries
    );
    println!(
        "failed on purpose  : {} on their first delivery; {} came back and succeeded",
        stats.failed.len(),
        stats.came_back
    );
    println!(
        "duplicates         : {} successful readings delivered again; {} deliveries had DUP set",
        stats.duplicates, stats.dup_flagged
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
        stats.processed as f64 / secs
    );
    if stats.processed < readings {
        return Err(format!("only {} of {readings} readings processed", stats.processed).into());
    }
    Ok(())
}

/// One parsed reading: payload `"<seq> <sensor> <celsius>"`, e.g. `"42 sensor-3 21.5"`.
struct Reading {
    seq: u64,
    sensor: String,
    celsius: f64,
}

impl Reading {
    fn parse(payload: &[u8]) -> Result<Self, BoxError> {
        let text = std::str::from_utf8(payload)?;
        let mut fields = text.split_whitespace();
        let (Some(seq), Some(sensor), Some(celsius), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(format!("malformed reading {text:?}").into());
        };
        Ok(Self {
            seq: seq.parse()?,
            sensor: sensor.to_owned(),
            celsius: celsius.parse()?,
        })
    }
}

/// What the service has seen. Delivery is at-least-once, so readings are counted once
/// by sequence number.
#[derive(Default)]
struct Stats {
    deliveries: u64,
    processed: u64,
    dup_flagged: u64,
    came_back: u64,
    duplicates: u64,
    failed: HashSet<u64>,
    done: HashSet<u64>,
    per_sensor: BTreeMap<String, (u64, f64)>,
}

impl Stats {
    /// Count a successful reading; `true` if it was new.
    fn record(&mut self, reading: &Reading) -> bool {
        if !self.done.insert(reading.seq) {
            self.duplicates += 1;
            return false;
        }
        if self.failed.contains(&reading.seq) {
            self.came_back += 1;
        }
        self.processed += 1;
        let entry = self
            .per_sensor
            .entry(reading.sensor.clone())
            .or_insert((0, 0.0));
        entry.0 += 1;
        entry.1 += reading.celsius;
        true
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
        let payload = format!("{seq} sensor-{sensor} {celsius:.1}");
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
