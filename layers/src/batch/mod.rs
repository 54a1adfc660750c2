//! Collect messages into batches and call a batch service once per batch (feature
//! `batch`): Broadway's batchers as a tower layer.
//!
//! [`Batcher`] is a `Service<R>` for one message (a [`Message`], or a decoded
//! [`Decoded<T>`](crate::decode::Decoded) when it sits below `decode_json`, or any
//! request that implements [`AsMessage`]). It adds each message to an open batch and
//! calls the inner `Service<`[`Batch<R, K>`]`>` when the batch is flushed, which
//! happens at the first of:
//!
//! * the batch holds [`max_size`](BatchBuilder::max_size) messages;
//! * [`max_wait`](BatchBuilder::max_wait) has passed since its first message;
//! * the consumer's connections hold their whole window (below): no further message
//!   can arrive until some are decided, so every open batch is flushed.
//!
//! With [`batch_key`](BatchBuilder::batch_key) there is one open batch per key. At
//! most [`concurrency`](BatchBuilder::concurrency) batches are in the batch service at
//! once; flushed batches wait for a free slot in the order they were flushed.
//!
//! Each message's own future resolves when its batch is done, with the message's
//! result, so the consumer acknowledges each message on the connection it came from,
//! in arrival order, exactly as without batching. The batch service decides:
//!
//! | the batch service returns | each message of the batch gets |
//! |---|---|
//! | `Ok(())` or `Ok(BatchResponse::new())` | `Ok(())`: acknowledged |
//! | `Ok(BatchResponse::new().fail(i, e))` | message `i`: `Err(e)` as returned; the others `Ok(())` |
//! | `Err(e)` (or a panic, or `poll_ready` failed) | `Err(`[`BatchFailed`]`)` whose source is `e` |
//!
//! A failed message then follows the consumer's failure rule like any other: by
//! default it is redelivered, and a marker error ([`Permanent`](tower_mqtt::Permanent),
//! [`Reject`](tower_mqtt::Reject), [`Redeliver`](tower_mqtt::Redeliver)) decides it,
//! also one returned for the whole batch (it is found through [`BatchFailed`]'s source).
//!
//! # Batches span connections
//!
//! `Consumer::run` clones the stack for each connection. Every clone of one
//! [`Batcher`] shares one worker task (started by the first message, on the tokio
//! runtime it arrives on), so **a batch collects messages from all the consumer's
//! connections**: with `concurrency(n)` connections in a shared group, batches fill `n`
//! times faster and can be `n` times larger than one connection's window. Messages
//! are in a batch in the order they reached the worker. Use one layer per consumer
//! (the window below is read from the messages' consumer). To batch per connection,
//! key by it: `batch_key(|m: &Message| m.producer_index())`, with `max_size` at most
//! `max_inflight`.
//!
//! # The consumer's window caps a batch
//!
//! A connection holds at most `max_inflight` messages ([`Origin::max_inflight`]):
//! calls in progress plus acknowledgements waiting behind an earlier message. The
//! broker sends nothing more to it until some are acknowledged, and nothing is
//! acknowledged while it sits in an open batch. So the batcher **never waits for
//! messages the broker will not send**:
//!
//! * A batch is flushed at `max_inflight × connections` messages (the consumer's
//!   window, [`Origin::max_inflight`] × [`Origin::connections`]) when that is smaller
//!   than `max_size`. The layer cannot know the window when it is built (it is the
//!   consumer's option, on every message), so this is **not an error: `max_size` is
//!   lowered to the window, and a warning is logged once** (target
//!   `tower_mqtt_layers::batch`). Raise `max_inflight` or lower `max_size` to silence
//!   it.
//! * The layer counts, per connection, the messages it has seen from the oldest
//!   undecided one on (a decided message stays held while an earlier one on its
//!   connection is undecided). When the count reaches the window, every open batch is
//!   flushed: with several keys, none of them would fill up.
//!
//! Messages finished by a layer above the batcher without reaching it (a payload
//! `decode_json` rejects, for instance) are invisible to that count. When one of them
//! waits behind a message in an open batch the count is short, and that batch may wait
//! for its `max_wait`; it never waits longer.
//!
//! # Latency and throughput
//!
//! **A slow batch holds back the acknowledgements behind it.** Acknowledgements leave
//! each connection in arrival order, so when batch 2 finishes before batch 1, its
//! messages are acknowledged only after batch 1's are decided, and they keep their
//! places in the window until then. With `concurrency(c)` and batches of `b` messages,
//! a connection's window must hold `c × b` messages (spread over the connections) for
//! `c` batches to be in flight at all: `max_inflight × connections ≥ concurrency ×
//! max_size`, or the later batches are flushed small.
//!
//! * A larger `max_inflight` (and more connections) lets batches fill up, and more of
//!   them be in flight: more throughput, at the cost of more messages held (and
//!   redelivered after a crash) and of acknowledgements waiting longer behind a slow
//!   batch.
//! * A larger `max_size` amortises the per-call cost (one transaction, one round trip),
//!   but each message waits for its batch to fill (up to `max_wait`) and for the whole
//!   batch to be written.
//! * `concurrency` overlaps batch calls; it only helps when the window holds
//!   `concurrency` batches.
//!
//! Measured with `bench/src/bin/batch.rs` (drain of 10,000 QoS 1 messages, a batch
//! service costing ≈ 1–2 ms per call whatever its size, `concurrency(2)`; one run per
//! row on a shared 2-core machine; more rows and the method in `BENCHMARKS.md`,
//! section "Batching"):
//!
//! | `max_size` | `max_inflight` | connections | mean batch | msg/s |
//! |---:|---:|---:|---:|---:|
//! | 1 | 1000 | 1 | 1 | 938 |
//! | 10 | 1000 | 1 | 10 | 9,401 |
//! | 100 | 100 | 1 | 100 | 29,748 |
//! | 100 | 1000 | 1 | 100 | 57,257 |
//! | 500 | 100 | 1 | 100 (capped) | 32,252 |
//! | 500 | 100 | 2 | 200 (capped) | 62,332 |
//! | 500 | 1000 | 1 | 500 | 100,848 |
//! | 500 | 1000 | 2 | 500 | 116,681 |
//!
//! # Shutdown
//!
//! When the consumer stops it waits (up to its drain timeout) for calls in progress,
//! which includes messages in open batches: they are flushed by size, by window or by
//! `max_wait`. Keep `max_wait` below the consumer's drain timeout, or those messages are
//! abandoned unacknowledged (and redelivered on the next session). When the last clone
//! of the layer's service is dropped, open batches are flushed at once.
//!
//! # Example
//!
//! Decoded readings, one batch per sensor kind, two batches in flight:
//!
//! ```no_run
//! # #[cfg(feature = "json")]
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//! use tower_mqtt::{BoxError, Config, Consumer, QoS};
//! use tower_mqtt_layers::batch::{Batch, BatchLayer, BatchResponse};
//! use tower_mqtt_layers::decode::Decoded;
//! use tower_mqtt_layers::ServiceBuilderExt;
//!
//! #[derive(serde::Deserialize)]
//! struct Reading {
//!     kind: String,
//!     celsius: f64,
//! }
//!
//! let consumer = Consumer::builder(Config::new("127.0.0.1").client_id("ingest"))
//!     .topic("readings/#", QoS::AtLeastOnce)
//!     .max_inflight(1000)
//!     .build()?;
//! let batches = BatchLayer::builder()
//!     .max_size(500)
//!     .max_wait(Duration::from_millis(200))
//!     .concurrency(2)
//!     .batch_key(|r: &Decoded<Reading>| r.value.kind.clone())
//!     .build()?;
//! let service = ServiceBuilder::new()
//!     .decode_json::<Reading>() // invalid JSON never reaches a batch
//!     .batch(batches)
//!     .service_fn(|batch: Batch<Decoded<Reading>, String>| async move {
//!         let mut response = BatchResponse::new();
//!         for (i, reading) in batch.iter().enumerate() {
//!             if reading.value.celsius.is_nan() {
//!                 response = response.fail(i, "not a temperature");
//!             }
//!         }
//!         // write the others, one transaction for the batch of `batch.key()`
//!         Ok::<_, BoxError>(response)
//!     });
//! consumer.run(service, tower_mqtt::signal::shutdown_on_signals()).await?;
//! # Ok(()) }
//! ```
//!
//! [`Origin::max_inflight`]: tower_mqtt::Origin::max_inflight
//! [`Origin::connections`]: tower_mqtt::Origin::connections

