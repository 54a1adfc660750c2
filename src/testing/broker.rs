//! [`TestBroker`]: a private mosquitto for the integration tests of applications built
//! on tower-mqtt, with a [`RecordingPublisher`] and a session check
//! ([`TestBroker::drain_session`]). Feature `testing`.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{Config, QoS};

/// How long [`TestBroker::start`] and [`TestBroker::restart`] wait for mosquitto.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a publisher or a session check waits for the broker before giving up.
const MQTT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the broker log is read while waiting for mosquitto to start.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Largest packet the helpers' clients send or accept.
const MAX_PACKET_SIZE: usize = 16 * 1024 * 1024;
/// Lines of the broker log put into a startup error.
const TAIL_LINES: usize = 30;

/// Why a [`TestBroker`] helper failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestBrokerError {
    /// No mosquitto binary could be run.
    #[error("mosquitto: cannot run {binary:?} ({reason}); install it with `apt-get install -y mosquitto`, or set MOSQUITTO=/path/to/mosquitto")]
    NotInstalled {
        /// The binary that was tried.
        binary: PathBuf,
        /// Why it could not be run.
        reason: String,
    },
    /// mosquitto exited or did not listen within 10 s; `log` is the end of its log.
    #[error("mosquitto on port {port} did not start: {reason}\n--- mosquitto log tail ---\n{log}")]
    Startup {
        /// The port it was to listen on.
        port: u16,
        /// What happened.
        reason: String,
        /// The last lines of its log and standard error.
        log: String,
    },
    /// Creating the temporary directory or writing the broker's files failed.
    #[error("test broker: {what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// [`TestBroker::drain_session`] was given an empty client id, which names no session.
    #[error("drain_session: the client id is empty; pass the id of the session to check, e.g. consumer.client_id(0)")]
    EmptyClientId,
    /// A publisher's or session check's connection failed.
    #[error("test client {client_id:?}: {reason}")]
    Mqtt {
        /// The client id of the failed connection.
        client_id: String,
        /// What failed.
        reason: String,
    },
    /// The broker did not answer in time.
    #[error("test client {client_id:?}: timed out after {after:?} waiting for {waiting_for}")]
    Timeout {
        /// The client id of the waiting connection.
        client_id: String,
        /// What it waited for.
        waiting_for: String,
        /// How long it waited.
        after: Duration,
    },
}

