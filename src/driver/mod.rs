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
//! * acks leave in arrival order ([`order::AckOrder`]), in batches written at the start
//!   of every pass, before anything new is dispatched; until flushed they count against
//!   `max_inflight`, which bounds what one fault can bring back already processed;
//! * reading stops when `max_inflight` messages are held, while acks and PINGREQs keep
//!   going out;
//! * every PUBREL gets its PUBCOMP, even after a resume (rumqttc #664);
//! * service futures are polled on the connection's own task: no spawn, no channel hop.
//!
//! # Layout
//!
//! Split by concern, the way hyper splits an HTTP/1 connection (`proto/h1/{io, conn,
//! dispatch, role}`):
//!
//! * this module: one connection slot's life, [`Driver::run`]: connect, consume, back
//!   off, repeat; and the poll loop of a live connection, which only calls into:
//! * [`handshake`]: the transport, CONNECT and CONNACK;
//! * [`io`]: the buffered socket (read and write buffers, flushing, half-close and
//!   linger);
//! * [`conn`]: the session state of one live connection: packet ids, SUBACK, PUBREL and
//!   PINGRESP, the ack order ([`order`]), withheld failures, and the closing phases;
//! * [`keepalive`]: PINGREQ timing;
//! * [`dispatch`]: the service side: readiness, the calls in progress, and what a
//!   finished call means for its connection; with [`deliveries`], the slot's delivery
//!   counts, which outlive connections;
//! * [`codec`]: the wire, through rumqttc's `mqttbytes` (hyper's `role`); and
//!   [`settings`].

pub(crate) mod codec;
mod conn;
mod deliveries;
mod dispatch;
mod failover;
pub(crate) mod handshake;
pub(crate) mod io;
pub(crate) mod keepalive;
mod order;
mod pacing;
mod settings;

pub(crate) use failover::Failover;
pub(crate) use settings::{ReconnectBackoff, Settings};

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tower::retry::backoff::{Backoff, ExponentialBackoffMaker, MakeBackoff};
use tower_service::Service;

use crate::config::Config;
use crate::error::{BoxError, DownReason, RunError};
use crate::event::Emitter;
use crate::message::{Message, Origin};
use codec::ConnAckInfo;
use conn::{Conn, Exit};
use dispatch::{Broken, Dispatcher};
use io::Buffered;

/// End the session of `client_id` on the broker: connect with a clean start (no
/// session expiry), then DISCONNECT, so the broker discards the session and anything
/// it still held. Used once a retired slot has drained its session. Tries each endpoint
/// of a failover list in turn until one answers.
pub(crate) async fn forget_session(settings: &Settings, client_id: &str) -> Result<(), DownReason> {
    let mut last = DownReason::Closed;
    for endpoint in settings.config.endpoints() {
        match forget_at(&settings.config.at(&endpoint), settings, client_id).await {
            Ok(()) => return Ok(()),
            Err(reason) => last = reason,
        }
    }
    Err(last)
}

async fn forget_at(
    config: &Config,
    settings: &Settings,
    client_id: &str,
) -> Result<(), DownReason> {
    let codec = settings.codec();
    let params = codec::ConnectParams {
        client_id,
        keepalive_secs: config.keepalive.as_secs() as u16,
        clean_start: true,
        username: config.username.as_deref(),
        password: config.password.as_ref().map(|p| p.0.as_str()),
        session_expiry: None,
        receive_maximum: None,
        max_packet_size: None,
        will: None,
        bridge_mode: config.bridge_mode,
        properties: None,
    };
    let (mut io, _) = handshake::connect(config, codec, &params).await?;
    codec.encode_disconnect(io.write_buf());
    let flushed = poll_fn(|cx| match io.poll_write(cx) {
        Err(e) => Poll::Ready(Err(e)),
        Ok(_) if io.is_flushed() => Poll::Ready(Ok(())),
        Ok(_) => Poll::Pending,
    });
    tokio::time::timeout(config.connect_timeout, flushed)
        .await
        .unwrap_or(Err(DownReason::Timeout))?;
    let linger = poll_fn(|cx| {
        if io.poll_linger(cx) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    });
    let _ = tokio::time::timeout(config.connect_timeout, linger).await;
    Ok(())
}

