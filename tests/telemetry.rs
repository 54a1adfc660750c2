//! Telemetry: typed events, `tracing` events, OpenTelemetry spans, propagation and
//! metrics, against a real mosquitto.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::{
    SpanKind, Status as OtelStatus, TraceContextExt, Tracer, TracerProvider,
};
use opentelemetry::{Context, Value};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use support::consumer::*;
use support::*;
use tower::{service_fn, ServiceBuilder};
use tower_mqtt::{BoxError, DownReason, Message, OnFailure, QoS as Q};
use tower_mqtt_layers::otel::{trace_context_properties, EventMetrics, OtelLayer};

fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn s(v: &str) -> Value {
    Value::from(v.to_owned())
}

struct Otel {
    spans: InMemorySpanExporter,
    tracer_provider: SdkTracerProvider,
    metrics: InMemoryMetricExporter,
    meter_provider: SdkMeterProvider,
}

fn otel() -> Otel {
    let spans = InMemorySpanExporter::default();
    let tracer_provider = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    let metrics = InMemoryMetricExporter::default();
    let meter_provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(metrics.clone()).build())
        .build();
    Otel {
        spans,
        tracer_provider,
        metrics,
        meter_provider,
    }
}

impl Otel {
    fn layer(&self) -> OtelLayer {
        OtelLayer::with_providers(&self.tracer_provider, &self.meter_provider)
    }

    fn process_spans(&self) -> Vec<SpanData> {
        self.spans
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .filter(|s| s.name.starts_with("process "))
            .collect()
    }

    /// Sum of a counter (or count of a histogram) over all data points, by name.
    fn total(&self, name: &str) -> f64 {
        self.meter_provider.force_flush().unwrap();
        let mut total = 0.0;
        if let Some(rm) = self.metrics.get_finished_metrics().unwrap().last() {
            for sm in rm.scope_metrics() {
                for m in sm.metrics().filter(|m| m.name() == name) {
                    total += match m.data() {
                        AggregatedMetrics::U64(MetricData::Sum(sum)) => {
                            sum.data_points().map(|p| p.value() as f64).sum::<f64>()
                        }
                        AggregatedMetrics::I64(MetricData::Sum(sum)) => {
                            sum.data_points().map(|p| p.value() as f64).sum::<f64>()
                        }
                        AggregatedMetrics::F64(MetricData::Histogram(h)) => {
                            h.data_points().map(|p| p.count() as f64).sum::<f64>()
                        }
                        other => panic!("unexpected data for {name}: {other:?}"),
                    };
                }
            }
        }
        total
    }

    /// Values of a counter by the value of one attribute.
    fn by_attribute(&self, name: &str, key: &str) -> HashMap<String, u64> {
        self.meter_provider.force_flush().unwrap();
        let mut out = HashMap::new();
        if let Some(rm) = self.metrics.get_finished_metrics().unwrap().last() {
            for sm in rm.scope_metrics() {
                for m in sm.metrics().filter(|m| m.name() == name) {
                    if let AggregatedMetrics::U64(MetricData::Sum(sum)) = m.data() {
                        for p in sum.data_points() {
                            let k = p
                                .attributes()
                                .find(|kv| kv.key.as_str() == key)
                                .map(|kv| kv.value.to_string())
                                .unwrap_or_default();
                            *out.entry(k).or_default() += p.value();
                        }
                    }
                }
            }
        }
        out
    }
}

/// Publish one MQTT 5 message with user properties, waiting for the broker's PUBACK.
async fn publish_v5(
    broker: &Broker,
    topic: &str,
    payload: &[u8],
    user_properties: Vec<(String, String)>,
) {
    use rumqttc::v5::mqttbytes::v5::PublishProperties;
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let mut options = MqttOptions::new(unique("pub5"), broker.host(), broker.port());
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    let props = PublishProperties {
        user_properties,
        ..Default::default()
    };
    client
        .publish_with_properties(topic, QoS::AtLeastOnce, false, payload.to_vec(), props)
        .await
        .unwrap();
    while !matches!(
        eventloop.poll().await.expect("publisher connection"),
        Event::Incoming(rumqttc::v5::Incoming::PubAck(_))
    ) {}
    client.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(2), eventloop.poll()).await;
}

