//! The consumers under test. Each runs in its own child process (see `main.rs`), so its
//! CPU time and peak RSS are its own.

use std::future::{ready, Ready};
use std::num::{NonZeroU16, NonZeroU32};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::task::JoinSet;
use tower::{service_fn, Layer, Service, ServiceBuilder};
use tower_mqtt::{BoxError, Config, Consumer, Event, Message, ProtoVer, QoS, ReadPacing};
use tracing::instrument::{Instrument, Instrumented};

use crate::measure::{sent_ns, Recorder};

/// Which consumer a child runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Variant {
    Baseline,
    Identity,
    Full,
    /// The full stack plus `tower-mqtt-layers`' catch-panic, retry and JSON decode.
    Failure,
    /// `Failure` plus `tower-mqtt-layers`' batch layer below the decoder.
    Batch,
    Ruststream,
    MosquittoSub,
}

impl Variant {
    pub(crate) const ALL: [Self; 7] = [
        Self::Baseline,
        Self::Identity,
        Self::Full,
        Self::Failure,
        Self::Batch,
        Self::Ruststream,
        Self::MosquittoSub,
    ];

    /// What runs without `--variants`: the comparison with the other consumers
    /// (`failure` and `batch` are asked for by name).
    pub(crate) const DEFAULT: [Self; 5] = [
        Self::Baseline,
        Self::Identity,
        Self::Full,
        Self::Ruststream,
        Self::MosquittoSub,
    ];

    /// Whether the publisher must send JSON (the variant decodes it).
    pub(crate) fn json_payload(self) -> bool {
        matches!(self, Self::Failure | Self::Batch)
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Baseline => "baseline",
            Self::Identity => "identity",
            Self::Full => "full",
            Self::Failure => "failure",
            Self::Batch => "batch",
            Self::Ruststream => "ruststream",
            Self::MosquittoSub => "mosquitto_sub",
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Baseline => "rumqttc loop (baseline)",
            Self::Identity => "tower-mqtt identity",
            Self::Full => "tower-mqtt full stack",
            Self::Failure => "tower-mqtt full + failure layers",
            Self::Batch => "tower-mqtt full + failure layers + batch",
            Self::Ruststream => "ruststream-rumqttc 0.7.1",
            Self::MosquittoSub => "mosquitto_sub (C)",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.name() == s)
    }
}

/// Everything a child needs to know.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub(crate) variant: Variant,
    pub(crate) port: u16,
    pub(crate) topic: String,
    /// Connection `i` uses client id `<id>_<i>`.
    pub(crate) id: String,
    pub(crate) qos: u8,
    pub(crate) n: u64,
    pub(crate) live: bool,
    pub(crate) concurrency: usize,
    pub(crate) max_inflight: u16,
    pub(crate) proto: u8,
    pub(crate) group: String,
    /// Largest incoming packet each client accepts: rumqttc's default (10 KiB) or the
    /// payload plus 1 KiB, whichever is larger, for every variant alike.
    pub(crate) max_packet: usize,
}

impl Job {
    pub(crate) fn client_id(&self, i: usize) -> String {
        format!("{}_{i}", self.id)
    }

    /// The filter as subscribed: shared when several connections consume.
    pub(crate) fn filter(&self) -> String {
        if self.concurrency > 1 {
            format!("$share/{}/{}", self.group, self.topic)
        } else {
            self.topic.clone()
        }
    }
}

fn ready_line() {
    println!("READY");
}

// ---------------------------------------------------------------------------------------
// (1) Baseline: the typical hand-written rumqttc manual-ack loop.
// ---------------------------------------------------------------------------------------

/// `eventloop.poll()` returns a PUBLISH → no-op handler → `client.try_ack(&publish)` on
/// the same task, right away. (`ack().await` from the polling task can deadlock, see the
/// reference notes, so the typical loop uses `try_ack` with a request channel big enough
/// never to fill: `cap` = n + 1000.)
pub(crate) async fn baseline(job: Job, rec: Arc<Recorder>) -> Result<(), String> {
    let mut set = JoinSet::new();
    let connected = Arc::new(AtomicU64::new(0));
    for i in 0..job.concurrency {
        let (job, rec, connected) = (job.clone(), rec.clone(), connected.clone());
        if job.proto == 5 {
            set.spawn(baseline_v5(job, i, rec, connected));
        } else {
            set.spawn(baseline_v4(job, i, rec, connected));
        }
    }
    while let Some(r) = set.join_next().await {
        r.map_err(|e| e.to_string())??;
    }
    Ok(())
}

