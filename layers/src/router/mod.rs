//! Route messages to services by topic filter, like axum's `Router` for paths
//! (feature `router`).
//!
//! A [`Router`] is a `Service<Message>` built from routes — a topic filter with `+` and
//! `#`, mapped to a service — and a fallback. Each message goes to the **most specific**
//! route whose filter matches its topic; what the wildcards matched is in the message's
//! extensions as [`Params`].
//!
//! ```
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//! use tower_mqtt::{BoxError, Message};
//! use tower_mqtt_layers::router::{Params, Router};
//!
//! let telemetry = tower::service_fn(|message: Message| async move {
//!     let device = Params::of(&message).and_then(|p| p.get("device")).unwrap_or("?");
//!     let _ = (device, message.payload()); // store it
//!     Ok::<_, BoxError>(())
//! });
//! // A route can be a whole stack: this one has its own timeout.
//! let commands = ServiceBuilder::new()
//!     .timeout(Duration::from_secs(2))
//!     .service_fn(|_message: Message| async { Ok::<_, BoxError>(()) });
//! let everything_else = tower::service_fn(|_message: Message| async { Ok::<_, BoxError>(()) });
//!
//! let router = Router::new()
//!     .route("devices/{device}/telemetry", telemetry)?
//!     .route("devices/+/commands/#", commands)?
//!     .route("devices/#", everything_else)?;
//! // Subscribe the consumer to what the routes need.
//! assert_eq!(
//!     router.filters(),
//!     ["devices/+/telemetry", "devices/+/commands/#", "devices/#"]
//! );
//! # Ok::<_, tower_mqtt_layers::router::RouteError>(())
//! ```
//!
//! # Filters and captures
//!
//! A route filter is an MQTT topic filter whose single-level wildcards may carry a
//! name: `{name}` is a `+` whose level can be read by name. Every `+` and `{name}`
//! captures its level by position ([`Params::index`], left to right from 0), named ones
//! also by name ([`Params::get`]); a trailing `#` captures the rest of the topic
//! ([`Params::rest`]). Matching follows MQTT: `#` also matches no level (`a/#` matches
//! `a`), and a wildcard at the first level does not match a topic starting with `$`.
//! An invalid filter, or a filter that matches exactly what an earlier route's matches
//! (`a/{x}` and `a/+`), is a [`RouteError`].
//!
//! # Which route wins
//!
//! When several filters match a topic, the most specific one takes the message:
//! compare the filters level by level from the left; at the first level where they
//! differ, **an exact level beats `+` (or `{name}`), which beats `#`**. So for
//! `devices/7/telemetry`, `devices/7/#` beats `devices/+/telemetry` (level 2: `7`
//! beats `+`), which beats `devices/#` (level 2: `+` beats `#`), and `devices/+` loses
//! to nothing here because it does not match. Two different filters that match the
//! same topic always differ at some level, so the winner never depends on the order
//! the routes were added in. (This is the rule of axum's and matchit's routers —
//! static segments before parameters before catch-alls — applied to MQTT levels.)
//!
//! # The fallback
//!
//! A message no route matches goes to the fallback: by default an error
//! [`NoRoute`] wrapped in [`Permanent`], so the consumer acknowledges it and never
//! redelivers it (it would find no route the next time either). Set your own with
//! [`Router::fallback`].
//!
//! # Services and readiness
//!
//! A route takes any `Service<Message>` that is `Clone + Send + 'static` with a `Send`
//! future and an error that converts into `BoxError` (its response is dropped); it is
//! stored as a boxed clone service, so routes of different types fit in one router.
//! The router is always ready: each call clones the route's service and waits for its
//! `poll_ready` inside the response future (as axum does), so a `concurrency_limit` in a
//! route limits that route only, while the consumer's `max_inflight` still bounds the
//! messages in progress.
//!
//! [`Permanent`]: tower_mqtt::Permanent

mod error;
mod filter;
mod future;
mod params;

use std::fmt;
use std::task::{Context, Poll};

