//! # tower-mqtt-bench
//!
//! Throughput, latency, CPU and memory of tower-mqtt against a hand-written rumqttc loop,
//! ruststream-rumqttc and `mosquitto_sub`, measured in the same run, interleaved.
//!
//! ```text
//! cargo run --release -p tower-mqtt-bench -- --quick
//! cargo run --release -p tower-mqtt-bench -- --mode drain --qos 0,1,2 --payload 100 --n 200000 --runs 3
//! cargo run --release -p tower-mqtt-bench -- --mode live --qos 1 --rate 20000 --n 100000
//! ```
//!
//! Each scenario gets a private mosquitto (`/usr/sbin/mosquitto`, free 127.0.0.1 port,
//! generated config in a temp dir, killed on drop). Each variant × repetition runs in a
//! child process (this binary re-executed with `--child`), so CPU time and peak RSS
//! belong to that consumer alone. Variant order alternates per repetition (A B C D E,
//! then E D C B A, …) so machine noise hits every variant alike.
//!
//! Modes:
//! * `drain`: the consumer's persistent sessions are created (connect, subscribe,
//!   disconnect), N messages are published into them, then the consumer is started and
//!   timed from just before it connects until the N-th message is done (ack decided /
//!   issued). Consumer-bound.
//! * `live`: the sessions are created, the consumer connects, then the parent publishes
//!   N messages at `--rate` per second (0 = flood) while it consumes. The first 8 payload
//!   bytes carry the send time; latency is send time → ack decided (tower-mqtt: its
//!   `Event::MessageAck`; rumqttc loop: right after `try_ack`; ruststream: after
//!   `ack().await`).
//! * `synthetic`: no mosquitto. A stand-in broker in this process (`synthetic.rs`)
//!   completes CONNECT and SUBSCRIBE, then writes pre-encoded PUBLISH packets as fast as
//!   the socket takes them (QoS 1: never more than `--max-inflight` unacknowledged per
//!   connection) and reads the acks; the consumer is timed as in `drain`. Measures the
//!   consumer's own ceiling. QoS 0 and 1. The broker columns show the stand-in's CPU
//!   and calls.
//!
//! Flags (lists are comma separated; every combination is one scenario):
//! `--mode drain,live,synthetic` `--qos 0,1,2` `--payload 100,16384` `--concurrency 1,4`
//! `--max-inflight 20,1000` `--proto 4,5` `--n N` `--runs R` `--rate R`
//! `--variants baseline,identity,full,ruststream,mosquitto_sub` (the default; `failure`,
//! the full stack plus `tower-mqtt-layers`' catch-panic, retry and JSON decode, on JSON
//! payloads of the same size, and `batch`, `failure` plus the batch layer (batches of
//! up to 50, 20 ms, 2 in flight), only when named) `--quick`.
//!
//! `TOWER_MQTT_BENCH_READ_PACING=off` (or `=<messages per second>`) sets the tower-mqtt
//! consumers' `read_pacing`; each comparison read pacing makes is printed (QoS 1 and 2,
//! and live runs: those install an event hook anyway).
//!
//! Before each child the bench waits up to 20 s for the machine to be quiet
//! (`TOWER_MQTT_BENCH_QUIET_WAIT=<seconds>` changes that; the busy share it saw is
//! printed either way).
//!
//! Profiling: `TOWER_MQTT_BENCH_WRAP="valgrind --tool=callgrind"` runs every child under
//! that command (use a small `--n` and `--runs 1 --variants identity,full`).

mod broker;
mod measure;
mod publisher;
mod synthetic;
mod variants;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use measure::{children_cpu_ns, cpu_ns, peak_rss_kib, voluntary_switches, Recorder};
use variants::{Job, Variant};

/// How long one child may take before it is killed and its run reported as failed.
const CHILD_TIMEOUT: Duration = Duration::from_secs(300);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        child_main(&args[1..]);
        return;
    }
    let opts = match Opts::parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}\n\nsee the docs at the top of bench/src/main.rs");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&opts) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Opts {
    modes: Vec<String>,
    qos: Vec<u8>,
    payload: Vec<usize>,
    concurrency: Vec<usize>,
    max_inflight: Vec<u16>,
    proto: Vec<u8>,
    n: u64,
    runs: usize,
    rate: u64,
    variants: Vec<Variant>,
}

