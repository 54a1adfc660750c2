//! The byte stream under MQTT: TCP, TLS (rustls on ring), and websockets over either.
//!
//! [`connect`] resolves the host, opens the TCP connection, runs the TLS handshake when
//! [`Config::tls`] is set and the websocket upgrade when [`Config::websocket`] is set,
//! and hands the driver one [`Io`]. Failures become typed [`DownReason`]s; every I/O
//! error, including rustls and websocket errors that surface later (e.g. TLS 1.3
//! reports a missing client certificate only on the first read), is mapped by
//! [`down_reason`].

use std::io;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::config::Config;
use crate::error::{ConfigError, DownReason};

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

#[cfg(feature = "tls")]
mod tls {
    use std::sync::Arc;

    use tokio_rustls::rustls::{
        self,
        client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider},
        pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime},
        AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore,
        SignatureScheme,
    };

    use super::{down_reason, Io};
    use crate::config::{Pem, TlsOptions};
    use crate::error::ConfigError;
    use crate::error::DownReason;

    /// Run the TLS handshake over `io`.
    pub(super) async fn handshake(
        options: &TlsOptions,
        host: &str,
        io: Box<dyn Io>,
    ) -> Result<Box<dyn Io>, DownReason> {
        let client = client_config(options).map_err(|e| DownReason::TlsHandshake(e.to_string()))?;
        let name =
            server_name(options, host).map_err(|e| DownReason::TlsHandshake(e.to_string()))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(name, io)
            .await
            .map_err(down_reason)?;
        Ok(Box::new(stream))
    }

    pub(super) fn server_name(
        tls: &TlsOptions,
        host: &str,
    ) -> Result<ServerName<'static>, ConfigError> {
        let name = tls.server_name.as_deref().unwrap_or(host);
        ServerName::try_from(name.to_owned()).map_err(|_| ConfigError::InvalidTls {
            option: "server_name",
            reason: format!("{name:?} is neither a DNS name nor an IP address"),
        })
    }

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn read_pem(pem: &Pem, option: &'static str) -> Result<Vec<u8>, ConfigError> {
        if matches!(pem, Pem::File(path) if path.as_os_str().is_empty()) {
            return Err(ConfigError::InvalidTls {
                option,
                reason: "not set: a client certificate needs both the certificate and the key file (ssl_opts.certfile and ssl_opts.keyfile)".into(),
            });
        }
        pem.read().map_err(|e| ConfigError::InvalidTls {
            option,
            reason: match pem {
                Pem::File(path) => format!("cannot read {}: {e}", path.display()),
                Pem::Bytes(_) => e.to_string(),
            },
        })
    }

    fn certs(pem: &Pem, option: &'static str) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
        let bytes = read_pem(pem, option)?;
        let certs = rustls_pemfile::certs(&mut &bytes[..])
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConfigError::InvalidTls {
                option,
                reason: format!("not valid PEM: {e}"),
            })?;
        if certs.is_empty() {
            return Err(ConfigError::InvalidTls {
                option,
                reason: "no CERTIFICATE block found".into(),
            });
        }
        Ok(certs)
    }

    /// The rustls configuration for `tls` (our own, so that the server name can differ from
    /// the host, which rumqttc's TLS setup cannot do).
    pub(crate) fn client_config(tls: &TlsOptions) -> Result<ClientConfig, ConfigError> {
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::InvalidTls {
                option: "protocol versions",
                reason: e.to_string(),
            })?;
        let builder = if tls.accept_invalid_certs {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
        } else {
            let mut roots = RootCertStore::empty();
            match &tls.ca {
                Some(ca) => {
                    for cert in certs(ca, "ca_file")? {
                        roots.add(cert).map_err(|e| ConfigError::InvalidTls {
                            option: "ca_file",
                            reason: format!("not a usable CA certificate: {e}"),
                        })?;
                    }
                }
                None => {
                    let native = rustls_native_certs::load_native_certs();
                    roots.add_parsable_certificates(native.certs);
                    if roots.is_empty() {
                        return Err(ConfigError::InvalidTls {
                        option: "ca_file",
                        reason: "no CA file given and no trusted roots found on this system; set TlsOptions::ca_file".into(),
                    });
                    }
                }
            }
            builder.with_root_certificates(roots)
        };
        match &tls.client_auth {
            None => Ok(builder.with_no_client_auth()),
            Some((cert, key)) => {
                let chain = certs(cert, "client_cert")?;
                let bytes = read_pem(&key.0, "client_key")?;
                let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &bytes[..])
                    .ok()
                    .flatten()
                    .ok_or_else(|| ConfigError::InvalidTls {
                        option: "client_key",
                        reason: "no PKCS#8, PKCS#1 or SEC1 private key found".into(),
                    })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| ConfigError::InvalidTls {
                        option: "client_key",
                        reason: format!("does not fit the client certificate: {e}"),
                    })
            }
        }
    }

    /// `TlsOptions::danger_accept_invalid_certs`: checks signatures (so the handshake is
    /// well-formed) but trusts any certificate for any name.
    #[derive(Debug)]
    struct AcceptAnyCert(Arc<CryptoProvider>);

    impl ServerCertVerifier for AcceptAnyCert {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    /// The typed reason for a rustls error.
    pub(super) fn reason(err: &rustls::Error) -> DownReason {
        use rustls::Error as E;
        match err {
            E::InvalidCertificate(CertificateError::UnknownIssuer) => DownReason::TlsUnknownCa,
            E::InvalidCertificate(
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. },
            ) => DownReason::TlsCertificateExpired,
            E::InvalidCertificate(e) => DownReason::TlsBadCertificate(e.to_string()),
            E::AlertReceived(AlertDescription::CertificateRequired) => {
                DownReason::TlsClientCertRequired
            }
            E::AlertReceived(
                alert @ (AlertDescription::BadCertificate
                | AlertDescription::UnknownCA
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateRevoked
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::AccessDenied),
            ) => DownReason::TlsClientCertRejected(format!("{alert:?} alert")),
            other => DownReason::TlsHandshake(other.to_string()),
        }
    }
}

#[cfg(feature = "websocket")]
mod ws {
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
    use crate::error::DownReason;

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
        .map_err(|e| match e {
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
                    None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(())),
                    Some(Ok(Message::Binary(data))) => self.read = Bytes::from(data),
                    Some(Ok(_)) => {} // ping/pong (answered by tungstenite), text: not MQTT
                    Some(Err(
                        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed,
                    )) => return Poll::Ready(Ok(())),
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
}
