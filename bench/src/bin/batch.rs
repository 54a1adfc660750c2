//! # batch-bench
//!
//! Throughput of the batch layer (`tower_mqtt_layers::batch`) by batch size ×
//! `max_inflight` × connections, against a private mosquitto.
//!
//! ```text
//! cargo run --release -p tower-mqtt-bench --bin batch-bench
//! cargo run --release -p tower-mqtt-bench --bin batch-bench -- --n 20000 --call-ms 1 \
//!     --sizes 1,10,100,500 --inflight 100,1000 --connections 1,2
//! cargo run --release -p tower-mqtt-bench --bin batch-bench -- --latency 500,5000 --n 10000
//! ```
//!
//! Each row: a fresh mosquitto; persistent MQTT 5 sessions for the consumer's
//! connections in a shared group; N QoS 1 messages of 100 B published into them; then
//! the consumer is started and timed until the N-th message is acknowledged (drain).
//! The batch service stands for a database: every call takes `--call-ms` (a round
//! trip, a commit) whatever the batch size, and the batch layer keeps two batches in
//! flight (`concurrency(2)`), `max_wait` 50 ms. One run per row, in the process of the
//! bench (no child processes): numbers are indicative, see BENCHMARKS.md.
//!
//! With `--latency R1,R2,..` it measures what batching adds to each message's latency
//! instead: one connection (`max_inflight` the first of `--inflight`), the consumer
//! subscribed first, then N QoS 1 messages published live at each rate R per second,
//! each carrying its send time. A message's latency runs from its publish to the end of
//! the service call that handled it (the same 1 ms call). The baseline row has no batch
//! layer (one call per message, as many at once as the window allows); the others put
//! `BatchLayer` with `max_size` from `--sizes` in front of the same call. "added p99" is
//! the row's p99 minus the baseline's at the same rate.

#[allow(dead_code)]
#[path = "../bins.rs"]
mod bins;
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
use tower_mqtt::{BoxError, CancellationToken, Event, Message};
use tower_mqtt_layers::batch::{Batch, BatchLayer};
use tower_mqtt_layers::ServiceBuilderExt;

struct Opts {
    n: usize,
    call: Duration,
    sizes: Vec<usize>,
    inflight: Vec<usize>,
    connections: Vec<usize>,
    /// Publish rates (msg/s) for the latency table; empty: the throughput table.
    latency: Vec<usize>,
    max_wait: Duration,
}

fn parse() -> Opts {
    let mut o = Opts {
        n: 20_000,
        call: Duration::from_millis(1),
        sizes: vec![1, 10, 100, 500],
        inflight: vec![100, 1000],
        connections: vec![1, 2],
        latency: Vec::new(),
        max_wait: Duration::from_millis(50),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).map_or("", String::as_str);
        match pair[0].as_str() {
            "--n" => o.n = value.parse().expect("--n N"),
            "--call-ms" => o.call = Duration::from_millis(value.parse().expect("--call-ms MS")),
            "--sizes" => o.sizes = bins::list(value),
            "--inflight" => o.inflight = bins::list(value),
            "--connections" => o.connections = bins::list(value),
            "--latency" => o.latency = bins::list(value),
            "--max-wait-ms" => {
                o.max_wait = Duration::from_millis(value.parse().expect("--max-wait-ms MS"));
            }
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
    let consumer = bins::consumer(broker.port, id, topic)
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
        .max_wait(o.max_wait)
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

/// One latency row: (p50, p99) in ns from publish to the end of the handling call, for
/// N messages published at `rate`/s; `size` None = no batch layer.
async fn latency(o: &Opts, size: Option<usize>, rate: usize) -> Result<(u64, u64), String> {
    let broker = broker::Mosquitto::start()?;
    let (id, topic) = ("batch-latency", "bench/latency");
    let recorder = Arc::new(measure::Recorder::new(o.n as u64, true));
    let subscribed = Arc::new(Notify::new());
    let s = subscribed.clone();
    let consumer = bins::consumer(broker.port, id, topic)
        .max_inflight(o.inflight[0])
        .on_event(move |e| {
            if let Event::SubscriptionSuccess { .. } = e {
                s.notify_one();
            }
        })
        .build()
        .map_err(|e| e.to_string())?;
    let stop = CancellationToken::new();
    let call = o.call;
    let running = match size {
        None => {
            let r = recorder.clone();
            let service = tower::service_fn(move |m: Message| {
                let r = r.clone();
                async move {
                    tokio::time::sleep(call).await;
                    r.record(measure::sent_ns(m.payload()));
                    Ok::<_, BoxError>(())
                }
            });
            tokio::spawn(consumer.run(service, stop.clone()))
        }
        Some(size) => {
            let layer = BatchLayer::<Message>::builder()
                .max_size(size)
                .max_wait(o.max_wait)
                .concurrency(2)
                .build()
                .map_err(|e| e.to_string())?;
            let r = recorder.clone();
            let service =
                ServiceBuilder::new()
                    .batch(layer)
                    .service_fn(move |batch: Batch<Message>| {
                        let r = r.clone();
                        async move {
                            tokio::time::sleep(call).await;
                            for m in batch.iter() {
                                r.record(measure::sent_ns(m.payload()));
                            }
                            Ok::<_, BoxError>(())
                        }
                    });
            tokio::spawn(consumer.run(service, stop.clone()))
        }
    };
    tokio::time::timeout(Duration::from_secs(30), subscribed.notified())
        .await
        .map_err(|_| "not subscribed in 30 s".to_owned())?;
    publisher::publish(
        broker.port,
        "batch-latency-pub",
        topic,
        o.n as u64,
        100,
        false,
        1,
        rate as u64,
    )
    .await?;
    tokio::time::timeout(Duration::from_secs(300), recorder.wait())
        .await
        .map_err(|_| format!("{} of {} handled in 300 s", recorder.count(), o.n))?;
    stop.cancel();
    running
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok(recorder.percentiles())
}

/// The latency table: per rate, the baseline without batching, then each batch size.
async fn latency_table(o: &Opts) {
    println!(
        "N = {}, batch call {:?}, batch concurrency 2, max_wait {:?}, max_inflight {}, \
         1 connection, QoS 1, 100 B, live\n",
        o.n, o.call, o.max_wait, o.inflight[0]
    );
    println!("| rate msg/s | max_size | p50 ms | p99 ms | added p99 ms |");
    println!("|---:|---|---:|---:|---:|");
    let ms = |ns: u64| ns as f64 / 1e6;
    for &rate in &o.latency {
        let base = match latency(o, None, rate).await {
            Ok((p50, p99)) => {
                println!(
                    "| {rate} | no batching | {:.2} | {:.2} | - |",
                    ms(p50),
                    ms(p99)
                );
                Some(p99)
            }
            Err(e) => {
                println!("| {rate} | no batching | failed: {e} | | |");
                None
            }
        };
        for &size in &o.sizes {
            match latency(o, Some(size), rate).await {
                Ok((p50, p99)) => {
                    let added = base.map_or("-".to_owned(), |b| {
                        format!("{:.2}", (p99 as f64 - b as f64) / 1e6)
                    });
                    println!(
                        "| {rate} | {size} | {:.2} | {:.2} | {added} |",
                        ms(p50),
                        ms(p99)
                    );
                }
                Err(e) => println!("| {rate} | {size} | failed: {e} | | |"),
            }
        }
    }
}

#[tokio::main]
async fn main() {
    let o = parse();
    if !o.latency.is_empty() {
        latency_table(&o).await;
        return;
    }
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