fn list<T: std::str::FromStr>(flag: &str, v: &str) -> Result<Vec<T>, String> {
    v.split(',')
        .map(|x| {
            x.trim()
                .replace('_', "")
                .parse()
                .map_err(|_| format!("{flag}: bad value {x:?}"))
        })
        .collect()
}

impl Opts {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut o = Self {
            modes: vec!["drain".into()],
            qos: vec![1],
            payload: vec![100],
            concurrency: vec![1],
            max_inflight: vec![1000],
            proto: vec![5],
            n: 200_000,
            runs: 3,
            rate: 10_000,
            variants: Variant::DEFAULT.to_vec(),
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            if flag == "--quick" {
                o.modes = vec!["drain".into()];
                o.qos = vec![1];
                o.payload = vec![100];
                o.n = 50_000;
                o.runs = 3;
                continue;
            }
            let v = it
                .next()
                .ok_or_else(|| format!("{flag} needs a value"))?
                .as_str();
            match flag.as_str() {
                "--mode" => {
                    o.modes = v.split(',').map(str::to_owned).collect();
                    if let Some(m) = o
                        .modes
                        .iter()
                        .find(|m| !["drain", "live", "synthetic"].contains(&m.as_str()))
                    {
                        return Err(format!("--mode: unknown {m:?} (drain, live, synthetic)"));
                    }
                }
                "--qos" => o.qos = list(flag, v)?,
                "--payload" => o.payload = list(flag, v)?,
                "--concurrency" => o.concurrency = list(flag, v)?,
                "--max-inflight" => o.max_inflight = list(flag, v)?,
                "--proto" => o.proto = list(flag, v)?,
                "--n" => o.n = v.replace('_', "").parse().map_err(|_| "--n: bad value")?,
                "--runs" => o.runs = v.parse().map_err(|_| "--runs: bad value")?,
                "--rate" => {
                    o.rate = v
                        .replace('_', "")
                        .parse()
                        .map_err(|_| "--rate: bad value")?
                }
                "--variants" => {
                    o.variants = v
                        .split(',')
                        .map(|x| Variant::parse(x).ok_or_else(|| format!("unknown variant {x:?}")))
                        .collect::<Result<_, _>>()?
                }
                _ => return Err(format!("unknown flag {flag}")),
            }
        }
        if o.qos.iter().any(|q| *q > 2) {
            return Err("--qos: 0, 1 or 2".into());
        }
        if o.proto.iter().any(|p| *p != 4 && *p != 5) {
            return Err("--proto: 4 or 5".into());
        }
        if o.payload.iter().any(|p| *p < 8) {
            return Err("--payload: at least 8 bytes (the send timestamp)".into());
        }
        if o.n == 0 || o.runs == 0 {
            return Err("--n and --runs must be positive".into());
        }
        Ok(o)
    }
}

#[derive(Debug, Clone)]
struct Scenario {
    live: bool,
    /// Against the stand-in broker of `synthetic.rs` instead of mosquitto.
    synthetic: bool,
    qos: u8,
    payload: usize,
    concurrency: usize,
    max_inflight: u16,
    proto: u8,
}

impl Scenario {
    fn title(&self, n: u64, rate: u64) -> String {
        let mode = if self.live {
            if rate == 0 {
                "live (flood)".to_owned()
            } else {
                format!("live @ {rate}/s")
            }
        } else if self.synthetic {
            "synthetic broker".into()
        } else {
            "drain".into()
        };
        format!(
            "{mode}, QoS {}, {} B, concurrency {}, max_inflight {}, MQTT {}, n = {n}",
            self.qos,
            self.payload,
            self.concurrency,
            self.max_inflight,
            if self.proto == 5 { "5" } else { "3.1.1" }
        )
    }

