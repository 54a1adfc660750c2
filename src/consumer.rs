//! [`Consumer`]: subscriptions plus acknowledgement rules, run against a tower `Service`.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::retry::backoff::ExponentialBackoffMaker;
use tower_service::Service;

use crate::config::{self, Config, QoS, ReadPacing};
use crate::disposition::{AckPolicy, Classify, Decider, OnFailure, OnSuccess};
use crate::driver::{Driver, ReconnectBackoff, Settings};
use crate::error::{BoxError, ConfigError, RunError};
use crate::event::{Event, Hook};
use crate::message::{Message, Origin};
#[cfg(feature = "serde")]
use crate::options::ConsumerOptions;
use crate::publisher::{Publisher, PublisherBuilder};
use crate::topic;

/// Builds a [`Consumer`]; see [`Consumer::builder`].
#[derive(Clone)]
#[must_use]
pub struct ConsumerBuilder {
    config: Config,
    topics: Vec<(String, QoS)>,
    shared_group: Option<String>,
    concurrency: usize,
    max_inflight: usize,
    policy: AckPolicy,
    /// Whether `on_success` / `on_failure` were called (they conflict with `classify`).
    policy_set: bool,
    classifier: Option<Arc<dyn Classify>>,
    drain_timeout: Duration,
    redeliver_after: Duration,
    backoff: ReconnectBackoff,
    max_reconnect_attempts: Option<u32>,
    retired_up_to: usize,
    /// Client ids of other consumers' sessions to drain (`drain_sessions`).
    retired_sessions: Vec<String>,
    hook: Option<Hook>,
    watch_drops: bool,
    read_pacing: ReadPacing,
}

impl std::fmt::Debug for ConsumerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerBuilder")
            .field("config", &self.config)
            .field("topics", &self.topics)
            .field("shared_group", &self.shared_group)
            .field("concurrency", &self.concurrency)
            .field("max_inflight", &self.max_inflight)
            .field("policy", &self.policy)
            .field("classify", &self.classifier.is_some())
            .field("on_event", &self.hook.is_some())
            .field("watch_broker_drops", &self.watch_drops)
            .field("read_pacing", &self.read_pacing)
            .finish_non_exhaustive()
    }
}

impl ConsumerBuilder {
    /// Call `hook` with every [`Event`] (connections, subscriptions, messages), in
    /// addition to the `tracing` events. Repeatable: every hook is called, in the order
    /// they were added. Hooks run on the connection's task, so keep them quick: count,
    /// or send to a channel.
    pub fn on_event<F>(mut self, hook: F) -> Self
    where
        F: Fn(&Event<'_>) + Send + Sync + 'static,
    {
        self.hook = Some(match self.hook.take() {
            None => std::sync::Arc::new(hook),
            Some(previous) => std::sync::Arc::new(move |event: &Event<'_>| {
                previous(event);
                hook(event);
            }),
        });
        self
    }

    /// Watch mosquitto's broker-wide count of dropped messages and report each growth as
    /// [`Event::BrokerDropped`] plus a `tracing` warning (target `tower_mqtt::broker`).
    /// Off by default.
    ///
    /// mosquitto discards what exceeds `max_queued_messages` (default 1000) for an
    /// offline session *and* for an online consumer whose in-flight window is full, and
    /// only its log says so; it also counts the drops in
    /// `$SYS/broker/publish/messages/dropped`. This opens one more connection,
    /// `<client_id>_sys` (MQTT 3.1.1, clean session, QoS 0, same transport and
    /// credentials), that subscribes to that topic. The count is for the whole broker,
    /// not this consumer; updates come every `sys_interval` of the broker (default 10 s)
    /// when it changed. Other brokers do not publish this topic: nothing is reported.
    /// The side connection is retried with [`reconnect_backoff`](Self::reconnect_backoff)
    /// and never ends [`Consumer::run`].
    pub fn watch_broker_drops(mut self) -> Self {
        self.watch_drops = true;
        self
    }

    /// Subscribe to `filter` with `qos`. Repeatable; at least one is required.
    ///
    /// Use QoS 1 or 2 for at-least-once delivery: QoS 0 messages cannot be redelivered.
    pub fn topic(mut self, filter: impl Into<String>, qos: QoS) -> Self {
        self.topics.push((filter.into(), qos));
        self
    }

