//! Effectively-once processing: skip a message whose id was already processed
//! (feature `dedup`; the Redis store with feature `dedup-redis`).
//!
//! The consumer delivers **at least once**: a message whose acknowledgement is lost
//! (the connection dropped after the service succeeded, a layer above failed after it,
//! the process restarted before the PUBACK went out) comes back, and a publisher that
//! retries a publish sends a second copy. [`Dedup`] gives every message an **id** — by
//! default the MQTT 5 user property `message-id` ([`DEFAULT_PROPERTY`]), or any
//! function of the message ([`DedupLayer::key_fn`]) — and keeps the ids it has
//! processed in a [`DedupStore`] for a TTL: a copy of a processed message is answered
//! `Ok` **without calling the inner service**, so the consumer acknowledges it.
//!
//! # How one message goes through
//!
//! 1. **Claim** the id ([`DedupStore::claim`]): a short **lease** (default 30 s,
//!    [`DedupLayer::lease`]) written only if the id has neither a record nor a lease
//!    (Redis: `SET key token NX PX lease`).
//! 2. Only with the lease, **call** the inner service.
//! 3. After **success**, **record** the id for the TTL (default a day,
//!    [`DedupLayer::ttl`]; Redis: `SET key done PX ttl`), replacing the lease; after
//!    **failure**, **release** the lease (only if it is still this call's), so the
//!    message's redelivery is processed again.
//!
//! | the claim finds | the layer returns | the consumer |
//! |---|---|---|
//! | nothing | the inner service's result, after the record or release | decides by that result |
//! | a record (a duplicate) | `Ok(Default::default())`, the service is not called | acknowledges it |
//! | another call's lease | [`InProgress`] in a [`Redeliver`](tower_mqtt::Redeliver) marker | does not acknowledge it: it comes back after the redelivery cycle |
//! | the store fails ([`StoreError`]) | the error in a [`Redeliver`](tower_mqtt::Redeliver) marker, the service is not called | does not acknowledge it: it comes back |
//!
//! So a copy that arrives **while** its id is processed elsewhere (another connection,
//! or another process sharing a Redis store) is neither processed beside it nor
//! acknowledged: it comes back, and is then acknowledged as a duplicate, or processed
//! if the first call failed (the lease was released) or died (the lease expired).
//! An **unreachable store** never lets a message through unchecked and never drops
//! one: it is not acknowledged and comes back until the store answers. When the
//! **record** after a success fails, the message is acknowledged anyway (it *was*
//! processed) with a WARN event and [`DedupStats::record_failures`] counted; its lease
//! still holds off copies until it expires, a later copy would be processed again.
//! When the **release** after a failure fails, the error is returned as it is and the
//! copies wait until the lease expires.
//!
//! A message **without an id** passes through unchecked by default
//! ([`DedupStats::unkeyed`] counts them); [`DedupLayer::fail_without_key`] fails it
//! permanently with [`NoMessageKey`] instead.
//!
//! # What "effectively once" means here
//!
//! The id is recorded **after** the inner service succeeded, so:
//!
//! * a crash (or a record that fails) **between the success and the record** leaves no
//!   record: the copy that comes back is processed **again**. Only a service that
//!   writes its effect and the id in one transaction closes that window; this layer
//!   narrows it to one store round trip;
//! * an id is remembered for the **TTL** only (and, in the [`MemoryStore`], while it is
//!   among the `capacity` newest): the TTL must exceed the broker's **redelivery
//!   horizon** — how long an unacknowledged message can stay in a session (its session
//!   and message expiry intervals; a persistent session without expiry keeps it until
//!   the client returns) — and the publishers' retry window. A copy after that is
//!   processed again;
//! * a call that outlasts its **lease** lets a copy run beside it: keep the lease above
//!   the service's timeout;
//! * ids are only as good as the publishers make them: equal for every copy of one
//!   message, unique among messages within the TTL.
//!
//! # Where it goes in a stack
//!
//! Above the layers that retry or time out a call (one claim covers the retry's
//! attempts), below a [`dead_letter`](crate::dead_letter) layer (a message failed
//! permanently is dead-lettered, not recorded). The inner service's `Response` must be
//! `Default` (the answer for a duplicate), and the inner service `Clone` (the call
//! waits for the claim, so the ready service is taken along; `Consumer::run` needs
//! `Clone` anyway).
//!
//! ```
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//! use tower_mqtt::{BoxError, Message};
//! use tower_mqtt_layers::dedup::{DedupLayer, MemoryStore};
//! use tower_mqtt_layers::ServiceBuilderExt;
//!
//! # fn stack() -> Result<(), tower_mqtt_layers::dedup::InvalidDedup> {
//! // One process: ids in memory, shared by every connection of the consumer.
//! let dedup = DedupLayer::new(MemoryStore::new(100_000)?).ttl(Duration::from_secs(3_600))?;
//! let stats = dedup.stats();
//! let service = ServiceBuilder::new()
//!     .dedup(dedup)
//!     .timeout(Duration::from_secs(10)) // below the 30 s lease
//!     .service_fn(|message: Message| async move {
//!         let _ = message.payload(); // runs once per `message-id` within the hour
//!         Ok::<_, BoxError>(())
//!     });
//! # let _ = service;
//! assert_eq!(stats.duplicates(), 0); // copies acknowledged without a call so far
//! # Ok(()) }
//! # stack().unwrap();
//! ```
//!
#![cfg_attr(
    feature = "dedup-redis",
    doc = r#"With several processes (a shared subscription group over machines), share the ids in
