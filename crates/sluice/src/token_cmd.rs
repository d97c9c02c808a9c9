//! `sluice token mint` without `--api`: the break-glass path to a first API token. It talks
//! to the running node's admin socket (`<data-dir>/admin.sock`, root only), so it needs no
//! credential.

use std::path::Path;

use sluice_api::admin_socket::{request_over_socket, AdminRequest, MintedViaSocket, ADMIN_SOCKET_FILE};

use crate::cli::MintArgs;

/// Mints a token over the admin socket under `data_dir`.
pub fn mint_over_socket(args: &MintArgs, data_dir: &Path) -> Result<MintedViaSocket, String> {
    let socket = data_dir.join(ADMIN_SOCKET_FILE);
    let request = AdminRequest::MintToken {
        role: args.role.clone(),
        id: args.id.clone(),
        label: args.label.clone(),
        expires_in_s: args.expires_in_s,
        secret_sha256: args.secret_sha256.clone(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the client runtime: {e}"))?;
    runtime.block_on(request_over_socket(&socket, &request))
}
