//! The server certificate: the operator's (`--http-cert`/`--http-key`) or one generated once
//! into the data root, and the rustls configuration on the **ring** provider, passed
//! explicitly (a second provider in the tree would otherwise make rustls panic at start).

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::config::ApiConfig;

/// File names of the generated certificate and key in the data root.
pub const GENERATED_CERT_FILE: &str = "api-cert.pem";
pub const GENERATED_KEY_FILE: &str = "api-key.pem";

#[derive(Debug)]
pub struct TlsError(pub String);

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// Where the certificate in use lives (for logs and the sysdump; never the key's content).
#[derive(Clone, Debug)]
pub struct CertificateSource {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub generated: bool,
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Finds or generates the certificate and builds the server configuration (HTTP/1.1).
pub fn server_config(config: &ApiConfig) -> Result<(Arc<ServerConfig>, CertificateSource), TlsError> {
    let source = match (&config.cert_path, &config.key_path) {
        (Some(cert), Some(key)) => {
            CertificateSource { cert_path: cert.clone(), key_path: key.clone(), generated: false }
        }
        (None, None) => generate_if_missing(config)?,
        _ => return Err(TlsError("--http-cert and --http-key must be given together".into())),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&source.cert_path)
        .and_then(|iter| iter.collect())
        .map_err(|e| TlsError(format!("cannot read certificates from {}: {e}", source.cert_path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!("{} holds no certificate", source.cert_path.display())));
    }
    let key = PrivateKeyDer::from_pem_file(&source.key_path)
        .map_err(|e| TlsError(format!("cannot read a private key from {}: {e}", source.key_path.display())))?;
    let mut server = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError(format!("certificate and key do not form a usable pair: {e}")))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(server), source))
}

fn generate_if_missing(config: &ApiConfig) -> Result<CertificateSource, TlsError> {
    let cert_path = config.data_root.join(GENERATED_CERT_FILE);
    let key_path = config.data_root.join(GENERATED_KEY_FILE);
    let source = CertificateSource { cert_path: cert_path.clone(), key_path: key_path.clone(), generated: true };
    if cert_path.exists() && key_path.exists() {
        return Ok(source);
    }
    // Clients verify the address they dial, so a specific bind address is a name too.
    let mut names = config.certificate_names.clone();
    let bind_ip = config.http_bind.ip();
    if !bind_ip.is_unspecified() && !names.contains(&bind_ip.to_string()) {
        names.push(bind_ip.to_string());
    }
    let generated = rcgen::generate_simple_self_signed(names)
        .map_err(|e| TlsError(format!("cannot generate a self-signed certificate: {e}")))?;
    fs::create_dir_all(&config.data_root)
        .map_err(|e| TlsError(format!("cannot create {}: {e}", config.data_root.display())))?;
    // Key first, 0600 from the moment it exists; the certificate last, so a crash in between
    // leaves no certificate without its key (the pair is regenerated next start).
    write_new(&key_path, generated.signing_key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&cert_path, generated.cert.pem().as_bytes(), 0o644)?;
    tracing::info!(cert = %cert_path.display(), "generated a self-signed API certificate");
    Ok(source)
}

fn write_new(path: &Path, content: &[u8], mode: u32) -> Result<(), TlsError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| TlsError(format!("cannot create {}: {e}", tmp.display())))?;
    file.write_all(content)
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&tmp, path))
        .map_err(|e| TlsError(format!("cannot write {}: {e}", path.display())))
}
