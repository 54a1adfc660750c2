//! Integration-test harness for tower-mqtt: a private mosquitto per test and
//! rumqttc helpers to publish to it and inspect it.
//!
//! Use it from a test file with `mod support;`:
//!
//! ```ignore
//! mod support;
//! use support::*;
//!
//! #[tokio::test]
//! async fn example() {
//!     with_timeout(Duration::from_secs(10), async {
//!         let broker = Broker::start(BrokerOptions::default());
//!         let topic = unique("t");
//!         let mut sub = subscribe_collect(&broker, &topic, QoS::AtLeastOnce).await;
//!         publish_many(&broker, &topic, QoS::AtLeastOnce, [b"hi".to_vec()]).await;
//!         assert_eq!(sub.wait_for(1, Duration::from_secs(5)).await[0].payload, "hi");
//!     })
//!     .await;
//! }
//! ```
//!
//! Rules the helpers follow (see `shared/reference/mqtt-and-rumqttc-facts.md`,
//! "Test-harness lessons"): one broker per test (never the system one on
//! 1883), unique client ids and topics ([`unique`]), no sleeps where an event
//! or a log line can be awaited, and every wait has a timeout whose panic
//! message includes the broker log tail.

// Each test binary uses a different subset of the helpers.
#![allow(dead_code)]
// Not every test binary uses every re-export.
#![allow(unused_imports)]

mod broker;
mod client;
pub(crate) mod cluster;
pub(crate) mod consumer;
pub(crate) mod fake_server;
pub(crate) mod proxy;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(crate) use broker::{Broker, BrokerLog, BrokerOptions, Pki};
pub(crate) use client::{
    drain_session, drain_session_with_dups, mqtt_options, publish_many, publish_many_within,
    subscribe_collect, Collector, TestClient, DEFAULT_TIMEOUT, MAX_PACKET_SIZE,
};
pub(crate) use rumqttc::{Publish, QoS};

/// A name no other test (in this or a concurrent process) uses:
/// `<prefix>-<pid>-<counter>-<nanos since epoch, hex>`. Contains only
/// `[A-Za-z0-9-]` plus the prefix, so it is valid as client id and topic level.
pub(crate) fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{prefix}-{}-{n}-{nanos:x}", std::process::id())
}

/// Runs `fut`, panicking if it takes longer than `limit`: wrap every test body in it.
pub(crate) async fn with_timeout<F: Future>(limit: Duration, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(out) => out,
        Err(_) => panic!("test did not finish within {limit:?}"),
    }
}
