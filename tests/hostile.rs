//! Hostile and broken input (issue 13 §5): brokers that misbehave in ways mosquitto
//! never will, played by a scripted fake server (`support::fake_server`). Each case
//! ends in a typed [`DownReason`] or event, loses nothing (what is not processed is not
//! acknowledged), and reconnects at the pace of the backoff set in the test, never in a
//! hot loop.
//!
//! Covered elsewhere against a real mosquitto, so not repeated here:
//! * a 3.1.1 CONNACK return code 5 (and MQTT 5 0x87) → `DownReason::NotAuthorized`,
//!   retried with backoff: `tests/connection_options.rs`
//!   (`wrong_password_is_retried_with_backoff`,
//!   `reconnect_count_ends_run_with_an_error_carrying_the_last_reason`);
//! * a whole PUBLISH over `max_packet_size` → `DownReason::PacketTooLarge`, the message
//!   kept on the broker: `tests/large_message.rs`
//!   (`a_packet_over_max_packet_size_is_reported_and_kept_on_the_broker`). Here only
//!   the case a broker cannot produce: a header that announces 256 MiB and no body.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::consumer::*;
use support::fake_server::*;
use support::*;
use tokio::sync::mpsc;
use tower::service_fn;
use tower_mqtt::{BoxError, DownReason, Message, ProtoVer, QoS as Q, RunError, Status};

/// Accept a 3.1.1 connection: read CONNECT, answer CONNACK (accepted, no session), read
/// the SUBSCRIBE and grant every filter at QoS 1. Returns the filters.
async fn accept_v4(conn: &mut FakeConn) -> Vec<String> {
    conn.read_connect().await;
    conn.write(&connack_v4(0)).await;
    let subscribe = conn.read_packet().await.expect("client sent SUBSCRIBE");
    assert_eq!(subscribe.kind(), SUBSCRIBE, "{subscribe:?}");
    let filters = subscribe_filters_v4(&subscribe);
    conn.write(&suback_v4(subscribe.pkid(), &vec![1; filters.len()]))
        .await;
    filters
}

/// A service that acknowledges everything.
fn ok_service() -> impl tower::Service<
    Message,
    Response = (),
    Error = BoxError,
    Future = impl std::future::Future<Output = Result<(), BoxError>> + Send,
> + Clone
       + Send
       + 'static {
    service_fn(|_m: Message| async { Ok::<_, BoxError>(()) })
}

fn downs(events: &EventLog) -> Vec<DownReason> {
    events
        .all()
        .into_iter()
        .filter_map(|e| match e {
            Ev::Down(_, reason) => Some(reason),
            _ => None,
        })
        .collect()
}

/// The consumer dropped the connection with a `Protocol` error naming `needle`, called
/// nothing, acknowledged nothing on it (`sent`: what it wrote), then reconnected.
async fn refused_unacknowledged(
    running: Running,
    server: &FakeServer,
    sent: &[Packet],
    needle: &str,
    what: &str,
) {
    running
        .events
        .wait(Duration::from_secs(20), |e| matches!(e, Ev::Down(..)))
        .await;
    let reasons = downs(&running.events);
    assert!(
        matches!(&reasons[0], DownReason::Protocol(m) if m.contains(needle)),
        "{what}: {reasons:?}"
    );
    assert_eq!(running.events.count(|e| matches!(e, Ev::Start { .. })), 0);
    assert!(
        sent.iter()
            .all(|p| p.kind() != PUBACK && p.kind() != PUBREC),
        "{what}: the client acknowledged it: {sent:?}"
    );
    server.wait_accepted(2, Duration::from_secs(10)).await;
    running.stop().await.unwrap();
}

/// The shortest gap between consecutive `Ev::Down` events.
fn min_down_gap(events: &EventLog) -> Duration {
    let times = events.times(|e| matches!(e, Ev::Down(..)));
    times
        .windows(2)
        .map(|w| w[1] - w[0])
        .min()
        .expect("at least two Down events")
}

fn success(e: &Ev) -> bool {
    matches!(
        e,
        Ev::Ack {
            status: Status::Success,
            ..
        }
    )
}

