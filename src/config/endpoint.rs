//! [`Endpoint`]: one broker address of a failover list ([`Config::hosts`]).

use std::fmt;
use std::str::FromStr;

use super::Config;
use crate::error::ConfigError;

/// One broker address: a host name or IP address and a port.
///
/// A [`Config`] has one endpoint (`Config::new(host)` with [`Config::port`]) or a
/// failover list of them ([`Config::hosts`], or a comma list in
/// [`Config::from_url`]). Displayed as `host:port` (`[addr]:port` for IPv6), which is
/// also what [`FromStr`] accepts:
///
/// ```
/// use tower_mqtt::Endpoint;
/// let e: Endpoint = "broker-1.mqtt:1884".parse()?;
/// assert_eq!((e.host(), e.port()), ("broker-1.mqtt", 1884));
/// assert_eq!(e.to_string(), "broker-1.mqtt:1884");
/// assert_eq!("[::1]:1883".parse::<Endpoint>()?, Endpoint::new("::1", 1883));
/// # Ok::<(), tower_mqtt::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    host: String,
    port: u16,
}

impl Endpoint {
    /// The broker at `host`, `port`. Checked by
    /// [`ConsumerBuilder::build`](crate::ConsumerBuilder::build) (a non-empty host, a
    /// port other than 0).
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }

    /// Host name or IP address (an IPv6 address without brackets).
    #[must_use]
    pub fn host(&self) -> &str {
        &self.host
    }

    /// TCP port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl<H: Into<String>> From<(H, u16)> for Endpoint {
    fn from((host, port): (H, u16)) -> Self {
        Self::new(host, port)
    }
}

impl FromStr for Endpoint {
    type Err = ConfigError;

    /// `host:port` or `[IPv6]:port`; the port is required. The error is
    /// [`ConfigError::InvalidEndpoint`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| ConfigError::InvalidEndpoint {
            endpoint: s.to_owned(),
            reason,
        };
        let (host, port) = if let Some(v6) = s.strip_prefix('[') {
            let (host, after) = v6.split_once("]:").ok_or_else(|| {
                bad("expected [IPv6 address]:port, e.g. [::1]:1883 (the port is required)")
            })?;
            (host, after)
        } else {
            s.rsplit_once(':').ok_or_else(|| {
                bad("expected host:port, e.g. broker-1:1883 (the port is required)")
            })?
        };
        let port = port
            .parse::<u16>()
            .map_err(|_| bad("the port must be a number from 1 to 65535"))?;
        let endpoint = Self::new(host, port);
        check(&endpoint).map_err(bad)?;
        Ok(endpoint)
    }
}

/// What is wrong with `endpoint`, if anything.
fn check(endpoint: &Endpoint) -> Result<(), &'static str> {
    if endpoint.host.trim().is_empty() {
        return Err("empty host; give the broker's host name or IP address");
    }
    if endpoint.port == 0 {
        return Err("port 0 is not a valid broker port (the MQTT default is 1883)");
    }
    Ok(())
}

