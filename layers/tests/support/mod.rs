//! A minimal broker harness for this crate's integration tests: a private mosquitto
//! per test (free port, temp dir, killed on drop), a consumer running in the
//! background whose events can be awaited, a publisher, and a look at what a stored
//! session still holds. Every wait has a timeout whose panic shows the broker log.
//!
//! (The root crate's `tests/support` is richer, but it belongs to the core crate.)

use std::fmt::Write as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, Publish, QoS as MqttQoS};
use tempfile::TempDir;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower_mqtt::{
    BoxError, CancellationToken, Config, ConsumerBuilder, Disposition, DownReason, Event, Message,
    QoS, RunError, Status,
};

/// How long a helper without a timeout of its own waits.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(20);

/// A name no other test uses: `<prefix>-<pid>-<counter>-<nanos>`.
pub(crate) fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{prefix}-{}-{n}-{nanos:x}", std::process::id())
}

/// Runs `fut`, panicking if it takes longer than `limit`: wrap every test body in it.
pub(crate) async fn with_timeout<F: std::future::Future>(limit: Duration, fut: F) -> F::Output {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {limit:?}"))
}

/// A mosquitto child process on `127.0.0.1:<free port>` with anonymous access, its
/// config and log in a temporary directory; killed when dropped (a panicking test
/// included).
pub(crate) struct Broker {
    port: u16,
    log: PathBuf,
    child: Child,
    _dir: TempDir,
}

fn mosquitto() -> PathBuf {
    if let Some(path) = std::env::var_os("MOSQUITTO") {
        return path.into();
    }
    // Debian installs it in /usr/sbin, which a non-root PATH may lack.
    let sbin = Path::new("/usr/sbin/mosquitto");
    if sbin.exists() {
        sbin.into()
    } else {
        "mosquitto".into()
    }
}

