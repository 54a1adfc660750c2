//! A TCP proxy between the consumer and mosquitto, for fault injection: cut every
//! connection at a chosen moment, or freeze the broker-to-client direction so packets
//! the broker sent are never seen by the client.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// Bytes that crossed one proxied connection, per direction.
#[derive(Default, Clone)]
pub(crate) struct Recording {
    /// Client to broker.
    pub(crate) upstream: Arc<Mutex<Vec<u8>>>,
    /// Broker to client.
    pub(crate) downstream: Arc<Mutex<Vec<u8>>>,
}

struct Shared {
    /// Forwarding tasks of live connections, so `cut_all` can kill them.
    tasks: Mutex<Vec<AbortHandle>>,
    /// One recording per accepted connection, in order.
    recordings: Mutex<Vec<Recording>>,
    accepted: AtomicUsize,
    frozen: watch::Sender<bool>,
}

/// A running proxy; stops when dropped.
pub(crate) struct Proxy {
    port: u16,
    shared: Arc<Shared>,
    accept: AbortHandle,
}

impl Proxy {
    /// Listen on a free 127.0.0.1 port and forward every connection to
    /// `127.0.0.1:upstream_port`.
    pub(crate) async fn start(upstream_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let (frozen, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            tasks: Mutex::new(Vec::new()),
            recordings: Mutex::new(Vec::new()),
            accepted: AtomicUsize::new(0),
            frozen,
        });
        let s = shared.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(upstream) = TcpStream::connect(("127.0.0.1", upstream_port)).await else {
                    continue; // broker down: the client sees its connection close
                };
                s.accepted.fetch_add(1, Ordering::SeqCst);
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                let (mut cr, mut cw) = client.into_split();
                let (mut ur, mut uw) = upstream.into_split();
                let rec = Recording::default();
                s.recordings.lock().unwrap().push(rec.clone());
                let up_rec = rec.upstream.clone();
                let up = tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        up_rec.lock().unwrap().extend_from_slice(&buf[..n]);
                        if uw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
                let down_rec = rec.downstream.clone();
                let mut frozen = s.frozen.subscribe();
                let down = tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        // While frozen, stop reading: what the broker sends stays in
                        // kernel buffers and is lost when the connection is cut.
                        if frozen.wait_for(|f| !*f).await.is_err() {
                            return;
                        }
                        let n = match ur.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        // Frozen while this read was waiting: hold these bytes too.
                        if frozen.wait_for(|f| !*f).await.is_err() {
                            return;
                        }
                        down_rec.lock().unwrap().extend_from_slice(&buf[..n]);
                        if cw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
                let mut tasks = s.tasks.lock().unwrap();
                tasks.push(up.abort_handle());
                tasks.push(down.abort_handle());
            }
        })
        .abort_handle();
        Self {
            port,
            shared,
            accept,
        }
    }

    /// The port clients connect to.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Connections accepted so far.
    pub(crate) fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// What crossed each connection accepted so far, in order of acceptance.
    pub(crate) fn recordings(&self) -> Vec<Recording> {
        self.shared.recordings.lock().unwrap().clone()
    }

    /// Abruptly close every live connection (both sides see the socket drop).
    pub(crate) fn cut_all(&self) {
        for task in self.shared.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Stop (true) or resume (false) forwarding broker-to-client bytes.
    pub(crate) fn freeze_downstream(&self, frozen: bool) {
        self.shared.frozen.send_replace(frozen);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut_all();
    }
}

/// Packet ids, in wire order, of the QoS 1/2 PUBLISHes the broker sent and of the
/// PUBACKs/PUBRECs the client sent, decoded from a recording.
pub(crate) fn publish_and_ack_order(rec: &Recording, mqtt5: bool) -> (Vec<u16>, Vec<u16>) {
    let down = rec.downstream.lock().unwrap().clone();
    let up = rec.upstream.lock().unwrap().clone();
    let mut publishes = Vec::new();
    let mut acks = Vec::new();
    for packet in decode(&down, mqtt5) {
        if let Wire::Publish(pkid) = packet {
            publishes.push(pkid);
        }
    }
    for packet in decode(&up, mqtt5) {
        if let Wire::Ack(pkid) = packet {
            acks.push(pkid);
        }
    }
    (publishes, acks)
}

enum Wire {
    Publish(u16),
    Ack(u16),
    Other,
}

fn decode(bytes: &[u8], mqtt5: bool) -> Vec<Wire> {
    use rumqttc::mqttbytes::v4;
    use rumqttc::v5::mqttbytes::v5;
    let mut buf = bytes::BytesMut::from(bytes);
    let mut out = Vec::new();
    while !buf.is_empty() {
        let wire = if mqtt5 {
            match v5::Packet::read(&mut buf, None) {
                Ok(v5::Packet::Publish(p)) if p.pkid != 0 => Wire::Publish(p.pkid),
                Ok(v5::Packet::PubAck(a)) => Wire::Ack(a.pkid),
                Ok(v5::Packet::PubRec(r)) => Wire::Ack(r.pkid),
                Ok(_) => Wire::Other,
                Err(_) => break, // a packet cut off by the end of the recording
            }
        } else {
            match v4::Packet::read(&mut buf, usize::MAX) {
                Ok(v4::Packet::Publish(p)) if p.pkid != 0 => Wire::Publish(p.pkid),
                Ok(v4::Packet::PubAck(a)) => Wire::Ack(a.pkid),
                Ok(v4::Packet::PubRec(r)) => Wire::Ack(r.pkid),
                Ok(_) => Wire::Other,
                Err(_) => break,
            }
        };
        out.push(wire);
    }
    out
}

