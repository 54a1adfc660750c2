//! The byte stream under MQTT: TCP, TLS (rustls on ring), and websockets over either.
//!
//! [`connect`] resolves the host, opens the TCP connection, runs the TLS handshake when
//! [`Config::tls`] is set and the websocket upgrade when [`Config::websocket`] is set,
//! and hands the driver one [`Io`]. Failures become typed [`DownReason`]s; every I/O
//! error, including rustls and websocket errors that surface later (e.g. TLS 1.3
//! reports a missing client certificate only on the first read), is mapped by
//! [`down_reason`].
//!
//! This file holds the pieces every build has; `tls.rs` (cargo feature `tls`) holds the
//! rustls configuration and handshake, `ws.rs` (cargo feature `websocket`) the upgrade
//! and the byte-stream adapter over websocket messages.

use std::io;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::config::Config;
use crate::error::{ConfigError, DownReason};

#[cfg(feature = "tls")]
mod tls;
#[cfg(feature = "websocket")]
mod ws;

/// A byte stream to the broker: TCP, TLS or websocket.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

#[cfg(feature = "tls")]
pub(crate) use tls::client_config;
#[cfg(feature = "tls")]
use tls::server_name;

/// Open the transport described by `config`: TCP, then TLS, then the websocket upgrade.
pub(crate) async fn connect(config: &Config) -> Result<Box<dyn Io>, DownReason> {
    let tcp = tcp_connect(&config.host, config.port).await?;
    #[allow(unused_mut)] // without the tls and websocket features
    let mut io: Box<dyn Io> = Box::new(tcp);
    if let Some(options) = &config.tls {
        #[cfg(feature = "tls")]
        {
            io = tls::handshake(options, &config.host, io).await?;
        }
        #[cfg(not(feature = "tls"))]
        {
            let _ = options;
            return Err(DownReason::TlsHandshake(NO_TLS.why.into()));
        }
    }
    if let Some(path) = &config.websocket_path {
        #[cfg(feature = "websocket")]
        {
            io = ws::upgrade(io, config, path).await?;
        }
        #[cfg(not(feature = "websocket"))]
        {
            let _ = path;
            return Err(DownReason::WebSocket(NO_WEBSOCKET.why.into()));
        }
    }
    Ok(io)
}

async fn tcp_connect(host: &str, port: u16) -> Result<TcpStream, DownReason> {
    let addrs: Vec<_> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| DownReason::Dns(format!("{host}: {e}")))?
        .collect();
    let mut last = DownReason::Dns(format!("{host}: no addresses"));
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(tcp) => {
                tcp.set_nodelay(true).map_err(down_reason)?;
                return Ok(tcp);
            }
            Err(e) => last = down_reason(e),
        }
    }
    Err(last)
}

/// Check everything about the TLS and websocket settings that can be checked without a
/// broker; `build()` calls this so that a bad file is a [`ConfigError`], not a
/// reconnect loop.
pub(crate) fn validate(config: &Config) -> Result<(), ConfigError> {
    if let Some(options) = &config.tls {
        #[cfg(feature = "tls")]
        {
            client_config(options)?;
            server_name(options, &config.host)?;
        }
        #[cfg(not(feature = "tls"))]
        {
            let _ = options;
            return Err(NO_TLS.error("tls"));
        }
    }
    if let Some(path) = &config.websocket_path {
        if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c == '#') {
            return Err(ConfigError::InvalidWebsocketPath(path.clone()));
        }
        #[cfg(feature = "websocket")]
        {
            use tokio_tungstenite::tungstenite::client::IntoClientRequest;
            format!("ws://{}{path}", authority(&config.host, config.port))
                .into_client_request()
                .map_err(|_| ConfigError::InvalidWebsocketPath(path.clone()))?;
        }
        #[cfg(not(feature = "websocket"))]
        return Err(NO_WEBSOCKET.error("websocket"));
    }
    Ok(())
}

/// Why an option needs a cargo feature this build lacks.
#[allow(dead_code)] // used only when a feature is off
struct Missing {
    why: &'static str,
    instead: &'static str,
}

#[allow(dead_code)]
impl Missing {
    fn error(&self, option: &str) -> ConfigError {
        ConfigError::Unsupported {
            option: option.to_owned(),
            why: self.why,
            instead: self.instead,
        }
    }
}

#[allow(dead_code)]
const NO_TLS: Missing = Missing {
    why: "this build of tower-mqtt has no TLS support (cargo feature `tls` is off)",
    instead: "enable the `tls` feature of tower-mqtt",
};

#[allow(dead_code)]
const NO_WEBSOCKET: Missing = Missing {
    why: "this build of tower-mqtt has no websocket support (cargo feature `websocket` is off)",
    instead: "enable the `websocket` feature of tower-mqtt",
};

/// The typed reason for an I/O error on the broker connection.
pub(crate) fn down_reason(err: io::Error) -> DownReason {
    use std::io::ErrorKind;
    if let Some(reason) = classify_io(&err) {
        return reason;
    }
    match err.kind() {
        ErrorKind::ConnectionRefused => DownReason::ConnectionRefused,
        ErrorKind::TimedOut => DownReason::Timeout,
        ErrorKind::UnexpectedEof
        | ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::BrokenPipe => DownReason::Closed,
        kind => DownReason::Io {
            kind,
            message: err.to_string(),
        },
    }
}

/// The typed reason for an I/O error that carries a TLS or websocket error, if it does.
fn classify_io(err: &io::Error) -> Option<DownReason> {
    #[allow(unused_variables)]
    let inner = err.get_ref()?;
    #[cfg(feature = "tls")]
    if let Some(e) = inner.downcast_ref::<tokio_rustls::rustls::Error>() {
        return Some(tls::reason(e));
    }
    #[cfg(feature = "websocket")]
    if let Some(e) = inner.downcast_ref::<ws::WsError>() {
        return Some(DownReason::WebSocket(e.0.clone()));
    }
    None
}

#[allow(dead_code)] // without the websocket feature
fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}
