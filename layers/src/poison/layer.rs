use tower_layer::Layer;

use super::{InvalidMaxDeliveries, MaxDeliveries};

/// [`Layer`] that stops a message above `limit` deliveries with [`MaxDeliveries`]; see
/// the [module docs](super).
///
/// ```
/// use tower::ServiceBuilder;
/// use tower_mqtt::{BoxError, Message};
/// use tower_mqtt_layers::poison::MaxDeliveriesLayer;
///
/// let service = ServiceBuilder::new()
///     .layer(MaxDeliveriesLayer::new(5)?)
///     .service_fn(|_message: Message| async { Ok::<_, BoxError>(()) });
/// # let _ = service;
/// # Ok::<(), tower_mqtt_layers::poison::InvalidMaxDeliveries>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxDeliveriesLayer {
    limit: u32,
}

impl MaxDeliveriesLayer {
    /// Let the inner service see each message at most `limit` times.
    ///
    /// # Errors
    ///
    /// [`InvalidMaxDeliveries::Zero`] when `limit` is 0.
    pub fn new(limit: u32) -> Result<Self, InvalidMaxDeliveries> {
        if limit == 0 {
            return Err(InvalidMaxDeliveries::Zero);
        }
        Ok(Self { limit })
    }

    /// The most deliveries of a message the inner service sees.
    #[must_use]
    pub fn limit(&self) -> u32 {
        self.limit
    }
}

impl<S> Layer<S> for MaxDeliveriesLayer {
    type Service = MaxDeliveries<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MaxDeliveries {
            inner,
            limit: self.limit,
        }
    }
}
