use std::error::Error as StdError;
use std::fmt;

use tower_mqtt::{BoxError, PublishError};

/// The dead letter could not be published, so the original message is not
/// acknowledged: the layer returns this error wrapped in a
/// [`Redeliver`](tower_mqtt::Redeliver) marker, and the broker sends the original again
/// on the next session.
#[derive(Debug)]
pub struct DeadLetterFailed {
    topic: String,
    publish: PublishError,
    original: BoxError,
}

impl DeadLetterFailed {
    pub(super) fn new(topic: String, publish: PublishError, original: BoxError) -> Self {
        Self {
            topic,
            publish,
            original,
        }
    }

    /// The dead-letter topic the message was for.
    #[must_use]
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Why the dead letter was not confirmed.
    #[must_use]
    pub fn publish_error(&self) -> &PublishError {
        &self.publish
    }

    /// The service's error, which sent the message to the dead-letter topic.
    #[must_use]
    pub fn original(&self) -> &BoxError {
        &self.original
    }
}

impl fmt::Display for DeadLetterFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "dead letter to {:?} not confirmed ({}); the original stays unacknowledged. Original error: {}",
            self.topic, self.publish, self.original
        )
    }
}

impl StdError for DeadLetterFailed {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.publish)
    }
}
