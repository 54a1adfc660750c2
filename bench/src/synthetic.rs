//! `--mode synthetic`: a stand-in broker in the bench process, so that the consumer alone
//! is measured.
//!
//! It listens on a free 127.0.0.1 port and serves each connection on two threads of its
//! own. The reader answers CONNECT with a CONNACK (no session) and SUBSCRIBE with a
//! SUBACK granting the requested QoS, then counts the PUBACKs that come back. The writer
//! waits for the SUBACK to be sent, then writes pre-encoded PUBLISH packets (the
//! subscribed topic, the scenario's payload size and QoS) as fast as the socket takes
//! them, many per `write`, never more than `max_inflight` unacknowledged at QoS 1. The
//! messages of one job are shared by all its connections: each writer claims the next
//! chunk from one counter, like a shared subscription. Nothing is parsed beyond what the
//! replies need, nothing is stored, nothing is routed: the consumer is the bottleneck.
//!
//! MQTT 3.1.1 and 5 (the version byte of CONNECT decides the replies); QoS 0 and 1 (a
//! QoS 2 job is refused: it would need the PUBREC/PUBREL exchange).

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

/// At most this many messages per `write` (the socket takes what fits; the rest follows).
const CHUNK_MSGS: u64 = 512;

/// What the current job expects: set by the parent before each child starts.
#[derive(Debug, Clone, Copy)]
struct Plan {
    payload: usize,
    qos: u8,
    window: u64,
}

/// Counters of the current job, read by the parent after the child reported.
#[derive(Default)]
struct Stats {
    /// Messages not yet claimed by a writer.
    remaining: AtomicU64,
    /// read(2) and write(2) calls of the server threads.
    syscalls: AtomicU64,
}

struct Shared {
    plan: Mutex<Plan>,
    stats: Stats,
    stop: AtomicBool,
}

/// The synthetic broker of one scenario; stops accepting when dropped (connections end
/// when their consumer exits).
pub(crate) struct Synthetic {
    pub(crate) port: u16,
    shared: Arc<Shared>,
}

impl Synthetic {
    /// Listen on a free port and serve connections on background threads.
    pub(crate) fn start(payload: usize) -> Result<Self, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let shared = Arc::new(Shared {
            plan: Mutex::new(Plan {
                payload,
                qos: 1,
                window: 1000,
            }),
            stats: Stats::default(),
            stop: AtomicBool::new(false),
        });
        let accept = shared.clone();
        thread::Builder::new()
            .name("synthetic-accept".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if accept.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let shared = accept.clone();
                    let _ = thread::Builder::new()
                        .name("synthetic-conn".into())
                        .spawn(move || {
                            // A connection that ends early (the consumer exits at its
                            // N-th message) is not an error here.
                            let _ = serve(stream, &shared);
                        });
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(Self { port, shared })
    }

    /// The next child's job: `n` messages in all, at `qos`, at most `window` unacked per
    /// connection at QoS 1.
    pub(crate) fn expect(&self, n: u64, qos: u8, window: u16) -> Result<(), String> {
        if qos > 1 {
            return Err("the synthetic broker serves QoS 0 and 1".into());
        }
        let mut plan = self.shared.plan.lock().map_err(|e| e.to_string())?;
        plan.qos = qos;
        plan.window = u64::from(window.max(1));
        self.shared.stats.remaining.store(n, Ordering::SeqCst);
        Ok(())
    }

    /// read(2) + write(2) calls of the server's connection threads so far.
    pub(crate) fn syscalls(&self) -> u64 {
        self.shared.stats.syscalls.load(Ordering::Relaxed)
    }
}

