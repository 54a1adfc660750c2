//! **The one place where a service result becomes an acknowledgement decision.**
//!
//! The consumer calls your service with each [`Message`](crate::Message). When the call
//! finishes, its `Result` becomes a [`Disposition`] in two steps:
//!
//! 1. **A marker error, if the service returned one.** [`Reject`], [`Permanent`] and
//!    [`Redeliver`] let a service (or a layer) decide for *this* message; they are found
//!    anywhere in the error's [`source`](std::error::Error::source) chain, so layers that
//!    wrap errors do not hide them ([`marker`]).
//! 2. **Otherwise the consumer's classifier** ([`Classify`]): by default the
//!    [`AckPolicy`] built from [`OnSuccess`] and [`OnFailure`], or any closure given to
//!    [`ConsumerBuilder::classify`](crate::ConsumerBuilder::classify).
//!
//! The connection driver then carries the disposition out on the wire
//! ([`Disposition::ack_reason`]). Layers never acknowledge anything: they shape the
//! `Result`, and can ask [`Origin::disposition`](crate::Origin::disposition) what the
//! consumer will do with it.
//!
#![doc = include_str!("../docs/dispositions.md")]

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use crate::config::QoS;
use crate::error::BoxError;

/// What to do when the service returns `Ok`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnSuccess {
    /// Acknowledge the message (PUBACK for QoS 1, PUBREC for QoS 2). The default.
    #[default]
    Ack,
}

/// What to do when the service returns `Err`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnFailure {
    /// Leave the message unacknowledged. The broker sends it again only when the
    /// session is next resumed (a reconnect or restart with `clean_start(false)`).
    /// Until then it occupies one of the broker's in-flight slots: when failures fill
    /// the broker's window, no new messages arrive on that connection.
    Noop,
    /// Acknowledge the message anyway: it will not come back.
    Ack,
    /// Leave it unacknowledged and get it back without a restart (the default). Once
    /// failures would fill the in-flight window, or after
    /// [`redeliver_after`](crate::ConsumerBuilder::redeliver_after), the connection stops
    /// taking new messages, lets in-flight successes acknowledge, disconnects cleanly and
    /// resumes its session, so the broker redelivers the failures (with DUP set).
    #[default]
    Redeliver,
    /// Acknowledge it as failed. MQTT 5 sends reason code 0x80 (Unspecified error),
    /// which brokers count as acknowledged and never resend; MQTT 3.1.1 has no reason
    /// codes and sends a plain acknowledgement.
    Reject,
}

/// The decision taken for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Disposition {
    /// Acknowledge it.
    Ack,
    /// Leave it unacknowledged until the session is next resumed.
    Leave,
    /// Leave it unacknowledged and resume the session soon so it comes back.
    Redeliver,
    /// Acknowledge it as failed: MQTT 5 reason 0x80 (Unspecified error); MQTT 3.1.1 a
    /// plain acknowledgement. The same as `RejectWith(RejectReason::UnspecifiedError)`.
    Reject,
    /// Acknowledge it as failed with this MQTT 5 reason code (MQTT 3.1.1: a plain
    /// acknowledgement). Chosen by a service through the [`Reject`] marker.
    RejectWith(RejectReason),
}

impl Disposition {
    /// Whether an acknowledgement goes to the broker (for a QoS 1 or 2 message).
    #[must_use]
    #[inline]
    pub fn acknowledges(self) -> bool {
        self.ack_reason(QoS::AtLeastOnce).is_some()
    }

    /// What goes on the wire for a message of `qos`: `Some(reason code)` when it is
    /// acknowledged (PUBACK for QoS 1, PUBREC for QoS 2; `0x00` is Success, and MQTT
    /// 3.1.1 sends no reason code at all), `None` when nothing is sent. QoS 0 messages
    /// are never acknowledged.
    #[must_use]
    #[inline]
    pub fn ack_reason(self, qos: QoS) -> Option<u8> {
        if qos == QoS::AtMostOnce {
            return None;
        }
        match self {
            Self::Ack => Some(0x00),
            Self::Reject => Some(RejectReason::UnspecifiedError.code()),
            Self::RejectWith(reason) => Some(reason.code()),
            Self::Leave | Self::Redeliver => None,
        }
    }