mod error;
mod future;
mod layer;
mod window;
mod worker;

use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};
use tower_mqtt::{BoxError, Message};
use tower_service::Service;

pub use self::error::{BatchConfigError, BatchFailed, BatchPanicked, BatcherUnavailable};
pub use self::future::ResponseFuture;
pub use self::layer::{BatchBuilder, BatchLayer};
use self::window::{Held, Window};
use self::worker::{Item, Waiter, Worker};

/// A request the batcher can place in the consumer's window: it knows the message it
/// came from.
///
/// ```
/// use tower_mqtt::Message;
/// use tower_mqtt_layers::batch::AsMessage;
///
/// struct Parsed {
///     message: Message,
///     line: String,
/// }
///
/// impl AsMessage for Parsed {
///     fn message(&self) -> &Message {
///         &self.message
///     }
/// }
/// ```
pub trait AsMessage {
    /// The message this request came from.
    fn message(&self) -> &Message;
}

impl AsMessage for Message {
    fn message(&self) -> &Message {
        self
    }
}

#[cfg(feature = "decode")]
impl<T> AsMessage for crate::decode::Decoded<T> {
    fn message(&self) -> &Message {
        &self.message
    }
}

/// The requests of one batch, in arrival order, and their key (`()` without
/// [`batch_key`](BatchBuilder::batch_key)).
#[derive(Debug, Clone)]
pub struct Batch<R, K = ()> {
    key: K,
    items: Vec<R>,
}

