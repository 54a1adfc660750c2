//! A scripted fake MQTT server, for what a real broker will not do: never answer
//! CONNACK, refuse with codes mosquitto never sends, write garbage, break the protocol.
//!
//! It listens on 127.0.0.1:0 and runs the test's script on every accepted connection
//! ([`FakeConn`]: read the client's packets, write scripted bytes). It records when
//! each connection was accepted, so a test can bound the reconnect rate, and the
//! encoders below build the few packets the scripts need, byte by byte.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

/// One MQTT packet the client sent, split by its fixed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Packet {
    /// The first byte: packet type (high nibble) and flags.
    pub(crate) header: u8,
    /// Everything after the remaining length.
    pub(crate) body: Vec<u8>,
}

impl Packet {
    /// The packet type (1 CONNECT, 4 PUBACK, 5 PUBREC, 7 PUBCOMP, 8 SUBSCRIBE, ...).
    pub(crate) fn kind(&self) -> u8 {
        self.header >> 4
    }

    /// The packet id, for packets that start with one (acks, SUBSCRIBE).
    pub(crate) fn pkid(&self) -> u16 {
        u16::from_be_bytes([self.body[0], self.body[1]])
    }
}

pub(crate) const CONNECT: u8 = 1;
pub(crate) const PUBACK: u8 = 4;
pub(crate) const PUBREC: u8 = 5;
pub(crate) const PUBCOMP: u8 = 7;
pub(crate) const SUBSCRIBE: u8 = 8;

/// One accepted connection, as the script sees it.
pub(crate) struct FakeConn {
    /// Which connection this is, from 0.
    pub(crate) index: usize,
    stream: TcpStream,
    buf: Vec<u8>,
}

