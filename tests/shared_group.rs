//! Several connections in a shared subscription group.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use support::consumer::*;
use support::*;
use tower::service_fn;
use tower_mqtt::{BoxError, Message, QoS as Q};

#[tokio::test]
async fn concurrency_spreads_messages_over_a_shared_group_without_duplicates() {
    with_timeout(Duration::from_secs(60), async {
        let broker = Broker::start(BrokerOptions::default());
        let id = unique("grp");
        let topic = unique("t");
        let n = 600;
        let processed = Processed::default();
        let p = processed.clone();
        let running = spawn(
            builder(config(&broker, &id), &topic, Q::AtLeastOnce)
                .shared_group("workers")
                .concurrency(3),
            service_fn(move |m: Message| {
                p.record(m.payload());
                async { Ok::<_, BoxError>(()) }
            }),
        );
        running.events.wait_subscribed(3, 1).await;
        publish_many(&broker, &topic, rqos(Q::AtLeastOnce), payloads("g", n)).await;
        running
            .events
            .wait_successes(n, Duration::from_secs(30))
            .await;
        let events = running.events.all();
        running.stop().await.unwrap();

        assert_eq!(processed.distinct(), n);
        assert!(processed.duplicates().is_empty());
        let ups: HashSet<usize> = events
            .iter()
            .filter_map(|e| match e {
                Ev::Up { index, .. } => Some(*index),
                _ => None,
            })
            .collect();
        assert_eq!(ups, HashSet::from([0, 1, 2]));
        let mut workers = HashSet::new();
        for e in &events {
            match e {
                Ev::SubOk { topic: filter, .. } => {
                    assert_eq!(filter, &format!("$share/workers/{topic}"))
                }
                Ev::Start {
                    index,
                    client_id,
                    topic: t,
                    ..
                } => {
                    assert_eq!(t, &topic, "the $share prefix never shows in Message::topic");
                    assert_eq!(client_id, &format!("{id}_{index}"));
                    workers.insert(*index);
                }
                _ => {}
            }
        }
        assert!(
            workers.len() >= 2,
            "the broker spread the work: {workers:?}"
        );
    })
    .await;
}