fn connected_one(connected: &AtomicU64, total: usize) {
    if connected.fetch_add(1, Ordering::Relaxed) + 1 == total as u64 {
        ready_line();
    }
}

async fn baseline_v4(
    job: Job,
    i: usize,
    rec: Arc<Recorder>,
    connected: Arc<AtomicU64>,
) -> Result<(), String> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
    let mut o = MqttOptions::new(job.client_id(i), "127.0.0.1", job.port);
    o.set_clean_session(false);
    o.set_manual_acks(true);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(job.max_packet, job.max_packet);
    let (client, mut el) = AsyncClient::new(o, job.n as usize + 1000);
    loop {
        match el.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                // no-op handler
                let sent = sent_ns(&p.payload);
                client.try_ack(&p).map_err(|e| format!("try_ack: {e}"))?;
                rec.record(sent);
            }
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                connected_one(&connected, job.concurrency);
                // The session exists (created by the parent); subscribe anyway, as a
                // real consumer would after a restart.
                client
                    .try_subscribe(job.filter(), crate::publisher::qos(job.qos))
                    .map_err(|e| e.to_string())?;
            }
            Ok(_) => {}
            Err(e) => return Err(format!("baseline: {e}")),
        }
    }
}

async fn baseline_v5(
    job: Job,
    i: usize,
    rec: Arc<Recorder>,
    connected: Arc<AtomicU64>,
) -> Result<(), String> {
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::mqttbytes::QoS as Q5;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let mut o = MqttOptions::new(job.client_id(i), "127.0.0.1", job.port);
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(3600));
    o.set_manual_acks(true);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(Some(job.max_packet as u32));
    o.set_receive_maximum(Some(job.max_inflight));
    let (client, mut el) = AsyncClient::new(o, job.n as usize + 1000);
    let q = match job.qos {
        0 => Q5::AtMostOnce,
        1 => Q5::AtLeastOnce,
        _ => Q5::ExactlyOnce,
    };
    loop {
        match el.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let sent = sent_ns(&p.payload);
                client.try_ack(&p).map_err(|e| format!("try_ack: {e}"))?;
                rec.record(sent);
            }
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                connected_one(&connected, job.concurrency);
                client
                    .try_subscribe(job.filter(), q)
                    .map_err(|e| e.to_string())?;
            }
            Ok(_) => {}
            Err(e) => return Err(format!("baseline: {e}")),
        }
    }
}

// ---------------------------------------------------------------------------------------
// (2), (3) tower-mqtt
// ---------------------------------------------------------------------------------------

/// Latency bookkeeping for tower-mqtt: the service stores the send timestamp under the
/// message's (connection, packet id); the `MessageAck` event ("ack decided") records it.
/// QoS 0 has no packet id, so it is recorded at the end of the handler instead.
struct AckClock {
    sent: Box<[AtomicU64]>,
}

