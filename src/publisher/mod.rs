//! [`Publisher`]: publish messages and learn when the broker has them.
//!
//! A `Publisher` is a cheap, cloneable handle and a tower
//! `Service<`[`Publish`]`>`. Its future resolves `Ok` only once the broker has the
//! message: on PUBACK for QoS 1, on PUBCOMP for QoS 2, once written to the socket for
//! QoS 0. That is what "dead-letter first, then acknowledge the original" needs, and what
//! rumqttc's `publish().await` (which returns when the request is queued) cannot give.
//!
//! The handles share one connection task with its own connection, client id
//! `<client_id>_pub`, the same transport, TLS and credentials as the consumer:
//!
//! * At most `max_inflight` publishes are unconfirmed at once (fewer if the broker's
//!   MQTT 5 Receive Maximum is lower); beyond that `poll_ready` waits.
//! * A lost connection is reopened with exponential backoff. With a session
//!   (`clean_start(false)`, the default) every unconfirmed publish is sent again with
//!   DUP set once the session is resumed (MQTT-4.4.0-1), so a publish the broker never
//!   confirmed is never silently dropped. With `clean_start(true)` there is no session
//!   to resume, and the unconfirmed publishes fail with
//!   [`PublishError::ConnectionLost`] instead.
//! * A publish the broker refuses (an MQTT 5 reason code of 0x80 or more, e.g. 0x87
//!   NotAuthorized from an ACL) fails with [`PublishError::Refused`]; MQTT 3.1.1 has no
//!   way to refuse one.
//! * Except 0x97 Quota Exceeded from a broker that announced a Receive Maximum: the
//!   publisher never has more open than that, so the session holds QoS 2 exchanges it
//!   does not know (an earlier process with this client id stopped between PUBREC and
//!   PUBREL, or a broker restored from an older save). It releases them with a PUBREL
//!   for every packet id it is not using (their messages are delivered: perhaps twice,
//!   never lost), on the next connection if the broker closes this one (mosquitto
//!   does), and publishes the refused messages again. A second refusal on the same
//!   connection is the caller's.
//! * MQTT 3.1.1: mosquitto answers a QoS 2 publish beyond its window with a plain
//!   PUBREC and closes the connection. The publisher then publishes again what was
//!   acknowledged last before the close (with DUP; the broker recognises a copy it
//!   holds) rather than confirm it with PUBREL, and halves its window.
//! * Each call is bounded by a timeout (default 30 s, [`PublisherBuilder::timeout`]).
//! * The task ends once every handle is dropped and every publish is confirmed (or its
//!   caller stopped waiting), with a DISCONNECT.
//!
//! ```no_run
//! use tower_mqtt::{Config, Publish, Publisher, QoS};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let publisher = Publisher::builder(Config::new("127.0.0.1").client_id("ingest")).build()?;
//! publisher
//!     .publish(Publish::new("readings/dead", "not json").qos(QoS::AtLeastOnce))
//!     .await?; // the broker has it
//! # Ok(()) }
//! ```

mod conn;
mod error;
mod request;

pub use error::PublishError;
pub use request::Publish;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_util::sync::PollSemaphore;
use tower_service::Service;

use crate::config::{self, Config, ProtoVer};
use crate::driver::ReconnectBackoff;
use crate::error::ConfigError;
use conn::{Options, Request, Task};

/// Default bound on unconfirmed publishes.
const DEFAULT_MAX_INFLIGHT: usize = 100;
/// Default time a publish may take to be confirmed.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds a [`Publisher`]; see [`Publisher::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct PublisherBuilder {
    config: Config,
    client_id: Option<String>,
    max_inflight: usize,
    timeout: Option<Duration>,
    backoff: ReconnectBackoff,
}

impl PublisherBuilder {
    /// At most this many publishes unconfirmed at once (default 100); `poll_ready`
    /// waits beyond it. The broker's MQTT 5 Receive Maximum lowers it on the wire.
    pub fn max_inflight(mut self, publishes: usize) -> Self {
        self.max_inflight = publishes;
        self
    }

    /// How long one call may take, from `call` to the broker's confirmation (default
    /// 30 s). A publish that times out is still sent: it may arrive later.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Wait as long as it takes for every confirmation (no timeout).
    pub fn no_timeout(mut self) -> Self {
        self.timeout = None;
        self
    }

