//! **The one place where a service result becomes an acknowledgement decision.**
//!
//! The consumer calls your service with each [`Message`](crate::Message). When the call
//! finishes, [`AckPolicy::decide`] maps its `Result` to a [`Disposition`]; the connection
//! driver carries the disposition out on the wire. Layers never acknowledge anything:
//! they only shape the `Result`.
//!
//! | service result | policy | disposition | on the wire (QoS 1 / QoS 2) |
//! |---|---|---|---|
//! | `Ok` | [`OnSuccess::Ack`] | [`Disposition::Ack`] | PUBACK / PUBREC, in arrival order |
//! | `Err` | [`OnFailure::Redeliver`] (default) | [`Disposition::Redeliver`] | nothing now; the session is resumed so the broker sends it again |
//! | `Err` | [`OnFailure::Noop`] | [`Disposition::Leave`] | nothing; the broker resends it when the session is next resumed |
//! | `Err` | [`OnFailure::Ack`] | [`Disposition::Ack`] | PUBACK / PUBREC: the message is dropped |
//! | `Err` | [`OnFailure::Reject`] | [`Disposition::Reject`] | MQTT 5: PUBACK / PUBREC with reason 0x80 (Unspecified error); MQTT 3.1.1: plain PUBACK / PUBREC |
//!
//! QoS 0 messages have nothing to acknowledge; their disposition is still decided and
//! reported, but nothing is sent and nothing can be redelivered.
//!
//! # Ordering
//!
//! MQTT requires acknowledgements in the order the messages arrived (MQTT-4.6.0-2), and
//! some brokers stall when they are not. Services finish in any order, so each
//! connection holds a finished message's acknowledgement until every message that
//! arrived before it on that connection has been decided. A message that is *not*
//! acknowledged (Leave or Redeliver) leaves the order when it is decided: it never
//! holds back the acknowledgements behind it, and it is never acknowledged on that
//! connection afterwards. The acknowledgements that are sent therefore always follow
//! arrival order.

use crate::error::BoxError;

/// What to do when the service returns `Ok`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnSuccess {
    /// Acknowledge the message (PUBACK for QoS 1, PUBREC for QoS 2). The default.
    #[default]
    Ack,
}

/// What to do when the service returns `Err`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnFailure {
    /// Leave the message unacknowledged. The broker sends it again only when the
    /// session is next resumed (a reconnect or restart with `clean_start(false)`).
    /// Until then it occupies one of the broker's in-flight slots: when failures fill
    /// the broker's window, no new messages arrive on that connection.
    Noop,
    /// Acknowledge the message anyway: it will not come back.
    Ack,
    /// Leave it unacknowledged and get it back without a restart (the default). Once
    /// failures would fill the in-flight window, or after
    /// [`redeliver_after`](crate::ConsumerBuilder::redeliver_after), the connection stops
    /// taking new messages, lets in-flight successes acknowledge, disconnects cleanly and
    /// resumes its session, so the broker redelivers the failures (with DUP set).
    #[default]
    Redeliver,
    /// Acknowledge it as failed. MQTT 5 sends reason code 0x80 (Unspecified error),
    /// which brokers count as acknowledged and never resend; MQTT 3.1.1 has no reason
    /// codes and sends a plain acknowledgement.
    Reject,
}

/// The decision taken for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Disposition {
    /// Acknowledge it.
    Ack,
    /// Leave it unacknowledged until the session is next resumed.
    Leave,
    /// Leave it unacknowledged and resume the session soon so it comes back.
    Redeliver,
    /// Acknowledge it with an error reason (MQTT 5) or plainly (MQTT 3.1.1).
    Reject,
}

impl Disposition {
    /// Whether an acknowledgement goes to the broker.
    pub fn acknowledges(self) -> bool {
        matches!(self, Disposition::Ack | Disposition::Reject)
    }

    /// Stable lowercase name, used in telemetry.
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Ack => "ack",
            Disposition::Leave => "leave",
            Disposition::Redeliver => "redeliver",
            Disposition::Reject => "reject",
        }
    }
}

impl std::fmt::Display for Disposition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The pair of rules that turn a service result into a [`Disposition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AckPolicy {
    /// Rule for `Ok`.
    pub on_success: OnSuccess,
    /// Rule for `Err`.
    pub on_failure: OnFailure,
}

impl AckPolicy {
    /// Decide what happens to a message whose service call returned `result`.
    pub fn decide<T>(&self, result: &Result<T, BoxError>) -> Disposition {
        match result {
            Ok(_) => match self.on_success {
                OnSuccess::Ack => Disposition::Ack,
            },
            Err(_) => self.on_failure(),
        }
    }

    /// The disposition of a failed (or abandoned) call.
    pub(crate) fn on_failure(&self) -> Disposition {
        match self.on_failure {
            OnFailure::Noop => Disposition::Leave,
            OnFailure::Ack => Disposition::Ack,
            OnFailure::Redeliver => Disposition::Redeliver,
            OnFailure::Reject => Disposition::Reject,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_maps_to_its_disposition() {
        let ok: Result<(), BoxError> = Ok(());
        let err: Result<(), BoxError> = Err("boom".into());
        let policy = |on_failure| AckPolicy {
            on_success: OnSuccess::Ack,
            on_failure,
        };
        assert_eq!(policy(OnFailure::Noop).decide(&ok), Disposition::Ack);
        assert_eq!(policy(OnFailure::Noop).decide(&err), Disposition::Leave);
        assert_eq!(policy(OnFailure::Ack).decide(&err), Disposition::Ack);
        assert_eq!(
            policy(OnFailure::Redeliver).decide(&err),
            Disposition::Redeliver
        );
        assert_eq!(policy(OnFailure::Reject).decide(&err), Disposition::Reject);
        assert_eq!(AckPolicy::default().on_failure, OnFailure::Redeliver);
    }
}