impl FakeConn {
    /// The next packet the client sent; `None` once it closed (or the socket failed).
    pub(crate) async fn read_packet(&mut self) -> Option<Packet> {
        loop {
            if let Some((packet, used)) = split_packet(&self.buf) {
                self.buf.drain(..used);
                return Some(packet);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Read the client's CONNECT (panics if the first packet is something else).
    pub(crate) async fn read_connect(&mut self) -> Packet {
        let packet = self.read_packet().await.expect("client sent CONNECT");
        assert_eq!(
            packet.kind(),
            CONNECT,
            "first packet is CONNECT: {packet:?}"
        );
        packet
    }

    /// Write `bytes` as they are (a failed write is ignored: the client may be gone).
    pub(crate) async fn write(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
        let _ = self.stream.flush().await;
    }

    /// Every packet the client sends until it closes the connection.
    pub(crate) async fn read_until_closed(&mut self) -> Vec<Packet> {
        let mut packets = Vec::new();
        while let Some(p) = self.read_packet().await {
            packets.push(p);
        }
        packets
    }

    /// Wait until the client closes the connection, discarding what it sends.
    pub(crate) async fn hold_open(&mut self) {
        self.read_until_closed().await;
    }
}

/// Split one complete packet off the front of `buf`: the packet and the bytes it took.
fn split_packet(buf: &[u8]) -> Option<(Packet, usize)> {
    let header = *buf.first()?;
    let (mut remaining, mut at) = (0usize, 1usize);
    loop {
        let byte = *buf.get(at)?;
        remaining |= usize::from(byte & 0x7f) << (7 * (at - 1));
        at += 1;
        if byte & 0x80 == 0 {
            break;
        }
        assert!(at <= 4, "client sent a malformed remaining length");
    }
    let end = at + remaining;
    let body = buf.get(at..end)?.to_vec();
    Some((Packet { header, body }, end))
}

struct Shared {
    accepted: Mutex<Vec<Instant>>,
    changed: Notify,
    tasks: Mutex<Vec<AbortHandle>>,
}

/// A running fake server; stops (with all its connections) when dropped.
pub(crate) struct FakeServer {
    port: u16,
    shared: Arc<Shared>,
}

impl FakeServer {
    /// Listen on a free port and run `script` on every accepted connection.
    pub(crate) async fn start<F, Fut>(script: F) -> Self
    where
        F: Fn(FakeConn) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake server");
        let port = listener.local_addr().expect("local addr").port();
        let shared = Arc::new(Shared {
            accepted: Mutex::new(Vec::new()),
            changed: Notify::new(),
            tasks: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let index = {
                    let mut accepted = s.accepted.lock().unwrap();
                    accepted.push(Instant::now());
                    accepted.len() - 1
                };
                s.changed.notify_waiters();
                let conn = FakeConn {
                    index,
                    stream,
                    buf: Vec::new(),
                };
                let task = tokio::spawn(script(conn)).abort_handle();
                s.tasks.lock().unwrap().push(task);
            }
        });
        shared.tasks.lock().unwrap().push(accept.abort_handle());
        Self { port, shared }
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// A config for this server: 127.0.0.1, its port, `client_id`, a short keepalive and
    /// connect timeout.
    pub(crate) fn config(&self, client_id: &str) -> tower_mqtt::Config {
        tower_mqtt::Config::new("127.0.0.1")
            .port(self.port)
            .client_id(client_id)
            .keepalive(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(5))
    }

    /// When each connection was accepted, in order.
    pub(crate) fn accepted(&self) -> Vec<Instant> {
        self.shared.accepted.lock().unwrap().clone()
    }

    /// Wait until `n` connections have been accepted; panics after `timeout`.
    pub(crate) async fn wait_accepted(&self, n: usize, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            if self.accepted().len() >= n {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "waited {timeout:?} for {n} connections, {} accepted",
                    self.accepted().len()
                );
            }
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        for task in self.shared.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

/// The shortest gap between consecutive accepted connections (`None` for fewer than
/// two).
pub(crate) fn min_gap(times: &[Instant]) -> Option<Duration> {
    times.windows(2).map(|w| w[1] - w[0]).min()
}

/// A fixed header and `body` as one packet.
pub(crate) fn packet(header: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![header];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// MQTT 3.1.1 CONNACK with this return code (0 accepts).
pub(crate) fn connack_v4(code: u8) -> Vec<u8> {
    packet(0x20, &[0, code])
}

/// MQTT 5 CONNACK with this reason code and no properties.
pub(crate) fn connack_v5(code: u8) -> Vec<u8> {
    packet(0x20, &[0, code, 0])
}

/// MQTT 3.1.1 PUBLISH at QoS 1 or 2 (`qos`), topic given as raw bytes (so it can be
/// invalid UTF-8).
pub(crate) fn publish_v4(topic: &[u8], qos: u8, pkid: u16, dup: bool, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    body.extend_from_slice(topic);
    body.extend_from_slice(&pkid.to_be_bytes());
    body.extend_from_slice(payload);
    let header = 0x30 | (qos << 1) | if dup { 0b1000 } else { 0 };
    packet(header, &body)
}

/// PUBREL for `pkid` (MQTT 3.1.1 form, also valid MQTT 5 with reason Success).
pub(crate) fn pubrel(pkid: u16) -> Vec<u8> {
    packet(0x62, &pkid.to_be_bytes())
}

/// MQTT 3.1.1 SUBACK for `pkid` with these return codes.
pub(crate) fn suback_v4(pkid: u16, codes: &[u8]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    body.extend_from_slice(codes);
    packet(0x90, &body)
}

/// The topic filters of a client's MQTT 3.1.1 SUBSCRIBE, in order.
pub(crate) fn subscribe_filters_v4(subscribe: &Packet) -> Vec<String> {
    let mut filters = Vec::new();
    let mut at = 2; // packet id
    while at + 2 <= subscribe.body.len() {
        let len = usize::from(u16::from_be_bytes([
            subscribe.body[at],
            subscribe.body[at + 1],
        ]));
        let filter = &subscribe.body[at + 2..at + 2 + len];
        filters.push(String::from_utf8(filter.to_vec()).expect("UTF-8 filter"));
        at += 2 + len + 1; // options byte
    }
    filters
}
