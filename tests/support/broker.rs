//! A private mosquitto process per test: free port, generated config, temp data dir.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::client::TestClient;
use super::unique;

/// How long [`Broker::start`] and friends wait for the listener to accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Poll interval for "is it up yet?" and log polling.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// How many lines of the log a panic message shows.
const TAIL_LINES: usize = 40;
/// Written by mosquitto each time it starts writing its persistence file.
pub(crate) const SAVE_LINE: &str = "Saving in-memory database to ";

/// How to configure a [`Broker`].
///
/// `Default` gives: no persistence, mosquitto's default inflight window (20),
/// and an **unlimited** queue per session (`max_queued_messages 0`), so a test
/// never loses messages silently to mosquitto's default limit of 1000.
#[derive(Debug, Clone)]
pub(crate) struct BrokerOptions {
    /// Write `persistence true` (saved every second, see [`Broker::wait_for_autosave`]).
    /// Without it persistent sessions still live in memory but not across a restart.
    pub(crate) persistence: bool,
    /// `max_inflight_messages`; `None` leaves mosquitto's default (20).
    pub(crate) max_inflight_messages: Option<u32>,
    /// `max_queued_messages`; `Some(0)` (the default here) is unlimited,
    /// `None` leaves mosquitto's own default (1000, excess silently dropped).
    pub(crate) max_queued_messages: Option<u32>,
    /// Appended verbatim to the generated config. `log_type` lines add up, so
    /// `"log_type debug\n"` adds the per-packet lines (`Received PUBLISH from …`).
    pub(crate) extra_config: String,
    /// Users for a password file (made with `mosquitto_passwd`). Anonymous clients
    /// (the harness helpers) stay allowed; a client that sends a user name must match.
    pub(crate) users: Vec<(String, String)>,
    /// Contents of an ACL file (`acl_file`). Rules before the first `user` line apply to
    /// anonymous clients, so start with `topic readwrite #` to keep the helpers working.
    pub(crate) acl: Option<String>,
    /// Add a TLS listener ([`Broker::tls_port`]) with a certificate from [`Broker::pki`].
    pub(crate) tls: bool,
    /// Add a TLS listener that requires a client certificate signed by the test CA
    /// ([`Broker::mtls_port`]).
    pub(crate) mtls: bool,
    /// Add a websockets listener ([`Broker::ws_port`]).
    pub(crate) websockets: bool,
    /// Add a websockets-over-TLS listener ([`Broker::wss_port`]).
    pub(crate) wss: bool,
    /// Make the server certificate of the TLS listeners expired (valid 2000–2001).
    pub(crate) expired_server_cert: bool,
    /// Load mosquitto's dynamic-security plugin with a role, given to anonymous
    /// clients, that refuses SUBSCRIBE for this filter pattern (SUBACK 0x87 / 0x80).
    /// mosquitto's `acl_file` cannot do that: it grants every subscription and only
    /// filters delivery. Everything else stays allowed.
    pub(crate) dynsec_deny_subscribe: Option<String>,
    /// The same plugin and role, refusing PUBLISH from clients to this topic pattern
    /// (MQTT 5: PUBACK / PUBREC 0x87 NotAuthorized).
    pub(crate) dynsec_deny_publish: Option<String>,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        Self {
            persistence: false,
            max_inflight_messages: None,
            max_queued_messages: Some(0),
            extra_config: String::new(),
            users: Vec::new(),
            acl: None,
            tls: false,
            mtls: false,
            websockets: false,
            wss: false,
            expired_server_cert: false,
            dynsec_deny_subscribe: None,
            dynsec_deny_publish: None,
        }
    }
}

