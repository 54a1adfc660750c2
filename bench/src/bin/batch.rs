//! # batch-bench
//!
//! Throughput of the batch layer (`tower_mqtt_layers::batch`) by batch size ×
//! `max_inflight` × connections, against a private mosquitto.
//!
//! ```text
//! cargo run --release -p tower-mqtt-bench --bin batch-bench
//! cargo run --release -p tower-mqtt-bench --bin batch-bench -- --n 20000 --call-ms 1 \
//!     --sizes 1,10,100,500 --inflight 100,1000 --connections 1,2
//! ```
//!
//! Each row: a fresh mosquitto; persistent MQTT 5 sessions for the consumer's
//! connections in a shared group; N QoS 1 messages of 100 B published into them; then
//! the consumer is started and timed until the N-th message is acknowledged (drain).
//! The batch service stands for a database: every call takes `--call-ms` (a round
//! trip, a commit) whatever the batch size, and the batch layer keeps two batches in
//! flight (`concurrency(2)`), `max_wait` 50 ms. One run per row, in the process of the
//! bench (no child processes): numbers are indicative, see BENCHMARKS.md.

#[allow(dead_code)]
#[path = "../broker.rs"]
mod broker;
#[allow(dead_code)]
#[path = "../measure.rs"]
mod measure;
#[allow(dead_code)]
#[path = "../publisher.rs"]
mod publisher;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tower::ServiceBuilder;
use tower_mqtt::{BoxError, CancellationToken, Config, Consumer, Event, Message, ProtoVer, QoS};
use tower_mqtt_layers::batch::{Batch, BatchLayer};
use tower_mqtt_layers::ServiceBuilderExt;

struct Opts {
    n: usize,
    call: Duration,
    sizes: Vec<usize>,
    inflight: Vec<usize>,
    connections: Vec<usize>,
}

fn list(value: &str) -> Vec<usize> {
    value
        .split(',')
        .map(|v| v.parse().unwrap_or_else(|_| panic!("not a number: {v}")))
        .collect()
}

fn parse() -> Opts {
    let mut o = Opts {
        n: 20_000,
        call: Duration::from_millis(1),
        sizes: vec![1, 10, 100, 500],
        inflight: vec![100, 1000],
        connections: vec![1, 2],
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).map_or("", String::as_str);
        match pair[0].as_str() {
            "--n" => o.n = value.parse().expect("--n N"),
            "--call-ms" => o.call = Duration::from_millis(value.parse().expect("--call-ms MS")),
            "--sizes" => o.sizes = list(value),
            "--inflight" => o.inflight = list(value),
            "--connections" => o.connections = list(value),
            other => panic!("unknown flag {other}; see the top of bench/src/bin/batch.rs"),
        }
    }
    o
}

/// One row: msg/s and the batch calls made.
async fn scenario(
    o: &Opts,
    size: usize,
    inflight: usize,
    connections: usize,
) -> Result<(f64, usize), String> {
    let broker = broker::Mosquitto::start()?;
    let (id, topic, group) = ("batch-bench", "bench/batch", "bench");
    let ids: Vec<String> = (0..connections).map(|i| format!("{id}_{i}")).collect();
    let filter = format!("$share/{group}/{topic}");
    publisher::create_sessions(broker.port, &ids, &filter, 1, 5).await?;
    publisher::publish(
        broker.port,
        "batch-bench-pub",
        topic,
        o.n as u64,
        100,
        false,
        1,
        0,
    )
    .await?;

    let (acked, done) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
    let (a, d, n) = (acked.clone(), done.clone(), o.n);
    let consumer = Consumer::builder(
        Config::new("127.0.0.1")
            .port(broker.port)
            .client_id(id)
            .proto_ver(ProtoVer::V5),
    )
    .topic(topic, QoS::AtLeastOnce)
    .shared_group(group)
    .concurrency(connections)
    .max_inflight(inflight)
    .on_event(move |e| {
        if let Event::MessageAck { .. } = e {
            let seen = a.fetch_add(1, Ordering::Relaxed) + 1;
            if seen == n {
                d.notify_one();
            }
        }
    })
    .build()
    .map_err(|e| e.to_string())?;
    let layer = BatchLayer::<Message>::builder()
        .max_size(size)
        .max_wait(Duration::from_millis(50))
        .concurrency(2)
        .build()
        .map_err(|e| e.to_string())?;
    let calls = Arc::new(AtomicUsize::new(0));
    let (c, call) = (calls.clone(), o.call);
    let service = ServiceBuilder::new()
        .batch(layer)
        .service_fn(move |_: Batch<Message>| {
            c.fetch_add(1, Ordering::Relaxed);
            async move {
                tokio::time::sleep(call).await;
                Ok::<_, BoxError>(())
            }
        });
    let stop = CancellationToken::new();
    let start = Instant::now();
    let running = tokio::spawn(consumer.run(service, stop.clone()));
    tokio::time::timeout(Duration::from_secs(300), done.notified())
        .await
        .map_err(|_| {
            format!(
                "{} of {} acknowledged in 300 s",
                acked.load(Ordering::Relaxed),
                o.n
            )
        })?;
    let elapsed = start.elapsed();
    stop.cancel();
    running
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok((
        o.n as f64 / elapsed.as_secs_f64(),
        calls.load(Ordering::Relaxed),
    ))
}

#[tokio::main]
async fn main() {
    let o = parse();
    println!(
        "N = {}, batch call {:?}, batch concurrency 2, max_wait 50 ms, QoS 1, 100 B, drain\n",
        o.n, o.call
    );
    println!(
        "| max_size | max_inflight | connections | window | msg/s | batch calls | mean batch |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for &connections in &o.connections {
        for &inflight in &o.inflight {
            for &size in &o.sizes {
                match scenario(&o, size, inflight, connections).await {
                    Ok((rate, calls)) => println!(
                        "| {size} | {inflight} | {connections} | {} | {rate:.0} | {calls} | {:.1} |",
                        inflight * connections,
                        o.n as f64 / calls.max(1) as f64
                    ),
                    Err(e) => println!("| {size} | {inflight} | {connections} | - | failed: {e} | | |"),
                }
            }
        }
    }
}
