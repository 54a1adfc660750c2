use tower_mqtt::Message;

use super::filter::Captures;

/// What the matching route captured from the topic, in the message's
/// [`extensions`](Message::extensions) for the route's service (like axum's path
/// parameters).
///
/// Every single-level wildcard captures its level: `+` by position
/// ([`index`](Self::index)), `{name}` by position and by name ([`get`](Self::get)).
/// A trailing `#` captures the rest of the topic ([`rest`](Self::rest)).
///
/// ```
/// use tower::ServiceExt;
/// use tower_mqtt::testing::test_message;
/// use tower_mqtt::{BoxError, Message};
/// use tower_mqtt_layers::router::{Params, Router};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let telemetry = tower::service_fn(|message: Message| async move {
///     let params = Params::of(&message).expect("set by the router");
///     assert_eq!(params.get("site"), Some("berlin"));
///     assert_eq!(params.index(1), Some("pump-7")); // the `+`
///     assert_eq!(params.rest(), Some("temp/inlet"));
///     assert_eq!(params.route(), "sites/{site}/+/#");
///     Ok::<_, BoxError>(())
/// });
/// let router = Router::new().route("sites/{site}/+/#", telemetry).unwrap();
/// router.oneshot(test_message("sites/berlin/pump-7/temp/inlet", "21.5")).await.unwrap();
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    route: String,
    captures: Captures,
}

impl Params {
    pub(super) fn new(route: &str, captures: Captures) -> Self {
        Self {
            route: route.to_owned(),
            captures,
        }
    }

    /// The parameters the router put on `message`, if a route (not the fallback)
    /// took it.
    #[must_use]
    pub fn of(message: &Message) -> Option<&Self> {
        message.extensions().get::<Self>()
    }

    /// The level captured by `{name}`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&str> {
        self.captures
            .levels
            .iter()
            .find(|(n, _)| n.as_deref() == Some(name))
            .map(|(_, v)| v.as_str())
    }

    /// The level captured by the `i`-th single-level wildcard (`+` or `{name}`),
    /// counting from 0, left to right.
    #[must_use]
    pub fn index(&self, i: usize) -> Option<&str> {
        self.captures.levels.get(i).map(|(_, v)| v.as_str())
    }

    /// How many single-level wildcards captured a level.
    #[must_use]
    pub fn len(&self) -> usize {
        self.captures.levels.len()
    }

    /// Whether the route has no single-level wildcard.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.captures.levels.is_empty()
    }

    /// What a trailing `#` matched, without the slash before it (`""` when it matched
    /// no level: `a/#` on the topic `a`); `None` when the route has no `#`.
    #[must_use]
    pub fn rest(&self) -> Option<&str> {
        self.captures.rest.as_deref()
    }

    /// The route's filter as it was given to [`Router::route`](super::Router::route)
    /// (a low-cardinality name for metrics, like axum's `MatchedPath`).
    #[must_use]
    pub fn route(&self) -> &str {
        &self.route
    }
}
