//! The publisher's connection task: one connection (`<client_id>_pub`) that sends the
//! handles' publishes and resolves each one when the broker confirms it.
//!
//! Built from the consumer's driver parts (handshake, buffered socket, keepalive,
//! codec) with its own state: the publishes the broker has not confirmed yet, by packet
//! id, which outlive a connection. After a session resume they are sent again (PUBLISH
//! with DUP, or PUBREL for those the broker already has), in the order they were first
//! sent.
//!
//! A session can also hold QoS 2 exchanges this task never knew: left by an earlier
//! process with the same client id that stopped between PUBREC and PUBREL, or restored
//! by a broker restarted from an older save (kill -9). Each still counts against the
//! broker's receive window, and a broker that enforces it (mosquitto) refuses every new
//! publish with 0x97 Quota Exceeded once they fill it. On that refusal the task
//! releases them (see [`Release`]) and sends the refused publishes again.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tower::retry::backoff::{Backoff, MakeBackoff};

use super::error::PublishError;
use super::request::Publish;
use crate::config::{Config, QoS};
use crate::driver::codec::{
    set_dup, Codec, ConnAckInfo, ConnectParams, Decoded, Inbound, OutPublish, PubResp,
};
use crate::driver::handshake;
use crate::driver::io::Buffered;
use crate::driver::keepalive::Keepalive;
use crate::driver::{Failover, ReconnectBackoff};
use crate::error::DownReason;

const TARGET: &str = "tower_mqtt::publisher";

/// MQTT 5 reason code 0x92 Packet Identifier not found (on PUBCOMP).
const PUBCOMP_NOT_FOUND: u8 = 0x92;
/// MQTT 5 reason code 0x97 Quota Exceeded (on PUBACK / PUBREC).
const QUOTA_EXCEEDED: u8 = 0x97;

/// Where a handle learns how its publish ended.
pub(super) type Reply = oneshot::Sender<Result<(), PublishError>>;

/// A publish accepted by a handle, on its way to the task.
pub(super) struct Request {
    pub(super) publish: Publish,
    pub(super) reply: Reply,
    /// One of the publisher's `max_inflight` permits, held until the broker confirms:
    /// this bounds the task's memory whatever the callers do.
    pub(super) permit: OwnedSemaphorePermit,
}

/// What the task needs to know, settled by the builder.
pub(super) struct Options {
    pub(super) config: Config,
    pub(super) client_id: String,
    pub(super) backoff: ReconnectBackoff,
    /// Our own bound on unconfirmed publishes (the broker's Receive Maximum may be lower).
    pub(super) max_inflight: usize,
}

/// A QoS 1 or 2 publish the broker has not confirmed yet.
struct Unconfirmed {
    /// Order of first sending: resends keep it.
    seq: u64,
    topic: String,
    /// The encoded PUBLISH, DUP clear.
    packet: Bytes,
    stage: Stage,
    /// [`Live::releases`] when this PUBLISH was last written: a refusal of one written
    /// before the latest release is no evidence against that release.
    round: u32,

    reply: Reply,
    _permit: OwnedSemaphorePermit,
}

/// Where a QoS 1 or 2 exchange stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// PUBLISH sent; waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Published,
    /// PUBREC received, PUBREL sent; waiting for PUBCOMP.
    Released,
}

/// A QoS 0 publish in the write buffer: done once the buffer is flushed.
struct Written {
    topic: String,
    reply: Reply,
    _permit: OwnedSemaphorePermit,
}

