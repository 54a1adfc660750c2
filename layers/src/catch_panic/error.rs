use std::any::Any;
use std::error::Error as StdError;
use std::fmt;

/// The inner service panicked while handling a message: the error the
/// [`CatchPanic`](super::CatchPanic) service returns instead of the panic.
///
/// Its text includes the panic message when the panic carried one (`panic!` with a
/// string or a format string, `unwrap`, `expect`, ...).
///
/// ```
/// use tower_mqtt_layers::catch_panic::Panicked;
///
/// let payload = std::panic::catch_unwind(|| panic!("sensor {} is on fire", 7)).unwrap_err();
/// let error = Panicked::from_payload(&*payload);
/// assert_eq!(error.message(), Some("sensor 7 is on fire"));
/// assert_eq!(error.to_string(), "the service panicked: sensor 7 is on fire");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Panicked {
    message: Option<String>,
}

impl Panicked {
    /// The error for a panic whose payload (as `catch_unwind` returns it) is `payload`:
    /// a `&str` or `String` payload becomes the message.
    #[must_use]
    pub fn from_payload(payload: &(dyn Any + Send)) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned());
        Self { message }
    }

    /// The panic message, when the payload was a string.
    #[must_use]
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }
}

impl fmt::Display for Panicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.message {
            Some(message) => write!(f, "the service panicked: {message}"),
            None => f.write_str("the service panicked (with a payload that is not a string)"),
        }
    }
}

impl StdError for Panicked {}
