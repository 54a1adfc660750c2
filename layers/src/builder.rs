//! [`ServiceBuilderExt`]: the failure-handling layers as `tower::ServiceBuilder`
//! methods.

use tower::ServiceBuilder;
use tower_layer::Stack;

#[cfg(feature = "json")]
use crate::decode::Json;
#[cfg(feature = "decode")]
use crate::decode::{DecodeLayer, Decoder};
#[cfg(feature = "retry")]
use crate::retry::{RetryLayer, RetryPolicy};

/// Adds this crate's failure-handling layers to [`tower::ServiceBuilder`], so a stack
/// reads top to bottom in the order a message goes through it (each method behind its
/// layer's feature):
///
/// ```
/// # #[cfg(all(feature = "retry", feature = "json"))] {
/// use std::time::Duration;
/// use tower::ServiceBuilder;
/// use tower_mqtt::BoxError;
/// use tower_mqtt_layers::decode::Decoded;
/// use tower_mqtt_layers::retry::RetryPolicy;
/// use tower_mqtt_layers::ServiceBuilderExt;
///
/// #[derive(serde::Deserialize)]
/// struct Reading {
///     celsius: f64,
/// }
///
/// let service = ServiceBuilder::new()
///     .retry_messages(RetryPolicy::new(3)) // transient failures: up to 3 calls
///     .timeout(Duration::from_secs(5)) //   per attempt
///     .decode_json::<Reading>() //          invalid JSON: rejected (0x99), never retried
///     .service_fn(|reading: Decoded<Reading>| async move {
///         let _ = reading.value.celsius;
///         Ok::<_, BoxError>(())
///     });
/// # let _ = service;
/// # }
/// ```
///
/// The trait is sealed: it is implemented for `ServiceBuilder` only.
pub trait ServiceBuilderExt<L>: sealed::Sealed + Sized {
    /// Retry transient failures with `policy`: [`RetryLayer`].
    #[cfg(feature = "retry")]
    #[must_use]
    fn retry_messages<C>(self, policy: RetryPolicy<C>) -> ServiceBuilder<Stack<RetryLayer<C>, L>>;

    /// Decode each payload with `decoder` and hand the inner service a
    /// [`Decoded<T>`](crate::decode::Decoded): [`DecodeLayer`].
    #[cfg(feature = "decode")]
    #[must_use]
    fn decode<T, D>(self, decoder: D) -> ServiceBuilder<Stack<DecodeLayer<D, T>, L>>
    where
        D: Decoder<T>;

    /// Decode each payload as JSON into a `T`: [`DecodeLayer::json`].
    #[cfg(feature = "json")]
    #[must_use]
    fn decode_json<T>(self) -> ServiceBuilder<Stack<DecodeLayer<Json, T>, L>>
    where
        T: serde::de::DeserializeOwned;
}

impl<L> sealed::Sealed for ServiceBuilder<L> {}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    #[cfg(feature = "retry")]
    fn retry_messages<C>(self, policy: RetryPolicy<C>) -> ServiceBuilder<Stack<RetryLayer<C>, L>> {
        self.layer(RetryLayer::new(policy))
    }

    #[cfg(feature = "decode")]
    fn decode<T, D>(self, decoder: D) -> ServiceBuilder<Stack<DecodeLayer<D, T>, L>>
    where
        D: Decoder<T>,
    {
        self.layer(DecodeLayer::new(decoder))
    }

    #[cfg(feature = "json")]
    fn decode_json<T>(self) -> ServiceBuilder<Stack<DecodeLayer<Json, T>, L>>
    where
        T: serde::de::DeserializeOwned,
    {
        self.layer(DecodeLayer::json())
    }
}

mod sealed {
    #[allow(unreachable_pub)] // Sealed: public in a private module, so nobody can name it.
    pub trait Sealed {}
}
