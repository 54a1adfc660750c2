//! What the consumer's connections hold of the messages that passed through the batch
//! layer, so that a batch never waits for messages the broker will not send.
//!
//! A connection holds a message from its arrival until it and every message that
//! arrived before it on that connection have been decided (acknowledgements leave in
//! arrival order). So per connection the layer keeps the messages from the oldest
//! undecided one to the newest, and the sum over connections is what the consumer's
//! window holds of them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

/// Messages held by each connection, as far as this layer has seen them.
#[derive(Debug, Default)]
pub(super) struct Window {
    index: HashMap<String, usize>,
    conns: Vec<Conn>,
    total: usize,
}

#[derive(Debug, Default)]
struct Conn {
    /// Arrival number of `decided[0]`.
    base: u64,
    /// From the oldest undecided message on: whether each is decided.
    decided: VecDeque<bool>,
}

impl Window {
    /// A message arrived on connection `client_id`: returns its place and how many
    /// messages all connections hold now, this one included.
    pub(super) fn arrive(&mut self, client_id: &str) -> (Place, usize) {
        let conn = if let Some(&i) = self.index.get(client_id) {
            i
        } else {
            self.conns.push(Conn::default());
            let i = self.conns.len() - 1;
            self.index.insert(client_id.to_owned(), i);
            i
        };
        let c = &mut self.conns[conn];
        let seq = c.base + c.decided.len() as u64;
        c.decided.push_back(false);
        self.total += 1;
        (Place { conn, seq }, self.total)
    }

    /// The message at `place` was decided: it and the decided ones behind it leave
    /// once nothing older on its connection is undecided.
    pub(super) fn decide(&mut self, place: Place) {
        let c = &mut self.conns[place.conn];
        let Some(offset) = place.seq.checked_sub(c.base) else {
            return;
        };
        if let Some(slot) = c.decided.get_mut(offset as usize) {
            *slot = true;
        }
        while c.decided.front() == Some(&true) {
            c.decided.pop_front();
            c.base += 1;
            self.total -= 1;
        }
    }

    #[cfg(test)]
    pub(super) fn total(&self) -> usize {
        self.total
    }
}

/// Where one message sits in [`Window`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Place {
    conn: usize,
    seq: u64,
}

/// Marks its message decided when dropped: owned by the message's response future, so
/// a future that completes or is dropped (the connection went away) frees its place.
#[derive(Debug)]
pub(super) struct Held {
    window: Arc<Mutex<Window>>,
    place: Place,
}

impl Held {
    pub(super) fn new(window: Arc<Mutex<Window>>, place: Place) -> Self {
        Self { window, place }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        window.decide(self.place);
    }
}

#[cfg(test)]
mod tests {
    use super::Window;

    #[test]
    fn a_decided_message_stays_held_behind_an_undecided_one() {
        let mut w = Window::default();
        let (a, _) = w.arrive("c_0");
        let (b, _) = w.arrive("c_0");
        let (x, total) = w.arrive("c_1");
        assert_eq!(total, 3);
        w.decide(b);
        assert_eq!(w.total(), 3, "b's ack waits behind a");
        w.decide(x);
        assert_eq!(w.total(), 2);
        w.decide(a);
        assert_eq!(w.total(), 0);
        let (_, total) = w.arrive("c_0");
        assert_eq!(total, 1);
    }
}
