//! How many times a connection slot has been given a message: the memory behind
//! [`Message::delivery_count`](crate::Message::delivery_count).
//!
//! MQTT says nothing about counting deliveries. What it gives is the DUP flag: the broker
//! resends an unacknowledged PUBLISH, on the next connection of the same session, with
//! the same packet id and DUP set. So a slot remembers each message it gave to the
//! service and did not acknowledge, keyed by what the broker keeps when it resends:
//! packet id, topic, and a hash of the payload (the packet id alone is reused as soon as
//! the broker has its ack; the payload hash tells apart two messages that got the same
//! packet id and topic). The entry is updated when the message comes back and fails
//! again, and removed when it is acknowledged.
//!
//! Cost: a first delivery (DUP clear) is never looked up, and one that is acknowledged is
//! never hashed. Only failures and DUP deliveries touch the tracker.
//!
//! Memory: at most twice `max_inflight` entries ([`HARD_CAP`] at most), oldest dropped
//! first ([`Deliveries::new`]).

use std::collections::hash_map::{DefaultHasher, Entry};
use std::collections::{BTreeMap, HashMap};
use std::hash::Hasher;

use bytes::Bytes;
use bytestring::ByteString;

/// The most entries one slot keeps, whatever `max_inflight` says (about 100 bytes each
/// plus the topic's share of its packet buffer).
pub(super) const HARD_CAP: usize = 16_384;

/// What identifies a message across its redeliveries to one session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Key {
    pkid: u16,
    topic: ByteString,
    payload_hash: u64,
}

impl Key {
    pub(super) fn new(pkid: u16, topic: ByteString, payload: &[u8]) -> Self {
        Self {
            pkid,
            topic,
            payload_hash: hash_payload(payload),
        }
    }
}

/// A fixed-key hash, so that the same payload always gives the same value.
fn hash_payload(payload: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    hasher.write(payload);
    hasher.finish()
}

/// One remembered message: its deliveries so far and when it was last recorded.
#[derive(Debug, Clone, Copy)]
struct Seen {
    deliveries: u32,
    stamp: u64,
}

/// The delivery counts of one connection slot's unacknowledged messages. Lives as long
/// as the slot (across its connections), never longer than the process.
#[derive(Debug)]
pub(super) struct Deliveries {
    seen: HashMap<Key, Seen>,
    /// Entries by age (`Seen::stamp`), for oldest-first eviction.
    by_age: BTreeMap<u64, Key>,
    next_stamp: u64,
    capacity: usize,
}

impl Deliveries {
    /// A tracker for a slot that holds at most `max_inflight` messages at once.
    ///
    /// Capacity: twice `max_inflight`, at most [`HARD_CAP`]. A connection withholds at
    /// most `max_inflight` failures before it resumes its session, so the live entries
    /// are this connection's failures plus those of the connection before that have not
    /// come back yet (with MQTT 3.1.1 the broker's own window decides how many it
    /// resends, and it can be larger than ours). Anything beyond belongs to messages
    /// that will not come back to this slot (another member of a shared group took
    /// them, they expired, the session was lost), and the oldest goes first.
    pub(super) fn new(max_inflight: usize) -> Self {
        Self {
            seen: HashMap::new(),
            by_age: BTreeMap::new(),
            next_stamp: 0,
            capacity: max_inflight.saturating_mul(2).clamp(1, HARD_CAP),
        }
    }

    /// The most entries kept.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.capacity
    }

    /// Entries kept now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.seen.len()
    }

    /// The delivery count of a PUBLISH that arrived with DUP set: one more than the
    /// deliveries remembered for `key`, or 2 when none are (the broker says it sent the
    /// message before, to an earlier connection or process of this session).
    pub(super) fn redelivered(&self, key: &Key) -> u32 {
        self.seen
            .get(key)
            .map_or(2, |seen| seen.deliveries.saturating_add(1))
    }

    /// The message's call finished without an acknowledgement, on its `deliveries`-th
    /// delivery: it comes back when the session is resumed. Keeps the higher count if
    /// the message is already known (a late result of an earlier delivery can finish
    /// after a later one).
    pub(super) fn unacknowledged(&mut self, key: Key, deliveries: u32) {
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        match self.seen.entry(key) {
            Entry::Occupied(mut entry) => {
                let seen = entry.get_mut();
                let key = self
                    .by_age
                    .remove(&seen.stamp)
                    .expect("every entry has its age");
                seen.deliveries = seen.deliveries.max(deliveries);
                seen.stamp = stamp;
                self.by_age.insert(stamp, key);
            }
            Entry::Vacant(entry) => {
                self.by_age.insert(stamp, entry.key().clone());
                entry.insert(Seen { deliveries, stamp });
                while self.seen.len() > self.capacity {
                    let (_, oldest) = self.by_age.pop_first().expect("more entries than 0");
                    self.seen.remove(&oldest);
                }
            }
        }
    }

    /// The message was acknowledged: it will not come back.
    pub(super) fn acknowledged(&mut self, key: &Key) {
        if let Some(seen) = self.seen.remove(key) {
            self.by_age.remove(&seen.stamp);
        }
    }
}

