//! Read pacing ([`ReadPacing`]): while a broker sends fast, hold reads back for 1–5 ms
//! after each read that emptied the socket, and keep doing so only while it raises the
//! message rate. The connection asks [`Pacing::poll_hold`] before it reads and
//! reports what the read did; the decisions are in [`Pacing::measured`], free of clocks
//! and sockets so that they can be tested alone.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::time::{sleep_until, Sleep};

use crate::config::ReadPacing;

/// How long a hold lasts: from `HOLD_MIN` to `HOLD_MAX`, adjusted one step (`HOLD_MIN`)
/// per hold (see [`Pacing::adapt`]), plus up to 1 ms as tokio's timer rounds up to its
/// next millisecond tick.
const HOLD_MIN: Duration = Duration::from_millis(1);
const HOLD_MAX: Duration = Duration::from_millis(4);
/// How long one rate measurement lasts.
const MEASURE: Duration = Duration::from_millis(20);
/// How long holding is kept after a comparison it won before the rate without it is
/// measured again; doubles after each win, up to `KEEP_MAX`.
const KEEP_MIN: Duration = Duration::from_secs(1);
const KEEP_MAX: Duration = Duration::from_secs(16);
/// How long after a comparison holding lost it is tried again; doubles after each loss,
/// up to `RETRY_MAX`.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(64);
/// Holding is tried only for a connection that waits for its broker: one whose reads
/// found the socket empty at least once per this many messages. One that reads more
/// between empty reads is busy with what it has; holding would only delay it.
const WAITING: u64 = 64;
/// Holding is tried once this many measurements in a row reached the threshold: a
/// backlog, not a burst (a steady 10,000 messages per second can measure 20,000 over
/// one 20 ms window).
const SUSTAINED: u32 = 3;
/// Holding must raise the rate by this many percent to be kept.
const GAIN_PERCENT: u64 = 15;
/// The receive buffer asked for while holding on a low-latency link (the kernel doubles
/// it for its bookkeeping; the window is about this size).
pub(super) const SMALL_RECEIVE_BUFFER: usize = 64 * 1024;
/// A TCP handshake quicker than this marks a low-latency link, where the small receive
/// buffer still carries far more than a broker sends one connection (64 KiB per
/// round trip).
const LOW_LATENCY: Duration = Duration::from_millis(1);

/// Where the decisions stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Reading at once, measuring the rate.
    Direct,
    /// Holding on trial; `direct` is the rate measured just before, without. The first
    /// measurement only lets the change settle (the kernel shrinks an advertised
    /// window gradually); the second is compared.
    Trial { direct: u64, settled: bool },
    /// Holding, having won the last comparison; measured without again at `recheck`.
    Holding { recheck: Instant },
    /// Reading at once to compare with `held`, the rate measured while holding.
    Recheck { held: u64 },
    /// Holding lost its comparison; reading at once, not trying again before `retry`.
    Resting { retry: Instant },
}

impl Mode {
    fn holds(self) -> bool {
        matches!(self, Self::Trial { .. } | Self::Holding { .. })
    }
}

/// The outcome of a comparison, or the end of holding because the rate fell below the
/// threshold (`direct_rate: None`); reported as `Event::ReadPacing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Verdict {
    pub(super) holding: bool,
    pub(super) held_rate: u64,
    pub(super) direct_rate: Option<u64>,
}

/// What to do with the socket's receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Buffer {
    /// Holding starts on a low-latency link: ask for [`SMALL_RECEIVE_BUFFER`], so that
    /// the window closes within a hold.
    Shrink,
    /// Holding stopped: give the buffer back the size it had before.
    Restore,
}

/// What [`Pacing::drained`] asks of the connection.
#[derive(Debug, Default)]
pub(super) struct Drained {
    /// A change of the receive buffer.
    pub(super) buffer: Option<Buffer>,
    /// A comparison concluded.
    pub(super) verdict: Option<Verdict>,
}

