//! [`Config::from_url`]: connection settings from an `mqtt://`, `mqtts://`, `ws://` or
//! `wss://` URL.

use percent_encoding::percent_decode_str;

use super::tls::TlsOptions;
use super::Config;
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
    /// `user:password@` sets the credentials (percent-decoded, so `p%40ss` is `p@ss`).
    /// A websocket URL's path is the websocket path (`/mqtt` when the URL has none);
    /// an `mqtt(s)` URL must not have a path. Queries and fragments are rejected.
    /// Everything else keeps its default and can be changed with the other setters,
    /// e.g. `.tls(TlsOptions::new().ca_file(...))` to replace the system roots.
    ///
    /// ```
    /// use tower_mqtt::Config;
    /// let config = Config::from_url("mqtts://ingest:s3cr%40t@broker.example.com")?;
    /// let ws = Config::from_url("ws://127.0.0.1:9001/mqtt")?;
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
    if rest.contains('?') || rest.contains('#') {
        return Err(bad("query strings and fragments are not supported"));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
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
    let mut config =
        Config::new(percent_decode(host).ok_or_else(|| bad("bad percent-encoding in host"))?)
            .port(port);
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
    Ok(config)
}

/// `url` with any password replaced by `***`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<not a URL>".to_owned();
    };
    let end = rest.find('/').unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{}", &rest[at + 1..])
        }
        None => url.to_owned(),
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
            "mqtt://h?x=1",
        ] {
            let e = Config::from_url(url).unwrap_err();
            assert!(matches!(e, ConfigError::InvalidUrl { .. }), "{url}: {e:?}");
            assert!(!e.to_string().contains("hunter2"), "{e}");
            assert!(!format!("{e:?}").contains("hunter2"), "{e:?}");
        }
    }
}
