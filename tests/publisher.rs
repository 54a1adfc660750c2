//! The confirmed publisher against a real broker (a private mosquitto per test): a
//! publish resolves only once the broker has it, survives a lost connection and a
//! broker restart, waits in `poll_ready` beyond `max_inflight`, and reports a refusal.

mod support;

use std::collections::BTreeSet;
use std::future::poll_fn;
use std::time::Duration;

use futures_util::future::join_all;
use support::consumer::config;
use support::proxy::{publishes_sent, Proxy};
use support::{
    drain_session, subscribe_collect, unique, with_timeout, Broker, BrokerOptions, TestClient,
};
use tower::{Service, ServiceExt};
use tower_mqtt::{Consumer, ProtoVer, Publish, PublishError, Publisher, QoS};

const WAIT: Duration = Duration::from_secs(20);

fn rumqttc_qos(qos: QoS) -> support::QoS {
    match qos {
        QoS::AtMostOnce => support::QoS::AtMostOnce,
        QoS::AtLeastOnce => support::QoS::AtLeastOnce,
        QoS::ExactlyOnce => support::QoS::ExactlyOnce,
    }
}

/// Every publish resolves `Ok`, and the subscriber receives exactly what was published,
/// at each QoS, with MQTT 5 and 3.1.1.
#[tokio::test]
async fn confirmed_publishes_arrive_at_every_qos() {
    with_timeout(Duration::from_secs(60), async {
        let broker = Broker::start(BrokerOptions::default());
        for proto in [ProtoVer::V5, ProtoVer::V4] {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
                let topic = unique("pub");
                let mut collector = subscribe_collect(&broker, &topic, rumqttc_qos(qos)).await;
                let publisher = Publisher::builder(config(&broker, &unique("p")).proto_ver(proto))
                    .max_inflight(10)
                    .build()
                    .unwrap();
                let results = join_all((0..200).map(|i| {
                    publisher.publish(Publish::new(topic.clone(), format!("m{i}")).qos(qos))
                }))
                .await;
                assert!(
                    results.iter().all(Result::is_ok),
                    "{proto:?} {qos:?}: {results:?}"
                );
                let got: BTreeSet<String> = collector
                    .wait_for(200, WAIT)
                    .await
                    .iter()
                    .map(|p| String::from_utf8(p.payload.to_vec()).unwrap())
                    .collect();
                let sent: BTreeSet<String> = (0..200).map(|i| format!("m{i}")).collect();
                assert_eq!(got, sent, "{proto:?} {qos:?}");
            }
        }
    })
    .await;
}

/// MQTT 5 user properties and content type travel with the message, and a consumer's
/// publisher connects as `<client_id>_pub`.
#[tokio::test]
async fn mqtt5_properties_are_sent() {
    with_timeout(Duration::from_secs(30), async {
        let broker = Broker::start(BrokerOptions::default());
        let topic = unique("props");
        let id = unique("c");
        let consumer = Consumer::builder(config(&broker, &id).proto_ver(ProtoVer::V5))
            .topic(topic.clone(), QoS::AtLeastOnce)
            .build()
            .unwrap();
        let publisher = consumer.publisher().unwrap();
        assert_eq!(publisher.client_id(), format!("{id}_pub"));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let service = tower::service_fn(move |m: tower_mqtt::Message| {
            let _ = tx.send(m);
            async { Ok::<_, std::convert::Infallible>(()) }
        });
        let run = tokio::spawn(consumer.run(service, shutdown.clone()));
        // The consumer subscribes once connected.
        broker
            .wait_for_log(&format!("{id}_0 1 {topic}"), WAIT)
            .await;
        publisher
            .publish(
                Publish::new(topic.clone(), "x")
                    .user_property("x-origin", "test")
                    .content_type("text/plain"),
            )
            .await
            .unwrap();
        let message = rx.recv().await.unwrap();
        let props = message.properties().expect("MQTT 5 properties");
        assert_eq!(props.user_property("x-origin"), Some("test"));
        assert_eq!(props.content_type.as_deref(), Some("text/plain"));
        shutdown.cancel();
        run.await.unwrap().unwrap();
    })
    .await;
}