    /// Subscribe as `$share/<group>/<filter>`, so the broker spreads messages over every
    /// connection in the group instead of copying them to each. Required for
    /// `concurrency > 1`.
    pub fn shared_group(mut self, group: impl Into<String>) -> Self {
        self.shared_group = Some(group.into());
        self
    }

    /// Number of broker connections (default 1). Connection `i` uses client id
    /// `<client_id>_<i>` and its own task.
    pub fn concurrency(mut self, connections: usize) -> Self {
        self.concurrency = connections;
        self
    }

    /// Largest number of messages each connection holds at once (default 100): service
    /// calls in progress plus acknowledgements waiting for an earlier message. At the
    /// limit the connection stops reading from the socket (QoS 0 included). With MQTT 5
    /// it is also sent to the broker as Receive Maximum.
    pub fn max_inflight(mut self, messages: usize) -> Self {
        self.max_inflight = messages;
        self
    }

    /// What to do when the service returns `Ok`. Default [`OnSuccess::Ack`].
    pub fn on_success(mut self, on_success: OnSuccess) -> Self {
        self.policy.on_success = on_success;
        self.policy_set = true;
        self
    }

    /// What to do when the service returns `Err`. Default [`OnFailure::Redeliver`].
    pub fn on_failure(mut self, on_failure: OnFailure) -> Self {
        self.policy.on_failure = on_failure;
        self.policy_set = true;
        self
    }

    /// Decide every message's [`Disposition`](crate::Disposition) with `classifier`
    /// instead of the [`AckPolicy`] of `on_success` / `on_failure` (setting both is
    /// [`ConfigError::ConflictingOption`]). A [marker error](crate::disposition::marker)
    /// returned by the service still wins. With `clean_start(true)` a `Redeliver`
    /// decision is carried out as `Leave` (there is no session to resume).
    pub fn classify(mut self, classifier: impl Classify) -> Self {
        self.classifier = Some(Arc::new(classifier));
        self
    }

    /// How long shutdown (and a redelivery reconnect) waits for calls in progress
    /// before giving up on them; abandoned messages are not acknowledged, so the broker
    /// sends them again. Default 30 s.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// With [`OnFailure::Redeliver`]: the longest a failed message waits before the
    /// connection resumes its session to get it back. Default 1 s. The reconnect also
    /// happens as soon as failures would fill `max_inflight`.
    pub fn redeliver_after(mut self, delay: Duration) -> Self {
        self.redeliver_after = delay;
        self
    }

    /// Whether a connection may hold its reads back while its broker sends fast, when
    /// that raises the message rate (a broker draining a backlog sends much faster to a
    /// consumer that reads late). Default [`ReadPacing::Above`]`(20_000)` messages per
    /// second per connection; [`ReadPacing::Off`] reads every byte as soon as it
    /// arrives. While a connection holds, a message may wait up to 5 ms longer before
    /// its call starts; acknowledgements are never delayed. See [`ReadPacing`] for how
    /// it decides, and [`Event::ReadPacing`] for its reports.
    pub fn read_pacing(mut self, pacing: ReadPacing) -> Self {
        self.read_pacing = pacing;
        self
    }

