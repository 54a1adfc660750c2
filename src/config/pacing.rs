//! [`ReadPacing`]: how a connection reads while a broker sends faster than it can.

/// Whether a connection may hold its reads back while a broker sends it messages at a
/// high rate; set with
/// [`ConsumerBuilder::read_pacing`](crate::ConsumerBuilder::read_pacing). Default
/// `Above(20_000)`.
///
/// **Why.** A consumer that keeps up with its broker keeps its TCP receive window open,
/// so each message the broker writes leaves as a segment of its own, and the broker pays
/// per message for the transmission, the receiver's TCP processing (on loopback, in the
/// broker's own context) and the wake-up of the consumer. A consumer that reads late lets
/// the window fill: the broker's writes then only append to its socket queue, and the
/// messages leave in large segments when the consumer reads. mosquitto 2.0.11 drains a
/// backlog about twice as fast that way (`BENCHMARKS.md`, "Read pacing").
///
/// **What `Above(n)` does.** Each connection measures its message rate over 20 ms
/// windows. Once three in a row (a backlog, not a burst) reach `n` messages per second
/// while the connection waits for its broker (its reads find the socket empty at least once per 64 messages; a connection
/// busier than its broker gains nothing by waiting), the connection tries *holding*:
/// after a read that emptied the socket it waits before reading again. A hold starts at
/// 4 ms and is then kept to the shortest (down to 1 ms) that still lets a full receive
/// window through, since a hold that ends before the window fills leaves the broker
/// paying per message; tokio's timer adds up to 1 ms. On a link whose TCP handshake took
/// under 1 ms the connection also asks the kernel for a 64 KiB receive buffer while it
/// holds (enough for tens of MB/s at such a round trip), so that the window fills within
/// a hold, and gives the old size back when it stops (Linux: at most
/// `net.core.rmem_max`; the kernel no longer tunes that connection's buffer itself).
/// After 20 ms for the change to settle, the rate while holding is compared with the rate
/// just before; holding is kept only if it raised the rate by 15 % or more, and is
/// compared again (20 ms reading at once) after 1, 2, 4 … 16 s. When holding did not
/// help, it is tried again after 1, 2, 4 … 64 s. When the rate falls below `n`, the
/// connection reads at once again.
///
/// **The cost.** While a connection holds, a message waits up to 5 ms longer before its
/// call starts. A connection below `n` messages per second, and one where holding does
/// not raise the rate (a consumer slower than its broker, a broker that sends in large
/// batches anyway, a steady stream that holding cannot speed up), reads as soon as bytes
/// arrive, apart from its trials: about 40 ms each, at most once a second at first and
/// once a minute after repeated losses. Holding never delays acknowledgements: they are
/// written as their calls finish. Use [`ReadPacing::Off`] where every message must start
/// within a millisecond even under load.
///
/// [`Event::ReadPacing`](crate::Event::ReadPacing) reports each comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadPacing {
    /// Always read as soon as bytes arrive.
    Off,
    /// Try holding reads from this many messages per second per connection (at least
    /// 1), and keep doing so while it raises the rate.
    Above(u32),
}

impl Default for ReadPacing {
    fn default() -> Self {
        Self::Above(20_000)
    }
}