impl<R, K> Batch<R, K> {
    /// The key every request of this batch has.
    pub fn key(&self) -> &K {
        &self.key
    }

    /// The requests, in the order they reached the batcher.
    pub fn items(&self) -> &[R] {
        &self.items
    }

    /// How many requests.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are none (never, for a batch the batcher made).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The requests, by reference; index `i` is the one
    /// [`BatchResponse::fail`]`(i, ..)` names.
    pub fn iter(&self) -> std::slice::Iter<'_, R> {
        self.items.iter()
    }

    /// The key and the requests.
    pub fn into_parts(self) -> (K, Vec<R>) {
        (self.key, self.items)
    }
}

impl<R, K> IntoIterator for Batch<R, K> {
    type Item = R;
    type IntoIter = std::vec::IntoIter<R>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}

impl<'a, R, K> IntoIterator for &'a Batch<R, K> {
    type Item = &'a R;
    type IntoIter = std::slice::Iter<'a, R>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

/// The result of a batch, message by message: every message succeeds except those
/// [`fail`](Self::fail)ed. A batch service may also return `()` (all succeed).
///
/// ```
/// use tower_mqtt::Permanent;
/// use tower_mqtt_layers::batch::BatchResponse;
///
/// // Message 2 is redelivered (the consumer's default rule), message 5 never comes back.
/// let response = BatchResponse::new()
///     .fail(2, "row locked")
///     .fail(5, Permanent::new("constraint violated"));
/// assert_eq!(response.failed().collect::<Vec<_>>(), [2, 5]);
/// ```
#[derive(Debug, Default)]
pub struct BatchResponse {
    failed: Vec<(usize, BoxError)>,
}

impl BatchResponse {
    /// Every message succeeded.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Message `index` of the batch (its position in [`Batch::items`]) failed with
    /// `error`: its future returns `Err(error)`.
    #[must_use]
    pub fn fail(mut self, index: usize, error: impl Into<BoxError>) -> Self {
        self.failed.push((index, error.into()));
        self
    }