/// Beyond `max_inflight` unconfirmed publishes `poll_ready` waits, and it is ready
/// again as soon as the broker confirms them.
#[tokio::test]
async fn poll_ready_waits_while_max_inflight_publishes_are_unconfirmed() {
    with_timeout(Duration::from_secs(60), async {
        let mut broker = Broker::start(BrokerOptions::default());
        let config = config(&broker, &unique("p"));
        // The broker is down: nothing can be confirmed.
        broker.stop();
        let mut publisher = Publisher::builder(config)
            .max_inflight(3)
            .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(200))
            .build()
            .unwrap();
        let topic = unique("bp");
        let mut pending = Vec::new();
        for i in 0..3 {
            let ready = publisher.ready().await.unwrap();
            pending.push(tokio::spawn(
                ready.call(Publish::new(topic.clone(), format!("{i}"))),
            ));
        }
        // All three slots are taken: the fourth reservation cannot succeed.
        let mut other = publisher.clone();
        let first_poll = poll_fn(|cx| std::task::Poll::Ready(other.poll_ready(cx))).await;
        assert!(
            first_poll.is_pending(),
            "a fourth slot was free: {first_poll:?}"
        );
        broker.start_again();
        // Confirmed once the broker is back; then a slot is free again.
        for p in pending {
            p.await.unwrap().unwrap();
        }
        other.ready().await.unwrap();
    })
    .await;
}

/// A publish the broker's ACL refuses fails with the MQTT 5 reason code (0x87
/// NotAuthorized); the publisher keeps working. MQTT 3.1.1 has no way to refuse a
/// publish: mosquitto acknowledges it and drops it.
#[tokio::test]
async fn a_publish_refused_by_the_broker_acl_is_a_typed_error_with_its_reason_code() {
    with_timeout(Duration::from_secs(60), async {
        let broker = Broker::start(BrokerOptions {
            dynsec_deny_publish: Some("denied/#".into()),
            ..BrokerOptions::default()
        });
        let publisher = Publisher::builder(config(&broker, &unique("p")).proto_ver(ProtoVer::V5))
            .build()
            .unwrap();
        for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let refused = publisher
                .publish(Publish::new("denied/x", "no").qos(qos))
                .await;
            match refused {
                Err(PublishError::Refused { code, name, topic }) => {
                    assert_eq!(
                        (code, name, topic.as_str()),
                        (0x87, "NotAuthorized", "denied/x")
                    );
                }
                other => panic!("{qos:?}: expected a refusal, got {other:?}"),
            }
            publisher
                .publish(Publish::new(unique("allowed"), "yes").qos(qos))
                .await
                .unwrap();
        }
        let v4 = Publisher::builder(config(&broker, &unique("p")).proto_ver(ProtoVer::V4))
            .build()
            .unwrap();
        v4.publish(Publish::new("denied/x", "no")).await.unwrap();
    })
    .await;
}

/// A topic a message cannot be published to fails before anything is sent.
#[tokio::test]
async fn an_invalid_topic_fails_without_sending() {
    with_timeout(Duration::from_secs(30), async {
        let broker = Broker::start(BrokerOptions::default());
        let publisher = Publisher::builder(config(&broker, &unique("p")))
            .build()
            .unwrap();
        for topic in ["", "a/+/b", "a/#"] {
            let err = publisher
                .publish(Publish::new(topic, "x"))
                .await
                .unwrap_err();
            assert!(
                matches!(err, PublishError::InvalidTopic { .. }),
                "{topic:?}: {err:?}"
            );
        }
    })
    .await;
}