use tower::util::BoxCloneService;
use tower::ServiceExt;
use tower_mqtt::{BoxError, Message, Permanent};
use tower_service::Service;

pub use self::error::{NoRoute, RouteError};
use self::filter::Filter;
pub use self::future::ResponseFuture;
pub use self::params::Params;

type Route = BoxCloneService<Message, (), BoxError>;

#[derive(Clone)]
struct Entry {
    /// As given to `route`.
    given: String,
    filter: Filter,
    ranks: Vec<u8>,
    /// How many routes were added before this one.
    added: usize,
    service: Route,
}

/// Sends each message to the most specific matching route; see the
/// [module docs](self).
#[derive(Clone)]
pub struct Router {
    /// Most specific first. (Not behind an `Arc`: boxed clone services are `Send` but
    /// not `Sync`; the router is cloned once per connection.)
    routes: Vec<Entry>,
    fallback: Route,
}

impl Default for Router {
    fn default() -> Self {
        Self::new()
    }
}

impl Router {
    /// A router with no routes and the default fallback (a [`Permanent`] [`NoRoute`]
    /// error).
    #[must_use]
    pub fn new() -> Self {
        let fallback = tower::service_fn(|message: Message| async move {
            Err::<(), BoxError>(Permanent::new(NoRoute::new(message.topic())).into())
        });
        Self {
            routes: Vec::new(),
            fallback: BoxCloneService::new(fallback),
        }
    }

    /// Send messages whose topic matches `filter` to `service` (unless a more specific
    /// route matches too). An invalid filter, or one that matches exactly what an
    /// earlier route's matches, is a [`RouteError`].
    pub fn route<S>(mut self, filter: &str, service: S) -> Result<Self, RouteError>
    where
        S: Service<Message> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        let parsed = Filter::parse(filter)?;
        let mqtt = parsed.mqtt();
        if self.routes.iter().any(|e| e.filter.mqtt() == mqtt) {
            return Err(RouteError::new(
                filter,
                "another route has the same filter (capture names aside); give each filter one route, and layers inside it",
            ));
        }
        let ranks = parsed.ranks();
        let routes = &mut self.routes;
        let added = routes.len();
        let at = routes.partition_point(|e| e.ranks <= ranks);
        routes.insert(
            at,
            Entry {
                given: filter.to_owned(),
                filter: parsed,
                ranks,
                added,
                service: boxed(service),
            },
        );
        Ok(self)
    }

    /// Send messages no route matches to `service` instead of failing them with
    /// [`NoRoute`].
    #[must_use]
    pub fn fallback<S>(mut self, service: S) -> Self
    where
        S: Service<Message> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        self.fallback = boxed(service);
        self
    }

    /// The routes' filters as MQTT topic filters (names dropped: `{device}` is `+`), in
    /// the order the routes were added: what the consumer should subscribe to.
    #[must_use]
    pub fn filters(&self) -> Vec<String> {
        let mut by_id: Vec<&Entry> = self.routes.iter().collect();
        by_id.sort_by_key(|e| e.added);
        by_id.iter().map(|e| e.filter.mqtt()).collect()
    }
}

fn boxed<S>(service: S) -> Route
where
    S: Service<Message> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    BoxCloneService::new(service.map_response(drop).map_err(Into::into))
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let routes: Vec<&str> = self.routes.iter().map(|e| e.given.as_str()).collect();
        f.debug_struct("Router")
            .field("routes", &routes)
            .finish_non_exhaustive()
    }
}

impl Service<Message> for Router {
    type Response = ();
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut message: Message) -> Self::Future {
        for entry in self.routes.iter() {
            if let Some(captures) = entry.filter.matches(message.topic()) {
                message
                    .extensions_mut()
                    .insert(Params::new(&entry.given, captures));
                return ResponseFuture::new(entry.service.clone().oneshot(message));
            }
        }
        ResponseFuture::new(self.fallback.clone().oneshot(message))
    }
}

#[cfg(test)]
mod tests;
