//! The cluster tier: consumers in one shared group on a real 3-node clustered broker
//! that the tests start themselves (`tests/support/cluster.rs`), with nodes killed
//! (SIGKILL, by PID) and restarted mid-stream.
//!
//! Ignored by a plain `cargo test`: run `scripts/test-cluster`, which installs rmqttd
//! when it is missing and runs `cargo test --test cluster -- --ignored`. Each test
//! prints one figures line (messages, faults, lost, duplicates) and leaves it in
//! `$CARGO_TARGET_TMPDIR/cluster-<scenario>.txt`, where the script prints it from;
//! docs/scale-out.md has the figures measured.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::cluster::{publish_to, Cluster, Conn, ConnLog};
use support::consumer::payloads;
use support::{unique, with_timeout};
use tokio::sync::watch;
use tokio::time::Instant;
use tower::service_fn;
use tower_mqtt::{BoxError, Config, Consumer, Endpoint, Message, ProtoVer, QoS, RunError};

/// How often each payload was processed, by which member.
#[derive(Clone, Default)]
struct Tally(Arc<Mutex<HashMap<Vec<u8>, Vec<usize>>>>);

impl Tally {
    fn record(&self, member: usize, payload: &[u8]) {
        self.0
            .lock()
            .unwrap()
            .entry(payload.to_vec())
            .or_default()
            .push(member);
    }

    /// How many of `sent` were processed at least once.
    fn processed(&self, sent: &[Vec<u8>]) -> usize {
        let seen = self.0.lock().unwrap();
        sent.iter().filter(|p| seen.contains_key(*p)).count()
    }

    /// Extra deliveries of `sent` (a payload processed k times adds k - 1).
    fn duplicates(&self, sent: &[Vec<u8>]) -> usize {
        let seen = self.0.lock().unwrap();
        sent.iter()
            .filter_map(|p| seen.get(p))
            .map(|by| by.len() - 1)
            .sum()
    }

    /// How many of `sent` member `member` processed.
    fn by_member(&self, sent: &[Vec<u8>], member: usize) -> usize {
        let seen = self.0.lock().unwrap();
        sent.iter()
            .filter_map(|p| seen.get(p))
            .filter(|by| by.contains(&member))
            .count()
    }

    /// Wait until `want` of `sent` were processed, or `timeout`; returns how many were.
    async fn wait_processed(&self, sent: &[Vec<u8>], want: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.processed(sent);
            if n >= want || Instant::now() >= deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// One member of the group: a consumer process of its own (own client id), with its
/// failover list.
struct Member {
    log: ConnLog,
    shutdown: tower_mqtt::CancellationToken,
    handle: tokio::task::JoinHandle<Result<(), RunError>>,
}

impl Member {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("the consumer stops within 30 s")
            .expect("no panic")
            .expect("a clean stop");
    }
}

/// How a member is set up.
struct Setup<'a> {
    index: usize,
    id: &'a str,
    hosts: Vec<Endpoint>,
    filter: &'a str,
    group: Option<&'a str>,
    qos: QoS,
    proto: ProtoVer,
    tally: &'a Tally,
    /// While it reads `false`, the service holds each call after the first
    /// `hold_after` (messages stay unacknowledged).
    gate: Option<(watch::Receiver<bool>, usize)>,
}

