//! Duplicates per consumer-side fault: what a cut connection brings back.
//!
//! A broker that closes a connection (or a proxy that cuts it) sends its FIN after the
//! messages it had already written. Those still sit in the consumer's socket when the
//! FIN arrives; processing them would only make duplicates, since their acks cannot
//! reach the broker and it sends them again on the next session. On plain TCP the
//! consumer sees the FIN before reading what precedes it (`EPOLLRDHUP`), and under TLS
//! the error its first ack into the closed connection draws (`SO_ERROR`), and it
//! processes none of the rest, so a cut brings back at most the `max_inflight` calls
//! already running.
//! The measured figures per fault kind are in `docs/duplicates.md`.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::consumer::*;
use support::proxy::Proxy;
use support::*;
use tokio::sync::watch;
use tower_mqtt::{BoxError, Config, Message, QoS as Q, TlsOptions};

const MAX_INFLIGHT: usize = 10;
const BACKLOG: usize = 400;

#[tokio::test]
async fn a_cut_connection_brings_back_at_most_max_inflight_processed_messages() {
    with_timeout(Duration::from_secs(90), cut_brings_back_one_window(false)).await;
}

#[tokio::test]
async fn a_cut_tls_connection_brings_back_at_most_max_inflight_processed_messages() {
    with_timeout(Duration::from_secs(90), cut_brings_back_one_window(true)).await;
}

async fn cut_brings_back_one_window(tls: bool) {
    {
        // An unlimited broker window: mosquitto writes the whole backlog at once, so it
        // is all buffered on the consumer's side when the connection is cut. The debug
        // log says when it has.
        let broker = Broker::start(BrokerOptions {
            max_inflight_messages: Some(0),
            tls,
            extra_config: "log_type debug\n".into(),
            ..BrokerOptions::default()
        });
        let proxy = Proxy::start(if tls {
            broker.tls_port()
        } else {
            broker.port()
        })
        .await;
        let (id, topic) = (unique("dupcut"), unique("dupcut-t"));
        // MQTT 3.1.1: no Receive Maximum to hold the broker back.
        let config = || -> Config {
            let c = config(&broker, &id).port(proxy.port());
            if tls {
                c.tls(
                    TlsOptions::new()
                        .ca_file(&broker.pki().ca)
                        .server_name(Pki::SERVER_NAME),
                )
            } else {
                c
            }
        };

        // The session exists, then the backlog is queued in it.
        let first = spawn(
            builder(config(), &topic, Q::AtLeastOnce),
            recording_service(&Processed::default()),
        );
        first.events.wait_subscribed(1, 1).await;
        first.stop().await.unwrap();
        publish_many(&broker, &topic, QoS::AtLeastOnce, payloads("m", BACKLOG)).await;

        // Every call waits for the gate; `started` counts calls.
        let processed = Processed::default();
        let started = Arc::new(AtomicUsize::new(0));
        let (gate, gate_rx) = watch::channel(false);
        let service = {
            let (processed, started) = (processed.clone(), started.clone());
            tower::service_fn(move |m: Message| {
                let (processed, started, mut gate) =
                    (processed.clone(), started.clone(), gate_rx.clone());
                async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    gate.wait_for(|open| *open).await?;
                    processed.record(m.payload());
                    Ok::<_, BoxError>(())
                }
            })
        };
        let running = spawn(
            builder(config(), &topic, Q::AtLeastOnce).max_inflight(MAX_INFLIGHT),
            service,
        );
        // The broker has sent the whole backlog, the proxy has passed it on (its byte
        // count stopped growing), and every slot holds a running call.
        let sent = format!("Sending PUBLISH to {id}_0 ");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut last = (0, 0);
        loop {
            let forwarded = proxy
                .recordings()
                .last()
                .map_or(0, |rec| rec.downstream.lock().unwrap().len());
            let now = (broker.count_in_log(&sent), forwarded);
            if now.0 >= BACKLOG && now == last && started.load(Ordering::SeqCst) >= MAX_INFLIGHT {
                break;
            }
            last = now;
            assert!(
                tokio::time::Instant::now() < deadline,
                "sent {} of {BACKLOG}, {} calls started",
                now.0,
                started.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(started.load(Ordering::SeqCst), MAX_INFLIGHT);

        // Cut (both sides closed in order: FIN), and wait until the broker has seen it.
        proxy.cut_all();
        broker
            .wait_for_log(
                &format!("Client {id}_0 closed its connection"),
                Duration::from_secs(10),
            )
            .await;
        gate.send_replace(true);

        running
            .events
            .wait_successes(BACKLOG + MAX_INFLIGHT, Duration::from_secs(60))
            .await;
        assert_eq!(processed.distinct(), BACKLOG);
        let duplicates = processed.duplicates();
        println!("duplicates after the cut: {}", duplicates.len());
        assert!(
            duplicates.len() <= MAX_INFLIGHT,
            "{} messages processed twice, more than max_inflight ({MAX_INFLIGHT}): the \
             consumer processed messages it had read from the cut connection",
            duplicates.len()
        );
        running.stop().await.unwrap();
    }
}