impl AckClock {
    fn new(live: bool, connections: usize) -> Self {
        let len = if live { connections * 65_536 } else { 0 };
        Self {
            sent: (0..len).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn slot(&self, producer_index: usize, pkid: u16) -> Option<&AtomicU64> {
        self.sent.get(producer_index * 65_536 + usize::from(pkid))
    }
}

fn consumer(job: &Job, rec: Arc<Recorder>, clock: Arc<AckClock>) -> Result<Consumer, String> {
    let proto = if job.proto == 5 {
        ProtoVer::V5
    } else {
        ProtoVer::V4
    };
    let qos = match job.qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    };
    let config = Config::new("127.0.0.1")
        .port(job.port)
        .client_id(job.id.clone())
        .clean_start(false)
        .proto_ver(proto)
        .max_packet_size(job.max_packet.max(1024));
    let connections = job.concurrency;
    let up = AtomicU64::new(0);
    let mut b = Consumer::builder(config)
        .topic(job.topic.clone(), qos)
        .concurrency(job.concurrency)
        .max_inflight(usize::from(job.max_inflight));
    // `TOWER_MQTT_BENCH_READ_PACING=off` or `=<messages per second>`: the consumers'
    // read pacing (default: the library's), to compare with and without it.
    match std::env::var("TOWER_MQTT_BENCH_READ_PACING")
        .ok()
        .as_deref()
    {
        None | Some("") => {}
        Some("off") => b = b.read_pacing(ReadPacing::Off),
        Some(rate) => {
            let rate = rate.parse().map_err(|_| {
                format!("TOWER_MQTT_BENCH_READ_PACING={rate:?}: expected off or a rate")
            })?;
            b = b.read_pacing(ReadPacing::Above(rate));
        }
    }
    // The hook is the bench's bookkeeping, not part of the consumer under test: it
    // counts QoS 1/2 messages (and takes their latency) when their ack is decided, and
    // tells a live run's parent when to publish. A QoS 0 drain or synthetic run needs
    // neither (the handler counts QoS 0), so it runs without a hook, as a consumer
    // without one does: nothing then reads the clock for `MessageAck` durations. (So a
    // QoS 0 drain does not print read pacing's comparisons either.)
    if job.live || job.qos > 0 {
        b = b.on_event(move |e| match e {
            Event::MessageAck {
                producer_index,
                pkid,
                qos,
                ..
            } => {
                let sent = if *qos == QoS::AtMostOnce {
                    return; // recorded by the handler
                } else {
                    clock
                        .slot(*producer_index, *pkid)
                        .map_or(0, |s| s.load(Ordering::Relaxed))
                };
                rec.record(sent);
            }
            Event::ConnectionUp { .. }
                if up.fetch_add(1, Ordering::Relaxed) + 1 == connections as u64 =>
            {
                ready_line();
            }
            // Read pacing's comparisons, on stderr (the parent shows them): whether a
            // run held its reads, and what each comparison measured.
            Event::ReadPacing {
                producer_index,
                holding,
                held_rate,
                direct_rate,
                ..
            } => eprintln!(
                "read pacing: connection {producer_index} holding {holding}, \
                 {held_rate} msg/s holding, {direct_rate:?} msg/s reading at once"
            ),
            _ => {}
        });
    }
    if job.concurrency > 1 {
        b = b.shared_group(job.group.clone());
    }
    b.build().map_err(|e| e.to_string())
}

/// The no-op handler both tower-mqtt variants end in.
fn handler(
    rec: Arc<Recorder>,
    clock: Arc<AckClock>,
) -> impl Service<Message, Response = (), Error = BoxError, Future = Ready<Result<(), BoxError>>>
       + Clone
       + Send
       + 'static {
    service_fn(move |msg: Message| {
        record(&rec, &clock, &msg, sent_ns(msg.payload()));
        ready(Ok::<(), BoxError>(()))
    })
}

/// The handlers' bookkeeping: QoS 0 is recorded here, QoS 1/2 when the ack is decided.
fn record(rec: &Recorder, clock: &AckClock, msg: &Message, sent: u64) {
    if msg.qos() == QoS::AtMostOnce {
        rec.record(sent);
    } else if let Some(s) = clock.slot(msg.producer_index(), msg.pkid()) {
        s.store(sent, Ordering::Relaxed);
    }
}

pub(crate) async fn tower_identity(job: Job, rec: Arc<Recorder>) -> Result<(), String> {
    let clock = Arc::new(AckClock::new(job.live, job.concurrency));
    let consumer = consumer(&job, rec.clone(), clock.clone())?;
    let service = handler(rec, clock);
    consumer
        .run(service, tower_mqtt::CancellationToken::new())
        .await
        .map_err(|e| e.to_string())
}

/// (3) The full stack: telemetry span → concurrency limit → timeout → retry → handler.
pub(crate) async fn tower_full(job: Job, rec: Arc<Recorder>) -> Result<(), String> {
    install_tracing();
    let clock = Arc::new(AckClock::new(job.live, job.concurrency));
    let consumer = consumer(&job, rec.clone(), clock.clone())?;
    let service = ServiceBuilder::new()
        .layer(telemetry_layer())
        .concurrency_limit(usize::from(job.max_inflight))
        .timeout(Duration::from_secs(5))
        .retry(RetryTwice { left: 2 })
        .service(handler(rec, clock));
    consumer
        .run(service, tower_mqtt::CancellationToken::new())
        .await
        .map_err(|e| e.to_string())
}

