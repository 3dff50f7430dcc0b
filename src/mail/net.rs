//! Connections to a channel's mail servers: TCP to an allowed address (`http::outbound`),
//! then TLS from the first byte, TLS after STARTTLS ([`upgrade`]), or plain text, as the
//! channel says. Certificates are checked against the Mozilla roots (`webpki-roots`, built
//! in, so the binary needs nothing from the system) for the server's host name.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::MailConfig;
use crate::http::outbound::{self, OutboundError};
use crate::store::mail::{Security, Server};

/// Why a mail server could not be reached or spoken to, in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Outbound(#[from] OutboundError),
    #[error("TLS with {host} failed: {reason}")]
    Tls { host: String, reason: String },
    #[error("{host} did not answer within {seconds} s")]
    Timeout { host: String, seconds: u64 },
}

/// A connection to a mail server, encrypted or not.
#[derive(Debug)]
pub enum MailStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl MailStream {
    pub fn is_encrypted(&self) -> bool {
        matches!(self, Self::Tls(_))
    }
}

impl AsyncRead for MailStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MailStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// lettre speaks SMTP over any stream that says who its peer is.
impl lettre::transport::smtp::client::AsyncTokioStream for MailStream {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        match self {
            Self::Plain(s) => s.peer_addr(),
            Self::Tls(s) => s.get_ref().0.peer_addr(),
        }
    }
}

/// The TLS client settings every mail connection uses (ring, Mozilla's roots), built once.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            // ring supports rustls's default protocol versions, so this cannot fail.
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports TLS 1.2 and 1.3")
                .with_root_certificates(roots)
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

async fn within<T>(timeout: Duration, host: &str, work: impl Future<Output = Result<T, NetError>>) -> Result<T, NetError> {
    tokio::time::timeout(timeout, work).await.map_err(|_| NetError::Timeout { host: host.to_string(), seconds: timeout.as_secs() })?
}

/// Encrypts `stream` for `host` (its certificate must be valid for that name).
async fn handshake(stream: TcpStream, host: &str, timeout: Duration) -> Result<MailStream, NetError> {
    let tls_error = |reason: String| NetError::Tls { host: host.to_string(), reason };
    let name = ServerName::try_from(host.to_string()).map_err(|e| tls_error(e.to_string()))?;
    let connector = tokio_rustls::TlsConnector::from(tls_config());
    within(timeout, host, async { connector.connect(name, stream).await.map_err(|e| tls_error(e.to_string())) })
        .await
        .map(|tls| MailStream::Tls(Box::new(tls)))
}

/// A connection to `server`, encrypted from the first byte when its security is `tls`.
pub async fn open(server: &Server, config: &MailConfig) -> Result<MailStream, NetError> {
    let tcp = outbound::connect(&server.host, server.port, config.reach, config.timeout).await?;
    match server.security {
        Security::Tls => handshake(tcp, &server.host, config.timeout).await,
        Security::Starttls | Security::None => Ok(MailStream::Plain(tcp)),
    }
}

/// Encrypts a plain connection after the server agreed to STARTTLS.
pub async fn upgrade(stream: MailStream, host: &str, config: &MailConfig) -> Result<MailStream, NetError> {
    match stream {
        MailStream::Plain(tcp) => handshake(tcp, host, config.timeout).await,
        tls @ MailStream::Tls(_) => Ok(tls),
    }
}
