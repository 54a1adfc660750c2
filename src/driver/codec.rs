//! MQTT 3.1.1 and MQTT 5 packets, encoded and decoded with rumqttc's `mqttbytes`.
//!
//! The driver speaks only in [`Inbound`] values and `encode_*` calls, so the rest of the
//! code does not care which protocol version is in use.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use rumqttc::mqttbytes as m;
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes as m5;
use rumqttc::v5::mqttbytes::v5;

use crate::config::{ProtoVer, QoS};
use crate::error::DownReason;
use crate::message::PublishProperties;

/// Which protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    V4,
    V5,
}

/// What the CONNACK said.
#[derive(Debug)]
pub(crate) struct ConnAckInfo {
    pub(crate) session_present: bool,
    pub(crate) refused: Option<DownReason>,
    pub(crate) server_keepalive: Option<u16>,
    /// MQTT 5 Receive Maximum: how many QoS 1 and 2 publishes the broker takes from us
    /// at once (`None`: 65,535, the protocol's default).
    pub(crate) receive_maximum: Option<u16>,
    /// MQTT 5 Maximum Packet Size: the largest packet the broker accepts from us.
    pub(crate) max_packet_size: Option<u32>,
}

/// A PUBLISH as received, before it becomes a [`Message`](crate::Message).
#[derive(Debug)]
pub(crate) struct RawPublish {
    pub(crate) topic: ByteString,
    pub(crate) payload: Bytes,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    pub(crate) dup: bool,
    pub(crate) pkid: u16,
    pub(crate) properties: Option<Arc<PublishProperties>>,
}

/// The answer to one subscription filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SubCode {
    Granted(QoS),
    Refused { code: u8, name: &'static str },
}

/// A packet from the broker, reduced to what a consumer needs.
#[derive(Debug)]
pub(crate) enum Inbound {
    ConnAck(ConnAckInfo),
    Publish(RawPublish),
    PubRel(u16),
    SubAck {
        pkid: u16,
        codes: Vec<SubCode>,
    },
    PingResp,
    Disconnect {
        code: u8,
    },
    /// The broker's answer to a PUBLISH we sent: PUBACK, PUBREC or PUBCOMP, with its
    /// reason code (0x00 Success when MQTT 3.1.1 or omitted).
    PubResp {
        kind: PubResp,
        pkid: u16,
        reason: u8,
    },
    /// UNSUBACK, AUTH: nothing to do.
    Ignored,
}

/// Which answer to an outgoing PUBLISH (see [`Inbound::PubResp`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PubResp {
    /// PUBACK (QoS 1): the broker has the message.
    Ack,
    /// PUBREC (QoS 2, first half): the broker has the message; we answer PUBREL.
    Rec,
    /// PUBCOMP (QoS 2, second half): the exchange is complete.
    Comp,
}

/// Parameters of a CONNECT.
pub(crate) struct ConnectParams<'a> {
    pub(crate) client_id: &'a str,
    pub(crate) keepalive_secs: u16,
    pub(crate) clean_start: bool,
    pub(crate) username: Option<&'a str>,
    pub(crate) password: Option<&'a str>,
    /// MQTT 5 only.
    pub(crate) session_expiry: Option<u32>,
    /// MQTT 5 only.
    pub(crate) receive_maximum: Option<u16>,
    /// MQTT 5 only.
    pub(crate) max_packet_size: Option<u32>,
    pub(crate) will: Option<&'a crate::config::Will>,
    /// MQTT 3.1.1 only: protocol level 0x84 instead of 4.
    pub(crate) bridge_mode: bool,
    /// MQTT 5 only: the other CONNECT properties.
    pub(crate) properties: Option<&'a crate::config::ConnectProperties>,
}

/// A PUBLISH the publisher sends.
pub(crate) struct OutPublish<'a> {
    pub(crate) topic: &'a str,
    pub(crate) payload: &'a Bytes,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    /// 0 for QoS 0.
    pub(crate) pkid: u16,
    /// MQTT 5 only (subscription identifiers are not sent: they are the broker's).
    pub(crate) properties: Option<&'a PublishProperties>,
}

/// Mark an encoded PUBLISH as sent before (DUP, MQTT-4.4.0-1: a PUBLISH resent on a
/// resumed session).
pub(crate) fn set_dup(packet: &mut [u8]) {
    if let Some(first) = packet.first_mut() {
        if *first >> 4 == 3 {
            *first |= 0b1000;
        }
    }
}

/// The result of trying to decode one packet from the read buffer.
pub(crate) enum Decoded {
    Packet(Inbound),
    /// Not enough bytes yet; at least this many more are needed.
    NeedMore(usize),
}

impl Codec {
    /// The codec for a protocol version (MQTT 3.1 is refused before this is asked).
    pub(crate) fn for_protocol(proto: ProtoVer) -> Self {
        match proto {
            ProtoVer::V5 => Self::V5,
            ProtoVer::V3 | ProtoVer::V4 => Self::V4,
        }
    }

    pub(crate) fn decode(self, buf: &mut BytesMut, max: usize) -> Result<Decoded, DownReason> {
        // A packet type no server may send is refused from its first byte: otherwise
        // garbage that happens to announce a plausible length would be waited on, body
        // and all, until the keepalive gives up.
        if let Some(&first) = buf.first() {
            if self.never_from_server(first >> 4) {
                return Err(DownReason::Protocol(format!(
                    "packet type {} cannot come from a server",
                    first >> 4
                )));
            }
        }
        if let Some(result) = self.decode_publish(buf, max) {
            return result;
        }
        if let Some(packet) = decode_pub_resp(buf, self, max) {
            return Ok(Decoded::Packet(packet));
        }
        // An MQTT 5 DISCONNECT with a reason code and nothing else (Remaining Length 1,
        // the property length omitted, §3.14.2.2.1), as mosquitto sends it: rumqttc's
        // reader requires the property length.
        if self == Self::V5 && buf.len() >= 3 && buf[..2] == [0xe0, 0x01] {
            let code = buf[2];
            bytes::Buf::advance(buf, 3);
            return Ok(Decoded::Packet(Inbound::Disconnect { code }));
        }
        self.decode_with_rumqttc(buf, max)
    }

