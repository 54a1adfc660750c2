use tower_mqtt::{BoxError, Message};

/// Turns a message's payload into a `T`: the format half of the
/// [`Decode`](super::Decode) layer.
///
/// Implemented by [`Json`](super::Json) (feature `json`) and by every
/// `Fn(&Message) -> Result<T, E> + Clone` closure, so any format plugs in (CBOR,
/// MessagePack, protobuf, or a choice by the MQTT 5 content type):
///
/// ```
/// use tower_mqtt::Message;
/// use tower_mqtt_layers::decode::DecodeLayer;
///
/// // A payload that is a decimal number in UTF-8 text.
/// let layer = DecodeLayer::new(|message: &Message| -> Result<f64, Box<dyn std::error::Error + Send + Sync>> {
///     Ok(std::str::from_utf8(message.payload())?.trim().parse()?)
/// });
/// # let _ = layer;
/// ```
pub trait Decoder<T> {
    /// Why a payload could not be decoded (serde's error, for instance).
    type Error: Into<BoxError>;

    /// Decode `message`'s payload.
    ///
    /// # Errors
    ///
    /// When the payload is not a valid `T` in this format.
    fn decode(&self, message: &Message) -> Result<T, Self::Error>;

    /// The name of the format for [`DecodeError`](super::DecodeError) texts (e.g.
    /// `"JSON"`); by default the name of `T`.
    fn format(&self) -> &'static str {
        std::any::type_name::<T>()
    }
}

impl<T, E, F> Decoder<T> for F
where
    F: Fn(&Message) -> Result<T, E>,
    E: Into<BoxError>,
{
    type Error = E;

    fn decode(&self, message: &Message) -> Result<T, E> {
        self(message)
    }
}

/// JSON payloads, decoded with `serde_json` into any `T: DeserializeOwned` (feature
/// `json`).
///
/// ```
/// use tower_mqtt::testing::test_message;
/// use tower_mqtt_layers::decode::{Decoder, Json};
///
/// let reading: f64 = Json.decode(&test_message("t", "21.5")).unwrap();
/// assert_eq!(reading, 21.5);
/// ```
#[cfg(feature = "json")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

#[cfg(feature = "json")]
impl<T> Decoder<T> for Json
where
    T: serde::de::DeserializeOwned,
{
    type Error = serde_json::Error;

    fn decode(&self, message: &Message) -> Result<T, serde_json::Error> {
        serde_json::from_slice(message.payload())
    }

    fn format(&self) -> &'static str {
        "JSON"
    }
}