/// 1. TCP accepted, CONNECT read, no CONNACK ever: `Timeout` after `connect_timeout`,
/// and the next attempt only after the backoff.
#[tokio::test]
async fn a_broker_that_never_answers_connack_times_out_and_is_retried_with_backoff() {
    with_timeout(Duration::from_secs(30), async {
        let server = FakeServer::start(|mut conn| async move {
            conn.read_connect().await;
            conn.hold_open().await;
        })
        .await;
        let connect_timeout = Duration::from_millis(300);
        let min = Duration::from_millis(200);
        let running = spawn(
            builder(
                server
                    .config(&unique("noconnack"))
                    .connect_timeout(connect_timeout),
                &unique("t"),
                Q::AtLeastOnce,
            )
            .reconnect_backoff(min, Duration::from_millis(400)),
            ok_service(),
        );
        running
            .events
            .wait_count(3, Duration::from_secs(20), |e| matches!(e, Ev::Down(..)))
            .await;
        let reasons = downs(&running.events);
        assert!(
            reasons.iter().all(|r| *r == DownReason::Timeout),
            "{reasons:?}"
        );
        assert_eq!(running.events.count(|e| matches!(e, Ev::Up { .. })), 0);
        // Every attempt reached the server and waited out the whole connect timeout.
        assert!(server.accepted().len() >= 3);
        // Between two failures: the backoff, then a whole connect timeout.
        let gap = min_down_gap(&running.events);
        assert!(
            gap >= connect_timeout + min,
            "failed again after {gap:?}: a hot loop"
        );
        running.stop().await.unwrap();
    })
    .await;
}

/// 2. CONNACK, then the broker closes at once: `Closed`, and each reconnect waits the
/// backoff (which restarts from its minimum after every successful CONNACK).
#[tokio::test]
async fn a_broker_that_closes_right_after_connack_is_retried_with_backoff() {
    with_timeout(Duration::from_secs(30), async {
        let server = FakeServer::start(|mut conn| async move {
            conn.read_connect().await;
            conn.write(&connack_v4(0)).await;
            // Dropped here: the connection closes.
        })
        .await;
        let min = Duration::from_millis(150);
        let running = spawn(
            builder(
                server.config(&unique("closes")),
                &unique("t"),
                Q::AtLeastOnce,
            )
            .reconnect_backoff(min, Duration::from_millis(300)),
            ok_service(),
        );
        running
            .events
            .wait_count(4, Duration::from_secs(20), |e| matches!(e, Ev::Down(..)))
            .await;
        let reasons = downs(&running.events);
        assert!(
            reasons.iter().all(|r| *r == DownReason::Closed),
            "{reasons:?}"
        );
        assert!(running.events.count(|e| matches!(e, Ev::Up { .. })) >= 4);
        let gap = min_down_gap(&running.events);
        assert!(gap >= min, "reconnected after {gap:?}: a hot loop");
        let accepted = server.accepted();
        let gap = min_gap(&accepted).unwrap();
        assert!(gap >= min, "server accepted again after {gap:?}");
        running.stop().await.unwrap();
    })
    .await;
}

/// 3a. An MQTT 5 CONNACK refusal mosquitto does not send (0x9F Connection rate
/// exceeded): a typed `Refused` naming the code, retried with backoff until
/// `max_reconnect_attempts`, then `run` ends with that reason.
#[tokio::test]
async fn an_mqtt5_connack_refusal_is_typed_and_retried_with_backoff() {
    with_timeout(Duration::from_secs(30), async {
        let server = FakeServer::start(|mut conn| async move {
            conn.read_connect().await;
            conn.write(&connack_v5(0x9F)).await;
            conn.hold_open().await;
        })
        .await;
        let min = Duration::from_millis(100);
        let running = spawn(
            builder(
                server.config(&unique("rate")).proto_ver(ProtoVer::V5),
                &unique("t"),
                Q::AtLeastOnce,
            )
            .reconnect_backoff(min, Duration::from_millis(400))
            .max_reconnect_attempts(Some(2)),
            ok_service(),
        );
        let events = running.events.clone();
        let expected = DownReason::Refused {
            code: 0x9F,
            name: "ConnectionRateExceeded".into(),
        };
        match running.join().await {
            Err(RunError::ReconnectLimit { attempts, last, .. }) => {
                assert_eq!(attempts, 3);
                assert_eq!(last, expected);
            }
            other => panic!("expected ReconnectLimit, got {other:?}"),
        }
        assert_eq!(downs(&events), vec![expected; 3]);
        assert_eq!(server.accepted().len(), 3);
        assert_eq!(events.count(|e| matches!(e, Ev::Up { .. })), 0);
        let gap = min_down_gap(&events);
        assert!(gap >= min, "retried after {gap:?}: a hot loop");
    })
    .await;
}