    /// Whether a message of `qos` with this disposition is withheld for redelivery (it
    /// counts toward the failures that make the connection resume its session).
    #[must_use]
    #[inline]
    pub fn withholds(self, qos: QoS) -> bool {
        self == Self::Redeliver && qos != QoS::AtMostOnce
    }

    /// Stable lowercase name, used in telemetry (`RejectWith` is `"reject"` too; its
    /// code is in [`ack_reason`](Self::ack_reason)).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ack => "ack",
            Self::Leave => "leave",
            Self::Redeliver => "redeliver",
            Self::Reject | Self::RejectWith(_) => "reject",
        }
    }

    /// A call still running when the drain timeout passes (shutdown or a redelivery
    /// reconnect) is abandoned: not acknowledged, so the broker sends it again on the
    /// next session.
    pub(crate) const ABANDONED: Self = Self::Leave;

    /// A PUBLISH that arrives while its connection is closing is not processed and not
    /// acknowledged: the broker sends it again on the next session.
    pub(crate) const ARRIVED_WHILE_CLOSING: Self = Self::Leave;

    /// A QoS 1 or 2 PUBLISH still buffered when the broker has already closed the
    /// connection (its FIN arrived behind it) is not processed: its ack could not reach
    /// the broker, which sends it again on the next session, so processing it now would
    /// only make a duplicate. (QoS 0 is processed: nothing sends it again.)
    pub(crate) const ARRIVED_BEFORE_BROKER_CLOSED: Self = Self::Leave;

    /// A result that arrives after its connection closed cannot be acknowledged (an ack
    /// on a later connection could name another message with the same packet id): the
    /// broker redelivers the message on the next session.
    pub(crate) const STALE: Self = Self::Leave;
}

impl fmt::Display for Disposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An MQTT 5 reason code for acknowledging a message as failed (the PUBACK / PUBREC
/// error codes of MQTT 5 section 3.4.2.1). Brokers treat such a message as delivered:
/// it is not sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// 0x80 Unspecified error.
    UnspecifiedError,
    /// 0x83 Implementation specific error: valid, but this consumer does not accept it.
    ImplementationSpecificError,
    /// 0x87 Not authorized.
    NotAuthorized,
    /// 0x90 Topic Name invalid.
    TopicNameInvalid,
    /// 0x97 Quota exceeded.
    QuotaExceeded,
    /// 0x99 Payload format invalid.
    PayloadFormatInvalid,
}

impl RejectReason {
    /// The reason code byte.
    #[must_use]
    pub fn code(self) -> u8 {
        match self {
            Self::UnspecifiedError => 0x80,
            Self::ImplementationSpecificError => 0x83,
            Self::NotAuthorized => 0x87,
            Self::TopicNameInvalid => 0x90,
            Self::QuotaExceeded => 0x97,
            Self::PayloadFormatInvalid => 0x99,
        }
    }

    /// The name MQTT 5 gives the code.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnspecifiedError => "unspecified error",
            Self::ImplementationSpecificError => "implementation specific error",
            Self::NotAuthorized => "not authorized",
            Self::TopicNameInvalid => "topic name invalid",
            Self::QuotaExceeded => "quota exceeded",
            Self::PayloadFormatInvalid => "payload format invalid",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:02x})", self.as_str(), self.code())
    }
}

/// Turns a finished call's result into a [`Disposition`]: the consumer's rule for every
/// message that carries no [`marker`] error.
///
/// Implemented by [`AckPolicy`] (the default, from `on_success` / `on_failure`) and by
/// every `Fn(Result<(), &BoxError>) -> Disposition`, so a closure can inspect the error:
///
/// ```
/// use tower_mqtt::{BoxError, Disposition};
///
/// # fn is_transient(_: &BoxError) -> bool { true }
/// let classify = |result: Result<(), &BoxError>| match result {
///     Ok(()) => Disposition::Ack,
///     Err(e) if is_transient(e) => Disposition::Redeliver,
///     Err(_) => Disposition::Reject,
/// };
/// # let _ = tower_mqtt::Consumer::builder(tower_mqtt::Config::new("localhost")).classify(classify);
/// ```
///
/// A marker error always wins over the classifier: it is the service's own word about
/// one message.
pub trait Classify: Send + Sync + 'static {
    /// The disposition for a call that returned `result`.
    fn classify(&self, result: Result<(), &BoxError>) -> Disposition;
}

