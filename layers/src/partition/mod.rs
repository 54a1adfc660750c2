//! Per-key ordering, like Broadway's `partition_by` (feature `partition`).
//!
//! [`Partition`] processes messages with the same key one at a time, in the order the
//! service was called, while messages with different keys run concurrently. The key is
//! any function of the message ([`PartitionLayer::new`]); the topic by default
//! ([`PartitionLayer::by_topic`], [`ServiceBuilderExt::partition_by`](crate::ServiceBuilderExt::partition_by)).
//! Below a layer that turns messages into other requests (batches, say), key those
//! requests instead: [`PartitionLayer::for_requests`].
//!
//! ```
//! use tower::ServiceBuilder;
//! use tower_mqtt::BoxError;
//! use tower_mqtt_layers::ServiceBuilderExt;
//!
//! // Readings of one sensor (`sensors/<id>/...`) are stored in order.
//! let service = ServiceBuilder::new()
//!     .partition_by(|m: &Message| m.topic().split('/').nth(1).unwrap_or("").to_owned())
//!     .service_fn(|message: Message| async move {
//!         let _ = message.payload(); // store it
//!         Ok::<_, BoxError>(())
//!     });
//! # let _ = service;
//! ```
//!
//! # How it works
//!
//! `call` puts the message at the back of its key's lane and returns at once; the
//! response future waits until every earlier message of the key has finished (its
//! future completed or was dropped), then calls a clone of the inner service (so the
//! inner service must be `Clone`, which `Consumer::run` requires anyway; its
//! `poll_ready` is consulted in the future, when the message's turn comes). The consumer
//! keeps calling with other messages meanwhile, so other keys are not held up.
//!
//! **Bounded.** At most [`max_waiting`](PartitionLayer::max_waiting) messages wait
//! behind a busy key, over all keys and all clones; while that many wait, `poll_ready`
//! is pending and the consumer stops reading from the broker (back-pressure, never an
//! unbounded queue). The consumer's own `max_inflight` bounds each connection too.
//!
//! **Shared by clones.** `Consumer::run` clones the stack once per connection; the
//! clones share one set of lanes, so a key runs one message at a time across all the
//! consumer's connections.
//!
//! # What order you get
//!
//! - **The core**: on one connection, service calls start in the order the broker
//!   delivered the messages (the driver calls the service for each PUBLISH as it reads
//!   it) but run concurrently and finish in any order; acknowledgements still leave in
//!   arrival order. A broker delivers the messages of one topic from one publisher in
//!   publish order on a connection (MQTT 5 §4.6), so with this layer (by topic, or by a
//!   key that groups such topics) the service sees them in that order.
//! - **Shared subscriptions** (`shared_group` with `concurrency > 1`) let the broker
//!   split one key across connections: two messages of a key may arrive on different
//!   connections, and their order between connections is lost before the consumer sees
//!   them. This layer still runs them one at a time, but in whichever order they were
//!   called. To keep per-key order, use **one connection** (`concurrency(1)`, the
//!   default; concurrency then comes from this layer running different keys at once),
//!   or a broker that routes a key to the same member of a group (EMQX's
//!   `shared_subscription_strategy = hash_topic` or `hash_clientid`; mosquitto and
//!   HiveMQ have no such strategy).
//! - **Redelivery**: a message the consumer leaves unacknowledged comes back when the
//!   session resumes, after later messages of its key that succeeded. Retry inside the
//!   call ([`retry`](crate::retry), placed below this layer) to keep the key waiting
//!   instead; a retried message holds its key's turn until it finishes.
//! - **Timeouts** belong below this layer (per call), not above it: above, a message's
//!   timeout would also count the time it waited for its turn.

mod error;
mod future;
mod lanes;
mod layer;

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_mqtt::BoxError;
use tower_service::Service;

pub use self::error::InvalidMaxWaiting;
pub use self::future::ResponseFuture;
use self::lanes::Lanes;
pub use self::layer::{PartitionLayer, TopicKey, DEFAULT_MAX_WAITING};

/// Runs messages with the same key one at a time, in call order; see the
/// [module docs](self). Made by [`PartitionLayer`].
pub struct Partition<S, F, K> {
    inner: S,
    key: Arc<F>,
    lanes: Arc<Lanes<K>>,
    /// `poll_ready` reserved room for one waiting message.
    reserved: bool,
}

impl<S, F, K> Partition<S, F, K>
where
    K: Hash + Eq + Clone,
{
    fn with_lanes(inner: S, key: Arc<F>, lanes: Arc<Lanes<K>>) -> Self {
        Self {
            inner,
            key,
            lanes,
            reserved: false,
        }
    }

    /// How many messages wait behind a busy key now (over every clone).
    #[must_use]
    pub fn waiting(&self) -> usize {
        self.lanes.waiting()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Clone, F, K> Clone for Partition<S, F, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            key: self.key.clone(),
            lanes: self.lanes.clone(),
            reserved: false,
        }
    }
}

impl<S, F, K> Drop for Partition<S, F, K> {
    fn drop(&mut self) {
        if self.reserved {
            self.lanes.unreserve();
        }
    }
}

impl<S: fmt::Debug, F, K> fmt::Debug for Partition<S, F, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Partition")
            .field("inner", &self.inner)
            .field("reserved", &self.reserved)
            .finish_non_exhaustive()
    }
}

impl<S, F, K, R> Service<R> for Partition<S, F, K>
where
    S: Service<R> + Clone,
    S::Error: Into<BoxError>,
    F: Fn(&R) -> K,
    K: Hash + Eq + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, K, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if !self.reserved {
            std::task::ready!(self.lanes.poll_reserve(cx));
            self.reserved = true;
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: R) -> Self::Future {
        assert!(
            std::mem::take(&mut self.reserved),
            "Partition::call without poll_ready returning Ready first"
        );
        let turn = self.lanes.join((self.key)(&request));
        ResponseFuture::new(turn, self.inner.clone(), request)
    }
}

#[cfg(test)]
mod tests;
