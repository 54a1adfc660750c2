//! What tower-mqtt promises about each message, what the broker can still lose, how
//! many duplicates each kind of fault brings, and QoS 2 per broker.
//!
//! This module holds documentation only.
//!
#![doc = include_str!("../docs/guarantees.md")]
