//! The fuzz targets' checks (`fuzz/`, run by `scripts/fuzz`) on generated input, for
//! `cargo test`: the packet decoder (the PUBLISH fast path and the control packets of
//! MQTT 3.1.1 and 5) and `Config::from_url`. Every file of the committed seed corpus
//! and every saved fuzz crash is replayed; the harness (`tower_mqtt::__fuzz`, feature
//! `fuzzing`) panics on any broken invariant, so "no panic" is the assertion there.
#![cfg(feature = "fuzzing")]

use std::path::{Path, PathBuf};

use bytes::BytesMut;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use proptest::prelude::*;
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes as m5;
use rumqttc::v5::mqttbytes::v5;
use tower_mqtt::__fuzz::{self, End, Packet, Publish};
use tower_mqtt::config::{DEFAULT_MAX_PACKET_SIZE, MAX_PACKET_SIZE_LIMIT};
use tower_mqtt::{Config, DownReason, ProtoVer, PublishProperties, QoS};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The harness function of a fuzz target, by the target's name.
fn target(name: &str) -> fn(&[u8]) {
    match name {
        "control_packets" => __fuzz::control_packets,
        "publish_fast_path" => __fuzz::publish_fast_path,
        "config_from_url" => __fuzz::config_from_url,
        other => panic!("fuzz/corpus/{other}: no such fuzz target"),
    }
}

// ---- The seed corpus -----------------------------------------------------------------

/// `settings` byte of the decoder targets: the protocol, the default packet size limit.
fn settings(proto: ProtoVer) -> u8 {
    let byte = 2 << 1 | u8::from(proto == ProtoVer::V5);
    assert_eq!(__fuzz::settings(byte), (proto, DEFAULT_MAX_PACKET_SIZE));
    byte
}

fn v4_bytes(packet: &v4::Packet) -> Vec<u8> {
    let mut buf = BytesMut::new();
    packet.write(&mut buf, usize::MAX).unwrap();
    buf.to_vec()
}

fn v5_bytes(packet: &v5::Packet) -> Vec<u8> {
    let mut buf = BytesMut::new();
    packet.write(&mut buf, None).unwrap();
    buf.to_vec()
}

fn v5_publish_properties() -> v5::PublishProperties {
    v5::PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(60),
        user_properties: vec![("traceparent".into(), "00-ab-cd-01".into())],
        content_type: Some("application/json".into()),
        response_topic: Some("replies/7".into()),
        correlation_data: Some(bytes::Bytes::from_static(b"req-7")),
        subscription_identifiers: vec![3],
        topic_alias: None,
    }
}