/// A private mosquitto on a free `127.0.0.1` port, for tests of code that consumes
/// with tower-mqtt. Feature `testing`; needs the `mosquitto` binary (`MOSQUITTO`
/// names another one).
///
/// Its configuration, log and persistence file live in a temporary directory, deleted
/// with it. The configuration is written for tests that must not lose messages:
/// anonymous access, persistence on (so [`restart`](Self::restart) keeps sessions and
/// their queued messages), and `max_queued_messages 0` (unlimited: mosquitto's default
/// of 1000 silently drops messages during a burst). Dropping it kills the process by
/// its PID, also when the test panics.
///
/// [`start`](Self::start) blocks the calling thread while mosquitto starts (a few
/// milliseconds), which is fine inside `#[tokio::test]`.
///
/// ```
/// use std::time::Duration;
/// use tokio::sync::mpsc;
/// use tower::service_fn;
/// use tower_mqtt::testing::TestBroker;
/// use tower_mqtt::{CancellationToken, Consumer, Event, Message, QoS};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # tokio::time::timeout(Duration::from_secs(60), async {
/// let broker = TestBroker::start()?;
/// let (subscribed_tx, mut subscribed) = mpsc::unbounded_channel();
/// let consumer = Consumer::builder(broker.config("doc-example"))
///     .topic("readings/#", QoS::AtLeastOnce)
///     .on_event(move |event| {
///         if matches!(event, Event::SubscriptionSuccess { .. }) {
///             let _ = subscribed_tx.send(());
///         }
///     })
///     .build()?;
/// let client_id = consumer.client_id(0);
///
/// let (processed_tx, mut processed) = mpsc::unbounded_channel();
/// let service = service_fn(move |message: Message| {
///     let processed = processed_tx.clone();
///     async move { processed.send(message.payload().clone()).map_err(|_| "test over") }
/// });
/// let shutdown = CancellationToken::new();
/// let run = tokio::spawn(consumer.run(service, shutdown.clone()));
/// subscribed.recv().await;
///
/// let mut publisher = broker.publisher().await?;
/// publisher.publish_numbered("readings/a", 10).await?;
/// let mut seen = Vec::new();
/// while seen.len() < publisher.sent().len() {
///     seen.extend(processed.recv().await);
/// }
/// seen.sort();
/// let mut sent: Vec<_> = publisher.sent().iter().map(|m| m.payload.clone()).collect();
/// sent.sort();
/// assert_eq!(seen, sent);
///
/// shutdown.cancel();
/// run.await??;
/// // Everything was acknowledged: the consumer's session holds nothing.
/// let session = broker.drain_session(&client_id, Duration::from_millis(300)).await?;
/// assert!(session.session_present && session.messages.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(()) }).await?
/// # }
/// ```
#[derive(Debug)]
pub struct TestBroker {
    dir: tempfile::TempDir,
    /// The mosquitto binary, found at start.
    binary: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl TestBroker {
    /// Start a broker with the default configuration (see [`TestBroker`]) and wait
    /// until it accepts connections.
    pub fn start() -> Result<Self, TestBrokerError> {
        Self::start_with_config("")
    }

    /// As [`start`](Self::start), with `extra` appended to the generated
    /// `mosquitto.conf` (e.g. `"max_inflight_messages 10\n"`).
    pub fn start_with_config(extra: &str) -> Result<Self, TestBrokerError> {
        Self::launch(extra, mosquitto_binary())
    }

    fn launch(extra: &str, binary: PathBuf) -> Result<Self, TestBrokerError> {
        let dir = tempfile::Builder::new()
            .prefix("tower-mqtt-test-broker-")
            .tempdir()
            .map_err(|source| TestBrokerError::Io {
                what: "create the temporary directory",
                source,
            })?;
        let mut broker = Self {
            dir,
            binary,
            port: 0,
            child: None,
        };
        // The free port can be taken by someone else before mosquitto binds it.
        const ATTEMPTS: usize = 5;
        let mut attempt = 1;
        loop {
            broker.port = free_port()?;
            let conf = broker.mosquitto_conf(extra);
            fs::write(broker.path("mosquitto.conf"), conf).map_err(|source| {
                TestBrokerError::Io {
                    what: "write mosquitto.conf",
                    source,
                }
            })?;
            match broker.spawn_and_wait() {
                Err(TestBrokerError::Startup { ref log, .. })
                    if attempt < ATTEMPTS && log.contains("Address already in use") =>
                {
                    attempt += 1;
                }
                result => return result.map(|()| broker),
            }
        }
    }

    /// Always `"127.0.0.1"`.
    #[must_use]
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The port it listens on (the same after a restart).
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mqtt://127.0.0.1:<port>`, for [`Config::from_url`] or your own settings.
    #[must_use]
    pub fn url(&self) -> String {
        format!("mqtt://{}:{}", self.host(), self.port)
    }

    /// A [`Config`] for this broker with `client_id` (a persistent session, as the
    /// defaults have it), ready for [`Consumer::builder`](crate::Consumer::builder);
    /// change anything else with its setters.
    #[must_use]
    pub fn config(&self, client_id: &str) -> Config {
        Config::new(self.host())
            .port(self.port)
            .client_id(client_id)
    }

    /// The directory holding `mosquitto.conf`, `mosquitto.log` and the persistence
    /// file; deleted when the broker is dropped.
    #[must_use]
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The broker's log so far (connections, subscriptions, warnings), across restarts.
    #[must_use]
    pub fn log(&self) -> String {
        fs::read_to_string(self.path("mosquitto.log")).unwrap_or_default()
    }

    /// Stop mosquitto with SIGTERM, so it saves its sessions and their queued
    /// messages, and start it again on the same port with the same data; returns once
    /// it accepts connections. Connected clients see their connection closed.
    pub fn restart(&mut self) -> Result<(), TestBrokerError> {
        if let Some(mut child) = self.child.take() {
            // By PID, with the system's `kill`: a graceful stop needs SIGTERM, which
            // `Child` cannot send, and this crate has no unsafe code for libc.
            let terminated = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status()
                .is_ok_and(|status| status.success());
            if !terminated {
                let _ = child.kill();
            }
            child.wait().map_err(|source| TestBrokerError::Io {
                what: "wait for mosquitto to stop",
                source,
            })?;
        }
        self.spawn_and_wait()
    }

    /// A connected [`RecordingPublisher`].
    pub async fn publisher(&self) -> Result<RecordingPublisher, TestBrokerError> {
        let id = unique_id("tower-mqtt-test-publisher");
        let client = TestClient::connect(self, &id, true).await?;
        Ok(RecordingPublisher {
            client,
            sent: Vec::new(),
        })
    }

    /// Resume the persistent session of `client_id` (e.g.
    /// [`Consumer::client_id`](crate::Consumer::client_id)`(0)`, the id of the
    /// consumer's first connection), collect every message the broker delivers from it
    /// until nothing has arrived for `quiet`, acknowledge them, and disconnect. A test
    /// asserts with it that a consumer left nothing unacknowledged:
    /// `session.messages.is_empty()`.
    ///
    /// Run it after the consumer has stopped (a second connection with the same id
    /// takes the session over). When the broker has no session for `client_id`,
    /// `session_present` is `false` and one is created, as by any connection without
    /// a clean start. `quiet` is how long "nothing more" is waited for: a few hundred
    /// milliseconds for a broker on the same machine.
    pub async fn drain_session(
        &self,
        client_id: &str,
        quiet: Duration,
    ) -> Result<DrainedSession, TestBrokerError> {
        if client_id.is_empty() {
            return Err(TestBrokerError::EmptyClientId);
        }
        let mut client = TestClient::connect(self, client_id, false).await?;
        let mut messages = Vec::new();
        loop {
            match tokio::time::timeout(quiet, client.events.recv()).await {
                Err(_) => break,
                Ok(Some(Ok(Event::Incoming(Packet::Publish(p))))) => {
                    messages.push(ReceivedMessage {
                        topic: p.topic,
                        payload: p.payload,
                        qos: qos_from(p.qos),
                        dup: p.dup,
                    });
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(reason))) => return Err(client.failed(reason)),
                Ok(None) => return Err(client.failed("the event loop ended".into())),
            }
        }
        client.disconnect().await?;
        Ok(DrainedSession {
            session_present: client.session_present,
            messages,
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn mosquitto_conf(&self, extra: &str) -> String {
        let dir = self.dir.path().display();
        let mut conf = String::new();
        let _ = writeln!(conf, "listener {} 127.0.0.1", self.port);
        conf.push_str("allow_anonymous true\n");
        // Started as root, mosquitto would switch to a user that cannot write here.
        conf.push_str("user root\n");
        conf.push_str("persistence true\n");
        let _ = writeln!(conf, "persistence_location {dir}/");
        conf.push_str("autosave_interval 1\n");
        conf.push_str("max_queued_messages 0\n");
        conf.push_str("connection_messages true\n");
        let _ = writeln!(conf, "log_dest file {dir}/mosquitto.log");
        for kind in ["error", "warning", "notice", "information", "subscribe"] {
            let _ = writeln!(conf, "log_type {kind}");
        }
        conf.push_str(extra);
        conf.push('\n');
        conf
    }

    /// How many times mosquitto has logged that it is running (listeners bound).
    fn starts_logged(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains(": mosquitto version ") && l.ends_with(" running"))
            .count()
    }

    fn log_tail(&self) -> String {
        let mut out = String::new();
        for file in ["mosquitto.log", "mosquitto.stderr"] {
            let text = fs::read_to_string(self.path(file)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            for line in &lines[lines.len().saturating_sub(TAIL_LINES)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Spawn mosquitto and wait until this start has logged that it runs and the port
    /// accepts connections (a connect alone could reach another process that took the
    /// port first).
    fn spawn_and_wait(&mut self) -> Result<(), TestBrokerError> {
        let starts_before = self.starts_logged();
        let io = |what| move |source| TestBrokerError::Io { what, source };
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("mosquitto.stderr"))
            .map_err(io("open mosquitto.stderr"))?;
        let stdout = stderr.try_clone().map_err(io("open mosquitto.stderr"))?;
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(self.path("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| TestBrokerError::NotInstalled {
                binary: self.binary.clone(),
                reason: e.to_string(),
            })?;
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let reason = loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                break format!("it exited ({status})");
            }
            if self.starts_logged() > starts_before
                && TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                break format!("it did not accept connections within {STARTUP_TIMEOUT:?}");
            }
            std::thread::sleep(POLL_INTERVAL);
        };
        Err(TestBrokerError::Startup {
            port: self.port,
            reason,
            log: self.log_tail(),
        })
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Already exited is fine: `kill` fails and `wait` reaps it.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        // Before the temporary directory goes.
        self.kill();
    }
}

/// What [`TestBroker::drain_session`] found in a session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DrainedSession {
    /// Whether the broker had a session for the client id.
    pub session_present: bool,
    /// The messages it delivered from the session, in arrival order (now acknowledged).
    pub messages: Vec<ReceivedMessage>,
}

/// A message delivered to [`TestBroker::drain_session`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReceivedMessage {
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: Bytes,
    /// The QoS it was delivered with.
    pub qos: QoS,
    /// Whether the broker had sent it before (DUP flag).
    pub dup: bool,
}