    /// Reconnect backoff: exponential from `min` to `max`, with jitter (default 100 ms to
    /// 30 s, as the consumer's).
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff = ReconnectBackoff::Bounds { min, max };
        self
    }

    /// The consumer's reconnect backoff, exactly.
    pub(crate) fn backoff(mut self, backoff: ReconnectBackoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The full client id of the publisher's connection (default `<client_id>_pub`).
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    /// Check the options and start the publisher's connection task (on the current
    /// tokio runtime; it connects in the background).
    ///
    /// The errors are the consumer's for the connection options, plus
    /// [`ConfigError::InvalidMaxInflight`], [`ConfigError::ZeroDuration`] for a zero
    /// timeout and [`ConfigError::NoRuntime`] outside a tokio runtime.
    pub fn build(self) -> Result<Publisher, ConfigError> {
        // An explicit Receive Maximum is about what the consumer receives; the
        // publisher receives nothing, so it is not checked against max_inflight here.
        let explicit = self.config.properties.receive_maximum;
        let base_id = config::validate(
            &self.config,
            explicit.map_or(DEFAULT_MAX_INFLIGHT, usize::from),
            crate::transport::validate,
        )?;
        if self.max_inflight == 0 || self.max_inflight > 65_535 {
            return Err(ConfigError::InvalidMaxInflight(self.max_inflight));
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError::ZeroDuration("publisher timeout"));
        }
        if let ReconnectBackoff::Bounds { min, max } = self.backoff {
            if min.is_zero() {
                return Err(ConfigError::ZeroDuration("reconnect_backoff"));
            }
            if min > max {
                return Err(ConfigError::InvalidBackoff { min, max });
            }
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            ConfigError::NoRuntime("Publisher::build (call it from within a tokio runtime)")
        })?;
        let client_id = self.client_id.unwrap_or_else(|| format!("{base_id}_pub"));
        let proto_ver = self.config.proto_ver;
        let (tx, rx) = mpsc::unbounded_channel();
        let task = Task::new(
            Options {
                config: self.config,
                client_id: client_id.clone(),
                backoff: self.backoff,
                max_inflight: self.max_inflight,
            },
            rx,
        );
        runtime.spawn(task.run());
        let permits = Arc::new(Semaphore::new(self.max_inflight));
        Ok(Publisher {
            permits: PollSemaphore::new(permits.clone()),
            shared: Arc::new(Shared {
                tx,
                permits,
                timeout: self.timeout,
                client_id,
                proto_ver,
            }),
            permit: None,
        })
    }
}

/// What every handle of one publisher shares.
#[derive(Debug)]
struct Shared {
    tx: mpsc::UnboundedSender<Request>,
    permits: Arc<Semaphore>,
    timeout: Option<Duration>,
    client_id: String,
    proto_ver: ProtoVer,
}

/// Publishes messages on its own connection; each call resolves once the broker has the
/// message. See the [module documentation](self).
///
/// Cloning is cheap: clones share the connection and its `max_inflight` bound. Each
/// clone reserves its own slot in `poll_ready`, as tower's `ConcurrencyLimit` does.
pub struct Publisher {
    shared: Arc<Shared>,
    permits: PollSemaphore,
    /// Reserved by `poll_ready`, used by the next `call`.
    permit: Option<OwnedSemaphorePermit>,
}

impl Publisher {
    /// A publisher for `config`'s broker; see [`PublisherBuilder`].
    pub fn builder(config: Config) -> PublisherBuilder {
        PublisherBuilder {
            config,
            client_id: None,
            max_inflight: DEFAULT_MAX_INFLIGHT,
            timeout: Some(DEFAULT_TIMEOUT),
            backoff: ReconnectBackoff::Bounds {
                min: Duration::from_millis(100),
                max: Duration::from_secs(30),
            },
        }
    }

    /// Publish one message and wait until the broker has it (without `poll_ready`
    /// first: this waits for a free slot itself).
    pub async fn publish(&self, publish: Publish) -> Result<(), PublishError> {
        self.clone().call(publish).await
    }

    /// The client id of the publisher's connection.
    #[must_use]
    pub fn client_id(&self) -> &str {
        &self.shared.client_id
    }

    /// The protocol version it speaks (MQTT 3.1.1 publishes carry no properties).
    #[must_use]
    pub fn proto_ver(&self) -> ProtoVer {
        self.shared.proto_ver
    }
}

