//! QoS 2 across a reconnect: a PUBREL the broker resends after a session resume is
//! completed, not treated as a protocol error (rumqttc #664 drops the connection).

mod support;

use std::time::Duration;

use support::consumer::*;
use support::proxy::Proxy;
use support::*;
use tower::service_fn;
use tower_mqtt::{BoxError, Message, QoS as Q};

#[tokio::test]
async fn a_pubrel_resent_after_session_resume_is_completed() {
    with_timeout(Duration::from_secs(60), async {
        let broker = Broker::start(BrokerOptions {
            extra_config: "log_type debug\n".into(),
            ..BrokerOptions::default()
        });
        let proxy = std::sync::Arc::new(Proxy::start(broker.port()).await);
        let id = unique("rel");
        let client = format!("{id}_0");
        let topic = unique("t");
        let processed = Processed::default();
        let (p, px) = (processed.clone(), proxy.clone());
        // Processing "first" freezes broker-to-client traffic: our PUBREC reaches the
        // broker, but its PUBREL never reaches us.
        let svc = service_fn(move |m: Message| {
            p.record(m.payload());
            if m.payload().as_ref() == b"first" {
                px.freeze_downstream(true);
            }
            async { Ok::<_, BoxError>(()) }
        });
        let running = spawn(
            builder(
                config(&broker, &id).port(proxy.port()),
                &topic,
                Q::ExactlyOnce,
            ),
            svc,
        );
        running.events.wait_subscribed(1, 1).await;
        publish_many(&broker, &topic, rqos(Q::ExactlyOnce), [b"first".to_vec()]).await;
        broker
            .wait_for_log(
                &format!("Received PUBREC from {client}"),
                Duration::from_secs(10),
            )
            .await;

        proxy.cut_all();
        proxy.freeze_downstream(false);
        // The session resumes and the broker sends its PUBREL again.
        running
            .events
            .wait(Duration::from_secs(20), |e| {
                matches!(
                    e,
                    Ev::Up {
                        session_present: true,
                        ..
                    }
                )
            })
            .await;
        broker
            .wait_for_log(
                &format!("Received PUBCOMP from {client}"),
                Duration::from_secs(10),
            )
            .await;

        // The connection is healthy afterwards: a new message goes through.
        publish_many(&broker, &topic, rqos(Q::ExactlyOnce), [b"second".to_vec()]).await;
        running
            .events
            .wait_successes(2, Duration::from_secs(10))
            .await;
        assert_eq!(
            running.events.count(|e| matches!(e, Ev::Down(..))),
            1,
            "only the cut, no protocol error after the resume"
        );
        assert!(
            processed.duplicates().is_empty(),
            "\"first\" was processed once"
        );
        assert!(processed.contains(b"second"));
        running.stop().await.unwrap();
    })
    .await;
}
