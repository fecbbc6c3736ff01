//! TLS to the broker: the rustls client config (ring provider, TLS 1.2 and
//! 1.3) built from PEM bytes read by the config, and the short stable name
//! of a failed connect (`unknown-ca`, `expired`, `name-mismatch`, …) shown
//! in the log and the status.
//!
//! The config is built once, when the config file is loaded, so that
//! `linegate check` catches what can be caught before the first connect: a
//! file that holds no certificate or no key, a private key that does not
//! belong to the client certificate, an empty system trust store.

use std::error::Error as StdError;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore,
    SignatureScheme,
};

/// A client certificate chain and its private key.
pub struct ClientIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// The ring provider. rustls deprecates it for lacking post-quantum key
/// exchange (aws-lc-rs has it); ring is kept because aws-lc-rs does not
/// cross-build cleanly for armv7, and X25519/ECDHE protect a broker link.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates in PEM `bytes`; an error when there is none.
pub fn parse_certs(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("it is not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err("it holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certs)
}

/// The private key in PEM `bytes` (PKCS#8, PKCS#1 or SEC1).
pub fn parse_key(bytes: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            "it holds no PEM private key (-----BEGIN PRIVATE KEY-----)".to_owned()
        }
        e => format!("it is not a valid PEM private key: {e}"),
    })
}

/// Trust anchors from the certificates of a `ca_file`.
pub fn roots_from(certs: Vec<CertificateDer<'static>>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let (_, bad) = roots.add_parsable_certificates(certs);
    if roots.is_empty() {
        return Err(format!(
            "none of its {bad} certificate(s) can be used as a trust anchor"
        ));
    }
    Ok(roots)
}

/// The system's trust store (Debian: /etc/ssl/certs from ca-certificates;
/// `SSL_CERT_FILE` / `SSL_CERT_DIR` override it).
pub fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let why = found
            .errors
            .first()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        return Err(format!(
            "the system trust store holds no certificate{why}: install ca-certificates or set ca_file"
        ));
    }
    Ok(roots)
}

/// Where building the client config failed: the client key pair, or the
/// `server_name`.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("the private key does not belong to the client certificate")]
    KeyMismatch,
    #[error("the client certificate or key cannot be used: {0}")]
    Identity(rustls::Error),
    #[error("\"{0}\" is not a DNS name or IP address")]
    ServerName(String),
    #[error("{0}")]
    Other(rustls::Error),
}

/// The rustls client config: ring, the safe default protocol versions
/// (TLS 1.2 and 1.3), `roots` as trust anchors, the client identity if
/// any, and the certificate checked against `server_name` rather than the
/// host connected to when one is given.
pub fn client_config(
    roots: RootCertStore,
    identity: Option<ClientIdentity>,
    server_name: Option<&str>,
) -> Result<Arc<ClientConfig>, BuildError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(BuildError::Other)?;
    let roots = Arc::new(roots);
    let builder = match server_name {
        None => builder.with_root_certificates(roots),
        Some(name) => {
            let name = ServerName::try_from(name.to_owned())
                .map_err(|_| BuildError::ServerName(name.to_owned()))?;
            let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| BuildError::Other(rustls::Error::General(e.to_string())))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NamedVerifier { inner, name }))
        }
    };
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => builder
            .with_client_auth_cert(id.chain, id.key)
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => BuildError::KeyMismatch,
                e => BuildError::Identity(e),
            })?,
    };
    Ok(Arc::new(config))
}

/// The standard WebPKI verification, against a configured name instead of
/// the host connected to (a broker reached by IP address whose certificate
/// names it by DNS name, or one behind another name).
#[derive(Debug)]
struct NamedVerifier {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for NamedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _host: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The short, stable name of why a connect failed, for the log and the
/// status (`broker.last_error.kind`): the first TLS or I/O cause found in
/// the error's chain.
pub fn error_kind(err: &(dyn StdError + 'static)) -> &'static str {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return tls_kind(tls);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(tls) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return tls_kind(tls);
            }
            return io_kind(io);
        }
        next = e.source();
    }
    "error"
}

fn io_kind(io: &std::io::Error) -> &'static str {
    use std::io::ErrorKind as K;
    match io.kind() {
        K::ConnectionRefused => "refused",
        K::TimedOut => "timeout",
        K::HostUnreachable | K::NetworkUnreachable => "unreachable",
        K::ConnectionReset | K::ConnectionAborted | K::UnexpectedEof | K::BrokenPipe => {
            "connection-closed"
        }
        _ if io.to_string().contains("failed to lookup") => "dns",
        _ => "io",
    }
}

fn tls_kind(e: &rustls::Error) -> &'static str {
    use CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => "unknown-ca",
            C::Expired | C::ExpiredContext { .. } => "expired",
            C::NotValidYet | C::NotValidYetContext { .. } => "not-yet-valid",
            C::NotValidForName | C::NotValidForNameContext { .. } => "name-mismatch",
            C::Revoked => "revoked",
            _ => "bad-server-cert",
        },
        rustls::Error::AlertReceived(a) => match a {
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateRequired
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRevoked
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::AccessDenied => "bad-client-cert",
            _ => "tls-alert",
        },
        rustls::Error::InconsistentKeys(_) => "key-mismatch",
        _ => "tls",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_certificate_failures_through_io_errors() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        assert_eq!(error_kind(&io), "unknown-ca");
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
        );
        assert_eq!(error_kind(&io), "bad-client-cert");
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(error_kind(&refused), "refused");
    }

    #[test]
    fn refuses_pem_without_certificate_or_key() {
        assert!(
            parse_certs(b"hello")
                .unwrap_err()
                .contains("no PEM certificate")
        );
        assert!(
            parse_key(b"hello")
                .unwrap_err()
                .contains("no PEM private key")
        );
    }
}