/// One connection's read pacing.
pub(super) struct Pacing {
    /// Messages per second from which holding is tried; 0 = never.
    min_rate: u64,
    mode: Mode,
    keep: Duration,
    retry: Duration,
    /// Start of the current measurement, and the connection's message count then.
    since: Instant,
    counted: u64,
    /// Reads that found the socket empty during the current measurement.
    empty_reads: u64,
    /// Measurements in a row, reading at once, at or above the threshold.
    above: u32,
    /// The length of the next hold.
    hold_for: Duration,
    /// The most bytes one hold has let through lately (decays slowly): about what the
    /// receive window lets the broker send.
    peak: u64,
    /// Bytes read from the connection at the last empty read.
    rx_mark: u64,
    /// The reads since the last empty read followed a hold.
    after_hold: bool,
    /// Bytes arrived since the last read that found the socket empty.
    arrived: bool,
    /// The hold timer (made at the first hold, reset for each later one) and whether it
    /// is running.
    timer: Option<Pin<Box<Sleep>>>,
    holding: bool,
    /// The link is quick enough for [`SMALL_RECEIVE_BUFFER`].
    low_latency: bool,
    /// The receive buffer is the small one.
    shrunk: bool,
}

impl Pacing {
    /// Pacing for a connection whose TCP handshake took `connect_rtt`.
    pub(super) fn new(pacing: ReadPacing, connect_rtt: Duration) -> Self {
        let min_rate = match pacing {
            ReadPacing::Off => 0,
            ReadPacing::Above(n) => u64::from(n),
        };
        Self {
            min_rate,
            mode: Mode::Direct,
            keep: KEEP_MIN,
            retry: RETRY_MIN,
            since: Instant::now(),
            counted: 0,
            empty_reads: 0,
            above: 0,
            hold_for: HOLD_MAX,
            peak: 0,
            rx_mark: 0,
            after_hold: false,
            arrived: false,
            timer: None,
            holding: false,
            low_latency: connect_rtt < LOW_LATENCY,
            shrunk: false,
        }
    }

    /// Whether a hold is in force: the connection must not read yet (the timer will
    /// wake it).
    #[inline]
    pub(super) fn poll_hold(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.holding {
            return false;
        }
        if self.timer.as_mut().map(|t| t.as_mut().poll(cx)) == Some(Poll::Pending) {
            return true;
        }
        self.holding = false;
        false
    }

    /// A read brought bytes.
    #[inline]
    pub(super) fn arrived(&mut self) {
        self.arrived = true;
    }

    /// Whether pacing can ever hold (`ReadPacing::Off` cannot).
    #[inline]
    pub(super) fn is_on(&self) -> bool {
        self.min_rate != 0
    }

    /// A read found the socket empty; `received` is the connection's message count and
    /// `rx_total` the bytes it has read. Concludes a measurement that has run long
    /// enough, and starts a hold if holding is in force and bytes came since the last
    /// such read (after an idle spell the next message is read at once).
    pub(super) fn drained(
        &mut self,
        received: u64,
        rx_total: u64,
        cx: &mut Context<'_>,
    ) -> Drained {
        let mut out = Drained::default();
        let arrived = std::mem::take(&mut self.arrived);
        let bytes = rx_total.saturating_sub(self.rx_mark);
        self.rx_mark = rx_total;
        if std::mem::take(&mut self.after_hold) {
            self.adapt(bytes);
        }
        self.empty_reads += 1;
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed >= MEASURE {
            let messages = received.saturating_sub(self.counted);
            let micros = elapsed.as_micros().max(1);
            let rate = u64::try_from(u128::from(messages) * 1_000_000 / micros).unwrap_or(u64::MAX);
            let waiting = messages <= self.empty_reads.saturating_mul(WAITING);
            let was = self.mode;
            out.verdict = self.measured(rate, waiting, now);
            if !was.holds() && self.mode.holds() {
                // Start long, so that the first holds surely let the window fill.
                self.hold_for = HOLD_MAX;
                self.peak = 0;
                if self.low_latency {
                    self.shrunk = true;
                    out.buffer = Some(Buffer::Shrink);
                }
            } else if was.holds() && !self.mode.holds() && self.shrunk {
                // Reading at once (to compare, or for good): with the buffer it had.
                self.shrunk = false;
                out.buffer = Some(Buffer::Restore);
            }
            self.since = now;
            self.counted = received;
            self.empty_reads = 0;
        }
        if arrived && self.mode.holds() {
            self.hold(now, cx);
        }
        out
    }

