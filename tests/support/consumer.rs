//! Run a tower-mqtt consumer in the background and await its typed events.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tower_mqtt::{
    BoxError, ConsumerBuilder, Disposition, DownReason, Event, Message, RunError, Status,
};

/// An owned copy of a [`tower_mqtt::Event`], kept for assertions.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ev {
    Init(usize),
    Terminate(usize, String),
    Up {
        index: usize,
        session_present: bool,
    },
    Down(usize, DownReason),
    SubOk {
        index: usize,
        topic: String,
        requested: tower_mqtt::QoS,
        granted: tower_mqtt::QoS,
    },
    SubErr {
        index: usize,
        topic: String,
        code: u8,
    },
    Start {
        index: usize,
        client_id: String,
        topic: String,
        pkid: u16,
        dup: bool,
    },
    Ack {
        index: usize,
        topic: String,
        pkid: u16,
        status: Status,
        disposition: Disposition,
    },
    Stale {
        pkid: u16,
        status: Status,
    },
    Pacing {
        index: usize,
        holding: bool,
        held_rate: u64,
        direct_rate: Option<u64>,
    },
}

impl Ev {
    fn from_event(e: &Event<'_>) -> Option<Self> {
        Some(match *e {
            Event::ProducerInit { producer_index, .. } => Self::Init(producer_index),
            Event::ProducerTerminate {
                producer_index,
                reason,
                ..
            } => Self::Terminate(producer_index, reason.to_owned()),
            Event::ConnectionUp {
                producer_index,
                session_present,
                ..
            } => Self::Up {
                index: producer_index,
                session_present,
            },
            Event::ConnectionDown {
                producer_index,
                reason,
                ..
            } => Self::Down(producer_index, reason.clone()),
            Event::SubscriptionSuccess {
                producer_index,
                topic,
                requested_qos,
                granted_qos,
                ..
            } => Self::SubOk {
                index: producer_index,
                topic: topic.to_owned(),
                requested: requested_qos,
                granted: granted_qos,
            },
            Event::SubscriptionError {
                producer_index,
                topic,
                reason_code,
                ..
            } => Self::SubErr {
                index: producer_index,
                topic: topic.to_owned(),
                code: reason_code,
            },
            Event::MessageStart {
                producer_index,
                client_id,
                topic,
                pkid,
                dup,
                ..
            } => Self::Start {
                index: producer_index,
                client_id: client_id.to_owned(),
                topic: topic.to_owned(),
                pkid,
                dup,
            },
            Event::MessageAck {
                producer_index,
                topic,
                pkid,
                status,
                disposition,
                ..
            } => Self::Ack {
                index: producer_index,
                topic: topic.to_owned(),
                pkid,
                status,
                disposition,
            },
            Event::MessageStale { pkid, status, .. } => Self::Stale { pkid, status },
            Event::ReadPacing {
                producer_index,
                holding,
                held_rate,
                direct_rate,
                ..
            } => Self::Pacing {
                index: producer_index,
                holding,
                held_rate,
                direct_rate,
            },
            _ => return None,
        })
    }
}

/// Every event the consumer emitted so far, in order.
#[derive(Clone, Default)]
pub(crate) struct EventLog {
    events: Arc<Mutex<Vec<(tokio::time::Instant, Ev)>>>,
    changed: Arc<Notify>,
}

impl EventLog {
    fn push(&self, ev: Ev) {
        self.events
            .lock()
            .unwrap()
            .push((tokio::time::Instant::now(), ev));
        self.changed.notify_waiters();
    }

    /// A snapshot of all events.
    pub(crate) fn all(&self) -> Vec<Ev> {
        let events = self.events.lock().unwrap();
        events.iter().map(|(_, e)| e.clone()).collect()
    }

    /// When each matching event happened.
    pub(crate) fn times(&self, pred: impl Fn(&Ev) -> bool) -> Vec<tokio::time::Instant> {
        let events = self.events.lock().unwrap();
        events
            .iter()
            .filter(|(_, e)| pred(e))
            .map(|(t, _)| *t)
            .collect()
    }

    /// How many events match.
    pub(crate) fn count(&self, pred: impl Fn(&Ev) -> bool) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, e)| pred(e))
            .count()
    }

    /// Wait until at least `n` events match `pred`; panics with the event log after
    /// `timeout`.
    pub(crate) async fn wait_count(&self, n: usize, timeout: Duration, pred: impl Fn(&Ev) -> bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if self.count(&pred) >= n {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let all = self.all();
                let tail: Vec<_> = all.iter().rev().take(30).rev().collect();
                panic!(
                    "waited {timeout:?} for {n} matching events, saw {}; last events: {tail:#?}",
                    self.count(&pred)
                );
            }
        }
    }

    /// Wait for one matching event.
    pub(crate) async fn wait(&self, timeout: Duration, pred: impl Fn(&Ev) -> bool) {
        self.wait_count(1, timeout, pred).await
    }

    /// Wait until every connection `0..connections` reported a granted subscription
    /// for each of `filters` (as subscribed, i.e. with any `$share/...` prefix).
    pub(crate) async fn wait_subscribed(&self, connections: usize, filters: usize) {
        self.wait_count(connections * filters, Duration::from_secs(20), |e| {
            matches!(e, Ev::SubOk { .. })
        })
        .await
    }
}

