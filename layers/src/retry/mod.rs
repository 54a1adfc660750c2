//! Retry transient failures with exponential backoff and jitter (feature `retry`).
//!
//! [`Retry`] is tower's own [`Retry`](tower::retry::Retry) service driven by a
//! [`RetryPolicy`] for [`Message`]s, plus one thing tower's cannot do: it marks every
//! call with its 1-based [`Attempt`] number in the message's extensions, the first one
//! included.
//!
//! | error of the failed call | retried? |
//! |---|---|
//! | carries a [`Reject`](tower_mqtt::Reject) or [`Permanent`](tower_mqtt::Permanent) marker (anywhere in the source chain) | never |
//! | the classifier calls it transient: by default tower's timeout error ([`Elapsed`](tower::timeout::error::Elapsed)) or a [`Transient`] marker | yes, while attempts remain |
//! | anything else | no |
//!
//! A retried message is tried again inside the same service call: the consumer sees
//! one call, its in-flight slot stays taken during the backoff, and its
//! acknowledgement waits for it (the ones behind it too, acknowledgements go out in
//! arrival order). Nothing goes back to the broker. When the attempts are exhausted
//! the last error is returned as it is, so the consumer's rule decides (by default:
//! redeliver the message by resuming the session). A shutdown that outlasts the
//! drain timeout abandons a message that is still being retried; the broker sends it
//! again on the next session.
//!
//! Put the layer **above** a per-attempt timeout and **above** a decode layer: every
//! attempt then gets its own deadline, and a payload that does not decode is rejected
//! at once (its error carries a `Reject` marker).
//!
//! ```
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//! use tower_mqtt::{BoxError, Message};
//! use tower_mqtt_layers::retry::{Attempt, RetryPolicy, Transient};
//! use tower_mqtt_layers::ServiceBuilderExt;
//!
//! let policy = RetryPolicy::new(3)
//!     .backoff(Duration::from_millis(50), Duration::from_secs(2), 0.5)
//!     .expect("a valid backoff");
//! let service = ServiceBuilder::new()
//!     .retry_messages(policy)
//!     .timeout(Duration::from_secs(5))
//!     .service_fn(|message: Message| async move {
//!         if Attempt::of(&message) < 2 {
//!             // The database was busy: worth another try.
//!             return Err::<(), BoxError>(Transient::new("deadlock").into());
//!         }
//!         Ok(())
//!     });
//! # let _ = service;
//! ```

mod classify;
mod error;
mod future;
mod layer;
mod policy;

use std::task::{Context, Poll};

use tower_mqtt::{BoxError, Message};
use tower_service::Service;

pub use self::classify::{find_in_chain, DefaultRetryClassifier, RetryClassifier};
pub use self::error::Transient;
pub use self::future::ResponseFuture;
pub use self::layer::RetryLayer;
pub use self::policy::{
    Attempt, RetryPolicy, DEFAULT_JITTER, DEFAULT_MAX_BACKOFF, DEFAULT_MIN_BACKOFF,
};
pub use tower::retry::backoff::InvalidBackoff;

/// Retries transient failures of the inner service: tower's
/// [`Retry`](tower::retry::Retry) with a [`RetryPolicy`], marking each call with its
/// [`Attempt`]. See the [module docs](self).
///
/// The inner service must be `Clone` (each message's retries call a clone) and return
/// [`BoxError`], as tower's own layers do.
#[derive(Debug, Clone)]
pub struct Retry<S, C = DefaultRetryClassifier> {
    inner: tower::retry::Retry<RetryPolicy<C>, S>,
}

impl<S, C> Retry<S, C> {
    /// Retry `inner` with `policy`.
    pub fn new(inner: S, policy: RetryPolicy<C>) -> Self {
        Self {
            inner: tower::retry::Retry::new(policy, inner),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        self.inner.get_ref()
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        self.inner.get_mut()
    }

    /// Consume `self`, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner.into_inner()
    }
}

impl<S, C> Service<Message> for Retry<S, C>
where
    S: Service<Message, Error = BoxError> + Clone,
    C: RetryClassifier,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut message: Message) -> Self::Future {
        message.extensions_mut().insert(Attempt(1));
        ResponseFuture::new(self.inner.call(message))
    }
}

#[cfg(test)]
mod tests;
