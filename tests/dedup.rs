//! `tower-mqtt-layers`' dedup layer against a real mosquitto and the Redis in
//! `REDIS_URL` (default `redis://127.0.0.1:6379/`): a redelivered message is
//! acknowledged without running the service twice, and two consumers of one shared
//! group that share the Redis store (in one process, and in two: this binary starts
//! itself again as the second consumer) process each message id once. Without a
//! reachable Redis the tests fail, saying what to start.
//!
//! Each test puts its keys under a prefix of its own, deletes them at the end, and
//! writes them with a ten-minute TTL, so a failed run leaves nothing for long.

mod support;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use support::consumer::{builder, config, left_in_session, spawn, Ev, EventLog};
use support::proxy::Proxy;
use support::{publish_many, unique, with_timeout, Broker, BrokerOptions, QoS, TestClient};
use tokio::sync::Notify;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_mqtt::{
    BoxError, Disposition, Message, ProtoVer, Publish, Publisher, QoS as Q, Redeliver,
};
use tower_mqtt_layers::dedup::{
    redis, DedupLayer, DedupStats, DedupStore, MemoryStore, RedisStore, DEFAULT_PROPERTY,
};
use tower_mqtt_layers::ServiceBuilderExt;

/// How long a wait for consumer events may take.
const WAIT: Duration = Duration::from_secs(60);
/// The TTL of the test's records: long enough for the test, short enough that a failed
/// run's keys soon expire.
const TTL: Duration = Duration::from_secs(600);

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

/// A connection to the test Redis, or a panic that says what to start.
async fn redis_connection() -> redis::aio::ConnectionManager {
    let url = redis_url();
    let fail = |e: &dyn std::fmt::Display| -> ! {
        panic!(
            "Redis is not answering at {url:?} ({e}): start one, e.g. `redis-server --daemonize \
             yes` (Debian: `apt-get install redis-server`) or `docker run -d -p 6379:6379 \
             redis:7`, or set REDIS_URL"
        )
    };
    let client = redis::Client::open(url.as_str()).unwrap_or_else(|e| fail(&e));
    match tokio::time::timeout(
        Duration::from_secs(10),
        redis::aio::ConnectionManager::new(client),
    )
    .await
    {
        Ok(Ok(connection)) => connection,
        Ok(Err(e)) => fail(&e),
        Err(_) => fail(&"no answer within 10 s"),
    }
}

/// The keys under `prefix` and their values.
async fn keys_under(
    connection: &mut redis::aio::ConnectionManager,
    prefix: &str,
) -> HashMap<String, String> {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(connection)
        .await
        .unwrap();
    let mut values = HashMap::new();
    for key in keys {
        let value: String = redis::cmd("GET")
            .arg(&key)
            .query_async(connection)
            .await
            .unwrap();
        values.insert(key, value);
    }
    values
}

/// Delete the keys under `prefix`.
async fn delete_under(connection: &mut redis::aio::ConnectionManager, prefix: &str) {
    let keys: Vec<String> = keys_under(connection, prefix).await.into_keys().collect();
    if !keys.is_empty() {
        redis::cmd("DEL")
            .arg(keys)
            .query_async::<()>(connection)
            .await
            .unwrap();
    }
}

/// The message id of a message (its `message-id` user property).
fn id_of(m: &Message) -> String {
    m.properties()
        .and_then(|p| p.user_property(DEFAULT_PROPERTY))
        .expect("every test message has an id")
        .to_owned()
}

/// Publish each message `(id, payload)` over MQTT 5 (QoS 1), with the id as its
/// `message-id` user property, and wait for the broker to confirm them all.
async fn publish_with_ids(broker: &Broker, topic: &str, messages: &[(String, String)]) {
    let publisher = Publisher::builder(config(broker, &unique("pub")).proto_ver(ProtoVer::V5))
        .build()
        .expect("a valid publisher");
    let mut sent = tokio::task::JoinSet::new();
    for (id, payload) in messages {
        let publish = Publish::new(topic, payload.clone())
            .qos(Q::AtLeastOnce)
            .user_property(DEFAULT_PROPERTY, id.clone());
        let publisher = publisher.clone();
        sent.spawn(async move { publisher.publish(publish).await });
    }
    while let Some(done) = sent.join_next().await {
        done.unwrap().expect("the broker confirms the publish");
    }
}