/// 3b. A 3.1.1 CONNACK return code outside the specification (6..=255): a protocol
/// error, not a success and not a panic.
#[tokio::test]
async fn an_mqtt311_connack_code_outside_the_spec_is_a_protocol_error() {
    with_timeout(Duration::from_secs(30), async {
        let server = FakeServer::start(|mut conn| async move {
            conn.read_connect().await;
            conn.write(&connack_v4(6)).await;
            conn.hold_open().await;
        })
        .await;
        let running = spawn(
            builder(
                server.config(&unique("code6")),
                &unique("t"),
                Q::AtLeastOnce,
            )
            .max_reconnect_attempts(Some(0)),
            ok_service(),
        );
        let events = running.events.clone();
        match running.join().await {
            Err(RunError::ReconnectLimit {
                attempts: 1, last, ..
            }) => {
                assert!(
                    matches!(&last, DownReason::Protocol(m) if m.contains('6')),
                    "{last:?}"
                );
            }
            other => panic!("expected ReconnectLimit after one attempt, got {other:?}"),
        }
        assert_eq!(events.count(|e| matches!(e, Ev::Up { .. })), 0);
    })
    .await;
}

/// 4. Garbage where the next packet should start, after a valid CONNACK and SUBACK: a
/// typed `Protocol` error, then a reconnect that consumes normally.
#[tokio::test]
async fn garbage_after_a_valid_connack_is_a_protocol_error_and_the_consumer_reconnects() {
    with_timeout(Duration::from_secs(30), async {
        let (acks_tx, mut acks) = mpsc::unbounded_channel();
        let server = FakeServer::start(move |mut conn| {
            let acks_tx = acks_tx.clone();
            async move {
                let filters = accept_v4(&mut conn).await;
                if conn.index == 0 {
                    // Packet type 0 is reserved, then noise.
                    conn.write(&[0x00, 0x04, 0xde, 0xad, 0xbe, 0xef]).await;
                } else {
                    conn.write(&publish_v4(filters[0].as_bytes(), 1, 1, false, b"ok"))
                        .await;
                    while let Some(p) = conn.read_packet().await {
                        let _ = acks_tx.send(p);
                    }
                }
                conn.hold_open().await;
            }
        })
        .await;
        let min = Duration::from_millis(100);
        let running = spawn(
            builder(
                server.config(&unique("garbage")),
                &unique("t"),
                Q::AtLeastOnce,
            )
            .reconnect_backoff(min, Duration::from_millis(200)),
            ok_service(),
        );
        running.events.wait(Duration::from_secs(20), success).await;
        let puback = acks.recv().await.expect("PUBACK on the second connection");
        assert_eq!((puback.kind(), puback.pkid()), (PUBACK, 1));
        let reasons = downs(&running.events);
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(
            matches!(&reasons[0], DownReason::Protocol(_)),
            "{reasons:?}"
        );
        assert_eq!(server.accepted().len(), 2);
        assert!(min_gap(&server.accepted()).unwrap() >= min);
        running.stop().await.unwrap();
    })
    .await;
}

/// 5. (The whole oversized PUBLISH is `tests/large_message.rs`.) A fixed header that
/// announces a 256 MiB PUBLISH is refused from the header alone: `PacketTooLarge` at
/// once, without waiting for (or buffering) the body.
#[tokio::test]
async fn a_header_announcing_a_packet_over_max_packet_size_fails_without_the_body() {
    with_timeout(Duration::from_secs(30), async {
        let server = FakeServer::start(|mut conn| async move {
            accept_v4(&mut conn).await;
            if conn.index == 0 {
                // PUBLISH QoS 1, remaining length 268,435,455 (the MQTT maximum).
                conn.write(&[0x32, 0xff, 0xff, 0xff, 0x7f]).await;
            }
            conn.hold_open().await;
        })
        .await;
        let running = spawn(
            builder(
                server.config(&unique("huge")).max_packet_size(64 * 1024),
                &unique("t"),
                Q::AtLeastOnce,
            ),
            ok_service(),
        );
        running
            .events
            .wait(Duration::from_secs(20), |e| matches!(e, Ev::Down(..)))
            .await;
        assert_eq!(
            downs(&running.events)[0],
            DownReason::PacketTooLarge {
                size: 268_435_455,
                limit: 64 * 1024
            }
        );
        assert_eq!(running.events.count(|e| matches!(e, Ev::Start { .. })), 0);
        // It reconnects.
        server.wait_accepted(2, Duration::from_secs(10)).await;
        running.stop().await.unwrap();
    })
    .await;
}