/// Drives one connection slot (`<client_id>_<index>`) until shutdown.
pub(crate) struct Driver<S>
where
    S: Service<Message>,
{
    settings: Arc<Settings>,
    origin: Arc<Origin>,
    events: Emitter,
    dispatch: Dispatcher<S>,
    /// Makes this slot's reconnect backoff; a new one after every successful connection.
    backoff: ExponentialBackoffMaker,
    /// Which endpoint of the failover list the next attempt goes to.
    failover: Failover,
    /// Connections opened so far; the current one's number.
    epoch: u64,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    stopping: bool,
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
        Self {
            backoff: settings.backoff.maker(),
            failover: Failover::new(&settings.config),
            dispatch: Dispatcher::new(settings.clone(), origin.clone(), svc),
            settings,
            origin,
            events,
            epoch: 0,
            shutdown: Box::pin(shutdown.cancelled_owned()),
            stopping: false,
        }
    }

    /// Connect, consume, reconnect, until shutdown or a fatal error.
    pub(crate) async fn run(mut self) -> Result<(), RunError> {
        self.events.producer_init();
        let result = self.run_inner().await;
        // Calls from connections already closed cannot be acknowledged any more, but
        // they may have side effects: give them the drain timeout to finish.
        if self.dispatch.has_calls() {
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
        let mut backoff = self.backoff.make_backoff();
        loop {
            let open = handshake::open(
                self.failover.current_config(),
                self.settings.clone(),
                self.origin.clone(),
            );
            let Some(opened) = self.while_disconnected(open, true).await else {
                return Ok(());
            };
            let reason = match opened {
                Ok((io, connack)) => {
                    // Connected: the next failure starts the backoff over.
                    failures = 0;
                    backoff = self.backoff.make_backoff();
                    self.failover.connected();
                    match self.consume(io, connack).await {
                        Ok(Exit::Shutdown) => return Ok(()),
                        Ok(Exit::Redeliver { failures }) => {
                            // Back to the same endpoint, which holds the session.
                            self.events.connection_down(
                                &DownReason::Redelivery { failures },
                                &self.failover.current().endpoint,
                            );
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
            self.events
                .connection_down(&reason, &self.failover.current().endpoint);
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
            // On to the next endpoint: at once, or after the backoff once a whole
            // round of the list failed.
            if self.failover.failed() {
                let delay = backoff.next_backoff();
                if self.while_disconnected(delay, true).await.is_none() {
                    return Ok(());
                }
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
            self.dispatch.poll_stale(&self.events, cx);
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

    /// Consume on a fresh connection until it ends.
    async fn consume(&mut self, io: Buffered, connack: ConnAckInfo) -> Result<Exit, Broken> {
        self.epoch += 1;
        let keepalive = match connack.server_keepalive {
            Some(secs) => Duration::from_secs(secs.into()),
            None => self.settings.config.keepalive,
        };
        let mut conn = Conn::new(io, self.epoch, keepalive, &self.settings);
        self.events
            .connection_up(connack.session_present, &self.failover.current().endpoint);
        // Subscribe on every connection, whatever `session_present` says: a clustered
        // broker can report a session it lost (rmqttd after a CONNECT that gave up
        // early, see docs/scale-out.md), and a consumer that trusted the flag would stay
        // connected and receive nothing. Subscribing again to an existing subscription
        // replaces it without touching what the session holds; with MQTT 5 it asks for
        // retained messages only if the subscription is new (Retain Handling 1).
        conn.subscribe(&self.settings.subscriptions);
        conn.unsubscribe(&self.settings.unsubscribe);
        let exit = poll_fn(|cx| self.poll_conn(&mut conn, cx)).await;
        self.dispatch.connection_closed();
        exit
    }

    /// One live connection, pass after pass, until it ends. Each pass does every piece
    /// of work that is ready, in this order, and the loop goes round again while any of
    /// it made progress.
    ///
    /// Unlike hyper's `poll_loop` (16 passes, then a forced yield) there is no pass
    /// limit: tokio's cooperative budget bounds the loop (checked against tokio 1.54).
    /// Each time the scheduler runs the task it gets a budget of 128 units. A socket
    /// read or write that finds the socket ready and a timer that fires take one unit
    /// each (`runtime/io/registration.rs` `poll_ready` and `time/sleep.rs`
    /// `poll_elapsed` call `coop::poll_proceed`; a poll that ends `Pending` for another
    /// reason gives its unit back). Once the budget is spent they return `Pending` and
    /// have the task scheduled again (`context::defer`). What needs no budget is finite:
    /// decoding what is already buffered (at most a read's worth) and finishing calls
    /// that were woken. So a busy connection soon makes no progress, returns `Pending`
    /// and lets the other tasks on its worker run. The driver always runs as a spawned
    /// tokio task, so the budget is always in force (it is not inside
    /// `tokio::task::unconstrained` or a foreign executor, where it would be unlimited).
    fn poll_conn(&mut self, conn: &mut Conn, cx: &mut Context<'_>) -> Poll<Result<Exit, Broken>> {
        loop {
            let mut progress = false;

            if conn.is_running() && self.poll_shutdown(cx) {
                conn.close(Exit::Shutdown);
            }

            // 1. Finished calls: decide, release acks in arrival order.
            progress |= self.dispatch.poll_finished(conn, &self.events, cx);

            // 2. Redelivery: failures have waited long enough.
            conn.poll_redeliver(cx);

            // 3. Closing: drained (or timed out) → DISCONNECT → flushed → linger.
            if let Some(closed) = conn.poll_closing(cx) {
                return closed.map(Ok);
            }

            // 4. Keepalive.
            conn.poll_keepalive(cx)?;

            // 5. Write acks and control packets, one batch per pass, before taking new
            //    messages: acks leave as soon as their order allows, and a connection
            //    that failed is noticed before anything more is dispatched from it
            //    (the error ends the loop here).
            progress |= conn.poll_write(cx)?;

            // 6. New messages, while fewer than max_inflight are held (unflushed acks
            //    included); while draining, only PUBREL and PINGRESP. (`want_read`: bytes
            //    still needed for the next packet, when it is incomplete.) The acks they
            //    release are written at the start of the next pass.
            let want_read = if conn.is_running() {
                self.dispatch
                    .poll_intake(conn, &self.events, cx, &mut progress)?
            } else if conn.is_draining() {
                Some(conn.skip_input(&self.events, &mut progress)?)
            } else {
                None
            };

            // 7. Read more only when no complete packet is buffered and there is room.
            if let Some(needed) = want_read {
                progress |= conn.poll_read(cx, needed, &self.events)?;
            }

            if !progress {
                return Poll::Pending;
            }
        }
    }
}
