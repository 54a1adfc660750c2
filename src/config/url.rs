//! [`Config::from_url`]: connection settings from an `mqtt://`, `mqtts://`, `ws://` or
//! `wss://` URL.

use std::time::Duration;

use percent_encoding::percent_decode_str;

use super::tls::TlsOptions;
use super::{Config, Endpoint, ProtoVer};
use crate::error::ConfigError;

impl Config {
    /// Connection settings from a URL:
    ///
    /// | scheme | transport | default port |
    /// |---|---|---|
    /// | `mqtt://`, `tcp://` | TCP | 1883 |
    /// | `mqtts://`, `ssl://`, `tls://` | TLS, verifying the server against the system roots | 8883 |
    /// | `ws://` | websocket | 80 |
    /// | `wss://` | websocket over TLS | 443 |
    ///
    /// A comma list of hosts is a failover list ([`hosts`](Self::hosts)):
    /// `mqtt://broker-0:1883,broker-1:1883,[::1]/?client_id=ingest`; each host without
    /// a port gets the scheme's default; all share the rest of the URL.
    ///
    /// `user:password@` sets the credentials (percent-decoded, so `p%40ss` is `p@ss`).
    /// A websocket URL's path is the websocket path (`/mqtt` when the URL has none);
    /// an `mqtt(s)` URL must not have a path. Fragments are rejected.
    ///
    /// The query sets further options (values percent-decoded; each option at most
    /// once):
    ///
    /// | query option | sets | value |
    /// |---|---|---|
    /// | `client_id` | [`client_id`](Self::client_id) | the id (not empty) |
    /// | `clean_start` | [`clean_start`](Self::clean_start) | `true`, `false`, `1`, `0` |
    /// | `keepalive` | [`keepalive`](Self::keepalive) | whole seconds |
    /// | `proto` | [`proto_ver`](Self::proto_ver) | `v4` or `3.1.1`; `v5` or `5` |
    /// | `session_expiry` | [`session_expiry`](Self::session_expiry) | whole seconds |
    /// | `connect_timeout` | [`connect_timeout`](Self::connect_timeout) | whole seconds |
    ///
    /// An unknown option is [`ConfigError::UnknownOption`], one given twice
    /// [`ConfigError::ConflictingOption`], a value that does not parse
    /// [`ConfigError::InvalidOptionValue`] (which does not show the value); ranges are
    /// checked by [`build`](crate::ConsumerBuilder::build) as for the setters.
    /// Everything else keeps its default and can be changed with the other setters,
    /// e.g. `.tls(TlsOptions::new().ca_file(...))` to replace the system roots.
    ///
    /// ```
    /// use tower_mqtt::Config;
    /// let config = Config::from_url("mqtts://ingest:s3cr%40t@broker.example.com")?;
    /// let ws = Config::from_url("ws://127.0.0.1:9001/mqtt")?;
    /// let v5 = Config::from_url("mqtt://127.0.0.1?client_id=ingest&proto=v5&keepalive=10")?;
    /// assert_eq!(v5.get_client_id(), Some("ingest"));
    /// # Ok::<(), tower_mqtt::ConfigError>(())
    /// ```
    pub fn from_url(url: &str) -> Result<Self, ConfigError> {
        parse_url(url)
    }
}

/// `s` with its `%XX` escapes decoded; `None` if a `%` is not followed by two hex
/// digits or the bytes are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    // The crate passes a malformed escape through as is; in a URL it is a typo (or an
    // unescaped `%` in a password), and guessing would send the wrong credentials.
    let bytes = s.as_bytes();
    let well_formed = bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return None;
    }
    let decoded = percent_decode_str(s).decode_utf8().ok()?;
    Some(decoded.into_owned())
}

