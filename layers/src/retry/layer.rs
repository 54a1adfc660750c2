use tower_layer::Layer;

use super::{DefaultRetryClassifier, Retry, RetryPolicy};

/// [`Layer`] that retries transient failures with [`Retry`]; see the
/// [module docs](super).
///
/// ```
/// use tower::ServiceBuilder;
/// use tower_mqtt::{BoxError, Message};
/// use tower_mqtt_layers::retry::{RetryLayer, RetryPolicy};
///
/// let service = ServiceBuilder::new()
///     .layer(RetryLayer::new(RetryPolicy::new(3)))
///     .service_fn(|_message: Message| async { Ok::<_, BoxError>(()) });
/// ```
#[derive(Debug, Clone)]
pub struct RetryLayer<C = DefaultRetryClassifier> {
    policy: RetryPolicy<C>,
}

impl<C> RetryLayer<C> {
    /// Retry with `policy`.
    #[must_use]
    pub fn new(policy: RetryPolicy<C>) -> Self {
        Self { policy }
    }
}

impl<S, C> Layer<S> for RetryLayer<C>
where
    C: Clone,
{
    type Service = Retry<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::new(inner, self.policy.clone())
    }
}
