use std::error::Error as StdError;
use std::fmt;

/// A [`SharedRateLimitLayer`](super::SharedRateLimitLayer) option is out of range; the
/// text names the option and the fix.
///
/// ```
/// use std::time::Duration;
/// use tower_mqtt_layers::rate_limit::SharedRateLimitLayer;
///
/// let error = SharedRateLimitLayer::new(0, Duration::from_secs(1)).unwrap_err();
/// assert!(error.to_string().starts_with("rate limit num must be at least 1"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidRate {
    /// `num` was 0: nothing could ever pass.
    ZeroNum,
    /// `per` was zero, or so short for `num` that permits would be less than a
    /// nanosecond apart.
    TooFast,
    /// `burst` was 0: nothing could ever pass.
    ZeroBurst,
}

impl fmt::Display for InvalidRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ZeroNum => "rate limit num must be at least 1 (messages per `per`); to stop processing, cancel the consumer instead",
            Self::TooFast => "rate limit per must be at least num nanoseconds (permits at least 1 ns apart); to set no limit, leave the layer out",
            Self::ZeroBurst => "rate limit burst must be at least 1 (1: evenly spaced, the default)",
        })
    }
}

impl StdError for InvalidRate {}
