//! The budget every clone of one rate-limited service shares: a token bucket kept as
//! the generic cell rate algorithm (one instant, no refill loop).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub(super) struct Bucket {
    /// Time between two permits at the steady rate.
    interval: Duration,
    /// How far ahead of now the schedule may run: `interval * (burst - 1)`.
    tolerance: Duration,
    /// When the next permit is due at the steady rate (`None`: nothing taken yet).
    /// Over any span, at most `burst + span / interval` permits are handed out (plus
    /// one, for a caller that was late).
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
        // A caller less than one interval late (a timer firing a little after its
        // deadline, say) keeps the schedule, so timer lag does not lower the rate; one
        // later than that starts a new schedule (a quiet period gives no extra burst).
        let next = match *due {
            Some(d) if now < d + self.interval => d,
            _ => now,
        };
        if next - now > self.tolerance {
            return Err(next - self.tolerance);
        }
        *due = Some(next + self.interval);
        Ok(())
    }
}