/// A mosquitto child process private to one test.
///
/// It listens on `127.0.0.1:<free port>` with anonymous access, keeps its
/// config, log and persistence file in a temporary directory, and is killed
/// (SIGKILL) when dropped — including when the test panics.
///
/// # Log lines (mosquitto 2.0.11, `connection_messages true`)
///
/// Observed on this machine; `<id>` is the MQTT client id:
///
/// ```text
/// New connection from 127.0.0.1:50330 on port 41234.                       (TCP accepted)
/// New client connected from 127.0.0.1:50330 as <id> (p2, c0, k30).        (CONNECT accepted; c0 = clean_session false)
/// Client <id> disconnected.                                               (client sent DISCONNECT)
/// Client <id> closed its connection.                                      (socket closed without DISCONNECT)
/// Client <id> already connected, closing old connection.                  (session taken over by a new connection)
/// Client <unknown> closed its connection.                                 (TCP connect without CONNECT, e.g. the readiness probe)
/// <id> 1 a/#                                                              (SUBSCRIBE: client, granted QoS, filter)
/// Saving in-memory database to <dir>//mosquitto.db.                       (autosave started)
/// ```
///
/// Each start appends to the same log, so [`Broker::log`] and
/// [`Broker::count_in_log`] see the history across restarts. Every start's
/// readiness probe adds one `Client <unknown> closed its connection.` line:
/// match on the client id, never on that sentence alone.
#[derive(Debug)]
pub(crate) struct Broker {
    options: BrokerOptions,
    port: u16,
    tls_port: u16,
    mtls_port: u16,
    ws_port: u16,
    wss_port: u16,
    pki: Option<Pki>,
    dir: TempDir,
    conf_path: PathBuf,
    log: BrokerLog,
    child: Option<Child>,
}

