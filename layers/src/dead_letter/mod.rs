//! Publish a message that cannot be processed to a dead-letter topic, then let the
//! consumer acknowledge it (feature `dead-letter`).
//!
//! [`DeadLetter`] looks at each failure the way the consumer will
//! ([`Origin::disposition`](tower_mqtt::Origin::disposition): markers first, then the
//! consumer's rule). A failure the consumer would **acknowledge** — a payload that does
//! not decode ([`Reject`](tower_mqtt::Reject)), a [`Permanent`](tower_mqtt::Permanent)
//! error, a message past its delivery limit, or any failure under
//! `OnFailure::Ack`/`Reject` — would otherwise be gone. This layer first publishes it
//! to a dead-letter topic through a [`tower_mqtt::Publisher`] (QoS 1), and
//! **only once the broker has confirmed the dead letter** returns `Ok`, so the consumer
//! acknowledges the original. If the dead letter is not confirmed (the broker refused
//! it, the publisher timed out), the layer returns [`DeadLetterFailed`] inside a
//! [`Redeliver`](tower_mqtt::Redeliver) marker: the original is not acknowledged and
//! comes back. Failures the consumer would redeliver pass through untouched (they come
//! back anyway), unless [`DeadLetterLayer::on_any_failure`] says otherwise.
//!
//! # What a dead letter carries
//!
//! With **MQTT 5** the payload is the original's, unchanged, and these user properties
//! follow the original's own user properties (its content type, payload format
//! indicator, response topic and correlation data are kept; its message expiry is not):
//!
//! | user property | value |
//! |---|---|
//! | `x-original-topic` | the topic the message arrived on |
//! | `x-error` | the error's message, with its sources (`a: b: c`) |
//! | `x-attempts` | calls made for it in this delivery (the retry layer's attempts; 1 without it) |
//! | `x-delivery-count` | [`Message::delivery_count`](tower_mqtt::Message::delivery_count): how many times the broker has delivered it |
//!
//! **MQTT 3.1.1** has no properties, so the payload is an envelope: the same names as
//! header lines (`name: value`, one per line, line breaks in values replaced by
//! spaces), the original's user properties as `x-user-property: name=value` lines, an
//! empty line, then the original payload byte for byte:
//!
//! ```text
//! x-original-topic: readings/7
//! x-error: payload is not valid JSON for Reading: expected value at line 1 column 1
//! x-attempts: 1
//! x-delivery-count: 1
//!
//! <original payload>
//! ```
//!
//! # Where it goes in a stack
//!
//! On top, above the layers whose errors it should see (decode, retry, a delivery
//! limit), so that it sees each message's final result:
//!
//! ```no_run
//! # #[cfg(all(feature = "json", feature = "retry", feature = "catch-panic"))]
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use tower::ServiceBuilder;
//! use tower_mqtt::{BoxError, Config, Consumer, QoS};
//! use tower_mqtt_layers::decode::Decoded;
//! use tower_mqtt_layers::retry::RetryPolicy;
//! use tower_mqtt_layers::ServiceBuilderExt;
//!
//! #[derive(serde::Deserialize)]
//! struct Reading {
//!     celsius: f64,
//! }
//!
//! let consumer = Consumer::builder(Config::new("127.0.0.1").client_id("ingest"))
//!     .topic("readings/#", QoS::AtLeastOnce)
//!     .build()?;
//! let publisher = consumer.publisher()?;
//! let service = ServiceBuilder::new()
//!     .dead_letter(publisher, |m| format!("dead/{}", m.topic()))
//!     .catch_panic()
//!     .retry_messages(RetryPolicy::new(3))
//!     .decode_json::<Reading>()
//!     .service_fn(|reading: Decoded<Reading>| async move {
//!         let _ = reading.value.celsius;
//!         Ok::<_, BoxError>(())
//!     });
//! consumer.run(service, tower_mqtt::signal::shutdown_on_signals()).await?;
//! # Ok(()) }
//! ```

mod error;
mod future;
mod layer;
mod letter;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_mqtt::{BoxError, Message, Publisher};
use tower_service::Service;

use crate::attempts::AttemptsSeen;

pub use self::error::DeadLetterFailed;
pub use self::future::ResponseFuture;
pub use self::layer::DeadLetterLayer;

/// Which failures go to the dead-letter topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    /// Those the consumer would acknowledge (they would be gone otherwise).
    WouldBeDropped,
    /// Every failure.
    AnyFailure,
}

/// What every clone of one dead-letter layer shares.
#[derive(Clone)]
struct Shared {
    publisher: Publisher,
    topic: Arc<dyn Fn(&Message) -> String + Send + Sync>,
    when: When,
}

/// Publishes failed messages to a dead-letter topic before the consumer acknowledges
/// them. See the [module docs](self).
#[derive(Clone)]
pub struct DeadLetter<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> DeadLetter<S> {
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

impl<S: fmt::Debug> fmt::Debug for DeadLetter<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetter")
            .field("inner", &self.inner)
            .field("publisher", &self.shared.publisher)
            .field("when", &self.shared.when)
            .finish_non_exhaustive()
    }
}

impl<S> Service<Message> for DeadLetter<S>
where
    S: Service<Message>,
    S::Response: Default,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut message: Message) -> Self::Future {
        let attempts = AttemptsSeen::install(&mut message);
        let copy = message.clone();
        ResponseFuture::new(
            self.inner.call(message),
            copy,
            attempts,
            self.shared.clone(),
        )
    }
}

#[cfg(test)]
mod tests;
