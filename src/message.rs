//! The message every service receives.

use std::sync::Arc;

use bytes::Bytes;
use bytestring::ByteString;
use http::Extensions;

use crate::config::QoS;
use crate::disposition::{Decider, Disposition};
use crate::error::BoxError;

/// MQTT 5 PUBLISH properties, as the broker sent them.
///
/// Empty for MQTT 3.1.1 messages ([`Message::properties`] returns `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishProperties {
    /// Payload Format Indicator (1 = UTF-8 text).
    pub payload_format_indicator: Option<u8>,
    /// Message Expiry Interval in seconds, as forwarded by the broker.
    pub message_expiry_interval: Option<u32>,
    /// Response Topic for request/response.
    pub response_topic: Option<String>,
    /// Correlation Data for request/response.
    pub correlation_data: Option<Bytes>,
    /// User properties, in order; names may repeat.
    pub user_properties: Vec<(String, String)>,
    /// Subscription identifiers of the matching subscriptions.
    pub subscription_identifiers: Vec<usize>,
    /// Content Type.
    pub content_type: Option<String>,
}

impl PublishProperties {
    /// The first user property called `name`, if any.
    pub fn user_property(&self, name: &str) -> Option<&str> {
        self.user_properties
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Where a message came from: shared by every message of one connection.
///
/// It also carries the consumer's decision rule, so a layer can tell what the consumer
/// will do with a result ([`disposition`](Self::disposition)). Equality compares the
/// connection's identity only, not the rule.
#[derive(Debug)]
pub struct Origin {
    pub(crate) client_id: String,
    pub(crate) producer_index: usize,
    pub(crate) shared_group: Option<String>,
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Subscribed filters, without any `$share/<group>/` prefix.
    pub(crate) filters: Arc<[String]>,
    /// The consumer's markers-then-classifier rule.
    pub(crate) decider: Decider,
    /// Messages this connection holds at most (`max_inflight`).
    pub(crate) max_inflight: usize,
    /// Connections of the consumer (`concurrency`).
    pub(crate) connections: usize,
}

impl PartialEq for Origin {
    fn eq(&self, other: &Self) -> bool {
        self.client_id == other.client_id
            && self.producer_index == other.producer_index
            && self.shared_group == other.shared_group
            && self.host == other.host
            && self.port == other.port
            && self.filters == other.filters
    }
}

impl Eq for Origin {}

impl Origin {
    /// Client id of the connection, including its `_N` suffix.
    #[must_use]
    pub fn client_id(&self) -> &str {
        &self.client_id
    }
    /// Index of the connection (0-based) within the consumer.
    #[must_use]
    pub fn producer_index(&self) -> usize {
        self.producer_index
    }
    /// Shared subscription group, if any.
    #[must_use]
    pub fn shared_group(&self) -> Option<&str> {
        self.shared_group.as_deref()
    }
    /// Broker host as configured.
    #[must_use]
    pub fn host(&self) -> &str {
        &self.host
    }
    /// Broker port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }
    /// The most messages this connection holds at once
    /// ([`max_inflight`](crate::ConsumerBuilder::max_inflight)): a layer that waits for
    /// more messages than this (a batcher) would wait for messages the broker will not
    /// send until some of these are acknowledged.
    #[must_use]
    pub fn max_inflight(&self) -> usize {
        self.max_inflight
    }
    /// How many connections the consumer runs
    /// ([`concurrency`](crate::ConsumerBuilder::concurrency)).
    #[must_use]
    pub fn connections(&self) -> usize {
        self.connections
    }
    /// The topic filters this consumer subscribes to (without `$share/<group>/`).
    #[must_use]
    pub fn filters(&self) -> &[String] {
        &self.filters
    }
    /// The disposition the consumer takes for a message of this connection whose
    /// service call returned `result`: a marker error if there is one, else the
    /// consumer's classifier (see [`crate::disposition`]).
    #[inline]
    pub fn disposition<T>(&self, result: &Result<T, BoxError>) -> Disposition {
        self.decider.decide(result.as_ref().map(|_| ()))
    }
}

/// One MQTT PUBLISH received from the broker.
///
/// Cheap to clone: the topic and payload are reference-counted [`Bytes`]. Layers pass
/// typed data down to the service through [`extensions`](Self::extensions_mut), the way
/// `http::Request` extensions work in tower-http.
#[derive(Debug, Clone)]
pub struct Message {
    pub(crate) topic: ByteString,
    pub(crate) payload: Bytes,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    pub(crate) dup: bool,
    pub(crate) pkid: u16,
    pub(crate) delivery_count: u32,
    pub(crate) properties: Option<Arc<PublishProperties>>,
    pub(crate) origin: Arc<Origin>,
    pub(crate) extensions: Extensions,
}

impl Message {
    /// The topic the message was published to. A shared subscription's
    /// `$share/<group>/` prefix never appears here: brokers deliver the real topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The QoS the message was delivered with (at most the subscription's QoS).
    pub fn qos(&self) -> QoS {
        self.qos
    }

    /// The retain flag.
    pub fn retain(&self) -> bool {
        self.retain
    }

    /// The DUP flag: the broker has sent this message before (a redelivery).
    ///
    /// It does not mean that an earlier delivery failed: when a session is resumed the
    /// broker sets it on every message it resends, also those the consumer never got
    /// to process. [`delivery_count`](Self::delivery_count) counts what this consumer
    /// saw.
    pub fn dup(&self) -> bool {
        self.dup
    }

    /// How many times this message has been delivered to this connection slot
    /// (`<client_id>_<index>`), this one included: 1 for a first delivery, 2 or more
    /// when it came back after an earlier delivery was not acknowledged (by
    /// [`OnFailure::Redeliver`](crate::OnFailure::Redeliver), `Noop`, a `Redeliver`
    /// marker, or a result that arrived after its connection closed).
    ///
    /// A rule can use it to stop a message that fails every time (a *poison* message)
    /// from coming back forever: `tower-mqtt-layers`' `max_deliveries(n)` fails it
    /// permanently once it is above `n`.
    ///
    /// **How it is counted.** The broker resends an unacknowledged message on the next
    /// connection of the session with the same packet id and the DUP flag set. Each
    /// slot remembers, in memory, the messages it did not acknowledge, keyed by packet
    /// id, topic and a hash of the payload, and their count so far. A message whose DUP
    /// flag is clear counts 1 and is not looked up. One with DUP set counts one more
    /// than remembered, or **2 when nothing is remembered**: the broker says it sent
    /// the message before, even if this process has no record of it. The entry is
    /// dropped when the message is acknowledged.
    ///
    /// **What it cannot know**, the same with MQTT 3.1.1 and 5:
    ///
    /// * **DUP is not "failed before".** On a resume the broker sets DUP on its whole
    ///   in-flight window: messages that were delivered but never reached the service
    ///   (they arrived while the connection was closing, or waited for a free slot) and
    ///   calls abandoned at the drain timeout come back with DUP set too. Such a
    ///   message counts 2 at least, although the service may be seeing it for the first
    ///   time.
    /// * **A restarted process starts again**: the memory is per process, so after a
    ///   restart a redelivered message counts 2, then 3, ... And a message that another
    ///   consumer of a shared group received before counts 1 or 2 here.
    /// * **Memory is bounded**: each slot keeps at most twice `max_inflight` entries
    ///   (16,384 at most), the oldest dropped first; a message whose entry was dropped
    ///   counts 2 again.
    /// * A payload, topic and packet id identical to an earlier message's that was
    ///   never acknowledged and never came back can inherit its count.
    ///
    /// So the count is a lower bound of the deliveries across restarts, and exact
    /// within one run for a message that keeps failing on the same slot.
    ///
    /// ```
    /// use tower_mqtt::{BoxError, Message};
    ///
    /// async fn handle(message: Message) -> Result<(), BoxError> {
    ///     if message.delivery_count() > 1 {
    ///         // An earlier delivery was not acknowledged: maybe go carefully.
    ///     }
    ///     Ok(())
    /// }
    /// ```
    pub fn delivery_count(&self) -> u32 {
        self.delivery_count
    }

    /// Packet identifier (0 for QoS 0). Unique only among the connection's unacked messages.
    pub fn pkid(&self) -> u16 {
        self.pkid
    }

    /// Index (0-based) of the connection that received the message.
    pub fn producer_index(&self) -> usize {
        self.origin.producer_index
    }

    /// Client id of the connection that received the message.
    pub fn client_id(&self) -> &str {
        &self.origin.client_id
    }

    /// The connection the message arrived on.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// A shared handle to [`origin`](Self::origin), for a layer that needs it after the
    /// message has been handed to the inner service (e.g. to ask
    /// [`Origin::disposition`] when the call finishes).
    pub fn origin_shared(&self) -> Arc<Origin> {
        self.origin.clone()
    }

    /// The first subscribed filter this message was delivered for (see
    /// [`subscriptions`](Self::subscriptions)): the low-cardinality name of the stream
    /// a message belongs to (e.g. `sensors/+/temp` for `sensors/7/temp`).
    pub fn subscription(&self) -> Option<&str> {
        self.subscriptions().next()
    }

    /// Every subscribed filter this message was delivered for.
    ///
    /// MQTT 5: the consumer gives each filter a Subscription Identifier, and the
    /// broker lists the identifiers of the subscriptions a PUBLISH was sent for, so
    /// this names exactly those filters. A broker may send a message that matches
    /// several of the consumer's filters once (with every identifier) or once per
    /// matching subscription (one identifier each). mosquitto 2.0 does the latter on
    /// MQTT 5: the service is called once per copy, each copy is acknowledged on its
    /// own, and each names its own filter here (`tests/subscription_ids.rs`); make such
    /// filters disjoint, or the handler idempotent, if a message must be processed once.
    /// MQTT 3.1.1 (or a PUBLISH without identifiers): every subscribed filter that
    /// matches the topic; mosquitto then sends the message once.
    ///
    /// ```
    /// use tower_mqtt::testing::test_message;
    ///
    /// // A test message's consumer subscribes to its topic.
    /// let message = test_message("sensors/7/temp", "21.5");
    /// assert_eq!(message.subscriptions().collect::<Vec<_>>(), ["sensors/7/temp"]);
    /// ```
    pub fn subscriptions(&self) -> impl Iterator<Item = &str> + '_ {
        let filters = &self.origin.filters;
        let ids = self
            .properties
            .as_deref()
            .map_or(&[][..], |p| &p.subscription_identifiers[..]);
        let by_id = ids
            .iter()
            .filter_map(move |id| filters.get(id.checked_sub(1)?))
            .map(String::as_str);
        let by_topic = filters
            .iter()
            .filter(move |f| ids.is_empty() && crate::topic::matches(f, &self.topic))
            .map(String::as_str);
        by_id.chain(by_topic)
    }

    /// MQTT 5 PUBLISH properties (user properties included); `None` on MQTT 3.1.1 or
    /// when the broker sent none.
    pub fn properties(&self) -> Option<&PublishProperties> {
        self.properties.as_deref()
    }

    /// Typed data attached by layers: an [`http::Extensions`] map keyed by type, as in
    /// tower-http (for example the retry layer's attempt number, the router's captures).
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// Typed data attached by layers ([`http::Extensions`]), mutably.
    pub fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.extensions
    }
}