/// A layer above dedup that "loses" the acknowledgement of each message id once: after
/// the inner stack succeeded, it fails the first delivery with a `Redeliver` marker,
/// as if the PUBACK had been lost, so the broker sends the message again.
#[derive(Clone)]
struct LoseFirstAck<S> {
    inner: S,
    lost: Arc<Mutex<HashSet<String>>>,
}

impl<S> Service<Message> for LoseFirstAck<S>
where
    S: Service<Message, Response = (), Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, message: Message) -> Self::Future {
        let id = id_of(&message);
        let lost = self.lost.clone();
        let call = self.inner.call(message);
        Box::pin(async move {
            call.await?;
            if lost.lock().unwrap().insert(id) {
                return Err(Redeliver::new("acknowledgement lost (simulated)").into());
            }
            Ok(())
        })
    }
}

/// Service calls per message id.
type Calls = Arc<Mutex<HashMap<String, usize>>>;

/// The dedup stack: `dedup` over a service that counts its calls per id.
fn counting(
    dedup: DedupLayer,
    calls: &Calls,
    work: Duration,
) -> impl Service<Message, Response = (), Error = BoxError, Future = impl Send> + Clone {
    let calls = calls.clone();
    ServiceBuilder::new()
        .dedup(dedup)
        .service_fn(move |m: Message| {
            *calls.lock().unwrap().entry(id_of(&m)).or_default() += 1;
            async move {
                if !work.is_zero() {
                    tokio::time::sleep(work).await;
                }
                Ok::<(), BoxError>(())
            }
        })
}

fn decided(e: &Ev, disposition: Disposition) -> bool {
    matches!(e, Ev::Ack { disposition: d, .. } if *d == disposition)
}

/// (1) The service succeeds, then the acknowledgement is lost (a layer above dedup
/// fails after the inner success, once per id): the broker sends each message again
/// (DUP set), and the copy is acknowledged without the service running a second time.
/// The session holds nothing afterwards.
async fn a_redelivered_message_is_acked_without_running_the_service_twice(
    store: impl DedupStore,
) -> DedupStats {
    let broker = Broker::start(BrokerOptions::default());
    let (id, topic) = (unique("dedup"), unique("t"));
    let calls = Calls::default();
    let dedup = DedupLayer::new(store).ttl(TTL).unwrap();
    let stats = dedup.stats();
    let svc = LoseFirstAck {
        inner: counting(dedup, &calls, Duration::ZERO),
        lost: Arc::default(),
    };
    let config = config(&broker, &id).proto_ver(ProtoVer::V5);
    let running = spawn(
        builder(config, &topic, Q::AtLeastOnce).redeliver_after(Duration::from_millis(100)),
        svc,
    );
    running.events.wait_subscribed(1, 1).await;
    let ids: Vec<String> = (0..3).map(|i| unique(&format!("m{i}"))).collect();
    let messages: Vec<(String, String)> = ids.iter().map(|i| (i.clone(), i.clone())).collect();
    publish_with_ids(&broker, &topic, &messages).await;

    let acked = |e: &Ev| decided(e, Disposition::Ack);
    running.events.wait_count(3, WAIT, acked).await;
    let events = running.events.all();
    let clean = broker.count_in_log(&format!("Client {id}_0 disconnected"));
    running.stop().await.expect("a clean shutdown");

    let calls = calls.lock().unwrap().clone();
    let expected: HashMap<String, usize> = ids.iter().map(|i| (i.clone(), 1)).collect();
    assert_eq!(
        calls, expected,
        "the service ran once per message: {events:#?}"
    );
    let count = |d| events.iter().filter(|e| decided(e, d)).count();
    assert_eq!(count(Disposition::Redeliver), 3, "{events:#?}");
    assert_eq!(count(Disposition::Ack), 3, "{events:#?}");
    let redelivered = events
        .iter()
        .filter(|e| matches!(e, Ev::Start { dup: true, .. }))
        .count();
    assert_eq!(redelivered, 3, "each came back once, with DUP: {events:#?}");
    assert_eq!((stats.processed(), stats.duplicates()), (3, 3), "{stats:?}");
    let left = left_in_session(&broker, &id, &topic, clean + 1).await;
    assert!(left.is_empty(), "left in the session: {left:?}");
    stats
}

