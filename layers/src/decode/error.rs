use std::error::Error as StdError;
use std::fmt;

use tower_mqtt::{BoxError, Message};

/// A payload that its [`Decoder`](super::Decoder) could not decode: names the topic,
/// the format, and the decoder's own message (serde's, for JSON) as its
/// [`source`](StdError::source).
///
/// The [`Decode`](super::Decode) service returns it wrapped in a
/// [`Reject`](tower_mqtt::Reject) marker with reason
/// [`PayloadFormatInvalid`](tower_mqtt::RejectReason::PayloadFormatInvalid), so the
/// message is acknowledged as failed (MQTT 5 reason code 0x99) and never retried or
/// redelivered. Find it in an error with
/// [`find_in_chain`](crate::retry::find_in_chain) or by walking the source chain.
///
/// ```
/// # #[cfg(feature = "json")] {
/// use tower_mqtt::testing::test_message;
/// use tower_mqtt_layers::decode::{DecodeError, Decoder, Json};
///
/// let message = test_message("sensors/7/temp", "not json");
/// let error = Decoder::<f64>::decode(&Json, &message).unwrap_err();
/// let error = DecodeError::new(&message, "JSON", error);
/// assert_eq!(error.topic(), "sensors/7/temp");
/// assert_eq!(
///     error.to_string(),
///     "cannot decode the payload on topic \"sensors/7/temp\" as JSON: expected ident at line 1 column 2"
/// );
/// # }
/// ```
#[derive(Debug)]
pub struct DecodeError {
    topic: String,
    format: &'static str,
    source: BoxError,
}

impl DecodeError {
    /// `message`'s payload is not valid `format` (e.g. `"JSON"`) because of `source`.
    pub fn new(message: &Message, format: &'static str, source: impl Into<BoxError>) -> Self {
        Self {
            topic: message.topic().to_owned(),
            format,
            source: source.into(),
        }
    }

    /// The topic of the message.
    #[must_use]
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The format the payload should have had ([`Decoder::format`](super::Decoder::format)).
    #[must_use]
    pub fn format(&self) -> &'static str {
        self.format
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot decode the payload on topic {:?} as {}: {}",
            self.topic, self.format, self.source
        )
    }
}

impl StdError for DecodeError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}
