//! MQTT 5 Subscription Identifiers against a real broker (a private mosquitto per
//! test): the consumer gives each filter its own identifier, and
//! `Message::subscriptions()` names the filters a message was delivered for.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::consumer::{config, spawn, Ev};
use support::{publish_many, unique, with_timeout, Broker, BrokerOptions, QoS};
use tower::service_fn;
use tower_mqtt::{BoxError, Consumer, Message, ProtoVer, QoS as Q};

/// What the service saw: (topic, subscriptions()) per call.
type Seen = Arc<Mutex<Vec<(String, Vec<String>)>>>;

/// Subscribes to two overlapping filters (and one that does not match), publishes one
/// message that matches both, and returns every call the service got for it.
async fn overlapping(proto: ProtoVer) -> Vec<(String, Vec<String>)> {
    let broker = Broker::start(BrokerOptions::default());
    let (id, base) = (unique("subid"), unique("s"));
    let seen = Seen::default();
    let s = seen.clone();
    let consumer = Consumer::builder(config(&broker, &id).proto_ver(proto))
        .topic(format!("{base}/other"), Q::AtLeastOnce)
        .topic(format!("{base}/+"), Q::AtLeastOnce)
        .topic(format!("{base}/#"), Q::AtLeastOnce);
    let running = spawn(
        consumer,
        service_fn(move |m: Message| {
            let subs = m.subscriptions().map(str::to_owned).collect();
            s.lock().unwrap().push((m.topic().to_owned(), subs));
            async { Ok::<_, BoxError>(()) }
        }),
    );
    running.events.wait_subscribed(1, 3).await;
    let topic = format!("{base}/x");
    publish_many(&broker, &topic, QoS::AtLeastOnce, [b"1".to_vec()]).await;
    running
        .events
        .wait(Duration::from_secs(20), |e| matches!(e, Ev::Ack { .. }))
        .await;
    // A second copy, if the broker sends one, comes right behind the first: a marker
    // message published afterwards on the same connection arrives after it.
    publish_many(
        &broker,
        &format!("{base}/other"),
        QoS::AtLeastOnce,
        [b"end".to_vec()],
    )
    .await;
    running
        .events
        .wait(
            Duration::from_secs(20),
            |e| matches!(e, Ev::Ack { topic, .. } if topic.ends_with("/other")),
        )
        .await;
    running.stop().await.expect("a clean shutdown");
    let seen = seen.lock().unwrap().clone();
    seen.into_iter().filter(|(t, _)| *t == topic).collect()
}

/// mosquitto sends a message that matches two of a client's subscriptions twice, one
/// copy per subscription, each with that subscription's identifier: the service is
/// called once per copy, and each copy names its own filter.
#[tokio::test]
async fn mqtt5_one_copy_per_matching_subscription_each_naming_its_filter() {
    with_timeout(Duration::from_secs(60), async {
        let calls = overlapping(ProtoVer::V5).await;
        let mut subs: Vec<Vec<String>> = calls.iter().map(|(_, s)| s.clone()).collect();
        subs.sort();
        let base = calls[0].0.rsplit_once('/').unwrap().0.to_owned();
        assert_eq!(
            subs,
            [vec![format!("{base}/#")], vec![format!("{base}/+")]],
            "{calls:#?}"
        );
    })
    .await;
}

/// MQTT 3.1.1 has no identifiers, and mosquitto sends such a message once: the one
/// call names every subscribed filter that matches the topic.
#[tokio::test]
async fn mqtt311_one_copy_naming_every_matching_filter() {
    with_timeout(Duration::from_secs(60), async {
        let calls = overlapping(ProtoVer::V4).await;
        let base = calls[0].0.rsplit_once('/').unwrap().0.to_owned();
        let both = vec![format!("{base}/+"), format!("{base}/#")];
        assert_eq!(calls.len(), 1, "{calls:#?}");
        assert_eq!(calls[0].1, both);
    })
    .await;
}