#[tokio::test]
async fn typed_events_arrive_in_order_through_a_broker_kill() {
    with_timeout(Duration::from_secs(60), async {
        let mut broker = Broker::start(BrokerOptions::default());
        let id = unique("ev");
        let topic = unique("t");
        let running = spawn(
            builder(config(&broker, &id), &topic, Q::AtLeastOnce),
            service_fn(|_m: Message| async { Ok::<_, BoxError>(()) }),
        );
        running.events.wait_subscribed(1, 1).await;
        publish_many(&broker, &topic, rqos(Q::AtLeastOnce), [b"one".to_vec()]).await;
        running
            .events
            .wait(Duration::from_secs(10), |e| matches!(e, Ev::Ack { .. }))
            .await;
        broker.restart(); // kill -9: the connection drops without DISCONNECT
        running
            .events
            .wait_count(2, Duration::from_secs(20), |e| {
                matches!(e, Ev::SubOk { .. })
            })
            .await;
        let log = running.events.clone();
        running.stop().await.unwrap();

        let kinds: Vec<String> = log
            .all()
            .iter()
            .map(|e| match e {
                Ev::Init(_) => "init".into(),
                Ev::Up {
                    session_present, ..
                } => format!("up(session_present={session_present})"),
                Ev::SubOk { granted, .. } => format!("subscribed(granted={granted:?})"),
                Ev::Start { .. } => "start".into(),
                Ev::Ack {
                    status,
                    disposition,
                    ..
                } => format!("ack({status:?},{disposition})"),
                Ev::Down(_, reason) => format!("down({reason:?})"),
                Ev::Terminate(_, reason) => format!("terminate({reason})"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "init",
                "up(session_present=false)",
                "subscribed(granted=AtLeastOnce)",
                "start",
                "ack(Success,ack)",
                &format!("down({:?})", DownReason::Closed),
                "up(session_present=false)",
                "subscribed(granted=AtLeastOnce)",
                "terminate(shutdown)",
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn spans_follow_the_messaging_conventions_and_user_spans_nest() {
    with_timeout(Duration::from_secs(60), async {
        let otel = otel();
        let broker = Broker::start(BrokerOptions::default());
        let id = unique("span");
        let base = unique("s");
        let filter = format!("{base}/+/temp");
        let tracer = otel.tracer_provider.tracer("user");
        let svc = ServiceBuilder::new()
            .layer(otel.layer())
            .service(service_fn(move |_m: Message| {
                // The user's own spans, started from the current context, nest: one opened
                // in `call`, one while the future runs.
                let mut parse = tracer.start("parse reading");
                opentelemetry::trace::Span::end(&mut parse);
                let tracer = tracer.clone();
                async move {
                    let mut store = tracer.start("store reading");
                    tokio::task::yield_now().await;
                    opentelemetry::trace::Span::end(&mut store);
                    Ok::<_, BoxError>(())
                }
            }));
        let running = spawn(
            builder(config(&broker, &id), &filter, Q::AtLeastOnce).shared_group("g"),
            svc,
        );
        running.events.wait_subscribed(1, 1).await;
        let topic = format!("{base}/7/temp");
        publish_many(&broker, &topic, rqos(Q::AtLeastOnce), [b"21.5".to_vec()]).await;
        running
            .events
            .wait(Duration::from_secs(10), |e| matches!(e, Ev::Ack { .. }))
            .await;
        running.stop().await.unwrap();

        let spans = otel.process_spans();
        assert_eq!(spans.len(), 1);
        let span = &spans[0];
        assert_eq!(span.name, format!("process {filter}"));
        assert_eq!(span.span_kind, SpanKind::Consumer);
        for (key, value) in [
            ("messaging.system", s("mqtt")),
            ("messaging.operation.type", s("process")),
            ("messaging.destination.name", s(&topic)),
            ("messaging.destination.template", s(&filter)),
            ("messaging.consumer.group.name", s("g")),
            ("messaging.client.id", s(&format!("{id}_0"))),
            ("messaging.message.body.size", Value::I64(4)),
            ("server.address", s("127.0.0.1")),
            ("server.port", Value::I64(i64::from(broker.port()))),
            ("messaging.mqtt.disposition", s("ack")),
        ] {
            assert_eq!(attr(span, key), Some(&value), "{key}");
        }
        assert!(attr(span, "messaging.message.id").is_some());
        assert!(attr(span, "error.type").is_none());

        let all = otel.spans.get_finished_spans().unwrap();
        for name in ["parse reading", "store reading"] {
            let child = all.iter().find(|s| s.name == name).expect("user span");
            assert_eq!(child.parent_span_id, span.span_context.span_id(), "{name}");
            assert_eq!(child.span_context.trace_id(), span.span_context.trace_id());
        }
    })
    .await;
}

#[tokio::test]
async fn a_published_traceparent_becomes_the_parent_of_the_process_span() {
    with_timeout(Duration::from_secs(60), async {
        let otel = otel();
        let broker = Broker::start(BrokerOptions::default());
        let id = unique("prop");
        let topic = unique("t");
        let svc = ServiceBuilder::new()
            .layer(otel.layer())
            .service(service_fn(|_m: Message| async { Ok::<_, BoxError>(()) }));
        let running = spawn(
            builder(
                config(&broker, &id).proto_ver(tower_mqtt::ProtoVer::V5),
                &topic,
                Q::AtLeastOnce,
            ),
            svc,
        );
        running.events.wait_subscribed(1, 1).await;

        // The publisher's span, carried in MQTT 5 user properties.
        let publisher = otel.tracer_provider.tracer("publisher");
        let send = publisher.start("send");
        let send_cx = Context::current_with_span(send);
        let props = trace_context_properties(&send_cx);
        assert!(props.iter().any(|(k, _)| k == "traceparent"));
        publish_v5(&broker, &topic, b"traced", props).await;
        running
            .events
            .wait(Duration::from_secs(10), |e| matches!(e, Ev::Ack { .. }))
            .await;
        running.stop().await.unwrap();

        let spans = otel.process_spans();
        assert_eq!(spans.len(), 1);
        let sent = send_cx.span().span_context().clone();
        assert_eq!(
            spans[0].span_context.trace_id(),
            sent.trace_id(),
            "same trace"
        );
        assert_eq!(
            spans[0].parent_span_id,
            sent.span_id(),
            "publisher span is the parent"
        );
        assert!(spans[0].parent_span_is_remote);
    })
    .await;
}

#[tokio::test]
async fn failure_spans_carry_error_type_and_metrics_count_what_was_processed() {
    with_timeout(Duration::from_secs(60), async {
        let otel = otel();
        let broker = Broker::start(BrokerOptions::default());
        let id = unique("fail");
        let topic = unique("t");
        // No ack_policy on the layer: the span records the consumer's own rule
        // (on_failure(Ack) below), which every message carries.
        let svc = ServiceBuilder::new()
            .layer(otel.layer())
            .timeout(Duration::from_millis(50))
            .service(service_fn(|m: Message| async move {
                if m.payload().as_ref() == b"slow" {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                Ok::<_, BoxError>(())
            }));
        let metrics = Arc::new(EventMetrics::new(
            &opentelemetry::metrics::MeterProvider::meter(&otel.meter_provider, "tower-mqtt"),
        ));
        let m = metrics.clone();
        let mut broker = broker;
        let running = spawn(
            builder(config(&broker, &id), &topic, Q::AtLeastOnce)
                .on_failure(OnFailure::Ack)
                .on_event(move |e| m.record(e)),
            svc,
        );
        running.events.wait_subscribed(1, 1).await;
        let mut messages = payloads("ok", 9);
        messages.push(b"slow".to_vec());
        publish_many(&broker, &topic, rqos(Q::AtLeastOnce), messages).await;
        running
            .events
            .wait_count(10, Duration::from_secs(10), |e| matches!(e, Ev::Ack { .. }))
            .await;
        broker.restart();
        running
            .events
            .wait_count(2, Duration::from_secs(20), |e| matches!(e, Ev::Up { .. }))
            .await;
        running.stop().await.unwrap();

        let spans = otel.process_spans();
        assert_eq!(spans.len(), 10);
        let failed: Vec<_> = spans
            .iter()
            .filter(|s| matches!(s.status, OtelStatus::Error { .. }))
            .collect();
        assert_eq!(failed.len(), 1);
        assert_eq!(attr(failed[0], "error.type"), Some(&s("timeout")));
        assert_eq!(
            attr(failed[0], "messaging.mqtt.disposition"),
            Some(&s("ack"))
        );

        assert_eq!(otel.total("messaging.client.consumed.messages"), 10.0);
        assert_eq!(otel.total("messaging.process.duration"), 10.0);
        assert_eq!(otel.total("tower_mqtt.messages.inflight"), 0.0);
        // From the consumer's events:
        let acks = otel.by_attribute("tower_mqtt.acks", "tower_mqtt.status");
        assert_eq!(acks.get("success"), Some(&9));
        assert_eq!(acks.get("failure"), Some(&1));
        assert_eq!(
            otel.by_attribute("tower_mqtt.acks", "messaging.mqtt.disposition")
                .get("ack"),
            Some(&10)
        );
        assert_eq!(
            otel.total("tower_mqtt.reconnects"),
            1.0,
            "one reconnect after the kill"
        );
        assert_eq!(
            otel.total("tower_mqtt.connections.active"),
            0.0,
            "down after shutdown"
        );
        drop(metrics);
    })
    .await;
}

/// The broker grants less than asked (mosquitto `max_qos 1`): the typed event shows
/// both, so the downgrade is visible.
#[tokio::test]
async fn a_subscription_downgrade_is_visible_in_the_event() {
    with_timeout(Duration::from_secs(30), async {
        let broker = Broker::start(BrokerOptions {
            extra_config: "max_qos 1\n".into(),
            ..BrokerOptions::default()
        });
        let running = spawn(
            builder(
                config(&broker, &unique("down")),
                &unique("t"),
                Q::ExactlyOnce,
            ),
            service_fn(|_m: Message| async { Ok::<_, BoxError>(()) }),
        );
        running.events.wait_subscribed(1, 1).await;
        let log = running.events.clone();
        running.stop().await.unwrap();
        assert!(log.all().iter().any(|e| matches!(
            e,
            Ev::SubOk {
                requested: Q::ExactlyOnce,
                granted: Q::AtLeastOnce,
                ..
            }
        )));
    })
    .await;
}

/// `tower_mqtt.redeliveries` counts deliveries with DUP set, and
/// `tower_mqtt.connections.active` follows the connection (1 while up, 0 after).
#[tokio::test]
async fn event_metrics_count_redeliveries_and_follow_the_connection() {
    with_timeout(Duration::from_secs(30), async {
        let otel = otel();
        let broker = Broker::start(BrokerOptions::default());
        let id = unique("redel");
        let topic = unique("t");
        let metrics = EventMetrics::new(&opentelemetry::metrics::MeterProvider::meter(
            &otel.meter_provider,
            "tower-mqtt",
        ));
        let seen = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
        let svc = service_fn(move |m: Message| {
            let first = seen.lock().unwrap().insert(m.payload().clone());
            async move {
                if first {
                    Err::<(), BoxError>("first attempt fails".into())
                } else {
                    Ok(())
                }
            }
        });
        let running = spawn(
            builder(config(&broker, &id), &topic, Q::AtLeastOnce)
                .redeliver_after(Duration::from_millis(100))
                .on_event(move |e| metrics.record(e)),
            svc,
        );
        running.events.wait_subscribed(1, 1).await;
        assert_eq!(otel.total("tower_mqtt.connections.active"), 1.0);
        publish_many(&broker, &topic, rqos(Q::AtLeastOnce), payloads("r", 3)).await;
        running
            .events
            .wait_successes(3, Duration::from_secs(20))
            .await;
        let log = running.events.clone();
        running.stop().await.unwrap();

        let cycles = log.count(|e| matches!(e, Ev::Down(_, DownReason::Redelivery { .. })));
        assert!(
            cycles >= 1,
            "failures came back through a redelivery reconnect"
        );
        let dup_deliveries = log.count(|e| matches!(e, Ev::Start { dup: true, .. }));
        assert!(
            dup_deliveries >= 3,
            "each failed message came back with DUP"
        );
        assert_eq!(
            otel.total("tower_mqtt.redeliveries"),
            dup_deliveries as f64,
            "one count per delivery with DUP set"
        );
        assert_eq!(
            otel.total("tower_mqtt.reconnects"),
            cycles as f64,
            "one reconnect per redelivery cycle"
        );
        assert_eq!(otel.total("tower_mqtt.connections.active"), 0.0);
        let acks = otel.by_attribute("tower_mqtt.acks", "messaging.mqtt.disposition");
        assert_eq!(acks.get("redeliver"), Some(&3));
        assert_eq!(acks.get("ack"), Some(&3));
    })
    .await;
}
