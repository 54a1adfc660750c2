//! The per-connection driver: one task per broker connection.
//!
//! # Why the driver owns the socket
//!
//! rumqttc's `EventLoop` is built for a client that publishes, and several of its
//! behaviours are wrong for an at-least-once consumer (see the project's reference
//! notes): acks travel through a bounded request channel that can deadlock the polling
//! task; an ack queued before a reconnect is sent on the next connection, where the same
//! packet id may name another message; a PUBREL resent after a session resume is
//! treated as fatal; polling must stop to stop reading, which also stops keepalive; and
//! the MQTT 5 network layer is private. So the driver uses rumqttc for what it does well
//! — the MQTT 3.1.1 and MQTT 5 packet codecs (`mqttbytes`) — and runs its own loop:
//!
//! * acks are written straight into the write buffer of the connection the message
//!   arrived on, so a stale ack cannot exist: the buffer and the ack queue die with it;
//! * acks leave in arrival order ([`order::AckOrder`]) and are flushed in batches;
//! * reading stops when `max_inflight` messages are held, while acks and PINGREQs keep
//!   going out;
//! * every PUBREL gets its PUBCOMP, even after a resume (rumqttc #664);
//! * service futures are polled on the connection's own task: no spawn, no channel hop.

mod codec;
mod order;
mod settings;

pub(crate) use codec::Codec;
pub(crate) use settings::Settings;

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_util::stream::{FuturesUnordered, StreamExt};
use pin_project_lite::pin_project;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{sleep, Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tower_service::Service;

use crate::config::QoS;
use crate::disposition::Disposition;
use crate::error::DownReason;
use crate::error::{BoxError, RunError};
use crate::event::{Emitter, Status};
use crate::message::{Message, Origin};
use crate::transport::{down_reason, Io};
use codec::{Decoded, Inbound, RawPublish, SubCode};
use order::AckOrder;

/// Bytes requested from the socket per read when the buffer runs low.
const READ_CHUNK: usize = 64 * 1024;

/// What a service call needs to report back when it finishes.
struct Ticket {
    epoch: u64,
    /// Slot in the ack order; `None` for QoS 0.
    seq: Option<u64>,
    qos: QoS,
    pkid: u16,
    topic: bytestring::ByteString,
    started: Instant,
}

pin_project! {
    /// A service call tagged with its ticket. The slot is reusable: once the call has
    /// finished its future is dropped in place and a new call can start in the same
    /// (pinned, boxed) memory.
    struct Call<F> {
        #[pin]
        fut: Option<F>,
        ticket: Option<Ticket>,
    }
}

impl<F> Call<F> {
    fn empty() -> Pin<Box<Self>> {
        Box::pin(Call {
            fut: None,
            ticket: None,
        })
    }

    fn start(self: Pin<&mut Self>, fut: F, ticket: Ticket) {
        let mut this = self.project();
        this.fut.set(Some(fut));
        *this.ticket = Some(ticket);
    }
}

impl<F, T, E> Future for Call<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = (Ticket, Result<(), BoxError>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let fut = this
            .fut
            .as_mut()
            .as_pin_mut()
            .expect("a call slot is only polled while a call runs in it");
        let result = ready!(fut.poll(cx));
        this.fut.set(None);
        let ticket = this.ticket.take().expect("a running call has its ticket");
        Poll::Ready((ticket, result.map(|_| ()).map_err(Into::into)))
    }
}

/// Why a connection's loop ended on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// Shutdown was requested; the connection was drained and closed.
    Shutdown,
    /// Failures are waiting: the session is resumed so the broker redelivers them.
    Redeliver { failures: usize },
}

/// Why a connection's loop ended against our will.
enum Broken {
    Down(DownReason),
    ServiceFailed(BoxError),
}

impl From<DownReason> for Broken {
    fn from(reason: DownReason) -> Self {
        Broken::Down(reason)
    }
}