    /// Why a variant cannot run this scenario, if it cannot.
    fn not_applicable(&self, v: Variant) -> Option<&'static str> {
        match v {
            Variant::Ruststream if self.proto != 5 => Some("MQTT 5 only"),
            Variant::MosquittoSub if self.concurrency > 1 => {
                Some("-C N cannot count a shared group")
            }
            _ if self.synthetic && self.qos > 1 => Some("the synthetic broker serves QoS 0 and 1"),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Parent: scenarios, repetitions, children, table
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    elapsed_ns: u64,
    count: u64,
    cpu_ns: u64,
    rss_kib: u64,
    p50_ns: u64,
    p99_ns: u64,
    /// The broker's CPU time while the child ran.
    broker_cpu_ns: u64,
    /// The broker's read + write calls while the child ran.
    broker_syscalls: u64,
    /// Kernel-mode part of `broker_cpu_ns`.
    broker_sys_ns: u64,
    /// Voluntary context switches of the consumer (all its threads): how often it
    /// went to sleep waiting for work.
    sleeps: u64,
    /// The broker's voluntary context switches while the child ran.
    broker_sleeps: u64,
    /// The broker's sockets to the consumer, last seen while the child ran.
    segments: measure::SentSegments,
    /// Share of all cores busy (other processes) just before the child started.
    busy: f64,
}

impl Sample {
    fn rate(&self) -> f64 {
        self.count as f64 / (self.elapsed_ns.max(1) as f64 / 1e9)
    }
}

fn run(opts: &Opts) -> Result<(), String> {
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let mut scenarios = Vec::new();
    for mode in &opts.modes {
        for &qos in &opts.qos {
            for &payload in &opts.payload {
                for &concurrency in &opts.concurrency {
                    for &max_inflight in &opts.max_inflight {
                        for &proto in &opts.proto {
                            scenarios.push(Scenario {
                                live: mode == "live",
                                synthetic: mode == "synthetic",
                                qos,
                                payload,
                                concurrency,
                                max_inflight,
                                proto,
                            });
                        }
                    }
                }
            }
        }
    }
    let started = Instant::now();
    println!("{}", machine());
    println!(
        "command: cargo run --release -p tower-mqtt-bench -- {}\n",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    );
    for (si, sc) in scenarios.iter().enumerate() {
        let broker = if sc.synthetic {
            Server::Synthetic(synthetic::Synthetic::start(sc.payload)?)
        } else {
            Server::Mosquitto(broker::Mosquitto::start()?)
        };
        let mut samples: BTreeMap<usize, Vec<Sample>> = BTreeMap::new();
        let mut failures: BTreeMap<usize, String> = BTreeMap::new();
        for rep in 0..opts.runs {
            let mut order: Vec<usize> = (0..opts.variants.len()).collect();
            if rep % 2 == 1 {
                order.reverse();
            }
            for vi in order {
                let v = opts.variants[vi];
                if sc.not_applicable(v).is_some() || failures.contains_key(&vi) {
                    continue;
                }
                let job = Job {
                    variant: v,
                    port: broker.port(),
                    topic: format!("bench/s{si}/r{rep}/{}", v.name()),
                    id: format!("bench-s{si}-r{rep}-{}", v.name()),
                    qos: sc.qos,
                    n: opts.n,
                    live: sc.live,
                    concurrency: sc.concurrency,
                    max_inflight: sc.max_inflight,
                    proto: sc.proto,
                    group: "bench".into(),
                    max_packet: (sc.payload + 1024).max(10 * 1024),
                };
                let t = Instant::now();
                match rt.block_on(run_one(&job, sc, opts.rate, &broker)) {
                    Ok(s) => {
                        eprintln!(
                            "[{:>5.0}s] scenario {}/{} run {}/{} {:<14} {:>9.0} msg/s  p99 {:>8.1} µs  rss {:>6.1} MiB  cpu {:>5.2} µs/msg  broker {:>5.2} ({:.2}) µs/msg {:.3} calls/msg  sleeps/1k msg {:.1} broker {:.1}  B/seg {:.0} rwnd {:.0}%  busy {:>3.0}%  ({:.1}s)",
                            started.elapsed().as_secs_f64(),
                            si + 1,
                            scenarios.len(),
                            rep + 1,
                            opts.runs,
                            v.name(),
                            s.rate(),
                            s.p99_ns as f64 / 1e3,
                            s.rss_kib as f64 / 1024.0,
                            s.cpu_ns as f64 / 1e3 / s.count.max(1) as f64,
                            s.broker_cpu_ns as f64 / 1e3 / s.count.max(1) as f64,
                            s.broker_sys_ns as f64 / 1e3 / s.count.max(1) as f64,
                            s.broker_syscalls as f64 / s.count.max(1) as f64,
                            s.sleeps as f64 * 1e3 / s.count.max(1) as f64,
                            s.broker_sleeps as f64 * 1e3 / s.count.max(1) as f64,
                            s.segments.bytes as f64 / s.segments.segments.max(1) as f64,
                            s.segments.rwnd_limited_ms as f64 * 100.0
                                / s.segments.busy_ms.max(1) as f64,
                            s.busy * 100.0,
                            t.elapsed().as_secs_f64()
                        );
                        samples.entry(vi).or_default().push(s);
                    }
                    Err(e) => {
                        eprintln!(
                            "scenario {} run {} {}: FAILED: {e}",
                            si + 1,
                            rep + 1,
                            v.name()
                        );
                        failures.insert(vi, e);
                    }
                }
            }
        }
        println!("{}", table(sc, opts, &samples, &failures));
        drop(broker);
    }
    Ok(())
}

/// One variant, one repetition: sessions, (drain) backlog, child, (live) publisher.
async fn run_one(job: &Job, sc: &Scenario, rate: u64, broker: &Server) -> Result<Sample, String> {
    let pub_id = format!("{}-pub", job.id);
    if let Server::Synthetic(s) = broker {
        s.expect(job.n, job.qos, job.max_inflight)?;
    } else {
        let ids: Vec<String> = (0..job.concurrency).map(|i| job.client_id(i)).collect();
        publisher::create_sessions(job.port, &ids, &job.filter(), job.qos, job.proto).await?;
    }
    if !job.live && matches!(broker, Server::Mosquitto(_)) {
        // Publish at QoS ≥ 1 so every message is in the broker's queues before the
        // consumer starts; delivery QoS is the subscription's.
        publisher::publish(
            job.port,
            &pub_id,
            &job.topic,
            job.n,
            sc.payload,
            job.variant.json_payload(),
            job.qos.max(1),
            0,
        )
        .await?;
    }
    let busy = wait_quiet().await;
    let broker_cpu0 = broker.cpu_ns();
    let broker_sys0 = broker.syscalls();
    let broker_kernel0 = broker.sys_ns();
    let broker_sleeps0 = broker.sleeps();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // Profiling hook: TOWER_MQTT_BENCH_WRAP="valgrind --tool=callgrind" runs each child
    // under that command.
    let wrap: Vec<String> = std::env::var("TOWER_MQTT_BENCH_WRAP")
        .map(|w| w.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    let mut cmd = match wrap.split_first() {
        Some((program, args)) => {
            let mut c = tokio::process::Command::new(program);
            c.args(args).arg(&exe);
            c
        }
        None => tokio::process::Command::new(&exe),
    };
    let mut child = cmd
        .args(child_args(job))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("spawn child: {e}"))?;
    let stdout = child.stdout.take().expect("piped");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    // The broker's sockets as `ss` sees them, every 50 ms until the child is done (a
    // consumer that exits by itself, like mosquitto_sub, takes its socket with it).
    let seen = Arc::new(std::sync::Mutex::new(measure::SentSegments::default()));
    let sampler = {
        let (seen, port, conns) = (seen.clone(), job.port, job.concurrency);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let s =
                    tokio::task::spawn_blocking(move || measure::SentSegments::sample(port, conns))
                        .await
                        .ok()
                        .flatten();
                if let (Some(s), Ok(mut last)) = (s, seen.lock()) {
                    if s.bytes >= last.bytes {
                        *last = s;
                    }
                }
            }
        })
    };
    let work = async {
        let mut publishing = None;
        let mut result = None;
        while let Some(line) = lines.next_line().await.map_err(|e| e.to_string())? {
            if line == "READY" && job.live && publishing.is_none() {
                let (port, topic, n, size, q) =
                    (job.port, job.topic.clone(), job.n, sc.payload, job.qos);
                let (pub_id, json) = (pub_id.clone(), job.variant.json_payload());
                publishing = Some(tokio::spawn(async move {
                    publisher::publish(port, &pub_id, &topic, n, size, json, q, rate).await
                }));
            } else if let Some(rest) = line.strip_prefix("RESULT ") {
                // Once more, while the child's socket is still open.
                let (port, conns) = (job.port, job.concurrency);
                if let Ok(Some(s)) =
                    tokio::task::spawn_blocking(move || measure::SentSegments::sample(port, conns))
                        .await
                {
                    if let Ok(mut last) = seen.lock() {
                        if s.bytes >= last.bytes {
                            *last = s;
                        }
                    }
                }
                result = Some(parse_result(rest)?);
            } else if let Some(rest) = line.strip_prefix("FAILED ") {
                return Err(rest.to_owned());
            }
        }
        if let Some(p) = publishing {
            p.await.map_err(|e| e.to_string())??;
        }
        result.ok_or_else(|| "child exited without a result".to_owned())
    };
    let out = tokio::time::timeout(CHILD_TIMEOUT + Duration::from_secs(30), work)
        .await
        .map_err(|_| "child timed out".to_owned())?;
    let _ = child.kill().await;
    sampler.abort();
    let mut sample = out?;
    sample.segments = seen.lock().map(|s| *s).unwrap_or_default();
    sample.busy = busy;
    // In live mode this includes handling the publisher.
    sample.broker_cpu_ns = broker.cpu_ns().saturating_sub(broker_cpu0);
    sample.broker_syscalls = broker.syscalls().saturating_sub(broker_sys0);
    sample.broker_sys_ns = broker.sys_ns().saturating_sub(broker_kernel0);
    sample.broker_sleeps = broker.sleeps().saturating_sub(broker_sleeps0);
    if sample.count < job.n {
        return Err(format!(
            "only {} of {} messages arrived",
            sample.count, job.n
        ));
    }
    Ok(sample)
}

