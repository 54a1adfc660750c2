//! TLS settings: [`TlsOptions`] and the PEM data it holds.

use std::fmt;

/// PEM data, from a file (read at each connection attempt) or in memory.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Pem {
    File(std::path::PathBuf),
    Bytes(Vec<u8>),
}

impl Pem {
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn read(&self) -> std::io::Result<Vec<u8>> {
        match self {
            Self::File(path) => std::fs::read(path),
            Self::Bytes(bytes) => Ok(bytes.clone()),
        }
    }
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "File({path:?})"),
            Self::Bytes(bytes) => write!(f, "Bytes({} bytes)", bytes.len()),
        }
    }
}

/// PEM holding a private key: never shown, not even its length.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SecretPem(pub(crate) Pem);

impl fmt::Debug for SecretPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            // A path is not key material.
            Pem::File(path) => write!(f, "File({path:?})"),
            Pem::Bytes(_) => f.write_str("\"<redacted>\""),
        }
    }
}

/// TLS settings for [`Config::tls`](crate::Config::tls) (rustls; TLS 1.2 and 1.3).
///
/// By default the server certificate is verified against the operating system's
/// trusted roots and the host name given to [`Config::new`](crate::Config::new).
///
/// ```
/// use tower_mqtt::{config::TlsOptions, Config};
/// let config = Config::new("10.0.0.7")
///     .port(8883)
///     .tls(TlsOptions::new()
///         .ca_file("/etc/mqtt/ca.pem")
///         .server_name("broker.internal")
///         .client_cert_files("/etc/mqtt/client.pem", "/etc/mqtt/client.key"));
/// ```
#[derive(Clone, PartialEq, Eq, Default)]
pub struct TlsOptions {
    pub(crate) ca: Option<Pem>,
    pub(crate) accept_invalid_certs: bool,
    pub(crate) server_name: Option<String>,
    pub(crate) client_auth: Option<(Pem, SecretPem)>,
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsOptions")
            .field("ca", &self.ca)
            .field("danger_accept_invalid_certs", &self.accept_invalid_certs)
            .field("server_name", &self.server_name)
            .field(
                "client_cert",
                &self.client_auth.as_ref().map(|(cert, _)| cert),
            )
            .field("client_key", &self.client_auth.as_ref().map(|(_, key)| key))
            .finish()
    }
}

impl TlsOptions {
    /// Verify the server against the system's trusted roots.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Trust only the CA certificates in this PEM file (`ssl_opts.cacertfile`). Read at
    /// `build()` (to check it) and at each connection attempt (so it can be rotated).
    #[must_use]
    pub fn ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.ca = Some(Pem::File(path.into()));
        self
    }

    /// Trust only the CA certificates in this PEM text.
    #[must_use]
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca = Some(Pem::Bytes(pem.into()));
        self
    }

    /// Verify the server certificate against `name` and send it as SNI, instead of the
    /// host given to [`Config::new`](crate::Config::new)
    /// (`ssl_opts.server_name_indication`). Lets you connect to an IP address whose
    /// certificate names a host.
    #[must_use]
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Present a client certificate (mutual TLS; `ssl_opts.certfile` / `keyfile`): a PEM
    /// certificate chain and a PEM private key (PKCS#8, PKCS#1 or SEC1).
    #[must_use]
    pub fn client_cert_files(
        mut self,
        cert: impl Into<std::path::PathBuf>,
        key: impl Into<std::path::PathBuf>,
    ) -> Self {
        self.client_auth = Some((Pem::File(cert.into()), SecretPem(Pem::File(key.into()))));
        self
    }

    /// Like [`client_cert_files`](Self::client_cert_files), from PEM text. The key never
    /// appears in `Debug` output.
    #[must_use]
    pub fn client_cert_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.client_auth = Some((Pem::Bytes(cert.into()), SecretPem(Pem::Bytes(key.into()))));
        self
    }

    /// **Do not verify the server certificate at all** (`ssl_opts.verify:
    /// :verify_none`). Anyone between you and the broker can read and change the
    /// traffic, credentials included. For tests against self-signed brokers only.
    #[must_use]
    pub fn danger_accept_invalid_certs(mut self) -> Self {
        self.accept_invalid_certs = true;
        self
    }
}
