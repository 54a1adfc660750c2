use std::fmt;
use std::marker::PhantomData;

use tower_layer::Layer;

#[cfg(feature = "json")]
use super::Json;
use super::{Decode, Decoder};

/// [`Layer`] that decodes every payload into a `T` with [`Decode`]; see the
/// [module docs](super).
///
/// ```
/// # #[cfg(feature = "json")] {
/// use tower::ServiceBuilder;
/// use tower_mqtt::BoxError;
/// use tower_mqtt_layers::decode::{DecodeLayer, Decoded};
///
/// let service = ServiceBuilder::new()
///     .layer(DecodeLayer::<_, Vec<u32>>::json())
///     .service_fn(|ids: Decoded<Vec<u32>>| async move {
///         let _ = ids.value.len();
///         Ok::<_, BoxError>(())
///     });
/// # let _ = service;
/// # }
/// ```
pub struct DecodeLayer<D, T> {
    decoder: D,
    _value: PhantomData<fn() -> T>,
}

impl<D, T> DecodeLayer<D, T> {
    /// Decode with `decoder`.
    pub fn new(decoder: D) -> Self
    where
        D: Decoder<T>,
    {
        Self {
            decoder,
            _value: PhantomData,
        }
    }
}

#[cfg(feature = "json")]
impl<T> DecodeLayer<Json, T>
where
    T: serde::de::DeserializeOwned,
{
    /// Decode JSON payloads ([`Json`]).
    #[must_use]
    pub fn json() -> Self {
        Self::new(Json)
    }
}

impl<D: Clone, T> Clone for DecodeLayer<D, T> {
    fn clone(&self) -> Self {
        Self {
            decoder: self.decoder.clone(),
            _value: PhantomData,
        }
    }
}

impl<D: fmt::Debug, T> fmt::Debug for DecodeLayer<D, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecodeLayer")
            .field("decoder", &self.decoder)
            .field("value", &std::any::type_name::<T>())
            .finish()
    }
}

impl<S, D: Clone, T> Layer<S> for DecodeLayer<D, T> {
    type Service = Decode<S, D, T>;

    fn layer(&self, inner: S) -> Self::Service {
        Decode::new(inner, self.decoder.clone())
    }
}
