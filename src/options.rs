//! [`ConsumerOptions`]: the plain-data options of a
//! [`ConsumerBuilder`](crate::ConsumerBuilder), deserializable from a config file
//! (feature `serde`).
//!
//! It sits above `config` and `disposition` because it names the failure rules.

use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::config::{duration, optional_duration, QoS, ReadPacing};
use crate::disposition::{OnFailure, OnSuccess};

/// The options of a [`ConsumerBuilder`](crate::ConsumerBuilder) that are plain data,
/// for loading from a config file with any serde format; apply them with
/// [`ConsumerBuilder::options`](crate::ConsumerBuilder::options).
///
/// Every field is named as the builder method it calls, and an unset field leaves the
/// builder as it was (its default, or what was set before). Durations are strings with
/// a unit (`"250ms"`, `"5s"`, `"1m30s"`; units `ms`, `s`, `m`, `h`, `d`). An unknown
/// field is an error naming it. Values are checked by
/// [`build`](crate::ConsumerBuilder::build), with the same [`ConfigError`](crate::ConfigError)s
/// as when set in code. What is code rather than data (`classify`, `on_event`,
/// `reconnect_backoff_maker`) is set on the builder.
///
/// ```
/// use serde::Deserialize;
/// use tower_mqtt::{Config, Consumer, ConsumerOptions};
///
/// #[derive(Deserialize)]
/// struct Settings {
///     broker: Config,
///     consumer: ConsumerOptions,
/// }
///
/// let settings: Settings = serde_json::from_str(r#"{
///     "broker": "mqtt://127.0.0.1:1883?client_id=ingest",
///     "consumer": {
///         "topics": [{ "filter": "sensors/+/temp", "qos": 1 }],
///         "max_inflight": 50,
///         "on_failure": "redeliver",
///         "drain_timeout": "10s",
///         "reconnect_backoff": { "min": "250ms", "max": "1m" }
///     }
/// }"#)?;
/// let consumer = Consumer::builder(settings.broker)
///     .options(settings.consumer)
///     .build()?;
/// # drop(consumer);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ConsumerOptions {
    /// [`topic`](crate::ConsumerBuilder::topic) for each entry, in order, after the
    /// topics already added.
    #[serde(default)]
    pub topics: Vec<Subscription>,
    /// [`shared_group`](crate::ConsumerBuilder::shared_group).
    pub shared_group: Option<String>,
    /// [`concurrency`](crate::ConsumerBuilder::concurrency).
    pub concurrency: Option<usize>,
    /// [`max_inflight`](crate::ConsumerBuilder::max_inflight).
    pub max_inflight: Option<usize>,
    /// [`on_success`](crate::ConsumerBuilder::on_success): `"ack"`.
    #[serde(default, deserialize_with = "on_success")]
    pub on_success: Option<OnSuccess>,
    /// [`on_failure`](crate::ConsumerBuilder::on_failure): `"redeliver"`, `"noop"`,
    /// `"ack"` or `"reject"`.
    #[serde(default, deserialize_with = "on_failure")]
    pub on_failure: Option<OnFailure>,
    /// [`drain_timeout`](crate::ConsumerBuilder::drain_timeout).
    #[serde(default, deserialize_with = "optional_duration")]
    pub drain_timeout: Option<Duration>,
    /// [`redeliver_after`](crate::ConsumerBuilder::redeliver_after).
    #[serde(default, deserialize_with = "optional_duration")]
    pub redeliver_after: Option<Duration>,
    /// [`reconnect_backoff`](crate::ConsumerBuilder::reconnect_backoff).
    pub reconnect_backoff: Option<BackoffBounds>,
    /// [`max_reconnect_attempts`](crate::ConsumerBuilder::max_reconnect_attempts): a
    /// limit; leave it out to retry forever (the builder's default).
    pub max_reconnect_attempts: Option<u32>,
    /// [`read_pacing`](crate::ConsumerBuilder::read_pacing): `"off"`, or the rate in
    /// messages per second from which holding reads is tried (`20000`).
    #[serde(default, deserialize_with = "read_pacing")]
    pub read_pacing: Option<ReadPacing>,
}

/// One subscription of [`ConsumerOptions::topics`]: `{ filter = "a/+", qos = 1 }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Subscription {
    /// The topic filter (no `$share/` prefix: use `shared_group`).
    pub filter: String,
    /// The QoS to subscribe with: `0`, `1` or `2`.
    pub qos: QoS,
}

impl Subscription {
    /// A subscription to `filter` with `qos`.
    pub fn new(filter: impl Into<String>, qos: QoS) -> Self {
        Self {
            filter: filter.into(),
            qos,
        }
    }
}

/// The bounds of [`ConsumerOptions::reconnect_backoff`]: `{ min = "100ms", max = "30s" }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BackoffBounds {
    /// The first wait (at least this much, at most twice as much).
    #[serde(deserialize_with = "duration")]
    pub min: Duration,
    /// The longest wait.
    #[serde(deserialize_with = "duration")]
    pub max: Duration,
}

impl BackoffBounds {
    /// Bounds from `min` to `max`.
    #[must_use]
    pub fn new(min: Duration, max: Duration) -> Self {
        Self { min, max }
    }
}

/// A rule named in snake case, one of `names` (in the order of `rules`).
fn rule<'de, D: Deserializer<'de>, T: Copy>(
    deserializer: D,
    names: &'static [&'static str],
    rules: &[T],
) -> Result<Option<T>, D::Error> {
    let name = String::deserialize(deserializer)?;
    match names.iter().position(|n| *n == name) {
        Some(i) => Ok(Some(rules[i])),
        None => Err(de::Error::unknown_variant(&name, names)),
    }
}

fn on_success<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<OnSuccess>, D::Error> {
    rule(deserializer, &["ack"], &[OnSuccess::Ack])
}

fn on_failure<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<OnFailure>, D::Error> {
    rule(
        deserializer,
        &["redeliver", "noop", "ack", "reject"],
        &[
            OnFailure::Redeliver,
            OnFailure::Noop,
            OnFailure::Ack,
            OnFailure::Reject,
        ],
    )
}

/// `"off"` or a number of messages per second.
fn read_pacing<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<ReadPacing>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Rate(u32),
        Word(String),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Rate(n) => Ok(Some(ReadPacing::Above(n))),
        Raw::Word(w) if w == "off" => Ok(Some(ReadPacing::Off)),
        Raw::Word(w) => Err(de::Error::invalid_value(
            de::Unexpected::Str(&w),
            &"\"off\" or a rate in messages per second, e.g. 20000",
        )),
    }
}
