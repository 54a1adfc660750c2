//! Turn a panic in the service into an error for that one message (feature
//! `catch-panic`).
//!
//! [`CatchPanic`] catches a panic in the inner service's `call` and in the future it
//! returned, like tower-http's `CatchPanic`, and returns a [`Panicked`] error naming
//! the panic message instead. The consumer then treats the message like any other
//! failure: its own rule applies. By default that rule redelivers it, so a message
//! that always panics comes back each time the session resumes: choose
//! `OnFailure::Reject`, or a classifier
//! ([`ConsumerBuilder::classify`](tower_mqtt::ConsumerBuilder::classify)) that rejects
//! `Panicked` errors, to stop that.
//!
//! **Without this layer** the consumer catches the panic itself: the message fails
//! with `tower_mqtt::ServicePanicked` and the connection carries on. What this layer
//! adds is *where* the panic becomes an error: inside the stack, so that the layers
//! above it (a dead-letter layer, your own) see the failure as they
//! see any other. Put it just below those, above everything that may panic.
//!
//! What it does not change: the panic hook still runs (the default hook prints the
//! panic to stderr), a panic in `poll_ready` is not caught (there is no message to
//! fail), and state the service shares across calls (a `Mutex` it held while
//! panicking, for instance) stays as the panic left it.
//!
//! ```
//! use tower::ServiceBuilder;
//! use tower_mqtt::{BoxError, Message};
//! use tower_mqtt_layers::ServiceBuilderExt;
//!
//! let service = ServiceBuilder::new()
//!     .catch_panic()
//!     .service_fn(|message: Message| async move {
//!         let text = std::str::from_utf8(message.payload()).expect("UTF-8 payloads only");
//!         let _ = text;
//!         Ok::<_, BoxError>(())
//!     });
//! # let _ = service;
//! ```

mod error;
mod future;
mod layer;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::task::{Context, Poll};

use tower_mqtt::BoxError;
use tower_service::Service;

pub use self::error::Panicked;
pub use self::future::ResponseFuture;
pub use self::layer::CatchPanicLayer;

/// Catches panics in the inner service's `call` and response future and returns them
/// as [`Panicked`] errors. See the [module docs](self).
///
/// It takes any request type, so it also fits below layers that change the request
/// (a [`Decode`](crate::decode::Decode) layer, for instance).
#[derive(Debug, Clone, Copy)]
pub struct CatchPanic<S> {
    inner: S,
}

impl<S> CatchPanic<S> {
    /// Catch the panics of `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consume `self`, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, R> Service<R> for CatchPanic<S>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: R) -> Self::Future {
        match catch_unwind(AssertUnwindSafe(|| self.inner.call(request))) {
            Ok(future) => ResponseFuture::called(future),
            Err(payload) => ResponseFuture::panicked(Panicked::from_payload(&*payload)),
        }
    }
}

#[cfg(test)]
mod tests;