/// One encoded packet of each kind a broker sends, per protocol, named.
fn packets(proto: ProtoVer) -> Vec<(&'static str, Vec<u8>)> {
    let publish = |qos: u8, pkid: u16| {
        let payload = br#"{"t":21.5}"#.to_vec();
        if proto == ProtoVer::V5 {
            let mut p = v5::Publish::new("sensors/7/temp", m5::qos(qos).unwrap(), payload, None);
            p.pkid = pkid;
            p.retain = qos == 0;
            p.dup = qos == 2;
            v5_bytes(&v5::Packet::Publish(p))
        } else {
            let q = rumqttc::mqttbytes::qos(qos).unwrap();
            let mut p = v4::Publish::new("sensors/7/temp", q, payload);
            p.pkid = pkid;
            p.retain = qos == 0;
            p.dup = qos == 2;
            v4_bytes(&v4::Packet::Publish(p))
        }
    };
    let mut out = vec![
        ("publish-qos0", publish(0, 0)),
        ("publish-qos1", publish(1, 7)),
        ("publish-qos2", publish(2, 65_535)),
    ];
    match proto {
        ProtoVer::V5 => {
            let mut p = v5::Publish::new("a/b", m5::QoS::AtLeastOnce, vec![1, 2, 3], None);
            p.pkid = 9;
            p.properties = Some(v5_publish_properties());
            out.push(("publish-properties", v5_bytes(&v5::Packet::Publish(p))));
            let connack = v5::ConnAck {
                session_present: true,
                code: v5::ConnectReturnCode::Success,
                properties: Some(v5::ConnAckProperties {
                    session_expiry_interval: Some(3600),
                    receive_max: Some(20),
                    max_qos: Some(1),
                    retain_available: Some(1),
                    max_packet_size: Some(1 << 20),
                    assigned_client_identifier: None,
                    topic_alias_max: Some(0),
                    reason_string: None,
                    user_properties: Vec::new(),
                    wildcard_subscription_available: Some(1),
                    subscription_identifiers_available: Some(1),
                    shared_subscription_available: Some(1),
                    server_keep_alive: Some(30),
                    response_information: None,
                    server_reference: None,
                    authentication_method: None,
                    authentication_data: None,
                }),
            };
            out.push(("connack", v5_bytes(&v5::Packet::ConnAck(connack))));
            let refused = v5::ConnAck {
                session_present: false,
                code: v5::ConnectReturnCode::NotAuthorized,
                properties: None,
            };
            out.push(("connack-refused", v5_bytes(&v5::Packet::ConnAck(refused))));
            let mut puback = v5::PubAck::new(7, None);
            puback.reason = v5::PubAckReason::NotAuthorized;
            puback.properties = Some(v5::PubAckProperties {
                reason_string: Some("acl".into()),
                user_properties: Vec::new(),
            });
            out.push(("puback-refused", v5_bytes(&v5::Packet::PubAck(puback))));
            for (name, packet) in [
                ("puback", v5::Packet::PubAck(v5::PubAck::new(7, None))),
                ("pubrec", v5::Packet::PubRec(v5::PubRec::new(8, None))),
                ("pubrel", v5::Packet::PubRel(v5::PubRel::new(9, None))),
                ("pubcomp", v5::Packet::PubComp(v5::PubComp::new(10, None))),
                ("pingresp", v5::Packet::PingResp(v5::PingResp)),
                (
                    "suback",
                    v5::Packet::SubAck(v5::SubAck {
                        pkid: 1,
                        return_codes: vec![
                            v5::SubscribeReasonCode::Success(m5::QoS::AtLeastOnce),
                            v5::SubscribeReasonCode::NotAuthorized,
                        ],
                        properties: None,
                    }),
                ),
                (
                    "unsuback",
                    v5::Packet::UnsubAck(v5::UnsubAck {
                        pkid: 2,
                        reasons: vec![v5::UnsubAckReason::Success],
                        properties: None,
                    }),
                ),
            ] {
                out.push((name, v5_bytes(&packet)));
            }
            // AUTH, Continue Authentication (0x18), no properties (rumqttc does not
            // export the reason code's type).
            out.push(("auth", vec![0xf0, 0x02, 0x18, 0x00]));
            // DISCONNECT, Server shutting down (0x8b): as mosquitto sends it (no property
            // length), and with one (rumqttc's writer gets the first form wrong).
            out.push(("disconnect", vec![0xe0, 0x01, 0x8b]));
            out.push(("disconnect-properties", vec![0xe0, 0x02, 0x8b, 0x00]));
        }
        _ => {
            for (name, packet) in [
                (
                    "connack",
                    v4::Packet::ConnAck(v4::ConnAck::new(v4::ConnectReturnCode::Success, true)),
                ),
                (
                    "connack-refused",
                    v4::Packet::ConnAck(v4::ConnAck::new(
                        v4::ConnectReturnCode::BadUserNamePassword,
                        false,
                    )),
                ),
                ("puback", v4::Packet::PubAck(v4::PubAck::new(7))),
                ("pubrec", v4::Packet::PubRec(v4::PubRec::new(8))),
                ("pubrel", v4::Packet::PubRel(v4::PubRel::new(9))),
                ("pubcomp", v4::Packet::PubComp(v4::PubComp::new(10))),
                ("pingresp", v4::Packet::PingResp),
                (
                    "suback",
                    v4::Packet::SubAck(v4::SubAck::new(
                        1,
                        vec![
                            v4::SubscribeReasonCode::Success(rumqttc::mqttbytes::QoS::AtLeastOnce),
                            v4::SubscribeReasonCode::Failure,
                        ],
                    )),
                ),
                ("unsuback", v4::Packet::UnsubAck(v4::UnsubAck::new(2))),
            ] {
                out.push((name, v4_bytes(&packet)));
            }
        }
    }
    out
}