/// The machine is shared (other builds and tests run beside the benchmark): wait up to
/// `QUIET_WAIT` for a 300 ms window in which less than 25% of the cores are busy, and
/// return the busy share of the last window seen.
async fn wait_quiet() -> f64 {
    let wait = std::env::var("TOWER_MQTT_BENCH_QUIET_WAIT")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(QUIET_WAIT, Duration::from_secs);
    let deadline = Instant::now() + wait;
    loop {
        let busy = busy_share(Duration::from_millis(300)).await;
        if busy < 0.25 || Instant::now() > deadline {
            return busy;
        }
    }
}

const QUIET_WAIT: Duration = Duration::from_secs(20);

async fn busy_share(window: Duration) -> f64 {
    fn read() -> (u64, u64) {
        let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let f: Vec<u64> = s
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        let total: u64 = f.iter().sum();
        let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
        (total, idle)
    }
    let (t0, i0) = read();
    tokio::time::sleep(window).await;
    let (t1, i1) = read();
    let dt = t1.saturating_sub(t0).max(1) as f64;
    1.0 - i1.saturating_sub(i0) as f64 / dt
}

/// The broker of a scenario: a private mosquitto, or the synthetic stand-in.
enum Server {
    Mosquitto(broker::Mosquitto),
    Synthetic(synthetic::Synthetic),
}

