use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;

use tower_layer::Layer;
use tower_mqtt::Message;

use super::lanes::Lanes;
use super::{InvalidMaxWaiting, Partition};

/// How many messages may wait behind a busy key by default (over all keys and every
/// clone of the service).
pub const DEFAULT_MAX_WAITING: usize = 1024;

/// The key function of [`PartitionLayer::by_topic`]: the message's topic.
pub type TopicKey = fn(&Message) -> String;

/// [`Layer`] that applies [`Partition`]: messages with the same key run one at a time,
/// in arrival order; see the [module docs](super).
///
/// Each service it builds has its own lanes, shared by that service's clones (the
/// connections of one consumer).
///
/// ```
/// use tower::ServiceBuilder;
/// use tower_mqtt::{BoxError, Message};
/// use tower_mqtt_layers::partition::PartitionLayer;
///
/// // One device at a time, whatever topic its messages use.
/// let layer = PartitionLayer::new(|m: &Message| m.topic().split('/').nth(1).map(str::to_owned))
///     .max_waiting(256)?;
/// let service = ServiceBuilder::new()
///     .layer(layer)
///     .service_fn(|_message: Message| async { Ok::<_, BoxError>(()) });
/// # let _ = service;
/// # Ok::<_, tower_mqtt_layers::partition::InvalidMaxWaiting>(())
/// ```
pub struct PartitionLayer<F, R = Message> {
    key: Arc<F>,
    max_waiting: usize,
    _request: PhantomData<fn(&R)>,
}

impl<F, R> Clone for PartitionLayer<F, R> {
    fn clone(&self) -> Self {
        Self {
            key: self.key.clone(),
            max_waiting: self.max_waiting,
            _request: PhantomData,
        }
    }
}

impl PartitionLayer<TopicKey> {
    /// Partition by topic: messages of one topic run one at a time, in order.
    #[must_use]
    pub fn by_topic() -> Self {
        Self::new(|m: &Message| m.topic().to_owned())
    }
}

impl<F> PartitionLayer<F> {
    /// Partition by `key(message)`: messages with equal keys run one at a time, in
    /// arrival order; different keys run concurrently.
    pub fn new<K>(key: F) -> Self
    where
        F: Fn(&Message) -> K + Send + Sync + 'static,
        K: Hash + Eq + Clone + Send + 'static,
    {
        Self::for_requests(key)
    }
}

impl<F, R> PartitionLayer<F, R> {
    /// Partition requests of any type by `key(request)`, for a `Partition` below
    /// another layer that changes the request: under a keyed
    /// [`batch`](crate::batch) layer, for instance, batches of one key run one at a
    /// time, in the order they were flushed.
    ///
    /// ```
    /// use tower::ServiceBuilder;
    /// use tower_mqtt::{BoxError, Message};
    /// use tower_mqtt_layers::batch::{Batch, BatchLayer};
    /// use tower_mqtt_layers::partition::PartitionLayer;
    /// use tower_mqtt_layers::ServiceBuilderExt;
    ///
    /// // One batch per device; a device's batches are written one after the other.
    /// let batches = BatchLayer::builder()
    ///     .batch_key(|m: &Message| m.topic().split('/').nth(1).unwrap_or("").to_owned())
    ///     .build()?;
    /// let service = ServiceBuilder::new()
    ///     .batch(batches)
    ///     .layer(PartitionLayer::for_requests(|b: &Batch<Message, String>| b.key().clone()))
    ///     .service_fn(|_batch: Batch<Message, String>| async { Ok::<_, BoxError>(()) });
    /// # let _ = service;
    /// # Ok::<_, tower_mqtt_layers::batch::BatchConfigError>(())
    /// ```
    pub fn for_requests<K>(key: F) -> Self
    where
        F: Fn(&R) -> K + Send + Sync + 'static,
        K: Hash + Eq + Clone + Send + 'static,
    {
        Self {
            key: Arc::new(key),
            max_waiting: DEFAULT_MAX_WAITING,
            _request: PhantomData,
        }
    }

    /// At most `n` messages wait behind a busy key (default [`DEFAULT_MAX_WAITING`]);
    /// while that many wait, `poll_ready` is pending, so the consumer reads no more from
    /// the broker. `0` is an [`InvalidMaxWaiting`] error.
    pub fn max_waiting(self, n: usize) -> Result<Self, InvalidMaxWaiting> {
        if n == 0 {
            return Err(InvalidMaxWaiting);
        }
        Ok(Self {
            max_waiting: n,
            ..self
        })
    }
}

impl<F, R> fmt::Debug for PartitionLayer<F, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionLayer")
            .field("max_waiting", &self.max_waiting)
            .finish_non_exhaustive()
    }
}

impl<S, F, K, R> Layer<S> for PartitionLayer<F, R>
where
    F: Fn(&R) -> K + Send + Sync + 'static,
    K: Hash + Eq + Clone + Send + 'static,
{
    type Service = Partition<S, F, K>;

    fn layer(&self, inner: S) -> Self::Service {
        Partition::with_lanes(inner, self.key.clone(), Lanes::new(self.max_waiting))
    }
}
