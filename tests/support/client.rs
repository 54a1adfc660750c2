//! rumqttc-based helpers: a test client, a publisher, a session inspector and a collector.
//!
//! Every client here runs its `EventLoop` in a spawned task that forwards
//! each event over an unbounded channel and stops at the first error, so no
//! client silently reconnects and no helper ever awaits a `client.*` call
//! from the polling task (rumqttc can deadlock then).

use std::collections::VecDeque;
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, Publish, QoS, SubscribeReasonCode,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::broker::{Broker, BrokerLog};
use super::unique;

/// Timeout for helpers whose signature has none (connect, SUBACK, `publish_many`).
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);
/// Incoming/outgoing packet limit of harness clients (rumqttc's default is 10 KiB).
pub(crate) const MAX_PACKET_SIZE: usize = 16 * 1024 * 1024;
/// Request-channel capacity of harness clients.
const REQUEST_CAPACITY: usize = 1000;

/// Harness defaults for a client of `broker`: keep-alive 30 s, 100 outgoing
/// publishes in flight, 16 MiB packets, clean session, automatic acks.
pub(crate) fn mqtt_options(broker: &Broker, client_id: &str) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, broker.host(), broker.port());
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_inflight(100)
        .set_max_packet_size(MAX_PACKET_SIZE, MAX_PACKET_SIZE);
    options
}

/// Why waiting for the next event stopped.
#[derive(Debug)]
enum Stop {
    Timeout,
    /// The event loop returned this error and ended.
    Failed(String),
}

/// A connected rumqttc v4 client whose event loop is polled in its own task.
///
/// Dropping it aborts the task, which closes the socket without DISCONNECT.
pub(crate) struct TestClient {
    client: AsyncClient,
    id: String,
    events: mpsc::UnboundedReceiver<Result<Event, String>>,
    task: JoinHandle<()>,
    log: BrokerLog,
    session_present: bool,
    /// Publishes seen while waiting for something else (e.g. a SUBACK).
    publishes: VecDeque<Publish>,
    /// Set once the event loop reported its (final) error.
    ended: Option<String>,
}

impl TestClient {
    /// Connects with the harness defaults ([`mqtt_options`]) and waits for CONNACK.
    ///
    /// `manual_acks == true` means received QoS 1/2 publishes stay unacked
    /// unless the test calls `client().ack(..)`.
    ///
    /// # Panics
    /// If there is no CONNACK within [`DEFAULT_TIMEOUT`].
    pub(crate) async fn connect(
        broker: &Broker,
        client_id: &str,
        clean_session: bool,
        manual_acks: bool,
    ) -> Self {
        let mut options = mqtt_options(broker, client_id);
        options
            .set_clean_session(clean_session)
            .set_manual_acks(manual_acks);
        Self::connect_with(broker, options, DEFAULT_TIMEOUT).await
    }

