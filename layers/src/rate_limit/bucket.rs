//! The budget every clone of one rate-limited service shares: a token bucket kept as
//! the generic cell rate algorithm (one instant, no refill loop).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How late a caller may be and still keep the schedule, at rates faster than one
/// permit per `CATCH_UP`: tokio's timers fire on millisecond ticks, so at 5,000 a second
/// a waiter wakes several permits late; without catching up the rate would fall to
/// about one permit per tick.
pub(super) const CATCH_UP: Duration = Duration::from_millis(10);

#[derive(Debug)]
pub(super) struct Bucket {
    /// Time between two permits at the steady rate.
    interval: Duration,
    /// How far ahead of now the schedule may run: `interval * (burst - 1)`.
    tolerance: Duration,
    /// When the next permit is due at the steady rate (`None`: nothing taken yet).
    /// Over any span, at most `burst + span / interval` permits are handed out, plus
    /// those a late caller catches up on (at most `max(interval, CATCH_UP) / interval`).
    due: Mutex<Option<Instant>>,
}

impl Bucket {
    pub(super) fn new(interval: Duration, burst: u32) -> Self {
        Self {
            interval,
            tolerance: interval * (burst - 1),
            due: Mutex::new(None),
        }
    }

    /// Take one permit now, or say when one will be free.
    pub(super) fn try_acquire(&self, now: Instant) -> Result<(), Instant> {
        // Only plain values live behind the lock: a poisoned one is still consistent.
        let mut due = self.due.lock().unwrap_or_else(|p| p.into_inner());
        // A caller less than one interval (or CATCH_UP) late, a timer firing after its
        // deadline, keeps the schedule, and the permits it fell behind on are handed out
        // at once: timer lag and the timer's millisecond granularity do not lower the
        // rate. One later than that starts a new schedule (a quiet period gives no extra
        // burst).
        let next = match *due {
            Some(d) if now < d + self.interval.max(CATCH_UP) => d,
            _ => now,
        };
        if next - now > self.tolerance {
            return Err(next - self.tolerance);
        }
        *due = Some(next + self.interval);
        Ok(())
    }
}