enum Mode {
    Running,
    /// Taking no new messages; waiting for this connection's calls, then DISCONNECT.
    Closing {
        exit: Exit,
        deadline: Pin<Box<Sleep>>,
        timed_out: bool,
        disconnect_written: bool,
        /// DISCONNECT is flushed and our side half-closed; waiting for the broker to
        /// close its side, so that it has read every ack before the socket goes away
        /// (closing with unread data would send a RST, which can discard them).
        linger: Option<Pin<Box<Sleep>>>,
    },
}

/// How long to wait for the broker to close after our DISCONNECT.
const LINGER: Duration = Duration::from_secs(2);

enum Keepalive {
    Off,
    /// The timer fires when the next PINGREQ is due.
    Idle {
        timer: Pin<Box<Sleep>>,
        every: Duration,
    },
    /// A PINGREQ is out; the timer fires at its deadline.
    AwaitPong {
        timer: Pin<Box<Sleep>>,
        every: Duration,
        sent_at: Instant,
        rx_at_ping: u64,
        read_tried: bool,
    },
}

/// One live connection.
struct Conn {
    io: Box<dyn Io>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    needs_flush: bool,
    rx_total: u64,
    epoch: u64,
    order: AckOrder,
    /// A decoded PUBLISH waiting for the service to become ready.
    stash: Option<RawPublish>,
    /// Service calls started on this connection and not finished.
    calls: usize,
    /// Failures withheld for redelivery on this connection.
    withheld: usize,
    /// PUBRECs sent whose PUBREL has not arrived yet (QoS 2 handshakes in progress).
    awaiting_rel: usize,
    redeliver_timer: Option<Pin<Box<Sleep>>>,
    keepalive: Keepalive,
    mode: Mode,
    next_pkid: u16,
    /// Outstanding SUBSCRIBE packet id and its filters.
    pending_sub: Option<(u16, Vec<(String, QoS)>)>,
}

impl Conn {
    fn new(io: Box<dyn Io>, rbuf: BytesMut, epoch: u64, keepalive: Duration) -> Self {
        let keepalive = if keepalive.is_zero() {
            Keepalive::Off
        } else {
            Keepalive::Idle {
                timer: Box::pin(sleep(keepalive)),
                every: keepalive,
            }
        };
        Conn {
            io,
            rbuf,
            wbuf: BytesMut::with_capacity(4096),
            needs_flush: false,
            rx_total: 0,
            epoch,
            order: AckOrder::default(),
            stash: None,
            calls: 0,
            withheld: 0,
            awaiting_rel: 0,
            redeliver_timer: None,
            keepalive,
            mode: Mode::Running,
            next_pkid: 1,
            pending_sub: None,
        }
    }

    fn running(&self) -> bool {
        matches!(self.mode, Mode::Running)
    }

    fn begin_closing(&mut self, exit: Exit, drain_timeout: Duration) {
        if self.running() {
            self.mode = Mode::Closing {
                exit,
                deadline: Box::pin(sleep(drain_timeout)),
                timed_out: false,
                disconnect_written: false,
                linger: None,
            };
        }
    }
}

/// Drives one connection slot (`<client_id>_<index>`) until shutdown.
pub(crate) struct Driver<S>
where
    S: Service<Message>,
{
    settings: Arc<Settings>,
    origin: Arc<Origin>,
    events: Emitter,
    svc: S,
    /// `poll_ready` returned `Ready(Ok)` and the reservation is unused.
    ready: bool,
    calls: FuturesUnordered<Pin<Box<Call<S::Future>>>>,
    /// A finished call slot kept for the next message: a call that completes on its
    /// first poll then costs no allocation and never enters `calls`.
    spare: Option<Pin<Box<Call<S::Future>>>>,
    epoch: u64,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    stopping: bool,
    /// Whether the first connection of this run has subscribed.
    subscribed_once: bool,
}

