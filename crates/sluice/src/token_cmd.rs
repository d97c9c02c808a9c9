//! `sluice token mint`: the break-glass path to a first API token. It talks to the running
//! node's admin socket (`<data-dir>/admin.sock`, root only), so it needs no credential; the
//! secret is printed once on stdout and the id and role on stderr, so a script can capture
//! the secret alone.

use std::path::PathBuf;

use sluice_api::admin_socket::{request_over_socket, AdminRequest, ADMIN_SOCKET_FILE};

use crate::cli::MintArgs;
use crate::config::DEFAULT_DATA_DIR;
use crate::exit::{Exit, Failure};

/// Mints a token; returns its secret.
pub fn mint(args: &MintArgs) -> Result<String, Failure> {
    let data_dir = args.data_dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let socket = data_dir.join(ADMIN_SOCKET_FILE);
    let request = AdminRequest::MintToken {
        role: args.role.clone(),
        id: args.id.clone(),
        label: args.label.clone(),
        expires_in_s: args.expires_in_s,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(Exit::AdminSocket, format!("cannot start the client runtime: {e}")))?;
    let minted = runtime.block_on(request_over_socket(&socket, &request)).map_err(|e| {
        Failure::new(
            Exit::AdminSocket,
            format!(
                "token not minted: {e}; is `sluice run` running with --data-dir {}, and are you root?",
                data_dir.display()
            ),
        )
    })?;
    eprintln!("minted token {} (role {}); the secret below is shown only now", minted.id, minted.role);
    Ok(minted.token)
}