/// A message that [`RecordingPublisher`] sent and the broker confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SentMessage {
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: Bytes,
}

/// Publishes test messages at QoS 1 and remembers those the broker confirmed (with a
/// PUBACK), so a test can compare what a consumer processed with what was sent. Made
/// by [`TestBroker::publisher`].
#[derive(Debug)]
pub struct RecordingPublisher {
    client: TestClient,
    sent: Vec<SentMessage>,
}

impl RecordingPublisher {
    /// Publish every payload to `topic` at QoS 1 and return once the broker has
    /// acknowledged each one (then they are in the sessions of the subscribers).
    pub async fn publish<P: Into<Bytes>>(
        &mut self,
        topic: &str,
        payloads: impl IntoIterator<Item = P>,
    ) -> Result<(), TestBrokerError> {
        let batch: Vec<SentMessage> = payloads
            .into_iter()
            .map(|payload| SentMessage {
                topic: topic.to_owned(),
                payload: payload.into(),
            })
            .collect();
        let client = &mut self.client;
        tokio::time::timeout(MQTT_TIMEOUT, client.publish_confirmed(&batch))
            .await
            .map_err(|_| client.timeout(format!("PUBACKs for {} messages", batch.len())))??;
        self.sent.extend(batch);
        Ok(())
    }