impl Server {
    fn port(&self) -> u16 {
        match self {
            Self::Mosquitto(b) => b.port,
            Self::Synthetic(s) => s.port,
        }
    }

    /// CPU time so far (10 ms resolution). The synthetic broker runs in this process,
    /// so it is this process's (the parent is otherwise idle while a child runs).
    fn cpu_ns(&self) -> u64 {
        match self {
            Self::Mosquitto(b) => b.cpu_ns(),
            Self::Synthetic(_) => measure::proc_cpu_ns("self"),
        }
    }

    fn sys_ns(&self) -> u64 {
        match self {
            Self::Mosquitto(b) => b.sys_ns(),
            Self::Synthetic(_) => measure::proc_sys_ns("self"),
        }
    }

    fn syscalls(&self) -> u64 {
        match self {
            Self::Mosquitto(b) => b.syscalls(),
            Self::Synthetic(s) => s.syscalls(),
        }
    }

    /// Voluntary context switches so far (the synthetic broker: none counted).
    fn sleeps(&self) -> u64 {
        match self {
            Self::Mosquitto(b) => b.sleeps(),
            Self::Synthetic(_) => 0,
        }
    }
}

fn child_args(job: &Job) -> Vec<String> {
    vec![
        "--child".into(),
        job.variant.name().into(),
        job.port.to_string(),
        job.topic.clone(),
        job.id.clone(),
        job.qos.to_string(),
        job.n.to_string(),
        u8::from(job.live).to_string(),
        job.concurrency.to_string(),
        job.max_inflight.to_string(),
        job.proto.to_string(),
        job.group.clone(),
        job.max_packet.to_string(),
    ]
}

