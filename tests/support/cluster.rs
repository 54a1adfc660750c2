//! A 3-node clustered MQTT broker started by the test itself, for the cluster tier
//! (`tests/cluster.rs`, run by `scripts/test-cluster`):
//!
//! * [`Cluster::rmqtt`]: rmqttd (Raft cluster, MQTT 3.1.1 and 5, QoS 2, `$share`
//!   across nodes, session storage in sled). The binary comes from `$RMQTTD`, else
//!   `~/.cache/tower-mqtt/rmqttd/bin/rmqttd`, where `scripts/test-cluster` installs it.
//! * [`Cluster::nats`]: nats-server's MQTT gateway on a JetStream cluster (3.1.1,
//!   QoS 0/1, no shared subscriptions). From `$NATS_SERVER`, else `nats-server` on
//!   PATH or in /usr/sbin, /usr/bin.
//!
//! Every node listens on free 127.0.0.1 ports, keeps its config, data and log in a
//! temporary directory, is killed (SIGKILL, by PID) and restarted by the test, and is
//! killed when the cluster is dropped, also when the test panics.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
use tempfile::TempDir;
use tokio::sync::Notify;
use tokio::time::Instant;
use tower_mqtt::{Endpoint, Event as TmEvent};

use super::broker::free_port;
use super::unique;

/// How long a node may take to answer its first CONNECT after it was started.
const READY_WITHIN: Duration = Duration::from_secs(90);

/// Which broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Rmqtt,
    Nats,
}

/// One node: its MQTT port, files and process.
#[derive(Debug)]
struct Node {
    mqtt_port: u16,
    dir: PathBuf,
    conf: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// Three broker nodes clustered on loopback.
#[derive(Debug)]
pub(crate) struct Cluster {
    kind: Kind,
    bin: PathBuf,
    nodes: Vec<Node>,
    _dir: TempDir,
}

/// Where the rmqttd binary is (it may not exist).
pub(crate) fn rmqttd_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("RMQTTD") {
        return path.into();
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cache/tower-mqtt/rmqttd/bin/rmqttd")
}

fn nats_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER") {
        return path.into();
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "nats-server not found on PATH or in /usr/sbin, /usr/bin: install it \
                 (apt-get install nats-server) or set NATS_SERVER; scripts/test-cluster does"
            )
        })
}

