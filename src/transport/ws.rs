//! Websockets over TCP or TLS (cargo feature `websocket`): the HTTP upgrade with the
//! `mqtt` subprotocol, and [`WsIo`], which carries MQTT bytes in binary messages behind
//! `AsyncRead`/`AsyncWrite` so the driver sees one more [`Io`].

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::{
    self, client::IntoClientRequest, http::HeaderValue, protocol::WebSocketConfig, Message,
};
use tokio_tungstenite::WebSocketStream;

use super::{down_reason, Io};
use crate::config::Config;
use crate::error::{ConfigError, DownReason};

/// A websocket failure carried inside an `io::Error`.
#[derive(Debug)]
pub(super) struct WsError(pub(super) String);

impl std::fmt::Display for WsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WsError {}

fn ws_to_io(err: tungstenite::Error) -> io::Error {
    match err {
        tungstenite::Error::Io(e) => e,
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            io::ErrorKind::UnexpectedEof.into()
        }
        other => io::Error::other(WsError(other.to_string())),
    }
}

/// Whether `path` makes a valid upgrade request to the configured host and port
/// (`build()` checks this so that a bad path is a [`ConfigError`]).
pub(super) fn check_path(config: &Config, path: &str) -> Result<(), ConfigError> {
    format!("ws://{}{path}", super::authority(&config.host, config.port))
        .into_client_request()
        .map(drop)
        .map_err(|_| ConfigError::InvalidWebsocketPath(path.to_owned()))
}

/// Run the websocket upgrade over `io` (TCP or TLS) and wrap the result as an [`Io`].
pub(super) async fn upgrade(
    io: Box<dyn Io>,
    config: &Config,
    path: &str,
) -> Result<Box<dyn Io>, DownReason> {
    let scheme = if config.tls.is_some() { "wss" } else { "ws" };
    let url = format!(
        "{scheme}://{}{path}",
        super::authority(&config.host, config.port)
    );
    let mut request = url
        .into_client_request()
        .map_err(|e| DownReason::WebSocket(e.to_string()))?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
    // MQTT enforces max_packet_size itself; leave room for a packet split over frames.
    let limit = config.max_packet_size.saturating_add(64 * 1024);
    let ws_config = WebSocketConfig {
        max_message_size: Some(limit),
        max_frame_size: Some(limit),
        ..WebSocketConfig::default()
    };
    let (ws, _response) = tokio_tungstenite::client_async_with_config(request, io, Some(ws_config))
        .await
        .map_err(|e| {
            match e {
        tungstenite::Error::Io(e) => match down_reason(e) {
            DownReason::Closed => DownReason::WebSocket(
                "the server closed the connection during the upgrade (is it a websockets listener?)"
                    .into(),
            ),
            other => other,
        },
        tungstenite::Error::Protocol(e) => DownReason::WebSocket(format!(
            "upgrade failed: {e} (is it a websockets listener?)"
        )),
        tungstenite::Error::Http(response) => DownReason::WebSocket(format!(
            "upgrade refused with HTTP {} (check the websocket path)",
            response.status()
        )),
        other => DownReason::WebSocket(other.to_string()),
    }
        })?;
    Ok(Box::new(WsIo {
        ws,
        read: Bytes::new(),
    }))
}

/// MQTT bytes over websocket binary messages.
struct WsIo {
    ws: WebSocketStream<Box<dyn Io>>,
    /// The unread rest of the last binary message.
    read: Bytes,
}

impl AsyncRead for WsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.read.is_empty() {
                let n = self.read.len().min(buf.remaining());
                buf.put_slice(&self.read[..n]);
                self.read.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                None
                | Some(
                    Ok(Message::Close(_))
                    | Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed),
                ) => return Poll::Ready(Ok(())),
                Some(Ok(Message::Binary(data))) => self.read = Bytes::from(data),
                Some(Ok(_)) => {} // ping/pong (answered by tungstenite), text: not MQTT
                Some(Err(e)) => return Poll::Ready(Err(ws_to_io(e))),
            }
        }
    }
}

impl AsyncWrite for WsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(ws_to_io)?;
        Pin::new(&mut self.ws)
            .start_send(Message::binary(buf.to_vec()))
            .map_err(ws_to_io)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(ws_to_io)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.ws).poll_close(cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                Poll::Ready(Ok(()))
            }
            Err(e) => Poll::Ready(Err(ws_to_io(e))),
        }
    }
}
