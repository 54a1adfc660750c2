use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;
use tower_mqtt::Message;

use super::{Dedup, DedupStats, DedupStore, InvalidDedup, KeySource, Shared, WithoutKey};

/// The user property that holds a message's id unless
/// [`DedupLayer::user_property`] or [`DedupLayer::key_fn`] says otherwise.
pub const DEFAULT_PROPERTY: &str = "message-id";

/// How long a processed id is remembered unless [`DedupLayer::ttl`] says otherwise: a
/// day.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// How long a claim holds off other copies of an id unless [`DedupLayer::lease`] says
/// otherwise.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// [`Layer`] that applies [`Dedup`]: see the [module docs](super).
///
/// Every service it builds, and their clones, share its store and its
/// [`stats`](Self::stats).
///
/// ```
/// use std::time::Duration;
/// use tower::ServiceBuilder;
/// use tower_mqtt::{BoxError, Message};
/// use tower_mqtt_layers::dedup::{DedupLayer, MemoryStore};
///
/// let dedup = DedupLayer::new(MemoryStore::new(100_000)?)
///     .user_property("x-request-id")?
///     .ttl(Duration::from_secs(3_600))?
///     .lease(Duration::from_secs(10))?;
/// let stats = dedup.stats();
/// let service = ServiceBuilder::new()
///     .layer(dedup)
///     .service_fn(|_message: Message| async { Ok::<_, BoxError>(()) });
/// # let _ = service;
/// assert_eq!(stats.duplicates(), 0);
/// # Ok::<(), tower_mqtt_layers::dedup::InvalidDedup>(())
/// ```
#[derive(Clone)]
pub struct DedupLayer {
    shared: Shared,
}

impl DedupLayer {
    /// Deduplicate through `store`, by the user property [`DEFAULT_PROPERTY`], with a
    /// [`DEFAULT_TTL`] and a [`DEFAULT_LEASE`]; messages without the property pass
    /// through unchecked.
    pub fn new(store: impl DedupStore) -> Self {
        Self {
            shared: Shared {
                store: Arc::new(store),
                key: KeySource::Property(Arc::from(DEFAULT_PROPERTY)),
                ttl: DEFAULT_TTL,
                lease: DEFAULT_LEASE,
                without_key: WithoutKey::Pass,
                stats: DedupStats::default(),
            },
        }
    }

    /// Take the id from the MQTT 5 user property `name` (the first one of that name;
    /// an empty value counts as no id).
    ///
    /// # Errors
    ///
    /// [`InvalidDedup::EmptyPropertyName`] when `name` is empty.
    pub fn user_property(mut self, name: impl Into<String>) -> Result<Self, InvalidDedup> {
        let name = name.into();
        if name.is_empty() {
            return Err(InvalidDedup::EmptyPropertyName);
        }
        self.shared.key = KeySource::Property(Arc::from(name));
        Ok(self)
    }

    /// Take the id from `key(message)`: `None` (or an empty string) is no id. Replaces
    /// the user property.
    ///
    /// The id must name the message, not the delivery: equal for every copy of one
    /// message (a redelivery, a publisher's retry), different for different messages
    /// within the TTL. A hash of the payload fits when equal payloads are the same
    /// message; the topic and packet id do not (packet ids are reused).
    #[must_use]
    pub fn key_fn<F>(mut self, key: F) -> Self
    where
        F: Fn(&Message) -> Option<String> + Send + Sync + 'static,
    {
        self.shared.key = KeySource::Fn(Arc::new(key));
        self
    }

    /// Remember a processed id for `ttl` (default [`DEFAULT_TTL`]). It must exceed the
    /// time within which a copy can come back: the broker's redelivery horizon (how
    /// long an unacknowledged message can wait in a session: its session and message
    /// expiry), and the publishers' retries.
    ///
    /// # Errors
    ///
    /// [`InvalidDedup::ZeroTtl`] when `ttl` is zero.
    pub fn ttl(mut self, ttl: Duration) -> Result<Self, InvalidDedup> {
        if ttl.is_zero() {
            return Err(InvalidDedup::ZeroTtl);
        }
        self.shared.ttl = ttl;
        Ok(self)
    }

    /// Hold off other copies of an id for `lease` while one is processed (default
    /// [`DEFAULT_LEASE`]). It must exceed the service's longest call (put a timeout
    /// below this layer): a call that outlasts its lease lets a copy run beside it. A
    /// call that never ends (a crash) blocks its copies for this long.
    ///
    /// # Errors
    ///
    /// [`InvalidDedup::ZeroLease`] when `lease` is zero.
    pub fn lease(mut self, lease: Duration) -> Result<Self, InvalidDedup> {
        if lease.is_zero() {
            return Err(InvalidDedup::ZeroLease);
        }
        self.shared.lease = lease;
        Ok(self)
    }

    /// Fail a message without an id with a [`NoMessageKey`](super::NoMessageKey)
    /// error inside a [`Permanent`](tower_mqtt::Permanent) marker (acknowledged as
    /// failed, or dead-lettered by a layer above), instead of processing it unchecked.
    #[must_use]
    pub fn fail_without_key(mut self) -> Self {
        self.shared.without_key = WithoutKey::Fail;
        self
    }

    /// Call the inner service for a message without an id, without any check (the
    /// default); [`DedupStats::unkeyed`] counts them.
    #[must_use]
    pub fn pass_without_key(mut self) -> Self {
        self.shared.without_key = WithoutKey::Pass;
        self
    }

    /// The counters of every service this layer builds.
    #[must_use]
    pub fn stats(&self) -> DedupStats {
        self.shared.stats.clone()
    }
}

impl fmt::Debug for DedupLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DedupLayer")
            .field("shared", &self.shared)
            .finish()
    }
}

impl<S> Layer<S> for DedupLayer {
    type Service = Dedup<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Dedup {
            inner,
            shared: Arc::new(self.shared.clone()),
        }
    }
}
