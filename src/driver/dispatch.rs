//! The service side of a connection slot: readiness, the message waiting for it, the
//! calls in progress, and what each finished call means for its connection.
//!
//! Calls outlive connections: a call started on a connection that has since closed
//! finishes here too, and is reported as stale ([`Ticket::epoch`]) instead of
//! acknowledged.
//!
//! The slot's delivery counts ([`Deliveries`]) live here too, for the same reason: a
//! message withheld on one connection comes back on the next one.

use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::stream::{FuturesUnordered, StreamExt};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_service::Service;

use super::codec::{Decoded, Inbound, RawPublish};
use super::conn::Conn;
use super::deliveries::{Deliveries, Identity, Key};
use super::settings::Settings;
use crate::config::QoS;
use crate::disposition::Disposition;
use crate::error::{BoxError, DownReason, ServicePanicked};
use crate::event::{Emitter, Status};
use crate::message::{Message, Origin};

/// Why a connection's loop ended against our will.
pub(super) enum Broken {
    Down(DownReason),
    ServiceFailed(BoxError),
}

impl From<DownReason> for Broken {
    fn from(reason: DownReason) -> Self {
        Self::Down(reason)
    }
}

/// What a service call needs to report back when it finishes.
struct Ticket {
    /// The connection the message arrived on.
    epoch: u64,
    /// Slot in the ack order; `None` for QoS 0.
    seq: Option<u64>,
    qos: QoS,
    pkid: u16,
    topic: bytestring::ByteString,
    /// When the call started, for [`Event::MessageAck`](crate::Event::MessageAck)'s
    /// duration; `None` when nobody wanted it as the call started
    /// ([`Emitter::wants_message_events`]): reading the clock twice per message is a
    /// noticeable share of the cheapest path.
    started: Option<Instant>,
    /// [`Message::delivery_count`].
    delivery_count: u32,
    /// How the message is known to the slot's [`Deliveries`].
    identity: Identity,
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
        Box::pin(Self {
            fut: None,
            ticket: None,
        })
    }

    /// Put a new call's future in the (empty) slot; its ticket follows with
    /// [`Self::wait`] if it does not finish on its first poll.
    #[inline]
    fn start(self: Pin<&mut Self>, fut: F) {
        self.project().fut.set(Some(fut));
    }

    /// The call did not finish on its first poll: it goes into the set of calls that
    /// wait, with its ticket.
    #[inline]
    fn wait(self: Pin<&mut Self>, ticket: Ticket) {
        *self.project().ticket = Some(ticket);
    }
}

impl<F, T, E> Call<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    /// Poll the call's future; once it is done, drop it in place (the slot is then
    /// empty and reusable).
    #[inline]
    fn poll_call(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let mut this = self.project();
        let fut = this
            .fut
            .as_mut()
            .as_pin_mut()
            .expect("a call slot is only polled while a call runs in it");
        // A panic in the service's future fails this message, not the connection.
        let polled = panic::catch_unwind(AssertUnwindSafe(|| fut.poll(cx)));
        let result = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(result)) => result.map(|_| ()).map_err(Into::into),
            Err(payload) => Err(ServicePanicked::from_payload(&*payload).into()),
        };
        this.fut.set(None);
        Poll::Ready(result)
    }
}

impl<F, T, E> Future for Call<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = (Ticket, Result<(), BoxError>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = std::task::ready!(self.as_mut().poll_call(cx));
        let ticket = self
            .project()
            .ticket
            .take()
            .expect("a waiting call has its ticket");
        Poll::Ready((ticket, result))
    }
}

/// The service and its calls, for one connection slot.
pub(super) struct Dispatcher<S>
where
    S: Service<Message>,
{
    settings: Arc<Settings>,
    origin: Arc<Origin>,
    svc: S,
    /// `poll_ready` returned `Ready(Ok)` and the reservation is unused.
    ready: bool,
    /// A decoded PUBLISH waiting for the service to become ready. It belongs to the
    /// connection it was read from: [`Dispatcher::connection_closed`] drops it.
    stash: Option<RawPublish>,
    calls: FuturesUnordered<Pin<Box<Call<S::Future>>>>,
    /// A finished call slot kept for the next message: a call that completes on its
    /// first poll then costs no allocation and never enters `calls`.
    spare: Option<Pin<Box<Call<S::Future>>>>,
    /// Delivery counts of the messages this slot gave the service and did not
    /// acknowledge: they come back, on a later connection, with DUP set.
    deliveries: Deliveries,
}