impl Cluster {
    /// A 3-node rmqttd cluster (Raft, node 1 the designated leader) with shared
    /// subscriptions (`round_robin`) and session storage (sled, per node), every node
    /// answering CONNECT.
    pub(crate) async fn rmqtt() -> Self {
        let bin = rmqttd_bin();
        assert!(
            bin.is_file(),
            "rmqttd not found at {}: run scripts/test-cluster, which installs it (or set RMQTTD)",
            bin.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("tmqtt-rmqtt-")
            .tempdir()
            .expect("temp dir");
        let mqtt: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let rpc: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let raft: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let list = |ports: &[u16]| {
            ports
                .iter()
                .enumerate()
                .map(|(i, p)| format!("\"{}@127.0.0.1:{p}\"", i + 1))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let nodes = (0..3)
            .map(|i| {
                let node_dir = dir.path().join(format!("node{}", i + 1));
                let plugins = node_dir.join("plugins");
                fs::create_dir_all(&plugins).unwrap();
                let conf = node_dir.join("rmqtt.toml");
                fs::write(
                    &conf,
                    format!(
                        r#"[node]
id = {id}

[rpc]
server_addr = "127.0.0.1:{rpc}"
reuseport = true

[log]
to = "file"
level = "info"
dir = "{dir}"
file = "rmqtt.log"

[plugins]
dir = "{plugins}"
default_startups = ["rmqtt-cluster-raft", "rmqtt-shared-subscription", "rmqtt-session-storage"]
disabled_default_startups = ["rmqtt-http-api", "rmqtt-acl", "rmqtt-counter"]

[listener.tcp.external]
addr = "127.0.0.1:{mqtt}"
allow_anonymous = true
max_inflight = 128
max_mqueue_len = 100000
session_expiry_interval = "2h"
max_session_expiry_interval = "1d"
"#,
                        id = i + 1,
                        rpc = rpc[i],
                        mqtt = mqtt[i],
                        dir = node_dir.display(),
                        plugins = plugins.display(),
                    ),
                )
                .unwrap();
                fs::write(
                    plugins.join("rmqtt-cluster-raft.toml"),
                    format!(
                        r#"worker_threads = 2
node_grpc_addrs = [{grpc}]
raft_peer_addrs = [{raft}]
leader_id = 1

[raft]
grpc_reuseport = true
"#,
                        grpc = list(&rpc),
                        raft = list(&raft),
                    ),
                )
                .unwrap();
                fs::write(
                    plugins.join("rmqtt-shared-subscription.toml"),
                    "strategy = \"round_robin\"\n",
                )
                .unwrap();
                fs::write(
                    plugins.join("rmqtt-session-storage.toml"),
                    format!(
                        "[storage]\ntype = \"sled\"\nsled.path = \"{}\"\nsled.cache_capacity = \"64M\"\n",
                        node_dir.join("sessions").display()
                    ),
                )
                .unwrap();
                Node {
                    mqtt_port: mqtt[i],
                    log: node_dir.join("stdout.log"),
                    dir: node_dir,
                    conf,
                    child: None,
                }
            })
            .collect();
        Self::launch(Kind::Rmqtt, bin, nodes, dir).await
    }

    /// A 3-node NATS cluster with JetStream and the MQTT gateway; `ack_wait` is how
    /// long the gateway waits for a PUBACK before sending a message again.
    pub(crate) async fn nats(ack_wait: Duration) -> Self {
        let bin = nats_bin();
        let dir = tempfile::Builder::new()
            .prefix("tmqtt-nats-")
            .tempdir()
            .expect("temp dir");
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let route_list = routes
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(", ");
        let nodes = (0..3)
            .map(|i| {
                let node_dir = dir.path().join(format!("n{}", i + 1));
                fs::create_dir_all(&node_dir).unwrap();
                let mqtt_port = free_port();
                let conf = node_dir.join("nats.conf");
                fs::write(
                    &conf,
                    format!(
                        r#"server_name: n{n}
listen: 127.0.0.1:{client}
jetstream {{ store_dir: "{store}" }}
cluster {{
  name: tower-mqtt
  listen: 127.0.0.1:{route}
  routes: [ {route_list} ]
}}
mqtt {{
  listen: 127.0.0.1:{mqtt_port}
  ack_wait: "{ack_wait}ms"
}}
"#,
                        n = i + 1,
                        client = free_port(),
                        store = node_dir.join("js").display(),
                        route = routes[i],
                        ack_wait = ack_wait.as_millis(),
                    ),
                )
                .unwrap();
                Node {
                    mqtt_port,
                    log: node_dir.join("nats.log"),
                    dir: node_dir,
                    conf,
                    child: None,
                }
            })
            .collect();
        Self::launch(Kind::Nats, bin, nodes, dir).await
    }

    /// Start every node and wait until each answers.
    async fn launch(kind: Kind, bin: PathBuf, nodes: Vec<Node>, dir: TempDir) -> Self {
        let mut cluster = Self {
            kind,
            bin,
            nodes,
            _dir: dir,
        };
        for i in 0..cluster.nodes.len() {
            cluster.spawn(i);
        }
        for i in 0..cluster.nodes.len() {
            cluster.wait_ready(i).await;
        }
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "node {i} is running");
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("node log");
        let err = out.try_clone().expect("node log");
        let mut command = Command::new(&self.bin);
        match self.kind {
            Kind::Rmqtt => command.arg("-f").arg(&node.conf),
            Kind::Nats => command.arg("-c").arg(&node.conf),
        };
        let child = command
            // rmqttd also reads ./rmqtt.toml: the node's own directory has only its own.
            .current_dir(&node.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        node.child = Some(child);
    }

    /// Wait until node `i` answers an MQTT CONNECT with a CONNACK.
    pub(crate) async fn wait_ready(&self, i: usize) {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(exit) = self.exited(i) {
                panic!(
                    "{:?} node {i} exited ({exit}); log:\n{}",
                    self.kind,
                    self.log_tail(i, 40)
                );
            }
            if probe(self.nodes[i].mqtt_port).await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{:?} node {i} did not answer CONNECT within {READY_WITHIN:?}; log:\n{}",
                self.kind,
                self.log_tail(i, 40)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn exited(&self, i: usize) -> Option<String> {
        // `try_wait` needs `&mut`; a zero-signal `kill` tells whether it still runs.
        let pid = self.nodes[i].child.as_ref()?.id();
        let alive = Command::new("kill")
            .args(["-0", &pid.to_string()])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let zombie = fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| stat.split_whitespace().nth(2) == Some("Z"));
        (!alive || zombie).then(|| format!("pid {pid} is gone"))
    }

    /// The MQTT endpoint of node `i`.
    pub(crate) fn endpoint(&self, i: usize) -> Endpoint {
        Endpoint::new("127.0.0.1", self.nodes[i].mqtt_port)
    }

    /// The endpoints of nodes `order`, in that order (a failover list).
    pub(crate) fn endpoints(&self, order: &[usize]) -> Vec<Endpoint> {
        order.iter().map(|&i| self.endpoint(i)).collect()
    }

    /// Which node listens at `endpoint`.
    pub(crate) fn node_of(&self, endpoint: &str) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| self.endpoint(i).to_string() == endpoint)
    }

