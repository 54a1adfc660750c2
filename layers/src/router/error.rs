use std::error::Error as StdError;
use std::fmt;

/// A route could not be added to a [`Router`](super::Router): its filter is not valid,
/// or another route already has the same filter. The text names the filter and the fix.
///
/// ```
/// use tower_mqtt::{BoxError, Message};
/// use tower_mqtt_layers::router::Router;
///
/// let handler = tower::service_fn(|_m: Message| async { Ok::<_, BoxError>(()) });
/// let error = Router::new().route("devices/+x/telemetry", handler).unwrap_err();
/// assert_eq!(error.filter(), "devices/+x/telemetry");
/// assert!(error.to_string().contains("'+' must be a whole level"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteError {
    filter: String,
    reason: &'static str,
}

impl RouteError {
    pub(super) fn new(filter: &str, reason: &'static str) -> Self {
        Self {
            filter: filter.to_owned(),
            reason,
        }
    }

    /// The filter that was given.
    #[must_use]
    pub fn filter(&self) -> &str {
        &self.filter
    }
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid route {:?}: {}", self.filter, self.reason)
    }
}

impl StdError for RouteError {}

/// No route matches the message's topic: the default fallback's error, wrapped in
/// [`Permanent`](tower_mqtt::Permanent) so the consumer acknowledges the message and
/// does not redeliver it (a redelivery would find no route either).
///
/// ```
/// use tower::ServiceExt;
/// use tower_mqtt::testing::test_message;
/// use tower_mqtt::{BoxError, Message, Permanent};
/// use tower_mqtt_layers::router::{NoRoute, Router};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let handler = tower::service_fn(|_m: Message| async { Ok::<_, BoxError>(()) });
/// let router = Router::new().route("devices/#", handler).unwrap();
/// let error = router.oneshot(test_message("alerts/7", "x")).await.unwrap_err();
/// assert!(error.is::<Permanent>());
/// assert_eq!(error.to_string(), "permanent failure: no route for topic \"alerts/7\"");
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoRoute {
    topic: String,
}

impl NoRoute {
    pub(super) fn new(topic: &str) -> Self {
        Self {
            topic: topic.to_owned(),
        }
    }

    /// The topic no route matched.
    #[must_use]
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

impl fmt::Display for NoRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no route for topic {:?}", self.topic)
    }
}

impl StdError for NoRoute {}
