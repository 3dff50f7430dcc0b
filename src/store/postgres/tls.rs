//! TLS to Postgres, as libpq's `sslmode` means it, with rustls (ring), for the pool, the
//! listener and migrations alike.
//!
//! The URL's `sslmode` (default `prefer`, as libpq) and `sslrootcert` are read here, not by
//! tokio-postgres (which knows only disable/prefer/require):
//! - `disable`: plain TCP.
//! - `prefer`: TLS when the server offers it, plain otherwise; the certificate is not
//!   checked (libpq without a root certificate does the same).
//! - `require`: TLS or nothing; the certificate is not checked.
//! - `verify-ca`: TLS, the certificate must chain to the CA file.
//! - `verify-full`: as `verify-ca`, and it must name the host connected to.
//!
//! The CA file is `sslrootcert` in the URL, else `EDGEDESK_DATABASE_CA_FILE`; `verify-*`
//! without one is refused at start with a message saying so.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::{StoreError, StoreResult};

/// How to reach one Postgres URL: its parsed configuration and its TLS connector.
#[derive(Clone)]
pub struct PgTarget {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

fn invalid(message: String) -> StoreError {
    StoreError::Internal(format!("the Postgres URL: {message}"))
}

/// The URL's connection settings, without TLS (for reading its user name, say).
pub fn config(url: &str) -> StoreResult<tokio_postgres::Config> {
    split(url).map(|(config, _, _)| config)
}

/// Takes `sslmode` and `sslrootcert` out of `url` and parses the rest.
fn split(url: &str) -> StoreResult<(tokio_postgres::Config, Mode, Option<PathBuf>)> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, query),
        None => (url, ""),
    };
    let (mut mode, mut root) = (Mode::Prefer, None);
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", value)) => {
                mode = match value {
                    "disable" => Mode::Disable,
                    "allow" | "prefer" => Mode::Prefer,
                    "require" => Mode::Require,
                    "verify-ca" => Mode::VerifyCa,
                    "verify-full" => Mode::VerifyFull,
                    other => {
                        return Err(invalid(format!("sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full")));
                    }
                }
            }
            Some(("sslrootcert", value)) => root = Some(PathBuf::from(percent_decode(value))),
            _ => kept.push(pair),
        }
    }
    let rebuilt = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
    let config: tokio_postgres::Config = rebuilt.parse().map_err(|e| invalid(format!("{e}")))?;
    Ok((config, mode, root))
}

/// Parses `url` (a `postgres://` URL; its `sslmode` and `sslrootcert` are taken out) and
/// builds its connector. `ca_file` is used when the URL names none.
pub fn target(url: &str, ca_file: Option<&Path>) -> StoreResult<PgTarget> {
    let (mut config, mode, root) = split(url)?;
    let root = root.or_else(|| ca_file.map(Path::to_path_buf));
    config.ssl_mode(match mode {
        Mode::Disable => SslMode::Disable,
        Mode::Prefer => SslMode::Prefer,
        _ => SslMode::Require,
    });
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        Mode::Disable | Mode::Prefer | Mode::Require => {
            Arc::new(Lenient { chain: None, algorithms: provider().signature_verification_algorithms })
        }
        Mode::VerifyCa | Mode::VerifyFull => {
            let path = root.ok_or_else(|| {
                invalid("sslmode=verify-ca and verify-full need a CA file: sslrootcert= in the URL or EDGEDESK_DATABASE_CA_FILE".into())
            })?;
            let roots = load_roots(&path)?;
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::new(provider()))
                .build()
                .map_err(|e| StoreError::Internal(format!("the CA file {}: {e}", path.display())))?;
            if mode == Mode::VerifyFull {
                webpki
            } else {
                Arc::new(Lenient { chain: Some(webpki), algorithms: provider().signature_verification_algorithms })
            }
        }
    };
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Internal(format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(PgTarget { config, tls: MakeRustlsConnect::new(tls) })
}

fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn load_roots(path: &Path) -> StoreResult<RootCertStore> {
    let unreadable = |e: String| StoreError::Internal(format!("the CA file {}: {e}", path.display()));
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| unreadable(e.to_string()))? {
        roots.add(cert.map_err(|e| unreadable(e.to_string()))?).map_err(|e| unreadable(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(unreadable("no certificate in it".into()));
    }
    Ok(roots)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = text.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How a server's certificate is checked: not at all (`prefer`, `require`: encrypted but
/// unchecked, libpq's meaning), its chain only (`verify-ca`), or chain and name
/// (`verify-full`, rustls's own verifier, used as it is). Handshake signatures are always
/// checked with the provider's algorithms.
#[derive(Debug)]
struct Lenient {
    /// The chain check; `None`: no check.
    chain: Option<Arc<WebPkiServerVerifier>>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else { return Ok(ServerCertVerified::assertion()) };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            // verify-ca: the name in the certificate is not checked.
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. })) => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// An error with its causes ("error performing TLS handshake: invalid peer certificate: …").
pub fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_read_and_taken_out_of_the_url() {
        let t = target("postgres://u:p@db.example:5432/app?sslmode=require&application_name=x", None).unwrap();
        assert_eq!(t.config.get_ssl_mode(), SslMode::Require);
        assert_eq!(t.config.get_application_name(), Some("x"));
        assert_eq!(target("postgres://u@h/db", None).unwrap().config.get_ssl_mode(), SslMode::Prefer, "libpq's default");
        assert_eq!(target("postgres://u@h/db?sslmode=disable", None).unwrap().config.get_ssl_mode(), SslMode::Disable);
        let err = target("postgres://u@h/db?sslmode=verify-full", None).err().unwrap().to_string();
        assert!(err.contains("CA file"), "{err}");
        assert!(target("postgres://u@h/db?sslmode=sometimes", None).is_err());
        let err = target("postgres://u@h/db?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem", None).err().unwrap().to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