    /// Connects with fully custom options and waits for CONNACK.
    ///
    /// # Panics
    /// If the connection fails or there is no CONNACK within `timeout`.
    pub(crate) async fn connect_with(
        broker: &Broker,
        options: MqttOptions,
        timeout: Duration,
    ) -> Self {
        let id = options.client_id();
        let (client, eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(forward_events(eventloop, tx));
        let mut this = Self {
            client,
            id,
            events,
            task,
            log: broker.log_handle(),
            session_present: false,
            publishes: VecDeque::new(),
            ended: None,
        };
        let deadline = Instant::now() + timeout;
        match this.next_event(deadline).await {
            Ok(Event::Incoming(Packet::ConnAck(connack))) => {
                this.session_present = connack.session_present;
                this
            }
            Ok(other) => this.fail(
                Stop::Failed(format!("first event was {other:?}")),
                "CONNACK",
                timeout,
            ),
            Err(stop) => this.fail(stop, "CONNACK", timeout),
        }
    }

    /// The MQTT client id.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Whether the broker's CONNACK said it resumed a stored session.
    pub(crate) fn session_present(&self) -> bool {
        self.session_present
    }

    /// The rumqttc handle, e.g. to `publish` or `ack` by hand. Safe to await
    /// from the test: the event loop runs in another task.
    pub(crate) fn client(&self) -> &AsyncClient {
        &self.client
    }

    /// Subscribes and waits for the SUBACK.
    ///
    /// # Panics
    /// If the broker refuses the subscription, or no SUBACK arrives within `timeout`.
    pub(crate) async fn subscribe(&mut self, filter: &str, qos: QoS, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let what = format!("SUBACK for {filter:?}");
        if let Err(e) = tokio::time::timeout_at(deadline, self.client.subscribe(filter, qos)).await
        {
            self.fail(
                Stop::Failed(format!("subscribe request: {e:?}")),
                &what,
                timeout,
            );
        }
        loop {
            match self.next_event(deadline).await {
                Ok(Event::Incoming(Packet::SubAck(suback))) => {
                    if suback.return_codes.contains(&SubscribeReasonCode::Failure) {
                        self.fail(
                            Stop::Failed(format!("broker refused: {suback:?}")),
                            &what,
                            timeout,
                        );
                    }
                    return;
                }
                Ok(Event::Incoming(Packet::Publish(p))) => self.publishes.push_back(p),
                Ok(_) => {}
                Err(stop) => self.fail(stop, &what, timeout),
            }
        }
    }

    /// The next received publish.
    ///
    /// # Panics
    /// If none arrives within `timeout` or the connection fails.
    pub(crate) async fn next_publish(&mut self, timeout: Duration) -> Publish {
        self.next_publishes(1, timeout)
            .await
            .pop()
            .expect("one publish")
    }

    /// The next `n` received publishes, in arrival order.
    ///
    /// # Panics
    /// If fewer than `n` arrive within `timeout` (the message says how many
    /// did), or the connection fails.
    pub(crate) async fn next_publishes(&mut self, n: usize, timeout: Duration) -> Vec<Publish> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            if let Some(p) = self.publishes.pop_front() {
                out.push(p);
                continue;
            }
            match self.next_event(deadline).await {
                Ok(Event::Incoming(Packet::Publish(p))) => out.push(p),
                Ok(_) => {}
                Err(stop) => {
                    let what = format!("{n} publishes (got {})", out.len());
                    self.fail(stop, &what, timeout);
                }
            }
        }
        out
    }

    /// Every publish that arrives within `duration` (plus any already
    /// buffered). Never panics on the deadline: use it to check that nothing
    /// (more) arrives. Stops early if the connection ends.
    pub(crate) async fn publishes_within(&mut self, duration: Duration) -> Vec<Publish> {
        let deadline = Instant::now() + duration;
        let mut out: Vec<Publish> = self.publishes.drain(..).collect();
        loop {
            match self.next_event(deadline).await {
                Ok(Event::Incoming(Packet::Publish(p))) => out.push(p),
                Ok(_) => {}
                Err(_) => return out,
            }
        }
    }

    /// Sends DISCONNECT, waits until the event loop ends, then until the
    /// broker has logged `Client <id> disconnected.` — so the broker has
    /// processed everything this client sent (publishes, acks).
    ///
    /// If the connection had already ended, just returns.
    ///
    /// # Panics
    /// If this takes longer than `timeout`.
    pub(crate) async fn disconnect(mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let needle = format!("Client {} disconnected.", self.id);
        let before = self.log.count(&needle);
        if self.ended.is_some() {
            return;
        }
        match tokio::time::timeout_at(deadline, self.client.disconnect()).await {
            Ok(Ok(())) => {}
            // The event loop is gone (connection already failed).
            Ok(Err(_)) => return,
            Err(_) => self.fail(
                Stop::Timeout,
                "room in the request channel for DISCONNECT",
                timeout,
            ),
        }
        let mut sent = false;
        loop {
            match self.next_event(deadline).await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) => sent = true,
                Ok(_) => {}
                Err(Stop::Failed(_)) => break,
                Err(Stop::Timeout) => self.fail(
                    Stop::Timeout,
                    "the broker to close the connection after DISCONNECT",
                    timeout,
                ),
            }
        }
        if sent {
            let remaining = deadline.saturating_duration_since(Instant::now());
            self.log
                .wait_for_count(&needle, before + 1, remaining)
                .await;
        }
    }

    /// Drops the connection without DISCONNECT (like a crashed consumer) and
    /// waits until the broker has logged `Client <id> closed its connection.`
    /// (unless the connection had already ended).
    ///
    /// # Panics
    /// If the broker does not notice within `timeout`.
    pub(crate) async fn kill(mut self, timeout: Duration) {
        let needle = format!("Client {} closed its connection.", self.id);
        let before = self.log.count(&needle);
        self.task.abort();
        // Once the task is finished its EventLoop (and socket) is dropped and
        // every event it produced is in the channel.
        let _ = (&mut self.task).await;
        while let Ok(event) = self.events.try_recv() {
            if let Err(e) = event {
                self.ended = Some(e);
            }
        }
        if self.ended.is_none() {
            self.log.wait_for_count(&needle, before + 1, timeout).await;
        }
    }

    /// The next raw event; records the end of the event loop.
    async fn next_event(&mut self, deadline: Instant) -> Result<Event, Stop> {
        if let Some(e) = &self.ended {
            return Err(Stop::Failed(e.clone()));
        }
        match tokio::time::timeout_at(deadline, self.events.recv()).await {
            Ok(Some(Ok(event))) => Ok(event),
            Ok(Some(Err(e))) => {
                self.ended = Some(e.clone());
                Err(Stop::Failed(e))
            }
            Ok(None) => {
                let e = "event loop task ended".to_owned();
                self.ended = Some(e.clone());
                Err(Stop::Failed(e))
            }
            Err(_) => Err(Stop::Timeout),
        }
    }

    /// Panics with context and the broker log tail.
    fn fail(&self, stop: Stop, waiting_for: &str, timeout: Duration) -> ! {
        let why = match stop {
            Stop::Timeout => format!("timed out after {timeout:?}"),
            Stop::Failed(e) => format!("connection failed: {e}"),
        };
        panic!(
            "client {:?}: {why} while waiting for {waiting_for}\n{}",
            self.id,
            self.log.describe()
        )
    }
}