/// (3b) The full stack with `tower-mqtt-layers`' failure layers: telemetry span →
/// concurrency limit → timeout → catch-panic → retry (`RetryPolicy::new(3)`, the same
/// two retries as `RetryTwice`, which it replaces) → JSON decode into [`Reading`] →
/// handler. The publisher sends JSON for this variant (`Variant::json_payload`).
pub(crate) async fn tower_failure(job: Job, rec: Arc<Recorder>) -> Result<(), String> {
    use tower_mqtt_layers::decode::Decoded;
    use tower_mqtt_layers::retry::RetryPolicy;
    use tower_mqtt_layers::ServiceBuilderExt;

    install_tracing();
    let clock = Arc::new(AckClock::new(job.live, job.concurrency));
    let consumer = consumer(&job, rec.clone(), clock.clone())?;
    let service = ServiceBuilder::new()
        .layer(telemetry_layer())
        .concurrency_limit(usize::from(job.max_inflight))
        .timeout(Duration::from_secs(5))
        .catch_panic()
        .retry_messages(RetryPolicy::new(3))
        .decode_json::<Reading>()
        .service_fn(move |Decoded { message, value }: Decoded<Reading>| {
            record(&rec, &clock, &message, value.sent);
            ready(Ok::<(), BoxError>(()))
        });
    consumer
        .run(service, tower_mqtt::CancellationToken::new())
        .await
        .map_err(|e| e.to_string())
}

/// (3c) The `failure` stack with `tower-mqtt-layers`' batch layer below the decoder, as
/// a user stacks it (see `examples/quickstart.rs`): batches of up to 50 decoded
/// readings, flushed after 20 ms at the latest, 2 batches in flight, into a batch
/// service that does nothing but the bench's per-message bookkeeping. Each message is
/// done (counted, at QoS 1/2 by its `MessageAck`) when its batch returns, as in the
/// other variants.
pub(crate) async fn tower_batch(job: Job, rec: Arc<Recorder>) -> Result<(), String> {
    use tower_mqtt_layers::batch::{Batch, BatchLayer};
    use tower_mqtt_layers::decode::Decoded;
    use tower_mqtt_layers::retry::RetryPolicy;
    use tower_mqtt_layers::ServiceBuilderExt;

    install_tracing();
    let clock = Arc::new(AckClock::new(job.live, job.concurrency));
    let consumer = consumer(&job, rec.clone(), clock.clone())?;
    let batches = BatchLayer::builder()
        .max_size(50)
        .max_wait(Duration::from_millis(20))
        .concurrency(2)
        .build()
        .map_err(|e| e.to_string())?;
    let service = ServiceBuilder::new()
        .layer(telemetry_layer())
        .concurrency_limit(usize::from(job.max_inflight))
        .timeout(Duration::from_secs(5))
        .catch_panic()
        .retry_messages(RetryPolicy::new(3))
        .decode_json::<Reading>()
        .batch(batches)
        .service_fn(move |batch: Batch<Decoded<Reading>>| {
            for Decoded { message, value } in &batch {
                record(&rec, &clock, message, value.sent);
            }
            ready(Ok::<(), BoxError>(()))
        });
    consumer
        .run(service, tower_mqtt::CancellationToken::new())
        .await
        .map_err(|e| e.to_string())
}

/// The JSON payload of the `failure` and `batch` variants (see `publisher::fill`).
#[derive(Debug, serde::Deserialize)]
struct Reading {
    /// Send time, ns since the epoch.
    sent: u64,
    /// A sensor value, so the decoder parses a float too.
    #[allow(dead_code)] // decoded on purpose, never read
    value: f64,
    /// Padding up to the payload size.
    #[allow(dead_code)]
    pad: String,
}