#[tokio::test]
async fn a_redelivered_message_is_acked_without_running_the_service_twice_redis() {
    with_timeout(Duration::from_secs(90), async {
        let mut connection = redis_connection().await;
        let prefix = format!("{}:", unique("tower-mqtt-test-dedup"));
        let store = RedisStore::new(connection.clone()).prefix(prefix.clone());
        a_redelivered_message_is_acked_without_running_the_service_twice(store).await;
        let keys = keys_under(&mut connection, &prefix).await;
        assert_eq!(keys.len(), 3, "{keys:?}");
        assert!(keys.values().all(|v| v == "done"), "{keys:?}");
        let key = keys.keys().next().unwrap();
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!(
            ttl > 0 && ttl <= TTL.as_millis() as i64,
            "the record expires: {ttl} ms"
        );
        delete_under(&mut connection, &prefix).await;
    })
    .await;
}

#[tokio::test]
async fn a_redelivered_message_is_acked_without_running_the_service_twice_memory() {
    with_timeout(Duration::from_secs(90), async {
        let store = MemoryStore::new(1_000).unwrap();
        a_redelivered_message_is_acked_without_running_the_service_twice(store.clone()).await;
        assert_eq!(store.len(), 3);
    })
    .await;
}

/// What each session of `sessions` (client id, and how many clean disconnects of it
/// the broker must have logged first) still holds, all in one shared group on `topic`:
/// resumes them all at once, then publishes markers until each has received one (a
/// shared group hands each marker to one member), and returns what came before.
async fn left_in_shared_sessions(
    broker: &Broker,
    sessions: &[(String, usize)],
    topic: &str,
) -> Vec<rumqttc::Publish> {
    let mut clients = Vec::new();
    for (client_id, disconnects) in sessions {
        broker
            .wait_for_log_count(
                &format!("Client {client_id} disconnected"),
                *disconnects,
                WAIT,
            )
            .await;
        let client = TestClient::connect(broker, client_id, false, false).await;
        assert!(client.session_present(), "a stored session for {client_id}");
        clients.push(client);
    }
    let marker = unique("marker");
    let mut left = Vec::new();
    let mut done = vec![false; clients.len()];
    for _ in 0..50 {
        if done.iter().all(|d| *d) {
            break;
        }
        publish_many(
            broker,
            topic,
            QoS::AtLeastOnce,
            [marker.clone().into_bytes()],
        )
        .await;
        for (client, done) in clients.iter_mut().zip(&mut done) {
            if *done {
                continue;
            }
            for p in client.publishes_within(Duration::from_millis(200)).await {
                if p.payload.as_ref() == marker.as_bytes() {
                    *done = true;
                } else {
                    left.push(p);
                }
            }
        }
    }
    assert!(done.iter().all(|d| *d), "every session got a marker");
    for client in clients {
        client.disconnect(Duration::from_secs(10)).await;
    }
    left
}

/// What the shared-store tests check at the end.
struct End<'a> {
    connection: &'a mut redis::aio::ConnectionManager,
    prefix: &'a str,
    broker: &'a Broker,
    /// Client id and the clean disconnects to wait for.
    sessions: &'a [(String, usize)],
    topic: &'a str,
}

impl End<'_> {
    /// Every one of `ids` ids was processed exactly once (`calls`: service calls per
    /// id), Redis holds one record per id (then deleted), and the sessions hold
    /// nothing.
    async fn assert_each_id_once_and_nothing_left(
        self,
        calls: &HashMap<String, usize>,
        ids: usize,
        report: &str,
    ) {
        assert_eq!(calls.len(), ids, "every id processed: {report}");
        let twice: Vec<_> = calls.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            twice.is_empty(),
            "processed more than once: {twice:?}; {report}"
        );
        let keys = keys_under(self.connection, self.prefix).await;
        assert_eq!(keys.len(), ids, "one record per id");
        assert!(keys.values().all(|v| v == "done"), "no lease left");
        delete_under(self.connection, self.prefix).await;
        let left = left_in_shared_sessions(self.broker, self.sessions, self.topic).await;
        assert!(
            left.is_empty(),
            "{} left in the sessions: {left:?}",
            left.len()
        );
    }
}