impl Broker {
    /// Starts a fresh broker and waits until it accepts TCP connections.
    ///
    /// Blocks the calling thread for a few milliseconds; fine inside `#[tokio::test]`.
    ///
    /// # Panics
    /// If mosquitto cannot be started or does not listen within 10 s; the
    /// message includes its log and stderr.
    pub(crate) fn start(options: BrokerOptions) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tower-mqtt-broker-")
            .tempdir()
            .expect("create broker temp dir");
        let log = BrokerLog {
            path: dir.path().join("mosquitto.log"),
            stderr_path: dir.path().join("mosquitto.stderr"),
        };
        let conf_path = dir.path().join("mosquitto.conf");
        let pki = (options.tls || options.mtls || options.wss)
            .then(|| Pki::generate(&dir.path().join("pki"), options.expired_server_cert));
        if !options.users.is_empty() {
            write_password_file(&dir.path().join("passwords"), &options.users);
        }
        if options.dynsec_deny_subscribe.is_some() || options.dynsec_deny_publish.is_some() {
            let config = dynsec_config(
                options.dynsec_deny_subscribe.as_deref(),
                options.dynsec_deny_publish.as_deref(),
            );
            fs::write(dir.path().join("dynsec.json"), config).expect("write dynsec.json");
        }
        if let Some(acl) = &options.acl {
            fs::write(dir.path().join("acl"), acl).expect("write acl file");
        }
        let mut broker = Self {
            options,
            port: 0,
            tls_port: 0,
            mtls_port: 0,
            ws_port: 0,
            wss_port: 0,
            pki,
            dir,
            conf_path,
            log,
            child: None,
        };
        // A free port can be taken by someone else between our probe and
        // mosquitto's bind; pick another one if that happens.
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            broker.port = free_port();
            let o = &broker.options;
            let extra = |on: bool| if on { free_port() } else { 0 };
            let (tls, mtls, ws, wss) = (
                extra(o.tls),
                extra(o.mtls),
                extra(o.websockets),
                extra(o.wss),
            );
            broker.tls_port = tls;
            broker.mtls_port = mtls;
            broker.ws_port = ws;
            broker.wss_port = wss;
            fs::write(&broker.conf_path, broker.config()).expect("write mosquitto.conf");
            match broker.spawn_and_wait() {
                Ok(()) => return broker,
                Err(e) if attempt < ATTEMPTS && e.contains("Address already in use") => {}
                Err(e) => panic!("{e}"),
            }
        }
        unreachable!("the last attempt either returns or panics")
    }

    /// The listener's port on 127.0.0.1 (the same across restarts).
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Port of the TLS listener (`BrokerOptions::tls`).
    pub(crate) fn tls_port(&self) -> u16 {
        assert!(
            self.options.tls,
            "broker started without BrokerOptions::tls"
        );
        self.tls_port
    }

    /// Port of the TLS listener requiring a client certificate (`BrokerOptions::mtls`).
    pub(crate) fn mtls_port(&self) -> u16 {
        assert!(
            self.options.mtls,
            "broker started without BrokerOptions::mtls"
        );
        self.mtls_port
    }

    /// Port of the websockets listener (`BrokerOptions::websockets`).
    pub(crate) fn ws_port(&self) -> u16 {
        assert!(
            self.options.websockets,
            "broker started without BrokerOptions::websockets"
        );
        self.ws_port
    }

    /// Port of the websockets-over-TLS listener (`BrokerOptions::wss`).
    pub(crate) fn wss_port(&self) -> u16 {
        assert!(
            self.options.wss,
            "broker started without BrokerOptions::wss"
        );
        self.wss_port
    }

    /// The certificates of the TLS listeners (generated at start).
    pub(crate) fn pki(&self) -> &Pki {
        self.pki
            .as_ref()
            .expect("broker started without a TLS listener")
    }

    /// Always `"127.0.0.1"`.
    #[allow(clippy::unused_self)] // a method, so tests read `broker.host()` like `broker.port()`
    pub(crate) fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// Directory holding `mosquitto.conf`, `mosquitto.log`, `mosquitto.stderr`
    /// and (with persistence) `mosquitto.db`. Deleted when the broker is dropped.
    pub(crate) fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// PID of the running mosquitto, `None` while stopped.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The options the broker was started with.
    pub(crate) fn options(&self) -> &BrokerOptions {
        &self.options
    }

    /// A cheap handle on the log file, for helpers that outlive a borrow of the broker.
    pub(crate) fn log_handle(&self) -> BrokerLog {
        self.log.clone()
    }

    /// The whole log file as it is now (all starts of this broker).
    pub(crate) fn log(&self) -> String {
        self.log.read()
    }

    /// The last `lines` lines of the log.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        self.log.tail(lines)
    }

    /// How many times `needle` occurs in the log.
    pub(crate) fn count_in_log(&self, needle: &str) -> usize {
        self.log.count(needle)
    }

    /// Polls the log every 10 ms until it contains `needle`.
    ///
    /// # Panics
    /// After `timeout`, with the log tail.
    pub(crate) async fn wait_for_log(&self, needle: &str, timeout: Duration) {
        self.log.wait_for(needle, timeout).await;
    }

    /// Polls the log until `needle` occurs at least `count` times.
    ///
    /// # Panics
    /// After `timeout`, with the log tail.
    pub(crate) async fn wait_for_log_count(&self, needle: &str, count: usize, timeout: Duration) {
        self.log.wait_for_count(needle, count, timeout).await;
    }

    /// Waits until everything the broker had accepted before this call is in
    /// its persistence file, so a following [`restart`](Self::restart)
    /// (SIGKILL) cannot lose it.
    ///
    /// Why not just sleep: with `autosave_interval 1`, mosquitto 2.0.11 saves
    /// when `last_save + 1 < now` in whole seconds, i.e. every **2 s**
    /// (observed: saves at t, t+2, t+4, … even when idle), so a 1.5 s pause
    /// loses the data about a quarter of the time. Instead this waits for a
    /// new `Saving in-memory database` log line (the save starts after this
    /// call, hence after every PUBACK the caller has already received), then
    /// does one MQTT CONNECT/CONNACK round trip: mosquitto is single-threaded
    /// and saves synchronously (to `mosquitto.db.new`, then renames), so a
    /// CONNACK proves the save has finished. The probe client shows up in the
    /// log as `autosave-probe-…`.
    ///
    /// # Panics
    /// If persistence is off, or no save completes within `timeout`.
    pub(crate) async fn wait_for_autosave(&self, timeout: Duration) {
        assert!(
            self.options.persistence,
            "wait_for_autosave: broker on port {} was started without persistence",
            self.port
        );
        let deadline = tokio::time::Instant::now() + timeout;
        let before = self.count_in_log(SAVE_LINE);
        self.log
            .wait_for_count(SAVE_LINE, before + 1, timeout)
            .await;
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let probe = TestClient::connect(self, &unique("autosave-probe"), true, false).await;
        probe
            .disconnect(remaining.max(Duration::from_secs(1)))
            .await;
    }

    /// Kills mosquitto with SIGKILL (no final save), starts it again with the
    /// same port, config and data dir, and waits until it accepts connections.
    ///
    /// Whatever was not yet autosaved is lost, exactly as in a crash; call
    /// [`wait_for_autosave`](Self::wait_for_autosave) first when the test
    /// needs it kept.
    ///
    /// # Panics
    /// If the broker does not come back within 10 s (e.g. the port was taken meanwhile).
    pub(crate) fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Kills mosquitto with SIGKILL and leaves it down until
    /// [`start_again`](Self::start_again). Connections are refused meanwhile.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Already exited is fine: `kill` then fails and `wait` reaps it.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops mosquitto with SIGTERM, which makes it save its database before exiting
    /// (with `persistence`), and waits for it to exit; down until
    /// [`start_again`](Self::start_again).
    pub(crate) fn stop_gracefully(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }

    /// Starts a stopped broker again (same port, config, data dir) and waits
    /// until it accepts connections.
    ///
    /// # Panics
    /// If it is already running, or does not come up within 10 s.
    pub(crate) fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "start_again: broker on port {} is still running (pid {:?})",
            self.port,
            self.pid()
        );
        if let Err(e) = self.spawn_and_wait() {
            panic!("{e}");
        }
    }

    /// The generated `mosquitto.conf`.
    fn config(&self) -> String {
        let dir = self.dir.path().display();
        let o = &self.options;
        let mut conf = String::new();
        let _ = writeln!(conf, "listener {} 127.0.0.1", self.port);
        conf.push_str("allow_anonymous true\n");
        // Started as root, mosquitto would otherwise switch to user `mosquitto`,
        // which cannot write the temp dir.
        conf.push_str("user root\n");
        let _ = writeln!(conf, "persistence {}", o.persistence);
        let _ = writeln!(conf, "persistence_location {dir}/");
        conf.push_str("autosave_interval 1\n");
        conf.push_str("connection_messages true\n");
        let _ = writeln!(conf, "log_dest file {}", self.log.path.display());
        // Not `debug`: it logs every packet, which slows the broker and makes
        // the log (re-read on every poll) grow with the message count.
        for t in [
            "error",
            "warning",
            "notice",
            "information",
            "subscribe",
            "unsubscribe",
        ] {
            let _ = writeln!(conf, "log_type {t}");
        }
        if let Some(n) = o.max_queued_messages {
            let _ = writeln!(conf, "max_queued_messages {n}");
        }
        if let Some(n) = o.max_inflight_messages {
            let _ = writeln!(conf, "max_inflight_messages {n}");
        }
        if !o.users.is_empty() {
            let _ = writeln!(conf, "password_file {dir}/passwords");
        }
        if o.acl.is_some() {
            let _ = writeln!(conf, "acl_file {dir}/acl");
        }
        if o.dynsec_deny_subscribe.is_some() || o.dynsec_deny_publish.is_some() {
            let _ = writeln!(conf, "plugin {}", dynsec_plugin().display());
            let _ = writeln!(conf, "plugin_opt_config_file {dir}/dynsec.json");
        }
        conf.push_str(&o.extra_config);
        conf.push('\n');
        // Further listeners last, so that extra_config still applies to the first one.
        let tls_files = |conf: &mut String| {
            let pki = self.pki();
            let _ = writeln!(conf, "cafile {}", pki.ca.display());
            let _ = writeln!(conf, "certfile {}", pki.server_cert.display());
            let _ = writeln!(conf, "keyfile {}", pki.server_key.display());
        };
        if o.tls {
            let _ = writeln!(conf, "listener {} 127.0.0.1", self.tls_port);
            tls_files(&mut conf);
        }
        if o.mtls {
            let _ = writeln!(conf, "listener {} 127.0.0.1", self.mtls_port);
            tls_files(&mut conf);
            conf.push_str("require_certificate true\n");
        }
        if o.websockets {
            // mosquitto binds a websockets listener on every interface whatever the address.
            let _ = writeln!(conf, "listener {} 127.0.0.1", self.ws_port);
            conf.push_str("protocol websockets\n");
        }
        if o.wss {
            let _ = writeln!(conf, "listener {} 127.0.0.1", self.wss_port);
            conf.push_str("protocol websockets\n");
            tls_files(&mut conf);
        }
        conf
    }

    /// Spawns mosquitto and waits until it is up: first until *this* start
    /// has logged `mosquitto version … running` (logged only once every
    /// listener is bound), then until a TCP connect to the port succeeds.
    ///
    /// The log check matters: a TCP connect alone can succeed against some
    /// other process that grabbed the port between [`free_port`] and our
    /// bind (our mosquitto then exits with "Address already in use" a moment
    /// later, and the test talks to a stranger). Seen here with 8 brokers
    /// starting in parallel.
    ///
    /// On failure the child is reaped and the error carries log and stderr.
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let starts_before = self.log.count_started();
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log.stderr_path)
            .expect("open mosquitto.stderr");
        let stdout = stderr.try_clone().expect("clone stderr handle");
        let bin = mosquitto_bin();
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&self.conf_path)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        let child = self.child.insert(child);

        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Err(format!(
                    "mosquitto on port {} exited during startup ({status})\n{}",
                    self.port,
                    self.log.describe()
                ));
            }
            if self.log.count_started() > starts_before
                && TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(format!(
                    "mosquitto on port {} did not accept connections within {STARTUP_TIMEOUT:?}\n{}",
                    self.port,
                    self.log.describe()
                ));
            }
            thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // Kill before the TempDir field is dropped (fields drop after this body).
        self.stop();
    }
}