Redis, namespaced by a prefix such as the group's name:

```no_run
# async fn example() -> Result<(), Box<dyn std::error::Error>> {
use tower::ServiceBuilder;
use tower_mqtt::{BoxError, Message};
use tower_mqtt_layers::dedup::{DedupLayer, RedisStore};
use tower_mqtt_layers::ServiceBuilderExt;

let store = RedisStore::connect("redis://127.0.0.1:6379/").await?.prefix("orders:dedup:");
let service = ServiceBuilder::new()
    .dedup(DedupLayer::new(store))
    .service_fn(|_message: Message| async { Ok::<_, BoxError>(()) });
# let _ = service;
# Ok(()) }
```
"#
)]
//!
//! # Observing duplicates
//!
//! [`DedupStats`] (from [`DedupLayer::stats`] or [`Dedup::stats`]) counts processed
//! ids, duplicates skipped, copies sent back because their id was leased, messages
//! without an id and store failures. Each duplicate is also a DEBUG `tracing` event
//! (target `tower_mqtt_layers::dedup`, field `key`), and so is a copy whose id is
//! leased; store failures are WARN events.
//!
//! # Stores
//!
//! * [`MemoryStore`]: bounded (capacity and TTL, the oldest entry evicted first),
//!   `Clone` and shared by every connection of one process; gone after a restart.
//! * `RedisStore` (feature `dedup-redis`): shared by processes. It uses the
//!   [`redis`](https://docs.rs/redis) crate (redis-rs, the most used Rust client, kept
//!   by the Redis project) rather than `fred`: its `ConnectionManager` is a `Clone`
//!   multiplexed connection that reconnects by itself, with a response timeout (500 ms
//!   by default) so an unreachable Redis fails a claim quickly instead of hanging, its
//!   `Script` runs the two small Lua scripts by SHA with a fallback to loading them,
//!   and with its default features off it adds few dependencies. The crate is
//!   re-exported as `dedup::redis` so the versions match; redis 1.x needs Rust 1.88.
//! * Any other store: implement [`DedupStore`] (claim, record, release).

mod error;
mod future;
mod layer;
mod memory;
#[cfg(feature = "dedup-redis")]
mod redis_store;
mod store;

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower_mqtt::{BoxError, Message, Permanent};
use tower_service::Service;

pub use self::error::{InProgress, InvalidDedup, NoMessageKey, StoreError};
pub use self::future::ResponseFuture;
pub use self::layer::{DedupLayer, DEFAULT_LEASE, DEFAULT_PROPERTY, DEFAULT_TTL};
pub use self::memory::MemoryStore;
#[cfg(feature = "dedup-redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "dedup-redis")))]
pub use self::redis_store::{RedisStore, DEFAULT_PREFIX};
pub use self::store::{Claim, DedupStore, StoreFuture};
/// The [`redis`](https://docs.rs/redis) crate the Redis store is built on (for its
/// `Client`, `ConnectionManager` and settings).
#[cfg(feature = "dedup-redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "dedup-redis")))]
pub use ::redis;

/// Where a message's id comes from.
#[derive(Clone)]
enum KeySource {
    Property(Arc<str>),
    Fn(Arc<dyn Fn(&Message) -> Option<String> + Send + Sync>),
}

impl KeySource {
    fn key(&self, message: &Message) -> Option<String> {
        let key = match self {
            Self::Property(name) => message
                .properties()
                .and_then(|p| p.user_property(name))
                .map(str::to_owned),
            Self::Fn(f) => f(message),
        };
        key.filter(|k| !k.is_empty())
    }

    fn describe(&self) -> String {
        match self {
            Self::Property(name) => format!("user property {name:?}"),
            Self::Fn(_) => "DedupLayer::key_fn returned none".to_owned(),
        }
    }
}

/// What to do with a message without an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WithoutKey {
    Pass,
    Fail,
}

