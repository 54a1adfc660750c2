use std::error::Error as StdError;
use std::fmt;

use tower_mqtt::BoxError;

/// Marker error: this failure may go away if the message is simply tried again (a
/// database deadlock, a busy downstream service), so the [`Retry`](super::Retry)
/// layer's default classifier retries it.
///
/// It works like the core's markers ([`Reject`](tower_mqtt::Reject),
/// [`Permanent`](tower_mqtt::Permanent), [`Redeliver`](tower_mqtt::Redeliver)): it
/// wraps the real error, and it is found anywhere in the error's source chain, so a
/// layer that wraps the error does not hide it. Unlike them it does not decide the
/// message's disposition: once the attempts are exhausted the consumer's own rule
/// applies (by default the message is redelivered).
///
/// ```
/// use tower_mqtt::BoxError;
/// use tower_mqtt_layers::retry::Transient;
///
/// # #[derive(Debug)] struct DbError { deadlock: bool }
/// # impl std::fmt::Display for DbError {
/// #     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("db") }
/// # }
/// # impl std::error::Error for DbError {}
/// fn classify(e: DbError) -> BoxError {
///     if e.deadlock {
///         Transient::new(e).into()
///     } else {
///         e.into()
///     }
/// }
/// let e = classify(DbError { deadlock: true });
/// assert_eq!(e.to_string(), "transient failure: db");
/// ```
#[derive(Debug)]
pub struct Transient {
    source: BoxError,
}

impl Transient {
    /// A transient failure caused by `source`.
    pub fn new(source: impl Into<BoxError>) -> Self {
        Self {
            source: source.into(),
        }
    }
}

impl fmt::Display for Transient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "transient failure: {}", self.source)
    }
}

impl StdError for Transient {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}