impl Broker {
    /// Start a broker and wait until it accepts TCP connections.
    pub(crate) fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tower-mqtt-layers-broker-")
            .tempdir()
            .expect("create a temp dir");
        let log = dir.path().join("mosquitto.log");
        let conf_path = dir.path().join("mosquitto.conf");
        // A free port can be taken between the probe and mosquitto's bind: try again.
        for attempt in 1..=5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let mut conf = String::new();
            let _ = writeln!(conf, "listener {port} 127.0.0.1");
            conf.push_str("allow_anonymous true\n");
            // Started as root, mosquitto would switch to user `mosquitto`, which
            // cannot write the temp dir.
            conf.push_str("user root\n");
            conf.push_str("persistence false\n");
            // No silent drop of queued messages (mosquitto's default limit is 1000).
            conf.push_str("max_queued_messages 0\n");
            conf.push_str("connection_messages true\n");
            let _ = writeln!(conf, "log_dest file {}", log.display());
            for t in ["error", "warning", "notice", "information"] {
                let _ = writeln!(conf, "log_type {t}");
            }
            std::fs::write(&conf_path, conf).expect("write mosquitto.conf");
            let mut child = Command::new(mosquitto())
                .arg("-c")
                .arg(&conf_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot start mosquitto ({}): {e}", mosquitto().display())
                });
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Self {
                        port,
                        log,
                        child,
                        _dir: dir,
                    };
                }
                if let Ok(Some(status)) = child.try_wait() {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    if attempt < 5 && text.contains("Address already in use") {
                        break;
                    }
                    panic!("mosquitto exited with {status}; log:\n{text}");
                }
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("mosquitto did not listen on {port} within 10 s");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// The broker log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until the log contains `needle` (polled every 10 ms).
    pub(crate) async fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + TIMEOUT;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the broker log within {TIMEOUT:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A tower-mqtt config for this broker: short keepalive and connect timeout.
    pub(crate) fn config(&self, client_id: &str) -> Config {
        Config::new("127.0.0.1")
            .port(self.port)
            .client_id(client_id)
            .keepalive(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(5))
    }

    fn mqtt_options(&self, client_id: &str) -> MqttOptions {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", self.port);
        options.set_keep_alive(Duration::from_secs(30));
        options
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A rumqttc client whose event loop runs in its own task, forwarding every event.
struct Client {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<MqttEvent, String>>,
    task: JoinHandle<()>,
}

impl Client {
    fn connect(options: MqttOptions) -> Self {
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let event = eventloop.poll().await.map_err(|e| e.to_string());
                let failed = event.is_err();
                if tx.send(event).is_err() || failed {
                    return;
                }
            }
        });
        Self {
            client,
            events,
            task,
        }
    }

    async fn next(&mut self, broker: &Broker, waiting_for: &str) -> MqttEvent {
        match tokio::time::timeout(TIMEOUT, self.events.recv()).await {
            Ok(Some(Ok(event))) => event,
            Ok(Some(Err(e))) => panic!(
                "client failed waiting for {waiting_for}: {e}\n{}",
                broker.log()
            ),
            Ok(None) => panic!("client ended waiting for {waiting_for}"),
            Err(_) => panic!(
                "no {waiting_for} within {TIMEOUT:?}; broker log:\n{}",
                broker.log()
            ),
        }
    }

    /// Wait for CONNACK; returns its session-present flag.
    async fn connack(&mut self, broker: &Broker) -> bool {
        loop {
            if let MqttEvent::Incoming(Packet::ConnAck(ack)) = self.next(broker, "CONNACK").await {
                return ack.session_present;
            }
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Publish every payload to `topic` with QoS 1 and return once the broker
/// acknowledged them all.
pub(crate) async fn publish(broker: &Broker, topic: &str, payloads: &[String]) {
    let mut c = Client::connect(broker.mqtt_options(&unique("pub")));
    c.connack(broker).await;
    for p in payloads {
        c.client
            .publish(topic, MqttQoS::AtLeastOnce, false, p.clone().into_bytes())
            .await
            .expect("queue a publish");
    }
    let mut acked = 0;
    while acked < payloads.len() {
        if let MqttEvent::Incoming(Packet::PubAck(_)) = c.next(broker, "PUBACK").await {
            acked += 1;
        }
    }
    let _ = c.client.disconnect().await;
}

/// What the broker still holds for connection 0 of consumer `id` (subscribed to
/// `topic`): waits for the consumer's DISCONNECT in the log, resumes the session with
/// a plain client, publishes a marker to `topic` and returns everything that arrives
/// before it.
pub(crate) async fn left_in_session(broker: &Broker, id: &str, topic: &str) -> Vec<Publish> {
    let client_id = format!("{id}_0");
    broker
        .wait_for_log(&format!("Client {client_id} disconnected"))
        .await;
    let mut options = broker.mqtt_options(&client_id);
    options.set_clean_session(false);
    let mut c = Client::connect(options);
    assert!(c.connack(broker).await, "no stored session for {client_id}");
    let marker = unique("marker");
    c.client
        .publish(
            topic,
            MqttQoS::AtLeastOnce,
            false,
            marker.clone().into_bytes(),
        )
        .await
        .expect("queue the marker");
    let mut left = Vec::new();
    loop {
        if let MqttEvent::Incoming(Packet::Publish(p)) = c.next(broker, "the marker").await {
            if p.payload.as_ref() == marker.as_bytes() {
                return left;
            }
            left.push(p);
        }
    }
}

/// An owned copy of the consumer events the tests look at.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ev {
    Subscribed,
    Start {
        pkid: u16,
        dup: bool,
    },
    Ack {
        pkid: u16,
        status: Status,
        disposition: Disposition,
    },
    Down(DownReason),
    Terminate(String),
}

impl Ev {
    fn from_event(e: &Event<'_>) -> Option<Self> {
        Some(match *e {
            Event::SubscriptionSuccess { .. } => Self::Subscribed,
            Event::MessageStart { pkid, dup, .. } => Self::Start { pkid, dup },
            Event::MessageAck {
                pkid,
                status,
                disposition,
                ..
            } => Self::Ack {
                pkid,
                status,
                disposition,
            },
            Event::ConnectionDown { reason, .. } => Self::Down(reason.clone()),
            Event::ProducerTerminate { reason, .. } => Self::Terminate(reason.to_owned()),
            _ => return None,
        })
    }
}

/// Every recorded event, in order, with a way to wait for them.
#[derive(Clone, Default)]
pub(crate) struct Events {
    events: Arc<Mutex<Vec<Ev>>>,
    changed: Arc<Notify>,
}

impl Events {
    /// A snapshot.
    pub(crate) fn all(&self) -> Vec<Ev> {
        self.events.lock().unwrap().clone()
    }

    /// How many events match.
    pub(crate) fn count(&self, pred: impl Fn(&Ev) -> bool) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| pred(e))
            .count()
    }

    /// Wait until `n` events match `pred`; panics with the events after [`TIMEOUT`].
    pub(crate) async fn wait_count(&self, n: usize, pred: impl Fn(&Ev) -> bool) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let notified = self.changed.notified();
            if self.count(&pred) >= n {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "waited {TIMEOUT:?} for {n} matching events, saw {}: {:#?}",
                    self.count(&pred),
                    self.all()
                );
            }
        }
    }
}

/// A consumer running in a background task.
pub(crate) struct Running {
    pub(crate) events: Events,
    shutdown: CancellationToken,
    handle: JoinHandle<Result<(), RunError>>,
}

/// Build `builder` (subscribed to `topic` with QoS 1, fast reconnects) and run
/// `service` in the background, recording events; returns once it has subscribed.
pub(crate) async fn spawn<S>(builder: ConsumerBuilder, topic: &str, service: S) -> Running
where
    S: tower::Service<Message> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let events = Events::default();
    let log = events.clone();
    let consumer = builder
        .topic(topic, QoS::AtLeastOnce)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(500))
        .on_event(move |e| {
            if let Some(ev) = Ev::from_event(e) {
                log.events.lock().unwrap().push(ev);
                log.changed.notify_waiters();
            }
        })
        .build()
        .expect("a valid consumer");
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(consumer.run(service, shutdown.clone()));
    events.wait_count(1, |e| *e == Ev::Subscribed).await;
    Running {
        events,
        shutdown,
        handle,
    }
}

impl Running {
    /// Cancel and wait for `run` to return.
    pub(crate) async fn stop(self) -> Result<(), RunError> {
        self.shutdown.cancel();
        tokio::time::timeout(TIMEOUT, self.handle)
            .await
            .expect("the consumer stops")
            .expect("the consumer task does not panic")
    }
}
