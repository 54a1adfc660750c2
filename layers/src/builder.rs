//! [`ServiceBuilderExt`]: the failure-handling layers as `tower::ServiceBuilder`
//! methods.

use tower::ServiceBuilder;
use tower_layer::Stack;

#[cfg(feature = "retry")]
use crate::retry::{RetryLayer, RetryPolicy};

/// Adds this crate's failure-handling layers to [`tower::ServiceBuilder`], so a stack
/// reads top to bottom in the order a message goes through it (each method behind its
/// layer's feature):
///
/// ```
/// use std::time::Duration;
/// use tower::ServiceBuilder;
/// use tower_mqtt::{BoxError, Message};
/// use tower_mqtt_layers::retry::RetryPolicy;
/// use tower_mqtt_layers::ServiceBuilderExt;
///
/// let service = ServiceBuilder::new()
///     .retry_messages(RetryPolicy::new(3)) // transient failures: up to 3 calls
///     .timeout(Duration::from_secs(5)) //   per attempt
///     .service_fn(|_message: Message| async move { Ok::<_, BoxError>(()) });
/// # let _ = service;
/// ```
///
/// The trait is sealed: it is implemented for `ServiceBuilder` only.
pub trait ServiceBuilderExt<L>: sealed::Sealed + Sized {
    /// Retry transient failures with `policy`: [`RetryLayer`].
    #[cfg(feature = "retry")]
    #[must_use]
    fn retry_messages<C>(self, policy: RetryPolicy<C>) -> ServiceBuilder<Stack<RetryLayer<C>, L>>;
}

impl<L> sealed::Sealed for ServiceBuilder<L> {}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    #[cfg(feature = "retry")]
    fn retry_messages<C>(self, policy: RetryPolicy<C>) -> ServiceBuilder<Stack<RetryLayer<C>, L>> {
        self.layer(RetryLayer::new(policy))
    }
}

mod sealed {
    #[allow(unreachable_pub)] // Sealed: public in a private module, so nobody can name it.
    pub trait Sealed {}
}