fn start(setup: Setup<'_>) -> Member {
    let config = Config::new("unused")
        .hosts(setup.hosts)
        .client_id(setup.id)
        .proto_ver(setup.proto)
        .keepalive(Duration::from_secs(5))
        // Shorter than rmqttd's 10 s session hand-over lock: a CONNECT during a node's
        // failure gives up early, which is what makes rmqttd report an empty session
        // as present (see docs/scale-out.md).
        .connect_timeout(Duration::from_secs(5));
    let mut builder = Consumer::builder(config)
        .topic(setup.filter, setup.qos)
        .reconnect_backoff(Duration::from_millis(200), Duration::from_secs(2));
    if let Some(group) = setup.group {
        builder = builder.shared_group(group);
    }
    let log = ConnLog::default();
    let consumer = builder
        .on_event(log.hook())
        .build()
        .expect("valid configuration");
    let (tally, member) = (setup.tally.clone(), setup.index);
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = setup.gate;
    let service = service_fn(move |m: Message| {
        let (tally, payload) = (tally.clone(), m.payload().clone());
        let held = gate.as_ref().and_then(|(rx, after)| {
            (calls.fetch_add(1, Ordering::Relaxed) >= *after).then(|| rx.clone())
        });
        async move {
            if let Some(mut rx) = held {
                let _ = rx.wait_for(|open| *open).await;
            }
            tally.record(member, &payload);
            Ok::<_, BoxError>(())
        }
    });
    let shutdown = tower_mqtt::CancellationToken::new();
    let handle = tokio::spawn(consumer.run(service, shutdown.clone()));
    Member {
        log,
        shutdown,
        handle,
    }
}

/// The figures of one scenario, printed and left for `scripts/test-cluster`.
fn report(scenario: &str, messages: usize, faults: usize, lost: usize, dups: usize, note: &str) {
    let line = format!(
        "cluster {scenario}: messages={messages} faults={faults} lost={lost} duplicates={dups}{}{note}",
        if note.is_empty() { "" } else { "; " }
    );
    println!("{line}");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cluster-{scenario}.txt"));
    let _ = std::fs::write(path, format!("{line}\n"));
}

/// Publish probes on `at` until every one of `members` processed one, so that the
/// cluster has spread every member's subscription (rmqttd replicates subscriptions
/// through Raft, a moment after SUBACK). Returns the probes.
async fn warm_up(at: &Endpoint, topic: &str, tally: &Tally, members: usize) -> Vec<Vec<u8>> {
    let mut probes = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = (0..members)
            .filter(|&m| tally.by_member(&probes, m) > 0)
            .count();
        if seen == members {
            return probes;
        }
        assert!(
            Instant::now() < deadline,
            "warm-up: {seen} of {members} members got a probe"
        );
        let probe = format!("probe-{}", probes.len()).into_bytes();
        publish_to(
            at,
            topic,
            QoS::AtLeastOnce,
            vec![probe.clone()],
            Duration::from_secs(30),
        )
        .await;
        probes.push(probe);
        tally
            .wait_processed(&probes, probes.len(), Duration::from_secs(2))
            .await;
    }
}

/// Members of one shared group on a cluster, with publishers on node 2.
struct Group<'a> {
    cluster: &'a Cluster,
    topic: &'a str,
    group: &'a str,
    qos: QoS,
    proto: ProtoVer,
    tally: &'a Tally,
}

impl Group<'_> {
    /// Start member `i` as `ids[i]` with the failover list `lists[i]` (node numbers),
    /// wait until each subscribed and each got a probe published on node 2.
    async fn start(&self, ids: &[String], lists: &[[usize; 2]]) -> Vec<Member> {
        let members: Vec<Member> = ids
            .iter()
            .zip(lists)
            .enumerate()
            .map(|(index, (id, list))| {
                start(Setup {
                    index,
                    id,
                    hosts: self.cluster.endpoints(list),
                    filter: self.topic,
                    group: Some(self.group),
                    qos: self.qos,
                    proto: self.proto,
                    tally: self.tally,
                    gate: None,
                })
            })
            .collect();
        for m in &members {
            m.log
                .wait_count(1, Duration::from_secs(30), |c| *c == Conn::Subscribed)
                .await;
        }
        warm_up(&self.cluster.endpoint(2), self.topic, self.tally, ids.len()).await;
        members
    }
}

