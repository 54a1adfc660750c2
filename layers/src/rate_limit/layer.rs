use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::bucket::Bucket;
use super::{InvalidRate, SharedRateLimit};

/// [`Layer`] that applies [`SharedRateLimit`]: `num` messages per `per`, shared by
/// every clone of the service it builds; see the [module docs](super).
///
/// ```
/// use std::time::Duration;
/// use tower::ServiceBuilder;
/// use tower_mqtt::{BoxError, Message};
/// use tower_mqtt_layers::rate_limit::SharedRateLimitLayer;
///
/// // 500 messages a second over all connections, up to 50 at once after a pause.
/// let limit = SharedRateLimitLayer::new(500, Duration::from_secs(1))?.burst(50)?;
/// let service = ServiceBuilder::new()
///     .layer(limit)
///     .service_fn(|_message: Message| async { Ok::<_, BoxError>(()) });
/// # let _ = service;
/// # Ok::<_, tower_mqtt_layers::rate_limit::InvalidRate>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct SharedRateLimitLayer {
    interval: Duration,
    burst: u32,
}

impl SharedRateLimitLayer {
    /// At most `num` messages per `per`, evenly spaced (`per / num` apart; see
    /// [`burst`](Self::burst)). Faster than one per 10 ms, a waiter that wakes late
    /// (tokio's timers tick every millisecond) catches up on the permits it missed, so
    /// the rate holds at thousands a second; over any span the count may then run up to
    /// 10 ms worth of permits ahead of the even spacing. `num == 0`, or `per` shorter
    /// than `num` nanoseconds, is an [`InvalidRate`].
    pub fn new(num: u32, per: Duration) -> Result<Self, InvalidRate> {
        if num == 0 {
            return Err(InvalidRate::ZeroNum);
        }
        let interval = per / num;
        if interval.is_zero() {
            return Err(InvalidRate::TooFast);
        }
        Ok(Self { interval, burst: 1 })
    }

    /// Let up to `n` messages through at once after a quiet period (default 1: never
    /// faster than the steady rate). The long-run rate stays `num` per `per`.
    pub fn burst(self, n: u32) -> Result<Self, InvalidRate> {
        if n == 0 {
            return Err(InvalidRate::ZeroBurst);
        }
        Ok(Self { burst: n, ..self })
    }
}

impl<S> Layer<S> for SharedRateLimitLayer {
    type Service = SharedRateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SharedRateLimit::new(inner, Arc::new(Bucket::new(self.interval, self.burst)))
    }
}
