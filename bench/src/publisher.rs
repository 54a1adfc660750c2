//! The parent's side of a run: create the consumer's persistent sessions, publish.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio::time::{interval, timeout, MissedTickBehavior};

use crate::measure::now_ns;

pub(crate) fn qos(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// Connect each client id once with a persistent session, subscribe `filter`, disconnect:
/// from then on the broker queues the consumer's messages, whether or not it is connected.
pub(crate) async fn create_sessions(
    port: u16,
    ids: &[String],
    filter: &str,
    q: u8,
    proto: u8,
) -> Result<(), String> {
    for id in ids {
        if proto == 5 {
            use rumqttc::v5::{mqttbytes::v5::Packet as P5, mqttbytes::QoS as Q5};
            let mut o = rumqttc::v5::MqttOptions::new(id, "127.0.0.1", port);
            o.set_clean_start(false);
            o.set_session_expiry_interval(Some(3600));
            let (c, mut el) = rumqttc::v5::AsyncClient::new(o, 10);
            let q5 = match q {
                0 => Q5::AtMostOnce,
                1 => Q5::AtLeastOnce,
                _ => Q5::ExactlyOnce,
            };
            c.subscribe(filter, q5).await.map_err(|e| e.to_string())?;
            let wait = async {
                loop {
                    match el.poll().await {
                        Ok(rumqttc::v5::Event::Incoming(P5::SubAck(_))) => break Ok(()),
                        Ok(_) => {}
                        Err(e) => break Err(format!("session {id}: {e}")),
                    }
                }
            };
            timeout(Duration::from_secs(10), wait)
                .await
                .map_err(|_| "SUBACK timeout".to_owned())??;
            c.disconnect().await.map_err(|e| e.to_string())?;
            let _ = timeout(Duration::from_secs(2), async {
                while el.poll().await.is_ok() {}
            })
            .await;
        } else {
            let mut o = MqttOptions::new(id, "127.0.0.1", port);
            o.set_clean_session(false);
            let (c, mut el) = AsyncClient::new(o, 10);
            c.subscribe(filter, qos(q))
                .await
                .map_err(|e| e.to_string())?;
            let wait = async {
                loop {
                    match el.poll().await {
                        Ok(Event::Incoming(Packet::SubAck(_))) => break Ok(()),
                        Ok(_) => {}
                        Err(e) => break Err(format!("session {id}: {e}")),
                    }
                }
            };
            timeout(Duration::from_secs(10), wait)
                .await
                .map_err(|_| "SUBACK timeout".to_owned())??;
            c.disconnect().await.map_err(|e| e.to_string())?;
            let _ = timeout(Duration::from_secs(2), async {
                while el.poll().await.is_ok() {}
            })
            .await;
        }
    }
    Ok(())
}

/// Publish `n` messages of `size` bytes (≥ 8; the first 8 carry the send time in ns;
/// with `json`, a JSON object of that size instead, see [`fill`]) at QoS `q`, `rate`
/// per second (0: as fast as possible). Returns once the broker has confirmed every one
/// (QoS 1/2) or every one is written (QoS 0).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn publish(
    port: u16,
    id: &str,
    topic: &str,
    n: u64,
    size: usize,
    json: bool,
    q: u8,
    rate: u64,
) -> Result<(), String> {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_clean_session(true);
    // mosquitto resets a publisher that has more than its window (20) of QoS 2
    // handshakes open; QoS 1 has no such limit.
    o.set_inflight(if q == 2 { 20 } else { 1000 });
    o.set_max_packet_size(4 << 20, 4 << 20);
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut el) = AsyncClient::new(o, 1000);
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    el.set_network_options(net);
    let topic = topic.to_owned();
    let sender = tokio::spawn(async move {
        let mut payload = vec![0u8; size.max(8)];
        let mut tick = (rate > 0).then(|| {
            let mut t = interval(Duration::from_millis(1));
            t.set_missed_tick_behavior(MissedTickBehavior::Burst);
            t
        });
        let per_tick = (rate / 1000).max(1);
        let mut sent = 0u64;
        while sent < n {
            if let Some(t) = &mut tick {
                t.tick().await;
            }
            let burst = if tick.is_some() { per_tick } else { 1000 };
            for _ in 0..burst.min(n - sent) {
                fill(&mut payload, now_ns(), json);
                client
                    .publish(topic.as_str(), qos(q), false, payload.clone())
                    .await
                    .map_err(|e| e.to_string())?;
                sent += 1;
            }
        }
        Ok::<_, String>(client)
    });
    let mut confirmed = 0u64;
    let result = timeout(Duration::from_secs(600), async {
        while confirmed < n {
            match el.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) if q == 1 => confirmed += 1,
                Ok(Event::Incoming(Packet::PubComp(_))) if q == 2 => confirmed += 1,
                Ok(Event::Outgoing(Outgoing::Publish(_))) if q == 0 => confirmed += 1,
                Ok(_) => {}
                Err(e) => return Err(format!("publisher: {e}")),
            }
        }
        Ok(())
    })
    .await
    .map_err(|_| format!("publisher timed out after {confirmed} of {n}"))?;
    result?;
    let client = sender.await.map_err(|e| e.to_string())??;
    let _ = client.disconnect().await;
    let _ = timeout(Duration::from_secs(2), async {
        while el.poll().await.is_ok() {}
    })
    .await;
    Ok(())
}

/// Writes the send time `sent` (ns) into `payload`: its first 8 bytes (little endian),
/// or with `json` the whole payload as `{"sent":<ns>,"value":21.5,"pad":"xx…"}`, padded
/// to the payload's length (longer if the payload is too short for the object).
pub(crate) fn fill(payload: &mut Vec<u8>, sent: u64, json: bool) {
    if !json {
        payload[..8].copy_from_slice(&sent.to_le_bytes());
        return;
    }
    let size = payload.len();
    payload.clear();
    payload.extend_from_slice(format!("{{\"sent\":{sent},\"value\":21.5,\"pad\":\"").as_bytes());
    let pad = size.saturating_sub(payload.len() + 2);
    payload.resize(payload.len() + pad, b'x');
    payload.extend_from_slice(b"\"}");
}
