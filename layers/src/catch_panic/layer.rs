use tower_layer::Layer;

use super::CatchPanic;

/// [`Layer`] that turns panics in the inner service into [`Panicked`](super::Panicked)
/// errors with [`CatchPanic`]; see the [module docs](super).
///
/// ```
/// use tower::ServiceBuilder;
/// use tower_mqtt::{BoxError, Message};
/// use tower_mqtt_layers::catch_panic::CatchPanicLayer;
///
/// let service = ServiceBuilder::new()
///     .layer(CatchPanicLayer::new())
///     .service_fn(|_message: Message| async { Ok::<_, BoxError>(()) });
/// # let _ = service;
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct CatchPanicLayer {
    _priv: (),
}

impl CatchPanicLayer {
    /// A new layer.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CatchPanic::new(inner)
    }
}