impl Config {
    /// Brokers to fail over between, tried in this order: the first replaces the
    /// address given to [`new`](Self::new) and [`port`](Self::port) (so `port` set
    /// later changes the first endpoint only); the list replaces any earlier one.
    ///
    /// Every connection (each consumer connection, the publisher's, the retired-session
    /// drain) starts at the first endpoint. When an attempt fails or a live connection
    /// is lost, it moves to the next endpoint at once, and waits the reconnect backoff
    /// only after a whole round of the list failed in a row (with one endpoint: before
    /// every retry, as always). The backoff starts over after a successful connection,
    /// and the connection stays on the endpoint that worked until that one fails.
    /// `max_reconnect_attempts` counts every failed attempt, on any endpoint.
    ///
    /// All endpoints share every other setting: client id (so a persistent session
    /// carries over on a clustered broker that shares sessions between its nodes),
    /// credentials, TLS options and websocket path. With TLS each endpoint's host is
    /// its server name (SNI and certificate check) unless
    /// [`TlsOptions::server_name`](crate::TlsOptions::server_name) overrides it for
    /// all of them. Events name the endpoint a connection was made to or lost
    /// ([`Event::ConnectionUp`](crate::Event::ConnectionUp),
    /// [`Event::ConnectionDown`](crate::Event::ConnectionDown)).
    ///
    /// An empty list, an empty host, port 0 or the same endpoint twice is a
    /// [`ConfigError::InvalidEndpoint`] from
    /// [`build`](crate::ConsumerBuilder::build).
    ///
    /// ```
    /// use tower_mqtt::{Config, Endpoint};
    /// let config = Config::new("unused")
    ///     .hosts([("10.0.0.1", 1883), ("10.0.0.2", 1883)])
    ///     .client_id("ingest");
    /// assert_eq!(config.host(), "10.0.0.1");
    /// assert_eq!(config.endpoints()[1], Endpoint::new("10.0.0.2", 1883));
    /// // Or parsed from "host:port" strings:
    /// let list: Vec<Endpoint> = "mqtt-0:1883,mqtt-1:1883"
    ///     .split(',')
    ///     .map(str::parse)
    ///     .collect::<Result<_, _>>()?;
    /// let config = Config::new("unused").hosts(list);
    /// assert_eq!(config.endpoints().len(), 2);
    /// # Ok::<(), tower_mqtt::ConfigError>(())
    /// ```
    #[must_use]
    pub fn hosts<I>(mut self, endpoints: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<Endpoint>,
    {
        let mut list = endpoints.into_iter().map(Into::into);
        if let Some(first) = list.next() {
            self.host = first.host;
            self.port = first.port;
            self.more_hosts = list.collect();
            self.empty_host_list = false;
        } else {
            // Checked by `build()`: a list with nothing to connect to.
            self.host.clear();
            self.more_hosts.clear();
            self.empty_host_list = true;
        }
        self
    }

    /// The brokers to connect to, in failover order: the address given to
    /// [`new`](Self::new) and [`port`](Self::port) (or the first of
    /// [`hosts`](Self::hosts)), then the rest of the list.
    #[must_use]
    pub fn endpoints(&self) -> Vec<Endpoint> {
        std::iter::once(Endpoint::new(self.host.clone(), self.port))
            .chain(self.more_hosts.iter().cloned())
            .collect()
    }

    /// This configuration aimed at `endpoint` alone: what one connection attempt uses.
    pub(crate) fn at(&self, endpoint: &Endpoint) -> Self {
        let mut config = self.clone();
        config.host.clone_from(&endpoint.host);
        config.port = endpoint.port;
        config.more_hosts.clear();
        config
    }
}

/// The check of a failover list that `build()` runs (a single endpoint is checked by
/// the `host` and `port` checks).
pub(super) fn check_list(config: &Config) -> Result<(), ConfigError> {
    if config.empty_host_list {
        return Err(ConfigError::InvalidEndpoint {
            endpoint: String::new(),
            reason: "the list is empty; give at least one host:port to Config::hosts",
        });
    }
    if config.more_hosts.is_empty() {
        return Ok(());
    }
    let all = config.endpoints();
    for (i, endpoint) in all.iter().enumerate() {
        check(endpoint).map_err(|reason| ConfigError::InvalidEndpoint {
            endpoint: endpoint.to_string(),
            reason,
        })?;
        if all[..i].contains(endpoint) {
            return Err(ConfigError::InvalidEndpoint {
                endpoint: endpoint.to_string(),
                reason: "listed twice; give each broker once",
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_print_as_host_port() {
        for (text, host, port) in [
            ("a:1", "a", 1),
            ("10.0.0.1:1883", "10.0.0.1", 1883),
            ("[::1]:8883", "::1", 8883),
        ] {
            let e: Endpoint = text.parse().unwrap();
            assert_eq!((e.host(), e.port()), (host, port));
            assert_eq!(e.to_string(), text);
        }
        for text in [
            "a",
            "a:",
            ":1883",
            "a:0",
            "a:99999",
            "[::1]",
            "[::1]1883",
            " :1",
        ] {
            match text.parse::<Endpoint>() {
                Err(ConfigError::InvalidEndpoint { endpoint, .. }) => assert_eq!(endpoint, text),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn hosts_replaces_the_address_and_the_list_is_checked() {
        let c = Config::new("x").port(1).hosts([("a", 1883), ("b", 1884)]);
        assert_eq!((c.host(), c.get_port()), ("a", 1883));
        assert_eq!(
            c.endpoints(),
            [Endpoint::new("a", 1883), Endpoint::new("b", 1884)]
        );
        assert_eq!(check_list(&c), Ok(()));
        let b = c.at(&Endpoint::new("b", 1884));
        assert_eq!(b.endpoints(), [Endpoint::new("b", 1884)]);

        let reason = |c: &Config| match check_list(c) {
            Err(ConfigError::InvalidEndpoint { endpoint, reason }) => (endpoint, reason),
            other => panic!("{other:?}"),
        };
        let empty = Config::new("x").hosts(Vec::<Endpoint>::new());
        assert!(reason(&empty).1.contains("empty"));
        let twice = Config::new("x").hosts([("a", 1), ("b", 2), ("a", 1)]);
        assert_eq!(reason(&twice).0, "a:1");
        let zero = Config::new("x").hosts([("a", 1), ("b", 0)]);
        assert_eq!(reason(&zero).0, "b:0");
        let blank = Config::new("x").hosts([("a", 1), ("", 2)]);
        assert_eq!(reason(&blank).0, ":2");
    }
}
