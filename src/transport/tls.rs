//! TLS over the TCP stream (cargo feature `tls`): the rustls client configuration (our
//! own, on the ring provider), the server name to verify, loading the CA, client
//! certificate and key from PEM, and the mapping of rustls errors to [`DownReason`]s.

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
    let name = server_name(options, host).map_err(|e| DownReason::TlsHandshake(e.to_string()))?;
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
        if let Some(ca) = &tls.ca {
            for cert in certs(ca, "ca_file")? {
                roots.add(cert).map_err(|e| ConfigError::InvalidTls {
                    option: "ca_file",
                    reason: format!("not a usable CA certificate: {e}"),
                })?;
            }
        } else {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
            if roots.is_empty() {
                return Err(ConfigError::InvalidTls {
                option: "ca_file",
                reason: "no CA file given and no trusted roots found on this system; set TlsOptions::ca_file".into(),
            });
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
