//! Without any panic-catching layer, a panic in the service fails one message and the
//! connection carries on: the consumer catches panics in `call` and in the future.

mod support;

use std::time::Duration;

use support::consumer::{builder, config, left_in_session, spawn, Ev};
use support::{publish_many, unique, with_timeout, Broker, BrokerOptions, QoS};
use tower_mqtt::{BoxError, Disposition, Message, OnFailure, QoS as Q, Status};

/// A service that panics in `call` for payload `call`, in its future for `future`, and
/// accepts everything else.
#[derive(Clone)]
struct Fragile;

impl tower::Service<Message> for Fragile {
    type Response = ();
    type Error = BoxError;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), BoxError>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, message: Message) -> Self::Future {
        assert!(message.payload().as_ref() != b"call", "panic in call");
        Box::pin(async move {
            tokio::task::yield_now().await;
            assert!(
                message.payload().as_ref() != b"future",
                "panic in the future"
            );
            Ok(())
        })
    }
}

#[tokio::test]
async fn a_panic_in_call_or_in_the_future_fails_one_message_and_the_connection_lives_on() {
    with_timeout(Duration::from_secs(60), async {
        let broker = Broker::start(BrokerOptions::default());
        let (id, topic) = (unique("panics"), unique("t"));
        let running = spawn(
            builder(config(&broker, &id), &topic, Q::AtLeastOnce).on_failure(OnFailure::Reject),
            Fragile,
        );
        running.events.wait_subscribed(1, 1).await;
        let payloads = ["a", "call", "b", "future", "c"].map(|p| p.as_bytes().to_vec());
        publish_many(&broker, &topic, QoS::AtLeastOnce, payloads).await;
        running
            .events
            .wait_count(5, Duration::from_secs(20), |e| matches!(e, Ev::Ack { .. }))
            .await;
        let events = running.events.all();
        running
            .stop()
            .await
            .expect("run ends cleanly, not with RunError::Panicked");
        let failed = events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Ev::Ack {
                        status: Status::Failure,
                        disposition: Disposition::Reject,
                        ..
                    }
                )
            })
            .count();
        let succeeded = events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Ev::Ack {
                        status: Status::Success,
                        ..
                    }
                )
            })
            .count();
        assert_eq!((failed, succeeded), (2, 3), "{events:#?}");
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, Ev::Down(..) | Ev::Terminate(..))),
            "one connection throughout: {events:#?}"
        );
        assert!(left_in_session(&broker, &id, &topic, 1).await.is_empty());
    })
    .await;
}
