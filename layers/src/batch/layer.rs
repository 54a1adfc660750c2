use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;
use tower_mqtt::BoxError;
use tower_service::Service;

use super::error::BatchConfigError;
use super::{AsMessage, Batch, BatchResponse, Batcher, Settings};

type KeyFn<R, K> = Arc<dyn Fn(&R) -> K + Send + Sync>;

/// Applies [`Batcher`] to a batch service: see the [module docs](super). Made by
/// [`BatchLayer::builder`].
pub struct BatchLayer<R, K = ()> {
    settings: Settings,
    key: KeyFn<R, K>,
}

impl<R: 'static> BatchLayer<R> {
    /// Options with Broadway's defaults: batches of up to 100 messages, flushed at the
    /// latest 1 s after their first message, one batch in flight, one batch for all
    /// messages.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_mqtt::Message;
    /// use tower_mqtt_layers::batch::BatchLayer;
    ///
    /// let layer = BatchLayer::<Message>::builder()
    ///     .max_size(500)
    ///     .max_wait(Duration::from_millis(200))
    ///     .concurrency(4)
    ///     .batch_key(|m: &Message| m.topic().to_owned())
    ///     .build()?;
    /// # let _ = layer;
    /// # Ok::<_, tower_mqtt_layers::batch::BatchConfigError>(())
    /// ```
    #[must_use]
    pub fn builder() -> BatchBuilder<R> {
        BatchBuilder {
            settings: Settings {
                max_size: 100,
                max_wait: Duration::from_secs(1),
                concurrency: 1,
            },
            key: Arc::new(|_: &R| ()),
        }
    }
}

impl<R, K> BatchLayer<R, K> {
    /// The largest batch asked for (a smaller consumer window caps it: see the
    /// [module docs](super#the-consumers-window-caps-a-batch)).
    #[must_use]
    pub fn max_size(&self) -> usize {
        self.settings.max_size
    }
}

impl<R, K> Clone for BatchLayer<R, K> {
    fn clone(&self) -> Self {
        Self {
            settings: self.settings,
            key: self.key.clone(),
        }
    }
}

impl<R, K> fmt::Debug for BatchLayer<R, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchLayer")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<S, R, K> Layer<S> for BatchLayer<R, K>
where
    S: Service<Batch<R, K>> + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Into<BatchResponse>,
    S::Error: Into<BoxError>,
    R: AsMessage + Send + 'static,
    K: Hash + Eq + Clone + Send + 'static,
{
    type Service = Batcher<R, K>;

    fn layer(&self, inner: S) -> Self::Service {
        Batcher::new(inner, self.settings, self.key.clone())
    }
}

/// Options of a [`BatchLayer`]; [`build`](Self::build) checks them.
pub struct BatchBuilder<R, K = ()> {
    settings: Settings,
    key: KeyFn<R, K>,
}

impl<R, K> BatchBuilder<R, K> {
    /// Flush a batch when it holds `messages` messages (default 100; at least 1).
    #[must_use]
    pub fn max_size(mut self, messages: usize) -> Self {
        self.settings.max_size = messages;
        self
    }

    /// Flush a batch at the latest `wait` after its first message arrived, however
    /// small it is (default 1 s). Zero flushes whatever arrived together.
    #[must_use]
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.settings.max_wait = wait;
        self
    }

    /// Call the batch service for at most `batches` batches at once (default 1; at
    /// least 1). Flushed batches wait in arrival order for a free slot.
    #[must_use]
    pub fn concurrency(mut self, batches: usize) -> Self {
        self.settings.concurrency = batches;
        self
    }

    /// Keep one open batch per `key(request)`: messages of different keys never share a
    /// batch, and the batch service sees the key ([`Batch::key`]).
    #[must_use]
    pub fn batch_key<K2, F>(self, key: F) -> BatchBuilder<R, K2>
    where
        F: Fn(&R) -> K2 + Send + Sync + 'static,
    {
        BatchBuilder {
            settings: self.settings,
            key: Arc::new(key),
        }
    }

    /// The layer, or the first option that cannot work.
    pub fn build(self) -> Result<BatchLayer<R, K>, BatchConfigError> {
        if self.settings.max_size == 0 {
            return Err(BatchConfigError::ZeroMaxSize);
        }
        if self.settings.concurrency == 0 {
            return Err(BatchConfigError::ZeroConcurrency);
        }
        Ok(BatchLayer {
            settings: self.settings,
            key: self.key,
        })
    }
}

impl<R, K> fmt::Debug for BatchBuilder<R, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchBuilder")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}