    /// Bounds of the exponential reconnect backoff (default 100 ms to 30 s): tower's
    /// [`ExponentialBackoff`](tower::retry::backoff::ExponentialBackoff) with jitter
    /// 1.0. After the n-th consecutive failure (n = 1, 2, …) the connection waits its
    /// step `b = min(min · 2^(n-1), max)` plus a random jitter of up to `b` again, never
    /// more than `max` in all: so the waits start between `min` and `2 · min`, and once
    /// `b` reaches `max` every wait is exactly `max`. Each connection draws its own
    /// jitter, so consumers do not reconnect in step; a successful connection starts the
    /// sequence over. (tower multiplies the whole seconds and the sub-second part of
    /// `b` by the random factor separately and drops the fraction of the first product,
    /// so a step of exactly 1 s gets no jitter at all; the default steps, 100 ms · 2^k,
    /// all have a sub-second part.)
    ///
    /// `min` must be above zero and at most `max`
    /// ([`ConfigError::ZeroDuration`], [`ConfigError::InvalidBackoff`]).
    /// Replaces a backoff set with [`reconnect_backoff_maker`](Self::reconnect_backoff_maker).
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff = ReconnectBackoff::Bounds { min, max };
        self
    }

    /// Reconnect with tower's exponential backoff exactly as `maker` describes it (own
    /// jitter ratio, own random generator), instead of
    /// [`reconnect_backoff`](Self::reconnect_backoff). Needs tower's `retry` and `util`
    /// features. Each connection slot uses a clone of `maker`, and makes a new backoff
    /// from it after every successful connection.
    ///
    /// tower checks the maker when it is created (`min <= max`, `max > 0`, jitter
    /// `0.0..=100.0`) and nothing is checked here: a `min` of zero means no wait at all
    /// (a broker that refuses connections is retried in a tight loop). tower also clones
    /// the maker's random generator into every backoff, so all connections of this
    /// consumer draw the same jitter (with `HasherRng::default()`, consumers in other
    /// processes draw their own); `reconnect_backoff` gives each connection a generator
    /// of its own.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower::retry::backoff::ExponentialBackoffMaker;
    /// use tower::util::rng::HasherRng;
    /// use tower_mqtt::{Config, Consumer, QoS};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // 500 ms doubling up to 1 min, plus up to half the step at random.
    /// let backoff = ExponentialBackoffMaker::new(
    ///     Duration::from_millis(500),
    ///     Duration::from_secs(60),
    ///     0.5,
    ///     HasherRng::default(),
    /// )?;
    /// let consumer = Consumer::builder(Config::new("127.0.0.1").client_id("ingest"))
    ///     .topic("sensors/#", QoS::AtLeastOnce)
    ///     .reconnect_backoff_maker(backoff)
    ///     .build()?;
    /// # drop(consumer); Ok(()) }
    /// ```
    pub fn reconnect_backoff_maker(mut self, maker: ExponentialBackoffMaker) -> Self {
        self.backoff = ReconnectBackoff::Maker(maker);
        self
    }

    /// Give up after this many consecutive failed connection attempts; `run` then
    /// returns [`RunError::ReconnectLimit`] with the last reason. Default `None`: retry
    /// forever (a broker that is down at start-up is waited for).
    pub fn max_reconnect_attempts(mut self, attempts: Option<u32>) -> Self {
        self.max_reconnect_attempts = attempts;
        self
    }

    /// After scaling down, drain the sessions of the connections this consumer no longer
    /// runs: connection indices `concurrency..up_to` (say `up_to` = the largest
    /// `concurrency` ever used). Each such session (`<client_id>_<k>`) is resumed with
    /// the same service, unsubscribed from the filters so that no new messages go to
    /// it, and once what it held is processed and acknowledged (nothing has arrived for
    /// a second) the session is ended, so the broker keeps nothing for it. Without this,
    /// messages queued for a retired session wait until the session expires and are
    /// then lost. A session that does not exist is created and ended at once. Needs
    /// `clean_start(false)` (the default); see the README's notes on scaling down.
    pub fn drain_retired_sessions(mut self, up_to: usize) -> Self {
        self.retired_up_to = up_to;
        self
    }

    /// Drain the persistent sessions of consumers that no longer run, named by their
    /// connections' full client ids (`<client_id>_<k>`, what
    /// [`Consumer::client_id`] returns for them): each is resumed with this consumer's
    /// service, unsubscribed from this consumer's filters, processed until nothing has
    /// arrived for a second, and ended, as with
    /// [`drain_retired_sessions`](Self::drain_retired_sessions), which covers this
    /// consumer's own retired connections. Use it when replicas have their own client
    /// ids (`ingest-0`, `ingest-1`, … from a StatefulSet ordinal) and the set shrinks:
    /// a replica that always runs (ordinal 0) drains those above the current count.
    ///
    /// ```
    /// use tower_mqtt::{Config, Consumer, QoS};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // Replica 0 of 2; there used to be 4, each with one connection (`ingest-<r>_0`).
    /// let (replicas, most_ever) = (2, 4);
    /// let consumer = Consumer::builder(Config::new("broker").client_id("ingest-0"))
    ///     .topic("sensors/#", QoS::AtLeastOnce)
    ///     .shared_group("ingest")
    ///     .drain_sessions((replicas..most_ever).map(|r| format!("ingest-{r}_0")))
    ///     .build()?;
    /// # drop(consumer); Ok(()) }
    /// ```
    ///
    /// **Only for consumers that are gone**: resuming the session of a consumer that
    /// still runs takes it over (the broker disconnects the other, which then takes it
    /// back, and so on). Naming one of this consumer's own connections, an empty id, or
    /// using `clean_start(true)` is a [`ConfigError`].
    pub fn drain_sessions<I, T>(mut self, client_ids: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.retired_sessions
            .extend(client_ids.into_iter().map(Into::into));
        self
    }

    /// Apply the options loaded from a config file: each field that is set calls the
    /// builder method of its name (topics are added after those already there), and
    /// `build()` checks the values as usual. Feature `serde`; see [`ConsumerOptions`].
    #[cfg(feature = "serde")]
    pub fn options(mut self, options: ConsumerOptions) -> Self {
        use config::set;
        for t in options.topics {
            self = self.topic(t.filter, t.qos);
        }
        self = set(self, options.shared_group, |b, group| b.shared_group(group));
        self = set(self, options.concurrency, Self::concurrency);
        self = set(self, options.max_inflight, Self::max_inflight);
        self = set(self, options.on_success, Self::on_success);
        self = set(self, options.on_failure, Self::on_failure);
        self = set(self, options.drain_timeout, Self::drain_timeout);
        self = set(self, options.redeliver_after, Self::redeliver_after);
        self = set(self, options.reconnect_backoff, |b, bounds| {
            b.reconnect_backoff(bounds.min, bounds.max)
        });
        self = set(self, options.max_reconnect_attempts, |b, n| {
            b.max_reconnect_attempts(Some(n))
        });
        self = set(self, options.read_pacing, Self::read_pacing);
        self
    }

    /// Check every option and build the consumer.
    pub fn build(self) -> Result<Consumer, ConfigError> {
        let c = &self.config;
        // Everything about the connection first (the same order as always, so the same
        // error wins); it also settles the client id.
        let client_id = config::validate(c, self.max_inflight, crate::transport::validate)?;
        if self.topics.is_empty() {
            return Err(ConfigError::NoTopic);
        }
        for (i, (filter, _)) in self.topics.iter().enumerate() {
            if let Some(reason) = topic::filter_problem(filter) {
                return Err(ConfigError::InvalidTopic {
                    filter: filter.clone(),
                    reason,
                });
            }
            if self.topics[..i].iter().any(|(f, _)| f == filter) {
                return Err(ConfigError::DuplicateTopic(filter.clone()));
            }
        }
        if let Some(group) = &self.shared_group {
            if !topic::group_is_valid(group) {
                return Err(ConfigError::InvalidSharedGroup(group.clone()));
            }
        }
        if self.concurrency == 0 {
            return Err(ConfigError::ZeroConcurrency);
        }
        if self.concurrency > 1 && self.shared_group.is_none() {
            return Err(ConfigError::ConcurrencyWithoutGroup(self.concurrency));
        }
        if self.max_inflight == 0 || self.max_inflight > 65_535 {
            return Err(ConfigError::InvalidMaxInflight(self.max_inflight));
        }
        if self.read_pacing == ReadPacing::Above(0) {
            return Err(ConfigError::InvalidOptionValue {
                option: "read_pacing".into(),
                expected: "ReadPacing::Above(n) with n of at least 1 message per second, or ReadPacing::Off to never hold reads",
            });
        }
        if self.classifier.is_some() && self.policy_set {
            return Err(ConfigError::ConflictingOption {
                option: "classify".into(),
                other: "on_success / on_failure",
                resolution: "a classifier replaces the on_success / on_failure rules; decide failures inside the classifier, or drop classify",
            });
        }
        if self.classifier.is_none()
            && self.policy.on_failure == OnFailure::Redeliver
            && c.clean_start
        {
            return Err(ConfigError::RedeliverNeedsSession);
        }
        if self.retired_up_to > self.concurrency && c.clean_start {
            return Err(ConfigError::ConflictingOption {
                option: "drain_retired_sessions".into(),
                other: "clean_start(true)",
                resolution: "with clean_start(true) the broker keeps no session to drain; drop drain_retired_sessions, or use clean_start(false)",
            });
        }
        if !self.retired_sessions.is_empty() && c.clean_start {
            return Err(ConfigError::ConflictingOption {
                option: "drain_sessions".into(),
                other: "clean_start(true)",
                resolution: "with clean_start(true) the broker keeps no session to drain; drop drain_sessions, or use clean_start(false)",
            });
        }
        for id in &self.retired_sessions {
            if id.is_empty() {
                return Err(ConfigError::InvalidClientId {
                    id: id.clone(),
                    reason:
                        "drain_sessions: a session to drain needs its client id; drop the empty one",
                });
            }
            if (0..self.concurrency).any(|k| *id == format!("{client_id}_{k}")) {
                return Err(ConfigError::ConflictingOption {
                    option: format!("drain_sessions({id:?})"),
                    other: "the consumer's own connections",
                    resolution: "that session is one of this consumer's own connections, which it resumes anyway; name only sessions of consumers that no longer run",
                });
            }
        }
        if self.drain_timeout.is_zero() {
            return Err(ConfigError::ZeroDuration("drain_timeout"));
        }
        if self.redeliver_after.is_zero() {
            return Err(ConfigError::ZeroDuration("redeliver_after"));
        }
        let mut backoff = self.backoff;
        let mut max_reconnect_attempts = self.max_reconnect_attempts;
        // off_broadway_emqtt names recorded by Config::emqtt_option.
        if let Some(reconnect) = c.migrated.reconnect {
            if max_reconnect_attempts.is_some() && max_reconnect_attempts != reconnect {
                return Err(ConfigError::ConflictingOption {
                    option: "reconnect".into(),
                    other: "max_reconnect_attempts",
                    resolution: "set the limit once: either emqtt_option(\"reconnect\", ...) or ConsumerBuilder::max_reconnect_attempts",
                });
            }
            max_reconnect_attempts = reconnect;
        }
        if let Some(every) = c.migrated.reconnect_timeout {
            backoff = ReconnectBackoff::Bounds {
                min: every,
                max: every,
            };
        }
        if let ReconnectBackoff::Bounds { min, max } = backoff {
            if min.is_zero() {
                return Err(ConfigError::ZeroDuration("reconnect_backoff"));
            }
            if min > max {
                return Err(ConfigError::InvalidBackoff { min, max });
            }
        }
        let subscriptions = self
            .topics
            .iter()
            .map(|(f, q)| match &self.shared_group {
                Some(g) => (format!("$share/{g}/{f}"), *q),
                None => (f.clone(), *q),
            })
            .collect();
        let decider = match self.classifier {
            Some(classifier) => Decider::new(classifier, !c.clean_start),
            None => Decider::policy(self.policy, !c.clean_start),
        };
        Ok(Consumer {
            watch_drops: self.watch_drops,
            retired_sessions: self.retired_sessions,
            decider,
            settings: Arc::new(Settings {
                client_id,
                subscriptions,
                filters: self.topics.iter().map(|(f, _)| f.clone()).collect(),
                shared_group: self.shared_group,
                concurrency: self.concurrency,
                max_inflight: self.max_inflight,
                drain_timeout: self.drain_timeout,
                redeliver_after: self.redeliver_after,
                backoff,
                max_reconnect_attempts,
                hook: self.hook,
                unsubscribe: Vec::new(),
                retired_up_to: self.retired_up_to,
                read_pacing: self.read_pacing,
                config: self.config,
            }),
        })
    }
}