impl<S> Dispatcher<S>
where
    S: Service<Message>,
    S::Error: Into<BoxError>,
{
    pub(super) fn new(settings: Arc<Settings>, origin: Arc<Origin>, svc: S) -> Self {
        Self {
            deliveries: Deliveries::new(settings.max_inflight),
            settings,
            origin,
            svc,
            ready: false,
            stash: None,
            calls: FuturesUnordered::new(),
            spare: None,
        }
    }

    /// Whether calls are still in progress (on any connection, closed ones included).
    pub(super) fn has_calls(&self) -> bool {
        !self.calls.is_empty()
    }

    /// The connection is gone: a PUBLISH read from it and not dispatched yet dies with
    /// it (its packet id means nothing on the next connection; the broker sends it
    /// again).
    pub(super) fn connection_closed(&mut self) {
        self.stash = None;
    }

    /// Messages held against `max_inflight`: calls in progress (also those of closed
    /// connections, which still occupy the service), decided acks waiting behind an
    /// earlier message, acks in the write buffer not flushed yet, and the stashed
    /// PUBLISH. Counting the unflushed acks means a connection never has more than
    /// `max_inflight` messages taken and not yet acknowledged on the wire, so a killed
    /// process brings back at most that many messages that were already processed (a
    /// reset connection up to twice that: after an orderly close by the peer the next
    /// write still succeeds, and one more window can be taken before a write fails).
    #[inline]
    fn held(&self, conn: &Conn) -> usize {
        self.calls.len()
            + conn.acks_waiting()
            + conn.acks_unwritten()
            + usize::from(self.stash.is_some())
    }

    /// Finish the calls that are done. Returns whether there were any.
    #[inline]
    pub(super) fn poll_finished(
        &mut self,
        conn: &mut Conn,
        events: &Emitter,
        cx: &mut Context<'_>,
    ) -> bool {
        let mut any = false;
        while let Poll::Ready(Some((ticket, result))) = self.calls.poll_next_unpin(cx) {
            any = true;
            self.finish(conn, events, &ticket, &result);
        }
        any
    }

    /// With no connection: report calls that finish as stale.
    pub(super) fn poll_stale(&mut self, events: &Emitter, cx: &mut Context<'_>) {
        while let Poll::Ready(Some((ticket, result))) = self.calls.poll_next_unpin(cx) {
            self.stale(events, &ticket, &result);
        }
    }

    /// Take new messages from a running connection while fewer than `max_inflight` are
    /// held and the service is ready; other packets are handled by the connection.
    /// Returns the bytes still needed for the next packet when the read buffer ran dry
    /// (the caller reads), `None` when intake stopped for back-pressure or because the
    /// connection started closing. Sets `progress` if anything was consumed.
    #[inline]
    pub(super) fn poll_intake(
        &mut self,
        conn: &mut Conn,
        events: &Emitter,
        cx: &mut Context<'_>,
        progress: &mut bool,
    ) -> Result<Option<usize>, Broken> {
        let max_inflight = self.settings.max_inflight;
        // The broker's FIN is already here: what it sent before is not worth processing.
        let broker_closed = conn.peer_closed(cx);
        while conn.is_running() && self.held(conn) < max_inflight {
            if self.stash.is_none() {
                match conn.decode()? {
                    Decoded::NeedMore(n) => return Ok(Some(n)),
                    Decoded::Packet(Inbound::Publish(raw))
                        if broker_closed && raw.qos != QoS::AtMostOnce =>
                    {
                        debug_assert_eq!(
                            Disposition::ARRIVED_BEFORE_BROKER_CLOSED.ack_reason(raw.qos),
                            None
                        );
                        *progress = true;
                        continue;
                    }
                    Decoded::Packet(Inbound::Publish(raw)) => self.stash = Some(raw),
                    Decoded::Packet(other) => {
                        *progress = true;
                        conn.control(other, events)?;
                        continue;
                    }
                }
            }
            if !self.ready {
                match self.svc.poll_ready(cx) {
                    Poll::Ready(Ok(())) => self.ready = true,
                    Poll::Ready(Err(e)) => return Err(Broken::ServiceFailed(e.into())),
                    Poll::Pending => break,
                }
            }
            let raw = self.stash.take().expect("stash was filled above");
            self.dispatch(conn, events, raw, cx);
            *progress = true;
        }
        Ok(None)
    }

    /// Start the service call for a PUBLISH (the service has reserved capacity).
    ///
    /// Kept out of the poll loop on purpose: in a function of its own, LLVM inlines the
    /// service's `call` chain (span, limit, timeout, retry, ...) into it and builds the
    /// returned future in place; inlined into `poll_conn`, it gave up on those and the
    /// futures were copied through each call (callgrind, full stack: 3,222 → 3,201
    /// instructions per message; identity 1,339 → 1,326).
    #[inline(never)]
    fn dispatch(
        &mut self,
        conn: &mut Conn,
        events: &Emitter,
        raw: RawPublish,
        cx: &mut Context<'_>,
    ) {
        self.ready = false;
        events.message_start(&raw.topic, raw.qos, raw.pkid, raw.dup);
        let (delivery_count, identity) = match raw.qos {
            QoS::AtMostOnce => (1, Identity::Untracked),
            _ if !raw.dup => (1, Identity::First(raw.payload.clone())),
            _ => self.redelivered(&raw),
        };
        let ticket = Ticket {
            epoch: conn.epoch(),
            seq: conn.track(raw.pkid, raw.qos),
            qos: raw.qos,
            pkid: raw.pkid,
            topic: raw.topic.clone(),
            started: events.wants_message_events().then(Instant::now),
            delivery_count,
            identity,
        };
        let message = Message {
            topic: raw.topic,
            payload: raw.payload,
            qos: raw.qos,
            retain: raw.retain,
            dup: raw.dup,
            pkid: raw.pkid,
            delivery_count,
            properties: raw.properties,
            origin: self.origin.clone(),
            extensions: http::Extensions::new(),
        };
        // A panic in `call` fails this message, not the connection.
        let svc = &mut self.svc;
        let fut = match panic::catch_unwind(AssertUnwindSafe(|| svc.call(message))) {
            Ok(fut) => fut,
            Err(payload) => {
                let error = ServicePanicked::from_payload(&*payload);
                self.finish(conn, events, &ticket, &Err(error.into()));
                return;
            }
        };
        let mut call = self.spare.take().unwrap_or_else(Call::empty);
        call.as_mut().start(fut);
        // Many calls finish at once (fast handlers, a hand-off to a channel): finish
        // those here, the ticket never leaving this frame; only calls that wait go,
        // with their ticket, into the set that is polled by wake-up.
        match call.as_mut().poll_call(cx) {
            Poll::Ready(result) => {
                self.spare = Some(call);
                self.finish(conn, events, &ticket, &result);
            }
            Poll::Pending => {
                call.as_mut().wait(ticket);
                self.calls.push(call);
            }
        }
    }

    /// A QoS 1/2 PUBLISH with DUP set: the broker sent it before. Looked up in the
    /// slot's delivery counts (out of line: the common first delivery never gets here).
    #[inline(never)]
    fn redelivered(&self, raw: &RawPublish) -> (u32, Identity) {
        let key = Key::new(raw.pkid, raw.topic.clone(), &raw.payload);
        (self.deliveries.redelivered(&key), Identity::Again(key))
    }

    /// Update the slot's delivery counts for a finished call: a message that is not
    /// acknowledged comes back with DUP set, one that is will not. A first delivery
    /// that is acknowledged, the common case, has nothing to update.
    #[inline]
    fn remember(&mut self, ticket: &Ticket, acknowledged: bool) {
        let tracked = match ticket.identity {
            Identity::Untracked => false,
            Identity::First(_) => !acknowledged,
            Identity::Again(_) => true,
        };
        if tracked {
            self.remember_tracked(ticket, acknowledged);
        }
    }

    /// [`Self::remember`] for a failure or a redelivery (out of line).
    #[inline(never)]
    fn remember_tracked(&mut self, ticket: &Ticket, acknowledged: bool) {
        match (&ticket.identity, acknowledged) {
            (Identity::Again(key), true) => self.deliveries.acknowledged(key),
            (identity, false) => {
                if let Some(key) = identity.key(ticket.pkid, &ticket.topic) {
                    self.deliveries.unacknowledged(key, ticket.delivery_count);
                }
            }
            (Identity::Untracked | Identity::First(_), true) => {}
        }
    }

    /// A call from a closed connection finished: it cannot be acknowledged any more,
    /// so its message comes back on a later connection (and counts as delivered).
    fn stale(&mut self, events: &Emitter, ticket: &Ticket, result: &Result<(), BoxError>) {
        // Nothing goes on the wire for it (there is no connection to send it on).
        debug_assert_eq!(Disposition::STALE.ack_reason(ticket.qos), None);
        events.message_stale(&ticket.topic, ticket.pkid, status(result));
        self.remember(ticket, Disposition::STALE.acknowledges());
    }

    /// A service call finished: decide its disposition; the connection it arrived on
    /// releases acks in order.
    #[inline]
    fn finish(
        &mut self,
        conn: &mut Conn,
        events: &Emitter,
        ticket: &Ticket,
        result: &Result<(), BoxError>,
    ) {
        if ticket.epoch != conn.epoch() {
            self.stale(events, ticket, result);
            return;
        }
        let disposition = self.origin.disposition(result);
        self.remember(ticket, disposition.acknowledges());
        if let Err(e) = result {
            tracing::debug!(target: "tower_mqtt::receive_message", topic = %ticket.topic,
                pkid = ticket.pkid, error = %e, "service failed");
        }
        events.message_ack(
            &ticket.topic,
            ticket.qos,
            ticket.pkid,
            status(result),
            disposition,
            ticket.started.map(|started| started.elapsed()),
        );
        conn.settle(ticket.seq, disposition);
    }
}

fn status(result: &Result<(), BoxError>) -> Status {
    if result.is_ok() {
        Status::Success
    } else {
        Status::Failure
    }
}
