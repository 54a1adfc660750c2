use std::error::Error as StdError;
use std::fmt;

use tower_mqtt::BoxError;

/// A [`DedupStore`](super::DedupStore) operation failed (Redis unreachable, timed out,
/// refused the command, ...).
///
/// When a claim fails the layer returns it inside a
/// [`Redeliver`](tower_mqtt::Redeliver) marker, before calling the service: the message
/// is not acknowledged and comes back, so it is neither processed without the check
/// nor dropped.
///
/// ```
/// use tower_mqtt_layers::dedup::StoreError;
///
/// let error = StoreError::new("claim", "connection refused");
/// assert_eq!(error.operation(), "claim");
/// assert_eq!(error.to_string(), "dedup store: claim failed: connection refused");
/// ```
#[derive(Debug)]
pub struct StoreError {
    operation: &'static str,
    source: BoxError,
}

impl StoreError {
    /// `operation` (`"claim"`, `"record"`, `"release"`) failed because of `source`.
    pub fn new(operation: &'static str, source: impl Into<BoxError>) -> Self {
        Self {
            operation,
            source: source.into(),
        }
    }

    /// The operation that failed.
    #[must_use]
    pub fn operation(&self) -> &'static str {
        self.operation
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dedup store: {} failed: {}", self.operation, self.source)
    }
}

impl StdError for StoreError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

/// Another call holds the lease on this message's id: it is being processed right now
/// (by another connection or process), so this copy is not. Returned inside a
/// [`Redeliver`](tower_mqtt::Redeliver) marker: the copy is not acknowledged and comes
/// back, and by then the id is recorded (the copy is acknowledged as a duplicate) or
/// the lease is gone (the copy is processed).
///
/// ```
/// use tower_mqtt_layers::dedup::InProgress;
///
/// let error = InProgress::new("order-17");
/// assert_eq!(error.key(), "order-17");
/// assert!(error.to_string().starts_with("message id \"order-17\" is being processed"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InProgress {
    key: String,
}

impl InProgress {
    /// The id `key` is leased by another call.
    pub fn new(key: impl Into<String>) -> Self {
        Self { key: key.into() }
    }

    /// The message id.
    #[must_use]
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl fmt::Display for InProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "message id {:?} is being processed by another call (its dedup lease is held): \
             this copy is not acknowledged and comes back",
            self.key
        )
    }
}

impl StdError for InProgress {}

/// A message without an id under
/// [`DedupLayer::fail_without_key`](super::DedupLayer::fail_without_key): returned
/// inside a [`Permanent`](tower_mqtt::Permanent) marker, so the message is acknowledged
/// as failed (or dead-lettered by a layer above) instead of being processed without
/// the check.
///
/// ```
/// use tower_mqtt::testing::test_message;
/// use tower_mqtt_layers::dedup::NoMessageKey;
///
/// let error = NoMessageKey::new(&test_message("orders/eu", "{}"), "user property \"message-id\"");
/// assert_eq!(error.topic(), "orders/eu");
/// assert_eq!(
///     error.to_string(),
///     "the message on topic \"orders/eu\" has no dedup key (user property \"message-id\"): \
///      not processed; publish it with the id, or let such messages pass with \
///      DedupLayer::pass_without_key"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoMessageKey {
    topic: String,
    source: String,
}

impl NoMessageKey {
    /// `message` has no key; `source` says where the key was looked for.
    #[must_use]
    pub fn new(message: &tower_mqtt::Message, source: &str) -> Self {
        Self {
            topic: message.topic().to_owned(),
            source: source.to_owned(),
        }
    }

    /// The topic of the message.
    #[must_use]
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

impl fmt::Display for NoMessageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the message on topic {:?} has no dedup key ({}): not processed; publish it with \
             the id, or let such messages pass with DedupLayer::pass_without_key",
            self.topic, self.source
        )
    }
}

impl StdError for NoMessageKey {}

/// A dedup option is out of range; the text names the option and the fix.
///
/// ```
/// use std::time::Duration;
/// use tower_mqtt_layers::dedup::{DedupLayer, InvalidDedup, MemoryStore};
///
/// assert_eq!(MemoryStore::new(0).unwrap_err(), InvalidDedup::ZeroCapacity);
/// let layer = DedupLayer::new(MemoryStore::new(10_000)?);
/// let error = layer.ttl(Duration::ZERO).unwrap_err();
/// assert!(error.to_string().starts_with("dedup ttl must be above zero"));
/// # Ok::<(), InvalidDedup>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidDedup {
    /// `ttl` was zero: nothing would be remembered.
    ZeroTtl,
    /// `lease` was zero: concurrent copies would not be held off.
    ZeroLease,
    /// `MemoryStore::new(0)`: nothing would be remembered.
    ZeroCapacity,
    /// `user_property("")`: no user property has an empty name.
    EmptyPropertyName,
}

impl fmt::Display for InvalidDedup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ZeroTtl => {
                "dedup ttl must be above zero: it is how long a processed id is remembered, and \
                 must exceed the time within which a copy can come back (the broker's \
                 redelivery horizon, the publishers' retries); e.g. Duration::from_secs(86_400)"
            }
            Self::ZeroLease => {
                "dedup lease must be above zero: it holds off other copies while one is \
                 processed, and must exceed the service's longest call (its timeout); e.g. \
                 Duration::from_secs(30)"
            }
            Self::ZeroCapacity => {
                "MemoryStore capacity must be at least 1 (ids remembered); size it to the \
                 messages received within the ttl"
            }
            Self::EmptyPropertyName => {
                "dedup user_property name must not be empty; the default is \"message-id\""
            }
        })
    }
}

impl StdError for InvalidDedup {}