impl<S> Driver<S>
where
    S: Service<Message> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    pub(crate) fn new(
        settings: Arc<Settings>,
        origin: Arc<Origin>,
        svc: S,
        shutdown: CancellationToken,
    ) -> Self {
        let events = Emitter {
            producer_index: origin.producer_index,
            client_id: origin.client_id.as_str().into(),
            hook: settings.hook.clone(),
        };
        Driver {
            settings,
            origin,
            events,
            svc,
            ready: false,
            calls: FuturesUnordered::new(),
            spare: None,
            epoch: 0,
            shutdown: Box::pin(shutdown.cancelled_owned()),
            stopping: false,
            subscribed_once: false,
        }
    }

    /// Connect, consume, reconnect, until shutdown or a fatal error.
    pub(crate) async fn run(mut self) -> Result<(), RunError> {
        self.events.producer_init();
        let result = self.run_inner().await;
        // Calls from connections already closed cannot be acknowledged any more, but
        // they may have side effects: give them the drain timeout to finish.
        if !self.calls.is_empty() {
            let drain = sleep(self.settings.drain_timeout);
            let _ = self.while_disconnected(drain, false).await;
        }
        let reason = match &result {
            Ok(()) => "shutdown".to_owned(),
            Err(e) => e.to_string(),
        };
        self.events.producer_terminate(&reason);
        result
    }

    async fn run_inner(&mut self) -> Result<(), RunError> {
        let mut failures: u32 = 0;
        loop {
            let open = open(self.settings.clone(), self.origin.clone());
            let Some(opened) = self.while_disconnected(open, true).await else {
                return Ok(());
            };
            let reason = match opened {
                Ok((io, rbuf, connack)) => {
                    failures = 0;
                    match self.consume(io, rbuf, connack).await {
                        Ok(Exit::Shutdown) => return Ok(()),
                        Ok(Exit::Redeliver { failures }) => {
                            self.events
                                .connection_down(&DownReason::Redelivery { failures });
                            continue;
                        }
                        Err(Broken::ServiceFailed(source)) => {
                            return Err(RunError::ServiceNotReady {
                                producer_index: self.origin.producer_index,
                                source,
                            })
                        }
                        Err(Broken::Down(reason)) => reason,
                    }
                }
                Err(reason) => reason,
            };
            self.events.connection_down(&reason);
            failures += 1;
            if let Some(limit) = self.settings.max_reconnect_attempts {
                if failures > limit {
                    return Err(RunError::ReconnectLimit {
                        producer_index: self.origin.producer_index,
                        attempts: failures,
                        last: reason,
                    });
                }
            }
            let delay = self.settings.backoff.delay(failures);
            if self.while_disconnected(sleep(delay), true).await.is_none() {
                return Ok(());
            }
        }
    }

    /// Run `fut` while finishing calls from closed connections. Returns `None` if
    /// `watch_shutdown` and shutdown was requested first.
    async fn while_disconnected<F: Future>(
        &mut self,
        fut: F,
        watch_shutdown: bool,
    ) -> Option<F::Output> {
        let mut fut = std::pin::pin!(fut);
        poll_fn(|cx| {
            if watch_shutdown && self.poll_shutdown(cx) {
                return Poll::Ready(None);
            }
            while let Poll::Ready(Some((ticket, result))) = self.calls.poll_next_unpin(cx) {
                self.report_stale(&ticket, &result);
            }
            fut.as_mut().poll(cx).map(Some)
        })
        .await
    }

    /// Whether shutdown has been requested (registers for the wake-up if not).
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.stopping && self.shutdown.as_mut().poll(cx).is_ready() {
            self.stopping = true;
        }
        self.stopping
    }

    fn report_stale(&self, ticket: &Ticket, result: &Result<(), BoxError>) {
        self.events
            .message_stale(&ticket.topic, ticket.pkid, status(result));
    }

    /// Consume on a fresh connection until it ends.
    async fn consume(
        &mut self,
        io: Box<dyn Io>,
        rbuf: BytesMut,
        connack: codec::ConnAckInfo,
    ) -> Result<Exit, Broken> {
        self.epoch += 1;
        let keepalive = match connack.server_keepalive {
            Some(secs) => Duration::from_secs(secs.into()),
            None => self.settings.config.keepalive,
        };
        let mut conn = Conn::new(io, rbuf, self.epoch, keepalive);
        self.events.connection_up(connack.session_present);
        // rumqttc never re-subscribes; we do whenever the broker has no session for us,
        // and once per run in any case, in case the topic list changed since the session
        // was created.
        if !connack.session_present || !self.subscribed_once {
            self.subscribed_once = true;
            let pkid = conn.next_pkid;
            conn.next_pkid += 1;
            self.settings.codec.encode_subscribe(
                pkid,
                &self.settings.subscriptions,
                &mut conn.wbuf,
            );
            conn.pending_sub = Some((pkid, self.settings.subscriptions.clone()));
        }
        poll_fn(|cx| self.poll_conn(&mut conn, cx)).await
    }

    fn held(&self, conn: &Conn) -> usize {
        self.calls.len() + conn.order.waiting() + usize::from(conn.stash.is_some())
    }

    fn poll_conn(&mut self, conn: &mut Conn, cx: &mut Context<'_>) -> Poll<Result<Exit, Broken>> {
        let max_inflight = self.settings.max_inflight;
        loop {
            let mut progress = false;

            if conn.running() && self.poll_shutdown(cx) {
                conn.begin_closing(Exit::Shutdown, self.settings.drain_timeout);
            }

            // 1. Finished calls: decide, release acks in arrival order.
            while let Poll::Ready(Some((ticket, result))) = self.calls.poll_next_unpin(cx) {
                progress = true;
                self.finish(conn, ticket, result);
            }

            // 2. Redelivery: failures have waited long enough (a full window starts
            //    closing as soon as the failure is decided, in `finish`).
            if conn.running() && conn.withheld > 0 {
                let timer_fired = conn
                    .redeliver_timer
                    .as_mut()
                    .is_some_and(|t| t.as_mut().poll(cx).is_ready());
                if timer_fired {
                    let failures = conn.withheld;
                    conn.begin_closing(Exit::Redeliver { failures }, self.settings.drain_timeout);
                }
            }

            // 3. Closing: once this connection's calls are decided (or the drain timeout
            //    passed), release what is left and say DISCONNECT.
            if let Mode::Closing {
                exit,
                deadline,
                timed_out,
                disconnect_written,
                linger,
            } = &mut conn.mode
            {
                if !*timed_out && deadline.as_mut().poll(cx).is_ready() {
                    *timed_out = true;
                    // Abandoned calls are not acknowledged: the broker sends them again.
                    conn.order.abandon(Disposition::ABANDONED);
                    release_acks(
                        self.settings.codec,
                        &mut conn.order,
                        &mut conn.wbuf,
                        &mut conn.awaiting_rel,
                    );
                }
                let drained = *timed_out
                    || (conn.calls == 0 && conn.order.is_empty() && conn.awaiting_rel == 0);
                if drained && !*disconnect_written {
                    *disconnect_written = true;
                    self.settings.codec.encode_disconnect(&mut conn.wbuf);
                }
                if *disconnect_written && conn.wbuf.is_empty() && !conn.needs_flush {
                    let exit = *exit;
                    if linger.is_none() {
                        *linger = Some(Box::pin(sleep(LINGER)));
                    }
                    // From here on errors no longer matter: every ack is written.
                    let closed = match Pin::new(&mut conn.io).poll_shutdown(cx) {
                        Poll::Ready(Ok(())) => discard_until_eof(&mut conn.io, &mut conn.rbuf, cx),
                        Poll::Ready(Err(_)) => true,
                        Poll::Pending => false,
                    };
                    let gave_up = linger
                        .as_mut()
                        .is_some_and(|t| t.as_mut().poll(cx).is_ready());
                    if closed || gave_up {
                        return Poll::Ready(Ok(exit));
                    }
                    return Poll::Pending;
                }
            }

            // 4. New messages, while fewer than max_inflight are held.
            // (`want_read`: bytes still needed for the next packet, when it is incomplete.)
            let mut want_read: Option<usize> = None;
            if !conn.running() && !closing_done(&conn.mode) {
                // Closing: keep answering PUBREL and PINGRESP so QoS 2 handshakes finish
                // before DISCONNECT. A PUBLISH that arrives now is not processed and not
                // acknowledged: the broker sends it again on the next session.
                loop {
                    match self.decode_next(conn)? {
                        Decoded::NeedMore(n) => {
                            want_read = Some(n);
                            break;
                        }
                        Decoded::Packet(Inbound::Publish(_)) => progress = true,
                        Decoded::Packet(other) => {
                            progress = true;
                            self.control(conn, other)?;
                        }
                    }
                }
            }
            if conn.running() {
                while conn.running() && self.held(conn) < max_inflight {
                    if conn.stash.is_none() {
                        match self.decode_next(conn)? {
                            Decoded::NeedMore(n) => {
                                want_read = Some(n);
                                break;
                            }
                            Decoded::Packet(Inbound::Publish(raw)) => conn.stash = Some(raw),
                            Decoded::Packet(other) => {
                                progress = true;
                                self.control(conn, other)?;
                                continue;
                            }
                        }
                    }
                    if !self.ready {
                        match self.svc.poll_ready(cx) {
                            Poll::Ready(Ok(())) => self.ready = true,
                            Poll::Ready(Err(e)) => {
                                return Poll::Ready(Err(Broken::ServiceFailed(e.into())))
                            }
                            Poll::Pending => break,
                        }
                    }
                    let raw = conn.stash.take().expect("stash was filled above");
                    self.dispatch(conn, raw, cx);
                    progress = true;
                }
            }

            // 5. Keepalive.
            if let Some(broken) = self.poll_keepalive(conn, cx) {
                return Poll::Ready(Err(broken.into()));
            }

            // 6. Write acks and control packets, one batch per pass.
            while !conn.wbuf.is_empty() {
                match Pin::new(&mut conn.io).poll_write(cx, &conn.wbuf) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(DownReason::Closed.into())),
                    Poll::Ready(Ok(n)) => {
                        conn.wbuf.advance(n);
                        conn.needs_flush = true;
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(down_reason(e).into())),
                    Poll::Pending => break,
                }
            }
            if conn.wbuf.is_empty() && conn.needs_flush {
                match Pin::new(&mut conn.io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => conn.needs_flush = false,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(down_reason(e).into())),
                    Poll::Pending => {}
                }
            }

            // 7. Read more only when no complete packet is buffered and there is room.
            if let Some(needed) = want_read {
                if let Keepalive::AwaitPong { read_tried, .. } = &mut conn.keepalive {
                    *read_tried = true;
                }
                let spare = conn.rbuf.capacity() - conn.rbuf.len();
                if spare < needed.max(4096) {
                    conn.rbuf.reserve(needed.max(READ_CHUNK));
                }
                match tokio_util::io::poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.rbuf) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(DownReason::Closed.into())),
                    Poll::Ready(Ok(n)) => {
                        conn.rx_total += n as u64;
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(down_reason(e).into())),
                    Poll::Pending => {}
                }
            }

            if !progress {
                return Poll::Pending;
            }
        }
    }

    /// Decode the next packet from the connection's read buffer.
    fn decode_next(&self, conn: &mut Conn) -> Result<Decoded, DownReason> {
        let max = self.settings.config.max_packet_size;
        self.settings.codec.decode(&mut conn.rbuf, max)
    }

    /// Start the service call for a PUBLISH (the service has reserved capacity).
    fn dispatch(&mut self, conn: &mut Conn, raw: RawPublish, cx: &mut Context<'_>) {
        self.ready = false;
        self.events
            .message_start(&raw.topic, raw.qos, raw.pkid, raw.dup);
        let seq = match raw.qos {
            QoS::AtMostOnce => None,
            qos => Some(conn.order.push(raw.pkid, qos)),
        };
        let ticket = Ticket {
            epoch: conn.epoch,
            seq,
            qos: raw.qos,
            pkid: raw.pkid,
            topic: raw.topic.clone(),
            started: Instant::now(),
        };
        let message = Message {
            topic: raw.topic,
            payload: raw.payload,
            qos: raw.qos,
            retain: raw.retain,
            dup: raw.dup,
            pkid: raw.pkid,
            properties: raw.properties,
            origin: self.origin.clone(),
            extensions: http::Extensions::new(),
        };
        conn.calls += 1;
        let mut call = self.spare.take().unwrap_or_else(Call::empty);
        call.as_mut().start(self.svc.call(message), ticket);
        // Many calls finish at once (fast handlers, a hand-off to a channel): finish
        // those here; only calls that wait go into the set that is polled by wake-up.
        match call.as_mut().poll(cx) {
            Poll::Ready((ticket, result)) => {
                self.spare = Some(call);
                self.finish(conn, ticket, result);
            }
            Poll::Pending => self.calls.push(call),
        }
    }

    /// A service call finished: decide its disposition and release acks in order.
    fn finish(&mut self, conn: &mut Conn, ticket: Ticket, result: Result<(), BoxError>) {
        if ticket.epoch != conn.epoch {
            self.report_stale(&ticket, &result);
            return;
        }
        conn.calls -= 1;
        let disposition = self.origin.disposition(&result);
        if let Err(e) = &result {
            tracing::debug!(target: "tower_mqtt::receive_message", topic = %ticket.topic,
                pkid = ticket.pkid, error = %e, "service failed");
        }
        self.events.message_ack(
            &ticket.topic,
            ticket.qos,
            ticket.pkid,
            status(&result),
            disposition,
            ticket.started.elapsed(),
        );
        let Some(seq) = ticket.seq else {
            return; // QoS 0: nothing to acknowledge or redeliver.
        };
        if disposition == Disposition::Redeliver {
            conn.withheld += 1;
            if conn.redeliver_timer.is_none() {
                conn.redeliver_timer = Some(Box::pin(sleep(self.settings.redeliver_after)));
            }
            // Failures would fill the window: take no new message from here on (this
            // may run inside the dispatch loop, for a call that failed at once).
            if conn.withheld >= self.settings.max_inflight {
                let failures = conn.withheld;
                conn.begin_closing(Exit::Redeliver { failures }, self.settings.drain_timeout);
            }
        }
        conn.order.decide(seq, disposition);
        release_acks(
            self.settings.codec,
            &mut conn.order,
            &mut conn.wbuf,
            &mut conn.awaiting_rel,
        );
    }

    /// Handle a packet other than PUBLISH.
    fn control(&mut self, conn: &mut Conn, packet: Inbound) -> Result<(), DownReason> {
        match packet {
            Inbound::PubRel(pkid) => {
                // Always complete: after a session resume the broker resends PUBREL for
                // a PUBREC sent on an earlier connection, which we no longer remember.
                self.settings.codec.encode_pubcomp(pkid, &mut conn.wbuf);
                conn.awaiting_rel = conn.awaiting_rel.saturating_sub(1);
            }
            Inbound::PingResp => {
                if let Keepalive::AwaitPong { sent_at, every, .. } = conn.keepalive {
                    conn.keepalive = Keepalive::Idle {
                        timer: Box::pin(tokio::time::sleep_until(sent_at + every)),
                        every,
                    };
                }
            }
            Inbound::SubAck { pkid, codes } => self.suback(conn, pkid, codes),
            Inbound::Disconnect { code } => return Err(DownReason::ServerDisconnect { code }),
            Inbound::ConnAck(_) => {
                return Err(DownReason::Protocol(
                    "second CONNACK on one connection".into(),
                ))
            }
            Inbound::Ignored => {}
            Inbound::Publish(_) => unreachable!("PUBLISH is dispatched, not handled here"),
        }
        Ok(())
    }

    fn suback(&mut self, conn: &mut Conn, pkid: u16, codes: Vec<SubCode>) {
        let Some((expected, filters)) = conn.pending_sub.take() else {
            return;
        };
        if expected != pkid {
            conn.pending_sub = Some((expected, filters));
            return;
        }
        for (i, (filter, requested)) in filters.iter().enumerate() {
            match codes.get(i) {
                Some(SubCode::Granted(granted)) => self
                    .events
                    .subscription_success(filter, *requested, *granted),
                Some(SubCode::Refused { code, name }) => {
                    self.events.subscription_error(filter, *code, name)
                }
                None => self
                    .events
                    .subscription_error(filter, 0x80, "missing from SUBACK"),
            }
        }
    }

    /// Send PINGREQs and notice a broker that stopped answering.
    fn poll_keepalive(&mut self, conn: &mut Conn, cx: &mut Context<'_>) -> Option<DownReason> {
        loop {
            match &mut conn.keepalive {
                Keepalive::Off => return None,
                Keepalive::Idle { timer, every } => {
                    if timer.as_mut().poll(cx).is_pending() {
                        return None;
                    }
                    let every = *every;
                    self.settings.codec.encode_ping(&mut conn.wbuf);
                    let now = Instant::now();
                    conn.keepalive = Keepalive::AwaitPong {
                        timer: Box::pin(tokio::time::sleep_until(now + every / 2)),
                        every,
                        sent_at: now,
                        rx_at_ping: conn.rx_total,
                        read_tried: false,
                    };
                }
                Keepalive::AwaitPong {
                    timer,
                    every,
                    sent_at,
                    rx_at_ping,
                    read_tried,
                } => {
                    if timer.as_mut().poll(cx).is_pending() {
                        return None;
                    }
                    let every = *every;
                    if conn.rx_total > *rx_at_ping {
                        // Bytes arrived since the ping: the broker is alive, the PINGRESP is
                        // just queued behind messages we have not decoded yet.
                        let next = *sent_at + every;
                        conn.keepalive = Keepalive::Idle {
                            timer: Box::pin(tokio::time::sleep_until(next)),
                            every,
                        };
                    } else if *read_tried {
                        return Some(DownReason::KeepaliveTimeout);
                    } else {
                        // We were not reading (all slots busy), so silence proves nothing.
                        // Ping again to keep the broker's keepalive satisfied.
                        self.settings.codec.encode_ping(&mut conn.wbuf);
                        let now = Instant::now();
                        conn.keepalive = Keepalive::AwaitPong {
                            timer: Box::pin(tokio::time::sleep_until(now + every / 2)),
                            every,
                            sent_at: now,
                            rx_at_ping: conn.rx_total,
                            read_tried: false,
                        };
                    }
                }
            }
        }
    }
}