/// 6. A PUBLISH whose topic is not UTF-8, on both codecs: a typed `Protocol` error, the
/// service is not called and the message is not acknowledged (the broker keeps it).
#[tokio::test]
async fn a_publish_with_a_non_utf8_topic_is_a_protocol_error_and_not_acknowledged() {
    for proto in [ProtoVer::V4, ProtoVer::V5] {
        non_utf8_topic(proto).await;
    }
}

async fn non_utf8_topic(proto: ProtoVer) {
    with_timeout(Duration::from_secs(30), async {
        let (sent_tx, mut sent) = mpsc::unbounded_channel();
        let server = FakeServer::start(move |mut conn| {
            let sent_tx = sent_tx.clone();
            async move {
                conn.read_connect().await;
                if proto == ProtoVer::V5 {
                    conn.write(&connack_v5(0)).await;
                } else {
                    conn.write(&connack_v4(0)).await;
                }
                if conn.index > 0 {
                    return conn.hold_open().await;
                }
                let mut publish = publish_v4(b"t/\xff\xfe", 1, 1, false, b"x");
                if proto == ProtoVer::V5 {
                    // MQTT 5: an empty property list after the packet id.
                    let body_end = publish.len() - 1;
                    publish.insert(body_end, 0);
                    publish[1] += 1;
                }
                conn.write(&publish).await;
                // Everything the client sends on this connection, until it closes it.
                let _ = sent_tx.send(conn.read_until_closed().await);
            }
        })
        .await;
        let running = spawn(
            builder(
                server.config(&unique("utf8")).proto_ver(proto),
                &unique("t"),
                Q::AtLeastOnce,
            ),
            ok_service(),
        );
        let sent = sent.recv().await.expect("first connection's packets");
        refused_unacknowledged(running, &server, &sent, "UTF-8", &format!("{proto:?}")).await;
    })
    .await;
}

/// 7. A PUBREL for a packet id the consumer never saw (e.g. a PUBREC from an earlier
/// connection): it answers PUBCOMP for that id and carries on consuming.
#[tokio::test]
async fn a_pubrel_for_an_unknown_packet_id_is_answered_with_pubcomp() {
    with_timeout(Duration::from_secs(30), async {
        let (sent_tx, mut sent) = mpsc::unbounded_channel();
        let server = FakeServer::start(move |mut conn| {
            let sent_tx = sent_tx.clone();
            async move {
                let filters = accept_v4(&mut conn).await;
                conn.write(&pubrel(42)).await;
                conn.write(&publish_v4(filters[0].as_bytes(), 1, 1, false, b"after"))
                    .await;
                while let Some(p) = conn.read_packet().await {
                    let _ = sent_tx.send(p);
                }
            }
        })
        .await;
        let running = spawn(
            builder(
                server.config(&unique("pubrel")),
                &unique("t"),
                Q::AtLeastOnce,
            ),
            ok_service(),
        );
        running.events.wait(Duration::from_secs(20), success).await;
        let first = sent.recv().await.expect("PUBCOMP");
        let second = sent.recv().await.expect("PUBACK");
        assert_eq!((first.kind(), first.pkid()), (PUBCOMP, 42));
        assert_eq!((second.kind(), second.pkid()), (PUBACK, 1));
        assert!(downs(&running.events).is_empty());
        assert_eq!(server.accepted().len(), 1);
        running.stop().await.unwrap();
    })
    .await;
}

