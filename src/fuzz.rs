//! Entry points for fuzzing the packet decoder and [`Config::from_url`]: the cargo-fuzz
//! targets in `fuzz/` and the property tests in `tests/fuzz_decoder.rs` call these.
//! Compiled only with the cargo feature `fuzzing`; not part of the API.
//!
//! The decoder is driven as the connection's reader drives it: bytes are appended to a
//! read buffer as they arrive, and packets are decoded from its front until the decoder
//! needs more or refuses the input. Every decode is checked against an independent
//! reading of the fixed header, and every broken invariant is a panic, which a fuzzer
//! reports as a crash:
//!
//! * a complete packet is consumed exactly, and only once its last byte is there;
//! * "need more" consumes nothing and asks for exactly the rest of the frame (or at
//!   most a fixed header's worth while the header is incomplete), so the reader never
//!   reserves room for more than one packet within `max_packet_size`;
//! * a fixed header announcing more than `max_packet_size` is refused as soon as the
//!   header is complete, before any of its body is buffered;
//! * an error is a [`DownReason::Protocol`] or [`DownReason::PacketTooLarge`];
//! * a PUBLISH, PUBACK, PUBREC or PUBCOMP decoded by the codec's own fast paths reads as
//!   rumqttc reads it, whenever rumqttc accepts it;
//! * the result does not depend on how the bytes were split into reads
//!   ([`check_decoder`]).

use bytes::BytesMut;
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;

use crate::config::{Config, ProtoVer, QoS, DEFAULT_MAX_PACKET_SIZE, MAX_PACKET_SIZE_LIMIT};
use crate::driver::codec::{Codec, Decoded, Inbound, PubResp, SubCode};
use crate::error::DownReason;
use crate::message::PublishProperties;

/// A decoded packet, reduced to plain fields that compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNACK.
    ConnAck {
        /// The session-present flag.
        session_present: bool,
        /// Why the connection was refused (`None`: accepted).
        refused: Option<DownReason>,
        /// MQTT 5 Server Keep Alive.
        server_keepalive: Option<u16>,
        /// MQTT 5 Receive Maximum.
        receive_maximum: Option<u16>,
        /// MQTT 5 Maximum Packet Size.
        max_packet_size: Option<u32>,
    },
    /// PUBLISH.
    Publish(Publish),
    /// PUBREL with its packet id.
    PubRel(u16),
    /// SUBACK: per filter, the granted QoS or the refusal's reason code.
    SubAck {
        /// Packet id.
        pkid: u16,
        /// One per filter.
        codes: Vec<Result<QoS, u8>>,
    },
    /// PINGRESP.
    PingResp,
    /// DISCONNECT with its reason code (0 in MQTT 3.1.1).
    Disconnect {
        /// Reason code.
        code: u8,
    },
    /// PUBACK (4), PUBREC (5) or PUBCOMP (7), answering a PUBLISH of ours.
    PubResp {
        /// The MQTT packet type: 4, 5 or 7.
        packet_type: u8,
        /// Packet id.
        pkid: u16,
        /// Reason code (0 when MQTT 3.1.1 or omitted).
        reason: u8,
    },
    /// A packet the client has nothing to do with (UNSUBACK, AUTH, ...).
    Ignored,
}

/// The fields of a decoded PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Topic name.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// QoS.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// DUP flag.
    pub dup: bool,
    /// Packet id (0 with QoS 0).
    pub pkid: u16,
    /// MQTT 5 properties, when the PUBLISH had any.
    pub properties: Option<PublishProperties>,
}

/// How a stream of bytes ended after everything in it was decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The decoder waits for more bytes.
    NeedMore {
        /// Bytes held in the read buffer (the start of an incomplete packet).
        buffered: usize,
        /// How many more the decoder asked for.
        needed: usize,
    },
    /// The decoder refused the input: the connection would close for this reason.
    Error(DownReason),
}

/// Everything decoded from a stream of bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    /// The packets, in order.
    pub packets: Vec<Packet>,
    /// Why decoding stopped.
    pub end: End,
}