/// Read and drop whatever arrives until the broker closes; true once it has (or the
/// connection failed).
fn discard_until_eof(io: &mut Box<dyn Io>, buf: &mut BytesMut, cx: &mut Context<'_>) -> bool {
    loop {
        buf.clear();
        if buf.capacity() < 4096 {
            buf.reserve(READ_CHUNK);
        }
        match tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, buf) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return true,
            Poll::Ready(Ok(_)) => continue,
            Poll::Pending => return false,
        }
    }
}

fn status(result: &Result<(), BoxError>) -> Status {
    if result.is_ok() {
        Status::Success
    } else {
        Status::Failure
    }
}

/// Put the acknowledgement for one released slot on the wire (if it gets one).
fn write_ack(
    codec: Codec,
    qos: QoS,
    pkid: u16,
    disposition: Disposition,
    wbuf: &mut BytesMut,
) -> bool {
    let Some(reason) = disposition.ack_reason(qos) else {
        return false;
    };
    codec.encode_ack(qos, pkid, reason, wbuf);
    // A PUBREC starts the QoS 2 release unless it carries an MQTT 5 error reason, which
    // ends the exchange: the broker sends no PUBREL for it (MQTT 5, 4.3.3).
    qos == QoS::ExactlyOnce && (reason < 0x80 || codec == Codec::V4)
}

