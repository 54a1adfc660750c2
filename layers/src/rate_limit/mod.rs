//! A rate limit shared by every connection of a consumer (feature `rate-limit`).
//!
//! `Consumer::run` clones the service stack once per connection, so a limit must be
//! `Clone` and its budget shared by the clones to hold for the whole consumer. tower's
//! `RateLimit` is neither: it is not `Clone` (so `run` does not take it without a
//! `Buffer` in front), and each instance would count for itself.
//! [`SharedRateLimit`] is a token bucket behind an `Arc`: clones share it, and
//! `poll_ready` waits (a tokio timer) until the bucket has a permit, so the consumer
//! reads no more from the broker meanwhile. The budget is spent when `poll_ready`
//! returns ready, i.e. once per message the consumer then hands to the service.
//!
//! ```
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//! use tower_mqtt::{BoxError, Message};
//! use tower_mqtt_layers::ServiceBuilderExt;
//!
//! // At most 1,000 messages a second into the database, whatever the connections.
//! let service = ServiceBuilder::new()
//!     .shared_rate_limit(1_000, Duration::from_secs(1))?
//!     .service_fn(|_message: Message| async { Ok::<_, BoxError>(()) });
//! # let _ = service;
//! # Ok::<_, tower_mqtt_layers::rate_limit::InvalidRate>(())
//! ```
//!
//! The limit counts service calls, so put it where the calls you want to limit are:
//! above [`retry`](crate::retry) a retried message counts once, below it every attempt
//! counts. It limits one consumer's stack; several processes each have their own.
//!
#![doc = include_str!("../../docs/clone.md")]

mod bucket;
mod error;
mod layer;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::time::{sleep_until, Instant, Sleep};
use tower_service::Service;

use self::bucket::Bucket;
pub use self::error::InvalidRate;
pub use self::layer::SharedRateLimitLayer;

/// Lets at most a set number of calls through per period, over all its clones; see the
/// [module docs](self). Made by [`SharedRateLimitLayer`].
#[derive(Debug)]
pub struct SharedRateLimit<S> {
    inner: S,
    bucket: Arc<Bucket>,
    /// This clone holds a permit from `poll_ready` for its next call.
    permit: bool,
    /// Waiting for the next permit.
    wait: Option<Pin<Box<Sleep>>>,
}

impl<S> SharedRateLimit<S> {
    fn new(inner: S, bucket: Arc<Bucket>) -> Self {
        Self {
            inner,
            bucket,
            permit: false,
            wait: None,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Clone> Clone for SharedRateLimit<S> {
    fn clone(&self) -> Self {
        Self::new(self.inner.clone(), self.bucket.clone())
    }
}

impl<S, R> Service<R> for SharedRateLimit<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        while !self.permit {
            if let Some(wait) = &mut self.wait {
                ready!(wait.as_mut().poll(cx));
            }
            match self.bucket.try_acquire(Instant::now()) {
                Ok(()) => {
                    self.permit = true;
                    self.wait = None;
                }
                Err(at) => match &mut self.wait {
                    Some(wait) => wait.as_mut().reset(at),
                    None => self.wait = Some(Box::pin(sleep_until(at))),
                },
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        assert!(
            std::mem::take(&mut self.permit),
            "SharedRateLimit::call without poll_ready returning Ready first"
        );
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests;
