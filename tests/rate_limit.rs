//! The shared rate limit (`tower-mqtt-layers`, feature `rate-limit`) against a real
//! broker: a private mosquitto per test.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::consumer::{builder, config, payloads, spawn};
use support::{publish_many, unique, with_timeout, Broker, BrokerOptions, QoS};
use tower::ServiceBuilder;
use tower_mqtt::{BoxError, Message, QoS as Q};
use tower_mqtt_layers::ServiceBuilderExt;

/// Two connections in a shared group split the messages; the limit of 100 a second
/// holds for both together: the measured rate stays at or below it (a loose upper
/// bound: two separate budgets would give about 200), and does not fall far below.
#[tokio::test]
async fn the_limit_holds_over_two_connections() {
    with_timeout(Duration::from_secs(60), async {
        let broker = Broker::start(BrokerOptions::default());
        let (id, topic) = (unique("rate"), unique("t"));
        let (limit, n) = (100.0, 300);
        let calls: Arc<Mutex<Vec<(Instant, usize)>>> = Arc::default();
        let c = calls.clone();
        let service = ServiceBuilder::new()
            .shared_rate_limit(100, Duration::from_secs(1))
            .expect("a valid rate")
            .service_fn(move |m: Message| {
                c.lock().unwrap().push((Instant::now(), m.producer_index()));
                async { Ok::<_, BoxError>(()) }
            });
        let running = spawn(
            builder(config(&broker, &id), &topic, Q::AtLeastOnce)
                .shared_group("limited")
                .concurrency(2),
            service,
        );
        running.events.wait_subscribed(2, 1).await;
        publish_many(&broker, &topic, QoS::AtLeastOnce, payloads("r", n)).await;
        running
            .events
            .wait_successes(n, Duration::from_secs(30))
            .await;
        running.stop().await.expect("a clean shutdown");

        let calls = calls.lock().unwrap();
        assert_eq!(calls.len(), n);
        let elapsed = calls[n - 1].0 - calls[0].0;
        let rate = (n - 1) as f64 / elapsed.as_secs_f64();
        println!("measured {rate:.1} msg/s over {elapsed:?} (limit {limit})");
        assert!(rate <= limit * 1.1, "measured {rate:.1}/s, limit {limit}/s");
        assert!(rate >= limit * 0.5, "measured {rate:.1}/s, limit {limit}/s");
        for index in 0..2 {
            let mine = calls.iter().filter(|(_, i)| *i == index).count();
            assert!(mine >= n / 5, "connection {index} took {mine} of {n}");
        }
    })
    .await;
}