/// The seed corpus: `(target, file name, contents)`.
fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    for (proto, tag) in [(ProtoVer::V4, "v4"), (ProtoVer::V5, "v5")] {
        let settings = settings(proto);
        let packets = packets(proto);
        let mut session = vec![settings, 6];
        for (name, bytes) in &packets {
            if name.starts_with("publish") {
                // [settings, flags (read size 1 + 2), body]: the fixed header comes from
                // the flags and the body's length.
                let header = 2 + bytes[1..].iter().position(|b| b & 0x80 == 0).unwrap();
                let mut seed = vec![settings, 2 << 4 | (bytes[0] & 0x0f)];
                seed.extend_from_slice(&bytes[header..]);
                out.push(("publish_fast_path", format!("{tag}-{name}"), seed));
            }
            let mut seed = vec![settings, 6];
            seed.extend_from_slice(bytes);
            out.push(("control_packets", format!("{tag}-{name}"), seed));
            if ["connack", "suback", "publish-qos1", "pubrel", "pingresp"].contains(name) {
                session.extend_from_slice(bytes);
            }
        }
        out.push(("control_packets", format!("{tag}-session"), session));
    }
    for (name, url) in [
        (
            "mqtt",
            "mqtt://127.0.0.1:1883?client_id=ingest&clean_start=false&keepalive=30",
        ),
        (
            "mqtts-credentials",
            "mqtts://ingest:s3cr%40t@broker.example.com",
        ),
        (
            "ws-path",
            "ws://127.0.0.1:9001/mqtt?proto=v5&session_expiry=3600",
        ),
        ("wss-ipv6", "wss://[::1]:8443/x/y?connect_timeout=10"),
        ("tcp-proto", "tcp://h?proto=3.1.1"),
        ("bad-escape", "mqtt://u:p%zz@h"),
        ("unknown-option", "mqtt://h?colour=blue"),
    ] {
        out.push(("config_from_url", name.to_owned(), url.as_bytes().to_vec()));
    }
    out
}

