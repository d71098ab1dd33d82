//! TLS on the gRPC port, as a wrapper of the stream of accepted TCP connections: each is handshaken
//! (concurrently, each within the accept path's handshake timeout) and yielded as a [`TlsConnection`] whose tonic
//! `ConnectInfo` is a [`TlsPeer`] carrying the client certificate's identity.
//!
//! The certificate and key are re-read when their files change (cert-manager rotates them in place):
//! [`ReloadingCertificate`] checks the files' stamps at each handshake, so the next handshake presents
//! the new pair. With a client CA, client certificates are requested and verified against it; a
//! certificate from another CA still completes the handshake and is refused per call with
//! UNAUTHENTICATED naming the reason, where a failed handshake would tell the caller nothing.

use super::Principal;
use crate::{config::TlsConfig, sync::lock};
use futures::{Stream, StreamExt};
use rustls::{
    DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    client::danger::HandshakeSignatureValid,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, UnixTime, pem::PemObject},
    server::{
        ClientHello, ResolvesServerCert, WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
    sign::CertifiedKey,
};
use std::{
    io,
    net::SocketAddr,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tonic::transport::server::Connected;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("server.tls.cert: {0}")]
    Certificate(String),
    #[error("server.tls.key: {path}: not a PEM private key, or not the certificate's key")]
    Key { path: PathBuf },
    #[error("server.tls.client_ca: {0}")]
    ClientCa(String),
    #[error("auth.jwt: {0}")]
    Jwks(String),
}

/// What a connection's client proved with its certificate.
#[derive(Debug, Clone)]
pub enum PeerCertificate {
    /// None sent (or TLS off).
    None,
    /// Issued by the client CA: its URI SAN, else its first DNS SAN.
    Verified(Principal),
    /// Not issued by the client CA (or expired, or otherwise invalid).
    Untrusted,
    /// Issued by the client CA, but naming no one.
    WithoutIdentity,
}

/// tonic's `ConnectInfo` of a TLS connection: in every request's extensions.
#[derive(Debug, Clone)]
pub struct TlsPeer {
    pub remote_addr: Option<SocketAddr>,
    pub certificate: PeerCertificate,
}

/// An accepted, handshaken connection.
pub struct TlsConnection {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    peer: TlsPeer,
}

/// Handshakes every accepted connection, each within `timeout`, carrying along what came with it (the
/// accept path's place among the connections); failed or slow handshakes are dropped (logged at debug).
/// Up to `concurrent` run at once: the connection cap, so that silent peers never hold back others.
pub fn incoming<S, P>(
    tcp: S,
    tls: TlsAcceptor,
    timeout: Duration,
    concurrent: usize,
) -> impl Stream<Item = io::Result<(TlsConnection, P)>>
where
    S: Stream<Item = io::Result<(TcpStream, P)>>,
{
    tcp.map(move |accepted| {
        let tls = tls.clone();
        async move {
            let (stream, payload) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => return Some(Err(error)),
            };
            let remote_addr = stream.peer_addr().ok();
            match tokio::time::timeout(timeout, tls.acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let certificate = tls.peer_certificate(&stream);
                    let connection = TlsConnection {
                        stream,
                        peer: TlsPeer {
                            remote_addr,
                            certificate,
                        },
                    };
                    Some(Ok((connection, payload)))
                }
                Ok(Err(error)) => {
                    tracing::debug!(?remote_addr, %error, "tls handshake failed");
                    None
                }
                Err(_) => {
                    tracing::debug!(?remote_addr, "tls handshake timed out");
                    None
                }
            }
        }
    })
    .buffer_unordered(concurrent)
    .filter_map(futures::future::ready)
}

/// The server side of TLS: the reloading certificate and, with a client CA, its verifier.
#[derive(Clone)]
pub struct TlsAcceptor {
    acceptor: tokio_rustls::TlsAcceptor,
    client_verifier: Option<Arc<dyn ClientCertVerifier>>,
}

impl TlsAcceptor {
    pub fn new(config: &TlsConfig) -> Result<Self, SetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certificate = ReloadingCertificate::new(
            config.cert.file.clone(),
            config.key.file.clone(),
            provider.clone(),
        )?;
        let client_verifier = match &config.client_ca {
            Some(ca) => Some(client_verifier(&ca.file, provider.clone())?),
            None => None,
        };
        let builder = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| SetupError::Certificate(e.to_string()))?;
        let builder = match &client_verifier {
            Some(verifier) => {
                builder.with_client_cert_verifier(Arc::new(Deferred(verifier.clone())))
            }
            None => builder.with_no_client_auth(),
        };
        let mut server = builder.with_cert_resolver(Arc::new(certificate));
        server.alpn_protocols = vec![b"h2".to_vec()];
        Ok(TlsAcceptor {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            client_verifier,
        })
    }

    /// Verifies the client's chain against the client CA, now that the handshake has proven the
    /// client holds its key.
    fn peer_certificate(
        &self,
        stream: &tokio_rustls::server::TlsStream<TcpStream>,
    ) -> PeerCertificate {
        let (Some(verifier), Some(chain)) = (
            &self.client_verifier,
            stream.get_ref().1.peer_certificates(),
        ) else {
            return PeerCertificate::None;
        };
        let Some((end_entity, intermediates)) = chain.split_first() else {
            return PeerCertificate::None;
        };
        if verifier
            .verify_client_cert(end_entity, intermediates, UnixTime::now())
            .is_err()
        {
            return PeerCertificate::Untrusted;
        }
        match certificate_identity(end_entity) {
            Some(principal) => PeerCertificate::Verified(principal),
            None => PeerCertificate::WithoutIdentity,
        }
    }
}