impl Classify for AckPolicy {
    fn classify(&self, result: Result<(), &BoxError>) -> Disposition {
        match result {
            Ok(()) => self.on_ok(),
            Err(_) => self.on_failure(),
        }
    }
}

impl<F> Classify for F
where
    F: Fn(Result<(), &BoxError>) -> Disposition + Send + Sync + 'static,
{
    fn classify(&self, result: Result<(), &BoxError>) -> Disposition {
        self(result)
    }
}

/// The pair of rules that turn a service result into a [`Disposition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AckPolicy {
    /// Rule for `Ok`.
    pub on_success: OnSuccess,
    /// Rule for `Err`.
    pub on_failure: OnFailure,
}

impl AckPolicy {
    /// Decide what happens to a message whose service call returned `result`: a
    /// [`marker`] error if there is one, else these rules.
    #[inline]
    pub fn decide<T>(&self, result: &Result<T, BoxError>) -> Disposition {
        match result {
            Ok(_) => self.on_ok(),
            Err(e) => marker(&**e).unwrap_or_else(|| self.on_failure()),
        }
    }

    #[inline]
    fn on_ok(self) -> Disposition {
        match self.on_success {
            OnSuccess::Ack => Disposition::Ack,
        }
    }

    /// The disposition of a failed call.
    #[inline]
    fn on_failure(self) -> Disposition {
        match self.on_failure {
            OnFailure::Noop => Disposition::Leave,
            OnFailure::Ack => Disposition::Ack,
            OnFailure::Redeliver => Disposition::Redeliver,
            OnFailure::Reject => Disposition::Reject,
        }
    }
}

/// How one consumer decides: markers first, then its classifier. Carried by every
/// message's [`Origin`](crate::Origin).
#[derive(Clone)]
pub(crate) struct Decider {
    rule: Rule,
    /// Whether the session survives a reconnect (`clean_start(false)`). Without it a
    /// redelivery reconnect would throw the withheld messages away, so `Redeliver`
    /// becomes `Leave`.
    keeps_session: bool,
}

/// The classifier, with the default policy kept apart so that the common case, a
/// success under `on_success(Ack)`, costs no dynamic call on the per-message path.
#[derive(Clone)]
enum Rule {
    Policy(AckPolicy),
    Custom(Arc<dyn Classify>),
}

impl Decider {
    /// Decide with `on_success` / `on_failure`.
    pub(crate) fn policy(policy: AckPolicy, keeps_session: bool) -> Self {
        Self {
            rule: Rule::Policy(policy),
            keeps_session,
        }
    }

    /// Decide with a classifier of the user's.
    pub(crate) fn new(classifier: Arc<dyn Classify>, keeps_session: bool) -> Self {
        Self {
            rule: Rule::Custom(classifier),
            keeps_session,
        }
    }

    /// The disposition for a finished call.
    #[inline]
    pub(crate) fn decide(&self, result: Result<(), &BoxError>) -> Disposition {
        let d = match (&self.rule, result) {
            (Rule::Policy(policy), Ok(())) => return policy.on_ok(),
            (Rule::Custom(classifier), Ok(())) => classifier.classify(result),
            (rule, Err(e)) => match marker(&**e) {
                Some(d) => d,
                None => match rule {
                    Rule::Policy(policy) => policy.on_failure(),
                    Rule::Custom(classifier) => classifier.classify(result),
                },
            },
        };
        if d == Disposition::Redeliver && !self.keeps_session {
            Disposition::Leave
        } else {
            d
        }
    }
}

impl Default for Decider {
    fn default() -> Self {
        Self::policy(AckPolicy::default(), true)
    }
}

impl fmt::Debug for Decider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decider")
            .field("keeps_session", &self.keeps_session)
            .finish_non_exhaustive()
    }
}

/// The disposition a marker error ([`Reject`], [`Permanent`], [`Redeliver`]) in `error`'s source chain asks for, if
/// there is one (the outermost marker wins).
///
/// | marker | disposition |
/// |---|---|
/// | [`Reject`] | [`Disposition::RejectWith`] its reason |
/// | [`Permanent`] | [`Disposition::Reject`] |
/// | [`Redeliver`] | [`Disposition::Redeliver`] |
///
/// Retry layers use it too: a permanent or rejected failure is not worth retrying.
pub fn marker(error: &(dyn StdError + 'static)) -> Option<Disposition> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(r) = e.downcast_ref::<Reject>() {
            return Some(Disposition::RejectWith(r.reason));
        }
        if e.is::<Permanent>() {
            return Some(Disposition::Reject);
        }
        if e.is::<Redeliver>() {
            return Some(Disposition::Redeliver);
        }
        next = e.source();
    }
    None
}

