//! The broker-drop watcher behind
//! [`ConsumerBuilder::watch_broker_drops`](crate::ConsumerBuilder::watch_broker_drops).
//!
//! mosquitto throws away what exceeds `max_queued_messages` and says so only in its log,
//! but it also counts those messages in `$SYS/broker/publish/messages/dropped`,
//! published every `sys_interval` seconds when it changed. This module keeps one small
//! side connection per consumer (`<client_id>_sys`, MQTT 3.1.1, clean session, QoS 0,
//! that one topic) on the consumer's own transport and credentials, and reports each
//! growth of the counter as [`Event::BrokerDropped`](crate::Event::BrokerDropped).
//!
//! It holds no message and acknowledges nothing. It never ends `Consumer::run`: a lost
//! connection is retried with the consumer's reconnect backoff, and a refused
//! subscription (a broker without that `$SYS` topic, or an ACL) stops the watch with a
//! warning.

use bytes::BytesMut;
use rumqttc::mqttbytes::{self as m, v4};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tower::retry::backoff::{Backoff, MakeBackoff};

use crate::config::Config;
use crate::driver::{Failover, Settings};
use crate::error::DownReason;
use crate::event;
use crate::transport::{down_reason, Stream};

/// mosquitto's broker-wide count of messages it discarded.
pub(crate) const DROPPED_TOPIC: &str = "$SYS/broker/publish/messages/dropped";

/// Why a watch connection ended without an error.
enum Ended {
    /// Shutdown was requested; the DISCONNECT went out.
    Stopped,
    /// The broker refused the subscription: watching is pointless.
    Refused,
}

/// The counter as last seen, kept across reconnects.
#[derive(Debug, Default)]
struct Counter {
    last: Option<u64>,
}

impl Counter {
    /// How many new drops `value` reports. `retained` marks the snapshot the broker
    /// sends on subscribing: the first one only sets the baseline (those drops happened
    /// before this consumer watched), a later one covers the time we were disconnected.
    fn update(&mut self, value: u64, retained: bool) -> u64 {
        match self.last.replace(value) {
            None if retained => 0,
            Some(previous) if value >= previous => value - previous,
            // A live first value (no snapshot existed: the broker is younger than one
            // sys_interval), or a counter that started over (the broker restarted).
            None | Some(_) => value,
        }
    }
}

/// Watch until `stop` is cancelled (or the broker refuses the subscription).
pub(crate) async fn run(settings: &Settings, stop: CancellationToken) {
    let client_id = format!("{}_sys", settings.client_id);
    let mut counter = Counter::default();
    let mut maker = settings.backoff.maker();
    let mut backoff = maker.make_backoff();
    // The broker list of the consumer, walked the same way.
    let mut failover = Failover::new(&settings.config);
    loop {
        let mut connected = false;
        let config = failover.current_config();
        match session(
            settings,
            &config,
            &client_id,
            &mut counter,
            &stop,
            &mut connected,
        )
        .await
        {
            Ok(Ended::Stopped) => return,
            Ok(Ended::Refused) => {
                tracing::warn!(target: "tower_mqtt::broker", client_id, topic = DROPPED_TOPIC,
                    "the broker refused the $SYS subscription: its drops cannot be watched");
                return;
            }
            Err(reason) => {
                tracing::debug!(target: "tower_mqtt::broker", client_id, reason = %reason,
                    "drop watch connection down");
                if connected {
                    backoff = maker.make_backoff();
                    failover.connected();
                }
            }
        }
        if !failover.failed() {
            continue;
        }
        tokio::select! {
            () = backoff.next_backoff() => {}
            () = stop.cancelled() => return,
        }
    }
}

/// One connection: CONNECT, SUBSCRIBE, then counter updates until it ends.
async fn session(
    settings: &Settings,
    config: &Config,
    client_id: &str,
    counter: &mut Counter,
    stop: &CancellationToken,
    connected: &mut bool,
) -> Result<Ended, DownReason> {
    let mut conn = tokio::time::timeout(config.connect_timeout, Conn::open(config, client_id))
        .await
        .unwrap_or(Err(DownReason::Timeout))?;
    *connected = true;
    let mut subscribe = v4::Subscribe::new(DROPPED_TOPIC, m::QoS::AtMostOnce);
    subscribe.pkid = 1; // the only packet id this connection uses; zero is malformed
    conn.send(&v4::Packet::Subscribe(subscribe)).await?;
    // The broker drops a client it has not heard from in 1.5 keepalives, however
    // much it sends itself; an unanswered PINGREQ by the next tick ends the connection.
    let mut ping = (!config.keepalive.is_zero()).then(|| {
        tokio::time::interval_at(
            tokio::time::Instant::now() + config.keepalive,
            config.keepalive,
        )
    });
    let mut awaiting_pong = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => {
                // Best effort: the watch is over either way.
                let _ = conn.send(&v4::Packet::Disconnect).await;
                return Ok(Ended::Stopped);
            }
            () = tick(ping.as_mut()) => {
                if awaiting_pong {
                    return Err(DownReason::KeepaliveTimeout);
                }
                conn.send(&v4::Packet::PingReq).await?;
                awaiting_pong = true;
            }
            packet = conn.next() => match packet? {
                v4::Packet::Publish(p) if p.topic == DROPPED_TOPIC => {
                    report(settings, client_id, counter, &p);
                }
                v4::Packet::SubAck(ack)
                    if ack.return_codes.contains(&v4::SubscribeReasonCode::Failure) =>
                {
                    return Ok(Ended::Refused);
                }
                v4::Packet::PingResp => awaiting_pong = false,
                _ => {}
            },
        }
    }
}

