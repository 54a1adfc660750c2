//! Decode payloads into typed values before the service sees them (feature `decode`;
//! JSON with feature `json`).
//!
//! [`Decode`] turns each [`Message`]'s payload into a `T` with a [`Decoder`] and calls
//! the inner service with a [`Decoded<T>`]: the message (topic, properties,
//! extensions, everything) and the value. The inner service is a
//! `Service<Decoded<T>>`; the stack above it still takes `Message`s.
//!
//! A payload that does not decode never reaches the inner service. Its error is a
//! [`DecodeError`] (topic, format, and the decoder's message, e.g. serde's) inside a
//! [`Reject`] marker with reason [`RejectReason::PayloadFormatInvalid`]:
//!
//! * the consumer acknowledges the message as failed (MQTT 5 sends reason code 0x99,
//!   MQTT 3.1.1 a plain acknowledgement), whatever its `on_failure`, so it is never
//!   redelivered: it would not decode the next time either;
//! * a [`retry`](crate::retry) layer above never retries it.
//!
//! ```
//! # #[cfg(feature = "json")] {
//! use tower::ServiceBuilder;
//! use tower_mqtt::BoxError;
//! use tower_mqtt_layers::decode::Decoded;
//! use tower_mqtt_layers::ServiceBuilderExt;
//!
//! #[derive(serde::Deserialize)]
//! struct Reading {
//!     sensor: String,
//!     celsius: f64,
//! }
//!
//! let service = ServiceBuilder::new()
//!     .decode_json::<Reading>()
//!     .service_fn(|Decoded { message, value }: Decoded<Reading>| async move {
//!         println!("{} on {}: {} °C", value.sensor, message.topic(), value.celsius);
//!         Ok::<_, BoxError>(())
//!     });
//! # let _ = service;
//! # }
//! ```
//!
//! [`Reject`]: tower_mqtt::Reject
//! [`RejectReason::PayloadFormatInvalid`]: tower_mqtt::RejectReason::PayloadFormatInvalid

mod decoder;
mod error;
mod future;
mod layer;

use std::fmt;
use std::marker::PhantomData;
use std::task::{Context, Poll};

use tower_mqtt::{BoxError, Message, Reject, RejectReason};
use tower_service::Service;

pub use self::decoder::Decoder;
#[cfg(feature = "json")]
pub use self::decoder::Json;
pub use self::error::DecodeError;
pub use self::future::ResponseFuture;
pub use self::layer::DecodeLayer;

/// What the inner service of [`Decode`] receives: the message and its decoded payload.
///
/// The message is all there: its payload still holds the original bytes, and layers
/// above can have left data in its extensions.
#[derive(Debug, Clone)]
pub struct Decoded<T> {
    /// The message as received.
    pub message: Message,
    /// Its payload, decoded.
    pub value: T,
}

impl<T> Decoded<T> {
    /// The message and the value.
    pub fn into_parts(self) -> (Message, T) {
        (self.message, self.value)
    }
}

/// Decodes every payload into a `T` and calls the inner service with a
/// [`Decoded<T>`]; a payload that does not decode is rejected. See the
/// [module docs](self).
pub struct Decode<S, D, T> {
    inner: S,
    decoder: D,
    _value: PhantomData<fn() -> T>,
}

impl<S, D, T> Decode<S, D, T> {
    /// Decode with `decoder` before calling `inner`.
    pub fn new(inner: S, decoder: D) -> Self {
        Self {
            inner,
            decoder,
            _value: PhantomData,
        }
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

impl<S: Clone, D: Clone, T> Clone for Decode<S, D, T> {
    fn clone(&self) -> Self {
        Self::new(self.inner.clone(), self.decoder.clone())
    }
}

impl<S: fmt::Debug, D: fmt::Debug, T> fmt::Debug for Decode<S, D, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decode")
            .field("inner", &self.inner)
            .field("decoder", &self.decoder)
            .field("value", &std::any::type_name::<T>())
            .finish()
    }
}

impl<S, D, T> Service<Message> for Decode<S, D, T>
where
    S: Service<Decoded<T>>,
    S::Error: Into<BoxError>,
    D: Decoder<T>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, message: Message) -> Self::Future {
        match self.decoder.decode(&message) {
            Ok(value) => ResponseFuture::called(self.inner.call(Decoded { message, value })),
            Err(e) => {
                let error = DecodeError::new(&message, self.decoder.format(), e);
                ResponseFuture::failed(
                    Reject::new(RejectReason::PayloadFormatInvalid, error).into(),
                )
            }
        }
    }
}

#[cfg(all(test, feature = "json"))]
mod tests;
