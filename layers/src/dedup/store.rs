use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::StoreError;

/// The future a [`DedupStore`] operation returns: boxed, so that any store fits behind
/// one layer type.
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'static>>;

/// What [`DedupStore::claim`] found for a message id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Claim {
    /// Neither a record nor a live lease: the caller now holds a lease on the id for
    /// the `lease` it asked, and must [`record`](DedupStore::record) the id after
    /// success or [`release`](DedupStore::release) it after failure.
    Acquired,
    /// The id is recorded as processed (within its TTL): the message is a duplicate.
    Done,
    /// Another call holds a live lease on the id: it is being processed right now,
    /// here or in another process.
    Held,
}

/// Where [`Dedup`](super::Dedup) keeps the ids it has processed, and the short leases
/// of those being processed. See the [module docs](super) for the protocol.
///
/// Each operation is atomic for one key. An implementation keeps, per key, either
/// nothing, a **lease** (a token, until an instant) or a **record** (until an instant);
/// an expired lease or record counts as nothing.
///
/// * [`claim`](Self::claim): a record → [`Claim::Done`]; a live lease →
///   [`Claim::Held`]; nothing → store a lease with `token` for `lease` and return
///   [`Claim::Acquired`].
/// * [`record`](Self::record): store a record for `ttl`, replacing whatever is there.
/// * [`release`](Self::release): remove the lease if it still has `token` (a record, or
///   somebody else's lease, stays).
///
/// An unreachable store returns a [`StoreError`]; the layer then leaves the message
/// unacknowledged (see the [module docs](super)). Implemented by
/// [`MemoryStore`](super::MemoryStore) and, with the `dedup-redis` feature,
/// `RedisStore`.
pub trait DedupStore: Send + Sync + 'static {
    /// Claim `key` for processing with a lease that holds `token` for `lease`.
    fn claim(&self, key: &str, token: &str, lease: Duration) -> StoreFuture<Claim>;

    /// Record `key` as processed for `ttl`.
    fn record(&self, key: &str, ttl: Duration) -> StoreFuture<()>;

    /// Drop the lease on `key` if it still holds `token`.
    fn release(&self, key: &str, token: &str) -> StoreFuture<()>;
}