/// Waits for the next keepalive tick; never, without keepalive.
async fn tick(ping: Option<&mut tokio::time::Interval>) {
    match ping {
        Some(ping) => {
            ping.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Emits [`Event::BrokerDropped`](crate::Event::BrokerDropped) when the counter grew.
fn report(settings: &Settings, client_id: &str, counter: &mut Counter, publish: &v4::Publish) {
    let value = std::str::from_utf8(&publish.payload)
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok());
    let Some(total) = value else {
        tracing::debug!(target: "tower_mqtt::broker", client_id, payload = ?publish.payload,
            "ignored a $SYS dropped value that is not a number");
        return;
    };
    let dropped = counter.update(total, publish.retain);
    if dropped > 0 {
        event::broker_dropped(settings.hook.as_ref(), client_id, dropped, total);
    }
}

/// The watch connection's socket and read buffer.
struct Conn {
    io: Stream,
    rbuf: BytesMut,
    max_packet_size: usize,
}

impl Conn {
    /// Transport, CONNECT (MQTT 3.1.1, clean session) and a successful CONNACK.
    async fn open(config: &Config, client_id: &str) -> Result<Self, DownReason> {
        let mut conn = Self {
            io: crate::transport::connect(config).await?.0,
            rbuf: BytesMut::with_capacity(256),
            max_packet_size: config.max_packet_size,
        };
        let mut connect = v4::Connect::new(client_id);
        connect.keep_alive = u16::try_from(config.keepalive.as_secs()).unwrap_or(u16::MAX);
        connect.clean_session = true;
        if let Some(user) = &config.username {
            let password = config.password.as_ref().map_or("", |p| p.0.as_str());
            connect.login = Some(v4::Login::new(user.as_str(), password));
        }
        conn.send(&v4::Packet::Connect(connect)).await?;
        match conn.next().await? {
            v4::Packet::ConnAck(ack) if ack.code == v4::ConnectReturnCode::Success => Ok(conn),
            v4::Packet::ConnAck(ack) => Err(DownReason::Refused {
                code: ack.code as u8,
                name: format!("{:?}", ack.code),
            }),
            other => Err(DownReason::Protocol(format!(
                "expected CONNACK, got {other:?}"
            ))),
        }
    }

    async fn send(&mut self, packet: &v4::Packet) -> Result<(), DownReason> {
        let mut buf = BytesMut::with_capacity(64);
        packet
            .write(&mut buf, usize::MAX)
            .map_err(|e| DownReason::Protocol(e.to_string()))?;
        self.io.write_all_buf(&mut buf).await.map_err(down_reason)?;
        self.io.flush().await.map_err(down_reason)
    }

    /// The next packet. Cancel-safe: bytes read so far stay in the buffer.
    async fn next(&mut self) -> Result<v4::Packet, DownReason> {
        loop {
            match v4::Packet::read(&mut self.rbuf, self.max_packet_size) {
                Ok(packet) => return Ok(packet),
                Err(m::Error::InsufficientBytes(_)) => {}
                Err(e) => return Err(DownReason::Protocol(e.to_string())),
            }
            if self
                .io
                .read_buf(&mut self.rbuf)
                .await
                .map_err(down_reason)?
                == 0
            {
                return Err(DownReason::Closed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Counter;

    #[test]
    fn the_first_snapshot_is_a_baseline_and_later_values_report_growth() {
        let mut c = Counter::default();
        assert_eq!(c.update(500, true), 0, "drops before the watch started");
        assert_eq!(c.update(500, false), 0);
        assert_eq!(c.update(740, false), 240);
        assert_eq!(c.update(800, true), 60, "drops while reconnecting");
        assert_eq!(c.update(30, true), 30, "the broker restarted");
    }

    #[test]
    fn a_live_first_value_is_reported_whole() {
        let mut c = Counter::default();
        assert_eq!(c.update(12, false), 12);
    }
}