    /// Publish `n` messages to `topic` with the payloads `"0"`, `"1"`, … `"n-1"`,
    /// as [`publish`](Self::publish) does.
    pub async fn publish_numbered(&mut self, topic: &str, n: usize) -> Result<(), TestBrokerError> {
        self.publish(topic, (0..n).map(|i| i.to_string())).await
    }

    /// Every message confirmed so far, in the order sent.
    #[must_use]
    pub fn sent(&self) -> &[SentMessage] {
        &self.sent
    }

    /// Disconnect cleanly (dropping the publisher closes the connection without
    /// DISCONNECT).
    pub async fn disconnect(self) -> Result<(), TestBrokerError> {
        let mut client = self.client;
        client.disconnect().await
    }
}

/// A rumqttc client whose event loop runs in its own task and forwards every event,
/// stopping at the first error (so it never reconnects behind the test's back).
#[derive(Debug)]
struct TestClient {
    id: String,
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Event, String>>,
    task: JoinHandle<()>,
    session_present: bool,
}

impl TestClient {
    async fn connect(
        broker: &TestBroker,
        id: &str,
        clean_session: bool,
    ) -> Result<Self, TestBrokerError> {
        let mut options = MqttOptions::new(id, broker.host(), broker.port);
        options
            .set_clean_session(clean_session)
            .set_keep_alive(Duration::from_secs(30))
            .set_inflight(100)
            .set_max_packet_size(MAX_PACKET_SIZE, MAX_PACKET_SIZE);
        let (client, eventloop) = AsyncClient::new(options, 1000);
        let (tx, events) = mpsc::unbounded_channel();
        let mut this = Self {
            id: id.to_owned(),
            client,
            events,
            task: tokio::spawn(forward_events(eventloop, tx)),
            session_present: false,
        };
        match tokio::time::timeout(MQTT_TIMEOUT, this.events.recv()).await {
            Ok(Some(Ok(Event::Incoming(Packet::ConnAck(connack))))) => {
                this.session_present = connack.session_present;
                Ok(this)
            }
            Ok(Some(Ok(other))) => Err(this.failed(format!("expected CONNACK, got {other:?}"))),
            Ok(Some(Err(reason))) => Err(this.failed(reason)),
            Ok(None) => Err(this.failed("the event loop ended".into())),
            Err(_) => Err(this.timeout("CONNACK".into())),
        }
    }

