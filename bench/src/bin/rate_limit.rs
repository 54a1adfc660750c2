//! # rate-limit-bench
//!
//! Does the shared rate limit (`tower_mqtt_layers::rate_limit`) hold its rate when one
//! budget is shared by every connection of a consumer?
//!
//! ```text
//! cargo run --release -p tower-mqtt-bench --bin rate-limit-bench
//! cargo run --release -p tower-mqtt-bench --bin rate-limit-bench -- --limits 500,5000 \
//!     --connections 1,2,4 --seconds 4
//! ```
//!
//! Each row: a fresh private mosquitto; persistent MQTT 5 sessions for the consumer's
//! connections in a shared group; `limit × seconds` QoS 1 messages of 100 B queued into
//! them (more than the limit lets through, so the consumer is never starved); then the
//! consumer drains them through `.shared_rate_limit(limit, 1 s)` over a no-op service.
//! The measured rate is the number of calls between the first and the last, divided by
//! the time between them (the first second's burst allowance is the limiter's own, see
//! its docs). One run per row, in-process: numbers are indicative, see BENCHMARKS.md.

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

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tower::ServiceBuilder;
use tower_mqtt::{BoxError, CancellationToken, Message};
use tower_mqtt_layers::ServiceBuilderExt;

struct Opts {
    limits: Vec<u32>,
    connections: Vec<usize>,
    seconds: u32,
}

fn parse() -> Opts {
    let mut o = Opts {
        limits: vec![500, 5000, 20_000],
        connections: vec![1, 2, 4],
        seconds: 4,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).map_or("", String::as_str);
        match pair[0].as_str() {
            "--limits" => o.limits = bins::list(value),
            "--connections" => o.connections = bins::list(value),
            "--seconds" => o.seconds = value.parse().expect("--seconds S"),
            other => panic!("unknown flag {other}; see the top of bench/src/bin/rate_limit.rs"),
        }
    }
    o
}

/// One row: (measured msg/s, share of the calls taken by the busiest connection).
async fn scenario(limit: u32, connections: usize, seconds: u32) -> Result<(f64, f64), String> {
    let broker = broker::Mosquitto::start()?;
    let (id, topic, group) = ("rate-bench", "bench/rate", "bench");
    let ids: Vec<String> = (0..connections).map(|i| format!("{id}_{i}")).collect();
    publisher::create_sessions(broker.port, &ids, &format!("$share/{group}/{topic}"), 1, 5).await?;
    let n = (limit * seconds) as usize;
    publisher::publish(
        broker.port,
        "rate-bench-pub",
        topic,
        n as u64,
        100,
        false,
        1,
        0,
    )
    .await?;

    let calls: Arc<Mutex<Vec<(Instant, usize)>>> = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let done = Arc::new(Notify::new());
    let (c, d) = (calls.clone(), done.clone());
    let service = ServiceBuilder::new()
        .shared_rate_limit(limit, Duration::from_secs(1))
        .map_err(|e| e.to_string())?
        .service_fn(move |m: Message| {
            let mut calls = c.lock().expect("not poisoned");
            calls.push((Instant::now(), m.producer_index()));
            if calls.len() == n {
                d.notify_one();
            }
            async { Ok::<_, BoxError>(()) }
        });
    let consumer = bins::consumer(broker.port, id, topic)
        .shared_group(group)
        .concurrency(connections)
        .max_inflight(1000)
        .build()
        .map_err(|e| e.to_string())?;
    let stop = CancellationToken::new();
    let running = tokio::spawn(consumer.run(service, stop.clone()));
    let wait = Duration::from_secs(u64::from(seconds) * 3 + 30);
    tokio::time::timeout(wait, done.notified())
        .await
        .map_err(|_| {
            format!(
                "{} of {n} calls in {wait:?}",
                calls.lock().expect("ok").len()
            )
        })?;
    stop.cancel();
    running
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;

    let calls = calls.lock().expect("not poisoned");
    let elapsed = calls[n - 1].0 - calls[0].0;
    let rate = (n - 1) as f64 / elapsed.as_secs_f64();
    let busiest = (0..connections)
        .map(|i| calls.iter().filter(|(_, c)| *c == i).count())
        .max()
        .unwrap_or(0);
    Ok((rate, busiest as f64 / n as f64))
}

#[tokio::main]
async fn main() {
    let o = parse();
    println!(
        "{} s of messages per row queued before the start, QoS 1, 100 B, MQTT 5, \
         max_inflight 1000 per connection, one budget per consumer\n",
        o.seconds
    );
    println!("| limit msg/s | connections | measured msg/s | measured / limit | busiest connection's share |");
    println!("|---:|---:|---:|---:|---:|");
    for &limit in &o.limits {
        for &connections in &o.connections {
            match scenario(limit, connections, o.seconds).await {
                Ok((rate, share)) => println!(
                    "| {limit} | {connections} | {rate:.0} | {:.3} | {:.0} % |",
                    rate / f64::from(limit),
                    share * 100.0
                ),
                Err(e) => println!("| {limit} | {connections} | failed: {e} | | |"),
            }
        }
    }
}
