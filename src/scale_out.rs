//! Scaling out: consumers in one shared group on a clustered broker, with a failover
//! list of broker nodes, and what each setup loses when a member or a node dies.
//!
//! This module holds documentation only.
//!
#![doc = include_str!("../docs/scale-out.md")]
