use std::sync::{Arc, Mutex};

use serde::Deserialize;
use tower::{ServiceBuilder, ServiceExt};
use tower_mqtt::disposition::marker;
use tower_mqtt::testing::{disposition, test_message, TestMessage};
use tower_mqtt::{AckPolicy, BoxError, Disposition, Message, Reject, RejectReason};
use tower_service::Service;

use super::*;
use crate::ServiceBuilderExt;

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct Reading {
    sensor: String,
    celsius: f64,
}

/// A service that records what it was given.
#[derive(Debug, Clone, Default)]
struct Recording(Arc<Mutex<Vec<(String, Reading)>>>);

impl Recording {
    fn seen(&self) -> Vec<(String, Reading)> {
        self.0.lock().unwrap().clone()
    }
}

impl Service<Decoded<Reading>> for Recording {
    type Response = ();
    type Error = BoxError;
    type Future = std::future::Ready<Result<(), BoxError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, Decoded { message, value }: Decoded<Reading>) -> Self::Future {
        self.0
            .lock()
            .unwrap()
            .push((message.topic().to_owned(), value));
        std::future::ready(Ok(()))
    }
}

#[tokio::test]
async fn the_inner_service_gets_the_message_and_the_value() {
    let seen = Recording::default();
    let svc = ServiceBuilder::new()
        .decode_json::<Reading>()
        .service(seen.clone());
    let message = test_message("sensors/7", r#"{"sensor":"s7","celsius":21.5}"#)
        .with_user_property("unit", "C");
    svc.oneshot(message).await.unwrap();
    assert_eq!(
        seen.seen(),
        [(
            "sensors/7".to_owned(),
            Reading {
                sensor: "s7".into(),
                celsius: 21.5
            }
        )]
    );
}

#[tokio::test]
async fn the_whole_message_reaches_the_service() {
    let svc = ServiceBuilder::new()
        .decode_json::<u32>()
        .service_fn(|d: Decoded<u32>| async move {
            let (message, value) = d.into_parts();
            let unit = message.properties().and_then(|p| p.user_property("unit"));
            Ok::<_, BoxError>((value, unit.map(str::to_owned), message.payload().clone()))
        });
    let message = test_message("t", "42").with_user_property("unit", "C");
    let (value, unit, payload) = svc.oneshot(message).await.unwrap();
    assert_eq!(
        (value, unit.as_deref(), &payload[..]),
        (42, Some("C"), &b"42"[..])
    );
}

/// Invalid JSON never reaches the service: a `Reject(PayloadFormatInvalid)` whose
/// `DecodeError` names the topic and serde's message.
#[tokio::test]
async fn invalid_json_is_rejected_with_payload_format_invalid() {
    let seen = Recording::default();
    let svc = ServiceBuilder::new()
        .decode_json::<Reading>()
        .service(seen.clone());
    let error = svc
        .oneshot(test_message("sensors/7", "not json"))
        .await
        .unwrap_err();
    assert!(seen.seen().is_empty());
    let reject = error.downcast_ref::<Reject>().expect("a Reject marker");
    assert_eq!(reject.reason(), RejectReason::PayloadFormatInvalid);
    let decode = std::error::Error::source(reject)
        .and_then(|e| e.downcast_ref::<DecodeError>())
        .expect("a DecodeError inside");
    assert_eq!(decode.topic(), "sensors/7");
    assert_eq!(decode.format(), "JSON");
    let serde = std::error::Error::source(decode).expect("serde's error");
    assert!(serde.is::<serde_json::Error>());
    assert_eq!(
        error.to_string(),
        "rejected with payload format invalid (0x99): cannot decode the payload on topic \
         \"sensors/7\" as JSON: expected ident at line 1 column 2"
    );
}

#[tokio::test]
async fn a_payload_of_the_wrong_shape_names_what_serde_missed() {
    let svc = ServiceBuilder::new()
        .decode_json::<Reading>()
        .service(Recording::default());
    let error = svc
        .oneshot(test_message("t", r#"{"sensor":"s7"}"#))
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .ends_with("as JSON: missing field `celsius` at line 1 column 15"),
        "{error}"
    );
}

/// Whatever the consumer's rule, a decode failure is acknowledged as failed with 0x99,
/// never redelivered.
#[tokio::test]
async fn the_consumer_rejects_a_decode_failure_whatever_its_rule() {
    let svc = ServiceBuilder::new()
        .decode_json::<Reading>()
        .service(Recording::default());
    let d = disposition(svc, test_message("t", "{"), AckPolicy::default()).await;
    assert_eq!(
        d,
        Disposition::RejectWith(RejectReason::PayloadFormatInvalid)
    );
}

/// A retry layer above never retries a decode failure: the payload is decoded once.
#[cfg(feature = "retry")]
#[tokio::test(start_paused = true)]
async fn a_retry_layer_above_does_not_retry_a_decode_failure() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    let decodes = Arc::new(AtomicUsize::new(0));
    let d = decodes.clone();
    let decoder = move |m: &Message| {
        d.fetch_add(1, Ordering::Relaxed);
        serde_json::from_slice::<Reading>(m.payload())
    };
    let policy = crate::retry::RetryPolicy::new(5)
        .classify(|_: &Message, _: &BoxError| true)
        .backoff(Duration::from_millis(1), Duration::from_millis(1), 0.0)
        .unwrap();
    let svc = ServiceBuilder::new()
        .retry_messages(policy)
        .decode(decoder)
        .service(Recording::default());
    let error = svc.oneshot(test_message("t", "[]")).await.unwrap_err();
    assert_eq!(decodes.load(Ordering::Relaxed), 1);
    assert_eq!(
        marker(&*error),
        Some(Disposition::RejectWith(RejectReason::PayloadFormatInvalid))
    );
}

/// Any format plugs in: a closure decoder, named after its value type in errors.
#[tokio::test]
async fn a_closure_is_a_decoder() {
    let decimal = |m: &Message| {
        std::str::from_utf8(m.payload())?
            .trim()
            .parse::<f64>()
            .map_err(BoxError::from)
    };
    let svc = ServiceBuilder::new()
        .decode(decimal)
        .service_fn(|d: Decoded<f64>| async move { Ok::<_, BoxError>(d.value * 2.0) });
    assert_eq!(
        svc.clone()
            .oneshot(test_message("t", " 21.5\n"))
            .await
            .unwrap(),
        43.0
    );
    let error = svc.oneshot(test_message("t", "warm")).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "rejected with payload format invalid (0x99): cannot decode the payload on topic \
         \"t\" as f64: invalid float literal"
    );
}

#[tokio::test]
async fn errors_of_the_inner_service_pass_unchanged() {
    let svc = ServiceBuilder::new()
        .decode_json::<u8>()
        .service_fn(|_: Decoded<u8>| async { Err::<(), _>(std::io::Error::other("disk full")) });
    let error = svc.oneshot(test_message("t", "1")).await.unwrap_err();
    assert!(error.is::<std::io::Error>());
    assert_eq!(marker(&*error), None);
}

#[tokio::test]
async fn service_layer_and_future_are_debug() {
    let layer = DecodeLayer::<Json, Reading>::json();
    assert!(format!("{layer:?}").contains("Reading"), "{layer:?}");
    let mut svc = tower_layer::Layer::layer(&layer.clone(), Recording::default());
    assert!(format!("{svc:?}").starts_with("Decode"), "{svc:?}");
    let failed = svc.ready().await.unwrap().call(test_message("t", "x"));
    assert!(format!("{failed:?}").contains("error: Some"), "{failed:?}");
    failed.await.unwrap_err();
    let called = svc
        .ready()
        .await
        .unwrap()
        .call(test_message("t", r#"{"sensor":"a","celsius":1}"#));
    assert!(format!("{called:?}").contains("called"), "{called:?}");
    called.await.unwrap();
}
