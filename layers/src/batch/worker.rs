//! The task behind every clone of one batch layer: collects messages into batches,
//! flushes them, calls the batch service with at most `concurrency` batches in flight,
//! and hands each message its result.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::stream::{FuturesUnordered, StreamExt};
use pin_project_lite::pin_project;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Sleep};
use tower_mqtt::BoxError;
use tower_service::Service;

use super::error::{BatchFailed, BatchPanicked};
use super::window::Held;
use super::{Batch, BatchResponse, Settings};

/// A message waiting for its batch: where its result goes, and its place in the
/// consumer's window.
pub(super) struct Waiter {
    reply: oneshot::Sender<Result<(), BoxError>>,
    held: Held,
}

impl Waiter {
    pub(super) fn new(reply: oneshot::Sender<Result<(), BoxError>>, held: Held) -> Self {
        Self { reply, held }
    }

    /// Hand the message its result. Its place in the window is freed first, by the
    /// worker, not later when the connection's task polls the message's future: by then
    /// another connection may already bring new messages, and a count that still held
    /// this one would flush their batch early.
    fn send(self, result: Result<(), BoxError>) {
        drop(self.held);
        let _ = self.reply.send(result);
    }
}

/// One message on its way to the worker.
pub(super) struct Item<R, K> {
    pub(super) request: R,
    pub(super) key: K,
    pub(super) waiter: Waiter,
    /// What the consumer's connections can hold (`max_inflight × connections`).
    pub(super) window: usize,
    /// With this message the connections hold their whole window: nothing more arrives
    /// until something is decided, so every open batch is flushed.
    pub(super) window_full: bool,
}

/// A batch still taking messages.
struct Open<R> {
    id: u64,
    requests: Vec<R>,
    replies: Vec<Waiter>,
}

/// A flushed batch waiting for a free slot.
struct Sealed<R, K> {
    batch: Batch<R, K>,
    replies: Vec<Waiter>,
}

pub(super) struct Worker<S, R, K>
where
    S: Service<Batch<R, K>>,
{
    inner: S,
    settings: Settings,
    intake: mpsc::UnboundedReceiver<Item<R, K>>,
    closed: bool,
    open: HashMap<K, Open<R>>,
    /// Deadlines of open batches in the order they were opened (all share `max_wait`,
    /// so the front is the next one); entries of batches already flushed are skipped.
    deadlines: VecDeque<(Instant, K, u64)>,
    next_id: u64,
    timer: Pin<Box<Sleep>>,
    sealed: VecDeque<Sealed<R, K>>,
    in_flight: FuturesUnordered<InFlight<S::Future>>,
    /// The batch service failed `poll_ready`: every later batch fails with this.
    broken: Option<Arc<BoxError>>,
    warned: bool,
}

