//! Everything one connection slot needs, validated by the consumer's builder.

use std::sync::Arc;
use std::time::Duration;

use tower::retry::backoff::ExponentialBackoffMaker;
use tower::util::rng::HasherRng;

use super::codec::{Codec, ConnectParams};
use crate::config::{Config, QoS, ReadPacing};
use crate::event::Hook;
use crate::message::Origin;

/// Everything a connection driver needs, validated.
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) config: Config,
    pub(crate) client_id: String,
    /// Filters as sent in SUBSCRIBE (with the `$share/<group>/` prefix when grouped).
    pub(crate) subscriptions: Vec<(String, QoS)>,
    pub(crate) shared_group: Option<String>,
    /// Filters as the user gave them.
    pub(crate) filters: Arc<[String]>,
    pub(crate) concurrency: usize,
    pub(crate) max_inflight: usize,
    pub(crate) drain_timeout: Duration,
    pub(crate) redeliver_after: Duration,
    pub(crate) backoff: ReconnectBackoff,
    pub(crate) max_reconnect_attempts: Option<u32>,
    pub(crate) hook: Option<Hook>,
    /// Filters to UNSUBSCRIBE on every connection: a retired slot draining its session
    /// (`ConsumerBuilder::drain_retired_sessions`), which subscribes to nothing.
    pub(crate) unsubscribe: Vec<String>,
    /// `ConsumerBuilder::drain_retired_sessions(up_to)`: slots `concurrency..up_to`.
    pub(crate) retired_up_to: usize,
    /// `ConsumerBuilder::read_pacing`.
    pub(crate) read_pacing: ReadPacing,
}

impl Settings {
    /// The packet codec for the configured protocol version.
    #[inline]
    pub(crate) fn codec(&self) -> Codec {
        Codec::for_protocol(self.config.proto_ver)
    }

    pub(crate) fn connect_params<'a>(&'a self, origin: &'a Origin) -> ConnectParams<'a> {
        let v5 = self.codec() == Codec::V5;
        let c = &self.config;
        ConnectParams {
            client_id: &origin.client_id,
            keepalive_secs: c.keepalive.as_secs() as u16,
            clean_start: c.clean_start,
            username: c.username.as_deref(),
            password: c.password.as_ref().map(|p| p.0.as_str()),
            session_expiry: (v5 && !c.clean_start).then_some(c.session_expiry.as_secs() as u32),
            receive_maximum: v5.then_some(self.max_inflight as u16),
            // Deliberately not sent: MQTT 5 lets a broker silently discard a message over
            // the client's Maximum Packet Size. Unannounced, an oversized packet reaches
            // us, fails loudly (DownReason::PacketTooLarge) and stays on the broker.
            max_packet_size: None,
            will: c.will.as_ref(),
            bridge_mode: c.bridge_mode,
            properties: v5.then_some(&c.properties),
        }
    }
}

/// Jitter of [`ReconnectBackoff::Bounds`], as a ratio of the base delay: each wait is
/// its step plus a random part of up to as much again (never above the maximum).
pub(crate) const JITTER: f64 = 1.0;

/// Where each connection slot gets its reconnect backoff: tower's exponential backoff.
#[derive(Debug, Clone)]
pub(crate) enum ReconnectBackoff {
    /// `ConsumerBuilder::reconnect_backoff(min, max)` (checked by the builder): with
    /// [`JITTER`], and a random generator of its own for every connection slot.
    Bounds { min: Duration, max: Duration },
    /// `ConsumerBuilder::reconnect_backoff_maker`: exactly as given.
    Maker(ExponentialBackoffMaker),
}

