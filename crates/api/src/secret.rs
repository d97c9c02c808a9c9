//! Token secrets: random, long, shown once. Shared by the API's mint route and the admin
//! socket.

use ring::rand::{SecureRandom, SystemRandom};
use sluice_store::state::{hash_token_secret, Command, Role};

use crate::state::now_ms;

/// Every secret starts with this, so leaked ones are easy to recognise (and grep for).
pub const SECRET_PREFIX: &str = "sluice_";

pub struct MintRequest {
    pub role: Role,
    pub id: Option<String>,
    pub label: String,
    pub expires_in_s: Option<u64>,
}

fn random_hex(bytes: usize) -> Result<String, String> {
    let mut buf = vec![0u8; bytes];
    SystemRandom::new().fill(&mut buf).map_err(|_| "the system random source failed".to_owned())?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// A fresh secret (256 random bits) and the store command that records only its hash.
pub fn mint_command(request: MintRequest) -> Result<(String, Command), String> {
    let secret = format!("{SECRET_PREFIX}{}", random_hex(32)?);
    let id = match request.id {
        Some(id) => id,
        None => format!("tok-{}", random_hex(6)?),
    };
    let expires_at_ms = request.expires_in_s.map(|s| now_ms().saturating_add(s.saturating_mul(1000)));
    let command = Command::MintToken {
        id,
        role: request.role,
        secret_hash: hash_token_secret(&secret),
        label: request.label,
        expires_at_ms,
    };
    Ok((secret, command))
}