/// Release the decided prefix of the ack order onto the write buffer.
fn release_acks(codec: Codec, order: &mut AckOrder, wbuf: &mut BytesMut, awaiting_rel: &mut usize) {
    order.release(|pkid, qos, d| {
        if write_ack(codec, qos, pkid, d, wbuf) {
            *awaiting_rel += 1;
        }
    });
}

/// Whether a closing connection has finished and only waits for the broker to close.
fn closing_done(mode: &Mode) -> bool {
    matches!(
        mode,
        Mode::Closing {
            disconnect_written: true,
            ..
        }
    )
}

/// Open the transport (TCP, TLS, websocket), send CONNECT, wait for a successful CONNACK.
async fn open(
    settings: Arc<Settings>,
    origin: Arc<Origin>,
) -> Result<(Box<dyn Io>, BytesMut, codec::ConnAckInfo), DownReason> {
    let config = &settings.config;
    let attempt = async {
        let mut io = crate::transport::connect(config).await?;

        let mut wbuf = BytesMut::with_capacity(256);
        settings
            .codec
            .encode_connect(&settings.connect_params(&origin), &mut wbuf);
        io.write_all_buf(&mut wbuf).await.map_err(down_reason)?;
        io.flush().await.map_err(down_reason)?;

        let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
        loop {
            match settings.codec.decode(&mut rbuf, config.max_packet_size)? {
                Decoded::Packet(Inbound::ConnAck(info)) => {
                    if let Some(reason) = info.refused {
                        return Err(reason);
                    }
                    return Ok((io, rbuf, info));
                }
                Decoded::Packet(Inbound::Disconnect { code }) => {
                    return Err(DownReason::ServerDisconnect { code })
                }
                Decoded::Packet(other) => {
                    return Err(DownReason::Protocol(format!(
                        "expected CONNACK, got {other:?}"
                    )))
                }
                Decoded::NeedMore(_) => {
                    if io.read_buf(&mut rbuf).await.map_err(down_reason)? == 0 {
                        return Err(DownReason::Closed);
                    }
                }
            }
        }
    };
    tokio::time::timeout(config.connect_timeout, attempt)
        .await
        .unwrap_or(Err(DownReason::Timeout))
}

/// Exponential backoff with jitter between reconnect attempts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    pub(crate) min: Duration,
    pub(crate) max: Duration,
}

impl Backoff {
    /// Delay before attempt `failures + 1`: `min * 2^(failures-1)`, capped at `max`, then
    /// a random point in its upper half so that many consumers do not reconnect in step.
    pub(crate) fn delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(20);
        let full = self.min.saturating_mul(1 << exp).min(self.max);
        let half = full / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_is_capped() {
        let b = Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(5),
        };
        for _ in 0..100 {
            let d1 = b.delay(1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d4 = b.delay(4);
            assert!(d4 >= Duration::from_millis(400) && d4 <= Duration::from_millis(800));
            let d30 = b.delay(30);
            assert!(d30 >= Duration::from_millis(2500) && d30 <= Duration::from_secs(5));
        }
    }
}
