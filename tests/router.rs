//! The topic router (`tower-mqtt-layers`, feature `router`) against a real broker: a
//! private mosquitto per test.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::consumer::{config, spawn, Ev};
use support::{publish_many, unique, with_timeout, Broker, BrokerOptions, QoS};
use tower::service_fn;
use tower_mqtt::{BoxError, Consumer, Disposition, Message, QoS as Q, Status};
use tower_mqtt_layers::router::{Params, Router};

/// Routes get their captures; a message no route matches is failed by the default
/// fallback as `Permanent` (acknowledged as rejected, not redelivered).
#[tokio::test]
async fn routes_see_their_captures_and_the_fallback_rejects_the_rest() {
    with_timeout(Duration::from_secs(60), async {
        let broker = Broker::start(BrokerOptions::default());
        let (id, base) = (unique("router"), unique("r"));
        let seen: Arc<Mutex<Vec<(String, String, Option<String>)>>> = Arc::default();
        let (s1, s2) = (seen.clone(), seen.clone());
        let router = Router::new()
            .route(
                &format!("{base}/{{device}}/telemetry"),
                service_fn(move |m: Message| {
                    let p = Params::of(&m).expect("params").clone();
                    s1.lock().unwrap().push((
                        "telemetry".into(),
                        p.get("device").unwrap().into(),
                        None,
                    ));
                    async { Ok::<_, BoxError>(()) }
                }),
            )
            .unwrap()
            .route(
                &format!("{base}/+/status/#"),
                service_fn(move |m: Message| {
                    let p = Params::of(&m).expect("params").clone();
                    let rest = p.rest().map(str::to_owned);
                    s2.lock()
                        .unwrap()
                        .push(("status".into(), p.index(0).unwrap().into(), rest));
                    async { Ok::<_, BoxError>(()) }
                }),
            )
            .unwrap();
        let mut consumer = Consumer::builder(config(&broker, &id));
        for filter in router.filters() {
            consumer = consumer.topic(filter, Q::AtLeastOnce);
        }
        // Subscribed, but no route takes it.
        let other = format!("{base}-other/#");
        let running = spawn(consumer.topic(&other, Q::AtLeastOnce), router);
        running.events.wait_subscribed(1, 3).await;
        for (topic, payload) in [
            (format!("{base}/pump-7/telemetry"), "21.5"),
            (format!("{base}/pump-8/status/power/main"), "on"),
            (format!("{base}-other/x"), "?"),
        ] {
            publish_many(
                &broker,
                &topic,
                QoS::AtLeastOnce,
                [payload.as_bytes().to_vec()],
            )
            .await;
        }
        running
            .events
            .wait_count(3, Duration::from_secs(20), |e| matches!(e, Ev::Ack { .. }))
            .await;
        let events = running.events.all();
        running.stop().await.expect("a clean shutdown");

        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            [
                ("telemetry".into(), "pump-7".into(), None),
                ("status".into(), "pump-8".into(), Some("power/main".into())),
            ]
        );
        let fallback: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                Ev::Ack {
                    topic,
                    status,
                    disposition,
                    ..
                } if topic.starts_with(&format!("{base}-other")) => Some((*status, *disposition)),
                _ => None,
            })
            .collect();
        assert_eq!(
            fallback,
            [(Status::Failure, Disposition::Reject)],
            "{events:#?}"
        );
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, Ev::Start { dup: true, .. })),
            "{events:#?}"
        );
    })
    .await;
}
