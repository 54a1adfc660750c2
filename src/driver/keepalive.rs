//! PINGREQ timing of one connection: when to ping, and when silence means the broker
//! is gone.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use bytes::BytesMut;
use tokio::time::{sleep, Instant, Sleep};

use super::codec::Codec;
use crate::error::DownReason;

/// The keepalive state machine; `None` inside when keepalive is off (0 s).
pub(crate) struct Keepalive(Option<Pinger>);

struct Pinger {
    every: Duration,
    /// Fires when the next PINGREQ is due ([`State::Idle`]) or at the deadline of the
    /// one that is out ([`State::AwaitPong`]). One timer, reset in place.
    timer: Pin<Box<Sleep>>,
    state: State,
}

enum State {
    /// Waiting for the next PINGREQ to be due.
    Idle,
    /// A PINGREQ is out.
    AwaitPong {
        sent_at: Instant,
        /// Bytes read before the PINGREQ went out.
        rx_at_ping: u64,
        /// Whether the connection has tried to read since.
        read_tried: bool,
    },
}

impl Keepalive {
    /// Ping every `every` (the negotiated keepalive); zero turns keepalive off.
    pub(crate) fn new(every: Duration) -> Self {
        if every.is_zero() {
            return Self(None);
        }
        Self(Some(Pinger {
            every,
            timer: Box::pin(sleep(every)),
            state: State::Idle,
        }))
    }

    /// The connection is about to read from the socket: from now on, silence means the
    /// broker did not answer (while it holds no slot free, the connection does not read,
    /// and silence proves nothing).
    #[inline]
    pub(crate) fn reading(&mut self) {
        if let Some(Pinger {
            state: State::AwaitPong { read_tried, .. },
            ..
        }) = &mut self.0
        {
            *read_tried = true;
        }
    }

    /// A PINGRESP arrived.
    pub(crate) fn pong(&mut self) {
        if let Some(pinger) = &mut self.0 {
            if let State::AwaitPong { sent_at, .. } = pinger.state {
                pinger.idle_until(sent_at + pinger.every);
            }
        }
    }

    /// Put PINGREQs into `wbuf` when due, and notice a broker that stopped answering.
    /// `rx_total`: bytes read from the socket so far.
    #[inline]
    pub(crate) fn poll(
        &mut self,
        cx: &mut Context<'_>,
        rx_total: u64,
        codec: Codec,
        wbuf: &mut BytesMut,
    ) -> Result<(), DownReason> {
        let Some(pinger) = &mut self.0 else {
            return Ok(());
        };
        while pinger.timer.as_mut().poll(cx).is_ready() {
            match pinger.state {
                State::Idle => pinger.ping(rx_total, codec, wbuf),
                State::AwaitPong {
                    sent_at,
                    rx_at_ping,
                    read_tried,
                } => {
                    if rx_total > rx_at_ping {
                        // Bytes arrived since the ping: the broker is alive, the PINGRESP
                        // is just queued behind messages we have not decoded yet.
                        pinger.idle_until(sent_at + pinger.every);
                    } else if read_tried {
                        return Err(DownReason::KeepaliveTimeout);
                    } else {
                        // We were not reading (all slots busy), so silence proves
                        // nothing. Ping again to keep the broker's keepalive satisfied.
                        pinger.ping(rx_total, codec, wbuf);
                    }
                }
            }
        }
        Ok(())
    }
}

impl Pinger {
    /// Send a PINGREQ and give the broker half the interval to answer.
    fn ping(&mut self, rx_total: u64, codec: Codec, wbuf: &mut BytesMut) {
        codec.encode_ping(wbuf);
        let now = Instant::now();
        self.timer.as_mut().reset(now + self.every / 2);
        self.state = State::AwaitPong {
            sent_at: now,
            rx_at_ping: rx_total,
            read_tried: false,
        };
    }

    /// Wait until `next` for the next PINGREQ.
    fn idle_until(&mut self, next: Instant) {
        self.timer.as_mut().reset(next);
        self.state = State::Idle;
    }
}
