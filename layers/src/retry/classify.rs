use std::error::Error as StdError;

use tower_mqtt::{BoxError, Message};

use super::Transient;

/// Decides which failures are worth another attempt: the hook of a
/// [`RetryPolicy`](super::RetryPolicy).
///
/// Implemented by [`DefaultRetryClassifier`] and by every
/// `FnMut(&Message, &BoxError) -> bool + Clone` closure. The policy asks it only about
/// errors that carry no [`Reject`](tower_mqtt::Reject) or
/// [`Permanent`](tower_mqtt::Permanent) marker: those are never retried.
///
/// ```
/// use tower_mqtt::{BoxError, Message};
/// use tower_mqtt_layers::retry::{find_in_chain, RetryPolicy, Transient};
///
/// # #[derive(Debug)] struct DbError;
/// # impl std::fmt::Display for DbError {
/// #     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("db") }
/// # }
/// # impl std::error::Error for DbError {}
/// // Retry database errors and marked-transient errors, on every topic but `audit/#`.
/// let policy = RetryPolicy::new(3).classify(|message: &Message, error: &BoxError| {
///     !message.topic().starts_with("audit/")
///         && (find_in_chain::<DbError>(&**error).is_some()
///             || find_in_chain::<Transient>(&**error).is_some())
/// });
/// ```
pub trait RetryClassifier: Clone {
    /// Whether `message`, whose last attempt failed with `error`, should be tried
    /// again (if attempts remain). The message carries the number of the attempt that
    /// failed ([`Attempt`](super::Attempt)).
    fn is_transient(&mut self, message: &Message, error: &BoxError) -> bool;
}

impl<F> RetryClassifier for F
where
    F: FnMut(&Message, &BoxError) -> bool + Clone,
{
    fn is_transient(&mut self, message: &Message, error: &BoxError) -> bool {
        self(message, error)
    }
}

/// The default [`RetryClassifier`]: a failure is transient when its source chain holds
/// tower's timeout error ([`Elapsed`](tower::timeout::error::Elapsed)) or a
/// [`Transient`] marker. Everything else is not retried.
///
/// For tower's timeout to count per attempt, put `.timeout(..)` *below* the retry
/// layer (inside it), so each attempt has its own deadline.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct DefaultRetryClassifier;

impl RetryClassifier for DefaultRetryClassifier {
    fn is_transient(&mut self, _message: &Message, error: &BoxError) -> bool {
        let error: &(dyn StdError + 'static) = &**error;
        find_in_chain::<tower::timeout::error::Elapsed>(error).is_some()
            || find_in_chain::<Transient>(error).is_some()
    }
}

/// The first error of type `E` in `error`'s source chain (`error` itself included).
///
/// A helper for classifiers: layers wrap errors, so a plain `downcast_ref` on the
/// outermost error misses the ones wrapped inside.
///
/// ```
/// use tower_mqtt::{BoxError, Permanent};
/// use tower_mqtt_layers::retry::{find_in_chain, Transient};
///
/// let error: BoxError = Permanent::new(Transient::new("db busy")).into();
/// assert!(find_in_chain::<Transient>(&*error).is_some());
/// ```
pub fn find_in_chain<'a, E>(error: &'a (dyn StdError + 'static)) -> Option<&'a E>
where
    E: StdError + 'static,
{
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        next = e.source();
    }
    None
}
