//! TLS for the cluster's two listeners and its clients, on rustls with the ring provider
//! passed explicitly (two providers in one process make rustls refuse to choose).
//!
//! - Cluster listener: mutual TLS. The server presents its node certificate and accepts only
//!   clients whose certificate the cluster CA signed; clients check the server the same way,
//!   for the name every node certificate carries ([`CLUSTER_SERVER_NAME`]).
//! - Join listener: server-authenticated only (a joiner has no certificate yet), and the joiner
//!   cannot check the server's certificate either (it has no CA yet): the join handshake's MACs
//!   carry the trust, TLS keeps the exchange private.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::identity::Identity;
use crate::pki::CLUSTER_SERVER_NAME;

/// A TLS handshake that takes longer is abandoned (a slow or silent peer holds no task).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections being handshaken at once per listener; more wait in the kernel's backlog.
const MAX_PENDING_HANDSHAKES: usize = 64;

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
    let certs = certs.map_err(|e| format!("{what}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what}: no certificate in it"));
    }
    Ok(certs)
}

fn key(pem: &str, what: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| format!("{what}: {e}"))
}

fn roots(identity: &Identity) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    for cert in certs(&identity.ca.cert_pem, "the cluster CA certificate")? {
        roots.add(cert).map_err(|e| format!("the cluster CA certificate: {e}"))?;
    }
    Ok(Arc::new(roots))
}

/// The cluster listener's configuration: client certificates signed by the cluster CA only.
pub fn cluster_server_config(identity: &Identity) -> Result<ServerConfig, String> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(identity)?, provider())
        .build()
        .map_err(|e| format!("client verifier: {e}"))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs(&identity.node_cert_pem, "the node certificate")?,
            key(&identity.node_key_pem, "the node key")?,
        )
        .map_err(|e| format!("the node certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The join listener's configuration: no client certificate asked for.
pub fn join_server_config(identity: &Identity) -> Result<ServerConfig, String> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(
            certs(&identity.node_cert_pem, "the node certificate")?,
            key(&identity.node_key_pem, "the node key")?,
        )
        .map_err(|e| format!("the node certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A member's client configuration: its certificate, and the cluster CA for the server's.
pub fn cluster_client_config(identity: &Identity) -> Result<ClientConfig, String> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots(identity)?)
        .with_client_auth_cert(
            certs(&identity.node_cert_pem, "the node certificate")?,
            key(&identity.node_key_pem, "the node key")?,
        )
        .map_err(|e| format!("the node certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Accepts any server certificate but still checks the handshake's signatures with it (so
/// the session is bound to that certificate's key). Used only to join, where the answer's
/// MAC, keyed with the bootstrap token, is what is trusted.
#[derive(Debug)]
struct JoinServerCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for JoinServerCertificate {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

pub fn join_client_config() -> Result<ClientConfig, String> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(JoinServerCertificate(provider())))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A TLS connection accepted by one of our listeners, as tonic's server wants it.
pub struct TlsIo(tokio_rustls::server::TlsStream<TcpStream>);

impl tonic::transport::server::Connected for TlsIo {
    type ConnectInfo = Option<std::net::SocketAddr>;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.get_ref().0.peer_addr().ok()
    }
}

impl AsyncRead for TlsIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Accepts TCP connections on `listener` and hands out those whose TLS handshake succeeds;
/// a failed handshake (no or a foreign client certificate, garbage) is logged and dropped.
pub fn incoming(
    listener: TcpListener,
    config: ServerConfig,
    what: &'static str,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<TlsIo>> {
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let (tx, rx) = mpsc::channel(16);
    let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            // The server dropping the stream ends the loop and closes the listening socket,
            // so the address is free again at once.
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => return,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(listener = what, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = pending.clone().acquire_owned().await else { return };
            let (acceptor, handed) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let _ = tcp.set_nodelay(true);
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = handed.send(Ok(TlsIo(tls))).await;
                    }
                    Ok(Err(e)) => tracing::info!(listener = what, %peer, error = %e, "TLS handshake refused"),
                    Err(_) => tracing::info!(listener = what, %peer, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// A tonic channel to `addr` (host:port) over TLS with `config`, connected on first use and
/// again after a failure.
pub fn channel(
    addr: &str,
    config: Arc<ClientConfig>,
    rpc_timeout: Duration,
) -> Result<tonic::transport::Channel, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("{addr} is not a host:port: {e}"))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(rpc_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    let connector = TlsConnector::from(config);
    let connect = tower::service_fn(move |uri: http::Uri| {
        let connector = connector.clone();
        async move {
            let host = uri.host().ok_or_else(|| io::Error::other("no host"))?.trim_matches(['[', ']']).to_owned();
            let port = uri.port_u16().ok_or_else(|| io::Error::other("no port"))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(CLUSTER_SERVER_NAME).map_err(io::Error::other)?;
            let tls = connector.connect(name, tcp).await?;
            Ok::<_, io::Error>(TokioIo::new(tls))
        }
    });
    Ok(endpoint.connect_with_connector_lazy(connect))
}