/// The broker's log file; cloneable so that clients can put the log tail into
/// their panic messages. Reads return an empty string once the broker (and
/// its temp dir) is gone.
#[derive(Debug, Clone)]
pub(crate) struct BrokerLog {
    path: PathBuf,
    stderr_path: PathBuf,
}

impl BrokerLog {
    /// The whole log.
    pub(crate) fn read(&self) -> String {
        fs::read_to_string(&self.path).unwrap_or_default()
    }

    /// The last `lines` lines.
    pub(crate) fn tail(&self, lines: usize) -> String {
        let log = self.read();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Occurrences of `needle`.
    pub(crate) fn count(&self, needle: &str) -> usize {
        self.read().matches(needle).count()
    }

    /// How many times mosquitto has logged `mosquitto version <v> running`,
    /// i.e. completed its startup (listeners bound) into this log.
    fn count_started(&self) -> usize {
        self.read()
            .lines()
            .filter(|l| l.contains(": mosquitto version ") && l.ends_with(" running"))
            .count()
    }

    /// A block for panic messages: log tail (and stderr, if any).
    pub(crate) fn describe(&self) -> String {
        let mut out = format!(
            "--- mosquitto log tail ({}) ---\n{}\n--- end of log ---",
            self.path.display(),
            self.tail(TAIL_LINES)
        );
        let stderr = fs::read_to_string(&self.stderr_path).unwrap_or_default();
        if !stderr.trim().is_empty() {
            let _ = write!(
                out,
                "\n--- mosquitto stdout/stderr ---\n{}",
                stderr.trim_end()
            );
        }
        out
    }

    /// See [`Broker::wait_for_log`].
    pub(crate) async fn wait_for(&self, needle: &str, timeout: Duration) {
        self.wait_for_count(needle, 1, timeout).await;
    }

    /// See [`Broker::wait_for_log_count`].
    pub(crate) async fn wait_for_count(&self, needle: &str, count: usize, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let found = self.count(needle);
            if found >= count {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for the broker log to contain {needle:?} \
                     {count} time(s) (found {found})\n{}",
                    self.describe()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

/// A port on 127.0.0.1 that was free a moment ago and that no other broker
/// of this test process has had (a stopped broker's port looks free to the
/// OS, but its owner will want it back).
pub(crate) fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        if handed_out.insert(port) {
            return port;
        }
    }
}

/// Test certificates, generated with rcgen when the broker starts (no key is committed):
/// a CA, a server certificate for `broker.test` and `localhost` (deliberately not for
/// 127.0.0.1, so connecting by IP needs a server-name override), and a client
/// certificate signed by the same CA.
#[derive(Debug, Clone)]
pub(crate) struct Pki {
    /// CA certificate (PEM file).
    pub(crate) ca: PathBuf,
    pub(crate) server_cert: PathBuf,
    pub(crate) server_key: PathBuf,
    /// Client certificate signed by the CA (PEM file).
    pub(crate) client_cert: PathBuf,
    /// Its private key (PEM file).
    pub(crate) client_key: PathBuf,
}

impl Pki {
    /// The name in the server certificate.
    pub(crate) const SERVER_NAME: &'static str = "broker.test";

    /// Generate a fresh CA and certificates into `dir`.
    pub(crate) fn generate(dir: &Path, expired_server_cert: bool) -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        fs::create_dir_all(dir).expect("create pki dir");
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(
            DnType::CommonName,
            format!("tower-mqtt test CA {}", unique("ca")),
        );
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign CA");

        let server_key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(vec![Self::SERVER_NAME.to_owned(), "localhost".to_owned()])
                .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, Self::SERVER_NAME);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        if expired_server_cert {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let server_cert = params
            .signed_by(&server_key, &ca_cert, &ca_key)
            .expect("sign server cert");

        let client_key = KeyPair::generate().expect("client key");
        let mut params =
            CertificateParams::new(vec!["tower-mqtt-client".to_owned()]).expect("client params");
        params
            .distinguished_name
            .push(DnType::CommonName, "tower-mqtt-client");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = params
            .signed_by(&client_key, &ca_cert, &ca_key)
            .expect("sign client cert");

        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            fs::write(&path, pem).expect("write pem");
            path
        };
        Self {
            ca: write("ca.pem", ca_cert.pem()),
            server_cert: write("server.pem", server_cert.pem()),
            server_key: write("server.key", server_key.serialize_pem()),
            client_cert: write("client.pem", client_cert.pem()),
            client_key: write("client.key", client_key.serialize_pem()),
        }
    }
}