impl<S, R, K> Worker<S, R, K>
where
    S: Service<Batch<R, K>>,
    S::Response: Into<BatchResponse>,
    S::Error: Into<BoxError>,
    K: Hash + Eq + Clone,
{
    pub(super) fn new(
        inner: S,
        settings: Settings,
        intake: mpsc::UnboundedReceiver<Item<R, K>>,
    ) -> Self {
        Self {
            inner,
            settings,
            intake,
            closed: false,
            open: HashMap::new(),
            deadlines: VecDeque::new(),
            next_id: 0,
            timer: Box::pin(tokio::time::sleep_until(Instant::now())),
            sealed: VecDeque::new(),
            in_flight: FuturesUnordered::new(),
            broken: None,
            warned: false,
        }
    }

    /// The largest batch for a consumer window of `window` messages: `max_size`, or the
    /// window when it is smaller (a bigger batch would wait for its timer every time).
    fn cap(&mut self, window: usize) -> usize {
        let max_size = self.settings.max_size;
        if max_size > window && !self.warned {
            self.warned = true;
            tracing::warn!(
                target: "tower_mqtt_layers::batch",
                max_size,
                window,
                "batch max_size is larger than the consumer's window (max_inflight × \
                 connections): batches are flushed at {window} messages, since the broker \
                 sends no more until some are acknowledged; raise max_inflight or lower \
                 max_size"
            );
        }
        max_size.min(window)
    }

    fn add(&mut self, item: Item<R, K>) {
        let cap = self.cap(item.window);
        let Item {
            request,
            key,
            waiter,
            window_full,
            ..
        } = item;
        if !self.open.contains_key(&key) {
            let id = self.next_id;
            self.next_id += 1;
            let deadline = Instant::now() + self.settings.max_wait;
            self.deadlines.push_back((deadline, key.clone(), id));
            // Room for a typical batch at once (growing one item at a time cost ~400
            // instructions per message at 50), but not for a huge `max_size` per key.
            let room = cap.min(64);
            let open = Open {
                id,
                requests: Vec::with_capacity(room),
                replies: Vec::with_capacity(room),
            };
            self.open.insert(key.clone(), open);
        }
        let open = self.open.get_mut(&key).expect("opened above");
        open.requests.push(request);
        open.replies.push(waiter);
        if open.requests.len() >= cap {
            self.seal(key);
        }
        if window_full {
            let keys: Vec<K> = self.deadlines.iter().map(|(_, k, _)| k.clone()).collect();
            for key in keys {
                self.seal(key);
            }
        }
    }

    /// Flush the open batch of `key`, if there is one.
    fn seal(&mut self, key: K) {
        if let Some(open) = self.open.remove(&key) {
            self.sealed.push_back(Sealed {
                batch: Batch {
                    key,
                    items: open.requests,
                },
                replies: open.replies,
            });
        }
    }

    /// Flush the batches whose `max_wait` has passed; arm the timer for the next one.
    fn expire(&mut self, cx: &mut Context<'_>) {
        while let Some((deadline, key, id)) = self.deadlines.front() {
            if self.open.get(key).map_or(true, |open| open.id != *id) {
                self.deadlines.pop_front();
                continue;
            }
            if *deadline > Instant::now() {
                let deadline = *deadline;
                if self.timer.deadline() != deadline {
                    self.timer.as_mut().reset(deadline);
                }
                if self.timer.as_mut().poll(cx).is_pending() {
                    return;
                }
            }
            let (_, key, _) = self.deadlines.pop_front().expect("front exists");
            self.seal(key);
        }
    }

    /// Call the batch service for sealed batches while a slot is free.
    fn dispatch(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        while !self.sealed.is_empty() && self.in_flight.len() < self.settings.concurrency {
            if let Some(error) = &self.broken {
                let sealed = self.sealed.pop_front().expect("not empty");
                fail(sealed.replies, error);
                progress = true;
                continue;
            }
            match self.inner.poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => {
                    self.broken = Some(Arc::new(e.into()));
                    continue;
                }
                Poll::Pending => break,
            }
            let Sealed { batch, replies } = self.sealed.pop_front().expect("not empty");
            let call = match catch_unwind(AssertUnwindSafe(|| self.inner.call(batch))) {
                Ok(future) => Call::Running { future },
                Err(panic) => Call::Panicked {
                    panic: Some(BatchPanicked::from_payload(&*panic)),
                },
            };
            self.in_flight.push(InFlight {
                call,
                replies: Some(replies),
            });
            progress = true;
        }
        progress
    }

    /// Run until every handle is gone and the last batch is done.
    pub(super) async fn run(mut self) {
        std::future::poll_fn(|cx| self.poll_step(cx)).await;
    }

    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let this = self;
        loop {
            let mut progress = false;
            while !this.closed {
                match this.intake.poll_recv(cx) {
                    Poll::Ready(Some(item)) => this.add(item),
                    Poll::Ready(None) => {
                        // Every handle is gone: flush what is open, finish, stop.
                        this.closed = true;
                        let keys: Vec<K> = this.open.keys().cloned().collect();
                        for key in keys {
                            this.seal(key);
                        }
                    }
                    Poll::Pending => break,
                }
                progress = true;
            }
            this.expire(cx);
            progress |= this.dispatch(cx);
            while let Poll::Ready(Some((replies, result))) = this.in_flight.poll_next_unpin(cx) {
                deliver(replies, result);
                progress = true;
            }
            if this.closed && this.sealed.is_empty() && this.in_flight.is_empty() {
                return Poll::Ready(());
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }
}

/// Every message of a failed batch gets the batch's error.
fn fail(replies: Vec<Waiter>, error: &Arc<BoxError>) {
    let size = replies.len();
    for (index, reply) in replies.into_iter().enumerate() {
        reply.send(Err(BatchFailed::new(error.clone(), size, index).into()));
    }
}

/// Hand each message of a finished batch its result.
fn deliver(replies: Vec<Waiter>, result: Result<BatchResponse, BoxError>) {
    let response = match result {
        Ok(response) => response,
        Err(e) => return fail(replies, &Arc::new(e)),
    };
    let mut results: Vec<Result<(), BoxError>> = replies.iter().map(|_| Ok(())).collect();
    for (index, error) in response.failed {
        match results.get_mut(index) {
            Some(slot @ Ok(())) => *slot = Err(error),
            Some(Err(_)) => tracing::warn!(
                target: "tower_mqtt_layers::batch",
                index, %error,
                "BatchResponse failed message {index} twice; the first error is kept"
            ),
            None => tracing::warn!(
                target: "tower_mqtt_layers::batch",
                index, size = replies.len(), %error,
                "BatchResponse failed message {index} of a batch of {}: no such message, \
                 the error is ignored", replies.len()
            ),
        }
    }
    for (reply, result) in replies.into_iter().zip(results) {
        reply.send(result);
    }
}

pin_project! {
    /// One batch service call and the replies of its messages.
    struct InFlight<F> {
        #[pin]
        call: Call<F>,
        replies: Option<Vec<Waiter>>,
    }
}

pin_project! {
    #[project = CallProj]
    enum Call<F> {
        Running { #[pin] future: F },
        Panicked { panic: Option<BatchPanicked> },
    }
}

impl<F, T, E> Future for InFlight<F>
where
    F: Future<Output = Result<T, E>>,
    T: Into<BatchResponse>,
    E: Into<BoxError>,
{
    type Output = (Vec<Waiter>, Result<BatchResponse, BoxError>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.call.project() {
            CallProj::Running { future } => {
                match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                    Ok(Poll::Pending) => return Poll::Pending,
                    Ok(Poll::Ready(result)) => result.map(Into::into).map_err(Into::into),
                    Err(panic) => Err(BatchPanicked::from_payload(&*panic).into()),
                }
            }
            CallProj::Panicked { panic } => Err(panic
                .take()
                .map_or_else(|| "batch call polled after it completed".into(), Into::into)),
        };
        Poll::Ready((this.replies.take().unwrap_or_default(), result))
    }
}