fn parse_result(s: &str) -> Result<Sample, String> {
    let f: Vec<u64> = s
        .split_whitespace()
        .map(|x| x.parse().map_err(|_| format!("bad RESULT {s:?}")))
        .collect::<Result<_, _>>()?;
    if f.len() != 7 {
        return Err(format!("bad RESULT {s:?}"));
    }
    Ok(Sample {
        elapsed_ns: f[0],
        count: f[1],
        cpu_ns: f[2],
        rss_kib: f[3],
        p50_ns: f[4],
        p99_ns: f[5],
        broker_cpu_ns: 0,
        broker_syscalls: 0,
        broker_sys_ns: 0,
        sleeps: f[6],
        broker_sleeps: 0,
        segments: measure::SentSegments::default(),
        busy: 0.0,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn table(
    sc: &Scenario,
    opts: &Opts,
    samples: &BTreeMap<usize, Vec<Sample>>,
    failures: &BTreeMap<usize, String>,
) -> String {
    let med = |vi: usize, f: &dyn Fn(&Sample) -> f64| {
        median(
            samples
                .get(&vi)
                .map_or(vec![], |s| s.iter().map(f).collect()),
        )
    };
    let base = opts.variants.iter().position(|v| *v == Variant::Baseline);
    let base_rate = base.map_or(f64::NAN, |b| med(b, &|s| s.rate()));
    let base_p99 = base.map_or(f64::NAN, |b| med(b, &|s| s.p99_ns as f64));
    let busy: Vec<f64> = samples.values().flatten().map(|s| s.busy * 100.0).collect();
    let (bmin, bmax) = busy
        .iter()
        .fold((f64::MAX, 0f64), |(l, h), b| (l.min(*b), h.max(*b)));
    let mut out = format!(
        "### {}\n\nCores busy with other work just before each run: {:.0}–{:.0}%.\n\n",
        sc.title(opts.n, opts.rate),
        bmin.min(bmax),
        bmax
    );
    out.push_str("| variant | msg/s (median) | runs min–max | × baseline | p50 µs | p99 µs | p99 − baseline µs | peak RSS MiB | CPU µs/msg | broker CPU µs/msg (kernel) | broker read+write calls/msg | sleeps per 1k msg: consumer, broker | broker → consumer: bytes per segment (rwnd-limited %) |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (vi, v) in opts.variants.iter().enumerate() {
        if let Some(why) = sc.not_applicable(*v) {
            out.push_str(&format!(
                "| {} | n/a ({why}) | | | | | | | | | | | |\n",
                v.label()
            ));
            continue;
        }
        if let Some(e) = failures.get(&vi) {
            out.push_str(&format!(
                "| {} | failed: {e} | | | | | | | | | | | |\n",
                v.label()
            ));
            continue;
        }
        let Some(s) = samples.get(&vi) else { continue };
        let rates: Vec<f64> = s.iter().map(Sample::rate).collect();
        let (lo, hi) = rates
            .iter()
            .fold((f64::MAX, 0f64), |(l, h), r| (l.min(*r), h.max(*r)));
        let rate = median(rates);
        let lat = sc.live && *v != Variant::MosquittoSub;
        let p50 = med(vi, &|s| s.p50_ns as f64) / 1e3;
        let p99 = med(vi, &|s| s.p99_ns as f64) / 1e3;
        let fmt_lat = |x: f64| if lat { format!("{x:.0}") } else { "–".into() };
        let added = if lat && sc.live {
            format!("{:+.0}", p99 - base_p99 / 1e3)
        } else {
            "–".into()
        };
        out.push_str(&format!(
            "| {} | {:.0} | {:.0}–{:.0} | {} | {} | {} | {} | {:.1} | {:.2} | {:.2} ({:.2}) | {:.3} | {:.1}, {:.1} | {:.0} ({:.0}) |\n",
            v.label(),
            rate,
            lo,
            hi,
            if base_rate.is_nan() {
                "–".to_owned() // no baseline in this run
            } else {
                format!("{:.2}", rate / base_rate)
            },
            fmt_lat(p50),
            fmt_lat(p99),
            added,
            med(vi, &|s| s.rss_kib as f64) / 1024.0,
            med(vi, &|s| s.cpu_ns as f64 / s.count.max(1) as f64) / 1e3,
            med(vi, &|s| s.broker_cpu_ns as f64 / s.count.max(1) as f64) / 1e3,
            med(vi, &|s| s.broker_sys_ns as f64 / s.count.max(1) as f64) / 1e3,
            med(vi, &|s| s.broker_syscalls as f64 / s.count.max(1) as f64),
            med(vi, &|s| s.sleeps as f64 * 1e3 / s.count.max(1) as f64),
            med(vi, &|s| s.broker_sleeps as f64 * 1e3 / s.count.max(1) as f64),
            med(vi, &|s| s.segments.bytes as f64 / s.segments.segments.max(1) as f64),
            med(vi, &|s| s.segments.rwnd_limited_ms as f64 * 100.0
                / s.segments.busy_ms.max(1) as f64),
        ));
    }
    out
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "machine: {cores} cores ({cpu}), {}, rustc release build",
        broker::version()
    )
}

// ---------------------------------------------------------------------------------------
// Child: run one consumer, report one RESULT line
// ---------------------------------------------------------------------------------------

// A child reports one line and exits: its exit code is part of the protocol with the parent.
#[allow(clippy::exit)]
fn child_main(args: &[String]) {
    let Some(job) = parse_job(args) else {
        println!("FAILED bad child arguments {args:?}");
        std::process::exit(2);
    };
    if job.variant == Variant::MosquittoSub {
        mosquitto_sub(&job);
        std::process::exit(0);
    }
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let rec = Arc::new(Recorder::new(job.n, job.live));
    let mut sleeps0 = 0;
    let outcome = rt.block_on(async {
        let cpu0 = cpu_ns();
        let t0 = Instant::now();
        sleeps0 = voluntary_switches("self");
        let task = {
            let (job, rec) = (job.clone(), rec.clone());
            tokio::spawn(async move {
                match job.variant {
                    Variant::Baseline => variants::baseline(job, rec).await,
                    Variant::Identity => variants::tower_identity(job, rec).await,
                    Variant::Full => variants::tower_full(job, rec).await,
                    Variant::Failure => variants::tower_failure(job, rec).await,
                    Variant::Batch => variants::tower_batch(job, rec).await,
                    Variant::Ruststream => variants::ruststream(job, rec).await,
                    Variant::MosquittoSub => unreachable!(),
                }
            })
        };
        tokio::select! {
            () = rec.wait() => {}
            r = task => return Err(match r {
                Ok(Ok(())) => "consumer stopped early".to_owned(),
                Ok(Err(e)) => e,
                Err(e) => e.to_string(),
            }),
            () = tokio::time::sleep(CHILD_TIMEOUT) => {}
        }
        let cpu = cpu_ns().saturating_sub(cpu0);
        let end = rec.last().unwrap_or_else(Instant::now);
        let start = if job.live {
            rec.first().unwrap_or(t0)
        } else {
            t0
        };
        Ok((end.duration_since(start), cpu))
    });
    match outcome {
        Ok((elapsed, cpu)) => {
            let (p50, p99) = rec.percentiles();
            println!(
                "RESULT {} {} {} {} {} {} {}",
                elapsed.as_nanos(),
                rec.count(),
                cpu,
                peak_rss_kib("self"),
                p50,
                p99,
                voluntary_switches("self").saturating_sub(sleeps0)
            );
        }
        Err(e) => println!("FAILED {e}"),
    }
    // No graceful shutdown: the measurement is over and the session is thrown away.
    std::process::exit(0);
}

fn parse_job(a: &[String]) -> Option<Job> {
    if a.len() != 12 {
        return None;
    }
    Some(Job {
        variant: Variant::parse(&a[0])?,
        port: a[1].parse().ok()?,
        topic: a[2].clone(),
        id: a[3].clone(),
        qos: a[4].parse().ok()?,
        n: a[5].parse().ok()?,
        live: a[6] == "1",
        concurrency: a[7].parse().ok()?,
        max_inflight: a[8].parse().ok()?,
        proto: a[9].parse().ok()?,
        group: a[10].clone(),
        max_packet: a[11].parse().ok()?,
    })
}

/// (5) The C reference: `mosquitto_sub -C n` resuming the prepared session, output to
/// /dev/null. Timed from spawn to exit; CPU from this wrapper's `cutime + cstime`; peak
/// RSS by polling its `VmHWM`.
fn mosquitto_sub(job: &Job) {
    let mut cmd = Command::new("/usr/bin/mosquitto_sub");
    cmd.args(["-h", "127.0.0.1", "-p", &job.port.to_string()])
        .args(["-i", &job.client_id(0), "-c", "-q", &job.qos.to_string()])
        .args(["-t", &job.topic, "-C", &job.n.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if job.proto == 5 {
        cmd.args(["-V", "mqttv5", "-x", "3600"]).args([
            "-D",
            "connect",
            "receive-maximum",
            &job.max_inflight.to_string(),
        ]);
    } else {
        cmd.args(["-V", "mqttv311"]);
    }
    let t0 = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            println!("FAILED spawn mosquitto_sub: {e}");
            return;
        }
    };
    let pid = child.id().to_string();
    let mut hwm = 0;
    let mut sleeps = 0;
    let mut said_ready = false;
    let status = loop {
        hwm = hwm.max(peak_rss_kib(&pid));
        sleeps = sleeps.max(voluntary_switches(&pid));
        if !said_ready && t0.elapsed() > Duration::from_millis(200) {
            println!("READY");
            said_ready = true;
        }
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => {
                println!("FAILED {e}");
                return;
            }
        }
        if t0.elapsed() > CHILD_TIMEOUT {
            let _ = child.kill();
            println!("FAILED mosquitto_sub timed out");
            return;
        }
    };
    let elapsed = t0.elapsed();
    if !status.success() {
        let mut err = String::new();
        if let Some(e) = child.stderr.take() {
            for l in BufReader::new(e).lines().map_while(Result::ok) {
                err.push_str(&l);
                err.push(' ');
            }
        }
        println!("FAILED mosquitto_sub {status}: {err}");
        return;
    }
    if !said_ready {
        println!("READY");
    }
    println!(
        "RESULT {} {} {} {} 0 0 {}",
        elapsed.as_nanos(),
        job.n,
        children_cpu_ns(),
        hwm,
        sleeps
    );
}
