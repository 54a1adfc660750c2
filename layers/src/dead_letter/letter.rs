//! The dead letter for a failed message: see the module docs for its format.

use std::error::Error as StdError;

use bytes::{BufMut, Bytes, BytesMut};
use tower_mqtt::{Message, ProtoVer, Publish, PublishProperties, QoS};

/// The dead letter of `message` for `topic`, after `error` on the `attempts`-th call.
pub(super) fn letter(
    message: &Message,
    error: &(dyn StdError + 'static),
    attempts: u32,
    topic: String,
    proto: ProtoVer,
) -> Publish {
    let headers = [
        ("x-original-topic", message.topic().to_owned()),
        ("x-error", error_text(error)),
        ("x-attempts", attempts.to_string()),
        ("x-delivery-count", message.delivery_count().to_string()),
    ];
    let original = message.properties();
    if proto == ProtoVer::V5 {
        let mut properties = PublishProperties::default();
        if let Some(p) = original {
            properties.user_properties.clone_from(&p.user_properties);
            properties.content_type.clone_from(&p.content_type);
            properties.payload_format_indicator = p.payload_format_indicator;
            properties.response_topic.clone_from(&p.response_topic);
            properties.correlation_data.clone_from(&p.correlation_data);
        }
        properties
            .user_properties
            .extend(headers.map(|(name, value)| (name.to_owned(), value)));
        return Publish::new(topic, message.payload().clone())
            .qos(QoS::AtLeastOnce)
            .properties(properties);
    }
    let mut envelope = BytesMut::with_capacity(256 + message.payload().len());
    let user = original
        .into_iter()
        .flat_map(|p| &p.user_properties)
        .map(|(k, v)| ("x-user-property", format!("{k}={v}")));
    for (name, value) in headers.into_iter().chain(user) {
        envelope.put_slice(name.as_bytes());
        envelope.put_slice(b": ");
        envelope.put_slice(one_line(&value).as_bytes());
        envelope.put_u8(b'\n');
    }
    envelope.put_u8(b'\n');
    envelope.put_slice(message.payload());
    Publish::new(topic, Bytes::from(envelope)).qos(QoS::AtLeastOnce)
}

/// The error's message followed by each source's that it does not already include.
pub(super) fn error_text(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

/// `value` on one line: line breaks become spaces.
fn one_line(value: &str) -> String {
    value.replace(['\r', '\n'], " ")
}