/// A consumer running in a background task.
pub(crate) struct Running {
    pub(crate) events: EventLog,
    pub(crate) shutdown: tower_mqtt::CancellationToken,
    handle: JoinHandle<Result<(), RunError>>,
}

/// Build and start a consumer, recording its events.
pub(crate) fn spawn<S>(builder: ConsumerBuilder, service: S) -> Running
where
    S: tower::Service<Message> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let events = EventLog::default();
    let log = events.clone();
    let consumer = builder
        .on_event(move |e| {
            if let Some(ev) = Ev::from_event(e) {
                log.push(ev);
            }
        })
        .build()
        .expect("valid consumer configuration");
    let shutdown = tower_mqtt::CancellationToken::new();
    let handle = tokio::spawn(consumer.run(service, shutdown.clone()));
    Running {
        events,
        shutdown,
        handle,
    }
}

impl Running {
    /// Cancel and wait for `run` to return (panics if it takes over 30 s).
    pub(crate) async fn stop(self) -> Result<(), RunError> {
        self.shutdown.cancel();
        self.join().await
    }

    /// Wait for `run` to return on its own (panics if it takes over 30 s).
    pub(crate) async fn join(self) -> Result<(), RunError> {
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("consumer did not stop within 30 s")
            .expect("consumer task panicked")
    }
}

/// Config for the harness broker: short keepalive and connect timeout.
pub(crate) fn config(broker: &super::Broker, client_id: &str) -> tower_mqtt::Config {
    tower_mqtt::Config::new(broker.host())
        .port(broker.port())
        .client_id(client_id)
        .keepalive(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(5))
}

/// A builder for `topic` at `qos` with fast reconnects.
pub(crate) fn builder(
    config: tower_mqtt::Config,
    topic: &str,
    qos: tower_mqtt::QoS,
) -> ConsumerBuilder {
    tower_mqtt::Consumer::builder(config)
        .topic(topic, qos)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(500))
}

/// `n` distinct payloads `"<prefix>-<i>"`.
pub(crate) fn payloads(prefix: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("{prefix}-{i}").into_bytes())
        .collect()
}

/// Converts a tower-mqtt QoS to the harness client's.
pub(crate) fn rqos(qos: tower_mqtt::QoS) -> rumqttc::QoS {
    match qos {
        tower_mqtt::QoS::AtMostOnce => rumqttc::QoS::AtMostOnce,
        tower_mqtt::QoS::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
        tower_mqtt::QoS::ExactlyOnce => rumqttc::QoS::ExactlyOnce,
    }
}

/// A service that records each payload in `processed` and succeeds.
pub(crate) fn recording_service(
    processed: &Processed,
) -> impl tower::Service<Message, Response = (), Error = BoxError, Future = impl Send> + Clone {
    let p = processed.clone();
    tower::service_fn(move |m: Message| {
        p.record(m.payload());
        async { Ok::<_, BoxError>(()) }
    })
}

/// Counts how many times each payload was processed successfully.
#[derive(Clone, Default)]
pub(crate) struct Processed(Arc<Mutex<std::collections::HashMap<Vec<u8>, usize>>>);

impl Processed {
    pub(crate) fn record(&self, payload: &[u8]) {
        *self.0.lock().unwrap().entry(payload.to_vec()).or_default() += 1;
    }
    /// Distinct payloads processed.
    pub(crate) fn distinct(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    /// Payloads processed more than once.
    pub(crate) fn duplicates(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(p, _)| String::from_utf8_lossy(p).into_owned())
            .collect()
    }
    pub(crate) fn contains(&self, payload: &[u8]) -> bool {
        self.0.lock().unwrap().contains_key(payload)
    }
    pub(crate) fn set(&self) -> std::collections::HashSet<Vec<u8>> {
        self.0.lock().unwrap().keys().cloned().collect()
    }
}

impl EventLog {
    /// Wait until `n` service calls succeeded.
    pub(crate) async fn wait_successes(&self, n: usize, timeout: Duration) {
        self.wait_count(n, timeout, |e| {
            matches!(
                e,
                Ev::Ack {
                    status: Status::Success,
                    ..
                }
            )
        })
        .await
    }
}

/// What the broker still holds for connection 0 of consumer `id`: waits for the
/// consumer's clean DISCONNECT to be logged (`occurrence`-th one), then resumes the
/// session with a plain client and collects everything up to a marker on `topic`.
pub(crate) async fn left_in_session(
    broker: &super::Broker,
    id: &str,
    topic: &str,
    occurrence: usize,
) -> Vec<rumqttc::Publish> {
    broker
        .wait_for_log_count(
            &format!("Client {id}_0 disconnected"),
            occurrence,
            Duration::from_secs(10),
        )
        .await;
    super::drain_session(broker, &format!("{id}_0"), topic, Duration::from_secs(20)).await
}