/// An MQTT consumer: subscribes, runs every message through a tower `Service`, and
/// acknowledges according to the service's `Result`.
///
/// ```no_run
/// use std::convert::Infallible;
/// use tokio_util::sync::CancellationToken;
/// use tower::service_fn;
/// use tower_mqtt::{Config, Consumer, Message, QoS};
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let consumer = Consumer::builder(Config::new("127.0.0.1").client_id("ingest"))
///     .topic("sensors/+/temp", QoS::AtLeastOnce)
///     .build()?;
/// let service = service_fn(|msg: Message| async move {
///     println!("{} {:?}", msg.topic(), msg.payload());
///     Ok::<_, Infallible>(())
/// });
/// consumer.run(service, CancellationToken::new()).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Consumer {
    settings: Arc<Settings>,
    decider: Decider,
    watch_drops: bool,
    retired_sessions: Vec<String>,
}

impl Consumer {
    /// Start building a consumer for the broker described by `config`.
    pub fn builder(config: Config) -> ConsumerBuilder {
        ConsumerBuilder {
            config,
            topics: Vec::new(),
            shared_group: None,
            concurrency: 1,
            max_inflight: 100,
            policy: AckPolicy::default(),
            policy_set: false,
            classifier: None,
            drain_timeout: Duration::from_secs(30),
            redeliver_after: Duration::from_secs(1),
            backoff: ReconnectBackoff::Bounds {
                min: Duration::from_millis(100),
                max: Duration::from_secs(30),
            },
            max_reconnect_attempts: None,
            retired_up_to: 0,
            retired_sessions: Vec::new(),
            hook: None,
            watch_drops: false,
            read_pacing: ReadPacing::default(),
        }
    }