/// In a task: publish `ids` messages with the ids `id-0`, `id-1`, ... twice each, one
/// after the other (payloads `<i>/first` and `<i>/retry`, as a publisher's retry would
/// send), each confirmed by the broker before the next.
fn publish_each_twice(broker: &Broker, topic: &str, ids: usize) -> tokio::task::JoinHandle<()> {
    let publisher = Publisher::builder(config(broker, &unique("pub")).proto_ver(ProtoVer::V5))
        .build()
        .expect("a valid publisher");
    let topic = topic.to_owned();
    tokio::spawn(async move {
        for i in 0..ids {
            for copy in ["first", "retry"] {
                let publish = Publish::new(topic.clone(), format!("{i}/{copy}"))
                    .qos(Q::AtLeastOnce)
                    .user_property(DEFAULT_PROPERTY, format!("id-{i}"));
                publisher
                    .publish(publish)
                    .await
                    .expect("the broker confirms");
            }
        }
    })
}

/// Wait until `n` messages were acknowledged over both consumers' event logs.
async fn wait_acks(a: &EventLog, b: &EventLog, n: usize) {
    let acked = |e: &Ev| decided(e, Disposition::Ack);
    loop {
        let (in_a, in_b) = (a.count(acked), b.count(acked));
        if in_a + in_b >= n {
            return;
        }
        tokio::select! {
            () = a.wait_count(in_a + 1, WAIT, acked) => {}
            () = b.wait_count(in_b + 1, WAIT, acked) => {}
        }
    }
}

/// `inner`, calling `record(payload)` for each message it answers `Ok`.
fn on_success<S, F>(
    inner: S,
    record: F,
) -> impl Service<Message, Response = (), Error = BoxError, Future = impl Send> + Clone
where
    S: Service<Message, Response = (), Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
    F: Fn(Vec<u8>) + Clone + Send + 'static,
{
    tower::service_fn(move |m: Message| {
        let payload = m.payload().to_vec();
        let call = inner.clone().oneshot(m);
        let record = record.clone();
        async move {
            call.await?;
            record(payload);
            Ok::<(), BoxError>(())
        }
    })
}

/// Payloads whose call through the whole stack succeeded, with a wake-up for each.
#[derive(Clone, Default)]
struct Answered {
    payloads: Arc<Mutex<HashSet<Vec<u8>>>>,
    changed: Arc<Notify>,
}

impl Answered {
    /// Wrap `inner` so that its successes are recorded here.
    fn wrap<S>(
        &self,
        inner: S,
    ) -> impl Service<Message, Response = (), Error = BoxError, Future = impl Send> + Clone
    where
        S: Service<Message, Response = (), Error = BoxError> + Clone + Send + 'static,
        S::Future: Send + 'static,
    {
        let answered = self.clone();
        on_success(inner, move |payload| {
            answered.payloads.lock().unwrap().insert(payload);
            answered.changed.notify_waiters();
        })
    }

    /// Wait until `n` distinct payloads were answered `Ok`.
    async fn wait_for(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let changed = self.changed.notified();
            let answered = self.payloads.lock().unwrap().len();
            if answered >= n {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                panic!("{answered} of {n} messages answered within {WAIT:?}");
            }
        }
    }
}

