//! What the single-purpose bench binaries (`batch-bench`, `rate-limit-bench`) share.

use tower_mqtt::{Config, Consumer, ConsumerBuilder, ProtoVer, QoS};

/// A comma-separated list of numbers from a flag's value.
pub(crate) fn list<T: std::str::FromStr>(value: &str) -> Vec<T> {
    value
        .split(',')
        .map(|v| v.parse().unwrap_or_else(|_| panic!("not a number: {v}")))
        .collect()
}

/// A QoS 1, MQTT 5 consumer of `topic` on the private broker at `port`.
pub(crate) fn consumer(port: u16, id: &str, topic: &str) -> ConsumerBuilder {
    Consumer::builder(
        Config::new("127.0.0.1")
            .port(port)
            .client_id(id)
            .proto_ver(ProtoVer::V5),
    )
    .topic(topic, QoS::AtLeastOnce)
}