impl Drop for Synthetic {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// One connection: the handshake on this thread, then a writer thread for the
/// publishes while this one counts acks.
fn serve(stream: TcpStream, shared: &Arc<Shared>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let plan = *shared.plan.lock().map_err(|_| io::ErrorKind::Other)?;
    let mut out = stream.try_clone()?;
    let mut reader = PacketReader::new(stream, shared.clone());

    // CONNECT → CONNACK (session not present: every client subscribes).
    let connect = reader.next()?;
    if connect.first() != Some(&0x10) {
        return Err(io::ErrorKind::InvalidData.into());
    }
    let v5 = protocol_level(&connect) == Some(5);
    out.write_all(if v5 {
        &[0x20, 3, 0, 0, 0]
    } else {
        &[0x20, 2, 0, 0]
    })?;

    // SUBSCRIBE → SUBACK granting the job's QoS; its filter becomes the topic.
    let (pkid, filter) = loop {
        let p = reader.next()?;
        if p.first() == Some(&0x82) {
            break parse_subscribe(&p, v5).ok_or(io::ErrorKind::InvalidData)?;
        }
    };
    let [hi, lo] = pkid.to_be_bytes();
    if v5 {
        out.write_all(&[0x90, 4, hi, lo, 0, plan.qos])?;
    } else {
        out.write_all(&[0x90, 3, hi, lo, plan.qos])?;
    }
    let topic = strip_share(&filter).to_owned();

    let acks = Arc::new((Mutex::new(0u64), Condvar::new()));
    let writer = {
        let (shared, acks) = (shared.clone(), acks.clone());
        thread::Builder::new()
            .name("synthetic-write".into())
            // No FIN after the last message: the consumer closes when it is done (an
            // early end of stream could overtake messages it has not handed out yet).
            .spawn(move || write_publishes(&mut out, &topic, plan, v5, &shared, &acks))?
    };
    // Count PUBACKs (one lock per read) until the consumer goes away.
    while let Ok(n) = reader.count_acks() {
        if n > 0 {
            let (lock, cvar) = &*acks;
            if let Ok(mut acked) = lock.lock() {
                *acked += n;
            }
            cvar.notify_one();
        }
    }
    // The writer may be waiting for acks that will never come.
    {
        let (lock, cvar) = &*acks;
        if let Ok(mut n) = lock.lock() {
            *n = u64::MAX / 2;
        }
        cvar.notify_all();
    }
    let _ = writer.join();
    Ok(())
}

/// Write the job's messages, claimed from the shared counter in chunks, from a ring of
/// pre-encoded PUBLISH packets (at QoS 1 one packet per packet id 1..=65535, so no id is
/// reused while in flight: the window is far smaller).
fn write_publishes(
    out: &mut TcpStream,
    topic: &str,
    plan: Plan,
    v5: bool,
    shared: &Shared,
    acks: &(Mutex<u64>, Condvar),
) -> io::Result<()> {
    let ring_len: u64 = if plan.qos == 0 { 1024 } else { 65_535 };
    let one = encode_publish(topic, plan.qos, 1, plan.payload, v5);
    let size = one.len();
    let mut ring = Vec::with_capacity(size * ring_len as usize);
    for i in 0..ring_len {
        ring.extend_from_slice(&encode_publish(
            topic,
            plan.qos,
            (i % 65_535) as u16 + 1,
            plan.payload,
            v5,
        ));
    }
    let mut sent: u64 = 0;
    loop {
        // How many this connection may send now: its window, then the shared counter.
        let mut allowed = CHUNK_MSGS;
        if plan.qos > 0 {
            let (lock, cvar) = acks;
            let mut acked = lock.lock().map_err(|_| io::ErrorKind::Other)?;
            while sent >= *acked + plan.window {
                acked = cvar
                    .wait_timeout(acked, Duration::from_millis(100))
                    .map_err(|_| io::ErrorKind::Other)?
                    .0;
            }
            allowed = allowed.min(*acked + plan.window - sent);
        }
        let claimed = claim(&shared.stats.remaining, allowed);
        if claimed == 0 {
            return Ok(());
        }
        // Write `claimed` packets starting at ring slot `sent % ring_len`.
        let mut left = claimed;
        let mut at = sent % ring_len;
        while left > 0 {
            let k = left.min(ring_len - at);
            let (from, to) = (at as usize * size, (at + k) as usize * size);
            shared.stats.syscalls.fetch_add(1, Ordering::Relaxed);
            out.write_all(&ring[from..to])?;
            left -= k;
            at = (at + k) % ring_len;
        }
        sent += claimed;
    }
}

/// Take up to `want` from `remaining`; returns how many were taken.
fn claim(remaining: &AtomicU64, want: u64) -> u64 {
    let mut cur = remaining.load(Ordering::Relaxed);
    loop {
        let take = cur.min(want);
        if take == 0 {
            return 0;
        }
        match remaining.compare_exchange_weak(cur, cur - take, Ordering::AcqRel, Ordering::Relaxed)
        {
            Ok(_) => return take,
            Err(now) => cur = now,
        }
    }
}

/// One PUBLISH: fixed header, topic, packet id (QoS 1), MQTT 5 property length 0,
/// payload (8 zero bytes where the bench's send time goes, then filler).
fn encode_publish(topic: &str, qos: u8, pkid: u16, payload: usize, v5: bool) -> Vec<u8> {
    let mut body = Vec::with_capacity(topic.len() + payload + 8);
    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    if v5 {
        body.push(0);
    }
    body.extend(std::iter::repeat_n(0u8, 8.min(payload)));
    body.extend(std::iter::repeat_n(b'x', payload.saturating_sub(8)));
    let mut p = vec![0x30 | (qos << 1)];
    put_varint(&mut p, body.len());
    p.extend_from_slice(&body);
    p
}

fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            return;
        }
    }
}