/// The MQTT 5 CONNECT the client sent first on this connection.
pub(crate) fn first_connect_v5(rec: &Recording) -> rumqttc::v5::mqttbytes::v5::Connect {
    use rumqttc::v5::mqttbytes::v5;
    let mut buf = bytes::BytesMut::from(&rec.upstream.lock().unwrap()[..]);
    match v5::Packet::read(&mut buf, None) {
        Ok(v5::Packet::Connect(connect, _, _)) => connect,
        other => panic!("expected CONNECT first, got {other:?}"),
    }
}

/// How many PINGREQs the client sent on this connection.
pub(crate) fn pingreqs_v4(rec: &Recording) -> usize {
    use rumqttc::mqttbytes::v4;
    let mut buf = bytes::BytesMut::from(&rec.upstream.lock().unwrap()[..]);
    let mut pings = 0;
    while let Ok(packet) = v4::Packet::read(&mut buf, usize::MAX) {
        if matches!(packet, v4::Packet::PingReq) {
            pings += 1;
        }
    }
    pings
}

/// `(first byte, body)` of every whole packet in `bytes`, in order (a packet cut off by
/// the end of the recording is left out).
fn frames(bytes: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        // Remaining length: a variable byte integer of 1 to 4 bytes.
        let (mut len, mut shift, mut i) = (0usize, 0, at + 1);
        loop {
            let Some(&b) = bytes.get(i) else { return out };
            len |= usize::from(b & 0x7f) << shift;
            shift += 7;
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        let Some(body) = bytes.get(i..i + len) else {
            return out;
        };
        out.push((bytes[at], body));
        at = i + len;
    }
    out
}

/// `(packet id, reason code)` of every PUBACK and PUBREC the client sent, in wire order,
/// read from the raw bytes (MQTT 5: a 2-byte remaining length means reason 0x00
/// Success; MQTT 3.1.1 never carries one, so every ack reads as 0x00).
pub(crate) fn ack_reasons(rec: &Recording) -> Vec<(u16, u8)> {
    let up = rec.upstream.lock().unwrap().clone();
    frames(&up)
        .into_iter()
        .filter(|(first, body)| matches!(first >> 4, 4 | 5) && body.len() >= 2)
        .map(|(_, body)| {
            let pkid = u16::from_be_bytes([body[0], body[1]]);
            (pkid, body.get(2).copied().unwrap_or(0))
        })
        .collect()
}

/// The payloads of the QoS 1/2 PUBLISHes the broker sent on this connection whose ack
/// (PUBACK, PUBREC) the client sent back on it: each ack is matched with the earliest
/// unacknowledged PUBLISH of its packet id, as acks leave in arrival order.
pub(crate) fn acked_payloads(rec: &Recording, mqtt5: bool) -> Vec<Vec<u8>> {
    use rumqttc::mqttbytes::v4;
    use rumqttc::v5::mqttbytes::v5;
    let mut down = bytes::BytesMut::from(&rec.downstream.lock().unwrap()[..]);
    let mut open: std::collections::HashMap<u16, std::collections::VecDeque<Vec<u8>>> =
        std::collections::HashMap::new();
    loop {
        let publish = if mqtt5 {
            match v5::Packet::read(&mut down, None) {
                Ok(v5::Packet::Publish(p)) => Some((p.pkid, p.payload.to_vec())),
                Ok(_) => None,
                Err(_) => break,
            }
        } else {
            match v4::Packet::read(&mut down, usize::MAX) {
                Ok(v4::Packet::Publish(p)) => Some((p.pkid, p.payload.to_vec())),
                Ok(_) => None,
                Err(_) => break,
            }
        };
        if let Some((pkid, payload)) = publish.filter(|(pkid, _)| *pkid != 0) {
            open.entry(pkid).or_default().push_back(payload);
        }
    }
    let (_, acks) = publish_and_ack_order(rec, mqtt5);
    acks.into_iter()
        .filter_map(|pkid| open.get_mut(&pkid).and_then(|q| q.pop_front()))
        .collect()
}

/// `(packet id, DUP)` of every QoS 1/2 PUBLISH the client sent, in wire order.
pub(crate) fn publishes_sent(rec: &Recording) -> Vec<(u16, bool)> {
    let up = rec.upstream.lock().unwrap().clone();
    frames(&up)
        .into_iter()
        .filter(|(first, _)| first >> 4 == 3 && (first >> 1) & 0b11 != 0)
        .map(|(first, body)| {
            let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
            let pkid = u16::from_be_bytes([body[2 + topic_len], body[3 + topic_len]]);
            (pkid, first & 0b1000 != 0)
        })
        .collect()
}