/// A `tracing_subscriber` registry with an INFO level filter and no output layer: spans
/// are created and entered as with a real exporter, nothing is written. tower-mqtt's own
/// DEBUG events are filtered out, as in a production INFO setup.
fn install_tracing() {
    use tracing_subscriber::layer::SubscriberExt;
    let subscriber =
        tracing_subscriber::registry().with(tracing_subscriber::filter::LevelFilter::INFO);
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// The telemetry layer of the full stack. Today: one `tracing` INFO span per message,
/// instrumenting the inner call. When `tower-mqtt-layers` ships its OpenTelemetry layer,
/// swap it in here (and only here).
fn telemetry_layer() -> SpanLayer {
    SpanLayer
}

/// Wraps each call in an INFO span named `mqtt.receive`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpanLayer;

impl<S> Layer<S> for SpanLayer {
    type Service = SpanService<S>;
    fn layer(&self, inner: S) -> SpanService<S> {
        SpanService { inner }
    }
}

/// See [`SpanLayer`].
#[derive(Debug, Clone)]
pub(crate) struct SpanService<S> {
    inner: S,
}

impl<S: Service<Message>> Service<Message> for SpanService<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, msg: Message) -> Self::Future {
        let span = tracing::info_span!(
            "mqtt.receive",
            topic = msg.topic(),
            qos = msg.qos() as u8,
            pkid = msg.pkid(),
            client_id = msg.client_id()
        );
        self.inner.call(msg).instrument(span)
    }
}

/// Retry a failed call up to twice (the no-op handler never fails, but the policy still
/// clones each request, as tower's `Retry` does).
#[derive(Debug, Clone)]
struct RetryTwice {
    left: usize,
}

impl<E> tower::retry::Policy<Message, (), E> for RetryTwice {
    type Future = Ready<()>;

    fn retry(&mut self, _req: &mut Message, result: &mut Result<(), E>) -> Option<Self::Future> {
        match result {
            Err(_) if self.left > 0 => {
                self.left -= 1;
                Some(ready(()))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, req: &Message) -> Option<Message> {
        Some(req.clone())
    }
}

// ---------------------------------------------------------------------------------------
// (4) ruststream-rumqttc
// ---------------------------------------------------------------------------------------

/// ruststream-rumqttc's transport API (no RustStream app/router on top): one
/// `MqttBroker` connection per consumer connection, `subscribe_filter`, and for each
/// delivery a no-op handler then `message.ack().await` (QoS-aware: PUBACK / PUBREC,
/// `Unsupported` for QoS 0).
pub(crate) async fn ruststream(job: Job, rec: Arc<Recorder>) -> Result<(), String> {
    use futures_util::StreamExt;
    use ruststream::{Broker, IncomingMessage, Subscriber};
    use ruststream_rumqttc::{MqttBroker, MqttFilter, Qos};

    let qos = match job.qos {
        0 => Qos::AtMostOnce,
        1 => Qos::AtLeastOnce,
        _ => Qos::ExactlyOnce,
    };
    let mut subs = Vec::new();
    let mut brokers = Vec::new();
    for i in 0..job.concurrency {
        let broker = MqttBroker::new(format!("mqtt://127.0.0.1:{}", job.port), job.client_id(i))
            .clean_start(false)
            .session_expiry(Duration::from_secs(3600))
            .keep_alive(Duration::from_secs(30))
            .max_packet_size(NonZeroU32::new(job.max_packet as u32).expect("nonzero"))
            .receive_maximum(NonZeroU16::new(job.max_inflight.max(1)).expect("nonzero"));
        let connected = broker.connect().await.map_err(|e| e.to_string())?;
        let mut filter = MqttFilter::new(job.topic.clone()).qos(qos);
        if job.concurrency > 1 {
            filter = filter.shared(job.group.clone());
        }
        let sub = connected
            .subscribe_filter(filter)
            .await
            .map_err(|e| e.to_string())?;
        subs.push(sub);
        brokers.push(connected);
    }
    ready_line();
    let mut set = JoinSet::new();
    for mut sub in subs {
        let rec = rec.clone();
        set.spawn(async move {
            let mut stream = std::pin::pin!(sub.stream());
            while let Some(m) = stream.next().await {
                let m = m.map_err(|e| e.to_string())?;
                let sent = sent_ns(m.payload()); // no-op handler
                match m.ack().await {
                    Ok(()) | Err(ruststream::AckError::Unsupported) => {}
                    Err(e) => return Err(format!("ack: {e}")),
                }
                rec.record(sent);
            }
            Ok::<(), String>(())
        });
    }
    while let Some(r) = set.join_next().await {
        r.map_err(|e| e.to_string())??;
    }
    drop(brokers);
    Ok(())
}