/// (2) Two consumers (separate client ids, proxies and Redis connections, as two
/// processes would have) in one shared group, sharing the Redis store: 2,000 messages
/// with unique `message-id`s, each published twice (as a publisher's retry would), and
/// both consumers' connections cut twice while they work, so the broker redelivers
/// what was in flight. Every id is processed exactly once, every copy is acknowledged,
/// and both sessions hold nothing at the end.
#[tokio::test]
async fn two_consumers_sharing_the_redis_store_process_each_id_once() {
    with_timeout(Duration::from_secs(240), async {
        const IDS: usize = 2_000;
        let mut connection = redis_connection().await;
        let prefix = format!("{}:", unique("tower-mqtt-test-dedup"));
        let broker = Broker::start(BrokerOptions::default());
        let topic = unique("t");
        let calls = Calls::default();
        let answered = Answered::default();
        let mut consumers = Vec::new();
        for name in ["a", "b"] {
            let proxy = Proxy::start(broker.port()).await;
            let id = unique(&format!("dedup-{name}"));
            let store = RedisStore::new(redis_connection().await).prefix(prefix.clone());
            let dedup = DedupLayer::new(store).ttl(TTL).unwrap();
            let stats = dedup.stats();
            let config = config(&broker, &id)
                .port(proxy.port())
                .proto_ver(ProtoVer::V5);
            let svc = answered.wrap(counting(dedup, &calls, Duration::from_millis(1)));
            let running = spawn(
                builder(config, &topic, Q::AtLeastOnce)
                    .shared_group("g")
                    .redeliver_after(Duration::from_millis(100)),
                svc,
            );
            running.events.wait_subscribed(1, 1).await;
            consumers.push((id, proxy, running, stats));
        }

        let publishing = publish_each_twice(&broker, &topic, IDS);
        for cut_at in [2 * IDS / 3, 4 * IDS / 3] {
            answered.wait_for(cut_at).await;
            for (_, proxy, _, _) in &consumers {
                proxy.cut_all();
            }
        }
        publishing.await.unwrap();
        answered.wait_for(2 * IDS).await;
        let (a, b) = (&consumers[0].2.events, &consumers[1].2.events);
        wait_acks(a, b, 2 * IDS).await;

        let mut sessions = Vec::new();
        let mut totals = (0, 0, 0, 0);
        let mut redelivered = 0;
        for (id, proxy, running, stats) in consumers {
            let client_id = format!("{id}_0");
            let disconnects = broker.count_in_log(&format!("Client {client_id} disconnected"));
            redelivered += running
                .events
                .count(|e| matches!(e, Ev::Start { dup: true, .. }));
            running.stop().await.expect("a clean shutdown");
            assert!(
                proxy.accepted() >= 3,
                "both cuts reconnected {client_id}: {} connections",
                proxy.accepted()
            );
            sessions.push((client_id, disconnects + 1));
            totals.0 += stats.processed();
            totals.1 += stats.duplicates();
            totals.2 += stats.in_progress();
            totals.3 += stats.store_failures();
        }
        let (processed, duplicates, in_progress, store_failures) = totals;
        let report = format!(
            "processed {processed}, duplicates {duplicates}, sent back while in progress \
             {in_progress}, store failures {store_failures}, deliveries with DUP {redelivered}"
        );
        eprintln!("dedup over two consumers: {report}");

        assert_eq!(processed, IDS as u64, "{report}");
        assert!(
            duplicates >= IDS as u64,
            "every retry copy skipped: {report}"
        );
        assert_eq!(store_failures, 0, "{report}");
        let calls = calls.lock().unwrap().clone();
        let end = End {
            connection: &mut connection,
            prefix: &prefix,
            broker: &broker,
            sessions: &sessions,
            topic: &topic,
        };
        end.assert_each_id_once_and_nothing_left(&calls, IDS, &report)
            .await;
    })
    .await;
}

/// The Redis store's protocol on the real server: a lease is taken once (`SET NX PX`),
/// held against other claims, released only by its own token, replaced by the record
/// after success; the record expires with the TTL.
#[tokio::test]
async fn the_redis_store_leases_records_and_releases_by_token() {
    with_timeout(Duration::from_secs(30), async {
        use tower_mqtt_layers::dedup::Claim;
        let mut connection = redis_connection().await;
        let prefix = format!("{}:", unique("tower-mqtt-test-dedup"));
        let store = RedisStore::new(connection.clone()).prefix(prefix.clone());
        let lease = Duration::from_secs(30);
        assert_eq!(
            store.claim("x", "t1", lease).await.unwrap(),
            Claim::Acquired
        );
        assert_eq!(store.claim("x", "t2", lease).await.unwrap(), Claim::Held);
        let pttl: i64 = redis::cmd("PTTL")
            .arg(store.key("x"))
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!(pttl > 0 && pttl <= 30_000, "the lease expires: {pttl} ms");
        store.release("x", "t2").await.unwrap();
        assert_eq!(
            store.claim("x", "t3", lease).await.unwrap(),
            Claim::Held,
            "not t2's"
        );
        store.release("x", "t1").await.unwrap();
        assert_eq!(
            store.claim("x", "t4", lease).await.unwrap(),
            Claim::Acquired
        );
        store.record("x", Duration::from_millis(200)).await.unwrap();
        store.release("x", "t4").await.unwrap();
        assert_eq!(
            store.claim("x", "t5", lease).await.unwrap(),
            Claim::Done,
            "a record stays"
        );
        // The record expires with its TTL: Redis has no event for that, so poll it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let exists: bool = redis::cmd("EXISTS")
                .arg(store.key("x"))
                .query_async(&mut connection)
                .await
                .unwrap();
            if !exists {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the record did not expire"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            store.claim("x", "t6", lease).await.unwrap(),
            Claim::Acquired
        );
        delete_under(&mut connection, &prefix).await;
    })
    .await;
}