    /// The indices failed so far.
    pub fn failed(&self) -> impl Iterator<Item = usize> + '_ {
        self.failed.iter().map(|(i, _)| *i)
    }
}

impl From<()> for BatchResponse {
    fn from((): ()) -> Self {
        Self::new()
    }
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    max_size: usize,
    max_wait: Duration,
    concurrency: usize,
}

/// Adds each request to a batch and resolves when that batch is done. See the
/// [module docs](self). Cheap to clone: every clone feeds the same batches.
pub struct Batcher<R, K = ()> {
    shared: Arc<Shared<R, K>>,
}

type Start = Box<dyn FnOnce(&Handle) + Send>;

struct Shared<R, K> {
    intake: mpsc::UnboundedSender<Item<R, K>>,
    /// Spawns the worker; taken by the first call made on a tokio runtime.
    start: Mutex<Option<Start>>,
    started: AtomicBool,
    window: Arc<Mutex<Window>>,
    key: Arc<dyn Fn(&R) -> K + Send + Sync>,
    settings: Settings,
}

impl<R, K> Batcher<R, K>
where
    R: Send + 'static,
    K: Hash + Eq + Clone + Send + 'static,
{
    fn new<S>(inner: S, settings: Settings, key: Arc<dyn Fn(&R) -> K + Send + Sync>) -> Self
    where
        S: Service<Batch<R, K>> + Send + 'static,
        S::Future: Send + 'static,
        S::Response: Into<BatchResponse>,
        S::Error: Into<BoxError>,
    {
        let (intake, items) = mpsc::unbounded_channel();
        let start: Start = Box::new(move |runtime: &Handle| {
            runtime.spawn(Worker::new(inner, settings, items).run());
        });
        Self {
            shared: Arc::new(Shared {
                intake,
                start: Mutex::new(Some(start)),
                started: AtomicBool::new(false),
                window: Arc::default(),
                key,
                settings,
            }),
        }
    }
}

impl<R, K> Shared<R, K> {
    /// Spawn the worker on the current runtime, once.
    fn start(&self) -> Result<(), BatcherUnavailable> {
        let mut start = self.start.lock().unwrap_or_else(PoisonError::into_inner);
        if start.is_some() {
            let runtime = Handle::try_current().map_err(|_| BatcherUnavailable::NO_RUNTIME)?;
            if let Some(spawn) = start.take() {
                spawn(&runtime);
            }
        }
        self.started.store(true, Ordering::Release);
        Ok(())
    }
}

impl<R, K> Clone for Batcher<R, K> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<R, K> fmt::Debug for Batcher<R, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batcher")
            .field("settings", &self.shared.settings)
            .field("started", &self.shared.started.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<R, K> Service<R> for Batcher<R, K>
where
    R: AsMessage,
{
    type Response = ();
    type Error = BoxError;
    type Future = ResponseFuture;

    /// Always ready: the consumer's window bounds the messages a batcher holds.
    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: R) -> Self::Future {
        let shared = &*self.shared;
        if !shared.started.load(Ordering::Acquire) {
            if let Err(e) = shared.start() {
                return ResponseFuture::failed(e.into());
            }
        }
        let origin = request.message().origin();
        let window = origin
            .max_inflight()
            .saturating_mul(origin.connections())
            .max(1);
        let (place, held) = shared
            .window
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .arrive(origin.client_id());
        let (reply, result) = oneshot::channel();
        let item = Item {
            key: (shared.key)(&request),
            request,
            waiter: Waiter::new(reply, Held::new(shared.window.clone(), place)),
            window,
            window_full: held >= window,
        };
        match shared.intake.send(item) {
            Ok(()) => ResponseFuture::waiting(result),
            // The item, and with it the message's place in the window, is dropped.
            Err(_) => ResponseFuture::failed(BatcherUnavailable::STOPPED.into()),
        }
    }
}

#[cfg(test)]
mod tests;