/// `TOWER_MQTT_WRITE_SEEDS=1 cargo test --features fuzzing --test fuzz_decoder seed`
/// (re)writes the seed files; without it, the committed ones must match.
#[test]
fn the_committed_seed_corpus_holds_every_generated_seed() {
    let write = std::env::var_os("TOWER_MQTT_WRITE_SEEDS").is_some();
    for (target, name, bytes) in seeds() {
        let dir = fuzz_dir().join("corpus").join(target);
        let path = dir.join(format!("seed-{name}"));
        if write {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let committed = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (write the seeds, see above)", path.display()));
        assert_eq!(committed, bytes, "{} is out of date", path.display());
    }
}

#[test]
fn every_corpus_file_and_saved_crash_replays_without_a_failed_check() {
    let mut replayed = 0;
    for kind in ["corpus", "artifacts"] {
        let Ok(targets) = std::fs::read_dir(fuzz_dir().join(kind)) else {
            continue;
        };
        for dir in targets {
            let dir = dir.unwrap().path();
            let run = target(dir.file_name().unwrap().to_str().unwrap());
            for file in std::fs::read_dir(&dir).unwrap() {
                let file = file.unwrap().path();
                let data = std::fs::read(&file).unwrap();
                let outcome = std::panic::catch_unwind(|| run(&data));
                assert!(outcome.is_ok(), "{} failed a check", file.display());
                replayed += 1;
            }
        }
    }
    assert!(replayed >= seeds().len(), "only {replayed} files replayed");
}

#[test]
fn every_seed_packet_decodes_whole_to_one_packet() {
    for proto in [ProtoVer::V4, ProtoVer::V5] {
        for (name, bytes) in packets(proto) {
            let stream = __fuzz::check_decoder(&bytes, proto, DEFAULT_MAX_PACKET_SIZE, 3);
            if name == "auth" {
                // rumqttc 0.25 cannot read AUTH; the consumer never asks for enhanced
                // authentication, so a broker has no reason to send one.
                assert!(
                    matches!(stream.end, End::Error(DownReason::Protocol(_))),
                    "{stream:?}"
                );
                continue;
            }
            assert_eq!(stream.packets.len(), 1, "{proto:?} {name}: {stream:?}");
            assert_eq!(
                stream.end,
                End::NeedMore {
                    buffered: 0,
                    needed: 2
                },
                "{proto:?} {name}"
            );
        }
    }
}

// ---- Bugs the fuzzers found (each has its crash in fuzz/artifacts/control_packets) ----

#[test]
fn a_field_running_past_the_end_of_its_packet_is_a_protocol_error_not_a_wait() {
    // An MQTT 5 SUBACK whose property length (a varint with its continuation bit set)
    // runs past its 3 bytes, then a PINGRESP. The decoder used to answer "need more"
    // after rumqttc had taken the SUBACK off the buffer: the packet vanished and the
    // stream went on from the PINGRESP.
    let bytes = [0x90, 0x03, 0x00, 0x01, 0x80, 0xd0, 0x00];
    let stream = __fuzz::check_decoder(&bytes, ProtoVer::V5, DEFAULT_MAX_PACKET_SIZE, 1);
    assert!(stream.packets.is_empty(), "{stream:?}");
    assert!(
        matches!(&stream.end, End::Error(DownReason::Protocol(why)) if why.contains("past the end")),
        "{stream:?}"
    );
}

#[test]
fn an_mqtt311_puback_with_a_trailing_byte_is_not_read_as_a_reason_code() {
    // MQTT 3.1.1 has no reason codes: 0x87 here was read as "Not authorized".
    let stream = __fuzz::check_decoder(&[0x40, 0x03, 0x00, 0x07, 0x87], ProtoVer::V4, 1024, 2);
    assert_eq!(
        stream.packets,
        [Packet::PubResp {
            packet_type: 4,
            pkid: 7,
            reason: 0
        }]
    );
}

#[test]
fn a_puback_over_max_packet_size_is_refused_even_when_it_arrives_whole() {
    // MQTT 5 PUBACK with a reason string: 4 + 3 + 64 bytes, over a limit of 64. It was
    // refused when its header arrived first, and accepted when it came in one read.
    let mut puback = v5::PubAck::new(7, None);
    puback.reason = v5::PubAckReason::NotAuthorized;
    puback.properties = Some(v5::PubAckProperties {
        reason_string: Some("x".repeat(64)),
        user_properties: Vec::new(),
    });
    let bytes = v5_bytes(&v5::Packet::PubAck(puback));
    let stream = __fuzz::decode_stream(&bytes, ProtoVer::V5, 64);
    assert_eq!(
        stream.end,
        End::Error(DownReason::PacketTooLarge {
            size: bytes.len() - 2,
            limit: 64
        })
    );
}

#[test]
fn an_mqtt5_disconnect_with_only_a_reason_code_is_a_disconnect_not_a_malformed_packet() {
    // Remaining Length 1: the reason code, the property length omitted (§3.14.2.2.1),
    // as mosquitto sends "session taken over" (0x8e). It used to vanish: "need more"
    // after rumqttc had taken the frame off the buffer.
    let stream = __fuzz::check_decoder(&[0xe0, 0x01, 0x8e], ProtoVer::V5, 1024, 1);
    assert_eq!(stream.packets, [Packet::Disconnect { code: 0x8e }]);
    assert_eq!(
        stream.end,
        End::NeedMore {
            buffered: 0,
            needed: 2
        }
    );
}

// ---- Properties ----------------------------------------------------------------------

fn proto() -> impl Strategy<Value = ProtoVer> {
    prop_oneof![Just(ProtoVer::V4), Just(ProtoVer::V5)]
}

fn qos_level() -> impl Strategy<Value = u8> {
    0u8..=2
}

fn to_qos(level: u8) -> QoS {
    [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][usize::from(level)]
}

/// A PUBLISH as rumqttc encodes it, and the fields the decoder must give back.
fn publish() -> impl Strategy<Value = (ProtoVer, Vec<u8>, Publish)> {
    (
        proto(),
        "[^\u{0}]{1,40}",
        proptest::collection::vec(any::<u8>(), 0..300),
        qos_level(),
        1u16..,
        any::<(bool, bool, bool)>(),
    )
        .prop_map(|(proto, topic, payload, qos, pkid, (retain, dup, props))| {
            let pkid = if qos == 0 { 0 } else { pkid };
            let properties = (proto == ProtoVer::V5 && props).then(v5_publish_properties);
            let bytes = if proto == ProtoVer::V5 {
                let q = m5::qos(qos).unwrap();
                let mut p = v5::Publish::new(&topic, q, payload.clone(), properties.clone());
                (p.pkid, p.retain, p.dup) = (pkid, retain, dup);
                v5_bytes(&v5::Packet::Publish(p))
            } else {
                let q = rumqttc::mqttbytes::qos(qos).unwrap();
                let mut p = v4::Publish::new(&topic, q, payload.clone());
                (p.pkid, p.retain, p.dup) = (pkid, retain, dup);
                v4_bytes(&v4::Packet::Publish(p))
            };
            let properties = properties.map(|p| {
                let mut ours = PublishProperties::default();
                ours.payload_format_indicator = p.payload_format_indicator;
                ours.message_expiry_interval = p.message_expiry_interval;
                ours.user_properties = p.user_properties;
                ours.content_type = p.content_type;
                ours.response_topic = p.response_topic;
                ours.correlation_data = p.correlation_data;
                ours.subscription_identifiers = p.subscription_identifiers;
                ours
            });
            let expected = Publish {
                topic,
                payload,
                qos: to_qos(qos),
                retain,
                dup,
                pkid,
                properties,
            };
            (proto, bytes, expected)
        })
}

/// A control packet as rumqttc encodes it, and what the decoder must give back.
fn control_packet() -> impl Strategy<Value = (ProtoVer, Vec<u8>, Packet)> {
    let answer =
        (proto(), 4u8..=7, 1u16.., any::<bool>()).prop_map(|(proto, kind, pkid, refused)| {
            let v5_reason = u8::from(refused) * 0x80;
            let reason = if proto == ProtoVer::V5 { v5_reason } else { 0 };
            let bytes = match (proto, kind) {
                (ProtoVer::V5, 4) => {
                    let mut p = v5::PubAck::new(pkid, None);
                    if refused {
                        p.reason = v5::PubAckReason::UnspecifiedError;
                    }
                    v5_bytes(&v5::Packet::PubAck(p))
                }
                (ProtoVer::V5, 5) => {
                    let mut p = v5::PubRec::new(pkid, None);
                    if refused {
                        p.reason = v5::PubRecReason::UnspecifiedError;
                    }
                    v5_bytes(&v5::Packet::PubRec(p))
                }
                (ProtoVer::V5, 6) => v5_bytes(&v5::Packet::PubRel(v5::PubRel::new(pkid, None))),
                (ProtoVer::V5, _) => v5_bytes(&v5::Packet::PubComp(v5::PubComp::new(pkid, None))),
                (_, 4) => v4_bytes(&v4::Packet::PubAck(v4::PubAck::new(pkid))),
                (_, 5) => v4_bytes(&v4::Packet::PubRec(v4::PubRec::new(pkid))),
                (_, 6) => v4_bytes(&v4::Packet::PubRel(v4::PubRel::new(pkid))),
                (_, _) => v4_bytes(&v4::Packet::PubComp(v4::PubComp::new(pkid))),
            };
            let expected = match kind {
                6 => Packet::PubRel(pkid),
                // PUBCOMP's reason is never a refusal here.
                7 => Packet::PubResp {
                    packet_type: 7,
                    pkid,
                    reason: 0,
                },
                _ => Packet::PubResp {
                    packet_type: kind,
                    pkid,
                    reason,
                },
            };
            (proto, bytes, expected)
        });
    let suback = (
        proto(),
        1u16..,
        proptest::collection::vec(proptest::option::of(qos_level()), 1..20),
    )
        .prop_map(|(proto, pkid, codes)| {
            let bytes = match proto {
                ProtoVer::V5 => v5_bytes(&v5::Packet::SubAck(v5::SubAck {
                    pkid,
                    return_codes: codes
                        .iter()
                        .map(|c| match c {
                            Some(q) => v5::SubscribeReasonCode::Success(m5::qos(*q).unwrap()),
                            None => v5::SubscribeReasonCode::NotAuthorized,
                        })
                        .collect(),
                    properties: None,
                })),
                _ => v4_bytes(&v4::Packet::SubAck(v4::SubAck::new(
                    pkid,
                    codes
                        .iter()
                        .map(|c| match c {
                            Some(q) => v4::SubscribeReasonCode::Success(
                                rumqttc::mqttbytes::qos(*q).unwrap(),
                            ),
                            None => v4::SubscribeReasonCode::Failure,
                        })
                        .collect(),
                ))),
            };
            let refusal = if proto == ProtoVer::V5 { 0x87 } else { 0x80 };
            let codes = codes.iter().map(|c| c.map(to_qos).ok_or(refusal)).collect();
            (proto, bytes, Packet::SubAck { pkid, codes })
        });
    let connack = (
        proto(),
        any::<bool>(),
        any::<Option<u16>>(),
        any::<Option<u16>>(),
    )
        .prop_map(|(proto, session_present, keepalive, receive_max)| {
            let bytes = match proto {
                ProtoVer::V5 => {
                    let seed = packets(ProtoVer::V5)
                        .into_iter()
                        .find(|(name, _)| *name == "connack")
                        .unwrap()
                        .1;
                    let Ok(v5::Packet::ConnAck(mut c)) =
                        v5::Packet::read(&mut BytesMut::from(&seed[..]), None)
                    else {
                        unreachable!()
                    };
                    c.session_present = session_present;
                    let props = c.properties.as_mut().unwrap();
                    props.server_keep_alive = keepalive;
                    props.receive_max = receive_max;
                    v5_bytes(&v5::Packet::ConnAck(c))
                }
                _ => v4_bytes(&v4::Packet::ConnAck(v4::ConnAck::new(
                    v4::ConnectReturnCode::Success,
                    session_present,
                ))),
            };
            let v5 = proto == ProtoVer::V5;
            let expected = Packet::ConnAck {
                session_present,
                refused: None,
                server_keepalive: keepalive.filter(|_| v5),
                receive_maximum: receive_max.filter(|_| v5),
                max_packet_size: v5.then_some(1 << 20),
            };
            (proto, bytes, expected)
        });
    prop_oneof![answer, suback, connack]
}

/// `settings` picks the protocol and the limit; `chunk` the read size.
fn decoder_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..600),
        // Mostly valid streams with a few bytes changed.
        (
            any::<u8>(),
            proptest::collection::vec(control_packet(), 1..4),
            proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        )
            .prop_map(|(chunk, packets, flips)| {
                let mut data = vec![settings(packets[0].0), chunk];
                for (_, bytes, _) in &packets {
                    data.extend_from_slice(bytes);
                }
                for (at, byte) in flips {
                    let i = 2 + at.index(data.len() - 2);
                    data[i] = byte;
                }
                data
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any bytes: packets, then "need more" or a typed error; the same however they
    /// are split; never a wait beyond the limit (every check of `__fuzz`).
    #[test]
    fn arbitrary_bytes_decode_to_packets_then_need_more_or_a_typed_error(data in decoder_input()) {
        __fuzz::control_packets(&data);
    }

    #[test]
    fn an_arbitrary_publish_body_decodes_or_is_refused(
        data in proptest::collection::vec(any::<u8>(), 2..400),
    ) {
        __fuzz::publish_fast_path(&data);
    }

    /// A stream of valid packets with arbitrary bytes after it, split at any point.
    #[test]
    fn a_split_at_any_point_decodes_like_the_whole(
        packets in proptest::collection::vec(publish(), 1..4),
        tail in proptest::collection::vec(any::<u8>(), 0..20),
        cut in any::<prop::sample::Index>(),
    ) {
        let proto = packets[0].0;
        let mut bytes: Vec<u8> = packets
            .iter()
            .filter(|(p, _, _)| *p == proto)
            .flat_map(|(_, b, _)| b.clone())
            .collect();
        bytes.extend_from_slice(&tail);
        let cut = cut.index(bytes.len() + 1);
        let whole = __fuzz::decode_stream(&bytes, proto, DEFAULT_MAX_PACKET_SIZE);
        let split = __fuzz::decode_chunks([&bytes[..cut], &bytes[cut..]], proto, DEFAULT_MAX_PACKET_SIZE);
        prop_assert_eq!(whole, split);
    }

    /// Only a fixed header announcing more than the limit: refused at once, with the
    /// announced size; within the limit, the decoder asks for exactly the body.
    #[test]
    fn a_declared_huge_remaining_length_is_refused_from_the_header_alone(
        proto in proto(),
        kind in prop::sample::select(vec![2u8, 3, 4, 5, 6, 7, 9, 11, 13, 14]),
        max in 64usize..MAX_PACKET_SIZE_LIMIT,
        remaining in 0usize..=MAX_PACKET_SIZE_LIMIT,
    ) {
        let mut header = vec![kind << 4 | if kind == 6 { 2 } else { 0 }];
        let mut rest = remaining;
        loop {
            let byte = (rest & 0x7f) as u8;
            rest >>= 7;
            header.push(if rest == 0 { byte } else { byte | 0x80 });
            if rest == 0 {
                break;
            }
        }
        let stream = __fuzz::decode_stream(&header, proto, max);
        if remaining > max {
            prop_assert_eq!(stream.end, End::Error(DownReason::PacketTooLarge { size: remaining, limit: max }));
        } else if remaining > 0 {
            prop_assert_eq!(stream.end, End::NeedMore { buffered: header.len(), needed: remaining });
        }
    }

    /// rumqttc's encoding of a PUBLISH decodes to the same fields, fast path or not.
    #[test]
    fn publishes_encoded_by_rumqttc_decode_to_the_same_fields((proto, bytes, expected) in publish()) {
        let stream = __fuzz::check_decoder(&bytes, proto, DEFAULT_MAX_PACKET_SIZE, 5);
        prop_assert_eq!(stream.packets, vec![Packet::Publish(expected)]);
    }

    #[test]
    fn control_packets_encoded_by_rumqttc_decode_to_the_same_fields(
        (proto, bytes, expected) in control_packet(),
    ) {
        let stream = __fuzz::check_decoder(&bytes, proto, DEFAULT_MAX_PACKET_SIZE, 3);
        prop_assert_eq!(stream.packets, vec![expected]);
    }
}

// ---- Config::from_url ----------------------------------------------------------------

fn url_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "(mqtts?|wss?|tcp|ssl|tls|http|MQTT)://[a-z0-9@:%\\[\\]./?&=_#-]{0,40}",
        "mqtt://([a-z]{1,5}(:[a-z%0-9]{0,5})?@)?[a-z0-9.]{1,10}(:[0-9]{0,6})?(/[a-z]*)?(\\?([a-z_]{1,15}=[a-z0-9%.]{0,6}&?){0,4})?",
    ]
}