impl Drop for TestClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls `eventloop` and forwards every event; stops after the first error
/// (which is forwarded too), so the client never reconnects on its own.
async fn forward_events(
    mut eventloop: EventLoop,
    tx: mpsc::UnboundedSender<Result<Event, String>>,
) {
    loop {
        match eventloop.poll().await {
            Ok(event) => {
                if tx.send(Ok(event)).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e.to_string()));
                return;
            }
        }
    }
}

/// Publishes every payload to `topic` with a fresh clean-session client and
/// returns once the broker has them all: for QoS 1 every PUBACK, for QoS 2
/// every PUBCOMP, for QoS 0 every publish written to the socket; then the
/// client disconnects and this waits for the broker's `disconnected` log line
/// (so even QoS 0 publishes have been routed). 100 publishes in flight (QoS 2:
/// the broker's `max_inflight_messages`, which mosquitto enforces on them).
///
/// # Panics
/// If that takes longer than [`DEFAULT_TIMEOUT`] or the connection fails.
pub(crate) async fn publish_many(
    broker: &Broker,
    topic: &str,
    qos: QoS,
    payloads: impl IntoIterator<Item = Vec<u8>>,
) {
    publish_many_within(broker, topic, qos, payloads, DEFAULT_TIMEOUT).await;
}

/// [`publish_many`] with an explicit timeout for the whole operation.
pub(crate) async fn publish_many_within(
    broker: &Broker,
    topic: &str,
    qos: QoS,
    payloads: impl IntoIterator<Item = Vec<u8>>,
    timeout: Duration,
) {
    let payloads: Vec<Vec<u8>> = payloads.into_iter().collect();
    let n = payloads.len();
    if n == 0 {
        return;
    }
    let deadline = Instant::now() + timeout;
    let mut options = mqtt_options(broker, &unique("publisher"));
    if qos == QoS::ExactlyOnce {
        // mosquitto counts an incoming QoS 2 publish against
        // `max_inflight_messages` until its PUBREL arrives, and drops a v3.1.1
        // client that exceeds it ("Bad socket read/write on client …").
        let window = match broker.options().max_inflight_messages {
            None => 20,
            Some(0) => 100,
            Some(n) => n.min(100),
        };
        options.set_inflight(u16::try_from(window).expect("window <= 100"));
    }
    let mut publisher = TestClient::connect_with(broker, options, timeout).await;

    let client = publisher.client.clone();
    // Fails only if the event loop ended; `confirm` then panics saying why.
    let send_all = async move {
        for payload in payloads {
            client.publish(topic, qos, false, payload).await?;
        }
        Ok::<(), rumqttc::ClientError>(())
    };
    let confirm = async {
        let mut done = 0;
        while done < n {
            match publisher.next_event(deadline).await {
                Ok(Event::Outgoing(Outgoing::Publish(_))) if qos == QoS::AtMostOnce => done += 1,
                Ok(Event::Incoming(Packet::PubAck(_))) if qos == QoS::AtLeastOnce => done += 1,
                Ok(Event::Incoming(Packet::PubComp(_))) if qos == QoS::ExactlyOnce => done += 1,
                Ok(_) => {}
                Err(stop) => {
                    let what =
                        format!("{n} {qos:?} publishes to {topic:?} to complete (done {done})");
                    publisher.fail(stop, &what, timeout);
                }
            }
        }
    };
    let (_sent, ()) = tokio::join!(send_all, confirm);
    let remaining = deadline.saturating_duration_since(Instant::now());
    publisher.disconnect(remaining).await;
}

