use std::fmt;

use tower_mqtt::testing::{test_message, TestMessage};
use tower_mqtt::{Permanent, ProtoVer, QoS};

use super::letter::{error_text, letter};

#[derive(Debug)]
struct Db(&'static str);

impl fmt::Display for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "database said {}", self.0)
    }
}

impl std::error::Error for Db {}

fn message() -> tower_mqtt::Message {
    test_message("readings/7", "{oops")
        .with_qos(QoS::AtLeastOnce)
        .with_user_property("trace", "abc")
}

#[test]
fn the_error_text_has_each_source_once() {
    let error = Permanent::new(Db("no\nway"));
    assert_eq!(
        error_text(&error),
        "permanent failure: database said no\nway"
    );
    let plain: tower_mqtt::BoxError = Db("x").into();
    assert_eq!(error_text(&*plain), "database said x");
}

#[test]
fn an_mqtt5_dead_letter_keeps_the_payload_and_adds_user_properties() {
    let error = Permanent::new(Db("no"));
    let dead = letter(
        &message(),
        &error,
        3,
        "dead/readings/7".into(),
        ProtoVer::V5,
    );
    assert_eq!(dead.topic(), "dead/readings/7");
    assert_eq!(dead.payload().as_ref(), b"{oops");
    assert_eq!(dead.get_qos(), QoS::AtLeastOnce);
    let p = dead.get_properties().expect("properties");
    let user: Vec<(&str, &str)> = p
        .user_properties
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        user,
        [
            ("trace", "abc"),
            ("x-original-topic", "readings/7"),
            ("x-error", "permanent failure: database said no"),
            ("x-attempts", "3"),
            ("x-delivery-count", "1"),
        ]
    );
}

#[test]
fn an_mqtt311_dead_letter_is_an_envelope_of_header_lines_and_the_payload() {
    let error = Permanent::new(Db("two\nlines"));
    let dead = letter(&message(), &error, 1, "dead".into(), ProtoVer::V4);
    assert!(dead.get_properties().is_none());
    assert_eq!(
        std::str::from_utf8(dead.payload()).unwrap(),
        "x-original-topic: readings/7\n\
         x-error: permanent failure: database said two lines\n\
         x-attempts: 1\n\
         x-delivery-count: 1\n\
         x-user-property: trace=abc\n\
         \n\
         {oops"
    );
}