    /// Reserved packet types (0; 15 before MQTT 5 made it AUTH) and those only a
    /// client sends (CONNECT, SUBSCRIBE, UNSUBSCRIBE, PINGREQ), which the decoders
    /// below reject anyway once the whole packet is in.
    fn never_from_server(self, kind: u8) -> bool {
        matches!(kind, 0 | 1 | 8 | 10 | 12) || (kind == 15 && self == Self::V4)
    }

    /// The hot path: a PUBLISH (without MQTT 5 properties) decoded straight from the
    /// frame, topic and payload sliced out of it without copying. rumqttc's reader
    /// allocates a `String` per MQTT 3.1.1 topic and moves a large `Packet` around;
    /// this is about a third of the per-message cost. Returns `None` when the buffer
    /// does not start with such a PUBLISH: rumqttc decodes everything else, and the
    /// tests check both give the same result.
    fn decode_publish(self, buf: &mut BytesMut, max: usize) -> Option<Result<Decoded, DownReason>> {
        let first = *buf.first()?;
        if first >> 4 != 3 {
            return None;
        }
        let malformed = |what: &str| {
            Some(Err(DownReason::Protocol(format!(
                "malformed PUBLISH: {what}"
            ))))
        };
        // Remaining length: 1 to 4 bytes, 7 bits each (MQTT 2.2.3).
        let (mut remaining, mut header) = (0usize, 1usize);
        loop {
            let Some(&byte) = buf.get(header) else {
                return Some(Ok(Decoded::NeedMore(1)));
            };
            remaining |= usize::from(byte & 0x7f) << (7 * (header - 1));
            header += 1;
            if byte & 0x80 == 0 {
                break;
            }
            if header > 4 {
                return malformed("remaining length longer than 4 bytes");
            }
        }
        if remaining > max {
            return Some(Err(DownReason::PacketTooLarge {
                size: remaining,
                limit: max,
            }));
        }
        let frame = header + remaining;
        if buf.len() < frame {
            return Some(Ok(Decoded::NeedMore(frame - buf.len())));
        }
        let qos = match (first >> 1) & 0b11 {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            2 => QoS::ExactlyOnce,
            _ => return malformed("QoS 3"),
        };
        let body = &buf[header..frame];
        if body.len() < 2 {
            return malformed("no topic length");
        }
        let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
        if topic_len == 0 {
            // A topic name has at least one character (MQTT-4.7.3-1); MQTT 5 allows an
            // empty one only with a Topic Alias, which the consumer never enables (Topic
            // Alias Maximum 0). Checked before the properties: every PUBLISH passes here.
            return malformed("empty topic name (topic aliases are not enabled)");
        }
        let mut at = 2 + topic_len;
        let pkid = if qos == QoS::AtMostOnce {
            0
        } else {
            let Some(id) = body.get(at..at + 2) else {
                return malformed("no packet id");
            };
            at += 2;
            match u16::from_be_bytes([id[0], id[1]]) {
                0 => return malformed("packet id 0 with QoS > 0"),
                id => id,
            }
        };
        if body.len() < at {
            return malformed("topic longer than the packet");
        }
        if self == Self::V5 {
            match body.get(at) {
                Some(0) => at += 1,     // no properties
                Some(_) => return None, // properties: rumqttc decodes them
                None => return malformed("no property length"),
            }
        }
        let frame = buf.split_to(frame).freeze();
        let topic = frame.slice(header + 2..header + 2 + topic_len);
        let Ok(topic) = ByteString::try_from(topic) else {
            return Some(Err(DownReason::Protocol(
                "PUBLISH topic is not UTF-8".into(),
            )));
        };
        Some(Ok(Decoded::Packet(Inbound::Publish(RawPublish {
            topic,
            payload: frame.slice(header + at..),
            qos,
            retain: first & 0b0001 != 0,
            dup: first & 0b1000 != 0,
            pkid,
            properties: None,
        }))))
    }

    fn decode_with_rumqttc(self, buf: &mut BytesMut, max: usize) -> Result<Decoded, DownReason> {
        // rumqttc takes the frame off the buffer once it is whole; "insufficient bytes"
        // after that is a length inside the packet running past its end, not a wait.
        let before = buf.len();
        let past_the_end = || {
            Err(DownReason::Protocol(
                "malformed packet: a field runs past the end of the packet".into(),
            ))
        };
        match self {
            Self::V4 => match v4::Packet::read(buf, max) {
                Ok(p) => from_v4(p).map(Decoded::Packet),
                Err(m::Error::InsufficientBytes(_)) if buf.len() != before => past_the_end(),
                Err(m::Error::InsufficientBytes(n)) => Ok(Decoded::NeedMore(n)),
                Err(m::Error::PayloadSizeLimitExceeded(size)) => {
                    Err(DownReason::PacketTooLarge { size, limit: max })
                }
                Err(e) => Err(DownReason::Protocol(e.to_string())),
            },
            Self::V5 => match v5::Packet::read(buf, Some(max as u32)) {
                Ok(p) => from_v5(p).map(Decoded::Packet),
                Err(m5::Error::InsufficientBytes(_)) if buf.len() != before => past_the_end(),
                Err(m5::Error::InsufficientBytes(n)) => Ok(Decoded::NeedMore(n)),
                Err(m5::Error::PayloadSizeLimitExceeded { pkt_size: size, .. }) => {
                    Err(DownReason::PacketTooLarge { size, limit: max })
                }
                Err(e) => Err(DownReason::Protocol(e.to_string())),
            },
        }
    }

