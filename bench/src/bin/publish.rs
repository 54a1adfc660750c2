//! # publish-bench
//!
//! Confirmed QoS 1 publish throughput: `tower_mqtt::Publisher` against a rumqttc publish
//! loop that awaits each PUBACK through a correlation map, against a private mosquitto.
//!
//! ```text
//! cargo run --release -p tower-mqtt-bench --bin publish-bench
//! cargo run --release -p tower-mqtt-bench --bin publish-bench -- --n 50000 --window 1,100,1000 --runs 3
//! ```
//!
//! Both publishers keep `window` publishes unconfirmed at once (`buffer_unordered`
//! over calls that each resolve on their PUBACK), MQTT 3.1.1, QoS 1, 100 B payloads, one
//! connection, and are timed from the first call to the last confirmation:
//!
//! * **tower-mqtt**: `Publisher::builder(config).max_inflight(window)`, each call
//!   `publisher.publish(Publish::new(topic, payload).qos(QoS::AtLeastOnce))`.
//! * **rumqttc + correlation map**: rumqttc 0.25 `AsyncClient` with `set_inflight(window)`
//!   and its `EventLoop` polled on a task of its own. rumqttc's `publish().await` returns
//!   once the request is queued, not confirmed, so the caller registers a oneshot before
//!   queueing (in request order, under a lock), the event loop pairs it with the packet id
//!   it assigned (`Event::Outgoing(Outgoing::Publish(pkid))`, same order) and completes
//!   it on `Incoming::PubAck(pkid)`: the usual way to await a confirmation with rumqttc.
//!
//! Runs alternate (A B, B A, …) on one broker; each run publishes to a topic of its own
//! with no subscriber. One process: CPU µs/msg is the whole process's over the run.

#[allow(dead_code)]
#[path = "../broker.rs"]
mod broker;
#[allow(dead_code)]
#[path = "../measure.rs"]
mod measure;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use tokio::sync::oneshot;
use tower_mqtt::{Config, ProtoVer, Publish, Publisher, QoS};

struct Opts {
    n: usize,
    windows: Vec<usize>,
    runs: usize,
}

fn parse() -> Opts {
    let mut o = Opts {
        n: 50_000,
        windows: vec![1, 100, 1000],
        runs: 3,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        let num = |v: &str| -> usize { v.parse().unwrap_or_else(|_| panic!("not a number: {v}")) };
        match flag.as_str() {
            "--n" => o.n = num(value),
            "--runs" => o.runs = num(value),
            "--window" => o.windows = value.split(',').map(num).collect(),
            _ => panic!("unknown flag {flag} (--n, --window, --runs)"),
        }
    }
    o
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let o = parse();
    let broker = broker::Mosquitto::start()?;
    println!("{}", broker::version());
    println!("| window | publisher | msg/s (median) | runs min–max | × rumqttc | CPU µs/msg |");
    println!("|---:|---|---:|---:|---:|---:|");
    for &window in &o.windows {
        let mut results: [Vec<(f64, f64)>; 2] = [Vec::new(), Vec::new()];
        for run in 0..o.runs {
            let order: [usize; 2] = if run % 2 == 0 { [0, 1] } else { [1, 0] };
            for which in order {
                let topic = format!("pub/w{window}/r{run}/{which}");
                let cpu0 = measure::cpu_ns();
                let t0 = Instant::now();
                if which == 0 {
                    tower(broker.port, &topic, o.n, window).await?;
                } else {
                    rumqttc_map(broker.port, &topic, o.n, window).await?;
                }
                let secs = t0.elapsed().as_secs_f64();
                let cpu = measure::cpu_ns().saturating_sub(cpu0) as f64 / 1e3 / o.n as f64;
                eprintln!(
                    "window {window} run {run} {}: {:.0} msg/s, {cpu:.2} µs/msg",
                    ["tower-mqtt", "rumqttc"][which],
                    o.n as f64 / secs
                );
                results[which].push((o.n as f64 / secs, cpu));
            }
        }
        let med = |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| {
            let mut x: Vec<f64> = v.iter().map(f).collect();
            x.sort_by(f64::total_cmp);
            x[x.len() / 2]
        };
        let base = med(&results[1], |r| r.0);
        for (which, name) in [
            (0, "tower-mqtt Publisher"),
            (1, "rumqttc + correlation map"),
        ] {
            let r = &results[which];
            let lo = r.iter().map(|x| x.0).fold(f64::MAX, f64::min);
            let hi = r.iter().map(|x| x.0).fold(0.0, f64::max);
            let rate = med(r, |x| x.0);
            println!(
                "| {window} | {name} | {rate:.0} | {lo:.0}–{hi:.0} | {:.2} | {:.2} |",
                rate / base,
                med(r, |x| x.1)
            );
        }
    }
    Ok(())
}