/// Marker error: acknowledge this message as failed, with an MQTT 5 reason code of the
/// service's choosing; it is not redelivered. MQTT 3.1.1 sends a plain acknowledgement.
///
/// ```
/// use tower_mqtt::disposition::{Reject, RejectReason};
/// # fn parse(_: &[u8]) -> Result<f64, std::num::ParseFloatError> { "x".parse() }
/// # fn handle(payload: &[u8]) -> Result<f64, tower_mqtt::BoxError> {
/// let reading = parse(payload).map_err(|e| Reject::new(RejectReason::PayloadFormatInvalid, e))?;
/// # Ok(reading) }
/// ```
#[derive(Debug)]
pub struct Reject {
    reason: RejectReason,
    source: BoxError,
}

impl Reject {
    /// Reject with `reason` because of `source`.
    pub fn new(reason: RejectReason, source: impl Into<BoxError>) -> Self {
        Self {
            reason,
            source: source.into(),
        }
    }

    /// The reason code sent to the broker (MQTT 5).
    #[must_use]
    pub fn reason(&self) -> RejectReason {
        self.reason
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rejected with {}: {}", self.reason, self.source)
    }
}

impl StdError for Reject {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

/// Marker error: this failure will not go away, so the message must not come back. It
/// is acknowledged as failed ([`Disposition::Reject`]: MQTT 5 reason 0x80, MQTT 3.1.1 a
/// plain acknowledgement) whatever the consumer's `on_failure`.
#[derive(Debug)]
pub struct Permanent {
    source: BoxError,
}

impl Permanent {
    /// A permanent failure caused by `source`.
    pub fn new(source: impl Into<BoxError>) -> Self {
        Self {
            source: source.into(),
        }
    }
}

impl fmt::Display for Permanent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "permanent failure: {}", self.source)
    }
}

impl StdError for Permanent {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

/// Marker error: bring this message back by resuming the session
/// ([`Disposition::Redeliver`]), whatever the consumer's `on_failure`. Without a kept
/// session (`clean_start(true)`) a reconnect would lose it, so it is left
/// unacknowledged instead ([`Disposition::Leave`]).
#[derive(Debug)]
pub struct Redeliver {
    source: BoxError,
}

impl Redeliver {
    /// A failure worth another attempt later, caused by `source`.
    pub fn new(source: impl Into<BoxError>) -> Self {
        Self {
            source: source.into(),
        }
    }
}

impl fmt::Display for Redeliver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "redeliver: {}", self.source)
    }
}

impl StdError for Redeliver {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Result<(), BoxError> {
        Ok(())
    }

    fn err(e: impl Into<BoxError>) -> Result<(), BoxError> {
        Err(e.into())
    }

    /// The borrowed form classifiers take.
    fn r(result: &Result<(), BoxError>) -> Result<(), &BoxError> {
        result.as_ref().map(|_| ())
    }

    #[test]
    fn every_rule_maps_to_its_disposition() {
        let policy = |on_failure| AckPolicy {
            on_success: OnSuccess::Ack,
            on_failure,
        };
        assert_eq!(policy(OnFailure::Noop).decide(&ok()), Disposition::Ack);
        assert_eq!(
            policy(OnFailure::Noop).decide(&err("boom")),
            Disposition::Leave
        );
        assert_eq!(
            policy(OnFailure::Ack).decide(&err("boom")),
            Disposition::Ack
        );
        assert_eq!(
            policy(OnFailure::Redeliver).decide(&err("boom")),
            Disposition::Redeliver
        );
        assert_eq!(
            policy(OnFailure::Reject).decide(&err("boom")),
            Disposition::Reject
        );
        assert_eq!(AckPolicy::default().on_failure, OnFailure::Redeliver);
    }