/// Unconfirmed publishes are sent again with DUP set when the session is resumed after
/// a lost connection, and then confirmed (MQTT 5 and 3.1.1, QoS 1 and 2).
#[tokio::test]
async fn unconfirmed_publishes_are_resent_with_dup_after_a_session_resume() {
    with_timeout(Duration::from_secs(90), async {
        let broker = Broker::start(BrokerOptions::default());
        for proto in [ProtoVer::V5, ProtoVer::V4] {
            for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
                let proxy = Proxy::start(broker.port()).await;
                let topic = unique("dup");
                let mut collector = subscribe_collect(&broker, &topic, rumqttc_qos(qos)).await;
                let publisher = Publisher::builder(
                    config(&broker, &unique("p"))
                        .port(proxy.port())
                        .proto_ver(proto),
                )
                .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(100))
                .build()
                .unwrap();
                // Connected first, so the next publishes go out on this connection.
                publisher
                    .publish(Publish::new(topic.clone(), "first").qos(qos))
                    .await
                    .unwrap();
                proxy.freeze_downstream(true);
                let waiting: Vec<_> = (0..5)
                    .map(|i| {
                        let p = publisher.clone();
                        let t = topic.clone();
                        tokio::spawn(async move {
                            p.publish(Publish::new(t, format!("m{i}")).qos(qos)).await
                        })
                    })
                    .collect();
                // All five went out; the broker's answers are held.
                let first = proxy.recordings()[0].clone();
                while publishes_sent(&first).len() < 6 {
                    tokio::task::yield_now().await;
                }
                if qos == QoS::AtLeastOnce {
                    // The broker has routed them (mosquitto routes QoS 2 on PUBREL).
                    collector.wait_for(6, WAIT).await;
                }
                proxy.cut_all();
                proxy.freeze_downstream(false);
                for w in waiting {
                    w.await
                        .unwrap()
                        .unwrap_or_else(|e| panic!("{proto:?} {qos:?}: {e}"));
                }
                if qos == QoS::ExactlyOnce {
                    // Completed after the resume, exactly once each.
                    // A marker published after them arrives after them: anything
                    // between the six and the marker would be a duplicate.
                    publisher
                        .publish(Publish::new(topic.clone(), "marker").qos(qos))
                        .await
                        .unwrap();
                    let got = collector.wait_for(7, WAIT).await;
                    assert_eq!(
                        got[6].payload.as_ref(),
                        b"marker",
                        "{proto:?}: QoS 2 duplicates in {got:?}"
                    );
                }
                let recordings = proxy.recordings();
                assert!(recordings.len() >= 2, "{proto:?} {qos:?}: no reconnect");
                let unconfirmed: BTreeSet<u16> = publishes_sent(&first)[1..]
                    .iter()
                    .map(|(id, _)| *id)
                    .collect();
                let resent: BTreeSet<u16> = publishes_sent(&recordings[1])
                    .iter()
                    .filter(|(_, dup)| *dup)
                    .map(|(id, _)| *id)
                    .collect();
                match qos {
                    // QoS 1: the PUBACKs were held back, so all five go out again.
                    QoS::AtLeastOnce => assert_eq!(resent, unconfirmed, "{proto:?}"),
                    // QoS 2: those whose PUBREC was held back go out again as PUBLISH
                    // with DUP; any already released would be PUBRELs. All were held.
                    _ => assert_eq!(resent, unconfirmed, "{proto:?} QoS 2"),
                }
            }
        }
    })
    .await;
}

/// With `clean_start(true)` no session carries unconfirmed publishes over a lost
/// connection, so they fail with `ConnectionLost` instead of waiting.
#[tokio::test]
async fn with_clean_start_unconfirmed_publishes_fail_when_the_connection_is_lost() {
    with_timeout(Duration::from_secs(60), async {
        let broker = Broker::start(BrokerOptions::default());
        let proxy = Proxy::start(broker.port()).await;
        let publisher = Publisher::builder(
            config(&broker, &unique("p"))
                .port(proxy.port())
                .clean_start(true),
        )
        .build()
        .unwrap();
        let topic = unique("clean");
        publisher
            .publish(Publish::new(topic.clone(), "first"))
            .await
            .unwrap();
        proxy.freeze_downstream(true);
        let waiting = tokio::spawn({
            let p = publisher.clone();
            let t = topic.clone();
            async move { p.publish(Publish::new(t, "lost?")).await }
        });
        let first = proxy.recordings()[0].clone();
        while publishes_sent(&first).len() < 2 {
            tokio::task::yield_now().await;
        }
        proxy.cut_all();
        let result = waiting.await.unwrap();
        assert!(
            matches!(result, Err(PublishError::ConnectionLost { .. })),
            "{result:?}"
        );
        proxy.freeze_downstream(false);
        publisher
            .publish(Publish::new(topic, "after"))
            .await
            .unwrap();
    })
    .await;
}