/// 8a. A SUBACK with fewer return codes than the SUBSCRIBE had filters: each filter
/// without a code is reported as a subscription error (0x80, "missing from SUBACK"),
/// the others as granted, and the connection carries on.
#[tokio::test]
async fn a_suback_with_fewer_codes_than_filters_reports_the_missing_ones_as_errors() {
    with_timeout(Duration::from_secs(30), async {
        let (first, second) = (unique("a"), unique("b"));
        let server = FakeServer::start(move |mut conn| async move {
            conn.read_connect().await;
            conn.write(&connack_v4(0)).await;
            let subscribe = conn.read_packet().await.expect("SUBSCRIBE");
            let filters = subscribe_filters_v4(&subscribe);
            assert_eq!(filters.len(), 2);
            conn.write(&suback_v4(subscribe.pkid(), &[1])).await;
            conn.write(&publish_v4(filters[0].as_bytes(), 1, 1, false, b"x"))
                .await;
            conn.hold_open().await;
        })
        .await;
        let running = spawn(
            builder(server.config(&unique("suback")), &first, Q::AtLeastOnce)
                .topic(&second, Q::AtLeastOnce),
            ok_service(),
        );
        let events = &running.events;
        events
            .wait(Duration::from_secs(20), |e| matches!(e, Ev::SubErr { .. }))
            .await;
        events.wait(Duration::from_secs(20), success).await;
        assert_eq!(
            events.count(
                |e| matches!(e, Ev::SubOk { topic, granted: Q::AtLeastOnce, .. } if *topic == first)
            ),
            1
        );
        assert_eq!(
            events.count(|e| matches!(e, Ev::SubErr { topic, code: 0x80, .. } if *topic == second)),
            1
        );
        assert!(downs(events).is_empty());
        running.stop().await.unwrap();
    })
    .await;
}

/// 8b. A SUBACK with no return code at all is malformed (3.1.1 §3.9.3): a `Protocol`
/// error, and the next connection subscribes again.
#[tokio::test]
async fn a_suback_without_codes_is_a_protocol_error_and_resubscribed() {
    with_timeout(Duration::from_secs(30), async {
        let server = FakeServer::start(|mut conn| async move {
            if conn.index == 0 {
                conn.read_connect().await;
                conn.write(&connack_v4(0)).await;
                let subscribe = conn.read_packet().await.expect("SUBSCRIBE");
                conn.write(&suback_v4(subscribe.pkid(), &[])).await;
            } else {
                accept_v4(&mut conn).await;
            }
            conn.hold_open().await;
        })
        .await;
        let running = spawn(
            builder(
                server.config(&unique("suback0")),
                &unique("t"),
                Q::AtLeastOnce,
            ),
            ok_service(),
        );
        running.events.wait_subscribed(1, 1).await;
        let reasons = downs(&running.events);
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(
            matches!(&reasons[0], DownReason::Protocol(_)),
            "{reasons:?}"
        );
        assert_eq!(server.accepted().len(), 2);
        running.stop().await.unwrap();
    })
    .await;
}

/// 9. The broker resends packet id 7 (DUP) while message 7 is still in its call: the
/// consumer takes it as a second message. Both calls run at once (each waits for the
/// other at a barrier), nothing panics, and two PUBACKs for 7 go out, in arrival order,
/// once both calls are done.
#[tokio::test]
async fn a_publish_reusing_a_packet_id_in_flight_is_called_again_and_acked_twice() {
    with_timeout(Duration::from_secs(30), async {
        let (sent_tx, mut sent) = mpsc::unbounded_channel();
        let server = FakeServer::start(move |mut conn| {
            let sent_tx = sent_tx.clone();
            async move {
                let filters = accept_v4(&mut conn).await;
                let topic = filters[0].as_bytes();
                conn.write(&publish_v4(topic, 1, 7, false, b"m")).await;
                conn.write(&publish_v4(topic, 1, 7, true, b"m")).await;
                while let Some(p) = conn.read_packet().await {
                    let _ = sent_tx.send(p);
                }
            }
        })
        .await;
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let running = spawn(
            builder(
                server.config(&unique("dupid")),
                &unique("t"),
                Q::AtLeastOnce,
            ),
            service_fn(move |_m: Message| {
                let barrier = barrier.clone();
                async move {
                    barrier.wait().await;
                    Ok::<_, BoxError>(())
                }
            }),
        );
        running
            .events
            .wait_count(2, Duration::from_secs(20), success)
            .await;
        let first = sent.recv().await.expect("first PUBACK");
        let second = sent.recv().await.expect("second PUBACK");
        assert_eq!((first.kind(), first.pkid()), (PUBACK, 7));
        assert_eq!((second.kind(), second.pkid()), (PUBACK, 7));
        let starts: Vec<(u16, bool)> = running
            .events
            .all()
            .into_iter()
            .filter_map(|e| match e {
                Ev::Start { pkid, dup, .. } => Some((pkid, dup)),
                _ => None,
            })
            .collect();
        assert_eq!(starts, vec![(7, false), (7, true)]);
        assert!(downs(&running.events).is_empty());
        running.stop().await.unwrap();
    })
    .await;
}