impl ReconnectBackoff {
    /// The backoff maker for one connection slot.
    ///
    /// tower clones a maker's random generator into every backoff it makes, so backoffs
    /// from one maker all draw the same jitter. For `Bounds` each slot therefore gets a
    /// maker with a fresh generator (`HasherRng::default()` seeds a new `RandomState`),
    /// so that the connections of one consumer do not reconnect in step either.
    pub(crate) fn maker(&self) -> ExponentialBackoffMaker {
        match self {
            Self::Bounds { min, max } => {
                ExponentialBackoffMaker::new(*min, *max, JITTER, HasherRng::default())
                    .expect("the builder checked 0 < min <= max")
            }
            Self::Maker(maker) => maker.clone(),
        }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("config", &self.config)
            .field("client_id", &self.client_id)
            .field("subscriptions", &self.subscriptions)
            .field("max_inflight", &self.max_inflight)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;
    use tower::retry::backoff::{Backoff, MakeBackoff};

    use super::ReconnectBackoff;

    /// The wait the next reconnect would take, within the few microseconds around it.
    fn next_wait(backoff: &mut impl Backoff<Future = tokio::time::Sleep>) -> (Duration, Duration) {
        let before = Instant::now();
        let sleep = backoff.next_backoff();
        let after = Instant::now();
        // The sleep ends at `now + wait` for a `now` in `before..=after`.
        (sleep.deadline() - after, sleep.deadline() - before)
    }

    fn assert_wait_in(
        backoff: &mut impl Backoff<Future = tokio::time::Sleep>,
        lo: Duration,
        hi: Duration,
    ) {
        let (at_least, at_most) = next_wait(backoff);
        assert!(
            at_most >= lo && at_least <= hi,
            "wait {at_least:?}..{at_most:?} not in {lo:?}..={hi:?}"
        );
    }

    #[tokio::test]
    async fn backoff_doubles_with_jitter_up_to_the_maximum() {
        let ms = Duration::from_millis;
        let bounds = ReconnectBackoff::Bounds {
            min: ms(100),
            max: Duration::from_secs(5),
        };
        // Step b = min(100 ms * 2^(n-1), 5 s), wait in b..=min(2b, 5 s).
        let steps = [
            (ms(100), ms(200)),
            (ms(200), ms(400)),
            (ms(400), ms(800)),
            (ms(800), ms(1600)),
            (ms(1600), ms(3200)),
            (ms(3200), ms(5000)),
            (ms(5000), ms(5000)),
            (ms(5000), ms(5000)),
        ];
        let mut firsts = Vec::new();
        for _ in 0..50 {
            // A slot's maker, as the driver makes it.
            let mut backoff = bounds.maker().make_backoff();
            for (lo, hi) in steps {
                assert_wait_in(&mut backoff, lo, hi);
            }
            firsts.push(next_wait(&mut bounds.maker().make_backoff()).0);
        }
        // Every slot draws its own jitter: the first waits spread over 100..200 ms (the
        // same draw everywhere would differ by microseconds of timing only).
        let spread = *firsts.iter().max().unwrap() - *firsts.iter().min().unwrap();
        assert!(spread > ms(20), "first waits: {firsts:?}");
    }

    #[tokio::test]
    async fn backoff_starts_over_after_a_connection() {
        let ms = Duration::from_millis;
        let mut maker = ReconnectBackoff::Bounds {
            min: ms(100),
            max: Duration::from_secs(30),
        }
        .maker();
        let mut backoff = maker.make_backoff();
        for step in [100, 200, 400, 800, 1600, 3200] {
            assert_wait_in(&mut backoff, ms(step), ms(2 * step));
        }
        // What the driver does after a successful connection.
        let mut backoff = maker.make_backoff();
        assert_wait_in(&mut backoff, ms(100), ms(200));
    }

    #[tokio::test]
    async fn equal_bounds_wait_exactly_that_long() {
        // emqtt's `reconnect_timeout` t becomes `reconnect_backoff(t, t)`.
        let t = Duration::from_secs(2);
        let mut backoff = ReconnectBackoff::Bounds { min: t, max: t }
            .maker()
            .make_backoff();
        for _ in 0..5 {
            assert_wait_in(&mut backoff, t, t);
        }
    }
}