    /// Publish `batch` at QoS 1 and wait for a PUBACK for each message: the n-th
    /// outgoing PUBLISH is the n-th message, and its packet id is acknowledged once.
    async fn publish_confirmed(&mut self, batch: &[SentMessage]) -> Result<(), TestBrokerError> {
        let client = self.client.clone();
        let requests = batch.to_vec();
        // Requests go through a bounded channel while this task reads the events.
        let send = tokio::spawn(async move {
            for m in requests {
                client
                    .publish_bytes(m.topic, rumqttc::QoS::AtLeastOnce, false, m.payload)
                    .await?;
            }
            Ok::<(), rumqttc::ClientError>(())
        });
        let mut waiting: VecDeque<usize> = (0..batch.len()).collect();
        let mut in_flight: HashMap<u16, usize> = HashMap::new();
        let mut confirmed = 0;
        while confirmed < batch.len() {
            match self.events.recv().await {
                Some(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                    if let Some(index) = waiting.pop_front() {
                        in_flight.insert(pkid, index);
                    }
                }
                Some(Ok(Event::Incoming(Packet::PubAck(ack)))) => {
                    if in_flight.remove(&ack.pkid).is_some() {
                        confirmed += 1;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(reason)) => {
                    send.abort();
                    return Err(self.failed(reason));
                }
                None => return Err(self.failed("the event loop ended".into())),
            }
        }
        match send.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.failed(e.to_string())),
            Err(e) => Err(self.failed(e.to_string())),
        }
    }

    /// Send DISCONNECT and wait until the event loop has sent it and ended.
    async fn disconnect(&mut self) -> Result<(), TestBrokerError> {
        let wait = async {
            if self.client.disconnect().await.is_err() {
                return; // the event loop is already gone
            }
            while let Some(Ok(_)) = self.events.recv().await {}
        };
        tokio::time::timeout(MQTT_TIMEOUT, wait)
            .await
            .map_err(|_| self.timeout("the broker to close the connection after DISCONNECT".into()))
    }

    fn failed(&self, reason: String) -> TestBrokerError {
        TestBrokerError::Mqtt {
            client_id: self.id.clone(),
            reason,
        }
    }

    fn timeout(&self, waiting_for: String) -> TestBrokerError {
        TestBrokerError::Timeout {
            client_id: self.id.clone(),
            waiting_for,
            after: MQTT_TIMEOUT,
        }
    }
}

impl Drop for TestClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward_events(
    mut eventloop: EventLoop,
    tx: mpsc::UnboundedSender<Result<Event, String>>,
) {
    loop {
        let event = eventloop.poll().await.map_err(|e| e.to_string());
        let failed = event.is_err();
        if tx.send(event).is_err() || failed {
            return;
        }
    }
}

fn qos_from(qos: rumqttc::QoS) -> QoS {
    match qos {
        rumqttc::QoS::AtMostOnce => QoS::AtMostOnce,
        rumqttc::QoS::AtLeastOnce => QoS::AtLeastOnce,
        rumqttc::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16, TestBrokerError> {
    let io = |source| TestBrokerError::Io {
        what: "find a free port on 127.0.0.1",
        source,
    };
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io)?;
    Ok(listener.local_addr().map_err(io)?.port())
}

/// `<prefix>-<pid>-<nanoseconds>-<counter>`: unique across tests and processes.
fn unique_id(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{nanos:x}-{n}", std::process::id())
}

/// `$MOSQUITTO` if set, else `/usr/sbin/mosquitto` (Debian's place, not on a user's
/// `PATH`), else `mosquitto` from `PATH`.
fn mosquitto_binary() -> PathBuf {
    if let Some(binary) = std::env::var_os("MOSQUITTO") {
        return binary.into();
    }
    let debian = Path::new("/usr/sbin/mosquitto");
    if debian.exists() {
        debian.to_path_buf()
    } else {
        PathBuf::from("mosquitto")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_mosquitto_is_an_error_saying_how_to_install_it() {
        let missing = PathBuf::from("/nonexistent/tower-mqtt/mosquitto");
        let e = TestBroker::launch("", missing.clone()).unwrap_err();
        assert!(
            matches!(&e, TestBrokerError::NotInstalled { binary, .. } if *binary == missing),
            "{e:?}"
        );
        let message = e.to_string();
        assert!(
            message.contains("apt-get install -y mosquitto"),
            "{message}"
        );
        assert!(message.contains("MOSQUITTO="), "{message}");
    }
}