    /// A hold let `bytes` through. Holding pays only once the broker's writes queue up
    /// behind a full receive window; a hold that ends before then leaves the broker
    /// writing (and paying for) one segment per message, which slows it, which leaves
    /// the window open for longer: a state that sustains itself. So a hold that let
    /// through markedly less than the recent most is lengthened by a step, and one that
    /// let through about as much is shortened by one (the shortest hold that fills the
    /// window, for the least delay).
    fn adapt(&mut self, bytes: u64) {
        self.peak = bytes.max(self.peak - self.peak / 32);
        self.hold_for = if bytes * 4 < self.peak * 3 {
            (self.hold_for + HOLD_MIN).min(HOLD_MAX)
        } else {
            self.hold_for.saturating_sub(HOLD_MIN).max(HOLD_MIN)
        };
    }

    fn hold(&mut self, now: Instant, cx: &mut Context<'_>) {
        self.after_hold = true;
        let deadline = tokio::time::Instant::from_std(now + self.hold_for);
        let timer = match &mut self.timer {
            Some(timer) => {
                timer.as_mut().reset(deadline);
                timer
            }
            None => self.timer.insert(Box::pin(sleep_until(deadline))),
        };
        self.holding = timer.as_mut().poll(cx).is_pending();
    }

    /// One measurement of `rate` messages per second ended at `now`; `waiting`: the
    /// connection often found the socket empty (see [`WAITING`]). Move on.
    fn measured(&mut self, rate: u64, waiting: bool, now: Instant) -> Option<Verdict> {
        let gained = |held: u64, direct: u64| {
            u128::from(held) * 100 >= u128::from(direct) * u128::from(100 + GAIN_PERCENT)
        };
        match self.mode {
            Mode::Direct => {
                if rate >= self.min_rate && waiting {
                    self.above += 1;
                } else {
                    self.above = 0;
                }
                if self.above >= SUSTAINED {
                    self.above = 0;
                    self.mode = Mode::Trial {
                        direct: rate,
                        settled: false,
                    };
                }
                None
            }
            Mode::Trial {
                direct,
                settled: false,
            } => {
                self.mode = Mode::Trial {
                    direct,
                    settled: true,
                };
                None
            }
            Mode::Trial {
                direct,
                settled: true,
            } => Some(self.compared(rate, direct, gained(rate, direct), now)),
            Mode::Recheck { held } => Some(self.compared(held, rate, gained(held, rate), now)),
            Mode::Holding { recheck } => {
                if rate < self.min_rate {
                    self.mode = Mode::Direct;
                    self.keep = KEEP_MIN;
                    Some(Verdict {
                        holding: false,
                        held_rate: rate,
                        direct_rate: None,
                    })
                } else {
                    if now >= recheck {
                        self.mode = Mode::Recheck { held: rate };
                    }
                    None
                }
            }
            Mode::Resting { retry } => {
                if now >= retry {
                    self.mode = Mode::Direct;
                }
                None
            }
        }
    }