    #[test]
    fn the_policy_and_closures_classify() {
        let policy = AckPolicy {
            on_success: OnSuccess::Ack,
            on_failure: OnFailure::Noop,
        };
        assert_eq!(policy.classify(r(&ok())), Disposition::Ack);
        assert_eq!(policy.classify(r(&err("x"))), Disposition::Leave);
        let by_message = |r: Result<(), &BoxError>| match r {
            Ok(()) => Disposition::Ack,
            Err(e) if e.to_string().contains("busy") => Disposition::Redeliver,
            Err(_) => Disposition::Reject,
        };
        assert_eq!(
            by_message.classify(r(&err("db busy"))),
            Disposition::Redeliver
        );
        assert_eq!(
            by_message.classify(r(&err("bad json"))),
            Disposition::Reject
        );
        let boxed: Arc<dyn Classify> = Arc::new(by_message);
        assert_eq!(boxed.classify(r(&ok())), Disposition::Ack);
    }

    /// An error of some layer that wraps the service's error.
    #[derive(Debug)]
    struct Layered(BoxError);
    impl fmt::Display for Layered {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("layer")
        }
    }
    impl StdError for Layered {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn markers_are_found_anywhere_in_the_source_chain() {
        let reject = || Reject::new(RejectReason::PayloadFormatInvalid, "not JSON");
        let expect = Some(Disposition::RejectWith(RejectReason::PayloadFormatInvalid));
        assert_eq!(marker(&reject()), expect);
        assert_eq!(marker(&Layered(Box::new(reject()))), expect);
        assert_eq!(
            marker(&Layered(Box::new(Layered(Box::new(reject()))))),
            expect
        );
        assert_eq!(marker(&Permanent::new("x")), Some(Disposition::Reject));
        assert_eq!(
            marker(&Layered(Box::new(Redeliver::new("x")))),
            Some(Disposition::Redeliver)
        );
        assert_eq!(marker(&Layered("plain".into())), None);
        // The outermost marker wins.
        let nested = Permanent::new(Redeliver::new("inner"));
        assert_eq!(marker(&nested), Some(Disposition::Reject));
        // The message and the cause stay readable.
        assert_eq!(
            reject().to_string(),
            "rejected with payload format invalid (0x99): not JSON"
        );
        assert_eq!(reject().source().unwrap().to_string(), "not JSON");
    }

    #[test]
    fn a_marker_wins_over_the_classifier_and_the_policy() {
        let always_ack = |_: Result<(), &BoxError>| Disposition::Ack;
        let decider = Decider::new(Arc::new(always_ack), true);
        assert_eq!(
            decider.decide(r(&err(Permanent::new("x")))),
            Disposition::Reject
        );
        assert_eq!(decider.decide(r(&err("plain"))), Disposition::Ack);
        let policy = AckPolicy {
            on_success: OnSuccess::Ack,
            on_failure: OnFailure::Ack,
        };
        assert_eq!(
            policy.decide(&err(Redeliver::new("x"))),
            Disposition::Redeliver
        );
    }

    #[test]
    fn without_a_kept_session_redeliver_becomes_leave() {
        let decider = Decider::new(Arc::new(AckPolicy::default()), false);
        assert_eq!(decider.decide(r(&err("x"))), Disposition::Leave);
        assert_eq!(
            decider.decide(r(&err(Redeliver::new("x")))),
            Disposition::Leave
        );
        assert_eq!(decider.decide(r(&ok())), Disposition::Ack);
        let kept = Decider::default();
        assert_eq!(kept.decide(r(&err("x"))), Disposition::Redeliver);
    }

    #[test]
    fn each_disposition_says_what_goes_on_the_wire() {
        use Disposition::*;
        for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
            assert_eq!(Ack.ack_reason(qos), Some(0x00));
            assert_eq!(Reject.ack_reason(qos), Some(0x80));
            assert_eq!(
                RejectWith(RejectReason::QuotaExceeded).ack_reason(qos),
                Some(0x97)
            );
            assert_eq!(Leave.ack_reason(qos), None);
            assert_eq!(Redeliver.ack_reason(qos), None);
            assert!(Redeliver.withholds(qos));
        }
        for d in [Ack, Reject, Leave, Redeliver] {
            assert_eq!(d.ack_reason(QoS::AtMostOnce), None, "{d}");
            assert!(!d.withholds(QoS::AtMostOnce));
        }
        assert!(Ack.acknowledges() && Reject.acknowledges());
        assert!(!Leave.acknowledges() && !Redeliver.acknowledges());
        assert_eq!(Disposition::ABANDONED.ack_reason(QoS::AtLeastOnce), None);
        assert_eq!(RejectWith(RejectReason::NotAuthorized).as_str(), "reject");
    }
}
