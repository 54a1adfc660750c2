//! The session state of one live connection: its socket, packet ids, the ack order,
//! withheld failures, keepalive and the closing phases. No service in sight: the
//! dispatcher tells a connection which messages it took ([`Conn::track`]) and how each
//! one ended ([`Conn::settle`]); everything that goes on the wire is decided here.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::time::{sleep, Sleep};

use super::codec::{Codec, Decoded, Inbound, SubCode};
use super::io::Buffered;
use super::keepalive::Keepalive;
use super::order::AckOrder;
use super::pacing::{Buffer, Pacing, SMALL_RECEIVE_BUFFER};
use super::settings::Settings;
use crate::config::QoS;
use crate::disposition::Disposition;
use crate::error::DownReason;
use crate::event::Emitter;

/// How long to wait for the broker to close after our DISCONNECT.
const LINGER: Duration = Duration::from_secs(2);

/// Why a connection's loop ended on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Exit {
    /// Shutdown was requested; the connection was drained and closed.
    Shutdown,
    /// Failures are waiting: the session is resumed so the broker redelivers them.
    Redeliver { failures: usize },
}

/// Where a connection is in its life. Only ever moves forward:
/// `Running → Draining → Disconnecting → Lingering`, then the connection is done.
enum Phase {
    /// Taking new messages.
    Running,
    /// Taking no new messages; waiting for this connection's calls to be decided, up
    /// to `deadline` (the drain timeout), then their acks are released and DISCONNECT
    /// is written. PUBREL and PINGRESP are still answered.
    Draining {
        exit: Exit,
        deadline: Pin<Box<Sleep>>,
    },
    /// DISCONNECT is in the write buffer, behind the last acks; waiting for them to be
    /// written and flushed. Nothing more is read.
    Disconnecting { exit: Exit },
    /// DISCONNECT is flushed and our side half-closed; waiting, up to `deadline`
    /// ([`LINGER`]), for the broker to close its side, so that it has read every ack
    /// before the socket goes away (closing with unread data would send a RST, which can
    /// discard them).
    Lingering {
        exit: Exit,
        deadline: Pin<Box<Sleep>>,
    },
}

/// One live connection.
pub(super) struct Conn {
    io: Buffered,
    codec: Codec,
    max_packet_size: usize,
    max_inflight: usize,
    drain_timeout: Duration,
    redeliver_after: Duration,
    /// Which connection of this slot this is: a call's ticket from an earlier one is
    /// stale.
    epoch: u64,
    order: AckOrder,
    /// Service calls started on this connection and not finished.
    calls: usize,
    /// Failures withheld for redelivery on this connection.
    withheld: usize,
    /// PUBRECs sent whose PUBREL has not arrived yet (QoS 2 handshakes in progress).
    awaiting_rel: usize,
    /// Acks put in the write buffer since it was last flushed. Until they are written,
    /// their messages are processed but not acknowledged: a fault now would bring them
    /// back. They count against `max_inflight` ([`Conn::acks_unwritten`]), which bounds
    /// the duplicates one fault can cause.
    unwritten: usize,
    redeliver_timer: Option<Pin<Box<Sleep>>>,
    keepalive: Keepalive,
    phase: Phase,
    next_pkid: u16,
    /// Outstanding SUBSCRIBE packet ids and their filters.
    pending_sub: Vec<(u16, Vec<(String, QoS)>)>,
    /// Messages taken on this connection: the rate read pacing measures.
    received: u64,
    pacing: Pacing,
    /// The receive buffer's size before read pacing shrank it, as the kernel reports
    /// it (Linux: twice what was asked for).
    saved_receive_buffer: Option<usize>,
}

impl Conn {
    pub(super) fn new(io: Buffered, epoch: u64, keepalive: Duration, settings: &Settings) -> Self {
        let pacing = Pacing::new(settings.read_pacing, io.connect_rtt());
        Self {
            io,
            codec: settings.codec(),
            max_packet_size: settings.config.max_packet_size,
            max_inflight: settings.max_inflight,
            drain_timeout: settings.drain_timeout,
            redeliver_after: settings.redeliver_after,
            epoch,
            order: AckOrder::default(),
            calls: 0,
            withheld: 0,
            awaiting_rel: 0,
            unwritten: 0,
            redeliver_timer: None,
            keepalive: Keepalive::new(keepalive),
            phase: Phase::Running,
            next_pkid: 1,
            pending_sub: Vec::new(),
            received: 0,
            pacing,
            saved_receive_buffer: None,
        }
    }

    #[inline]
    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether the connection takes new messages.
    #[inline]
    pub(super) fn is_running(&self) -> bool {
        matches!(self.phase, Phase::Running)
    }

