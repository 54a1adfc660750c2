use std::time::Duration;

use tower::retry::backoff::{
    Backoff, ExponentialBackoff, ExponentialBackoffMaker, InvalidBackoff, MakeBackoff,
};
use tower::retry::Policy;
use tower::util::rng::{HasherRng, Rng};
use tower_mqtt::disposition::{marker, Disposition};
use tower_mqtt::{BoxError, Message};

use super::{DefaultRetryClassifier, RetryClassifier};

/// The shortest wait before the second attempt, unless [`RetryPolicy::backoff`] says
/// otherwise.
pub const DEFAULT_MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two attempts, unless [`RetryPolicy::backoff`] says
/// otherwise.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(10);
/// The share of each wait that is added at random, unless [`RetryPolicy::backoff`]
/// says otherwise.
pub const DEFAULT_JITTER: f64 = 0.5;

/// Which attempt at a message this is, 1-based: set in the message's
/// [`extensions`](Message::extensions) by the [`Retry`](super::Retry) service before
/// each call to the inner service.
///
/// ```
/// use tower_mqtt::Message;
/// use tower_mqtt_layers::retry::Attempt;
///
/// async fn handle(message: Message) {
///     if Attempt::of(&message) > 1 {
///         // Retried: an earlier attempt failed with a transient error.
///     }
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attempt(pub u32);

impl Attempt {
    /// The attempt number `message` carries; 1 when no retry layer has set it.
    ///
    /// ([`RetryPolicy`] used on its own with `tower::retry::Retry` sets it from the
    /// second attempt on: the first call sees none, which counts as 1 here.)
    #[must_use]
    pub fn of(message: &Message) -> u32 {
        message.extensions().get::<Self>().map_or(1, |a| a.0)
    }
}

/// A [`tower::retry::Policy`] for [`Message`]s: retry a failed call after an
/// exponential backoff with jitter, up to a number of attempts, when its
/// [`RetryClassifier`] says the error is transient.
///
/// * **Never retried:** success, and errors carrying a
///   [`Reject`](tower_mqtt::Reject) or [`Permanent`](tower_mqtt::Permanent) marker
///   (found anywhere in the source chain by [`tower_mqtt::disposition::marker`]),
///   whatever the classifier says: the service already decided that this message
///   will not get better.
/// * **Retried:** errors the classifier calls transient; by default
///   ([`DefaultRetryClassifier`]) tower's timeout error and errors marked
///   [`Transient`](super::Transient).
/// * **Attempts:** `max_attempts` counts every call, the first one included. When they
///   are exhausted the last error is returned unchanged, so the consumer's rule (or a
///   layer above) decides what happens to the message.
/// * **Backoff:** tower's [`ExponentialBackoffMaker`]: the n-th retry waits
///   `min * 2^(n-1)`, capped at `max`, plus up to `jitter` times that at random (never
///   beyond `max`). Every message draws its own jitter, so messages that failed
///   together do not come back together.
///
/// The policy works with tower's own `Retry` (`ServiceBuilder::retry(policy)`), but
/// the [`Retry`](super::Retry) service ([`RetryLayer`](super::RetryLayer),
/// [`ServiceBuilderExt::retry_messages`](crate::ServiceBuilderExt::retry_messages))
/// also marks the first attempt with [`Attempt`].
///
/// ```
/// use std::time::Duration;
/// use tower_mqtt_layers::retry::RetryPolicy;
///
/// // 4 calls at most; waits of 200 ms, 400 ms, 800 ms, each plus up to 10 %.
/// let policy = RetryPolicy::new(4)
///     .backoff(Duration::from_millis(200), Duration::from_secs(5), 0.1)
///     .expect("a valid backoff");
/// assert_eq!(policy.max_attempts(), 4);
/// ```
#[derive(Debug, Clone)]
pub struct RetryPolicy<C = DefaultRetryClassifier> {
    max_attempts: u32,
    /// A fresh backoff (no retry yet): each request session works on its own clone.
    backoff: ExponentialBackoff<FreshRng>,
    classifier: C,
    /// Calls finished in this request session.
    finished: u32,
}

impl RetryPolicy {
    /// Up to `max_attempts` calls per message (the first one included; 0 counts as 1),
    /// with the default backoff ([`DEFAULT_MIN_BACKOFF`], [`DEFAULT_MAX_BACKOFF`],
    /// [`DEFAULT_JITTER`]) and the [`DefaultRetryClassifier`].
    #[must_use]
    pub fn new(max_attempts: u32) -> Self {
        let backoff = exponential(DEFAULT_MIN_BACKOFF, DEFAULT_MAX_BACKOFF, DEFAULT_JITTER)
            .expect("the default backoff is valid");
        Self {
            max_attempts: max_attempts.max(1),
            backoff,
            classifier: DefaultRetryClassifier,
            finished: 0,
        }
    }
}

impl<C> RetryPolicy<C> {
    /// Wait `min` before the first retry, doubling for each further one up to `max`,
    /// plus a random share of up to `jitter` (0.0 for none, 1.0 for up to double).
    ///
    /// # Errors
    ///
    /// Tower's [`InvalidBackoff`] when `min > max`, `max` is zero, or `jitter` is
    /// negative, above 100 or NaN.
    pub fn backoff(
        mut self,
        min: Duration,
        max: Duration,
        jitter: f64,
    ) -> Result<Self, InvalidBackoff> {
        self.backoff = exponential(min, max, jitter)?;
        Ok(self)
    }

    /// Decide with `classifier` which errors are transient (see [`RetryClassifier`]).
    #[must_use]
    pub fn classify<C2: RetryClassifier>(self, classifier: C2) -> RetryPolicy<C2> {
        RetryPolicy {
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            classifier,
            finished: self.finished,
        }
    }

    /// The most calls one message gets, the first one included.
    #[must_use]
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }
}

impl<C, Res> Policy<Message, Res, BoxError> for RetryPolicy<C>
where
    C: RetryClassifier,
{
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        message: &mut Message,
        result: &mut Result<Res, BoxError>,
    ) -> Option<Self::Future> {
        let error = result.as_ref().err()?;
        self.finished += 1;
        if self.finished >= self.max_attempts {
            return None;
        }
        if matches!(
            marker(&**error),
            Some(Disposition::Reject | Disposition::RejectWith(_))
        ) {
            return None;
        }
        // The message still carries the failed attempt's number.
        if !self.classifier.is_transient(message, error) {
            return None;
        }
        message
            .extensions_mut()
            .insert(super::Attempt(self.finished + 1));
        crate::attempts::AttemptsSeen::record(message, self.finished + 1);
        Some(self.backoff.next_backoff())
    }

    fn clone_request(&mut self, message: &Message) -> Option<Message> {
        (self.max_attempts > 1).then(|| message.clone())
    }
}

fn exponential(
    min: Duration,
    max: Duration,
    jitter: f64,
) -> Result<ExponentialBackoff<FreshRng>, InvalidBackoff> {
    Ok(ExponentialBackoffMaker::new(min, max, jitter, FreshRng::new())?.make_backoff())
}

/// Tower's [`HasherRng`], except that a clone starts a new random sequence.
///
/// Tower's `Retry` clones the policy, and with it the backoff and its random number
/// generator, for every message: a plain `HasherRng` clone would repeat the same
/// sequence, giving every message the same "random" jitter.
#[derive(Debug)]
pub(super) struct FreshRng(HasherRng);

impl FreshRng {
    fn new() -> Self {
        // Each `RandomState` gets its own keys (std increments a per-thread seed).
        Self(HasherRng::new())
    }
}

impl Clone for FreshRng {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl Rng for FreshRng {
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
}
