//! [`Publish`]: one message for the [`Publisher`](super::Publisher).

use bytes::Bytes;

use crate::config::QoS;
use crate::message::PublishProperties;

/// A message to publish: the request type of the [`Publisher`](super::Publisher)
/// service.
///
/// QoS 1 unless set otherwise: the publisher's future then resolves once the broker has
/// acknowledged the message (PUBACK).
///
/// ```
/// use tower_mqtt::{Publish, QoS};
///
/// let publish = Publish::new("readings/dead", r#"{"bad":true}"#)
///     .qos(QoS::AtLeastOnce)
///     .user_property("x-original-topic", "readings/7")
///     .content_type("application/json");
/// assert_eq!(publish.topic(), "readings/dead");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Publish {
    pub(crate) topic: String,
    pub(crate) payload: Bytes,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    pub(crate) properties: Option<PublishProperties>,
}

impl Publish {
    /// A QoS 1 message for `topic` (a topic name: no wildcards).
    pub fn new(topic: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            payload: payload.into(),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: None,
        }
    }

    /// Quality of service: with QoS 1 the future resolves on the broker's PUBACK, with
    /// QoS 2 on its PUBCOMP, with QoS 0 once the message is written to the socket
    /// (nothing confirms it).
    pub fn qos(mut self, qos: QoS) -> Self {
        self.qos = qos;
        self
    }

    /// Ask the broker to retain the message for future subscribers.
    pub fn retain(mut self, retain: bool) -> Self {
        self.retain = retain;
        self
    }

    /// MQTT 5 properties of the message (replacing any set before). Ignored with MQTT
    /// 3.1.1, which has none; subscription identifiers are never sent (they are the
    /// broker's to set).
    pub fn properties(mut self, properties: PublishProperties) -> Self {
        self.properties = Some(properties);
        self
    }

    /// Add an MQTT 5 user property (names may repeat; order is kept).
    pub fn user_property(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties_mut()
            .user_properties
            .push((name.into(), value.into()));
        self
    }

    /// Set the MQTT 5 Content Type.
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.properties_mut().content_type = Some(content_type.into());
        self
    }

    /// The topic the message goes to.
    #[must_use]
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The payload.
    #[must_use]
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The quality of service (set with [`qos`](Self::qos)).
    #[must_use]
    pub fn get_qos(&self) -> QoS {
        self.qos
    }

    /// Whether the message is to be retained.
    #[must_use]
    pub fn is_retain(&self) -> bool {
        self.retain
    }

    /// The MQTT 5 properties, if any were set.
    #[must_use]
    pub fn get_properties(&self) -> Option<&PublishProperties> {
        self.properties.as_ref()
    }

    fn properties_mut(&mut self) -> &mut PublishProperties {
        self.properties
            .get_or_insert_with(PublishProperties::default)
    }
}
