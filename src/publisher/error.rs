//! [`PublishError`]: why a publish was not confirmed.

use std::time::Duration;

/// Why the [`Publisher`](super::Publisher) could not confirm a publish.
///
/// Only [`Refused`](Self::Refused) and [`InvalidTopic`](Self::InvalidTopic) say for
/// certain that the broker does not have the message; after the others it may or may
/// not have it, so whoever retries must tolerate a duplicate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The broker refused the message: an MQTT 5 PUBACK or PUBREC with a reason code of
    /// 0x80 or more (for example 0x87 NotAuthorized from an ACL).
    #[error("publish to {topic:?} refused by the broker: reason code {code:#04x} {name}")]
    Refused {
        /// The topic the message was for.
        topic: String,
        /// The MQTT 5 reason code.
        code: u8,
        /// The reason code's name in the MQTT 5 specification.
        name: &'static str,
    },
    /// The topic cannot be published to; nothing was sent.
    #[error("publish to {topic:?}: {reason}")]
    InvalidTopic {
        /// The topic as given.
        topic: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No confirmation within the publisher's timeout
    /// ([`PublisherBuilder::timeout`](super::PublisherBuilder::timeout)). The publisher
    /// keeps the message and still sends it, so it may arrive later.
    #[error("publish to {topic:?}: not confirmed within {after:?}; it may still arrive (the publisher keeps trying)")]
    Timeout {
        /// The topic the message was for.
        topic: String,
        /// The timeout that passed.
        after: Duration,
    },
    /// The connection closed before the broker confirmed the message and no session
    /// carries it on (`clean_start(true)`, or QoS 0): the broker may or may not have it.
    #[error("publish to {topic:?}: the connection closed before the broker confirmed it, and clean_start(true) keeps no session to resend it in; it may or may not have arrived")]
    ConnectionLost {
        /// The topic the message was for.
        topic: String,
    },
    /// The broker could not be given the message: it could not be encoded (for
    /// example larger than MQTT allows).
    #[error("publish to {topic:?} could not be encoded: {reason}")]
    Encode {
        /// The topic the message was for.
        topic: String,
        /// The encoder's message.
        reason: String,
    },
    /// The publisher's connection task has ended (its runtime shut down).
    #[error("the publisher has stopped (its connection task ended); no publish can be sent")]
    Closed,
}