/// Decode `chunks` as successive reads from a connection: each is appended to the read
/// buffer, then packets are decoded until the decoder needs more or refuses. Panics
/// when an invariant of the decoder breaks (see the [module docs](self)).
pub fn decode_chunks<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
    proto: ProtoVer,
    max_packet_size: usize,
) -> Stream {
    let codec = Codec::for_protocol(proto);
    let mut buf = BytesMut::new();
    let mut packets = Vec::new();
    let mut needed = 0;
    // A last empty read: the end is always what a decode of the final buffer says.
    for chunk in chunks.into_iter().chain([&[][..]]) {
        buf.extend_from_slice(chunk);
        loop {
            match checked_decode(codec, &mut buf, max_packet_size) {
                Ok(Step::Packet(packet)) => packets.push(packet),
                Ok(Step::NeedMore(n)) => {
                    needed = n;
                    break;
                }
                Err(reason) => {
                    return Stream {
                        packets,
                        end: End::Error(reason),
                    }
                }
            }
        }
    }
    Stream {
        packets,
        end: End::NeedMore {
            buffered: buf.len(),
            needed,
        },
    }
}

/// Decode `bytes` arriving in one read.
#[must_use]
pub fn decode_stream(bytes: &[u8], proto: ProtoVer, max_packet_size: usize) -> Stream {
    decode_chunks([bytes], proto, max_packet_size)
}

/// Decode `bytes` in one read, in reads of `chunk` bytes, and one byte at a time, and
/// panic unless all three agree; returns what they gave.
#[must_use]
pub fn check_decoder(
    bytes: &[u8],
    proto: ProtoVer,
    max_packet_size: usize,
    chunk: usize,
) -> Stream {
    let whole = decode_stream(bytes, proto, max_packet_size);
    let split = decode_chunks(bytes.chunks(chunk.max(1)), proto, max_packet_size);
    assert_eq!(whole, split, "whole vs in reads of {chunk} bytes");
    let bytewise = decode_chunks(bytes.chunks(1), proto, max_packet_size);
    assert_eq!(whole, bytewise, "whole vs one byte at a time");
    whole
}

/// Fuzz target `control_packets`: `[settings, chunk, stream...]`, any bytes as they
/// would come from a broker. `settings` picks the protocol and `max_packet_size`
/// ([`settings`]); the stream is also decoded in reads of `chunk + 1` bytes.
pub fn control_packets(data: &[u8]) {
    let Some((&[settings_byte, chunk], stream)) = data.split_first_chunk::<2>() else {
        return;
    };
    let (proto, max) = settings(settings_byte);
    let _ = check_decoder(stream, proto, max, usize::from(chunk) + 1);
}

/// Fuzz target `publish_fast_path`: `[settings, flags, body...]` becomes one PUBLISH
/// with the low four bits of `flags` (DUP, QoS, RETAIN) and a correct remaining length,
/// so that the fuzzer spends its time on the body: topic, packet id, MQTT 5 properties
/// and payload. The high four bits of `flags` + 1 are the read size.
pub fn publish_fast_path(data: &[u8]) {
    let Some((&[settings_byte, flags], body)) = data.split_first_chunk::<2>() else {
        return;
    };
    let (proto, max) = settings(settings_byte);
    let mut stream = Vec::with_capacity(body.len() + 5);
    stream.push(0x30 | (flags & 0x0f));
    let mut remaining = body.len();
    loop {
        let byte = (remaining & 0x7f) as u8;
        remaining >>= 7;
        if remaining == 0 {
            stream.push(byte);
            break;
        }
        stream.push(byte | 0x80);
    }
    stream.extend_from_slice(body);
    let _ = check_decoder(&stream, proto, max, usize::from(flags >> 4) + 1);
}

/// The protocol (bit 0: MQTT 5) and `max_packet_size` (bits 1-2: 64 bytes, 1 KiB, the
/// default, the largest allowed) a fuzz input's first byte selects.
#[must_use]
pub fn settings(byte: u8) -> (ProtoVer, usize) {
    let proto = if byte & 1 == 0 {
        ProtoVer::V4
    } else {
        ProtoVer::V5
    };
    let max =
        [64, 1024, DEFAULT_MAX_PACKET_SIZE, MAX_PACKET_SIZE_LIMIT][usize::from(byte >> 1 & 3)];
    (proto, max)
}

