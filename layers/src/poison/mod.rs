//! Stop a message that fails on every delivery, a *poison message*, from coming back
//! forever (feature `poison`).
//!
//! Under `OnFailure::Redeliver` (the consumer's default) a failed message is not
//! acknowledged and the session is resumed so that the broker sends it again. A message
//! that can never succeed then comes back on every resume and keeps a slot of the
//! in-flight window busy for good. [`MaxDeliveries`] lets the inner service see a
//! message at most `limit` times, counted by
//! [`Message::delivery_count`]: from delivery `limit + 1` on, it does not call the inner
//! service and returns a [`TooManyDeliveries`] error inside a
//! [`Permanent`](tower_mqtt::Permanent) marker. So:
//!
//! * the consumer acknowledges the message as failed, whatever its `on_failure`
//!   (`Permanent` is `Disposition::Reject`: MQTT 5 reason code 0x80, MQTT 3.1.1 a plain
//!   acknowledgement), and the broker does not send it again;
//! * a dead-letter layer above it, which takes the errors the consumer classifies as
//!   permanent, gets it with the message; without one, the message is dropped after
//!   `limit` failed deliveries;
//! * a [`retry`](crate::retry) layer never retries it.
//!
//! What the count can and cannot know is in [`Message::delivery_count`]: it lives in
//! the memory of one process and one connection slot, and a message the broker resends
//! with DUP set counts at least 2 even when it never reached the service before (the
//! broker sets DUP on its whole resent window). So `limit` is best read as "at least
//! this many deliveries were attempted", and should leave room for that: 3 to 10 is
//! typical, 1 stops a message on its first redelivery.
//!
//! ```
//! use tower::ServiceBuilder;
//! use tower_mqtt::{BoxError, Message};
//! use tower_mqtt_layers::ServiceBuilderExt;
//!
//! # fn stack() -> Result<(), tower_mqtt_layers::poison::InvalidMaxDeliveries> {
//! let service = ServiceBuilder::new()
//!     .max_deliveries(5)? // the sixth delivery is acknowledged as failed, not processed
//!     .service_fn(|message: Message| async move {
//!         let _ = message.delivery_count(); // 1 to 5 here
//!         Ok::<_, BoxError>(())
//!     });
//! # let _ = service;
//! # Ok(()) }
//! # stack().unwrap();
//! ```
//!
//! [`Message::delivery_count`]: tower_mqtt::Message::delivery_count

mod error;
mod future;
mod layer;

use std::task::{Context, Poll};

use tower_mqtt::{BoxError, Message};
use tower_service::Service;

pub use self::error::{InvalidMaxDeliveries, TooManyDeliveries};
pub use self::future::ResponseFuture;
pub use self::layer::MaxDeliveriesLayer;

/// Calls the inner service for a message's first `limit` deliveries only; later ones
/// fail permanently with [`TooManyDeliveries`]. See the [module docs](self).
#[derive(Debug, Clone, Copy)]
pub struct MaxDeliveries<S> {
    inner: S,
    limit: u32,
}

impl<S> MaxDeliveries<S> {
    /// Let `inner` see each message at most `limit` times.
    ///
    /// # Errors
    ///
    /// [`InvalidMaxDeliveries::Zero`] when `limit` is 0.
    pub fn new(inner: S, limit: u32) -> Result<Self, InvalidMaxDeliveries> {
        let layer = MaxDeliveriesLayer::new(limit)?;
        Ok(tower_layer::Layer::layer(&layer, inner))
    }

    /// The most deliveries of a message the inner service sees.
    pub fn limit(&self) -> u32 {
        self.limit
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

impl<S> Service<Message> for MaxDeliveries<S>
where
    S: Service<Message>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, message: Message) -> Self::Future {
        if message.delivery_count() > self.limit {
            // The inner service's readiness stays reserved for the next message.
            ResponseFuture::too_many(TooManyDeliveries::new(&message, self.limit))
        } else {
            ResponseFuture::called(self.inner.call(message))
        }
    }
}

#[cfg(test)]
mod tests;
