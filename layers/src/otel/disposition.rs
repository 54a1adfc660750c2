//! The one place the layer decides what the consumer will do with a message.

use tower_mqtt::{AckPolicy, BoxError, Disposition, Message};

/// What the consumer will do with one message once its call returns: fixed in
/// [`Otel::call`](super::Otel) from the message, asked when the call finishes.
///
/// Today the answer comes from the layer's [`AckPolicy`], which must match the
/// consumer's. Everything that depends on that lives here, so asking the message's
/// origin instead changes only this type.
#[derive(Debug, Clone, Copy)]
pub(super) struct Decider {
    policy: AckPolicy,
}

impl Decider {
    /// The decider for `message`, handled by a layer configured with `policy`.
    pub(super) fn new(policy: AckPolicy, _message: &Message) -> Self {
        Decider { policy }
    }

    /// The disposition the consumer takes for `result`.
    pub(super) fn disposition<T>(&self, result: &Result<T, BoxError>) -> Disposition {
        self.policy.decide(result)
    }
}