/// With Redis unreachable a claim is a typed `StoreError` within the connection
/// manager's timeouts, not a hang (the layer then sends the message back; see the
/// layer's unit tests).
#[tokio::test]
async fn an_unreachable_redis_is_a_store_error() {
    with_timeout(Duration::from_secs(30), async {
        use tower_mqtt_layers::dedup::StoreError;
        // A port nothing listens on: bound, then released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
        let config = redis::aio::ConnectionManagerConfig::new().set_number_of_retries(1);
        let connection =
            redis::aio::ConnectionManager::new_lazy_with_config(client, config).unwrap();
        let store = RedisStore::new(connection);
        let error: StoreError = store
            .claim("x", "t", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(error.operation(), "claim");
        assert!(
            error.to_string().starts_with("dedup store: claim failed"),
            "{error}"
        );
    })
    .await;
}

/// Append `line` to the file behind `out`.
fn append(out: &Mutex<std::fs::File>, line: &[u8]) {
    use std::io::Write;
    let mut out = out.lock().unwrap();
    out.write_all(line).unwrap();
    out.write_all(b"\n").unwrap();
}

/// The lines of `path` (none when it does not exist yet).
fn lines_of(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The second process of `two_processes_sharing_the_redis_store_process_each_id_once`:
/// runs only when that test starts this binary with `DEDUP_CHILD_PORT` set. The same
/// stack as the parent's consumer; appends the id of each service call to
/// `DEDUP_CHILD_CALLS` and each payload answered `Ok` to `DEDUP_CHILD_ANSWERED`; runs
/// until SIGTERM, then drains.
#[tokio::test]
#[ignore = "the second consumer process of the dedup test; started by it"]
async fn dedup_child_consumer() {
    let Ok(port) = std::env::var("DEDUP_CHILD_PORT") else {
        return;
    };
    let env = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} not set"));
    let open = |name: &str| {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(env(name))
            .unwrap();
        Arc::new(Mutex::new(file))
    };
    let (calls, answered) = (open("DEDUP_CHILD_CALLS"), open("DEDUP_CHILD_ANSWERED"));
    let store = RedisStore::new(redis_connection().await).prefix(env("DEDUP_CHILD_PREFIX"));
    let dedup = DedupLayer::new(store).ttl(TTL).unwrap();
    let inner = ServiceBuilder::new()
        .dedup(dedup)
        .service_fn(move |m: Message| {
            append(&calls, id_of(&m).as_bytes());
            async {
                tokio::time::sleep(Duration::from_millis(1)).await;
                Ok::<(), BoxError>(())
            }
        });
    let service = on_success(inner, move |payload| append(&answered, &payload));
    let config = tower_mqtt::Config::new("127.0.0.1")
        .port(port.parse().unwrap())
        .client_id(env("DEDUP_CHILD_ID"))
        .proto_ver(ProtoVer::V5)
        .keepalive(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(5));
    let consumer = builder(config, &env("DEDUP_CHILD_TOPIC"), Q::AtLeastOnce)
        .shared_group("g")
        .redeliver_after(Duration::from_millis(100))
        .build()
        .unwrap();
    consumer
        .run(service, tower_mqtt::signal::shutdown_on_signals())
        .await
        .unwrap();
}

/// Kills the child process if the test ends without terminating it.
struct Child(Option<std::process::Child>);

impl Child {
    /// SIGTERM and wait: the consumer drains and DISCONNECTs.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.0.take().expect("running");
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        child.wait().unwrap()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// (2) as two processes: this test's consumer and a child process (this binary again)
/// in one shared group, sharing the Redis store; 2,000 ids each published twice, both
/// connections cut twice. Every id is processed exactly once over both processes, and
/// both sessions hold nothing at the end. The child's progress is read from its files,
/// polled.
#[tokio::test]
async fn two_processes_sharing_the_redis_store_process_each_id_once() {
    with_timeout(Duration::from_secs(240), async {
        const IDS: usize = 2_000;
        let mut connection = redis_connection().await;
        let prefix = format!("{}:", unique("tower-mqtt-test-dedup"));
        let broker = Broker::start(BrokerOptions::default());
        let topic = unique("t");
        let dir = tempfile::tempdir().unwrap();
        let (child_calls, child_answered) = (dir.path().join("calls"), dir.path().join("answered"));

        let proxy = Proxy::start(broker.port()).await;
        let id = unique("dedup-parent");
        let calls = Calls::default();
        let answered = Answered::default();
        let store = RedisStore::new(connection.clone()).prefix(prefix.clone());
        let dedup = DedupLayer::new(store).ttl(TTL).unwrap();
        let stats = dedup.stats();
        let consumer_config = config(&broker, &id)
            .port(proxy.port())
            .proto_ver(ProtoVer::V5);
        let running = spawn(
            builder(consumer_config, &topic, Q::AtLeastOnce)
                .shared_group("g")
                .redeliver_after(Duration::from_millis(100)),
            answered.wrap(counting(dedup, &calls, Duration::from_millis(1))),
        );
        running.events.wait_subscribed(1, 1).await;

        let child_proxy = Proxy::start(broker.port()).await;
        let child_id = unique("dedup-child");
        let mut child = Child(Some(
            std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--ignored",
                    "--exact",
                    "dedup_child_consumer",
                    "--nocapture",
                ])
                .env("DEDUP_CHILD_PORT", child_proxy.port().to_string())
                .env("DEDUP_CHILD_ID", &child_id)
                .env("DEDUP_CHILD_TOPIC", &topic)
                .env("DEDUP_CHILD_PREFIX", &prefix)
                .env("DEDUP_CHILD_CALLS", &child_calls)
                .env("DEDUP_CHILD_ANSWERED", &child_answered)
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("start the child consumer"),
        ));
        broker
            .wait_for_log(&format!("{child_id}_0 1 $share/g/{topic}"), WAIT)
            .await;

        let publishing = publish_each_twice(&broker, &topic, IDS);
        // Answered over both processes (the child's from its file, polled).
        let answered_in_all = || {
            let mut all: HashSet<Vec<u8>> = answered.payloads.lock().unwrap().clone();
            all.extend(
                lines_of(&child_answered)
                    .into_iter()
                    .map(String::into_bytes),
            );
            all.len()
        };
        let wait_answered = |n: usize| async move {
            let deadline = tokio::time::Instant::now() + WAIT;
            while answered_in_all() < n {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{} of {n} messages answered within {WAIT:?}",
                    answered_in_all()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        for cut_at in [2 * IDS / 3, 4 * IDS / 3] {
            wait_answered(cut_at).await;
            proxy.cut_all();
            child_proxy.cut_all();
        }
        publishing.await.unwrap();
        wait_answered(2 * IDS).await;

        // Each session's clean disconnects so far; the shutdowns add one each.
        let sessions: Vec<(String, usize)> = [format!("{id}_0"), format!("{child_id}_0")]
            .into_iter()
            .map(|client_id| {
                let n = broker.count_in_log(&format!("Client {client_id} disconnected"));
                (client_id, n + 1)
            })
            .collect();
        assert!(
            child.terminate().success(),
            "the child consumer drained and stopped"
        );
        running.stop().await.expect("a clean shutdown");
        assert!(
            proxy.accepted() >= 3 && child_proxy.accepted() >= 3,
            "both cuts reconnected"
        );

        let mut all_calls = calls.lock().unwrap().clone();
        for id in lines_of(&child_calls) {
            *all_calls.entry(id).or_default() += 1;
        }
        let in_child = lines_of(&child_calls).len();
        eprintln!(
            "dedup over two processes: {} calls here, {in_child} in the child; here: {stats:?}",
            all_calls.values().sum::<usize>() - in_child
        );
        assert!(in_child > 0, "both processes worked");
        let end = End {
            connection: &mut connection,
            prefix: &prefix,
            broker: &broker,
            sessions: &sessions,
            topic: &topic,
        };
        end.assert_each_id_once_and_nothing_left(&all_calls, IDS, "two processes")
            .await;
    })
    .await;
}
