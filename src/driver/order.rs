//! Acknowledgements in arrival order (MQTT-4.6.0-2).
//!
//! Each QoS 1/2 message takes a slot when it arrives. When its service call finishes the
//! slot is decided; decided slots are released from the front only, so acknowledgements
//! leave in arrival order however the calls finish. A slot decided as not acknowledged
//! (Leave, Redeliver) is released like any other, so it never blocks the slots behind it.

use std::collections::VecDeque;

use crate::config::QoS;
use crate::disposition::Disposition;

#[derive(Debug)]
struct Slot {
    pkid: u16,
    qos: QoS,
    decided: Option<Disposition>,
}

/// The per-connection queue of unacknowledged QoS 1/2 messages.
#[derive(Debug, Default)]
pub(crate) struct AckOrder {
    /// Sequence number of `slots[0]`.
    base: u64,
    slots: VecDeque<Slot>,
    /// Slots decided but still waiting behind an undecided one.
    waiting: usize,
}

impl AckOrder {
    /// Take a slot for a message that just arrived; returns its sequence number.
    pub(crate) fn push(&mut self, pkid: u16, qos: QoS) -> u64 {
        self.slots.push_back(Slot {
            pkid,
            qos,
            decided: None,
        });
        self.base + self.slots.len() as u64 - 1
    }

    /// Record the decision for slot `seq`. Unknown or already decided slots are ignored.
    pub(crate) fn decide(&mut self, seq: u64, disposition: Disposition) {
        let Some(index) = seq.checked_sub(self.base) else {
            return;
        };
        if let Some(slot) = self.slots.get_mut(index as usize) {
            if slot.decided.is_none() {
                slot.decided = Some(disposition);
                self.waiting += 1;
            }
        }
    }

    /// Release the decided prefix, front first, calling `f(pkid, qos, disposition)`.
    pub(crate) fn release(&mut self, mut f: impl FnMut(u16, QoS, Disposition)) {
        while let Some(Slot {
            decided: Some(d), ..
        }) = self.slots.front()
        {
            let d = *d;
            let slot = self.slots.pop_front().expect("front exists");
            self.base += 1;
            self.waiting -= 1;
            f(slot.pkid, slot.qos, d);
        }
    }

    /// Decide every undecided slot as `disposition` (used when calls are abandoned).
    pub(crate) fn abandon(&mut self, disposition: Disposition) {
        for slot in self.slots.iter_mut().filter(|s| s.decided.is_none()) {
            slot.decided = Some(disposition);
            self.waiting += 1;
        }
    }

    /// Slots decided but held back by an earlier undecided one.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting
    }

    /// Whether no slot is outstanding.
    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn released(order: &mut AckOrder) -> Vec<(u16, Disposition)> {
        let mut out = Vec::new();
        order.release(|pkid, _, d| out.push((pkid, d)));
        out
    }

    #[test]
    fn acks_leave_in_arrival_order_whatever_the_completion_order() {
        let mut order = AckOrder::default();
        let s: Vec<u64> = (1..=4).map(|p| order.push(p, QoS::AtLeastOnce)).collect();
        order.decide(s[2], Disposition::Ack);
        order.decide(s[1], Disposition::Ack);
        assert!(released(&mut order).is_empty());
        assert_eq!(order.waiting(), 2);
        order.decide(s[0], Disposition::Ack);
        assert_eq!(
            released(&mut order),
            vec![
                (1, Disposition::Ack),
                (2, Disposition::Ack),
                (3, Disposition::Ack)
            ]
        );
        order.decide(s[3], Disposition::Ack);
        assert_eq!(released(&mut order), vec![(4, Disposition::Ack)]);
        assert!(order.is_empty());
        assert_eq!(order.waiting(), 0);
    }

    #[test]
    fn a_withheld_message_does_not_block_later_acks() {
        let mut order = AckOrder::default();
        let a = order.push(1, QoS::AtLeastOnce);
        let b = order.push(2, QoS::AtLeastOnce);
        order.decide(b, Disposition::Ack);
        order.decide(a, Disposition::Redeliver);
        assert_eq!(
            released(&mut order),
            vec![(1, Disposition::Redeliver), (2, Disposition::Ack)]
        );
    }

    #[test]
    fn abandon_releases_everything_behind_a_stuck_call() {
        let mut order = AckOrder::default();
        let _stuck = order.push(1, QoS::ExactlyOnce);
        let done = order.push(2, QoS::ExactlyOnce);
        order.decide(done, Disposition::Ack);
        order.abandon(Disposition::Leave);
        assert_eq!(
            released(&mut order),
            vec![(1, Disposition::Leave), (2, Disposition::Ack)]
        );
    }

    #[test]
    fn stale_and_repeated_decisions_are_ignored() {
        let mut order = AckOrder::default();
        let a = order.push(1, QoS::AtLeastOnce);
        order.decide(a, Disposition::Ack);
        order.decide(a, Disposition::Leave);
        assert_eq!(released(&mut order), vec![(1, Disposition::Ack)]);
        order.decide(a, Disposition::Ack);
        order.decide(99, Disposition::Ack);
        assert!(released(&mut order).is_empty());
        assert_eq!(order.waiting(), 0);
    }
}