/// What a finished call needs to update the tracker: how the message is known.
#[derive(Debug)]
pub(super) enum Identity {
    /// QoS 0: never acknowledged, never redelivered, never tracked.
    Untracked,
    /// A first delivery: hashed only if its call ends without an acknowledgement.
    First(Bytes),
    /// A redelivery, already looked up.
    Again(Key),
}

impl Identity {
    /// The key (`None` for QoS 0), hashing the payload of a first delivery now.
    pub(super) fn key(&self, pkid: u16, topic: &ByteString) -> Option<Key> {
        match self {
            Self::Untracked => None,
            Self::First(payload) => Some(Key::new(pkid, topic.clone(), payload)),
            Self::Again(key) => Some(key.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(pkid: u16, topic: &str, payload: &str) -> Key {
        Key::new(pkid, topic.into(), payload.as_bytes())
    }

    #[test]
    fn each_failed_delivery_adds_one() {
        let mut d = Deliveries::new(10);
        let k = key(7, "t", "poison");
        // First delivery (DUP clear): count 1, not looked up; it fails.
        d.unacknowledged(k.clone(), 1);
        for expected in 2..=5 {
            let count = d.redelivered(&k);
            assert_eq!(count, expected);
            d.unacknowledged(k.clone(), count);
        }
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn a_dup_delivery_never_seen_counts_two() {
        let d = Deliveries::new(10);
        assert_eq!(d.redelivered(&key(1, "t", "x")), 2);
    }

    #[test]
    fn packet_id_topic_and_payload_all_identify_the_message() {
        let mut d = Deliveries::new(10);
        d.unacknowledged(key(1, "t", "x"), 3);
        assert_eq!(d.redelivered(&key(1, "t", "x")), 4);
        assert_eq!(d.redelivered(&key(2, "t", "x")), 2, "another packet id");
        assert_eq!(d.redelivered(&key(1, "u", "x")), 2, "another topic");
        assert_eq!(d.redelivered(&key(1, "t", "y")), 2, "another payload");
    }

    #[test]
    fn an_acknowledged_message_is_forgotten() {
        let mut d = Deliveries::new(10);
        let k = key(1, "t", "x");
        d.unacknowledged(k.clone(), 1);
        d.acknowledged(&k);
        assert_eq!(d.len(), 0);
        assert!(d.by_age.is_empty());
        assert_eq!(d.redelivered(&k), 2);
        // Acknowledging something unknown is harmless.
        d.acknowledged(&key(9, "t", "x"));
    }

    #[test]
    fn a_late_result_does_not_lower_the_count() {
        let mut d = Deliveries::new(10);
        let k = key(1, "t", "x");
        d.unacknowledged(k.clone(), 3);
        d.unacknowledged(k.clone(), 2);
        assert_eq!(d.redelivered(&k), 4);
    }

    #[test]
    fn the_oldest_entry_goes_first_beyond_capacity() {
        let mut d = Deliveries::new(2);
        assert_eq!(d.capacity(), 4);
        for pkid in 1..=4 {
            d.unacknowledged(key(pkid, "t", "x"), 1);
        }
        // Recorded again: now the youngest.
        d.unacknowledged(key(1, "t", "x"), 2);
        d.unacknowledged(key(5, "t", "x"), 1);
        assert_eq!(d.len(), 4);
        assert_eq!(d.by_age.len(), 4);
        assert_eq!(d.redelivered(&key(2, "t", "x")), 2, "evicted");
        assert_eq!(d.redelivered(&key(1, "t", "x")), 3, "kept");
        for pkid in 3..=5 {
            assert_eq!(d.redelivered(&key(pkid, "t", "x")), 2);
        }
        d.unacknowledged(key(6, "t", "x"), 1);
        assert_eq!(d.redelivered(&key(3, "t", "x")), 2, "evicted next");
    }

    #[test]
    fn capacity_is_twice_the_window_up_to_the_hard_cap() {
        assert_eq!(Deliveries::new(1).capacity(), 2);
        assert_eq!(Deliveries::new(100).capacity(), 200);
        assert_eq!(Deliveries::new(65_535).capacity(), HARD_CAP);
        let mut d = Deliveries::new(65_535);
        for i in 0..(HARD_CAP as u32 + 100) {
            d.unacknowledged(Key::new(i as u16, "t".into(), &i.to_be_bytes()), 1);
        }
        assert_eq!(d.len(), HARD_CAP);
        assert_eq!(d.by_age.len(), HARD_CAP);
    }

    #[test]
    fn the_count_saturates() {
        let mut d = Deliveries::new(1);
        let k = key(1, "t", "x");
        d.unacknowledged(k.clone(), u32::MAX);
        assert_eq!(d.redelivered(&k), u32::MAX);
    }

    #[test]
    fn a_first_delivery_is_hashed_only_when_asked() {
        let payload = Bytes::from_static(b"x");
        let topic = ByteString::from("t");
        assert_eq!(
            Identity::First(payload).key(1, &topic),
            Some(key(1, "t", "x"))
        );
        assert_eq!(Identity::Untracked.key(0, &topic), None);
    }
}
