//! How the API listens. The `sluice` binary fills this from `--http-bind`, `--metrics-bind`,
//! `--http-cert`, `--http-key` (and their `SLUICE_*` / TOML forms).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// The HTTPS listener (default `127.0.0.1:8443`).
    pub http_bind: SocketAddr,
    /// An optional second listener serving only `GET /metrics`, over plain HTTP, for scrapers
    /// on a management network.
    pub metrics_bind: Option<SocketAddr>,
    /// Certificate chain and private key (PEM). Both or neither: when neither is given, a
    /// self-signed certificate is generated once into `data_root` and reused.
    pub cert_path: Option<PathBuf>,
    pub key_path: Option<PathBuf>,
    /// The node's data root: generated certificate, admin socket.
    pub data_root: PathBuf,
    /// Names (DNS or IP) the generated certificate is valid for.
    pub certificate_names: Vec<String>,
    /// A request that takes longer is answered 503 `request_timeout`.
    pub request_timeout: Duration,
    /// How long a policy write waits for this node's dataplane to run the new version.
    pub apply_timeout: Duration,
    /// How long a client may take to send its request headers.
    pub header_read_timeout: Duration,
}

impl ApiConfig {
    pub fn new(data_root: impl Into<PathBuf>) -> ApiConfig {
        ApiConfig {
            http_bind: SocketAddr::from(([127, 0, 0, 1], 8443)),
            metrics_bind: None,
            cert_path: None,
            key_path: None,
            data_root: data_root.into(),
            certificate_names: vec!["localhost".into(), "127.0.0.1".into()],
            request_timeout: Duration::from_secs(30),
            apply_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
        }
    }
}
