use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use tower_mqtt::BoxError;

/// A [`BatchBuilder`](super::BatchBuilder) option that cannot work, naming the option
/// and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BatchConfigError {
    /// `max_size(0)`: a batch holds at least one message.
    ZeroMaxSize,
    /// `concurrency(0)`: no batch could ever be called.
    ZeroConcurrency,
}

impl fmt::Display for BatchConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroMaxSize => f.write_str(
                "batch option `max_size` is 0: a batch holds at least one message; \
                 use max_size(1) to call the batch service once per message",
            ),
            Self::ZeroConcurrency => f.write_str(
                "batch option `concurrency` is 0: no batch could ever be called; \
                 use concurrency(1) or more",
            ),
        }
    }
}

impl StdError for BatchConfigError {}

/// The batch a message was in failed as a whole: the batch service returned `Err`,
/// panicked, or was not ready. Every message of the batch gets this error; its
/// [`source`](StdError::source) is the batch service's error, so a marker error
/// ([`Permanent`](tower_mqtt::Permanent), [`Redeliver`](tower_mqtt::Redeliver), …)
/// returned for the batch applies to each of its messages.
#[derive(Debug, Clone)]
pub struct BatchFailed {
    error: Arc<BoxError>,
    size: usize,
    index: usize,
}

impl BatchFailed {
    pub(super) fn new(error: Arc<BoxError>, size: usize, index: usize) -> Self {
        Self { error, size, index }
    }

    /// How many messages the batch held.
    #[must_use]
    pub fn batch_size(&self) -> usize {
        self.size
    }

    /// This message's position in the batch.
    #[must_use]
    pub fn index(&self) -> usize {
        self.index
    }
}

impl fmt::Display for BatchFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "batch of {} failed (message {} of it): {}",
            self.size, self.index, self.error
        )
    }
}

impl StdError for BatchFailed {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        let error: &(dyn StdError + Send + Sync + 'static) = &**self.error;
        Some(error)
    }
}

/// The message never reached a batch: the batcher's worker is not running (no tokio
/// runtime at the first call, or the worker has stopped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatcherUnavailable {
    reason: &'static str,
}

impl BatcherUnavailable {
    pub(super) const NO_RUNTIME: Self = Self {
        reason: "the batch layer was first called outside a tokio runtime; \
                 run the consumer on a tokio runtime",
    };
    pub(super) const STOPPED: Self = Self {
        reason: "the batch worker has stopped",
    };
}

impl fmt::Display for BatcherUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "message not batched: {}", self.reason)
    }
}

impl StdError for BatcherUnavailable {}

/// A batch service's future or `call` panicked: the batch fails as a whole with this
/// error (inside [`BatchFailed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchPanicked {
    message: String,
}

impl BatchPanicked {
    pub(super) fn from_payload(payload: &(dyn std::any::Any + Send)) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic with a non-string payload".to_owned());
        Self { message }
    }
}

impl fmt::Display for BatchPanicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the batch service panicked: {}", self.message)
    }
}

impl StdError for BatchPanicked {}