/// CONNECT's protocol level: after the fixed header and the "MQTT" name.
fn protocol_level(connect: &[u8]) -> Option<u8> {
    let (_, header) = varint(connect.get(1..)?)?;
    let body = connect.get(1 + header..)?;
    let name_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    body.get(2 + name_len).copied()
}

/// SUBSCRIBE's packet id and first filter.
fn parse_subscribe(p: &[u8], v5: bool) -> Option<(u16, String)> {
    let (_, header) = varint(p.get(1..)?)?;
    let body = p.get(1 + header..)?;
    let pkid = u16::from_be_bytes([*body.first()?, *body.get(1)?]);
    let mut at = 2;
    if v5 {
        let (props, len) = varint(body.get(at..)?)?;
        at += len + props;
    }
    let flen = usize::from(u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]));
    let filter = std::str::from_utf8(body.get(at + 2..at + 2 + flen)?).ok()?;
    Some((pkid, filter.to_owned()))
}

/// `$share/<group>/<topic>` → `<topic>`.
fn strip_share(filter: &str) -> &str {
    filter
        .strip_prefix("$share/")
        .and_then(|rest| rest.split_once('/'))
        .map_or(filter, |(_, topic)| topic)
}

/// A remaining-length varint: (value, bytes used).
fn varint(b: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (i, byte) in b.iter().take(4).enumerate() {
        value |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Whole packets from a socket, read in large chunks.
struct PacketReader {
    stream: TcpStream,
    shared: Arc<Shared>,
    buf: Vec<u8>,
    start: usize,
}

impl PacketReader {
    fn new(stream: TcpStream, shared: Arc<Shared>) -> Self {
        Self {
            stream,
            shared,
            buf: Vec::with_capacity(64 * 1024),
            start: 0,
        }
    }

    /// The length of the whole packet at the front of the buffer, if it is complete.
    fn front(&self) -> Option<usize> {
        let avail = &self.buf[self.start..];
        let (len, used) = varint(avail.get(1..)?)?;
        let total = 1 + used + len;
        (avail.len() >= total).then_some(total)
    }

    /// Read once more from the socket (after compacting the buffer).
    fn fill(&mut self) -> io::Result<()> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let mut chunk = [0u8; 16 * 1024];
        self.shared.stats.syscalls.fetch_add(1, Ordering::Relaxed);
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// The next whole packet (fixed header included).
    fn next(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(total) = self.front() {
                let p = self.buf[self.start..self.start + total].to_vec();
                self.start += total;
                return Ok(p);
            }
            self.fill()?;
        }
    }

    /// Read once, then consume every whole packet buffered; returns how many were
    /// PUBACKs.
    fn count_acks(&mut self) -> io::Result<u64> {
        self.fill()?;
        let mut acks = 0;
        while let Some(total) = self.front() {
            if self.buf[self.start] == 0x40 {
                acks += 1;
            }
            self.start += total;
        }
        Ok(acks)
    }
}
