//! A small HTTPS/1.1 client for the management API: rustls on the ring provider (the only
//! provider in the tree), hyper's connection-level client, one connection per request, and
//! one deadline over connect, handshake, request and answer.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// The system's trust store (Debian's ca-certificates), used with the node's own
/// certificate or `--ca-cert` when present.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The API's own port, used when the URL names none.
pub const DEFAULT_API_PORT: u16 = 8443;
/// Answers larger than this are refused (the largest route answers are a few MiB).
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// `https://host[:port][/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    pub host: String,
    pub port: u16,
    /// Path prefix before `/api/v1/...` (empty, or starting with `/`, no trailing `/`), for
    /// an API behind a reverse proxy.
    pub prefix: String,
}

impl ServerUrl {
    pub fn parse(text: &str) -> Result<ServerUrl, String> {
        let rest = match text.split_once("://") {
            Some(("https", rest)) => rest,
            Some((scheme, _)) => return Err(format!("the API is served over HTTPS only, not {scheme}")),
            None => return Err("give a URL like https://192.0.2.10:8443".into()),
        };
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err("user names in the URL are not used; give the token with --token or SLUICE_TOKEN".into());
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or("an IPv6 address needs its closing `]`")?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err("the URL names no host".into());
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| format!("`{p}` is not a port number"))?,
            None => DEFAULT_API_PORT,
        };
        Ok(ServerUrl { host: host.to_owned(), port, prefix: prefix.to_owned() })
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "https://[{}]:{}{}", self.host, self.port, self.prefix)
        } else {
            write!(f, "https://{}:{}{}", self.host, self.port, self.prefix)
        }
    }
}

pub struct HttpsClient {
    url: ServerUrl,
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
    timeout: Duration,
}

/// Why a request got no HTTP answer.
#[derive(Debug)]
pub struct TransportError(String);

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl HttpsClient {
    /// `trusted`: PEM files whose certificates are trusted as roots, on top of the system's.
    pub fn new(url: ServerUrl, trusted: &[PathBuf], timeout: Duration) -> Result<HttpsClient, String> {
        let mut roots = rustls::RootCertStore::empty();
        for path in trusted {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("--ca-cert {}: cannot read it: {e}", path.display()))?;
            let mut added = 0;
            for cert in certs {
                let cert = cert.map_err(|e| format!("--ca-cert {}: not PEM certificates: {e}", path.display()))?;
                roots.add(cert).map_err(|e| format!("--ca-cert {}: unusable certificate: {e}", path.display()))?;
                added += 1;
            }
            if added == 0 {
                return Err(format!("--ca-cert {}: holds no certificate", path.display()));
            }
        }
        if let Ok(system) = CertificateDer::pem_file_iter(SYSTEM_ROOTS) {
            // Entries the parser cannot use are skipped, as every TLS client does with this file.
            let _ = roots.add_parsable_certificates(system.flatten());
        }
        if roots.is_empty() {
            return Err(format!(
                "no certificate to trust: give the node's certificate (or its CA) with --ca-cert \
                 (a node's generated one is <data-dir>/{})",
                sluice_api::tls::GENERATED_CERT_FILE
            ));
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = match url.host.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => {
                ServerName::try_from(url.host.clone()).map_err(|_| format!("`{}` is not a host name", url.host))?
            }
        };
        Ok(HttpsClient { url, connector: tokio_rustls::TlsConnector::from(Arc::new(config)), name, timeout })
    }

    pub fn url(&self) -> &ServerUrl {
        &self.url
    }

    /// One request on a new connection; any HTTP status is an answer.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
    ) -> Result<super::Answer, TransportError> {
        let (status, bytes) = self.bytes(method, path, token, body, MAX_ANSWER_BYTES).await?;
        Ok(super::Answer { status, body: String::from_utf8_lossy(&bytes).into_owned() })
    }

    /// One request whose answer body is returned as bytes, up to `limit` (a file download).
    pub async fn bytes(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
        limit: usize,
    ) -> Result<(u16, Bytes), TransportError> {
        match tokio::time::timeout(self.timeout, self.exchange(method, path, token, body, limit)).await {
            Ok(answer) => answer,
            Err(_) => Err(TransportError(format!("no answer within {} ms (--timeout)", self.timeout.as_millis()))),
        }
    }

    async fn exchange(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
        limit: usize,
    ) -> Result<(u16, Bytes), TransportError> {
        let fail = |what: &str, e: &dyn fmt::Display| TransportError(format!("{what}: {e}"));
        let tcp = tokio::net::TcpStream::connect((self.url.host.as_str(), self.url.port))
            .await
            .map_err(|e| fail("cannot connect", &e))?;
        let tls = self.connector.connect(self.name.clone(), tcp).await.map_err(|e| {
            fail(
                "TLS handshake failed (is --ca-cert the node's certificate or its CA, and does it name this host?)",
                &e,
            )
        })?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| fail("HTTP handshake", &e))?;
        let connection = tokio::spawn(connection);
        let host =
            if self.url.port == 443 { self.url.host.clone() } else { format!("{}:{}", self.url.host, self.url.port) };
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url.prefix))
            .header(hyper::header::HOST, host)
            .header(hyper::header::USER_AGENT, concat!("sluice-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(token) = token {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if body.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| fail("cannot build the request", &e))?;
        let response = sender.send_request(request).await.map_err(|e| fail("request failed", &e))?;
        let status = response.status().as_u16();
        let bytes = Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map_err(|e| fail("cannot read the answer", &e))?
            .to_bytes();
        connection.abort();
        Ok((status, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_with_and_without_port_and_prefix() {
        let url = ServerUrl::parse("https://192.0.2.10:9443").unwrap();
        assert_eq!((url.host.as_str(), url.port, url.prefix.as_str()), ("192.0.2.10", 9443, ""));
        let url = ServerUrl::parse("https://node.example/sluice/").unwrap();
        assert_eq!((url.host.as_str(), url.port, url.prefix.as_str()), ("node.example", DEFAULT_API_PORT, "/sluice"));
        let url = ServerUrl::parse("https://[2001:db8::1]:8443").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("2001:db8::1", 8443));
        assert_eq!(url.to_string(), "https://[2001:db8::1]:8443");
    }

    #[test]
    fn bad_urls_say_why() {
        assert!(ServerUrl::parse("http://node:8443").unwrap_err().contains("HTTPS only"));
        assert!(ServerUrl::parse("node:8443").unwrap_err().contains("https://"));
        assert!(ServerUrl::parse("https://node:port").unwrap_err().contains("not a port"));
        assert!(ServerUrl::parse("https://:8443").unwrap_err().contains("no host"));
        assert!(ServerUrl::parse("https://u:p@node").unwrap_err().contains("--token"));
        assert!(ServerUrl::parse("https://[::1").unwrap_err().contains("`]`"));
    }
}
