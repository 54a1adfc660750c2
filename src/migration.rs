//! Migrating from off_broadway_emqtt and Broadway: every producer option, `:config`
//! option and telemetry event of the original, and what replaces it here.
//!
//! This module holds documentation only.
//!
#![doc = include_str!("../docs/migration.md")]