impl Clone for Publisher {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            permits: self.permits.clone(),
            // A reservation belongs to the handle that made it.
            permit: None,
        }
    }
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("client_id", &self.shared.client_id)
            .field("timeout", &self.shared.timeout)
            .field("reserved", &self.permit.is_some())
            .finish_non_exhaustive()
    }
}

impl Service<Publish> for Publisher {
    type Response = ();
    type Error = PublishError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), PublishError>> {
        if self.permit.is_none() {
            match ready!(self.permits.poll_acquire(cx)) {
                Some(permit) => self.permit = Some(permit),
                None => return Poll::Ready(Err(PublishError::Closed)),
            }
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, publish: Publish) -> ResponseFuture {
        let timeout = self
            .shared
            .timeout
            .map(|t| (Box::pin(tokio::time::sleep(t)), t));
        let state = if let Some(reason) = crate::topic::name_problem(&publish.topic) {
            State::Done(Some(PublishError::InvalidTopic {
                topic: publish.topic,
                reason,
            }))
        } else {
            match self.permit.take() {
                Some(permit) => self.submit(publish, permit),
                // Called without poll_ready: wait for a slot inside the future.
                None => State::Reserving {
                    permits: PollSemaphore::new(self.shared.permits.clone()),
                    publish: Some(publish),
                    shared: self.shared.clone(),
                },
            }
        };
        ResponseFuture { state, timeout }
    }
}

impl Publisher {
    fn submit(&self, publish: Publish, permit: OwnedSemaphorePermit) -> State {
        submit(&self.shared, publish, permit)
    }
}

fn submit(shared: &Shared, publish: Publish, permit: OwnedSemaphorePermit) -> State {
    let topic = publish.topic.clone();
    let (reply, rx) = oneshot::channel();
    match shared.tx.send(Request {
        publish,
        reply,
        permit,
    }) {
        Ok(()) => State::Waiting { rx, topic },
        Err(_) => State::Done(Some(PublishError::Closed)),
    }
}

/// The future of one publish: resolves once the broker has the message, or with a
/// [`PublishError`].
pub struct ResponseFuture {
    state: State,
    timeout: Option<(Pin<Box<Sleep>>, Duration)>,
}

enum State {
    /// Called without `poll_ready`: waiting for a slot.
    Reserving {
        permits: PollSemaphore,
        publish: Option<Publish>,
        shared: Arc<Shared>,
    },
    /// With the connection task, until the broker confirms.
    Waiting {
        rx: oneshot::Receiver<Result<(), PublishError>>,
        topic: String,
    },
    /// Settled without the task (an invalid topic, a stopped publisher).
    Done(Option<PublishError>),
}

impl std::fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Reserving { .. } => "reserving",
            State::Waiting { .. } => "waiting",
            State::Done(_) => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("timeout", &self.timeout.as_ref().map(|(_, t)| t))
            .finish()
    }
}

impl Future for ResponseFuture {
    type Output = Result<(), PublishError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Done(error) => return Poll::Ready(error.take().map_or(Ok(()), Err)),
                State::Waiting { rx, .. } => match Pin::new(rx).poll(cx) {
                    Poll::Ready(Ok(result)) => return Poll::Ready(result),
                    Poll::Ready(Err(_)) => return Poll::Ready(Err(PublishError::Closed)),
                    Poll::Pending => break,
                },
                State::Reserving {
                    permits,
                    publish,
                    shared,
                } => match permits.poll_acquire(cx) {
                    Poll::Ready(Some(permit)) => match publish.take() {
                        Some(publish) => this.state = submit(shared, publish, permit),
                        None => this.state = State::Done(Some(PublishError::Closed)),
                    },
                    Poll::Ready(None) => return Poll::Ready(Err(PublishError::Closed)),
                    Poll::Pending => break,
                },
            }
        }
        if let Some((sleep, after)) = &mut this.timeout {
            if sleep.as_mut().poll(cx).is_ready() {
                let topic = match &this.state {
                    State::Waiting { topic, .. } => topic.clone(),
                    State::Reserving { publish, .. } => publish
                        .as_ref()
                        .map_or_else(String::new, |p| p.topic.clone()),
                    State::Done(_) => String::new(),
                };
                return Poll::Ready(Err(PublishError::Timeout {
                    topic,
                    after: *after,
                }));
            }
        }
        Poll::Pending
    }
}