    /// Whether the connection is closing but still reads (to answer PUBREL and
    /// PINGRESP).
    #[inline]
    pub(super) fn is_draining(&self) -> bool {
        matches!(self.phase, Phase::Draining { .. })
    }

    /// Stop taking new messages and start closing (no-op if already closing).
    pub(super) fn close(&mut self, exit: Exit) {
        if self.is_running() {
            self.phase = Phase::Draining {
                exit,
                deadline: Box::pin(sleep(self.drain_timeout)),
            };
        }
    }

    /// Queue the SUBSCRIBE to `filters`; each SUBACK is reported by [`Conn::control`].
    /// MQTT 5: one SUBSCRIBE per filter, the `i`-th with Subscription Identifier `i + 1`
    /// (an identifier belongs to a whole SUBSCRIBE packet), so the broker names the
    /// matching filters on every PUBLISH ([`Message::subscriptions`](crate::Message::subscriptions)).
    pub(super) fn subscribe(&mut self, filters: &[(String, QoS)]) {
        if filters.is_empty() {
            return;
        }
        if self.codec == Codec::V4 {
            self.subscribe_one(filters, None);
            return;
        }
        for (i, filter) in filters.iter().enumerate() {
            self.subscribe_one(std::slice::from_ref(filter), Some(i + 1));
        }
    }

    /// UNSUBSCRIBE from `filters` (the UNSUBACK needs no answer).
    pub(super) fn unsubscribe(&mut self, filters: &[String]) {
        if filters.is_empty() {
            return;
        }
        let pkid = self.next_pkid;
        self.next_pkid += 1;
        self.codec
            .encode_unsubscribe(pkid, filters, self.io.write_buf());
    }

    fn subscribe_one(&mut self, filters: &[(String, QoS)], id: Option<usize>) {
        let pkid = self.next_pkid;
        self.next_pkid += 1;
        self.codec
            .encode_subscribe(pkid, filters, id, self.io.write_buf());
        self.pending_sub.push((pkid, filters.to_vec()));
    }

    /// Decode the next packet from the read buffer.
    #[inline]
    pub(super) fn decode(&mut self) -> Result<Decoded, DownReason> {
        self.codec.decode(self.io.read_buf(), self.max_packet_size)
    }

    /// A service call starts for a message that arrived on this connection. Returns
    /// its slot in the ack order; `None` for QoS 0, which has nothing to acknowledge.
    #[inline]
    pub(super) fn track(&mut self, pkid: u16, qos: QoS) -> Option<u64> {
        self.calls += 1;
        self.received += 1;
        match qos {
            QoS::AtMostOnce => None,
            qos => Some(self.order.push(pkid, qos)),
        }
    }

    /// Acks decided but held back by an earlier message still in its call.
    #[inline]
    pub(super) fn acks_waiting(&self) -> usize {
        self.order.waiting()
    }

    /// Acks released into the write buffer and not flushed yet.
    #[inline]
    pub(super) fn acks_unwritten(&self) -> usize {
        self.unwritten
    }

    /// A call started on this connection finished as `disposition` (`seq` as returned
    /// by [`Conn::track`]): withhold a failure for redelivery, and release the acks that
    /// are now due, in arrival order. (Part of the per-message path, called once from
    /// the dispatcher's `finish`: always inlined there, as it was before the split.)
    #[inline(always)]
    pub(super) fn settle(&mut self, seq: Option<u64>, disposition: Disposition) {
        self.calls -= 1;
        let Some(seq) = seq else {
            return; // QoS 0: nothing to acknowledge or redeliver.
        };
        if disposition == Disposition::Redeliver {
            self.withheld += 1;
            if self.redeliver_timer.is_none() {
                self.redeliver_timer = Some(Box::pin(sleep(self.redeliver_after)));
            }
            // Failures would fill the window: take no new message from here on (this
            // may run inside the dispatch loop, for a call that failed at once).
            if self.withheld >= self.max_inflight {
                let failures = self.withheld;
                self.close(Exit::Redeliver { failures });
            }
        }
        self.order.decide(seq, disposition);
        self.release_acks();
    }

    /// Release the decided prefix of the ack order onto the write buffer.
    fn release_acks(&mut self) {
        let codec = self.codec;
        let wbuf = self.io.write_buf();
        let (awaiting_rel, unwritten) = (&mut self.awaiting_rel, &mut self.unwritten);
        self.order
            .release(|pkid, qos, d| match write_ack(codec, qos, pkid, d, wbuf) {
                Written::Nothing => {}
                Written::Ack => *unwritten += 1,
                Written::PubRec => {
                    *unwritten += 1;
                    *awaiting_rel += 1;
                }
            });
    }