/// 4b. Garbage whose first byte is a reserved packet type but whose length looks
/// plausible (64 KiB, under `max_packet_size`): refused from the first byte as a
/// `Protocol` error, not waited on until the keepalive gives up.
#[tokio::test]
async fn garbage_with_a_plausible_length_is_refused_from_its_first_byte() {
    with_timeout(Duration::from_secs(30), async {
        let server = FakeServer::start(|mut conn| async move {
            accept_v4(&mut conn).await;
            if conn.index == 0 {
                // Type 0 (reserved), remaining length 65,535, then no body.
                conn.write(&[0x00, 0xff, 0xff, 0x03]).await;
            }
            conn.hold_open().await;
        })
        .await;
        let keepalive = Duration::from_secs(5);
        let running = spawn(
            builder(
                server.config(&unique("garbage64k")).keepalive(keepalive),
                &unique("t"),
                Q::AtLeastOnce,
            ),
            ok_service(),
        );
        running
            .events
            .wait(Duration::from_secs(20), |e| matches!(e, Ev::Down(..)))
            .await;
        let reasons = downs(&running.events);
        assert!(
            matches!(&reasons[0], DownReason::Protocol(_)),
            "{reasons:?}"
        );
        let down = running.events.times(|e| matches!(e, Ev::Down(..)))[0];
        let accepted = tokio::time::Instant::from_std(server.accepted()[0]);
        assert!(down - accepted < keepalive, "took {:?}", down - accepted);
        server.wait_accepted(2, Duration::from_secs(10)).await;
        running.stop().await.unwrap();
    })
    .await;
}

/// A second CONNACK on a live connection: a `Protocol` error, then a reconnect.
#[tokio::test]
async fn a_second_connack_is_a_protocol_error() {
    with_timeout(Duration::from_secs(30), async {
        let server = FakeServer::start(|mut conn| async move {
            accept_v4(&mut conn).await;
            if conn.index == 0 {
                conn.write(&connack_v4(0)).await;
            }
            conn.hold_open().await;
        })
        .await;
        let running = spawn(
            builder(
                server.config(&unique("connack2")),
                &unique("t"),
                Q::AtLeastOnce,
            ),
            ok_service(),
        );
        running
            .events
            .wait(Duration::from_secs(20), |e| matches!(e, Ev::Down(..)))
            .await;
        let reasons = downs(&running.events);
        assert!(
            matches!(&reasons[0], DownReason::Protocol(m) if m.contains("CONNACK")),
            "{reasons:?}"
        );
        server.wait_accepted(2, Duration::from_secs(10)).await;
        running.stop().await.unwrap();
    })
    .await;
}

/// 8c. A SUBACK for a packet id the consumer has no SUBSCRIBE outstanding for: a
/// `Protocol` error (before, it was dropped and the subscription was never reported
/// either way), and the next connection subscribes again.
#[tokio::test]
async fn a_suback_for_an_unknown_packet_id_is_a_protocol_error_and_resubscribed() {
    with_timeout(Duration::from_secs(30), async {
        let server = FakeServer::start(|mut conn| async move {
            if conn.index == 0 {
                conn.read_connect().await;
                conn.write(&connack_v4(0)).await;
                let subscribe = conn.read_packet().await.expect("SUBSCRIBE");
                conn.write(&suback_v4(subscribe.pkid().wrapping_add(100), &[1]))
                    .await;
            } else {
                accept_v4(&mut conn).await;
            }
            conn.hold_open().await;
        })
        .await;
        let running = spawn(
            builder(
                server.config(&unique("subackid")),
                &unique("t"),
                Q::AtLeastOnce,
            ),
            ok_service(),
        );
        running.events.wait_subscribed(1, 1).await;
        let reasons = downs(&running.events);
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(
            matches!(&reasons[0], DownReason::Protocol(m) if m.contains("SUBACK")),
            "{reasons:?}"
        );
        assert_eq!(server.accepted().len(), 2);
        running.stop().await.unwrap();
    })
    .await;
}

