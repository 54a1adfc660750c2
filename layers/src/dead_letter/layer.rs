use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;
use tower_mqtt::{Message, Publisher};

use super::{DeadLetter, Shared, When};

/// Applies [`DeadLetter`] to a service: see the [module docs](super).
#[derive(Clone)]
pub struct DeadLetterLayer {
    shared: Arc<Shared>,
}

impl DeadLetterLayer {
    /// Dead-letter through `publisher` to the topic `topic(message)` returns.
    pub fn new<T>(publisher: Publisher, topic: T) -> Self
    where
        T: Fn(&Message) -> String + Send + Sync + 'static,
    {
        Self {
            shared: Arc::new(Shared {
                publisher,
                topic: Arc::new(topic),
                when: When::WouldBeDropped,
            }),
        }
    }

    /// Dead-letter every failure, also those the consumer would redeliver (the default
    /// is only those it would acknowledge, which would otherwise be gone).
    #[must_use]
    pub fn on_any_failure(self) -> Self {
        let mut shared = Shared::clone(&self.shared);
        shared.when = When::AnyFailure;
        Self {
            shared: Arc::new(shared),
        }
    }
}

impl fmt::Debug for DeadLetterLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetterLayer")
            .field("publisher", &self.shared.publisher)
            .field("when", &self.shared.when)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for DeadLetterLayer {
    type Service = DeadLetter<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DeadLetter {
            inner,
            shared: self.shared.clone(),
        }
    }
}