    /// The PID of node `i`, if it runs.
    pub(crate) fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    /// SIGKILL node `i` by its PID and reap it.
    pub(crate) fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = Command::new("kill")
                .args(["-KILL", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Start node `i` again (same ports, config and data) and wait until it answers.
    pub(crate) async fn restart(&mut self, i: usize) {
        self.spawn(i);
        self.wait_ready(i).await;
    }

    /// The last `lines` lines of node `i`'s output (and rmqttd's own log file).
    pub(crate) fn log_tail(&self, i: usize, lines: usize) -> String {
        let node = &self.nodes[i];
        let mut text = fs::read_to_string(&node.log).unwrap_or_default();
        if self.kind == Kind::Rmqtt {
            text += &fs::read_to_string(node.dir.join("rmqtt.log")).unwrap_or_default();
        }
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// Whether the broker at `port` answers a clean-session CONNECT within 5 s.
async fn probe(port: u16) -> bool {
    let mut options = MqttOptions::new(unique("probe"), "127.0.0.1", port);
    options.set_clean_session(true);
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    let connack = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    return ack.code == rumqttc::ConnectReturnCode::Success
                }
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    };
    let ok = tokio::time::timeout(Duration::from_secs(5), connack)
        .await
        .unwrap_or(false);
    if ok {
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
    }
    ok
}

/// Publish `payloads` to `topic` at `endpoint` (MQTT 3.1.1) and wait until the broker
/// confirmed each one (PUBACK / PUBCOMP), with tower-mqtt's own publisher on a
/// persistent session: what a node's reset (NATS resets connections while JetStream
/// elects new leaders) left unconfirmed is sent again on the resumed session.
///
/// # Panics
/// If a publish fails or they are not all confirmed within `timeout`.
pub(crate) async fn publish_to(
    endpoint: &Endpoint,
    topic: &str,
    qos: tower_mqtt::QoS,
    payloads: Vec<Vec<u8>>,
    timeout: Duration,
) {
    let n = payloads.len();
    let config = tower_mqtt::Config::new(endpoint.host())
        .port(endpoint.port())
        .client_id(unique("pub"))
        .keepalive(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5));
    let publisher = tower_mqtt::Publisher::builder(config)
        .max_inflight(20)
        .no_timeout()
        .reconnect_backoff(Duration::from_millis(100), Duration::from_secs(1))
        .build()
        .expect("valid publisher configuration");
    let mut tasks = tokio::task::JoinSet::new();
    for payload in payloads {
        let (publisher, topic) = (publisher.clone(), topic.to_owned());
        tasks.spawn(async move {
            publisher
                .publish(tower_mqtt::Publish::new(topic, payload).qos(qos))
                .await
        });
    }
    drop(publisher);
    let mut confirmed = 0;
    let all = async {
        while let Some(result) = tasks.join_next().await {
            match result.expect("publish task") {
                Ok(()) => confirmed += 1,
                Err(e) => panic!("publisher at {endpoint}: {e} after {confirmed} of {n} confirmed"),
            }
        }
    };
    let finished = tokio::time::timeout(timeout, all).await.is_ok();
    assert!(
        finished,
        "publisher at {endpoint}: {confirmed} of {n} publishes confirmed within {timeout:?}"
    );
}

/// A connection event with the endpoint it names.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Conn {
    Up {
        endpoint: String,
        session_present: bool,
    },
    Down {
        endpoint: String,
    },
    Subscribed,
}

/// The connection events of a consumer (its hook: [`ConnLog::hook`]), in order, with
/// when they happened.
#[derive(Clone, Default)]
pub(crate) struct ConnLog {
    events: Arc<Mutex<Vec<(Instant, Conn)>>>,
    changed: Arc<Notify>,
}

impl ConnLog {
    pub(crate) fn hook(&self) -> impl Fn(&TmEvent<'_>) + Send + Sync + 'static {
        let this = self.clone();
        move |e| {
            let conn = match e {
                TmEvent::ConnectionUp {
                    endpoint,
                    session_present,
                    ..
                } => Conn::Up {
                    endpoint: endpoint.to_string(),
                    session_present: *session_present,
                },
                TmEvent::ConnectionDown { endpoint, .. } => Conn::Down {
                    endpoint: endpoint.to_string(),
                },
                TmEvent::SubscriptionSuccess { .. } => Conn::Subscribed,
                _ => return,
            };
            this.events.lock().unwrap().push((Instant::now(), conn));
            this.changed.notify_waiters();
        }
    }

    pub(crate) fn all(&self) -> Vec<(Instant, Conn)> {
        self.events.lock().unwrap().clone()
    }

    pub(crate) fn count(&self, pred: impl Fn(&Conn) -> bool) -> usize {
        self.all().iter().filter(|(_, c)| pred(c)).count()
    }

    /// Wait until `n` events match.
    pub(crate) async fn wait_count(
        &self,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&Conn) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if self.count(&pred) >= n {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "waited {timeout:?} for {n} matching events; saw {:#?}",
                    self.all()
                );
            }
        }
    }
}
