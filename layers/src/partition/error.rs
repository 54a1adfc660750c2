use std::error::Error as StdError;
use std::fmt;

/// [`PartitionLayer::max_waiting`](super::PartitionLayer::max_waiting) was given 0: at
/// least one message must be able to wait behind a busy key, or the service would never
/// be ready again once a key is busy.
///
/// ```
/// use tower_mqtt_layers::partition::PartitionLayer;
///
/// let error = PartitionLayer::by_topic().max_waiting(0).unwrap_err();
/// assert!(error.to_string().contains("max_waiting"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct InvalidMaxWaiting;

impl fmt::Display for InvalidMaxWaiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "partition max_waiting must be at least 1 (messages that may wait behind a busy key); \
             use a value near the consumer's max_inflight times its connections",
        )
    }
}

impl StdError for InvalidMaxWaiting {}