/// The certificate's URI SAN (a SPIFFE ID), else its first DNS SAN.
fn certificate_identity(certificate: &CertificateDer<'_>) -> Option<Principal> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate).ok()?;
    let names = parsed
        .subject_alternative_name()
        .ok()??
        .value
        .general_names
        .clone();
    let uri = names.iter().find_map(|name| match name {
        GeneralName::URI(uri) => Some(*uri),
        _ => None,
    });
    let dns = || {
        names.iter().find_map(|name| match name {
            GeneralName::DNSName(dns) => Some(*dns),
            _ => None,
        })
    };
    uri.or_else(dns)
        .filter(|name| !name.is_empty())
        .map(Principal::new)
}

fn client_verifier(
    path: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, SetupError> {
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(path)
        .map_err(|_| SetupError::ClientCa(format!("cannot read {}", path.display())))?
    {
        let certificate = certificate.map_err(|_| {
            SetupError::ClientCa(format!("{}: not PEM certificates", path.display()))
        })?;
        roots
            .add(certificate)
            .map_err(|e| SetupError::ClientCa(format!("{}: {e}", path.display())))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .allow_unauthenticated()
        .build()
        .map_err(|e| SetupError::ClientCa(format!("{}: {e}", path.display())))
}

/// The client CA's verifier for everything but the chain itself, which is judged after the
/// handshake (see the module's comment). The handshake still proves the client holds the key of the
/// certificate it sent: the signature checks are the real verifier's.
#[derive(Debug)]
struct Deferred(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for Deferred {
    fn offer_client_auth(&self) -> bool {
        true
    }

    /// Not at the handshake: health needs no certificate, and other calls are refused per call.
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// What identifies a file's content without reading it: replaced files get a new inode, rewritten
/// ones a new modification time or length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    inode: u64,
    modified: Option<std::time::SystemTime>,
    len: u64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    let metadata = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        inode: metadata.ino(),
        modified: metadata.modified().ok(),
        len: metadata.len(),
    })
}

/// The certificate and key, re-read when either file's stamp changes. A pair that fails to load
/// (a rotation half-written, a key that does not match) keeps the last good pair in use.
#[derive(Debug)]
pub struct ReloadingCertificate {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: Mutex<(Option<FileStamp>, Option<FileStamp>, Arc<CertifiedKey>)>,
}

impl ReloadingCertificate {
    fn new(
        cert_path: PathBuf,
        key_path: PathBuf,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, SetupError> {
        let stamps = (stamp(&cert_path), stamp(&key_path));
        let key = load_pair(&cert_path, &key_path, &provider)?;
        Ok(ReloadingCertificate {
            current: Mutex::new((stamps.0, stamps.1, Arc::new(key))),
            cert_path,
            key_path,
            provider,
        })
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let stamps = (stamp(&self.cert_path), stamp(&self.key_path));
        let mut current = lock(&self.current);
        if (current.0, current.1) != stamps {
            match load_pair(&self.cert_path, &self.key_path, &self.provider) {
                Ok(key) => {
                    tracing::info!(cert = %self.cert_path.display(), "tls certificate reloaded");
                    *current = (stamps.0, stamps.1, Arc::new(key));
                }
                // Tried again at the next handshake, when the stamps differ still.
                Err(error) => {
                    tracing::warn!(%error, "tls certificate not reloaded; keeping the last")
                }
            }
        }
        Some(current.2.clone())
    }
}

fn load_pair(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, SetupError> {
    let chain = CertificateDer::pem_file_iter(cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|_| {
            SetupError::Certificate(format!(
                "{}: cannot read PEM certificates",
                cert_path.display()
            ))
        })?;
    if chain.is_empty() {
        return Err(SetupError::Certificate(format!(
            "{}: no certificate in the file",
            cert_path.display()
        )));
    }
    // The key's parse errors may quote its lines: they are never shown.
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|_| SetupError::Key {
        path: key_path.to_path_buf(),
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|_| SetupError::Key {
        path: key_path.to_path_buf(),
    })
}

impl Connected for TlsConnection {
    type ConnectInfo = TlsPeer;

    fn connect_info(&self) -> TlsPeer {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
