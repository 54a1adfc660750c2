//! Test helpers: build messages without a broker and see what the consumer would do
//! with them (like Broadway's `test_message`), and, with the `testing` feature, a
//! private mosquitto for your integration tests ([`TestBroker`], with a
//! [`RecordingPublisher`] and a session check; its docs have a whole test as example).
//!
//! ```
//! use std::convert::Infallible;
//! use tower::service_fn;
//! use tower_mqtt::testing::{disposition, test_message};
//! use tower_mqtt::{AckPolicy, Disposition, Message};
//!
//! # tokio_test_block(async {
//! let svc = service_fn(|m: Message| async move {
//!     if m.payload().is_empty() { Err("empty") } else { Ok(()) }
//! });
//! let ok = disposition(svc.clone(), test_message("a/b", "21.5"), AckPolicy::default()).await;
//! assert_eq!(ok, Disposition::Ack);
//! let failed = disposition(svc, test_message("a/b", ""), AckPolicy::default()).await;
//! assert_eq!(failed, Disposition::Redeliver);
//! # });
//! # fn tokio_test_block(f: impl std::future::Future) {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f);
//! # }
//! ```

#[cfg(feature = "testing")]
mod broker;

use std::sync::Arc;

use bytes::Bytes;
use tower::ServiceExt;
use tower_service::Service;

use crate::config::QoS;
use crate::disposition::{Classify, Decider, Disposition};
use crate::error::BoxError;
use crate::message::{Message, Origin};

#[cfg(feature = "testing")]
pub use broker::{
    DrainedSession, ReceivedMessage, RecordingPublisher, SentMessage, TestBroker, TestBrokerError,
};

/// A QoS 1 message on `topic` with `payload`, as connection 0 of client `test` would
/// receive it on a first delivery (packet id 1, delivery count 1). Adjust it with
/// [`TestMessage`] methods.
pub fn test_message(topic: &str, payload: impl Into<Bytes>) -> Message {
    Message {
        topic: topic.into(),
        payload: payload.into(),
        qos: QoS::AtLeastOnce,
        retain: false,
        dup: false,
        pkid: 1,
        delivery_count: 1,
        properties: None,
        origin: Arc::new(Origin {
            client_id: "test_0".into(),
            producer_index: 0,
            shared_group: None,
            host: "localhost".into(),
            port: 1883,
            filters: Arc::from(vec![topic.to_owned()]),
            decider: Decider::default(),
            max_inflight: 100,
            connections: 1,
        }),
        extensions: http::Extensions::new(),
    }
}

/// Builder-style setters for messages made by [`test_message`].
pub trait TestMessage {
    /// Set the QoS (QoS 0 also sets the packet id to 0).
    #[must_use]
    fn with_qos(self, qos: QoS) -> Self;
    /// Set the DUP flag.
    #[must_use]
    fn with_dup(self, dup: bool) -> Self;
    /// Set the retain flag.
    #[must_use]
    fn with_retain(self, retain: bool) -> Self;
    /// Set the packet id.
    #[must_use]
    fn with_pkid(self, pkid: u16) -> Self;
    /// Add an MQTT 5 user property.
    #[must_use]
    fn with_user_property(self, name: &str, value: &str) -> Self;
    /// Set [`Message::delivery_count`] (a redelivery: also sets the DUP flag when
    /// above 1).
    #[must_use]
    fn with_delivery_count(self, count: u32) -> Self;
}

impl TestMessage for Message {
    fn with_qos(mut self, qos: QoS) -> Self {
        self.qos = qos;
        if qos == QoS::AtMostOnce {
            self.pkid = 0;
        }
        self
    }
    fn with_dup(mut self, dup: bool) -> Self {
        self.dup = dup;
        self
    }
    fn with_retain(mut self, retain: bool) -> Self {
        self.retain = retain;
        self
    }
    fn with_pkid(mut self, pkid: u16) -> Self {
        self.pkid = pkid;
        self
    }
    fn with_user_property(mut self, name: &str, value: &str) -> Self {
        let mut props = self.properties.as_deref().cloned().unwrap_or_default();
        props.user_properties.push((name.into(), value.into()));
        self.properties = Some(Arc::new(props));
        self
    }
    fn with_delivery_count(mut self, count: u32) -> Self {
        self.delivery_count = count;
        self.dup |= count > 1;
        self
    }
}

/// Run `message` through `service` (waiting for readiness first) and return the
/// disposition the consumer would take with `policy` as its classifier (an
/// [`AckPolicy`](crate::AckPolicy) or any [`Classify`]): a marker error first, else
/// the policy.
pub async fn disposition<S, C>(service: S, message: Message, policy: C) -> Disposition
where
    S: Service<Message>,
    S::Error: Into<BoxError>,
    C: Classify,
{
    let result = match service.ready_oneshot().await {
        Ok(mut svc) => svc.call(message).await.map(|_| ()).map_err(Into::into),
        Err(e) => Err(e.into()),
    };
    Decider::new(Arc::new(policy), true).decide(result.as_ref().map(|_| ()))
}
