//! Local break-glass: a Unix socket in the data root (`admin.sock`, mode 0600) through which
//! root on the node mints a token without any existing credential (`sluice token mint`), and
//! through which the CLI run on the node reaches the whole API without a token (the request
//! is relayed in-process to the API's router; see [`crate::local`]).
//! Two locks: the file mode keeps other users from connecting, and the peer's credentials
//! (`SO_PEERCRED`, taken by the kernel at connect time) are checked on every connection, so a
//! socket whose mode was loosened still refuses them.
//!
//! Protocol: one JSON request line, one JSON answer line, then the connection closes.
//! `{"command":"mint_token","role":"admin","id":null,"label":"","expires_in_s":null}` →
//! `{"ok":true,"id":"...","role":"admin","token":"sluice_..."}` or
//! `{"ok":false,"error":{"code":"...","message":"..."}}`.
//! `{"command":"api","method":"PUT","path":"/api/v1/policy?comment=x","body":"{...}"}` →
//! `{"ok":true,"status":200,"content_type":"application/json","body":"{...}"}` (the route's
//! own status and body, errors included; `ok:false` only when the relay itself failed).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_store::state::{Command, Outcome, Role};
use sluice_store::Store;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use crate::config::MAX_BODY_BYTES;
use crate::local::LocalApi;
use crate::secret::{mint_command, MintRequest};

pub const ADMIN_SOCKET_FILE: &str = "admin.sock";

