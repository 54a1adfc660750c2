//! How many calls the retry layer made for a message, told to the layers above it.
//!
//! The retry layer works on clones of the message, so the attempt number it records in
//! their extensions never reaches a layer above it. A layer that wants it (the
//! dead-letter layer) puts an [`AttemptsSeen`] cell into the message first; clones share
//! it, and the retry layer stores each attempt number in it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tower_mqtt::Message;

/// The highest attempt number the retry layer gave a message (0: no retry layer).
#[derive(Debug, Clone, Default)]
#[cfg_attr(not(feature = "dead-letter"), allow(dead_code))]
pub(crate) struct AttemptsSeen(Arc<AtomicU32>);

#[cfg_attr(not(all(feature = "retry", feature = "dead-letter")), allow(dead_code))]
impl AttemptsSeen {
    /// Put a fresh cell into `message` and return it.
    pub(crate) fn install(message: &mut Message) -> Self {
        let cell = Self::default();
        message.extensions_mut().insert(cell.clone());
        cell
    }

    /// Record attempt `n` in the message's cell, if it has one.
    pub(crate) fn record(message: &Message, n: u32) {
        if let Some(cell) = message.extensions().get::<Self>() {
            cell.0.fetch_max(n, Ordering::Relaxed);
        }
    }

    /// The calls made: the highest attempt recorded, at least 1.
    pub(crate) fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed).max(1)
    }
}