/// One live connection.
struct Live {
    io: Buffered,
    keepalive: Keepalive,
    /// How many unconfirmed publishes may be out: ours and the broker's limit.
    window: usize,
    /// The broker's Maximum Packet Size (MQTT 5), if it announced one.
    max_packet: Option<usize>,
    written: Vec<Written>,
    /// DISCONNECT is in the write buffer: every handle is gone and nothing is pending.
    closing: bool,
    /// The broker announced a Receive Maximum (MQTT 5): it counts our open exchanges.
    broker_counts: bool,
    /// Releases started on this connection (at most one, see [`Release`]).
    releases: u32,
    /// The release under way: its PUBRELs not yet answered.
    release: Option<Release>,
    /// The last packet received was a PUBREC accepting this packet id.
    last_pubrec: Option<u16>,
    /// Unconfirmed publishes to send again on this connection once the window has room
    /// (packet ids, in the order they were first sent).
    waiting: VecDeque<u16>,
    /// Resent publishes carry DUP (the session was resumed).
    resumed: bool,
}

/// Releasing QoS 2 exchanges the session holds that the task does not know.
///
/// The evidence is a 0x97 Quota Exceeded from a broker that announced a Receive
/// Maximum: the task never has more exchanges open than that, so the broker counts
/// some the task has no record of. They can have any packet id, so the task sends
/// PUBREL for every id it is not using: the broker releases those it holds (their
/// messages are delivered, as their publisher meant them to be; a possible duplicate,
/// never a loss) and answers the others with PUBCOMP (MQTT 5: 0x92 Packet Identifier
/// not found). The refused publishes follow the PUBRELs on the same connection, so
/// the broker sees them with its window free. 65,535 PUBRELs are 256 KiB, once per
/// connection at most; a second refusal on the same connection is the caller's error.
/// Only on evidence: some brokers (rumqttd) close the connection on a PUBREL for an id
/// they do not know.
struct Release {
    /// One bit per packet id whose PUBREL is unanswered: not reused until answered,
    /// since its PUBCOMP would otherwise be taken for the new exchange's.
    pending: Box<[u64; 1024]>,
    outstanding: usize,
    sent: usize,
    not_found: usize,
}

impl Release {
    fn contains(&self, pkid: u16) -> bool {
        self.pending[usize::from(pkid / 64)] & (1 << (pkid % 64)) != 0
    }

    /// Clears `pkid`; whether it was pending.
    fn answer(&mut self, pkid: u16) -> bool {
        let (word, bit) = (usize::from(pkid / 64), 1u64 << (pkid % 64));
        let was = self.pending[word] & bit != 0;
        self.pending[word] &= !bit;
        self.outstanding -= usize::from(was);
        was
    }
}

/// The connection task.
pub(super) struct Task {
    opts: Options,
    codec: Codec,
    rx: mpsc::UnboundedReceiver<Request>,
    unconfirmed: HashMap<u16, Unconfirmed>,
    last_pkid: u16,
    next_seq: u64,
    /// A release was started and not finished (mosquitto 2.0.11 closes the connection
    /// right after its 0x97 PUBREC, before it reads our PUBRELs): the next resumed
    /// session starts with it.
    release_due: bool,
    /// MQTT 3.1.1: the in-flight window learned from the broker's hidden refusals (see
    /// [`Task::recheck_hidden_refusal`]).
    learned_window: Option<usize>,
}

impl Task {
    pub(super) fn new(opts: Options, rx: mpsc::UnboundedReceiver<Request>) -> Self {
        Self {
            codec: Codec::for_protocol(opts.config.proto_ver),
            opts,
            rx,
            unconfirmed: HashMap::new(),
            last_pkid: 0,
            next_seq: 0,
            release_due: false,
            learned_window: None,
        }
    }

    /// Connect, publish, reconnect, until every handle is gone and nothing waits for
    /// the broker any more.
    pub(super) async fn run(mut self) {
        let mut maker = self.opts.backoff.maker();
        let mut backoff = maker.make_backoff();
        // The consumer's failover list, walked the same way.
        let mut failover = Failover::new(&self.opts.config);
        loop {
            if self.done() {
                return;
            }
            let opened = {
                let params = self.connect_params();
                handshake::connect(&failover.current().config, self.codec, &params).await
            };
            let reason = match opened {
                Ok((io, connack)) => {
                    backoff = maker.make_backoff();
                    failover.connected();
                    match self.connected(io, connack).await {
                        Ok(()) => return,
                        Err(reason) => reason,
                    }
                }
                Err(reason) => reason,
            };
            tracing::warn!(target: TARGET, client_id = %self.opts.client_id, reason = %reason,
                endpoint = %failover.current().endpoint,
                unconfirmed = self.unconfirmed.len(), "publisher connection down");
            if self.opts.config.clean_start {
                // No session will carry these over: tell their callers now.
                self.fail_unconfirmed();
            }
            if self.abandoned() {
                return;
            }
            if failover.failed() {
                backoff.next_backoff().await;
            }
        }
    }

