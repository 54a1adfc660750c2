//! Which broker of a failover list ([`Config::hosts`]) a connection tries next, and
//! when it waits its reconnect backoff first.

use std::sync::Arc;

use crate::config::{Config, Endpoint};

/// One endpoint and the configuration aimed at it alone.
pub(crate) struct Target {
    pub(crate) endpoint: Endpoint,
    pub(crate) config: Arc<Config>,
}

/// A connection's place in the endpoint list.
///
/// Starts at the first endpoint and stays on whichever one works. After a failure
/// (an attempt that failed or a connection that was lost) the next attempt goes to the
/// next endpoint, wrapping around; the reconnect backoff is waited only when a whole
/// round of the list failed in a row, so a dead broker costs one quick attempt at the
/// next one, and a dead cluster the usual backoff per round.
pub(crate) struct Failover {
    targets: Arc<[Target]>,
    current: usize,
    /// Failures since the last successful connection.
    failures: u32,
}

impl Failover {
    pub(crate) fn new(config: &Config) -> Self {
        let targets: Arc<[Target]> = config
            .endpoints()
            .into_iter()
            .map(|endpoint| Target {
                config: Arc::new(config.at(&endpoint)),
                endpoint,
            })
            .collect();
        Self {
            targets,
            current: 0,
            failures: 0,
        }
    }

    /// Where the next attempt goes.
    pub(crate) fn current(&self) -> &Target {
        &self.targets[self.current]
    }

    /// The current endpoint's configuration, shared (for a future that outlives a
    /// borrow of `self`).
    pub(crate) fn current_config(&self) -> Arc<Config> {
        self.targets[self.current].config.clone()
    }

    /// A connection to the current endpoint succeeded: stay on it.
    pub(crate) fn connected(&mut self) {
        self.failures = 0;
    }

    /// The current endpoint failed: move to the next one. Returns whether to wait the
    /// reconnect backoff before trying it (a whole round failed since the last
    /// success; with one endpoint, always).
    pub(crate) fn failed(&mut self) -> bool {
        self.failures = self.failures.saturating_add(1);
        let n = self.targets.len();
        self.current = (self.current + 1) % n;
        self.failures as usize % n == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(f: &Failover) -> u16 {
        f.current().endpoint.port()
    }

    #[test]
    fn next_endpoint_at_once_backoff_after_a_full_round() {
        let config = Config::new("h").hosts([("a", 1), ("b", 2), ("c", 3)]);
        let mut f = Failover::new(&config);
        assert_eq!(at(&f), 1);
        assert_eq!(f.current().config.endpoints(), [Endpoint::new("a", 1)]);
        // a fails, b fails: no wait; c fails: a round, wait before a.
        assert!(!f.failed());
        assert_eq!(at(&f), 2);
        assert!(!f.failed());
        assert_eq!(at(&f), 3);
        assert!(f.failed());
        assert_eq!(at(&f), 1);
        assert!(!f.failed());
        // b works, then is lost: on to c at once.
        f.connected();
        assert_eq!(at(&f), 2);
        assert!(!f.failed());
        assert_eq!(at(&f), 3);
        assert!(!f.failed());
        assert!(f.failed());
        assert_eq!(at(&f), 2);
    }

    #[test]
    fn one_endpoint_waits_before_every_retry() {
        let mut f = Failover::new(&Config::new("h").port(7));
        for _ in 0..3 {
            assert!(f.failed());
            assert_eq!(at(&f), 7);
        }
    }
}