/// Fuzz target `config_from_url`: [`Config::from_url`] on the input (not UTF-8:
/// converted lossily), then, when it parsed, the checks of
/// [`ConsumerBuilder::build`](crate::ConsumerBuilder::build). Either gives a value or
/// a typed error; a panic in either is the crash.
pub fn config_from_url(data: &[u8]) {
    let url = String::from_utf8_lossy(data);
    match Config::from_url(&url) {
        Ok(config) => {
            assert!(!config.host().is_empty(), "{url:?} parsed with no host");
            assert_ne!(config.get_port(), 0, "{url:?} parsed with port 0");
            let built = crate::Consumer::builder(config)
                .topic("t", QoS::AtLeastOnce)
                .build();
            if let Err(e) = built {
                assert!(!e.to_string().is_empty());
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// What a fixed header says, read independently of the codec.
#[derive(Clone, Copy)]
enum Header {
    /// Not all of it has arrived.
    Incomplete,
    /// A remaining length longer than four bytes.
    Malformed,
    /// `len` bytes of fixed header announcing `remaining` more.
    Complete { len: usize, remaining: usize },
}

fn fixed_header(buf: &[u8]) -> Header {
    let mut remaining = 0;
    for i in 0..4 {
        let Some(&byte) = buf.get(1 + i) else {
            return Header::Incomplete;
        };
        remaining |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Header::Complete {
                len: 2 + i,
                remaining,
            };
        }
    }
    Header::Malformed
}

/// A decode that did not fail.
enum Step {
    Packet(Packet),
    /// Waiting for this many more bytes.
    NeedMore(usize),
}

/// One decode from the front of `buf`, checked.
fn checked_decode(codec: Codec, buf: &mut BytesMut, max: usize) -> Result<Step, DownReason> {
    let before = buf.len();
    let header = fixed_header(buf);
    // The frame, kept when a fast path may decode it, to compare with rumqttc's reading.
    let frame = match header {
        Header::Complete { len, remaining }
            if remaining <= max
                && before >= len + remaining
                && matches!(buf[0] >> 4, 3 | 4 | 5 | 7) =>
        {
            Some(buf[..len + remaining].to_vec())
        }
        _ => None,
    };
    let decoded = codec.decode(buf, max);
    let consumed = before - buf.len();
    let inbound = match decoded {
        Err(reason) => {
            check_error(&reason, header, max);
            return Err(reason);
        }
        Ok(Decoded::NeedMore(needed)) => {
            assert_eq!(consumed, 0, "need more, yet {consumed} bytes were consumed");
            assert!(needed >= 1, "need more of nothing");
            match header {
                Header::Incomplete => assert!(needed <= 5, "{needed} asked for a fixed header"),
                Header::Malformed => panic!("waiting on a malformed remaining length"),
                Header::Complete { len, remaining } => {
                    assert!(
                        remaining <= max,
                        "waiting on {remaining} bytes over the limit {max}"
                    );
                    assert_eq!(
                        before + needed,
                        len + remaining,
                        "not exactly the rest of the frame"
                    );
                }
            }
            return Ok(Step::NeedMore(needed));
        }
        Ok(Decoded::Packet(inbound)) => inbound,
    };
    match header {
        Header::Complete { len, remaining } => {
            assert!(
                remaining <= max,
                "decoded a packet of {remaining} bytes over the limit {max}"
            );
            assert_eq!(
                consumed,
                len + remaining,
                "did not consume exactly one frame"
            );
        }
        Header::Incomplete | Header::Malformed => {
            panic!("decoded a packet without a whole fixed header")
        }
    }
    let packet = packet(inbound);
    if let Some(frame) = frame {
        compare_with_rumqttc(codec, &frame, &packet, max);
    }
    Ok(Step::Packet(packet))
}

fn check_error(reason: &DownReason, header: Header, max: usize) {
    match reason {
        DownReason::PacketTooLarge { size, limit } => {
            assert_eq!(*limit, max, "the limit reported is not the one configured");
            assert!(*size > max, "{size} bytes refused under the limit {max}");
            if let Header::Complete { remaining, .. } = header {
                assert_eq!(
                    *size, remaining,
                    "the size reported is not the announced one"
                );
            }
        }
        DownReason::Protocol(why) => assert!(!why.is_empty(), "a protocol error without a reason"),
        other => panic!("the decoder failed with {other:?}, neither Protocol nor PacketTooLarge"),
    }
}

/// What both decoders agree on for the fast-path packets: a PUBLISH without
/// properties, or an answer's type, packet id and whether its reason is Success.
#[derive(Debug, PartialEq)]
enum Reading {
    Publish(Publish),
    Answer(u8, u16, bool),
}

/// The fast paths (PUBLISH; PUBACK, PUBREC, PUBCOMP) read what rumqttc reads, whenever
/// rumqttc accepts the frame.
fn compare_with_rumqttc(codec: Codec, frame: &[u8], ours: &Packet, max: usize) {
    let ours = match ours {
        Packet::Publish(p) if p.properties.is_none() => Reading::Publish(p.clone()),
        &Packet::PubResp {
            packet_type,
            pkid,
            reason,
        } => Reading::Answer(packet_type, pkid, reason == 0),
        _ => return,
    };
    let mut buf = BytesMut::from(frame);
    let publish = |topic, payload: &[u8], qos_level, retain, dup, pkid| {
        Reading::Publish(Publish {
            topic,
            payload: payload.to_vec(),
            qos: qos(qos_level),
            retain,
            dup,
            pkid,
            properties: None,
        })
    };
    let theirs = match codec {
        Codec::V4 => match v4::Packet::read(&mut buf, max) {
            Ok(v4::Packet::Publish(p)) => {
                publish(p.topic, &p.payload, p.qos as u8, p.retain, p.dup, p.pkid)
            }
            Ok(v4::Packet::PubAck(p)) => Reading::Answer(4, p.pkid, true),
            Ok(v4::Packet::PubRec(p)) => Reading::Answer(5, p.pkid, true),
            Ok(v4::Packet::PubComp(p)) => Reading::Answer(7, p.pkid, true),
            _ => return,
        },
        Codec::V5 => {
            let max = u32::try_from(max).unwrap_or(u32::MAX);
            match v5::Packet::read(&mut buf, Some(max)) {
                Ok(v5::Packet::Publish(p)) if p.properties.is_none() => {
                    let Ok(topic) = String::from_utf8(p.topic.to_vec()) else {
                        return;
                    };
                    publish(topic, &p.payload, p.qos as u8, p.retain, p.dup, p.pkid)
                }
                Ok(v5::Packet::PubAck(p)) => {
                    Reading::Answer(4, p.pkid, p.reason == v5::PubAckReason::Success)
                }
                Ok(v5::Packet::PubRec(p)) => {
                    Reading::Answer(5, p.pkid, p.reason == v5::PubRecReason::Success)
                }
                Ok(v5::Packet::PubComp(p)) => {
                    Reading::Answer(7, p.pkid, p.reason == v5::PubCompReason::Success)
                }
                _ => return,
            }
        }
    };
    assert_eq!(
        ours, theirs,
        "the codec and rumqttc read {frame:?} differently"
    );
}

fn pub_resp(packet_type: u8, pkid: u16, reason: u8) -> Packet {
    Packet::PubResp {
        packet_type,
        pkid,
        reason,
    }
}

fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn packet(inbound: Inbound) -> Packet {
    match inbound {
        Inbound::ConnAck(c) => Packet::ConnAck {
            session_present: c.session_present,
            refused: c.refused,
            server_keepalive: c.server_keepalive,
            receive_maximum: c.receive_maximum,
            max_packet_size: c.max_packet_size,
        },
        Inbound::Publish(p) => Packet::Publish(Publish {
            topic: p.topic.to_string(),
            payload: p.payload.to_vec(),
            qos: p.qos,
            retain: p.retain,
            dup: p.dup,
            pkid: p.pkid,
            properties: p.properties.map(|p| (*p).clone()),
        }),
        Inbound::PubRel(pkid) => Packet::PubRel(pkid),
        Inbound::SubAck { pkid, codes } => Packet::SubAck {
            pkid,
            codes: codes
                .into_iter()
                .map(|code| match code {
                    SubCode::Granted(qos) => Ok(qos),
                    SubCode::Refused { code, .. } => Err(code),
                })
                .collect(),
        },
        Inbound::PingResp => Packet::PingResp,
        Inbound::Disconnect { code } => Packet::Disconnect { code },
        Inbound::PubResp { kind, pkid, reason } => {
            let packet_type = match kind {
                PubResp::Ack => 4,
                PubResp::Rec => 5,
                PubResp::Comp => 7,
            };
            pub_resp(packet_type, pkid, reason)
        }
        Inbound::Ignored => Packet::Ignored,
    }
}