fn parse_url(url: &str) -> Result<Config, ConfigError> {
    let bad = |reason: &'static str| ConfigError::InvalidUrl {
        // Never echo the credentials back.
        url: redact_url(url),
        reason,
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("expected <scheme>://[user[:password]@]host[:port][/path]"))?;
    let (tls, ws, default_port) = match scheme.to_ascii_lowercase().as_str() {
        "mqtt" | "tcp" => (false, false, 1883),
        "mqtts" | "ssl" | "tls" => (true, false, 8883),
        "ws" => (false, true, 80),
        "wss" => (true, true, 443),
        _ => return Err(bad("unknown scheme; use mqtt, mqtts, ws or wss")),
    };
    if rest.contains('#') {
        return Err(bad("fragments are not supported"));
    }
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let mut endpoints = Vec::new();
    for item in hostport.split(',') {
        endpoints.push(parse_host_port(item, default_port, bad)?);
    }
    let mut config = Config::new("").hosts(endpoints);
    if let Some(userinfo) = userinfo {
        let (user, pass) = match userinfo.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (userinfo, None),
        };
        let user = percent_decode(user).ok_or_else(|| bad("bad percent-encoding in user name"))?;
        config = config.username(user);
        if let Some(pass) = pass {
            let pass =
                percent_decode(pass).ok_or_else(|| bad("bad percent-encoding in password"))?;
            config = config.password(pass);
        }
    }
    if ws {
        config.websocket_path = Some(if path.is_empty() {
            "/mqtt".to_owned()
        } else {
            path.to_owned()
        });
    } else if !path.is_empty() && path != "/" {
        return Err(bad(
            "an mqtt:// or mqtts:// URL has no path; use ws:// or wss:// for a websocket path",
        ));
    }
    if tls {
        config.tls = Some(TlsOptions::new());
    }
    if let Some(query) = query {
        config = apply_query(config, query, bad)?;
    }
    Ok(config)
}

/// One `host[:port]` of the authority (IPv6 in brackets), decoded.
fn parse_host_port(
    hostport: &str,
    default_port: u16,
    bad: impl Fn(&'static str) -> ConfigError,
) -> Result<Endpoint, ConfigError> {
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("unterminated [IPv6] host"))?;
        match after {
            "" => (host, None),
            p => (
                host,
                Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| bad("junk after [IPv6] host"))?,
                ),
            ),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => return Err(bad("the port must be a number from 1 to 65535")),
        },
    };
    let host = percent_decode(host).ok_or_else(|| bad("bad percent-encoding in host"))?;
    Ok(Endpoint::new(host, port))
}

/// The options a URL query may set, in the order of the docs.
const QUERY_OPTIONS: [&str; 6] = [
    "client_id",
    "clean_start",
    "keepalive",
    "proto",
    "session_expiry",
    "connect_timeout",
];

/// `config` with the `name=value` pairs of `query` applied.
fn apply_query(
    mut config: Config,
    query: &str,
    bad: impl Fn(&'static str) -> ConfigError,
) -> Result<Config, ConfigError> {
    let mut seen = [false; QUERY_OPTIONS.len()];
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode(name).ok_or_else(|| bad("bad percent-encoding in query"))?;
        let value = percent_decode(value).ok_or_else(|| bad("bad percent-encoding in query"))?;
        let Some(index) = QUERY_OPTIONS.iter().position(|known| *known == name) else {
            let identifier = name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
            if !identifier {
                // Not echoed: it may be the tail of a password with an unescaped `?`.
                return Err(bad(
                    "unknown query option (a '?' in the password must be written %3F)",
                ));
            }
            return Err(ConfigError::UnknownOption(name));
        };
        if std::mem::replace(&mut seen[index], true) {
            return Err(ConfigError::ConflictingOption {
                option: name,
                other: "the same option earlier in the URL query",
                resolution: "give each query option once",
            });
        }
        let invalid = |expected: &'static str| ConfigError::InvalidOptionValue {
            option: QUERY_OPTIONS[index].to_owned(),
            expected,
        };
        let seconds = |expected| {
            value
                .parse::<u64>()
                .map(Duration::from_secs)
                .map_err(|_| invalid(expected))
        };
        config = match QUERY_OPTIONS[index] {
            "client_id" if value.is_empty() => {
                return Err(invalid("a non-empty client id, e.g. client_id=ingest"))
            }
            "client_id" => config.client_id(value),
            "clean_start" => config.clean_start(
                parse_bool(&value)
                    .ok_or_else(|| invalid("true, false, 1 or 0, e.g. clean_start=false"))?,
            ),
            "keepalive" => config.keepalive(seconds("whole seconds, e.g. keepalive=30")?),
            "proto" => config.proto_ver(parse_proto(&value).ok_or_else(|| {
                invalid("v4 (or 3.1.1) for MQTT 3.1.1, v5 (or 5) for MQTT 5, e.g. proto=v5")
            })?),
            "session_expiry" => {
                config.session_expiry(seconds("whole seconds, e.g. session_expiry=3600")?)
            }
            _ => config.connect_timeout(seconds("whole seconds, e.g. connect_timeout=10")?),
        };
    }
    Ok(config)
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

pub(super) fn parse_proto(value: &str) -> Option<ProtoVer> {
    match value.to_ascii_lowercase().as_str() {
        "v4" | "4" | "3.1.1" => Some(ProtoVer::V4),
        "v5" | "5" | "5.0" => Some(ProtoVer::V5),
        _ => None,
    }
}