fn check_from_url(url: &str) -> Result<Config, String> {
    match Config::from_url(url) {
        Ok(config) => Ok(config),
        Err(e) => {
            let shown = e.to_string();
            assert!(!shown.is_empty(), "{url:?}: an error with no message");
            Err(shown)
        }
    }
}

/// A host as a URL writes it, and as `host()` gives it back.
fn host() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,20}(\\.[a-z][a-z0-9-]{0,10}){0,3}".prop_map(|h| (h.clone(), h)),
        any::<std::net::Ipv4Addr>().prop_map(|ip| (ip.to_string(), ip.to_string())),
        any::<std::net::Ipv6Addr>().prop_map(|ip| (format!("[{ip}]"), ip.to_string())),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_string_gives_a_config_or_a_typed_error(url in url_like()) {
        if let Ok(config) = check_from_url(&url) {
            prop_assert!(!config.host().is_empty());
            prop_assert!(config.get_port() != 0);
        }
    }

    #[test]
    fn valid_urls_round_trip_host_port_client_id_and_user(
        scheme in prop::sample::select(vec![("mqtt", 1883, false), ("mqtts", 8883, true), ("ws", 80, false), ("wss", 443, true)]),
        (written, host) in host(),
        port in proptest::option::of(1u16..),
        client_id in proptest::option::of(".{1,30}"),
        user in proptest::option::of(".{1,20}"),
    ) {
        let (scheme, default_port, tls) = scheme;
        let encode = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
        let mut url = format!("{scheme}://");
        if let Some(user) = &user {
            url += &format!("{}:{}@", encode(user), encode("p@ss:w/rd?"));
        }
        url += &written;
        if let Some(port) = port {
            url += &format!(":{port}");
        }
        if let Some(id) = &client_id {
            url += &format!("?client_id={}", encode(id));
        }
        let config = match check_from_url(&url) {
            Ok(config) => config,
            Err(e) => return Err(TestCaseError::fail(format!("{url}: {e}"))),
        };
        prop_assert_eq!(config.host(), host.as_str());
        prop_assert_eq!(config.get_port(), port.unwrap_or(default_port));
        prop_assert_eq!(config.get_client_id(), client_id.as_deref());
        prop_assert_eq!(config.get_username(), user.as_deref());
        prop_assert_eq!(config.is_tls(), tls);
        prop_assert_eq!(config.websocket_path().is_some(), scheme.starts_with("ws"));
    }
}