/// Three members in one shared group, two on node 0 and one on node 1 (each lists
/// the other node second), publishers on node 2: every message processed once.
async fn happy_path(scenario: &str, proto: ProtoVer, qos: QoS, n: usize) {
    let cluster = Cluster::rmqtt().await;
    let (topic, group, tally) = (unique("t"), unique("g"), Tally::default());
    let ids: Vec<String> = (0..3).map(|i| unique(&format!("m{i}"))).collect();
    // m0, m2 on node 0 (then node 1); m1 on node 1 (then node 0).
    let lists = [[0, 1], [1, 0], [0, 1]];
    let group = Group {
        cluster: &cluster,
        topic: &topic,
        group: &group,
        qos,
        proto,
        tally: &tally,
    };
    let members = group.start(&ids, &lists).await;

    let sent = payloads("m", n);
    publish_to(
        &cluster.endpoint(2),
        &topic,
        qos,
        sent.clone(),
        Duration::from_secs(120),
    )
    .await;
    let processed = tally
        .wait_processed(&sent, n, Duration::from_secs(60))
        .await;
    for m in members {
        m.stop().await;
    }
    let (lost, dups) = (n - processed, tally.duplicates(&sent));
    let split: Vec<usize> = (0..3).map(|m| tally.by_member(&sent, m)).collect();
    report(
        scenario,
        n,
        0,
        lost,
        dups,
        &format!("split by member {split:?}"),
    );
    assert_eq!((lost, dups), (0, 0), "every message processed exactly once");
    assert!(
        split[1] > 0 && split[0] + split[2] > 0,
        "members on both nodes took part: {split:?}"
    );
}

#[tokio::test]
#[ignore = "cluster tier: run scripts/test-cluster"]
async fn rmqtt_shared_group_across_nodes_processes_each_message_once() {
    with_timeout(Duration::from_secs(300), async {
        happy_path(
            "rmqtt-shared-group-qos1-v4",
            ProtoVer::V4,
            QoS::AtLeastOnce,
            3000,
        )
        .await;
    })
    .await;
}

#[tokio::test]
#[ignore = "cluster tier: run scripts/test-cluster"]
async fn rmqtt_qos2_and_mqtt5_across_nodes_process_each_message_once() {
    with_timeout(Duration::from_secs(300), async {
        happy_path(
            "rmqtt-shared-group-qos2-v5",
            ProtoVer::V5,
            QoS::ExactlyOnce,
            1000,
        )
        .await;
    })
    .await;
}

/// The first `Up` of `log` at an endpoint other than `from`, once it subscribed
/// there: (its endpoint, session_present).
fn failed_over(log: &ConnLog, from: &str) -> Option<(String, bool)> {
    let all = log.all();
    let at = all
        .iter()
        .position(|(_, c)| matches!(c, Conn::Up { endpoint, .. } if endpoint != from))?;
    let Conn::Up {
        endpoint,
        session_present,
    } = &all[at].1
    else {
        unreachable!()
    };
    all[at..]
        .iter()
        .any(|(_, c)| *c == Conn::Subscribed)
        .then(|| (endpoint.clone(), *session_present))
}

