//! The one place the layer decides what the consumer will do with a message.

use std::sync::Arc;

use tower_mqtt::{AckPolicy, BoxError, Disposition, Message, Origin};

/// What the consumer will do with one message once its call returns: fixed in
/// [`Otel::call`](super::Otel) from the message, asked when the call finishes.
///
/// By default the message's [`Origin`] answers, with the consumer's own rule (its
/// `on_failure`, or its classifier) and any marker error; a policy set with
/// [`OtelLayer::ack_policy`](super::OtelLayer::ack_policy) replaces that rule (markers
/// still win, as in the consumer).
#[derive(Debug, Clone)]
pub(super) enum Decider {
    /// Ask the consumer's rule, carried by the message.
    Origin(Arc<Origin>),
    /// A rule given to the layer.
    Policy(AckPolicy),
}

impl Decider {
    /// The decider for `message`, handled by a layer configured with `policy`.
    pub(super) fn new(policy: Option<AckPolicy>, message: &Message) -> Self {
        match policy {
            Some(policy) => Self::Policy(policy),
            None => Self::Origin(message.origin_shared()),
        }
    }

    /// The disposition the consumer takes for `result`.
    pub(super) fn disposition<T>(&self, result: &Result<T, BoxError>) -> Disposition {
        match self {
            Self::Origin(origin) => origin.disposition(result),
            Self::Policy(policy) => policy.decide(result),
        }
    }
}
