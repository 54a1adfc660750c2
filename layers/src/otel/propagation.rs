//! W3C trace context over MQTT 5 user properties.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tower_mqtt::Message;

/// Reads W3C trace context from a message's MQTT 5 user properties.
struct UserProperties<'a>(&'a Message);

impl Extractor for UserProperties<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.properties()?.user_property(key)
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .properties()
            .map(|p| p.user_properties.iter().map(|(k, _)| k.as_str()).collect())
            .unwrap_or_default()
    }
}

/// The parent of `message`'s span: the publisher's trace when the message carries one,
/// else the current context.
pub(super) fn parent_context(message: &Message) -> Context {
    let current = Context::current();
    if message.properties().is_none() {
        return current;
    }
    TraceContextPropagator::new().extract_with_context(&current, &UserProperties(message))
}

/// The MQTT 5 user properties that carry `cx`'s trace to a consumer: add them to the
/// PUBLISH (e.g. rumqttc's `PublishProperties::user_properties`).
#[must_use]
pub fn trace_context_properties(cx: &Context) -> Vec<(String, String)> {
    /// Collects the injected fields as user properties.
    struct Props(Vec<(String, String)>);

    impl Injector for Props {
        fn set(&mut self, key: &str, value: String) {
            self.0.push((key.to_owned(), value));
        }
    }

    let mut props = Props(Vec::with_capacity(2));
    TraceContextPropagator::new().inject_context(cx, &mut props);
    props.0
}