/// A broker restart with persistence in the middle of a stream loses none of the
/// publishes the publisher reported as confirmed: a persistent subscriber session
/// holds every one of them afterwards.
#[tokio::test]
async fn a_broker_restart_mid_stream_loses_no_confirmed_publish() {
    with_timeout(Duration::from_secs(120), async {
        let mut broker = Broker::start(BrokerOptions {
            persistence: true,
            ..BrokerOptions::default()
        });
        let prefix = unique("restart");
        let subscriber = unique("sub");
        let mut sub = TestClient::connect(&broker, &subscriber, false, false).await;
        sub.subscribe(&format!("{prefix}/#"), support::QoS::AtLeastOnce, WAIT)
            .await;
        sub.disconnect(WAIT).await;

        let publisher = Publisher::builder(config(&broker, &unique("p")))
            .max_inflight(50)
            .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(200))
            .no_timeout()
            .build()
            .unwrap();
        let topic = format!("{prefix}/data");
        let n = 10_000;
        let stream = tokio::spawn({
            let publisher = publisher.clone();
            async move {
                let mut svc = publisher;
                let mut calls = Vec::new();
                for i in 0..n {
                    let ready = svc.ready().await.unwrap();
                    calls.push(tokio::spawn(
                        ready.call(Publish::new(topic.clone(), format!("{i}"))),
                    ));
                }
                let mut confirmed = BTreeSet::new();
                for (i, call) in calls.into_iter().enumerate() {
                    if call.await.unwrap().is_ok() {
                        confirmed.insert(i.to_string());
                    }
                }
                confirmed
            }
        });
        // Mid-stream: once the broker has routed some, restart it (SIGTERM saves).
        let mut sub_seen =
            subscribe_collect(&broker, &format!("{prefix}/#"), support::QoS::AtMostOnce).await;
        sub_seen.wait_for(200, WAIT).await;
        assert!(!stream.is_finished(), "the restart must come mid-stream");
        broker.stop_gracefully();
        broker.start_again();
        let confirmed = stream.await.unwrap();
        assert_eq!(confirmed.len(), n, "every publish is confirmed in the end");
        let held: BTreeSet<String> =
            drain_session(&broker, &subscriber, &format!("{prefix}/marker"), WAIT)
                .await
                .iter()
                .map(|p| String::from_utf8(p.payload.to_vec()).unwrap())
                .collect();
        let missing: Vec<_> = confirmed.difference(&held).collect();
        assert!(
            missing.is_empty(),
            "{} confirmed but not in the session: {missing:?}",
            missing.len()
        );
    })
    .await;
}

/// The broker's MQTT 5 Receive Maximum (mosquitto: `max_inflight_messages`) bounds the
/// publishes out at once, below the publisher's own `max_inflight`.
#[tokio::test]
async fn the_brokers_receive_maximum_bounds_publishes_in_flight() {
    with_timeout(Duration::from_secs(60), async {
        let broker = Broker::start(BrokerOptions {
            max_inflight_messages: Some(5),
            ..BrokerOptions::default()
        });
        let proxy = Proxy::start(broker.port()).await;
        let publisher = Publisher::builder(
            config(&broker, &unique("p"))
                .port(proxy.port())
                .proto_ver(ProtoVer::V5)
                .keepalive(Duration::from_secs(1)),
        )
        .max_inflight(100)
        .build()
        .unwrap();
        let topic = unique("rm");
        publisher
            .publish(Publish::new(topic.clone(), "first"))
            .await
            .unwrap();
        proxy.freeze_downstream(true);
        let waiting: Vec<_> = (0..20)
            .map(|i| {
                let p = publisher.clone();
                let t = topic.clone();
                tokio::spawn(async move { p.publish(Publish::new(t, format!("{i}"))).await })
            })
            .collect();
        let rec = proxy.recordings()[0].clone();
        // Five out, then a PINGREQ: the publisher's loop has been round since the fifth
        // (it takes new publishes before it pings) and sent no sixth.
        let sent_then_pinged = || {
            let up = rec.upstream.lock().unwrap().clone();
            let fifth = publishes_sent(&rec).len() >= 6;
            fifth && up.ends_with(&[0xc0, 0x00])
        };
        while !sent_then_pinged() {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            publishes_sent(&rec).len(),
            1 + 5,
            "the window is the broker's 5"
        );
        proxy.freeze_downstream(false);
        for w in waiting {
            w.await.unwrap().unwrap();
        }
    })
    .await;
}