fn payload() -> Vec<u8> {
    vec![b'x'; 100]
}

/// `n` confirmed publishes through `tower_mqtt::Publisher`, `window` at a time.
async fn tower(port: u16, topic: &str, n: usize, window: usize) -> Result<(), String> {
    let config = Config::new("127.0.0.1")
        .port(port)
        .client_id(format!("tm-{topic}"))
        .proto_ver(ProtoVer::V4);
    let publisher = Publisher::builder(config)
        .max_inflight(window)
        .build()
        .map_err(|e| e.to_string())?;
    let body = bytes::Bytes::from(payload());
    let mut calls = stream::iter(0..n)
        .map(|_| {
            publisher.publish(Publish::new(topic.to_owned(), body.clone()).qos(QoS::AtLeastOnce))
        })
        .buffer_unordered(window);
    while let Some(r) = calls.next().await {
        r.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Pairs queued publishes with their packet ids and their PUBACKs.
#[derive(Default)]
struct Correlation {
    /// Waiters in request order, not yet given a packet id.
    queued: VecDeque<oneshot::Sender<()>>,
    /// Waiters by packet id, sent and not yet acknowledged.
    sent: HashMap<u16, oneshot::Sender<()>>,
}

/// `n` confirmed publishes through rumqttc, `window` at a time, each awaited through
/// the correlation map.
async fn rumqttc_map(port: u16, topic: &str, n: usize, window: usize) -> Result<(), String> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet};
    let mut o = MqttOptions::new(format!("rq-{topic}"), "127.0.0.1", port);
    o.set_inflight(window.min(u16::MAX as usize) as u16);
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut el) = AsyncClient::new(o, window.max(10));
    let corr = Arc::new(Mutex::new(Correlation::default()));
    let driver = {
        let corr = corr.clone();
        tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        let mut c = corr.lock().expect("not poisoned");
                        if let Some(tx) = c.queued.pop_front() {
                            c.sent.insert(pkid, tx);
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        let tx = corr.lock().expect("not poisoned").sent.remove(&ack.pkid);
                        if let Some(tx) = tx {
                            let _ = tx.send(());
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return format!("rumqttc: {e}"),
                }
            }
        })
    };
    // Queue order must be request order: one caller at a time registers and queues.
    let order = Arc::new(tokio::sync::Mutex::new(()));
    let body = payload();
    let mut calls = stream::iter(0..n)
        .map(|_| {
            let (client, corr, order, body) =
                (client.clone(), corr.clone(), order.clone(), body.clone());
            async move {
                let (tx, rx) = oneshot::channel();
                {
                    let _turn = order.lock().await;
                    corr.lock().expect("not poisoned").queued.push_back(tx);
                    client
                        .publish(topic, rumqttc::QoS::AtLeastOnce, false, body)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                rx.await.map_err(|_| "lost the confirmation".to_owned())
            }
        })
        .buffer_unordered(window);
    while let Some(r) = calls.next().await {
        r?;
    }
    let _ = client.disconnect().await;
    driver.abort();
    Ok(())
}
