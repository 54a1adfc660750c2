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

use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
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

/// The transport as a connection holds it. Plain TCP stays a [`TcpStream`], so that
/// the broker's close can be seen while bytes it sent before it are still unread
/// ([`Stream::poll_peer_closed`]); TLS and websockets are layered over it.
pub(crate) enum Stream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS and/or websockets, with a second handle on the TCP socket under them (the
    /// same socket, its descriptor duplicated; unix only) to ask for a pending error.
    Layered(Box<dyn Io>, Option<std::net::TcpStream>),
}

impl Stream {
    /// Whether the broker has closed its side (its FIN has arrived) or the connection
    /// has failed, whatever is still unread before that. Plain TCP only: Linux reports
    /// the FIN with the readiness (`EPOLLRDHUP`), once tokio's reactor has run since it
    /// arrived; a busy connection may not have let it run, so the socket's pending
    /// error is asked too when `wrote` (`SO_ERROR`: the RST a closed peer answers our
    /// writes with). Under TLS and websockets only that error can be asked (their
    /// stream does not report the FIN before the bytes ahead of it); `false` when it
    /// cannot be told yet.
    pub(crate) fn poll_peer_closed(&self, cx: &mut Context<'_>, wrote: bool) -> bool {
        match self {
            Self::Tcp(tcp) => {
                let ready = pin!(tcp.ready(Interest::READABLE));
                if matches!(ready.poll(cx), Poll::Ready(Ok(r)) if r.is_read_closed()) {
                    return true;
                }
                wrote && !matches!(tcp.take_error(), Ok(None))
            }
            Self::Layered(_, Some(tcp)) => wrote && !matches!(tcp.take_error(), Ok(None)),
            Self::Layered(_, None) => false,
        }
    }

    /// Ask the kernel for a receive buffer of `bytes` on the TCP socket (under TLS and
    /// websockets, through the duplicated descriptor). This fixes the buffer for the
    /// rest of the connection: the kernel no longer grows it on its own.
    pub(crate) fn set_receive_buffer(&self, bytes: usize) -> io::Result<()> {
        self.socket()?.set_recv_buffer_size(bytes)
    }

    /// The TCP socket's receive buffer size, as the kernel reports it.
    pub(crate) fn receive_buffer(&self) -> io::Result<usize> {
        self.socket()?.recv_buffer_size()
    }

    fn socket(&self) -> io::Result<socket2::SockRef<'_>> {
        match self {
            Self::Tcp(tcp) => Ok(socket2::SockRef::from(tcp)),
            Self::Layered(_, Some(tcp)) => Ok(socket2::SockRef::from(tcp)),
            Self::Layered(_, None) => Err(io::ErrorKind::Unsupported.into()),
        }
    }
}

impl AsyncRead for Stream {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(io) => Pin::new(io).poll_read(cx, buf),
            Self::Layered(io, _) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(io) => Pin::new(io).poll_write(cx, buf),
            Self::Layered(io, _) => Pin::new(io).poll_write(cx, buf),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(io) => Pin::new(io).poll_flush(cx),
            Self::Layered(io, _) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(io) => Pin::new(io).poll_shutdown(cx),
            Self::Layered(io, _) => Pin::new(io).poll_shutdown(cx),
        }
    }
}

/// Open the transport described by `config`: TCP, then TLS, then the websocket upgrade.
/// Also returns how long the TCP handshake took: about one round trip to the broker.
pub(crate) async fn connect(config: &Config) -> Result<(Stream, Duration), DownReason> {
    let started = Instant::now();
    let tcp = tcp_connect(&config.host, config.port).await?;
    let rtt = started.elapsed();
    if config.tls.is_none() && config.websocket_path.is_none() {
        return Ok((Stream::Tcp(tcp), rtt));
    }
    let raw = duplicate(&tcp);
    let io: Box<dyn Io> = Box::new(tcp);
    let io = match &config.tls {
        None => io,
        #[cfg(feature = "tls")]
        Some(options) => tls::handshake(options, &config.host, io).await?,
        #[cfg(not(feature = "tls"))]
        Some(_) => return Err(DownReason::TlsHandshake(NO_TLS.why.into())),
    };
    let io = match &config.websocket_path {
        None => io,
        #[cfg(feature = "websocket")]
        Some(path) => ws::upgrade(io, config, path).await?,
        #[cfg(not(feature = "websocket"))]
        Some(_) => return Err(DownReason::WebSocket(NO_WEBSOCKET.why.into())),
    };
    Ok((Stream::Layered(io, raw), rtt))
}

/// A second handle on `tcp`'s socket, for [`Stream::poll_peer_closed`] under TLS and
/// websockets (`None` if the descriptor cannot be duplicated, or off unix).
fn duplicate(tcp: &TcpStream) -> Option<std::net::TcpStream> {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        tcp.as_fd()
            .try_clone_to_owned()
            .ok()
            .map(std::net::TcpStream::from)
    }
    #[cfg(not(unix))]
    {
        let _ = tcp;
        None
    }
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
    match &config.tls {
        None => {}
        #[cfg(feature = "tls")]
        Some(options) => {
            client_config(options)?;
            tls::server_name(options, &config.host)?;
        }
        #[cfg(not(feature = "tls"))]
        Some(_) => return Err(NO_TLS.error("tls")),
    }
    if let Some(path) = &config.websocket_path {
        if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c == '#') {
            return Err(ConfigError::InvalidWebsocketPath(path.clone()));
        }
        #[cfg(feature = "websocket")]
        ws::check_path(config, path)?;
        #[cfg(not(feature = "websocket"))]
        return Err(NO_WEBSOCKET.error("websocket"));
    }
    Ok(())
}

/// Why an option needs a cargo feature this build lacks.
#[cfg(not(all(feature = "tls", feature = "websocket")))]
struct Missing {
    why: &'static str,
    instead: &'static str,
}

#[cfg(not(all(feature = "tls", feature = "websocket")))]
impl Missing {
    fn error(&self, option: &str) -> ConfigError {
        ConfigError::Unsupported {
            option: option.to_owned(),
            why: self.why,
            instead: self.instead,
        }
    }
}

#[cfg(not(feature = "tls"))]
const NO_TLS: Missing = Missing {
    why: "this build of tower-mqtt has no TLS support (cargo feature `tls` is off)",
    instead: "enable the `tls` feature of tower-mqtt",
};

#[cfg(not(feature = "websocket"))]
const NO_WEBSOCKET: Missing = Missing {
    why: "this build of tower-mqtt has no websocket support (cargo feature `websocket` is off)",
    instead: "enable the `websocket` feature of tower-mqtt",
};

/// The typed reason for an I/O error on the broker connection.
#[allow(clippy::needless_pass_by_value)] // by value to fit `map_err(down_reason)`
pub(crate) fn down_reason(err: io::Error) -> DownReason {
    use std::io::ErrorKind;
    #[cfg(any(feature = "tls", feature = "websocket"))]
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
/// (Without either feature no such error can reach us.)
#[cfg(any(feature = "tls", feature = "websocket"))]
fn classify_io(err: &io::Error) -> Option<DownReason> {
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

/// `host:port` for a URL, with IPv6 addresses in brackets.
#[cfg(feature = "websocket")]
fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}
