//! Where the CLI's requests go: the HTTPS API of a node (`--api`, with a bearer token), or,
//! when no `--api` is given, the admin socket of the node this command runs on (root only,
//! no token: the socket relays the request to the node's API in-process).

use std::path::{Path, PathBuf};
use std::time::Duration;

use sluice_api::admin_socket::{api_over_socket, ADMIN_SOCKET_FILE};
use sluice_api::tls::GENERATED_CERT_FILE;

use super::https::{HttpsClient, ServerUrl};
use crate::cli::Target;
use crate::config::DEFAULT_DATA_DIR;
use crate::exit::{Exit, Failure};

/// A route's answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

pub enum Endpoint {
    Https { client: HttpsClient, token: Option<String> },
    Socket { path: PathBuf, data_dir: PathBuf, timeout: Duration },
}

impl Endpoint {
    /// Resolves the target flags: `--api` (with `--token`/`--token-file`, `--ca-cert`), or the
    /// admin socket under `--data-dir`.
    pub fn from_target(target: &Target) -> Result<Endpoint, Failure> {
        let data_dir = target.data_dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let Some(api) = &target.api else {
            if target.token.is_some() || target.token_file.is_some() {
                return Err(Failure::new(
                    Exit::Usage,
                    "a token was given but no --api: tokens are for the HTTPS API; give --api https://NODE:8443 \
                     (on the node itself, root needs no token: leave out both)",
                ));
            }
            let timeout = target.timeout.0;
            return Ok(Endpoint::Socket { path: data_dir.join(ADMIN_SOCKET_FILE), data_dir, timeout });
        };
        let url = ServerUrl::parse(api).map_err(|e| Failure::new(Exit::Usage, format!("--api {api:?}: {e}")))?;
        let token = read_token(target)?;
        let mut trusted: Vec<PathBuf> = target.ca_cert.iter().cloned().collect();
        // On the node itself the generated certificate is right there; trusting it saves the
        // operator a flag and trusts nothing a local root could not already impersonate.
        let generated = data_dir.join(GENERATED_CERT_FILE);
        if target.ca_cert.is_none() && generated.is_file() {
            trusted.push(generated);
        }
        let client = HttpsClient::new(url, &trusted, target.timeout.0).map_err(|e| Failure::new(Exit::Usage, e))?;
        Ok(Endpoint::Https { client, token })
    }

    /// Sends one request. `path` starts with `/`. Transport failures become exit 4
    /// (HTTPS) or 3 (admin socket); any HTTP status is an [`Answer`].
    pub fn request(&self, method: &str, path: &str, body: Option<String>) -> Result<Answer, Failure> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Failure::new(Exit::Unreachable, format!("cannot start the client runtime: {e}")))?;
        match self {
            Endpoint::Https { client, token } => runtime
                .block_on(client.request(method, path, token.as_deref(), body))
                .map_err(|e| Failure::new(Exit::Unreachable, format!("{}: {e}", client.url()))),
            Endpoint::Socket { path: socket, data_dir, timeout } => {
                let relayed = runtime.block_on(async {
                    tokio::time::timeout(*timeout, api_over_socket(socket, method, path, body)).await
                });
                match relayed {
                    Ok(Ok(relayed)) => Ok(Answer { status: relayed.status, body: relayed.body }),
                    Ok(Err(e)) => Err(socket_failure(&e, data_dir)),
                    Err(_) => Err(socket_failure(&format!("no answer within {:?} (--timeout)", timeout), data_dir)),
                }
            }
        }
    }
}

impl Endpoint {
    /// Downloads a file route's body (at most `limit` bytes). Over the admin socket there is
    /// no download: the caller reads the file from the data directory instead.
    pub fn download(&self, path: &str, limit: usize) -> Result<Result<Vec<u8>, Answer>, Failure> {
        let Endpoint::Https { client, token } = self else {
            return Err(Failure::new(Exit::Usage, "downloads need --api (on the node, read the file directly)"));
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Failure::new(Exit::Unreachable, format!("cannot start the client runtime: {e}")))?;
        let (status, bytes) = runtime
            .block_on(client.bytes("GET", path, token.as_deref(), None, limit))
            .map_err(|e| Failure::new(Exit::Unreachable, format!("{}: {e}", client.url())))?;
        if (200..300).contains(&status) {
            Ok(Ok(bytes.to_vec()))
        } else {
            Ok(Err(Answer { status, body: String::from_utf8_lossy(&bytes).into_owned() }))
        }
    }

    /// The node's data directory when this endpoint is its admin socket.
    pub fn local_data_dir(&self) -> Option<&Path> {
        match self {
            Endpoint::Socket { data_dir, .. } => Some(data_dir),
            Endpoint::Https { .. } => None,
        }
    }
}

pub fn socket_failure(reason: &str, data_dir: &Path) -> Failure {
    Failure::new(
        Exit::AdminSocket,
        format!(
            "no --api was given, so the node's admin socket was used, and it failed: {reason}. \
             Is `sluice run` running here with --data-dir {} (default {DEFAULT_DATA_DIR}), and are you root? \
             From elsewhere, give --api https://NODE:8443 and a token",
            data_dir.display()
        ),
    )
}

fn read_token(target: &Target) -> Result<Option<String>, Failure> {
    if let Some(token) = &target.token {
        return Ok(Some(token.trim().to_owned()));
    }
    let Some(path) = &target.token_file else { return Ok(None) };
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::new(Exit::Usage, format!("--token-file {}: cannot read it: {e}", path.display())))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(Failure::new(Exit::Usage, format!("--token-file {}: the file is empty", path.display())));
    }
    Ok(Some(token.to_owned()))
}