    /// Redelivery: failures have waited long enough, so the connection closes and the
    /// session is resumed. (A full window starts closing as soon as the failure is
    /// decided, in [`Conn::settle`].)
    #[inline]
    pub(super) fn poll_redeliver(&mut self, cx: &mut Context<'_>) {
        if self.is_running() && self.withheld > 0 {
            let timer_fired = self
                .redeliver_timer
                .as_mut()
                .is_some_and(|t| t.as_mut().poll(cx).is_ready());
            if timer_fired {
                let failures = self.withheld;
                self.close(Exit::Redeliver { failures });
            }
        }
    }

    /// Move the closing phases forward: once this connection's calls are decided (or
    /// the drain timeout passed), release what is left and write DISCONNECT; once that
    /// is flushed, half-close and linger. `None`: carry on with this pass (reading,
    /// keepalive, writing); `Some(Pending)`: only waiting for the broker to close;
    /// `Some(Ready(exit))`: the connection is done.
    #[inline]
    pub(super) fn poll_closing(&mut self, cx: &mut Context<'_>) -> Option<Poll<Exit>> {
        if let Phase::Draining { exit, deadline } = &mut self.phase {
            let exit = *exit;
            let timed_out = deadline.as_mut().poll(cx).is_ready();
            if timed_out {
                // Abandoned calls are not acknowledged: the broker sends them again.
                self.order.abandon(Disposition::ABANDONED);
                self.release_acks();
            }
            let drained = self.calls == 0 && self.order.is_empty() && self.awaiting_rel == 0;
            if timed_out || drained {
                self.codec.encode_disconnect(self.io.write_buf());
                self.phase = Phase::Disconnecting { exit };
            }
        }
        if let Phase::Disconnecting { exit } = self.phase {
            if !self.io.is_flushed() {
                return None;
            }
            self.phase = Phase::Lingering {
                exit,
                deadline: Box::pin(sleep(LINGER)),
            };
        }
        if let Phase::Lingering { exit, deadline } = &mut self.phase {
            let closed = self.io.poll_linger(cx);
            let gave_up = deadline.as_mut().poll(cx).is_ready();
            return Some(if closed || gave_up {
                Poll::Ready(*exit)
            } else {
                Poll::Pending
            });
        }
        None
    }

    /// While draining: keep answering PUBREL and PINGRESP so QoS 2 handshakes finish
    /// before DISCONNECT. A PUBLISH that arrives now is not processed and not
    /// acknowledged: the broker sends it again on the next session. Returns the bytes
    /// still needed for the next packet; sets `progress` if a packet was consumed.
    pub(super) fn skip_input(
        &mut self,
        events: &Emitter,
        progress: &mut bool,
    ) -> Result<usize, DownReason> {
        loop {
            match self.decode()? {
                Decoded::NeedMore(n) => return Ok(n),
                Decoded::Packet(Inbound::Publish(raw)) => {
                    // Not processed, and nothing goes on the wire for it.
                    debug_assert_eq!(Disposition::ARRIVED_WHILE_CLOSING.ack_reason(raw.qos), None);
                    *progress = true;
                }
                Decoded::Packet(other) => {
                    *progress = true;
                    self.control(other, events)?;
                }
            }
        }
    }

    /// Handle a packet other than PUBLISH.
    pub(super) fn control(&mut self, packet: Inbound, events: &Emitter) -> Result<(), DownReason> {
        match packet {
            Inbound::PubRel(pkid) => {
                // Always complete: after a session resume the broker resends PUBREL for
                // a PUBREC sent on an earlier connection, which we no longer remember.
                self.codec.encode_pubcomp(pkid, self.io.write_buf());
                self.awaiting_rel = self.awaiting_rel.saturating_sub(1);
            }
            Inbound::PingResp => self.keepalive.pong(),
            Inbound::SubAck { pkid, codes } => self.suback(pkid, &codes, events)?,
            Inbound::Disconnect { code } => return Err(DownReason::ServerDisconnect { code }),
            Inbound::ConnAck(_) => {
                return Err(DownReason::Protocol(
                    "second CONNACK on one connection".into(),
                ))
            }
            // Answers to publishes: the consumer sends none (the publisher has its own
            // connection).
            Inbound::PubResp { .. } | Inbound::Ignored => {}
            Inbound::Publish(_) => unreachable!("PUBLISH is dispatched, not handled here"),
        }
        Ok(())
    }