/// A request line is at most this long: an API body (at most 2 MiB) as a JSON string, where
/// escaping can double it, plus the envelope. Longer lines are refused `too_large`.
const MAX_REQUEST_BYTES: u64 = 2 * MAX_BODY_BYTES as u64 + 4096;
/// A connection's whole exchange must end within this; the relayed route has its own,
/// shorter, request timeout.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum AdminRequest {
    MintToken {
        /// `admin` or `readonly`.
        role: String,
        #[serde(default)]
        id: Option<String>,
        #[serde(default)]
        label: String,
        #[serde(default)]
        expires_in_s: Option<u64>,
        /// Register this SHA-256 of a secret the caller holds instead of generating one.
        #[serde(default)]
        secret_sha256: Option<String>,
    },
    /// One API request, run as root's admin caller.
    Api {
        method: String,
        /// The request target, e.g. `/api/v1/policy/versions`.
        path: String,
        #[serde(default)]
        body: Option<String>,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MintedViaSocket {
    pub id: String,
    pub role: String,
    /// The generated secret; absent when a `secret_sha256` was registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

#[derive(Serialize, Deserialize, Default)]
struct Answer {
    ok: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    minted: Option<MintedViaSocket>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    relayed: Option<RelayedAnswer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<AnswerError>,
}

/// An API route's answer, relayed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RelayedAnswer {
    pub status: u16,
    #[serde(default)]
    pub content_type: Option<String>,
    pub body: String,
}

#[derive(Serialize, Deserialize, Debug)]
struct AnswerError {
    code: String,
    message: String,
}

/// The listening socket. Dropping it stops accepting and removes the file.
pub struct AdminSocket {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl AdminSocket {
    /// Listens on `<data_root>/admin.sock` (replacing a stale file), accepting peers whose
    /// uid is `allowed_uid` (0 on a node: root only).
    /// Without `api`, only `mint_token` is served (`api` requests are refused
    /// `api_unavailable`).
    pub async fn start(
        data_root: &Path,
        store: Arc<Store>,
        api: Option<LocalApi>,
        allowed_uid: u32,
    ) -> std::io::Result<AdminSocket> {
        let path = data_root.join(ADMIN_SOCKET_FILE);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        let task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let (store, api) = (store.clone(), api.clone());
                        tokio::spawn(async move {
                            let serving = serve(stream, &store, api.as_ref(), allowed_uid);
                            let _ = tokio::time::timeout(CLIENT_TIMEOUT, serving).await;
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "admin socket accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        tracing::info!(path = %path.display(), "admin socket listening");
        Ok(AdminSocket { path, task })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn serve(stream: UnixStream, store: &Store, api: Option<&LocalApi>, allowed_uid: u32) {
    let peer_uid = stream.peer_cred().map(|c| c.uid());
    let (read, mut write) = stream.into_split();
    let answer = match peer_uid {
        Ok(uid) if uid == allowed_uid => {
            let mut line = String::new();
            let mut reader = BufReader::new(read.take(MAX_REQUEST_BYTES));
            match reader.read_line(&mut line).await {
                Ok(n) if n as u64 >= MAX_REQUEST_BYTES && !line.ends_with('\n') => refusal(
                    "too_large",
                    format!(
                        "a request line is at most {MAX_REQUEST_BYTES} bytes (API bodies at most {MAX_BODY_BYTES})"
                    ),
                ),
                Ok(_) => handle(&line, store, api, uid).await,
                Err(e) => refusal("invalid_request", format!("cannot read the request: {e}")),
            }
        }
        Ok(uid) => {
            tracing::warn!(uid, "admin socket refused a connection from a non-root user");
            refusal("forbidden", format!("the admin socket serves only uid {allowed_uid}; this peer is uid {uid}"))
        }
        Err(e) => refusal("forbidden", format!("cannot read the peer's credentials: {e}")),
    };
    let mut text = serde_json::to_string(&answer).unwrap_or_default();
    text.push('\n');
    let _ = write.write_all(text.as_bytes()).await;
    let _ = write.shutdown().await;
}

fn refusal(code: &str, message: impl Into<String>) -> Answer {
    Answer { error: Some(AnswerError { code: code.into(), message: message.into() }), ..Answer::default() }
}

async fn handle(line: &str, store: &Store, api: Option<&LocalApi>, uid: u32) -> Answer {
    let request: AdminRequest = match serde_json::from_str(line.trim()) {
        Ok(request) => request,
        Err(e) => return refusal("invalid_request", format!("not a request: {e}")),
    };
    match request {
        AdminRequest::MintToken { role, id, label, expires_in_s, secret_sha256 } => {
            mint(store, uid, role, id, label, expires_in_s, secret_sha256).await
        }
        AdminRequest::Api { method, path, body } => {
            let Some(api) = api else {
                return refusal("api_unavailable", "this admin socket does not relay API requests");
            };
            match api.call(&method, &path, body, uid).await {
                Ok(answer) => Answer {
                    ok: true,
                    relayed: Some(RelayedAnswer {
                        status: answer.status,
                        content_type: answer.content_type,
                        body: answer.body,
                    }),
                    ..Answer::default()
                },
                Err(e) => refusal("invalid_request", e),
            }
        }
    }
}

async fn mint(
    store: &Store,
    uid: u32,
    role: String,
    id: Option<String>,
    label: String,
    expires_in_s: Option<u64>,
    secret_sha256: Option<String>,
) -> Answer {
    let role = match role.as_str() {
        "admin" => Role::Admin,
        "readonly" => Role::Readonly,
        other => return refusal("invalid_field", format!("role: must be admin or readonly, not {other:?}")),
    };
    let secret_hash = match secret_sha256.as_deref().map(crate::secret::parse_secret_sha256) {
        Some(Ok(hash)) => Some(hash),
        Some(Err(e)) => return refusal("invalid_field", e),
        None => None,
    };
    let (secret, command) = match mint_command(MintRequest { role, id, label, expires_in_s, secret_hash }) {
        Ok(minted) => minted,
        Err(e) => return refusal("internal", e),
    };
    let Command::MintToken { id, .. } = &command else { unreachable!("mint_command builds MintToken") };
    let id = id.clone();
    match store.write(&format!("admin-socket:uid={uid}"), command).await {
        Ok(applied) => match applied.response {
            Ok(Outcome::TokenMinted { .. }) => {
                tracing::info!(token_id = %id, role = role.as_str(), "token minted over the admin socket");
                Answer {
                    ok: true,
                    minted: Some(MintedViaSocket { id, role: role.as_str().into(), token: secret }),
                    ..Answer::default()
                }
            }
            Ok(other) => refusal("internal", format!("unexpected outcome {other:?}")),
            Err(e) => refusal(e.code(), e.to_string()),
        },
        Err(e) => refusal("store_unavailable", e.to_string()),
    }
}

/// The client side of `mint_token` (what `sluice token mint` does on the node).
pub async fn request_over_socket(socket: &Path, request: &AdminRequest) -> Result<MintedViaSocket, String> {
    match exchange(socket, request).await? {
        Answer { ok: true, minted: Some(minted), .. } => Ok(minted),
        Answer { error: Some(error), .. } => Err(format!("{}: {}", error.code, error.message)),
        _ => Err("the node gave an answer without a token".into()),
    }
}

/// The client side of `api`: the route's status and body.
pub async fn api_over_socket(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<String>,
) -> Result<RelayedAnswer, String> {
    let request = AdminRequest::Api { method: method.into(), path: path.into(), body };
    match exchange(socket, &request).await? {
        Answer { ok: true, relayed: Some(relayed), .. } => Ok(relayed),
        Answer { error: Some(error), .. } => Err(format!("{}: {}", error.code, error.message)),
        _ => Err("the node gave an answer without a status".into()),
    }
}

async fn exchange(socket: &Path, request: &AdminRequest) -> Result<Answer, String> {
    let stream =
        UnixStream::connect(socket).await.map_err(|e| format!("cannot connect to {}: {e}", socket.display()))?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_string(request).map_err(|e| e.to_string())?;
    line.push('\n');
    // A refused peer is answered (and the socket closed) without its request being read, so
    // a failed send is reported only if no answer explains it.
    let sent = write.write_all(line.as_bytes()).await;
    let mut answer = String::new();
    let read = BufReader::new(read).read_line(&mut answer).await;
    if answer.trim().is_empty() {
        sent.map_err(|e| format!("cannot send the request: {e}"))?;
        read.map_err(|e| format!("cannot read the answer: {e}"))?;
    }
    serde_json::from_str(answer.trim()).map_err(|e| format!("malformed answer {answer:?}: {e}"))
}
