use std::error::Error as StdError;
use std::fmt;

use tower_mqtt::Message;

/// A message came back more often than [`MaxDeliveries`](super::MaxDeliveries) allows:
/// the error returned for it, inside a [`Permanent`](tower_mqtt::Permanent) marker,
/// instead of calling the inner service.
///
/// ```
/// use tower_mqtt::testing::{test_message, TestMessage};
/// use tower_mqtt_layers::poison::TooManyDeliveries;
///
/// let message = test_message("orders/eu", "{}").with_delivery_count(4);
/// let error = TooManyDeliveries::new(&message, 3);
/// assert_eq!((error.deliveries(), error.limit()), (4, 3));
/// assert_eq!(
///     error.to_string(),
///     "the message on topic \"orders/eu\" is on its delivery 4, above max_deliveries(3): not processed again"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooManyDeliveries {
    topic: String,
    deliveries: u32,
    limit: u32,
}

impl TooManyDeliveries {
    /// `message` is above `limit` deliveries ([`Message::delivery_count`]).
    #[must_use]
    pub fn new(message: &Message, limit: u32) -> Self {
        Self {
            topic: message.topic().to_owned(),
            deliveries: message.delivery_count(),
            limit,
        }
    }

    /// The topic of the message.
    #[must_use]
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Its [`Message::delivery_count`].
    #[must_use]
    pub fn deliveries(&self) -> u32 {
        self.deliveries
    }

    /// The most deliveries the service may see.
    #[must_use]
    pub fn limit(&self) -> u32 {
        self.limit
    }
}

impl fmt::Display for TooManyDeliveries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the message on topic {:?} is on its delivery {}, above max_deliveries({}): not processed again",
            self.topic, self.deliveries, self.limit
        )
    }
}

impl StdError for TooManyDeliveries {}

/// `max_deliveries(0)`: the limit counts the deliveries the service may see, so it must
/// be at least 1.
///
/// ```
/// use tower_mqtt_layers::poison::{InvalidMaxDeliveries, MaxDeliveriesLayer};
///
/// let error = MaxDeliveriesLayer::new(0).unwrap_err();
/// assert_eq!(error, InvalidMaxDeliveries::Zero);
/// assert!(error.to_string().starts_with("max_deliveries(0)"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidMaxDeliveries {
    /// The limit was 0.
    Zero,
}

impl fmt::Display for InvalidMaxDeliveries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Zero => f.write_str(
                "max_deliveries(0): the limit is how many deliveries of a message the service \
                 may see, so it must be at least 1 (1 stops a message after its first failed \
                 delivery)",
            ),
        }
    }
}

impl StdError for InvalidMaxDeliveries {}