async fn wait_failed_over(log: &ConnLog, from: &str, timeout: Duration) -> (String, bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = failed_over(log, from) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no failover from {from} within {timeout:?}: {:#?}",
            log.all()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
#[ignore = "cluster tier: run scripts/test-cluster"]
async fn rmqtt_killed_node_consumer_fails_over_resubscribes_and_loses_nothing_published_after() {
    with_timeout(Duration::from_secs(400), async {
        let mut cluster = Cluster::rmqtt().await;
        let (topic, group, tally) = (unique("t"), unique("g"), Tally::default());
        let ids = [unique("m0"), unique("m1")];
        // m0 on node 0 (then node 1), m1 on node 1 (then node 0); publishers on node 2.
        let members = Group {
            cluster: &cluster,
            topic: &topic,
            group: &group,
            qos: QoS::AtLeastOnce,
            proto: ProtoVer::V4,
            tally: &tally,
        }
        .start(&ids, &[[0, 1], [1, 0]])
        .await;

        // Phase 1: a stream from node 2; node 0 is killed once m0 has processed a
        // sixth of it.
        let (n1, n2) = (3000, 1000);
        let before = payloads("before", n1);
        let at = cluster.endpoint(2);
        let publish = publish_to(
            &at,
            &topic,
            QoS::AtLeastOnce,
            before.clone(),
            Duration::from_secs(180),
        );
        let kill = async {
            let deadline = Instant::now() + Duration::from_secs(60);
            while tally.by_member(&before, 0) < n1 / 6 {
                assert!(Instant::now() < deadline, "m0 never got a sixth of phase 1");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let pid = cluster.pid(0);
            cluster.kill(0);
            pid
        };
        let (_, killed_pid) = tokio::join!(publish, kill);
        let node0 = cluster.endpoint(0).to_string();
        let (now_at, session_present) =
            wait_failed_over(&members[0].log, &node0, Duration::from_secs(90)).await;
        assert_eq!(cluster.node_of(&now_at), Some(1), "m0 moved to node 1");

        // Phase 2: published after m0 resubscribed on node 1: nothing may be lost, and
        // m0 must take its share (a consumer that trusted session_present would not).
        let after = payloads("after", n2);
        publish_to(
            &at,
            &topic,
            QoS::AtLeastOnce,
            after.clone(),
            Duration::from_secs(120),
        )
        .await;
        let processed_after = tally
            .wait_processed(&after, n2, Duration::from_secs(60))
            .await;
        let m0_after = tally.by_member(&after, 0);
        for m in members {
            m.stop().await;
        }
        let processed_before = tally.processed(&before);
        let lost_before = n1 - processed_before;
        let dups = tally.duplicates(&before) + tally.duplicates(&after);
        report(
            "rmqtt-kill-node-failover",
            n1 + n2,
            1,
            lost_before + (n2 - processed_after),
            dups,
            &format!(
                "node 0 (pid {killed_pid:?}) killed after m0 processed {}; m0 failed over to node 1 \
                 with session_present={session_present}; lost before m0 reconnected: \
                 {lost_before} of {n1} (broker limit: the dead node's queue and in-flight \
                 messages); lost after: {}; m0 took {m0_after} of {n2} after",
                n1 / 6,
                n2 - processed_after
            ),
        );
        assert_eq!(processed_after, n2, "nothing published after failover lost");
        assert!(m0_after > 0, "m0 resubscribed on node 1 and takes its share");
    })
    .await;
}

#[tokio::test]
#[ignore = "cluster tier: run scripts/test-cluster"]
async fn rmqtt_restarted_node_restores_the_session_and_loses_nothing_published_after() {
    with_timeout(Duration::from_secs(400), async {
        let mut cluster = Cluster::rmqtt().await;
        let (topic, tally) = (unique("t"), Tally::default());
        let id = unique("m0");
        // Only node 0: the consumer waits for the same node to come back.
        let (open, gate) = watch::channel(true);
        let held_after = 200;
        let member = start(Setup {
            index: 0,
            id: &id,
            hosts: cluster.endpoints(&[0]),
            filter: &topic,
            group: None,
            qos: QoS::AtLeastOnce,
            proto: ProtoVer::V4,
            tally: &tally,
            gate: Some((gate, held_after)),
        });
        member
            .log
            .wait_count(1, Duration::from_secs(30), |c| *c == Conn::Subscribed)
            .await;
        warm_up(&cluster.endpoint(2), &topic, &tally, 1).await;
        open.send_replace(false); // from the 200th call on, calls hold: unacked

        let n = 2000;
        let sent = payloads("m", n);
        publish_to(
            &cluster.endpoint(2),
            &topic,
            QoS::AtLeastOnce,
            sent.clone(),
            Duration::from_secs(120),
        )
        .await;
        let before_kill = tally.processed(&sent);
        cluster.kill(0);
        member
            .log
            .wait_count(1, Duration::from_secs(30), |c| {
                matches!(c, Conn::Down { .. })
            })
            .await;
        cluster.restart(0).await;
        member
            .log
            .wait_count(2, Duration::from_secs(60), |c| matches!(c, Conn::Up { .. }))
            .await;
        let session_present = member.log.all().iter().rev().find_map(|(_, c)| match c {
            Conn::Up {
                session_present, ..
            } => Some(*session_present),
            _ => None,
        });
        open.send_replace(true); // let the held calls (now stale) and any redeliveries run
                                 // Published after the restart: the restored session (its subscription) must
                                 // receive all of it.
        let after = payloads("after", 500);
        publish_to(
            &cluster.endpoint(2),
            &topic,
            QoS::AtLeastOnce,
            after.clone(),
            Duration::from_secs(120),
        )
        .await;
        let processed_after = tally
            .wait_processed(&after, after.len(), Duration::from_secs(60))
            .await;
        // What the killed node held and brought back, if anything, has arrived by now.
        let processed = tally.processed(&sent);
        member.stop().await;
        let dups = tally.duplicates(&sent) + tally.duplicates(&after);
        report(
            "rmqtt-restart-same-node",
            n + after.len(),
            1,
            (n - processed) + (after.len() - processed_after),
            dups,
            &format!(
                "{before_kill} of {n} processed and the rest unacknowledged or queued when \
                 node 0 was killed; restarted with session storage: \
                 session_present={session_present:?}; of those {}, {} were processed later (the \
                 calls held at the kill, finishing late and never acknowledged), the broker \
                 sent none again (broker limit: sled session storage keeps the session, not \
                 its messages); published after the restart: {processed_after} of {} \
                 processed",
                n - before_kill,
                processed - before_kill,
                after.len()
            ),
        );
        assert_eq!(session_present, Some(true), "the session was restored");
        assert_eq!(
            processed_after,
            after.len(),
            "nothing published after the restart lost"
        );
    })
    .await;
}

#[tokio::test]
#[ignore = "cluster tier: run scripts/test-cluster"]
async fn nats_killed_node_persistent_session_resumes_elsewhere_and_loses_nothing() {
    with_timeout(Duration::from_secs(300), async {
        let ack_wait = Duration::from_secs(2);
        let mut cluster = Cluster::nats(ack_wait).await;
        let (topic, tally) = (unique("t"), Tally::default());
        let id = unique("m0");
        let member = start(Setup {
            index: 0,
            id: &id,
            hosts: cluster.endpoints(&[0, 1]),
            filter: &topic,
            group: None, // NATS has no shared subscriptions
            qos: QoS::AtLeastOnce,
            proto: ProtoVer::V4, // the NATS gateway speaks 3.1.1 only
            tally: &tally,
            gate: None,
        });
        member
            .log
            .wait_count(1, Duration::from_secs(30), |c| *c == Conn::Subscribed)
            .await;
        warm_up(&cluster.endpoint(2), &topic, &tally, 1).await;

        let n = 3000;
        let sent = payloads("m", n);
        let at = cluster.endpoint(2);
        let publish = publish_to(
            &at,
            &topic,
            QoS::AtLeastOnce,
            sent.clone(),
            Duration::from_secs(180),
        );
        let kill = async {
            let deadline = Instant::now() + Duration::from_secs(60);
            while tally.processed(&sent) < n / 4 {
                assert!(Instant::now() < deadline, "a quarter never processed");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let processed = tally.processed(&sent);
            cluster.kill(0);
            processed
        };
        let (_, at_kill) = tokio::join!(publish, kill);
        let node0 = cluster.endpoint(0).to_string();
        let (now_at, session_present) =
            wait_failed_over(&member.log, &node0, Duration::from_secs(90)).await;
        let processed = tally
            .wait_processed(&sent, n, Duration::from_secs(120))
            .await;
        member.stop().await;
        let dups = tally.duplicates(&sent);
        report(
            "nats-kill-node-failover",
            n,
            1,
            n - processed,
            dups,
            &format!(
                "node 0 killed after {at_kill} processed; resumed at node {:?} with \
                 session_present={session_present}; ack_wait {ack_wait:?}",
                cluster.node_of(&now_at)
            ),
        );
        assert!(
            session_present,
            "the persistent session resumed on another node"
        );
        assert_eq!(processed, n, "nothing lost");
    })
    .await;
}