    /// A comparison ended: hold on (for longer each time) or rest (for longer each time).
    fn compared(&mut self, held: u64, direct: u64, won: bool, now: Instant) -> Verdict {
        if won {
            self.mode = Mode::Holding {
                recheck: now + self.keep,
            };
            self.keep = (self.keep * 2).min(KEEP_MAX);
            self.retry = RETRY_MIN;
        } else {
            self.mode = Mode::Resting {
                retry: now + self.retry,
            };
            self.retry = (self.retry * 2).min(RETRY_MAX);
            self.keep = KEEP_MIN;
        }
        Verdict {
            holding: won,
            held_rate: held,
            direct_rate: Some(direct),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pacing(min_rate: u32) -> Pacing {
        Pacing::new(ReadPacing::Above(min_rate), Duration::from_micros(50))
    }

    /// `SUSTAINED - 1` measurements at `rate`: the next one at or above the threshold
    /// starts a trial.
    fn above(p: &mut Pacing, rate: u64, t: Instant) {
        for _ in 1..SUSTAINED {
            assert_eq!(p.measured(rate, true, t), None);
        }
    }

    fn verdict(holding: bool, held_rate: u64, direct_rate: Option<u64>) -> Option<Verdict> {
        Some(Verdict {
            holding,
            held_rate,
            direct_rate,
        })
    }

    #[test]
    fn below_the_threshold_nothing_is_tried() {
        let mut p = pacing(50_000);
        let t = Instant::now();
        for i in 0..100 {
            assert_eq!(p.measured(49_999, true, t + MEASURE * i), None);
            assert_eq!(p.mode, Mode::Direct);
        }
    }

    #[test]
    fn a_busy_connection_is_not_tried() {
        let mut p = pacing(50_000);
        let t = Instant::now();
        above(&mut p, 5_000_000, t);
        assert_eq!(p.measured(5_000_000, false, t), None);
        assert_eq!(
            p.mode,
            Mode::Direct,
            "a busy measurement starts the count again"
        );
        above(&mut p, 5_000_000, t);
        assert_eq!(p.mode, Mode::Direct);
        assert_eq!(p.measured(5_000_000, true, t), None);
        assert_eq!(
            p.mode,
            Mode::Trial {
                direct: 5_000_000,
                settled: false
            }
        );
    }

    #[test]
    fn holding_is_kept_when_it_raises_the_rate_and_rechecked_later_each_time() {
        let mut p = pacing(50_000);
        let t = Instant::now();
        above(&mut p, 130_000, t);
        assert_eq!(p.measured(130_000, true, t), None);
        assert_eq!(
            p.mode,
            Mode::Trial {
                direct: 130_000,
                settled: false
            }
        );
        // The first measurement while holding only lets the change settle.
        assert_eq!(p.measured(100_000, true, t), None);
        assert_eq!(
            p.mode,
            Mode::Trial {
                direct: 130_000,
                settled: true
            }
        );
        assert_eq!(
            p.measured(290_000, true, t),
            verdict(true, 290_000, Some(130_000))
        );
        assert_eq!(
            p.mode,
            Mode::Holding {
                recheck: t + KEEP_MIN
            }
        );
        // Still holding before the recheck.
        assert_eq!(p.measured(290_000, true, t + KEEP_MIN / 2), None);
        assert!(p.mode.holds());
        // At the recheck: read at once for one measurement, then compare.
        let r = t + KEEP_MIN;
        assert_eq!(p.measured(280_000, true, r), None);
        assert_eq!(p.mode, Mode::Recheck { held: 280_000 });
        assert!(!p.mode.holds());
        assert_eq!(
            p.measured(140_000, true, r),
            verdict(true, 280_000, Some(140_000))
        );
        // Won again: kept twice as long this time.
        assert_eq!(
            p.mode,
            Mode::Holding {
                recheck: r + KEEP_MIN * 2
            }
        );
    }

    #[test]
    fn holding_that_does_not_raise_the_rate_by_the_margin_is_dropped_and_retried_later() {
        let mut p = pacing(50_000);
        let t = Instant::now();
        above(&mut p, 1_000_000, t);
        p.measured(1_000_000, true, t);
        p.measured(1_000_000, true, t);
        // 14 % more is not enough.
        assert_eq!(
            p.measured(1_140_000, true, t),
            verdict(false, 1_140_000, Some(1_000_000))
        );
        assert_eq!(
            p.mode,
            Mode::Resting {
                retry: t + RETRY_MIN
            }
        );
        assert_eq!(p.measured(1_000_000, true, t + RETRY_MIN / 2), None);
        assert!(!p.mode.holds());
        // After the rest: measure without, then try again; a second loss rests longer.
        assert_eq!(p.measured(1_000_000, true, t + RETRY_MIN), None);
        assert_eq!(p.mode, Mode::Direct);
        let t2 = t + RETRY_MIN + MEASURE;
        above(&mut p, 1_000_000, t2);
        p.measured(1_000_000, true, t2);
        p.measured(1_000_000, true, t2);
        assert_eq!(
            p.measured(300_000, true, t2),
            verdict(false, 300_000, Some(1_000_000))
        );
        assert_eq!(
            p.mode,
            Mode::Resting {
                retry: t2 + RETRY_MIN * 2
            }
        );
    }

    #[test]
    fn holding_ends_when_the_rate_falls_below_the_threshold() {
        let mut p = pacing(50_000);
        let t = Instant::now();
        above(&mut p, 100_000, t);
        p.measured(100_000, true, t);
        p.measured(200_000, true, t);
        p.measured(200_000, true, t);
        assert!(matches!(p.mode, Mode::Holding { .. }));
        assert_eq!(
            p.measured(10_000, true, t + MEASURE),
            verdict(false, 10_000, None)
        );
        assert_eq!(p.mode, Mode::Direct);
    }

    #[test]
    fn backoffs_are_bounded() {
        let mut p = pacing(1);
        let mut t = Instant::now();
        for _ in 0..20 {
            above(&mut p, 100, t);
            p.measured(100, true, t);
            p.measured(100, true, t);
            p.measured(100, true, t);
            t += RETRY_MAX;
            p.measured(100, true, t);
        }
        assert_eq!(p.retry, RETRY_MAX);
        for _ in 0..20 {
            if p.mode == Mode::Direct {
                above(&mut p, 100, t);
            }
            p.measured(100, true, t);
            p.measured(200, true, t);
            p.measured(200, true, t);
            t += KEEP_MAX;
            p.measured(200, true, t);
            p.measured(100, true, t);
        }
        assert_eq!(p.keep, KEEP_MAX);
    }

    #[tokio::test]
    async fn holds_start_only_after_bytes_arrived_and_only_while_holding() {
        let mut p = pacing(1);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        // Direct: bytes arrive, the socket empties: no hold.
        p.arrived();
        assert!(p.drained(0, 0, &mut cx).verdict.is_none());
        assert!(!p.poll_hold(&mut cx));
        // Trial (as after a measurement at or above the threshold).
        p.mode = Mode::Trial {
            direct: 10,
            settled: false,
        };
        p.drained(0, 0, &mut cx);
        assert!(
            !p.poll_hold(&mut cx),
            "no bytes since the last empty read: no hold"
        );
        p.arrived();
        p.drained(0, 0, &mut cx);
        assert!(p.poll_hold(&mut cx), "bytes came: hold");
        tokio::time::sleep(HOLD_MAX + HOLD_MIN * 2).await;
        assert!(!p.poll_hold(&mut cx), "the hold ends with its tick");
    }

    #[test]
    fn holds_shorten_while_they_fill_the_window_and_lengthen_when_they_do_not() {
        let mut p = pacing(1);
        assert_eq!(p.hold_for, HOLD_MAX, "a trial starts with the longest hold");
        // Each hold lets a full window through: shorten, down to the shortest.
        for _ in 0..10 {
            p.adapt(90_000);
        }
        assert_eq!(p.hold_for, HOLD_MIN);
        // A hold that let through under three quarters of the recent most: longer.
        p.adapt(30_000);
        assert_eq!(p.hold_for, HOLD_MIN * 2);
        p.adapt(30_000);
        p.adapt(30_000);
        p.adapt(30_000);
        p.adapt(30_000);
        assert_eq!(p.hold_for, HOLD_MAX, "never longer than HOLD_MAX");
        // The peak decays, so a smaller window is learned in time.
        for _ in 0..200 {
            p.adapt(30_000);
        }
        assert_eq!(p.hold_for, HOLD_MIN);
    }

    #[test]
    fn the_small_buffer_is_asked_for_while_holding_and_only_on_a_low_latency_link() {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let measure = |p: &mut Pacing, received: u64, cx: &mut Context<'_>| {
            p.since = Instant::now() - MEASURE;
            p.drained(received, 0, cx).buffer
        };
        for (rtt, low_latency) in [
            (Duration::from_micros(50), true),
            (Duration::from_millis(5), false),
        ] {
            let mut p = Pacing::new(ReadPacing::Above(1), rtt);
            // Direct → trial: holding starts.
            assert_eq!(measure(&mut p, 50, &mut cx), None);
            assert_eq!(measure(&mut p, 100, &mut cx), None);
            let b = measure(&mut p, 150, &mut cx);
            assert!(matches!(p.mode, Mode::Trial { settled: false, .. }));
            assert_eq!(b, low_latency.then_some(Buffer::Shrink), "rtt {rtt:?}");
            // Settling, then the comparison: holding lost (nothing more arrived).
            assert_eq!(measure(&mut p, 50, &mut cx), None);
            assert_eq!(
                measure(&mut p, 50, &mut cx),
                low_latency.then_some(Buffer::Restore)
            );
            assert!(matches!(p.mode, Mode::Resting { .. }));
        }
        // A recheck reads at once with the old buffer; holding again shrinks it again.
        let mut p = pacing(1);
        let t = Instant::now();
        p.mode = Mode::Holding { recheck: t };
        p.shrunk = true;
        assert_eq!(measure(&mut p, 100, &mut cx), Some(Buffer::Restore));
        assert!(matches!(p.mode, Mode::Recheck { .. }));
        assert_eq!(measure(&mut p, 101, &mut cx), Some(Buffer::Shrink));
        assert!(matches!(p.mode, Mode::Holding { .. }));
    }
}