/// Resumes the persistent session `client_id` (clean_session = false, no
/// SUBSCRIBE, automatic acks) and returns everything the broker delivers
/// from it — retransmitted in-flight messages (DUP = 1) and the queued
/// backlog — in arrival order. Everything returned has been acknowledged,
/// so the session is left empty; the client then disconnects cleanly.
///
/// To know when the backlog is complete without sleeping, a second client
/// publishes a unique **marker** message (QoS 1) to `marker_topic`, which
/// the broker queues behind the backlog; collection stops when it arrives.
/// The caller must pick a `marker_topic` that the session's *own stored
/// subscription* covers (at QoS ≥ 1, so the marker cannot overtake queued
/// QoS 1/2 messages), otherwise this times out. The marker itself is not
/// in the result.
///
/// Wait for the session's previous connection to be closed first
/// (`Client <id> disconnected.` / `closed its connection.` in the log):
/// taking over a live connection races with acks still in flight.
///
/// Limitation (rumqttc 0.25): a QoS 2 message whose PUBREC was already sent
/// by the previous connection comes back as a bare PUBREL, which rumqttc
/// rejects (`Unsolicited`), and this panics.
///
/// # Panics
/// If the broker has no stored session for `client_id`, or the marker does
/// not arrive within `timeout`.
pub(crate) async fn drain_session(
    broker: &Broker,
    client_id: &str,
    marker_topic: &str,
    timeout: Duration,
) -> Vec<Publish> {
    drain_session_with_dups(broker, client_id, marker_topic, timeout)
        .await
        .0
}

/// [`drain_session`], also returning how many of the messages arrived with
/// `dup == true` (they had been sent to the session before, unacked).
pub(crate) async fn drain_session_with_dups(
    broker: &Broker,
    client_id: &str,
    marker_topic: &str,
    timeout: Duration,
) -> (Vec<Publish>, usize) {
    let deadline = Instant::now() + timeout;
    let mut options = mqtt_options(broker, client_id);
    options.set_clean_session(false);
    let mut session = TestClient::connect_with(broker, options, timeout).await;
    if !session.session_present() {
        session.fail(
            Stop::Failed("CONNACK has session_present = false".into()),
            &format!(
                "a stored session for {client_id:?} (was it created with clean_session = false?)"
            ),
            timeout,
        );
    }

    let marker = unique("drain-marker");
    let remaining = deadline.saturating_duration_since(Instant::now());
    publish_many_within(
        broker,
        marker_topic,
        QoS::AtLeastOnce,
        [marker.clone().into_bytes()],
        remaining,
    )
    .await;

    let mut received = Vec::new();
    let mut marker_seen = false;
    // Incoming QoS 2 needs PUBREL -> PUBCOMP to finish before we leave, or
    // the session keeps them half-done.
    let mut qos2 = 0;
    let mut pubcomps = 0;
    while !marker_seen || pubcomps < qos2 {
        match session.next_event(deadline).await {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if p.topic == marker_topic && p.payload.as_ref() == marker.as_bytes() {
                    marker_seen = true;
                } else {
                    if p.qos == QoS::ExactlyOnce {
                        qos2 += 1;
                    }
                    received.push(p);
                }
            }
            Ok(Event::Outgoing(Outgoing::PubComp(_))) => pubcomps += 1,
            Ok(_) => {}
            Err(stop) => {
                let what = format!(
                    "marker {marker:?} on {marker_topic:?} (received {} messages, marker seen: {marker_seen}, \
                     QoS 2 completed {pubcomps}/{qos2}); does the session's subscription cover the marker topic?",
                    received.len()
                );
                session.fail(stop, &what, timeout);
            }
        }
    }
    let remaining = deadline.saturating_duration_since(Instant::now());
    session.disconnect(remaining).await;
    let dups = received.iter().filter(|p| p.dup).count();
    (received, dups)
}

/// A clean-session subscriber (automatic acks) that buffers what it receives.
pub(crate) struct Collector {
    client: TestClient,
}

/// Subscribes a fresh clean-session client to `filter` and returns once the
/// SUBACK has arrived, so anything published afterwards will be collected.
///
/// # Panics
/// If the connection or subscription fails or takes longer than [`DEFAULT_TIMEOUT`].
pub(crate) async fn subscribe_collect(broker: &Broker, filter: &str, qos: QoS) -> Collector {
    let mut client = TestClient::connect(broker, &unique("collector"), true, false).await;
    client.subscribe(filter, qos, DEFAULT_TIMEOUT).await;
    Collector { client }
}

impl Collector {
    /// The next `n` messages (in arrival order); extra ones stay buffered for
    /// the next call.
    ///
    /// # Panics
    /// If fewer than `n` arrive within `timeout`; the message says how many did.
    pub(crate) async fn wait_for(&mut self, n: usize, timeout: Duration) -> Vec<Publish> {
        self.client.next_publishes(n, timeout).await
    }

    /// Everything arriving within `duration`; never panics on the deadline.
    pub(crate) async fn collect_for(&mut self, duration: Duration) -> Vec<Publish> {
        self.client.publishes_within(duration).await
    }

    /// The collector's client id.
    pub(crate) fn client_id(&self) -> &str {
        self.client.id()
    }

    /// Disconnects cleanly (see [`TestClient::disconnect`]).
    pub(crate) async fn disconnect(self, timeout: Duration) {
        self.client.disconnect(timeout).await;
    }
}