/// A dynamic-security configuration: anonymous clients may do everything except
/// subscribe to (or receive from) `pattern`.
fn dynsec_config(deny_subscribe: Option<&str>, deny_publish: Option<&str>) -> String {
    let deny = |acltype: &str, pattern: &str| {
        format!(
            r#"{{"acltype": "{acltype}", "topic": "{pattern}", "priority": 0, "allow": false}}"#
        )
    };
    let mut acls = Vec::new();
    if let Some(pattern) = deny_subscribe {
        acls.push(deny("subscribePattern", pattern));
        acls.push(deny("publishClientReceive", pattern));
    }
    if let Some(pattern) = deny_publish {
        acls.push(deny("publishClientSend", pattern));
    }
    format!(
        r#"{{
  "defaultACLAccess": {{"publishClientSend": true, "publishClientReceive": true, "subscribe": true, "unsubscribe": true}},
  "clients": [],
  "groups": [{{"groupname": "anonymous", "roles": [{{"rolename": "restricted"}}]}}],
  "roles": [{{"rolename": "restricted", "acls": [{}]}}],
  "anonymousGroup": "anonymous"
}}"#,
        acls.join(", ")
    )
}

/// `$MOSQUITTO_DYNSEC` if set, else the Debian location of the plugin.
fn dynsec_plugin() -> PathBuf {
    if let Some(path) = std::env::var_os("MOSQUITTO_DYNSEC") {
        return path.into();
    }
    let multiarch = format!(
        "/usr/lib/{}-linux-gnu/mosquitto_dynamic_security.so",
        std::env::consts::ARCH
    );
    PathBuf::from(multiarch)
}

/// A mosquitto password file for `users`, made with `mosquitto_passwd -b`.
fn write_password_file(path: &Path, users: &[(String, String)]) {
    let bin = std::env::var_os("MOSQUITTO_PASSWD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("mosquitto_passwd"));
    fs::write(path, "").expect("create password file");
    for (user, password) in users {
        let status = Command::new(&bin)
            .arg("-b")
            .arg(path)
            .arg(user)
            .arg(password)
            .stdin(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        assert!(
            status.success(),
            "mosquitto_passwd failed for {user}: {status}"
        );
    }
}

/// `$MOSQUITTO` if set, else `/usr/sbin/mosquitto` (Debian), else `mosquitto` on `PATH`.
fn mosquitto_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("MOSQUITTO") {
        return bin.into();
    }
    let debian = Path::new("/usr/sbin/mosquitto");
    if debian.exists() {
        debian.to_path_buf()
    } else {
        PathBuf::from("mosquitto")
    }
}
