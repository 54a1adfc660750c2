//! The OpenTelemetry layer without a broker: messages from `tower_mqtt::testing`.
#![cfg(feature = "otel")]

use opentelemetry::trace::Status;
use opentelemetry::Value;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tower::{service_fn, ServiceExt};
use tower_layer::Layer;
use tower_mqtt::testing::test_message;
use tower_mqtt::{AckPolicy, BoxError, Message, OnFailure};
use tower_mqtt_layers::otel::OtelLayer;
use tower_service::Service;

fn providers() -> (InMemorySpanExporter, SdkTracerProvider, SdkMeterProvider) {
    let spans = InMemorySpanExporter::default();
    let tracer_provider = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    (spans, tracer_provider, SdkMeterProvider::default())
}

fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

/// `ack_policy` on a clone of a layer (its shared state no longer unique) must keep the
/// tracer given to `with_providers`, not fall back to the global one.
#[tokio::test]
async fn ack_policy_on_a_cloned_layer_keeps_the_tracer() {
    let (spans, tracer_provider, meter_provider) = providers();
    let layer = OtelLayer::with_providers(&tracer_provider, &meter_provider);
    let clone = layer.clone().ack_policy(AckPolicy {
        on_failure: OnFailure::Reject,
        ..AckPolicy::default()
    });

    let svc = clone.layer(service_fn(|_: Message| async { Err::<(), _>("boom") }));
    let result: Result<(), BoxError> = svc.oneshot(test_message("a/b", "x")).await;
    assert!(result.is_err());

    let finished = spans.get_finished_spans().unwrap();
    assert_eq!(finished.len(), 1, "the span reaches the given provider");
    assert_eq!(finished[0].name, "process a/b");
    assert_eq!(
        attr(&finished[0], "messaging.mqtt.disposition"),
        Some(&Value::from("reject")),
        "the clone's policy decides the disposition"
    );
    drop(layer);
}

/// A call dropped before it finishes (a timeout above the layer, shutdown) still ends
/// its span, marked cancelled.
#[tokio::test]
async fn a_dropped_call_ends_its_span_as_cancelled() {
    let (spans, tracer_provider, meter_provider) = providers();
    let mut svc = OtelLayer::with_providers(&tracer_provider, &meter_provider).layer(service_fn(
        |_: Message| std::future::pending::<Result<(), BoxError>>(),
    ));
    let call = svc.ready().await.unwrap().call(test_message("a/b", "x"));
    assert!(spans.get_finished_spans().unwrap().is_empty());
    drop(call);

    let finished = spans.get_finished_spans().unwrap();
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0].status, Status::error("cancelled"));
    assert_eq!(
        attr(&finished[0], "error.type"),
        Some(&Value::from("cancelled"))
    );
}

/// The layer, the service and the response future are `Debug`, the future even when
/// the inner one is not (as with `async` blocks).
#[tokio::test]
async fn layer_service_and_future_are_debug() {
    let (_spans, tracer_provider, meter_provider) = providers();
    let layer = OtelLayer::with_providers(&tracer_provider, &meter_provider);
    assert!(format!("{layer:?}").starts_with("OtelLayer"));
    let mut svc = layer.layer(tower::util::BoxCloneService::new(service_fn(
        |_: Message| async { Ok::<(), BoxError>(()) },
    )));
    assert!(format!("{svc:?}").starts_with("Otel"));
    let call = svc.call(test_message("a/b", "x"));
    assert!(format!("{call:?}").starts_with("ResponseFuture"));
    call.await.unwrap();
}
