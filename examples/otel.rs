//! Run with: cargo run --example otel
//!
//! Consumes MQTT 5 messages through `tower_mqtt_layers::otel::OtelLayer` and exports
//! spans and metrics over OTLP/HTTP. The endpoint comes from the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (default `http://localhost:4318`); the broker from
//! `MQTT_HOST` / `MQTT_PORT` (default `127.0.0.1:1883`). With no collector running the
//! export fails with a logged error and the example still finishes.
//!
//! The example publishes a few messages itself, each carrying the W3C `traceparent` of
//! a "publish" span, so every `process sensors/+/temp` span joins its publisher's trace.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::{TraceContextExt, Tracer, TracerProvider};
use opentelemetry::Context;
use opentelemetry_otlp::{MetricExporter, SpanExporter, WithExportConfig};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use rumqttc::v5::{AsyncClient, Event, Incoming, MqttOptions};
use tower::{service_fn, ServiceBuilder};
use tower_mqtt::{BoxError, CancellationToken, Config, Consumer, Message, ProtoVer, QoS};
use tower_mqtt_layers::otel::{trace_context_properties, EventMetrics, OtelLayer};

const MESSAGES: usize = 20;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .unwrap_or_else(|_| "http://localhost:4318".into());
    let host = std::env::var("MQTT_HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port: u16 = std::env::var("MQTT_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(1883);

    let resource = Resource::builder()
        .with_service_name("tower-mqtt-otel-example")
        .build();
    let tracer_provider = SdkTracerProvider::builder()
        .with_batch_exporter(
            SpanExporter::builder()
                .with_http()
                .with_endpoint(format!("{endpoint}/v1/traces"))
                .build()?,
        )
        .with_resource(resource.clone())
        .build();
    let meter_provider = SdkMeterProvider::builder()
        .with_reader(
            PeriodicReader::builder(
                MetricExporter::builder()
                    .with_http()
                    .with_endpoint(format!("{endpoint}/v1/metrics"))
                    .build()?,
            )
            .with_interval(Duration::from_secs(5))
            .build(),
        )
        .with_resource(resource)
        .build();

    let processed = Arc::new(AtomicUsize::new(0));
    let shutdown = CancellationToken::new();
    let (p, stop) = (processed.clone(), shutdown.clone());
    let service = ServiceBuilder::new()
        .layer(OtelLayer::with_providers(&tracer_provider, &meter_provider))
        .timeout(Duration::from_secs(5))
        .service(service_fn(move |msg: Message| {
            let (p, stop) = (p.clone(), stop.clone());
            async move {
                // Work done here is inside the `process` span.
                let reading: f64 = std::str::from_utf8(msg.payload())?.trim().parse()?;
                tracing::info!(topic = msg.topic(), reading, "stored");
                if p.fetch_add(1, Ordering::SeqCst) + 1 == MESSAGES {
                    stop.cancel();
                }
                Ok::<_, BoxError>(())
            }
        }));

    let metrics = EventMetrics::new(&opentelemetry::metrics::MeterProvider::meter(
        &meter_provider,
        "tower-mqtt",
    ));
    let id = format!("otel-example-{}", std::process::id());
    let consumer = Consumer::builder(
        Config::new(host.clone())
            .port(port)
            .client_id(&id)
            .proto_ver(ProtoVer::V5)
            .session_expiry(Duration::from_secs(60)),
    )
    .topic("tower-mqtt-example/sensors/+/temp", QoS::AtLeastOnce)
    .on_event(move |event| metrics.record(event))
    .build()?;
    let running = tokio::spawn(consumer.run(service, shutdown.clone()));

    // Publish with trace context once the subscription is in place.
    tokio::time::sleep(Duration::from_millis(300)).await;
    publish_traced(&host, port, &tracer_provider).await?;

    tokio::time::timeout(Duration::from_secs(30), running).await???;
    println!("processed {} messages", processed.load(Ordering::SeqCst));
    // Flush what is left; without a collector this is where the export fails.
    for (what, result) in [
        ("traces", tracer_provider.shutdown()),
        ("metrics", meter_provider.shutdown()),
    ] {
        if let Err(e) = result {
            eprintln!(
                "could not export {what} to {endpoint}: {e} (is an OTLP collector listening?)"
            );
        }
    }
    Ok(())
}

async fn publish_traced(
    host: &str,
    port: u16,
    provider: &SdkTracerProvider,
) -> Result<(), BoxError> {
    let tracer = provider.tracer("publisher");
    let mut options =
        MqttOptions::new(format!("otel-publisher-{}", std::process::id()), host, port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    let poller = tokio::spawn(async move {
        let mut acked = 0;
        while acked < MESSAGES {
            match eventloop.poll().await {
                Ok(Event::Incoming(Incoming::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    });
    for i in 0..MESSAGES {
        let span = tracer.start("publish");
        let cx = Context::current_with_span(span);
        let properties = PublishProperties {
            user_properties: trace_context_properties(&cx),
            ..Default::default()
        };
        let topic = format!("tower-mqtt-example/sensors/{}/temp", i % 4);
        let payload = format!("{:.1}", 20.0 + i as f64 / 10.0);
        client
            .publish_with_properties(
                topic,
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                false,
                payload,
                properties,
            )
            .await?;
        cx.span().end();
    }
    poller.await??;
    // All PUBACKs are in; dropping the client closes the connection.
    drop(client);
    Ok(())
}