    /// A [`Publisher`] for this consumer's broker, e.g. for dead letters: its own
    /// connection `<client_id>_pub` with the same transport, TLS, credentials, session
    /// settings and reconnect backoff. Must be called within a tokio runtime; see
    /// [`publisher_builder`](Self::publisher_builder) to change its options.
    ///
    /// ```no_run
    /// use tower_mqtt::{Config, Consumer, Publish, QoS};
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let consumer = Consumer::builder(Config::new("127.0.0.1").client_id("ingest"))
    ///     .topic("readings/#", QoS::AtLeastOnce)
    ///     .build()?;
    /// let publisher = consumer.publisher()?; // client id "ingest_pub"
    /// publisher.publish(Publish::new("readings-dead/7", "not json")).await?;
    /// # Ok(()) }
    /// ```
    pub fn publisher(&self) -> Result<Publisher, ConfigError> {
        self.publisher_builder().build()
    }

    /// A [`PublisherBuilder`] preset as [`publisher`](Self::publisher) sets it.
    pub fn publisher_builder(&self) -> PublisherBuilder {
        Publisher::builder(self.settings.config.clone())
            .client_id(format!("{}_pub", self.settings.client_id))
            .backoff(self.settings.backoff.clone())
    }

    /// Where the messages of connection `index` come from.
    fn origin(&self, index: usize) -> Arc<Origin> {
        self.origin_as(index, self.client_id(index))
    }

