//! The state every clone of one [`Partition`](super::Partition) shares: a FIFO lane of
//! calls per key, and how many calls wait in the lanes.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// The lanes of one partitioned service.
#[derive(Debug)]
pub(super) struct Lanes<K> {
    state: Mutex<State<K>>,
    max_waiting: usize,
}

#[derive(Debug)]
struct State<K> {
    /// Per key: the calls in arrival order; the front one has the turn.
    lanes: HashMap<K, VecDeque<Slot>>,
    /// Calls queued behind another call with the same key.
    waiting: usize,
    next_id: u64,
    /// Clones whose `poll_ready` waits for room.
    room: Vec<Waker>,
}

impl<K> State<K> {
    /// One call fewer waits: a clone waiting for room may go on.
    fn free_one(&mut self) {
        self.waiting -= 1;
        for waker in self.room.drain(..) {
            waker.wake();
        }
    }
}

#[derive(Debug)]
struct Slot {
    id: u64,
    waker: Option<Waker>,
}

impl<K> Lanes<K> {
    pub(super) fn new(max_waiting: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                lanes: HashMap::new(),
                waiting: 0,
                next_id: 0,
                room: Vec::new(),
            }),
            max_waiting,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State<K>> {
        // A panic while holding the lock cannot leave the lanes half-updated (every
        // update is a few assignments), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserve room for one more waiting call: ready when fewer than `max_waiting`
    /// calls wait (or hold a reservation). [`join`](Self::join) uses the reservation,
    /// [`unreserve`](Self::unreserve) gives it back.
    pub(super) fn poll_reserve(&self, cx: &Context<'_>) -> Poll<()> {
        let mut state = self.lock();
        if state.waiting < self.max_waiting {
            state.waiting += 1;
            return Poll::Ready(());
        }
        if !state.room.iter().any(|w| w.will_wake(cx.waker())) {
            state.room.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Calls waiting in the lanes now.
    pub(super) fn waiting(&self) -> usize {
        self.lock().waiting
    }

    /// Give back a reservation that no call used.
    pub(super) fn unreserve(&self) {
        self.lock().free_one();
    }
}

impl<K: Hash + Eq + Clone> Lanes<K> {
    /// Join the lane of `key`, behind the calls already in it, with a reservation
    /// from [`poll_reserve`](Self::poll_reserve): a call that waits keeps it until its
    /// turn comes, one that runs at once gives it back.
    pub(super) fn join(self: &Arc<Self>, key: K) -> Turn<K> {
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        let lane = state.lanes.entry(key.clone()).or_default();
        let runs = lane.is_empty();
        lane.push_back(Slot { id, waker: None });
        if runs {
            state.free_one();
        }
        Turn {
            lanes: self.clone(),
            key,
            id,
        }
    }
}

/// A call's place in its lane; leaving it (drop) hands the turn to the next call.
#[derive(Debug)]
pub(super) struct Turn<K: Hash + Eq + Clone> {
    lanes: Arc<Lanes<K>>,
    key: K,
    id: u64,
}

impl<K: Hash + Eq + Clone> Turn<K> {
    /// Ready once every earlier call of the key has finished.
    pub(super) fn poll_turn(&self, cx: &Context<'_>) -> Poll<()> {
        let mut state = self.lanes.lock();
        let lane = state
            .lanes
            .get_mut(&self.key)
            .expect("a turn's lane lives as long as the turn");
        if lane.front().is_some_and(|s| s.id == self.id) {
            return Poll::Ready(());
        }
        let slot = lane
            .iter_mut()
            .find(|s| s.id == self.id)
            .expect("a turn stays in its lane until dropped");
        match &mut slot.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            w => *w = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<K: Hash + Eq + Clone> Drop for Turn<K> {
    fn drop(&mut self) {
        let mut state = self.lanes.lock();
        let Some(lane) = state.lanes.get_mut(&self.key) else {
            return;
        };
        let Some(at) = lane.iter().position(|s| s.id == self.id) else {
            return;
        };
        lane.remove(at);
        // Either the running call left (the next one, if any, stops waiting), or a
        // waiting call was dropped before its turn.
        let freed = at > 0 || !lane.is_empty();
        if at == 0 {
            if let Some(next) = lane.front_mut().and_then(|s| s.waker.take()) {
                next.wake();
            }
        }
        if lane.is_empty() {
            state.lanes.remove(&self.key);
        }
        if freed {
            state.free_one();
        }
    }
}