    pub(crate) fn encode_connect(self, p: &ConnectParams<'_>, buf: &mut BytesMut) {
        match self {
            Self::V4 => {
                let mut connect = v4::Connect::new(p.client_id);
                connect.keep_alive = p.keepalive_secs;
                connect.clean_session = p.clean_start;
                if let Some(user) = p.username {
                    connect.login = Some(v4::Login::new(user, p.password.unwrap_or("")));
                }
                connect.last_will = p.will.map(|w| v4::LastWill {
                    topic: w.topic.clone(),
                    message: w.payload.clone(),
                    qos: to_v4(w.qos),
                    retain: w.retain,
                });
                let start = buf.len();
                write_v4(&v4::Packet::Connect(connect), buf);
                if p.bridge_mode {
                    set_bridge_bit(&mut buf[start..]);
                }
            }
            Self::V5 => {
                let mut properties = v5::ConnectProperties {
                    session_expiry_interval: p.session_expiry,
                    receive_maximum: p.receive_maximum,
                    max_packet_size: p.max_packet_size,
                    ..v5::ConnectProperties::new()
                };
                if let Some(extra) = p.properties {
                    properties.user_properties = extra.user_properties.clone();
                    properties.request_problem_info = extra.request_problem_info.map(u8::from);
                    properties.request_response_info = extra.request_response_info.map(u8::from);
                    properties.topic_alias_max = extra.topic_alias_max;
                }
                let connect = v5::Connect {
                    keep_alive: p.keepalive_secs,
                    client_id: p.client_id.to_owned(),
                    clean_start: p.clean_start,
                    properties: Some(properties),
                };
                let will = p.will.map(|w| v5::LastWill {
                    topic: Bytes::from(w.topic.clone()),
                    message: w.payload.clone(),
                    qos: to_v5(w.qos),
                    retain: w.retain,
                    properties: None,
                });
                let login = p
                    .username
                    .map(|u| v5::Login::new(u, p.password.unwrap_or("")));
                write_v5(&v5::Packet::Connect(connect, will, login), buf);
            }
        }
    }

    /// PUBACK (QoS 1) or PUBREC (QoS 2); `reject` sends MQTT 5 reason 0x80.
    ///
    /// These run once per message, so they are written directly rather than through
    /// rumqttc's general `Packet::write` (about 270 instructions for 4 bytes); the
    /// tests check every form against rumqttc's encoding byte for byte.
    /// PUBACK (QoS 1) or PUBREC (QoS 2) with `reason` (0x00 Success); MQTT 3.1.1 has no
    /// reason codes, so it sends the plain form whatever `reason` is.
    pub(crate) fn encode_ack(self, qos: QoS, pkid: u16, reason: u8, buf: &mut BytesMut) {
        let packet_type = match qos {
            QoS::AtMostOnce => return,
            QoS::AtLeastOnce => 0x40, // PUBACK
            QoS::ExactlyOnce => 0x50, // PUBREC
        };
        let [hi, lo] = pkid.to_be_bytes();
        if reason != 0 && self == Self::V5 {
            // The reason code, no properties.
            buf.extend_from_slice(&[packet_type, 3, hi, lo, reason]);
        } else {
            // MQTT 3.1.1, or MQTT 5 Success (reason code and properties omitted).
            buf.extend_from_slice(&[packet_type, 2, hi, lo]);
        }
    }

    /// PUBCOMP for a PUBREL (Success; same form in both versions).
    #[allow(clippy::unused_self)] // a codec method like the others, though both forms agree
    pub(crate) fn encode_pubcomp(self, pkid: u16, buf: &mut BytesMut) {
        let [hi, lo] = pkid.to_be_bytes();
        buf.extend_from_slice(&[0x70, 2, hi, lo]);
    }