    fn connect_params(&self) -> ConnectParams<'_> {
        let c = &self.opts.config;
        let v5 = self.codec == Codec::V5;
        ConnectParams {
            client_id: &self.opts.client_id,
            keepalive_secs: c.keepalive.as_secs() as u16,
            clean_start: c.clean_start,
            username: c.username.as_deref(),
            password: c.password.as_ref().map(|p| p.0.as_str()),
            session_expiry: (v5 && !c.clean_start).then_some(c.session_expiry.as_secs() as u32),
            // We receive no publishes: nothing to limit.
            receive_maximum: None,
            max_packet_size: None,
            // The will belongs to the consumer's connections.
            will: None,
            bridge_mode: false,
            properties: v5.then_some(&c.properties),
        }
    }

    /// Every handle is gone, no request is queued and nothing is unconfirmed.
    fn done(&self) -> bool {
        self.rx.is_closed() && self.rx.is_empty() && self.unconfirmed.is_empty()
    }

    /// Every handle is gone and no caller waits for what is left: stop retrying.
    fn abandoned(&self) -> bool {
        self.rx.is_closed()
            && self.rx.is_empty()
            && self.unconfirmed.values().all(|u| u.reply.is_closed())
    }

    /// Fail every unconfirmed publish with [`PublishError::ConnectionLost`].
    fn fail_unconfirmed(&mut self) {
        for (_, u) in self.unconfirmed.drain() {
            let _ = u
                .reply
                .send(Err(PublishError::ConnectionLost { topic: u.topic }));
        }
    }

    /// Publish on a fresh connection until it fails, or until every handle is gone and
    /// everything is confirmed (then `Ok` after a DISCONNECT).
    async fn connected(&mut self, io: Buffered, connack: ConnAckInfo) -> Result<(), DownReason> {
        let keepalive = match connack.server_keepalive {
            Some(secs) => Duration::from_secs(secs.into()),
            None => self.opts.config.keepalive,
        };
        let broker_window = connack.receive_maximum.map_or(65_535, usize::from);
        let mut live = Live {
            io,
            keepalive: Keepalive::new(keepalive),
            window: self
                .opts
                .max_inflight
                .min(broker_window)
                .min(self.learned_window.unwrap_or(usize::MAX)),
            max_packet: connack.max_packet_size.map(|n| n as usize),
            written: Vec::new(),
            closing: false,
            broker_counts: connack.receive_maximum.is_some(),
            releases: 0,
            release: None,
            last_pubrec: None,
            waiting: VecDeque::new(),
            resumed: connack.session_present,
        };
        tracing::info!(target: TARGET, client_id = %self.opts.client_id,
            session_present = connack.session_present, window = live.window,
            unconfirmed = self.unconfirmed.len(), "publisher connected");
        self.resume(&mut live, connack.session_present);
        let result = poll_fn(|cx| self.poll_live(&mut live, cx)).await;
        if let (Err(DownReason::Closed), Some(pkid), Codec::V4) =
            (&result, live.last_pubrec, self.codec)
        {
            self.recheck_hidden_refusal(pkid, &live);
        }
        // QoS 0 publishes not flushed: nothing will send them again.
        for w in live.written.drain(..) {
            let _ = w
                .reply
                .send(Err(PublishError::ConnectionLost { topic: w.topic }));
        }
        result
    }

    /// The broker closed an MQTT 3.1.1 connection right after a PUBREC (`pkid`): it may
    /// have been a refusal. mosquitto 2.0.11 answers a QoS 2 publish beyond its
    /// in-flight window with a PUBREC (3.1.1 has no reason code to say 0x97) and closes
    /// the connection at once. A PUBREL resent for it on the next connection would be
    /// answered with PUBCOMP for a message the broker never took, and the publish
    /// confirmed though lost (seen: 2 of 300). So that exchange starts again from
    /// PUBLISH (DUP): a broker that still holds it recognises it by packet id and content
    /// (mosquitto keeps one copy), one that refused it takes it now. The cost: if the
    /// broker had released it already (it read our PUBREL before closing), it is
    /// delivered twice; a duplicate, never a loss. Only the last packet can be such a
    /// refusal: the broker answers in order and closes right after it (though the PUBREC
    /// that arrived last may also be a real one, its followers dropped by the close).
    ///
    /// Such a close also means the window is larger than the broker's, which 3.1.1
    /// cannot tell: the window is halved (down to 1, never grown again). Without that,
    /// each connection would overrun the broker's window again, and a broker holding
    /// publishes whose PUBREC the close swallowed could refuse the first new one every
    /// time, for good.
    fn recheck_hidden_refusal(&mut self, pkid: u16, live: &Live) {
        let Some(u) = self
            .unconfirmed
            .get_mut(&pkid)
            .filter(|u| u.stage == Stage::Released)
        else {
            return;
        };
        u.stage = Stage::Published;
        let open = self.open(live);
        if open < 2 {
            // One exchange open: no window was overrun.
            return;
        }
        let window = (live.window / 2).max(1);
        self.learned_window = Some(window);
        tracing::warn!(target: TARGET, client_id = %self.opts.client_id, pkid, open, window,
            "the broker closed the connection right after a PUBREC: taken as a refusal \
             beyond its in-flight window (MQTT 3.1.1 has no reason code for it; mosquitto \
             does this). The publish is sent again and the window halved; set \
             max_inflight to the broker's window (mosquitto: max_inflight_messages) to \
             avoid this");
    }

    /// Deal with what the last connection left unconfirmed.
    fn resume(&mut self, live: &mut Live, session_present: bool) {
        if !session_present {
            // A new session holds no exchange of ours.
            self.release_due = false;
        } else if self.release_due {
            // First, so the broker's window is free when the rest arrives.
            self.start_release(live);
        }
        if self.unconfirmed.is_empty() {
            return;
        }
        if !session_present {
            if self.opts.config.clean_start {
                self.fail_unconfirmed();
                return;
            }
            // The broker lost our session (it expired, or the broker lost its state).
            // What it acknowledged with PUBREC it has: done. The rest goes out again
            // as new publishes.
            let released: Vec<u16> = self
                .unconfirmed
                .iter()
                .filter(|(_, u)| u.stage == Stage::Released)
                .map(|(pkid, _)| *pkid)
                .collect();
            for pkid in released {
                if let Some(u) = self.unconfirmed.remove(&pkid) {
                    let _ = u.reply.send(Ok(()));
                }
            }
        }
        let mut order: Vec<(u64, u16)> = self
            .unconfirmed
            .iter()
            .map(|(pkid, u)| (u.seq, *pkid))
            .collect();
        order.sort_unstable();
        // PUBRELs first: they free the broker's window for the rest.
        let mut open = 0;
        for &(_, pkid) in &order {
            if self.unconfirmed[&pkid].stage == Stage::Released {
                self.codec.encode_pubrel(pkid, live.io.write_buf());
                open += 1;
            }
        }
        // Then the publishes, within the window; the rest as it frees.
        for (_, pkid) in order {
            if self.unconfirmed[&pkid].stage == Stage::Published {
                if open < live.window {
                    self.resend(pkid, live);
                    open += 1;
                } else {
                    live.waiting.push_back(pkid);
                }
            }
        }
    }

    /// Send an unconfirmed PUBLISH again on this connection.
    fn resend(&mut self, pkid: u16, live: &mut Live) {
        let Some(u) = self.unconfirmed.get_mut(&pkid) else {
            return;
        };
        u.round = live.releases;
        let wbuf = live.io.write_buf();
        let start = wbuf.len();
        wbuf.extend_from_slice(&u.packet);
        if live.resumed {
            // MQTT-4.4.0-1: resent on a resumed session, with DUP.
            set_dup(&mut wbuf[start..]);
        }
    }

    /// Publishes open on this connection (sent, not confirmed).
    fn open(&self, live: &Live) -> usize {
        self.unconfirmed.len().saturating_sub(live.waiting.len())
    }

    /// One live connection, pass after pass (the consumer's driver loop, smaller).
    fn poll_live(&mut self, live: &mut Live, cx: &mut Context<'_>) -> Poll<Result<(), DownReason>> {
        loop {
            let mut progress = false;

            // 1. What the broker sent.
            let needed = loop {
                let max = self.opts.config.max_packet_size;
                match self.codec.decode(live.io.read_buf(), max)? {
                    Decoded::Packet(packet) => {
                        self.on_packet(packet, live)?;
                        progress = true;
                    }
                    Decoded::NeedMore(n) => break n,
                }
            };

            // 2. Resent publishes, then new ones, while the window has room.
            if !live.closing {
                while self.open(live) < live.window {
                    let Some(pkid) = live.waiting.pop_front() else {
                        break;
                    };
                    self.resend(pkid, live);
                    progress = true;
                }
                while live.waiting.is_empty() && self.open(live) < live.window && self.id_free(live)
                {
                    match self.rx.poll_recv(cx) {
                        Poll::Ready(Some(request)) => {
                            self.send(request, live);
                            progress = true;
                        }
                        Poll::Ready(None) | Poll::Pending => break,
                    }
                }
                if live.written.is_empty() && self.done() {
                    self.codec.encode_disconnect(live.io.write_buf());
                    live.closing = true;
                }
            }

            // 3. Keepalive.
            live.keepalive
                .poll(cx, live.io.rx_total(), self.codec, live.io.write_buf())?;

            // 4. Write; a flushed buffer confirms the QoS 0 publishes in it.
            progress |= live.io.poll_write(cx)?;
            if live.io.is_flushed() {
                for w in live.written.drain(..) {
                    let _ = w.reply.send(Ok(()));
                }
                if live.closing {
                    return if live.io.poll_linger(cx) {
                        Poll::Ready(Ok(()))
                    } else {
                        Poll::Pending
                    };
                }
            }

            // 5. Read.
            live.keepalive.reading();
            progress |= live.io.poll_read(cx, needed)?;

            if !progress {
                return Poll::Pending;
            }
        }
    }

    /// Encode a publish into the write buffer and remember it until it is confirmed.
    fn send(&mut self, request: Request, live: &mut Live) {
        let Request {
            publish,
            reply,
            permit,
        } = request;
        let pkid = match publish.qos {
            QoS::AtMostOnce => 0,
            QoS::AtLeastOnce | QoS::ExactlyOnce => self.next_pkid(live),
        };
        let mut packet = BytesMut::new();
        let encoded = self.codec.encode_publish(
            &OutPublish {
                topic: &publish.topic,
                payload: &publish.payload,
                qos: publish.qos,
                retain: publish.retain,
                pkid,
                properties: publish.properties.as_ref(),
            },
            &mut packet,
        );
        let refused = match encoded {
            Err(reason) => Some(reason),
            Ok(()) => live
                .max_packet
                .filter(|max| packet.len() > *max)
                .map(|max| {
                    format!(
                    "the packet is {} bytes, more than the broker's Maximum Packet Size of {max}",
                    packet.len()
                )
                }),
        };
        if let Some(reason) = refused {
            let _ = reply.send(Err(PublishError::Encode {
                topic: publish.topic,
                reason,
            }));
            return;
        }
        live.io.write_buf().extend_from_slice(&packet);
        if publish.qos == QoS::AtMostOnce {
            live.written.push(Written {
                topic: publish.topic,
                reply,
                _permit: permit,
            });
            return;
        }
        self.next_seq += 1;
        self.unconfirmed.insert(
            pkid,
            Unconfirmed {
                seq: self.next_seq,
                topic: publish.topic,
                packet: packet.freeze(),
                stage: Stage::Published,
                round: live.releases,
                reply,
                _permit: permit,
            },
        );
    }

    /// Whether a packet id is free for a new publish: always, unless a release holds
    /// the ids the window leaves.
    fn id_free(&self, live: &Live) -> bool {
        match &live.release {
            None => true,
            Some(r) => r.outstanding + self.unconfirmed.len() < usize::from(u16::MAX),
        }
    }

    /// The next packet id not in use and not awaiting a release's PUBCOMP (one is
    /// free: see [`Task::id_free`]).
    fn next_pkid(&mut self, live: &Live) -> u16 {
        loop {
            self.last_pkid = self.last_pkid.checked_add(1).unwrap_or(1);
            let releasing = live
                .release
                .as_ref()
                .is_some_and(|r| r.contains(self.last_pkid));
            if !releasing && !self.unconfirmed.contains_key(&self.last_pkid) {
                return self.last_pkid;
            }
        }
    }

    /// A refusal with 0x97 Quota Exceeded: whether it is evidence of exchanges the
    /// session holds that the task does not know, and so was dealt with (the publish
    /// goes out again, after a release if none was made since it was written).
    fn quota_refused(&mut self, pkid: u16, live: &mut Live) -> bool {
        if !live.broker_counts || self.codec != Codec::V5 {
            return false;
        }
        let Some(round) = self.unconfirmed.get(&pkid).map(|u| u.round) else {
            return false;
        };
        if round == live.releases {
            if live.releases > 0 {
                // Refused again after a release on this connection: not ours to fix.
                return false;
            }
            self.start_release(live);
        }
        if let Some(u) = self.unconfirmed.get_mut(&pkid) {
            u.round = live.releases;
            // The broker refused it, so it holds nothing of it: a new PUBLISH, DUP clear.
            live.io.write_buf().extend_from_slice(&u.packet);
        }
        true
    }

    /// PUBREL for every packet id not in use (see [`Release`]).
    fn start_release(&mut self, live: &mut Live) {
        let mut release = Release {
            pending: Box::new([0; 1024]),
            outstanding: 0,
            sent: 0,
            not_found: 0,
        };
        let wbuf = live.io.write_buf();
        wbuf.reserve(4 * usize::from(u16::MAX));
        for pkid in 1..=u16::MAX {
            if !self.unconfirmed.contains_key(&pkid) {
                self.codec.encode_pubrel(pkid, wbuf);
                release.pending[usize::from(pkid / 64)] |= 1 << (pkid % 64);
                release.outstanding += 1;
            }
        }
        release.sent = release.outstanding;
        if self.release_due {
            tracing::info!(target: TARGET, client_id = %self.opts.client_id,
                pubrels = release.sent, "releasing the session's unknown QoS 2 exchanges first");
        } else {
            tracing::warn!(target: TARGET, client_id = %self.opts.client_id,
                open = self.unconfirmed.len(), window = live.window, pubrels = release.sent,
                "the broker refused a publish with 0x97 Quota Exceeded although fewer \
                 exchanges than its Receive Maximum are open: the session holds QoS 2 \
                 exchanges this publisher does not know (an earlier process with this client \
                 id, or a broker restored from an older save); releasing them with PUBREL");
        }
        self.release_due = true;
        live.releases += 1;
        live.release = Some(release);
    }

    /// A PUBCOMP for a packet id not in use: the answer to a release's PUBREL, if any.
    fn release_answered(&mut self, live: &mut Live, pkid: u16, reason: u8) {
        let Some(release) = live.release.as_mut() else {
            return;
        };
        if !release.answer(pkid) {
            return;
        }
        release.not_found += usize::from(reason == PUBCOMP_NOT_FOUND);
        if release.outstanding == 0 {
            tracing::info!(target: TARGET, client_id = %self.opts.client_id,
                pubrels = release.sent, not_found = release.not_found,
                "release done: the broker answered every PUBREL");
            live.release = None;
            self.release_due = false;
        }
    }

    fn on_packet(&mut self, packet: Inbound, live: &mut Live) -> Result<(), DownReason> {
        live.last_pubrec = None;
        match packet {
            Inbound::PubResp { kind, pkid, reason } => self.on_response(kind, pkid, reason, live),
            Inbound::PingResp => live.keepalive.pong(),
            Inbound::Disconnect { code } => return Err(DownReason::ServerDisconnect { code }),
            // We subscribe to nothing, but a session of this client id might hold
            // subscriptions from elsewhere: acknowledge, so the broker's window does not
            // fill, and drop.
            Inbound::Publish(p) => {
                tracing::warn!(target: TARGET, topic = %p.topic,
                    "the publisher's connection received a message; it subscribes to nothing, so it is dropped");
                self.codec.encode_ack(p.qos, p.pkid, 0, live.io.write_buf());
            }
            Inbound::PubRel(pkid) => self.codec.encode_pubcomp(pkid, live.io.write_buf()),
            Inbound::ConnAck(_) => {
                return Err(DownReason::Protocol("a second CONNACK".into()));
            }
            Inbound::SubAck { .. } | Inbound::Ignored => {}
        }
        Ok(())
    }

    fn on_response(&mut self, kind: PubResp, pkid: u16, reason: u8, live: &mut Live) {
        if reason == QUOTA_EXCEEDED
            && matches!(kind, PubResp::Ack | PubResp::Rec)
            && self.quota_refused(pkid, live)
        {
            return;
        }
        let Some(u) = self.unconfirmed.get_mut(&pkid) else {
            if kind == PubResp::Comp {
                self.release_answered(live, pkid, reason);
            } else {
                tracing::debug!(target: TARGET, pkid, ?kind, "answer for a packet id not in use; ignored");
            }
            return;
        };
        let outcome = match kind {
            PubResp::Rec if reason < 0x80 => {
                u.stage = Stage::Released;
                live.last_pubrec = Some(pkid);
                self.codec.encode_pubrel(pkid, live.io.write_buf());
                return;
            }
            PubResp::Ack | PubResp::Rec if reason >= 0x80 => Err(reason),
            // MQTT 5 PUBCOMP 0x92 Packet Identifier not found: the broker has no record
            // of the exchange. Either it completed it and the PUBCOMP was lost with a
            // connection, or it lost the message (a crash before it saved its state;
            // mosquitto routes a QoS 2 message only on PUBREL). Publish it again: a
            // possible duplicate, never a loss.
            PubResp::Comp if reason == PUBCOMP_NOT_FOUND => {
                u.stage = Stage::Published;
                live.io.write_buf().extend_from_slice(&u.packet);
                return;
            }
            PubResp::Ack | PubResp::Rec | PubResp::Comp => Ok(()),
        };
        if let Some(u) = self.unconfirmed.remove(&pkid) {
            let result = outcome.map_err(|code| PublishError::Refused {
                code,
                name: reason_name(code),
                topic: u.topic,
            });
            let _ = u.reply.send(result);
        }
    }
}

/// The MQTT 5 name of a PUBACK / PUBREC error reason code (MQTT 5 §3.4.2.1).
fn reason_name(code: u8) -> &'static str {
    match code {
        0x80 => "UnspecifiedError",
        0x83 => "ImplementationSpecificError",
        0x87 => "NotAuthorized",
        0x90 => "TopicNameInvalid",
        0x91 => "PacketIdentifierInUse",
        0x97 => "QuotaExceeded",
        0x99 => "PayloadFormatInvalid",
        _ => "(unknown reason code)",
    }
}