    /// Report each filter of the SUBSCRIBE `pkid` answers. A SUBACK for no outstanding
    /// SUBSCRIBE of this connection breaks the protocol (MQTT-3.8.4-2): ignoring it
    /// would leave the real SUBSCRIBE unanswered and its filters never reported.
    fn suback(&mut self, pkid: u16, codes: &[SubCode], events: &Emitter) -> Result<(), DownReason> {
        let Some(at) = self.pending_sub.iter().position(|(p, _)| *p == pkid) else {
            return Err(DownReason::Protocol(format!(
                "SUBACK for packet id {pkid}, which no outstanding SUBSCRIBE has"
            )));
        };
        let (_, filters) = self.pending_sub.remove(at);
        for (i, (filter, requested)) in filters.iter().enumerate() {
            match codes.get(i) {
                Some(SubCode::Granted(granted)) => {
                    events.subscription_success(filter, *requested, *granted)
                }
                Some(SubCode::Refused { code, name }) => {
                    events.subscription_error(filter, *code, name)
                }
                None => events.subscription_error(filter, 0x80, "missing from SUBACK"),
            }
        }
        Ok(())
    }

    /// Send PINGREQs and notice a broker that stopped answering.
    #[inline]
    pub(super) fn poll_keepalive(&mut self, cx: &mut Context<'_>) -> Result<(), DownReason> {
        let rx_total = self.io.rx_total();
        self.keepalive
            .poll(cx, rx_total, self.codec, self.io.write_buf())
    }

    /// Write acks and control packets, one batch per pass. Returns whether bytes were
    /// written or a flush completed.
    #[inline]
    pub(super) fn poll_write(&mut self, cx: &mut Context<'_>) -> Result<bool, DownReason> {
        let progress = self.io.poll_write(cx)?;
        if self.io.is_flushed() {
            self.unwritten = 0;
        }
        Ok(progress)
    }

    /// Whether the broker has closed the connection while bytes it sent before are still
    /// unread (plain TCP; see [`Buffered::peer_closed`](super::io::Buffered::peer_closed)).
    #[inline]
    pub(super) fn peer_closed(&mut self, cx: &mut Context<'_>) -> bool {
        self.io.peer_closed(cx)
    }

    /// Read more from the socket (`needed`: bytes still missing from the next packet),
    /// unless read pacing holds reads back for now. Returns whether bytes arrived.
    #[inline]
    pub(super) fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        needed: usize,
        events: &Emitter,
    ) -> Result<bool, DownReason> {
        if self.pacing.poll_hold(cx) {
            return Ok(false);
        }
        self.keepalive.reading();
        let arrived = self.io.poll_read(cx, needed)?;
        if arrived {
            self.pacing.arrived();
        } else if self.pacing.is_on() {
            self.drained(cx, events);
        }
        Ok(arrived)
    }

    /// A read found the socket empty: read pacing measures, decides, and may start a
    /// hold.
    #[inline(never)]
    fn drained(&mut self, cx: &mut Context<'_>, events: &Emitter) {
        let drained = self.pacing.drained(self.received, self.io.rx_total(), cx);
        // A buffer that cannot be changed leaves holding to save wake-ups only; the
        // comparison tells whether that is worth it.
        match drained.buffer {
            Some(Buffer::Shrink) => {
                if let Ok(size) = self.io.receive_buffer() {
                    self.saved_receive_buffer = Some(size);
                    let _ = self.io.set_receive_buffer(SMALL_RECEIVE_BUFFER);
                }
            }
            Some(Buffer::Restore) => {
                // Linux reports twice what was asked for, and doubles what is asked
                // for (up to twice `net.core.rmem_max`).
                if let Some(size) = self.saved_receive_buffer.take() {
                    let asked = if cfg!(target_os = "linux") {
                        size / 2
                    } else {
                        size
                    };
                    let _ = self.io.set_receive_buffer(asked);
                }
            }
            None => {}
        }
        if let Some(v) = drained.verdict {
            events.read_pacing(v.holding, v.held_rate, v.direct_rate);
        }
    }
}

/// What [`write_ack`] put in the write buffer.
enum Written {
    /// Nothing: the disposition sends no ack.
    Nothing,
    /// A PUBACK, or a PUBREC that ends the exchange.
    Ack,
    /// A PUBREC whose PUBREL is now awaited.
    PubRec,
}

/// Put the acknowledgement for one released slot on the wire, as its disposition says
/// ([`Disposition::ack_reason`]).
#[inline]
fn write_ack(
    codec: Codec,
    qos: QoS,
    pkid: u16,
    disposition: Disposition,
    wbuf: &mut BytesMut,
) -> Written {
    let Some(reason) = disposition.ack_reason(qos) else {
        return Written::Nothing;
    };
    codec.encode_ack(qos, pkid, reason, wbuf);
    // A PUBREC starts the QoS 2 release unless it carries an MQTT 5 error reason, which
    // ends the exchange: the broker sends no PUBREL for it (MQTT 5, 4.3.3).
    if qos == QoS::ExactlyOnce && (reason < 0x80 || codec == Codec::V4) {
        Written::PubRec
    } else {
        Written::Ack
    }
}