    /// A PUBLISH of ours (the publisher's), DUP clear: set bit 3 of the first byte
    /// ([`set_dup`]) to send it again after a session resume. MQTT 5 properties are left
    /// out with MQTT 3.1.1, which has none. An error is what rumqttc's encoder
    /// refused (the request's checks make this unlikely).
    pub(crate) fn encode_publish(
        self,
        p: &OutPublish<'_>,
        buf: &mut BytesMut,
    ) -> Result<(), String> {
        // Room for the whole packet up front (fixed header, topic, packet id, payload;
        // properties may grow it): rumqttc writes field by field, and into an empty
        // buffer that would reallocate on the way, which was a fifth of a confirmed
        // publish's instructions (BENCHMARKS.md, issue 11).
        buf.reserve(p.topic.len() + p.payload.len() + 16);
        match self {
            Self::V4 => {
                let publish = v4::Publish {
                    dup: false,
                    qos: to_v4(p.qos),
                    retain: p.retain,
                    topic: p.topic.to_owned(),
                    pkid: p.pkid,
                    payload: p.payload.clone(),
                };
                v4::Packet::Publish(publish)
                    .write(buf, usize::MAX)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
            Self::V5 => {
                let properties = p.properties.map(|pp| v5::PublishProperties {
                    payload_format_indicator: pp.payload_format_indicator,
                    message_expiry_interval: pp.message_expiry_interval,
                    topic_alias: None,
                    response_topic: pp.response_topic.clone(),
                    correlation_data: pp.correlation_data.clone(),
                    user_properties: pp.user_properties.clone(),
                    subscription_identifiers: Vec::new(),
                    content_type: pp.content_type.clone(),
                });
                let publish = v5::Publish {
                    dup: false,
                    qos: to_v5(p.qos),
                    retain: p.retain,
                    topic: Bytes::copy_from_slice(p.topic.as_bytes()),
                    pkid: p.pkid,
                    payload: p.payload.clone(),
                    properties,
                };
                v5::Packet::Publish(publish)
                    .write(buf, None)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// PUBREL for a PUBREC (Success; same form in both versions).
    #[allow(clippy::unused_self)] // a codec method like the others, though both forms agree
    pub(crate) fn encode_pubrel(self, pkid: u16, buf: &mut BytesMut) {
        let [hi, lo] = pkid.to_be_bytes();
        buf.extend_from_slice(&[0x62, 2, hi, lo]);
    }

    /// SUBSCRIBE to `filters`; MQTT 5 with `id`: the Subscription Identifier the
    /// broker puts on every PUBLISH these filters match (ignored on MQTT 3.1.1).
    pub(crate) fn encode_subscribe(
        self,
        pkid: u16,
        filters: &[(String, QoS)],
        id: Option<usize>,
        buf: &mut BytesMut,
    ) {
        match self {
            Self::V4 => {
                let filters = filters
                    .iter()
                    .map(|(f, q)| v4::SubscribeFilter::new(f.clone(), to_v4(*q)))
                    .collect();
                write_v4(&v4::Packet::Subscribe(v4::Subscribe { pkid, filters }), buf);
            }
            Self::V5 => {
                // Retain Handling 1: retained messages only for a subscription the
                // session does not have yet, since every connection subscribes again.
                let filters = filters
                    .iter()
                    .map(|(f, q)| v5::Filter {
                        retain_forward_rule: v5::RetainForwardRule::OnNewSubscribe,
                        ..v5::Filter::new(f.clone(), to_v5(*q))
                    })
                    .collect();
                let subscribe = v5::Subscribe {
                    pkid,
                    filters,
                    properties: id.map(|id| v5::SubscribeProperties {
                        id: Some(id),
                        user_properties: Vec::new(),
                    }),
                };
                write_v5(&v5::Packet::Subscribe(subscribe), buf);
            }
        }
    }

    /// UNSUBSCRIBE from `filters` (a retired connection stops receiving new messages
    /// while it drains what its session holds).
    pub(crate) fn encode_unsubscribe(self, pkid: u16, filters: &[String], buf: &mut BytesMut) {
        match self {
            Self::V4 => write_v4(
                &v4::Packet::Unsubscribe(v4::Unsubscribe {
                    pkid,
                    topics: filters.to_vec(),
                }),
                buf,
            ),
            Self::V5 => write_v5(
                &v5::Packet::Unsubscribe(v5::Unsubscribe {
                    pkid,
                    filters: filters.to_vec(),
                    properties: None,
                }),
                buf,
            ),
        }
    }

    pub(crate) fn encode_ping(self, buf: &mut BytesMut) {
        match self {
            Self::V4 => write_v4(&v4::Packet::PingReq, buf),
            Self::V5 => write_v5(&v5::Packet::PingReq(v5::PingReq), buf),
        }
    }

    /// A normal DISCONNECT: the broker keeps the session and discards the will.
    pub(crate) fn encode_disconnect(self, buf: &mut BytesMut) {
        match self {
            Self::V4 => write_v4(&v4::Packet::Disconnect, buf),
            Self::V5 => write_v5(
                &v5::Packet::Disconnect(v5::Disconnect::new(
                    v5::DisconnectReasonCode::NormalDisconnection,
                )),
                buf,
            ),
        }
    }
}

/// A complete PUBACK, PUBREC or PUBCOMP at the start of `buf`, taken off it; `None` for
/// anything else (rumqttc then decodes it, or reports it malformed). Same form in both
/// versions: packet id, then in MQTT 5 an optional reason code and properties, which
/// are skipped (a reason string is not kept). MQTT 3.1.1 has no reason code: bytes
/// after the packet id are skipped too, as rumqttc does. One over `max` is left to
/// rumqttc, which refuses it.
fn decode_pub_resp(buf: &mut BytesMut, codec: Codec, max: usize) -> Option<Inbound> {
    let kind = match buf.first()? {
        0x40 => PubResp::Ack,
        0x50 => PubResp::Rec,
        0x70 => PubResp::Comp,
        _ => return None,
    };
    // Remaining length, 1 to 4 bytes of 7 bits (MQTT 2.2.3); MQTT 5 properties can make
    // these packets long.
    let (mut remaining, mut header) = (0usize, 1usize);
    loop {
        let &byte = buf.get(header)?;
        remaining |= usize::from(byte & 0x7f) << (7 * (header - 1));
        header += 1;
        if byte & 0x80 == 0 {
            break;
        }
        if header > 4 {
            return None;
        }
    }
    if remaining < 2 || remaining > max || buf.len() < header + remaining {
        return None;
    }
    let pkid = u16::from_be_bytes([buf[header], buf[header + 1]]);
    let reason = if remaining > 2 && codec == Codec::V5 {
        buf[header + 2]
    } else {
        0
    };
    bytes::Buf::advance(buf, header + remaining);
    Some(Inbound::PubResp { kind, pkid, reason })
}

/// Turn an encoded MQTT 3.1.1 CONNECT into a bridge CONNECT: protocol level 0x84
/// (bit 7 set), which rumqttc's encoder cannot produce. The level byte follows the fixed
/// header (type byte + 1..4 length bytes) and the protocol name (`00 04 M Q T T`).
fn set_bridge_bit(packet: &mut [u8]) {
    let Some(len_bytes) = packet[1..].iter().position(|b| b & 0x80 == 0) else {
        return;
    };
    let level = 1 + len_bytes + 1 + 6;
    if packet.get(level - 6..level) == Some(&b"\x00\x04MQTT"[..]) && packet[level] == 4 {
        packet[level] = 0x84;
    }
}

// Encoding our own small packets cannot fail except on sizes we never produce (topic
// filters are validated to fit); a failure would be a bug, and sending nothing is the
// safe outcome, so it is logged rather than propagated.
fn write_v4(packet: &v4::Packet, buf: &mut BytesMut) {
    if let Err(e) = packet.write(buf, usize::MAX) {
        tracing::error!(target: "tower_mqtt::connection", error = %e, "could not encode packet");
    }
}

fn write_v5(packet: &v5::Packet, buf: &mut BytesMut) {
    if let Err(e) = packet.write(buf, None) {
        tracing::error!(target: "tower_mqtt::connection", error = %e, "could not encode packet");
    }
}

fn from_v4(packet: v4::Packet) -> Result<Inbound, DownReason> {
    Ok(match packet {
        v4::Packet::Publish(p) => Inbound::Publish(RawPublish {
            topic: ByteString::from(p.topic),
            payload: p.payload,
            qos: from_v4_qos(p.qos),
            retain: p.retain,
            dup: p.dup,
            pkid: p.pkid,
            properties: None,
        }),
        v4::Packet::PubRel(r) => Inbound::PubRel(r.pkid),
        v4::Packet::PingResp => Inbound::PingResp,
        v4::Packet::SubAck(s) => Inbound::SubAck {
            pkid: s.pkid,
            codes: s
                .return_codes
                .into_iter()
                .map(|c| match c {
                    v4::SubscribeReasonCode::Success(q) => SubCode::Granted(from_v4_qos(q)),
                    v4::SubscribeReasonCode::Failure => SubCode::Refused {
                        code: 0x80,
                        name: "Failure",
                    },
                })
                .collect(),
        },
        v4::Packet::ConnAck(c) => Inbound::ConnAck(ConnAckInfo {
            session_present: c.session_present,
            refused: v4_refusal(c.code),
            server_keepalive: None,
            receive_maximum: None,
            max_packet_size: None,
        }),
        v4::Packet::Disconnect => Inbound::Disconnect { code: 0 },
        v4::Packet::PubAck(_)
        | v4::Packet::PubRec(_)
        | v4::Packet::PubComp(_)
        | v4::Packet::UnsubAck(_) => Inbound::Ignored,
        other => {
            return Err(DownReason::Protocol(format!(
                "unexpected packet from broker: {other:?}"
            )))
        }
    })
}

fn from_v5(packet: v5::Packet) -> Result<Inbound, DownReason> {
    Ok(match packet {
        v5::Packet::Publish(p) => Inbound::Publish(RawPublish {
            topic: ByteString::try_from(p.topic)
                .map_err(|_| DownReason::Protocol("PUBLISH topic is not UTF-8".into()))?,
            payload: p.payload,
            qos: from_v5_qos(p.qos),
            retain: p.retain,
            dup: p.dup,
            pkid: p.pkid,
            properties: p.properties.map(|pp| {
                Arc::new(PublishProperties {
                    payload_format_indicator: pp.payload_format_indicator,
                    message_expiry_interval: pp.message_expiry_interval,
                    response_topic: pp.response_topic,
                    correlation_data: pp.correlation_data,
                    user_properties: pp.user_properties,
                    subscription_identifiers: pp.subscription_identifiers,
                    content_type: pp.content_type,
                })
            }),
        }),
        v5::Packet::PubRel(r) => Inbound::PubRel(r.pkid),
        v5::Packet::PingResp(_) => Inbound::PingResp,
        v5::Packet::SubAck(s) => Inbound::SubAck {
            pkid: s.pkid,
            codes: s.return_codes.into_iter().map(v5_suback_code).collect(),
        },
        v5::Packet::ConnAck(c) => Inbound::ConnAck(ConnAckInfo {
            session_present: c.session_present,
            server_keepalive: c.properties.as_ref().and_then(|p| p.server_keep_alive),
            receive_maximum: c.properties.as_ref().and_then(|p| p.receive_max),
            max_packet_size: c.properties.as_ref().and_then(|p| p.max_packet_size),
            refused: v5_refusal(c.code),
        }),
        v5::Packet::Disconnect(d) => Inbound::Disconnect {
            code: d.reason_code as u8,
        },
        v5::Packet::PubAck(_)
        | v5::Packet::PubRec(_)
        | v5::Packet::PubComp(_)
        | v5::Packet::UnsubAck(_)
        | v5::Packet::Auth(_) => Inbound::Ignored,
        other => {
            return Err(DownReason::Protocol(format!(
                "unexpected packet from broker: {other:?}"
            )))
        }
    })
}

fn v4_refusal(code: v4::ConnectReturnCode) -> Option<DownReason> {
    use v4::ConnectReturnCode as C;
    Some(match code {
        C::Success => return None,
        C::BadUserNamePassword => DownReason::BadCredentials,
        C::NotAuthorized => DownReason::NotAuthorized,
        C::ServiceUnavailable => DownReason::ServerUnavailable,
        C::RefusedProtocolVersion => refused(1, "RefusedProtocolVersion"),
        C::BadClientId => refused(2, "BadClientId"),
    })
}

fn v5_refusal(code: v5::ConnectReturnCode) -> Option<DownReason> {
    use v5::ConnectReturnCode as C;
    Some(match code {
        C::Success => return None,
        C::BadUserNamePassword => DownReason::BadCredentials,
        C::NotAuthorized => DownReason::NotAuthorized,
        C::ServerUnavailable | C::ServiceUnavailable => DownReason::ServerUnavailable,
        C::ServerBusy => DownReason::ServerBusy,
        C::QuotaExceeded => DownReason::QuotaExceeded,
        C::RefusedProtocolVersion => refused(0x84, "RefusedProtocolVersion"),
        C::BadClientId => refused(0x85, "BadClientId"),
        C::UnspecifiedError => refused(0x80, "UnspecifiedError"),
        C::MalformedPacket => refused(0x81, "MalformedPacket"),
        C::ProtocolError => refused(0x82, "ProtocolError"),
        C::ImplementationSpecificError => refused(0x83, "ImplementationSpecificError"),
        C::UnsupportedProtocolVersion => refused(0x84, "UnsupportedProtocolVersion"),
        C::ClientIdentifierNotValid => refused(0x85, "ClientIdentifierNotValid"),
        C::Banned => refused(0x8A, "Banned"),
        C::BadAuthenticationMethod => refused(0x8C, "BadAuthenticationMethod"),
        C::TopicNameInvalid => refused(0x90, "TopicNameInvalid"),
        C::PacketTooLarge => refused(0x95, "PacketTooLarge"),
        C::PayloadFormatInvalid => refused(0x99, "PayloadFormatInvalid"),
        C::RetainNotSupported => refused(0x9A, "RetainNotSupported"),
        C::QoSNotSupported => refused(0x9B, "QoSNotSupported"),
        C::UseAnotherServer => refused(0x9C, "UseAnotherServer"),
        C::ServerMoved => refused(0x9D, "ServerMoved"),
        C::ConnectionRateExceeded => refused(0x9F, "ConnectionRateExceeded"),
    })
}

fn refused(code: u8, name: &str) -> DownReason {
    DownReason::Refused {
        code,
        name: name.to_owned(),
    }
}

fn v5_suback_code(code: v5::SubscribeReasonCode) -> SubCode {
    use v5::SubscribeReasonCode as C;
    let (code, name) = match code {
        C::Success(q) => return SubCode::Granted(from_v5_qos(q)),
        C::Failure | C::Unspecified => (0x80, "UnspecifiedError"),
        C::ImplementationSpecific => (0x83, "ImplementationSpecificError"),
        C::NotAuthorized => (0x87, "NotAuthorized"),
        C::TopicFilterInvalid => (0x8F, "TopicFilterInvalid"),
        C::PkidInUse => (0x91, "PacketIdentifierInUse"),
        C::QuotaExceeded => (0x97, "QuotaExceeded"),
        C::SharedSubscriptionsNotSupported => (0x9E, "SharedSubscriptionsNotSupported"),
        C::SubscriptionIdNotSupported => (0xA1, "SubscriptionIdentifiersNotSupported"),
        C::WildcardSubscriptionsNotSupported => (0xA2, "WildcardSubscriptionsNotSupported"),
    };
    SubCode::Refused { code, name }
}

// The crate's `QoS` is public vocabulary and knows nothing of rumqttc; the conversions to
// and from the codec's two QoS types live here, next to their only users.

fn to_v4(qos: QoS) -> m::QoS {
    match qos {
        QoS::AtMostOnce => m::QoS::AtMostOnce,
        QoS::AtLeastOnce => m::QoS::AtLeastOnce,
        QoS::ExactlyOnce => m::QoS::ExactlyOnce,
    }
}

fn from_v4_qos(qos: m::QoS) -> QoS {
    match qos {
        m::QoS::AtMostOnce => QoS::AtMostOnce,
        m::QoS::AtLeastOnce => QoS::AtLeastOnce,
        m::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

fn to_v5(qos: QoS) -> m5::QoS {
    match qos {
        QoS::AtMostOnce => m5::QoS::AtMostOnce,
        QoS::AtLeastOnce => m5::QoS::AtLeastOnce,
        QoS::ExactlyOnce => m5::QoS::ExactlyOnce,
    }
}

fn from_v5_qos(qos: m5::QoS) -> QoS {
    match qos {
        m5::QoS::AtMostOnce => QoS::AtMostOnce,
        m5::QoS::AtLeastOnce => QoS::AtLeastOnce,
        m5::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(codec: Codec, qos: QoS, pkid: u16, reject: bool) -> Vec<u8> {
        let mut buf = BytesMut::new();
        let reason = if reject { 0x80 } else { 0x00 };
        codec.encode_ack(qos, pkid, reason, &mut buf);
        buf.to_vec()
    }

    fn rumqttc_v4(packet: &v4::Packet) -> Vec<u8> {
        let mut buf = BytesMut::new();
        packet.write(&mut buf, usize::MAX).unwrap();
        buf.to_vec()
    }

    fn rumqttc_v5(packet: &v5::Packet) -> Vec<u8> {
        let mut buf = BytesMut::new();
        packet.write(&mut buf, None).unwrap();
        buf.to_vec()
    }

    fn decode_v5(bytes: &[u8]) -> v5::Packet {
        let mut buf = BytesMut::from(bytes);
        let packet = v5::Packet::read(&mut buf, None).unwrap();
        assert!(buf.is_empty(), "one whole packet");
        packet
    }

    fn publishes() -> Vec<(Codec, Vec<u8>)> {
        let mut out = Vec::new();
        let topics = ["a", "sensors/7/temp", &"t".repeat(300)];
        // Payload sizes around the remaining-length varint boundaries.
        let sizes = [0, 1, 100, 126, 127, 128, 16_380, 16_384, 20_000, 2_097_200];
        for codec in [Codec::V4, Codec::V5] {
            for topic in topics {
                for &size in &sizes {
                    for (qos, pkid) in [(0u8, 0u16), (1, 7), (2, 65_535)] {
                        for (dup, retain) in [(false, false), (true, true), (false, true)] {
                            let payload = vec![size as u8; size];
                            let mut buf = BytesMut::new();
                            match codec {
                                Codec::V4 => {
                                    let q = rumqttc::mqttbytes::qos(qos).unwrap();
                                    let mut p = v4::Publish::new(topic, q, payload);
                                    p.pkid = pkid;
                                    p.dup = dup;
                                    p.retain = retain;
                                    v4::Packet::Publish(p).write(&mut buf, usize::MAX).unwrap();
                                }
                                Codec::V5 => {
                                    let q = m5::qos(qos).unwrap();
                                    let mut p = v5::Publish::new(topic, q, payload, None);
                                    p.pkid = pkid;
                                    p.dup = dup;
                                    p.retain = retain;
                                    v5::Packet::Publish(p).write(&mut buf, None).unwrap();
                                }
                            }
                            out.push((codec, buf.to_vec()));
                        }
                    }
                }
            }
        }
        out
    }

    fn summary(d: Result<Decoded, DownReason>) -> String {
        match d {
            Ok(Decoded::Packet(Inbound::Publish(p))) => {
                format!(
                    "publish {:?} {} {:?} r{} d{} {} props={:?}",
                    p.topic.len(),
                    &p.topic[..p.topic.len().min(20)],
                    p.qos,
                    p.retain,
                    p.dup,
                    p.pkid,
                    p.properties
                ) + &format!(" payload={} {:?}", p.payload.len(), p.payload.first())
            }
            Ok(Decoded::NeedMore(_)) => "need more".into(),
            Ok(Decoded::Packet(other)) => format!("{other:?}"),
            Err(e) => format!("error {e:?}"),
        }
    }

    #[test]
    fn the_publish_fast_path_decodes_exactly_like_rumqttc() {
        for (codec, bytes) in publishes() {
            let max = 4 * 1024 * 1024;
            let mut fast = BytesMut::from(&bytes[..]);
            let mut slow = BytesMut::from(&bytes[..]);
            let a = codec
                .decode_publish(&mut fast, max)
                .expect("fast path taken");
            let b = codec.decode_with_rumqttc(&mut slow, max);
            assert_eq!(summary(a), summary(b));
            assert!(fast.is_empty() && slow.is_empty(), "whole frame consumed");
        }
    }

    #[test]
    fn the_publish_fast_path_waits_for_a_whole_frame() {
        for (codec, bytes) in publishes().into_iter().step_by(7) {
            for cut in (0..bytes.len())
                .step_by(bytes.len() / 97 + 1)
                .chain([bytes.len() - 1])
            {
                let mut buf = BytesMut::from(&bytes[..cut]);
                match codec.decode(&mut buf, usize::MAX) {
                    Ok(Decoded::NeedMore(n)) => assert!(n >= 1),
                    other => panic!("prefix of {cut}/{} bytes: {}", bytes.len(), summary(other)),
                }
                assert_eq!(buf.len(), cut, "nothing consumed from an incomplete frame");
            }
        }
    }

    #[test]
    fn the_publish_fast_path_enforces_max_packet_size_and_rejects_garbage() {
        let (codec, bytes) = publishes()
            .into_iter()
            .find(|(_, b)| b.len() > 20_000)
            .unwrap();
        let mut buf = BytesMut::from(&bytes[..]);
        assert!(matches!(
            codec.decode(&mut buf, 1024),
            Err(DownReason::PacketTooLarge { limit: 1024, .. })
        ));
        for bad in [
            &[0x36, 0x03, 0x00, 0x01, b'a'][..],       // QoS 3
            &[0x32, 0x03, 0x00, 0x01, b'a'][..],       // QoS 1 without packet id
            &[0x32, 0x05, 0x00, 0x01, b'a', 0, 0][..], // packet id 0
            &[0x30, 0x02, 0x00, 0x05][..],             // topic longer than the packet
            &[0x30, 0x03, 0x00, 0x01, 0xff][..],       // topic not UTF-8
            &[0x30, 0xff, 0xff, 0xff, 0xff, 0x01][..], // remaining length over 4 bytes
        ] {
            let mut buf = BytesMut::from(bad);
            assert!(
                matches!(
                    Codec::V4.decode(&mut buf, usize::MAX),
                    Err(DownReason::Protocol(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_packet_type_no_server_sends_is_refused_from_its_first_byte() {
        // Each announces 65,535 bytes and brings none: refused before any body.
        for kind in [0u8, 1, 8, 10, 12] {
            for codec in [Codec::V4, Codec::V5] {
                let mut buf = BytesMut::from(&[kind << 4, 0xff, 0xff, 0x03][..]);
                assert!(
                    matches!(
                        codec.decode(&mut buf, 1 << 20),
                        Err(DownReason::Protocol(_))
                    ),
                    "{codec:?} type {kind}"
                );
            }
        }
        let mut buf = BytesMut::from(&[0xf0, 0xff, 0xff, 0x03][..]);
        assert!(matches!(
            Codec::V4.decode(&mut buf, 1 << 20),
            Err(DownReason::Protocol(_))
        ));
        // MQTT 5 type 15 is AUTH: waited for like any packet.
        let mut buf = BytesMut::from(&[0xf0, 0xff, 0xff, 0x03][..]);
        assert!(matches!(
            Codec::V5.decode(&mut buf, 1 << 20),
            Ok(Decoded::NeedMore(_))
        ));
    }

    #[test]
    fn mqtt5_publishes_with_properties_go_to_rumqttc() {
        let props = v5::PublishProperties {
            user_properties: vec![("traceparent".into(), "00-ab-cd-01".into())],
            ..Default::default()
        };
        let p = v5::Publish::new("a/b", m5::QoS::AtLeastOnce, vec![1, 2, 3], Some(props));
        let mut p = p;
        p.pkid = 9;
        let mut buf = BytesMut::new();
        v5::Packet::Publish(p).write(&mut buf, None).unwrap();
        assert!(Codec::V5
            .decode_publish(&mut buf.clone(), usize::MAX)
            .is_none());
        match Codec::V5.decode(&mut buf, usize::MAX) {
            Ok(Decoded::Packet(Inbound::Publish(p))) => {
                assert_eq!(
                    p.properties.unwrap().user_property("traceparent"),
                    Some("00-ab-cd-01")
                );
                assert_eq!(&p.payload[..], &[1, 2, 3]);
            }
            other => panic!("{}", summary(other)),
        }
    }

    #[test]
    fn direct_ack_encoding_matches_rumqttc_byte_for_byte() {
        for pkid in [1, 2, 255, 256, 4242, u16::MAX] {
            assert_eq!(
                ours(Codec::V4, QoS::AtLeastOnce, pkid, false),
                rumqttc_v4(&v4::Packet::PubAck(v4::PubAck::new(pkid)))
            );
            assert_eq!(
                ours(Codec::V4, QoS::ExactlyOnce, pkid, false),
                rumqttc_v4(&v4::Packet::PubRec(v4::PubRec::new(pkid)))
            );
            // MQTT 3.1.1 has no reason codes: a reject is a plain ack.
            assert_eq!(
                ours(Codec::V4, QoS::AtLeastOnce, pkid, true),
                rumqttc_v4(&v4::Packet::PubAck(v4::PubAck::new(pkid)))
            );
            assert_eq!(
                ours(Codec::V5, QoS::AtLeastOnce, pkid, false),
                rumqttc_v5(&v5::Packet::PubAck(v5::PubAck::new(pkid, None)))
            );
            assert_eq!(
                ours(Codec::V5, QoS::ExactlyOnce, pkid, false),
                rumqttc_v5(&v5::Packet::PubRec(v5::PubRec::new(pkid, None)))
            );
            // The MQTT 5 reject omits the property length (allowed when the remaining
            // length is under 4, §3.4.2.2); rumqttc writes it as 0. Compare decoded.
            let mut reject = v5::PubAck::new(pkid, None);
            reject.reason = v5::PubAckReason::UnspecifiedError;
            assert_eq!(
                decode_v5(&ours(Codec::V5, QoS::AtLeastOnce, pkid, true)),
                v5::Packet::PubAck(reject)
            );
            let mut reject = v5::PubRec::new(pkid, None);
            reject.reason = v5::PubRecReason::UnspecifiedError;
            assert_eq!(
                decode_v5(&ours(Codec::V5, QoS::ExactlyOnce, pkid, true)),
                v5::Packet::PubRec(reject)
            );
            for codec in [Codec::V4, Codec::V5] {
                let mut buf = BytesMut::new();
                codec.encode_pubcomp(pkid, &mut buf);
                let expected = match codec {
                    Codec::V4 => rumqttc_v4(&v4::Packet::PubComp(v4::PubComp::new(pkid))),
                    Codec::V5 => rumqttc_v5(&v5::Packet::PubComp(v5::PubComp::new(pkid, None))),
                };
                assert_eq!(buf.to_vec(), expected);
            }
        }
        assert!(ours(Codec::V5, QoS::AtMostOnce, 0, false).is_empty());
    }

    #[test]
    fn answers_to_our_publishes_decode_with_their_reason_code() {
        let v5_packets = [
            (
                v5::Packet::PubAck(v5::PubAck::new(7, None)),
                PubResp::Ack,
                7,
                0x00,
            ),
            (
                v5::Packet::PubAck(v5::PubAck {
                    pkid: 9,
                    reason: v5::PubAckReason::NotAuthorized,
                    properties: Some(v5::PubAckProperties {
                        reason_string: Some("acl".repeat(100)),
                        user_properties: Vec::new(),
                    }),
                }),
                PubResp::Ack,
                9,
                0x87,
            ),
            (
                v5::Packet::PubRec(v5::PubRec::new(65_535, None)),
                PubResp::Rec,
                65_535,
                0x00,
            ),
            (
                v5::Packet::PubComp(v5::PubComp::new(1, None)),
                PubResp::Comp,
                1,
                0x00,
            ),
        ];
        for (packet, kind, pkid, reason) in v5_packets {
            let mut buf = BytesMut::from(&rumqttc_v5(&packet)[..]);
            // Byte by byte: nothing until the packet is whole, then exactly it.
            let whole = buf.split();
            for i in 0..whole.len() {
                buf.extend_from_slice(&whole[i..=i]);
                let decoded = Codec::V5.decode(&mut buf, 1 << 20).unwrap();
                match decoded {
                    Decoded::NeedMore(_) => assert!(i + 1 < whole.len(), "{packet:?}"),
                    Decoded::Packet(Inbound::PubResp {
                        kind: k,
                        pkid: p,
                        reason: r,
                    }) => {
                        assert_eq!((i + 1, k, p, r), (whole.len(), kind, pkid, reason));
                    }
                    Decoded::Packet(other) => panic!("{packet:?} decoded as {other:?}"),
                }
            }
            assert!(buf.is_empty());
        }
        let mut buf = BytesMut::from(&rumqttc_v4(&v4::Packet::PubAck(v4::PubAck::new(3)))[..]);
        assert!(matches!(
            Codec::V4.decode(&mut buf, 1 << 20),
            Ok(Decoded::Packet(Inbound::PubResp {
                kind: PubResp::Ack,
                pkid: 3,
                reason: 0
            }))
        ));
    }

    #[test]
    fn our_publishes_round_trip_set_dup_in_place_and_pubrel_matches_rumqttc() {
        let payload = Bytes::from_static(b"{\"x\":1}");
        let mut properties = PublishProperties::default();
        properties.user_properties.push(("k".into(), "v".into()));
        properties.content_type = Some("application/json".into());
        for codec in [Codec::V4, Codec::V5] {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
                let pkid = if qos == QoS::AtMostOnce { 0 } else { 42 };
                let mut ours = BytesMut::new();
                codec
                    .encode_publish(
                        &OutPublish {
                            topic: "dead/letters",
                            payload: &payload,
                            qos,
                            retain: true,
                            pkid,
                            properties: Some(&properties),
                        },
                        &mut ours,
                    )
                    .unwrap();
                let mut decoded = BytesMut::from(&ours[..]);
                let Ok(Decoded::Packet(Inbound::Publish(p))) = codec.decode(&mut decoded, 1 << 20)
                else {
                    panic!("{codec:?} {qos:?}: not a PUBLISH");
                };
                assert_eq!(
                    (&p.topic[..], &p.payload[..], p.qos, p.retain, p.dup, p.pkid),
                    ("dead/letters", &payload[..], qos, true, false, pkid)
                );
                let sent = p.properties.as_deref();
                match codec {
                    Codec::V5 => assert_eq!(sent, Some(&properties)),
                    Codec::V4 => assert_eq!(sent, None),
                }
                set_dup(&mut ours);
                let Ok(Decoded::Packet(Inbound::Publish(p))) =
                    codec.decode(&mut BytesMut::from(&ours[..]), 1 << 20)
                else {
                    panic!("{codec:?} {qos:?}: not a PUBLISH after set_dup");
                };
                assert!(p.dup);
            }
            let mut ours = BytesMut::new();
            codec.encode_pubrel(513, &mut ours);
            let theirs = match codec {
                Codec::V4 => rumqttc_v4(&v4::Packet::PubRel(v4::PubRel::new(513))),
                Codec::V5 => rumqttc_v5(&v5::Packet::PubRel(v5::PubRel::new(513, None))),
            };
            assert_eq!(ours.to_vec(), theirs, "{codec:?}");
        }
    }
}