/// A PUBLISH with an empty topic name (3.1.1 forbids it; MQTT 5 allows it only with a
/// Topic Alias, which the consumer does not enable): a `Protocol` error, never a call
/// with topic `""`, and not acknowledged (MQTT 5 with and without a Topic Alias
/// property).
#[tokio::test]
async fn a_publish_with_an_empty_topic_is_a_protocol_error_and_not_acknowledged() {
    for (proto, alias) in [
        (ProtoVer::V4, false),
        (ProtoVer::V5, false),
        (ProtoVer::V5, true),
    ] {
        empty_topic(proto, alias).await;
    }
}

async fn empty_topic(proto: ProtoVer, alias: bool) {
    with_timeout(Duration::from_secs(30), async {
        let (sent_tx, mut sent) = mpsc::unbounded_channel();
        let server = FakeServer::start(move |mut conn| {
            let sent_tx = sent_tx.clone();
            async move {
                conn.read_connect().await;
                if proto == ProtoVer::V5 {
                    conn.write(&connack_v5(0)).await;
                } else {
                    conn.write(&connack_v4(0)).await;
                }
                if conn.index > 0 {
                    return conn.hold_open().await;
                }
                // Topic length 0, packet id 1, [properties], payload "x".
                let mut body = vec![0, 0, 0, 1];
                if proto == ProtoVer::V5 {
                    body.extend_from_slice(if alias {
                        &[3, 0x23, 0, 1][..] // Topic Alias 1
                    } else {
                        &[0][..]
                    });
                }
                body.push(b'x');
                conn.write(&packet(0x32, &body)).await;
                let _ = sent_tx.send(conn.read_until_closed().await);
            }
        })
        .await;
        let running = spawn(
            builder(
                server.config(&unique("emptytopic")).proto_ver(proto),
                &unique("t"),
                Q::AtLeastOnce,
            ),
            ok_service(),
        );
        let sent = sent.recv().await.expect("first connection's packets");
        let what = format!("{proto:?} alias {alias}");
        refused_unacknowledged(running, &server, &sent, "empty topic", &what).await;
    })
    .await;
}

/// 9b. The same at QoS 2: both calls run, two PUBRECs for 7 go out, the broker's one
/// PUBREL for 7 gets its PUBCOMP, and shutdown still completes within the drain timeout.
/// (Today it takes the whole drain timeout: the connection counts PUBRECs awaiting a
/// PUBREL, two here, and the broker has one exchange for id 7, so it sends one PUBREL.
/// Bounded, nothing lost; reported, not changed.)
#[tokio::test]
async fn a_qos2_publish_reusing_a_packet_id_in_flight_gets_two_pubrecs_and_one_pubcomp() {
    with_timeout(Duration::from_secs(30), async {
        let (sent_tx, mut sent) = mpsc::unbounded_channel();
        let server = FakeServer::start(move |mut conn| {
            let sent_tx = sent_tx.clone();
            async move {
                let filters = accept_v4(&mut conn).await;
                let topic = filters[0].as_bytes();
                conn.write(&publish_v4(topic, 2, 7, false, b"m")).await;
                conn.write(&publish_v4(topic, 2, 7, true, b"m")).await;
                let mut released = false;
                while let Some(p) = conn.read_packet().await {
                    if p.kind() == PUBREC && !released {
                        released = true;
                        conn.write(&pubrel(7)).await;
                    }
                    let _ = sent_tx.send(p);
                }
            }
        })
        .await;
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let drain = Duration::from_secs(2);
        let running = spawn(
            builder(
                server.config(&unique("dupid2")),
                &unique("t"),
                Q::ExactlyOnce,
            )
            .drain_timeout(drain),
            service_fn(move |_m: Message| {
                let barrier = barrier.clone();
                async move {
                    barrier.wait().await;
                    Ok::<_, BoxError>(())
                }
            }),
        );
        running
            .events
            .wait_count(2, Duration::from_secs(20), success)
            .await;
        let mut wire = Vec::new();
        for _ in 0..3 {
            let p = sent.recv().await.expect("client packet");
            wire.push((p.kind(), p.pkid()));
        }
        assert_eq!(wire, vec![(PUBREC, 7), (PUBREC, 7), (PUBCOMP, 7)]);
        let events = running.events.clone();
        let stopping = tokio::time::Instant::now();
        running.stop().await.unwrap();
        let took = stopping.elapsed();
        assert!(took < drain + Duration::from_secs(1), "stop took {took:?}");
        assert_eq!(events.count(|e| matches!(e, Ev::Start { pkid: 7, .. })), 2);
        assert!(downs(&events).is_empty());
    })
    .await;
}