    /// The origin of connection `index` under another client id (a drained session).
    fn origin_as(&self, index: usize, client_id: String) -> Arc<Origin> {
        Arc::new(Origin {
            client_id,
            producer_index: index,
            shared_group: self.settings.shared_group.clone(),
            host: self.settings.config.host.clone(),
            port: self.settings.config.port,
            filters: self.settings.filters.clone(),
            decider: self.decider.clone(),
            max_inflight: self.settings.max_inflight,
            connections: self.settings.concurrency,
        })
    }

    /// Client id of connection `index` (`<client_id>_<index>`).
    #[must_use]
    pub fn client_id(&self, index: usize) -> String {
        format!("{}_{index}", self.settings.client_id)
    }

    /// Run until `shutdown` is cancelled, then drain and return.
    ///
    /// Each connection gets its own clone of `service`. On shutdown every connection
    /// stops reading, waits up to the drain timeout for calls in progress, sends their
    /// acknowledgements and a DISCONNECT, then `run` returns `Ok(())`. If a connection
    /// fails for good (see [`RunError`]) the others are shut down the same way and the
    /// first error is returned.
    pub async fn run<S>(self, service: S, shutdown: CancellationToken) -> Result<(), RunError>
    where
        S: Service<Message> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        let stop = shutdown.child_token();
        let mut tasks = JoinSet::new();
        for index in 0..self.settings.concurrency {
            let driver = Driver::new(
                self.settings.clone(),
                self.origin(index),
                service.clone(),
                stop.clone(),
            );
            tasks.spawn(driver.run());
        }
        let retired = self.settings.concurrency..self.settings.retired_up_to;
        crate::retire::spawn(
            &self.settings,
            retired,
            |index| self.origin(index),
            &service,
            &stop,
            &mut tasks,
        );
        // Other consumers' sessions: indices after this consumer's own slots.
        let first = self.settings.retired_up_to.max(self.settings.concurrency);
        crate::retire::spawn(
            &self.settings,
            first..first + self.retired_sessions.len(),
            |index| self.origin_as(index, self.retired_sessions[index - first].clone()),
            &service,
            &stop,
            &mut tasks,
        );
        let watch = self.watch_drops.then(|| {
            let (settings, token) = (self.settings.clone(), stop.child_token());
            let watching = token.clone();
            let handle =
                tokio::spawn(async move { crate::sys_watch::run(&settings, watching).await });
            (handle, token)
        });
        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            let result = joined.unwrap_or_else(|e| Err(RunError::Panicked(e.to_string())));
            if let Err(e) = result {
                stop.cancel();
                first_error.get_or_insert(e);
            }
        }
        if let Some((handle, stop)) = watch {
            stop.cancel();
            // It never fails `run`; a panic in it is not the consumer's error either.
            let _ = handle.await;
        }
        first_error.map_or(Ok(()), Err)
    }
}
