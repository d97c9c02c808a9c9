//! Token secrets: random, long, shown once. Shared by the API's mint route and the admin
//! socket.

use ring::rand::{SecureRandom, SystemRandom};
use sluice_store::state::{hash_token_secret, Command, Digest, Role, TokenHash};

use crate::state::now_ms;

/// Every secret starts with this, so leaked ones are easy to recognise (and grep for).
pub const SECRET_PREFIX: &str = "sluice_";

pub struct MintRequest {
    pub role: Role,
    pub id: Option<String>,
    pub label: String,
    pub expires_in_s: Option<u64>,
    /// Register a secret the caller already holds, by its SHA-256, instead of generating one
    /// (a first-boot seed's admin token): the node never sees that secret.
    pub secret_hash: Option<TokenHash>,
}

/// Reads a token secret's SHA-256 given as 64 hex digits (`printf %s "$TOKEN" | sha256sum`).
pub fn parse_secret_sha256(text: &str) -> Result<TokenHash, String> {
    let text = text.trim();
    Digest::from_hex(text).ok_or_else(|| {
        format!("secret_sha256: must be the SHA-256 of the secret as 64 hex digits, not {} characters", text.len())
    })
}

fn random_hex(bytes: usize) -> Result<String, String> {
    let mut buf = vec![0u8; bytes];
    SystemRandom::new().fill(&mut buf).map_err(|_| "the system random source failed".to_owned())?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// A fresh secret (256 random bits) and the store command that records only its hash; with
/// `secret_hash`, no secret (the caller holds it) and the command that records that hash.
pub fn mint_command(request: MintRequest) -> Result<(Option<String>, Command), String> {
    let (secret, secret_hash) = match request.secret_hash {
        Some(hash) => (None, hash),
        None => {
            let secret = format!("{SECRET_PREFIX}{}", random_hex(32)?);
            let hash = hash_token_secret(&secret);
            (Some(secret), hash)
        }
    };
    let id = match request.id {
        Some(id) => id,
        None => format!("tok-{}", random_hex(6)?),
    };
    let expires_at_ms = request.expires_in_s.map(|s| now_ms().saturating_add(s.saturating_mul(1000)));
    let command = Command::MintToken { id, role: request.role, secret_hash, label: request.label, expires_at_ms };
    Ok((secret, command))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registered_hash_is_stored_as_given_and_no_secret_is_made() {
        let hash = parse_secret_sha256(&format!(" {} \n", hash_token_secret("sluice_seed").to_hex())).unwrap();
        let request = MintRequest {
            role: Role::Admin,
            id: Some("seed-admin".into()),
            label: String::new(),
            expires_in_s: None,
            secret_hash: Some(hash),
        };
        let (secret, command) = mint_command(request).unwrap();
        assert_eq!(secret, None);
        let Command::MintToken { secret_hash, .. } = command else { panic!("a mint") };
        assert_eq!(secret_hash, hash_token_secret("sluice_seed"));
        let (secret, command) = mint_command(MintRequest {
            role: Role::Readonly,
            id: None,
            label: String::new(),
            expires_in_s: None,
            secret_hash: None,
        })
        .unwrap();
        let secret = secret.unwrap();
        assert!(secret.starts_with(SECRET_PREFIX));
        let Command::MintToken { secret_hash, .. } = command else { panic!("a mint") };
        assert_eq!(secret_hash, hash_token_secret(&secret));
    }

    #[test]
    fn a_malformed_hash_is_refused() {
        for bad in ["", "abc", &"g".repeat(64), &"a".repeat(63), &"a".repeat(66)] {
            let err = parse_secret_sha256(bad).unwrap_err();
            assert!(err.contains("64 hex digits"), "{bad}: {err}");
        }
    }
}