/// What every service of one [`DedupLayer`] shares.
#[derive(Clone)]
struct Shared {
    store: Arc<dyn DedupStore>,
    key: KeySource,
    ttl: Duration,
    lease: Duration,
    without_key: WithoutKey,
    stats: DedupStats,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("key", &self.key.describe())
            .field("ttl", &self.ttl)
            .field("lease", &self.lease)
            .field("without_key", &self.without_key)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Counters of one [`DedupLayer`], over every service it built and their clones
/// (`Clone`: the clones read the same counters).
#[derive(Clone, Default)]
pub struct DedupStats {
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    processed: AtomicU64,
    duplicates: AtomicU64,
    in_progress: AtomicU64,
    unkeyed: AtomicU64,
    store_failures: AtomicU64,
    record_failures: AtomicU64,
}

impl DedupStats {
    /// Ids recorded after the inner service succeeded.
    #[must_use]
    pub fn processed(&self) -> u64 {
        self.counters.processed.load(Ordering::Relaxed)
    }

    /// Copies of processed ids answered `Ok` without calling the inner service.
    #[must_use]
    pub fn duplicates(&self) -> u64 {
        self.counters.duplicates.load(Ordering::Relaxed)
    }

    /// Copies sent back ([`InProgress`]) because another call held their id's lease.
    #[must_use]
    pub fn in_progress(&self) -> u64 {
        self.counters.in_progress.load(Ordering::Relaxed)
    }

    /// Messages without an id (passed through, or failed with
    /// [`DedupLayer::fail_without_key`]).
    #[must_use]
    pub fn unkeyed(&self) -> u64 {
        self.counters.unkeyed.load(Ordering::Relaxed)
    }

    /// Claims that failed ([`StoreError`]): messages sent back unprocessed.
    #[must_use]
    pub fn store_failures(&self) -> u64 {
        self.counters.store_failures.load(Ordering::Relaxed)
    }

    /// Successes whose id could not be recorded (acknowledged anyway).
    #[must_use]
    pub fn record_failures(&self) -> u64 {
        self.counters.record_failures.load(Ordering::Relaxed)
    }

    fn count_processed(&self) {
        self.counters.processed.fetch_add(1, Ordering::Relaxed);
    }
    fn count_duplicate(&self) {
        self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
    }
    fn count_in_progress(&self) {
        self.counters.in_progress.fetch_add(1, Ordering::Relaxed);
    }
    fn count_unkeyed(&self) {
        self.counters.unkeyed.fetch_add(1, Ordering::Relaxed);
    }
    fn count_store_failure(&self) {
        self.counters.store_failures.fetch_add(1, Ordering::Relaxed);
    }
    fn count_record_failure(&self) {
        self.counters
            .record_failures
            .fetch_add(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for DedupStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DedupStats")
            .field("processed", &self.processed())
            .field("duplicates", &self.duplicates())
            .field("in_progress", &self.in_progress())
            .field("unkeyed", &self.unkeyed())
            .field("store_failures", &self.store_failures())
            .field("record_failures", &self.record_failures())
            .finish()
    }
}

/// A lease token no other claim uses: the process id and a random 64-bit number.
fn new_token() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(NEXT.fetch_add(1, Ordering::Relaxed));
    format!("{:x}-{:016x}", std::process::id(), hasher.finish())
}

/// Calls the inner service once per message id; copies of a processed id are answered
/// `Ok` without a call. Made by [`DedupLayer`]; see the [module docs](self).
pub struct Dedup<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Dedup<S> {
    /// The counters of this service and its clones (and of the other services of its
    /// layer).
    pub fn stats(&self) -> DedupStats {
        self.shared.stats.clone()
    }

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

impl<S: Clone> Clone for Dedup<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Dedup<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dedup")
            .field("inner", &self.inner)
            .field("shared", &self.shared)
            .finish()
    }
}

impl<S> Service<Message> for Dedup<S>
where
    S: Service<Message> + Clone,
    S::Response: Default,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, message: Message) -> Self::Future {
        let shared = self.shared.clone();
        let Some(key) = shared.key.key(&message) else {
            shared.stats.count_unkeyed();
            return match shared.without_key {
                WithoutKey::Pass => ResponseFuture::unkeyed(self.inner.call(message), shared),
                WithoutKey::Fail => {
                    let error = NoMessageKey::new(&message, &shared.key.describe());
                    ResponseFuture::finished(Permanent::new(error).into(), shared)
                }
            };
        };
        // The call waits for the claim: take the service that `poll_ready` made ready
        // along, and leave a fresh clone here for the next `poll_ready`.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        let token = new_token();
        let claim = shared.store.claim(&key, &token, shared.lease);
        ResponseFuture::claiming(claim, ready, message, key, token, shared)
    }
}

#[cfg(test)]
mod tests;