/// `url` with any password replaced by `***`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<not a URL>".to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(last_at) = rest.rfind('@') else {
        return url.to_owned();
    };
    if last_at < end {
        // The usual case: the last `@` ends the user info.
        let user = rest[..last_at].split(':').next().unwrap_or("");
        format!("{scheme}://{user}:***@{}", &rest[last_at + 1..])
    } else if rest[..last_at].contains(':') {
        // An `@` after a `/`, `?` or `#`: either in the query (`client_id=a@b`) or a
        // password with an unescaped delimiter. Which one cannot be told, so hide all
        // that could be a password.
        format!("{scheme}://***@{}", &rest[last_at + 1..])
    } else {
        url.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn urls_set_transport_port_and_decoded_credentials() {
        let c = Config::from_url("mqtt://al%69ce:p%40ss:w@127.0.0.1:1999").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("127.0.0.1", 1999));
        assert_eq!(c.username.as_deref(), Some("alice"));
        assert_eq!(c.password, Some(Secret("p@ss:w".into())));
        assert!(c.tls.is_none() && c.websocket_path.is_none());

        let c = Config::from_url("mqtts://h").unwrap();
        assert_eq!(c.port, 8883);
        assert_eq!(c.tls, Some(TlsOptions::new()));

        let c = Config::from_url("ws://h:9001").unwrap();
        assert_eq!((c.port, c.websocket_path.as_deref()), (9001, Some("/mqtt")));
        let c = Config::from_url("wss://[::1]/x/y").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("::1", 443));
        assert_eq!(c.websocket_path.as_deref(), Some("/x/y"));
        assert!(c.tls.is_some());
    }

    #[test]
    fn a_comma_list_of_hosts_is_a_failover_list() {
        let c = Config::from_url("mqtts://u:p@a,b:8884,[::1]:1/?client_id=x").unwrap();
        assert_eq!(
            c.endpoints(),
            [
                Endpoint::new("a", 8883),
                Endpoint::new("b", 8884),
                Endpoint::new("::1", 1)
            ]
        );
        assert_eq!(c.username.as_deref(), Some("u"));
        assert_eq!(c.get_client_id(), Some("x"));
        for url in [
            "mqtt://a,",
            "mqtt://,a",
            "mqtt://a,,b",
            "mqtt://a,b:0",
            "mqtt://a,[::1",
        ] {
            assert!(
                matches!(Config::from_url(url), Err(ConfigError::InvalidUrl { .. })),
                "{url}"
            );
        }
    }

    #[test]
    fn bad_percent_escapes_name_the_part_they_are_in() {
        for (url, reason) in [
            ("mqtt://h%4", "bad percent-encoding in host"),
            ("mqtt://h%zz:1883", "bad percent-encoding in host"),
            ("mqtt://%zz@h", "bad percent-encoding in user name"),
            ("mqtt://u%ff:pw@h", "bad percent-encoding in user name"),
            ("mqtt://u:p%4@h", "bad percent-encoding in password"),
            ("mqtt://u:p%@h", "bad percent-encoding in password"),
            ("mqtt://u:p%+1@h", "bad percent-encoding in password"),
            ("mqtt://u:%c3%28@h", "bad percent-encoding in password"),
        ] {
            match Config::from_url(url) {
                Err(ConfigError::InvalidUrl { reason: r, .. }) => assert_eq!(r, reason, "{url}"),
                other => panic!("{url}: {other:?}"),
            }
        }
        let c = Config::from_url("mqtt://%C3%A9t%c3%a9:%25%20@h").unwrap();
        assert_eq!(c.username.as_deref(), Some("\u{e9}t\u{e9}"));
        assert_eq!(c.password, Some(Secret("% ".into())));
    }

    #[test]
    fn bad_urls_are_rejected_without_echoing_the_password() {
        for url in [
            "http://u:hunter2@h",
            "mqtt://u:hunter2@h:0",
            "mqtt://u:hunter2@h/path",
            "mqtt://u:hunter2@:1883",
            "h:1883",
            "mqtt://u:hunter2@h#frag",
            "mqtt://u:hunter2@h?client_id=a@b&x=%zz",
            "mqtt://u:hunt/er2@h",
            "mqtt://u:hunt?er2@h?keepalive=x@y",
            "mqtt://us/er:hunter2@h",
        ] {
            let e = Config::from_url(url).unwrap_err();
            assert!(
                matches!(
                    e,
                    ConfigError::InvalidUrl { .. } | ConfigError::InvalidOptionValue { .. }
                ),
                "{url}: {e:?}"
            );
            assert!(!e.to_string().contains("hunter2"), "{e}");
            assert!(!format!("{e:?}").contains("hunter2"), "{e:?}");
        }
    }
}
