//! The secrets section: the node's identity and secret files, sealed with AES-256-GCM under a
//! key derived from the operator's passphrase with argon2id.

use std::collections::BTreeMap;
use std::fmt;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use serde::{Deserialize, Serialize};

use crate::error::SnapshotError;
use crate::manifest::{from_hex, is_hex, to_hex, SecretsInfo};

/// Binds the sealed bytes to this format and to the manifest they were written with.
const AAD_PREFIX: &[u8] = b"sluice-snapshot-secrets-v1";
const KDF: &str = "argon2id";

/// What the secrets section holds once opened.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secrets {
    /// The node the secrets belong to (a restore keeps its id).
    pub node_id: u64,
    /// File name (relative to the data root) -> contents.
    pub files: BTreeMap<String, String>,
}

/// Shows which secrets there are, never their contents.
impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets").field("node_id", &self.node_id).field("files", &self.files.keys()).finish()
    }
}

/// Secrets to seal into a snapshot being written.
pub struct SecretsInput<'a> {
    pub secrets: &'a Secrets,
    pub passphrase: &'a [u8],
}

/// argon2id's cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    pub m_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

impl KdfParams {
    /// 19 MiB, two passes, one lane: about 50 ms here, and memory-hard against guessing.
    pub const DEFAULT: KdfParams = KdfParams { m_kib: 19 * 1024, t_cost: 2, p_cost: 1 };
    /// The cheapest a reader accepts (tests use it to stay fast).
    pub const MIN: KdfParams = KdfParams { m_kib: 8, t_cost: 1, p_cost: 1 };
    /// The dearest a reader accepts: a file must not make a reader spend gigabytes.
    pub const MAX: KdfParams = KdfParams { m_kib: 256 * 1024, t_cost: 10, p_cost: 4 };

    pub(crate) fn check(self) -> Result<KdfParams, SnapshotError> {
        let (min, max) = (KdfParams::MIN, KdfParams::MAX);
        let within = |value: u32, low: u32, high: u32, name: &str| {
            if (low..=high).contains(&value) {
                Ok(())
            } else {
                Err(SnapshotError::BadKdfParams(format!("{name} {value} is outside {low}..={high}")))
            }
        };
        within(self.m_kib, min.m_kib, max.m_kib, "m_kib")?;
        within(self.t_cost, min.t_cost, max.t_cost, "t_cost")?;
        within(self.p_cost, min.p_cost, max.p_cost, "p_cost")?;
        if self.m_kib < 8 * self.p_cost {
            return Err(SnapshotError::BadKdfParams(format!("m_kib {} is below 8 per lane", self.m_kib)));
        }
        Ok(self)
    }
}

pub(crate) fn random<const N: usize>() -> Result<[u8; N], SnapshotError> {
    let mut out = [0u8; N];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut out)
        .map_err(|_| SnapshotError::Crypto("the system random source failed".into()))?;
    Ok(out)
}

fn derive(passphrase: &[u8], salt: &[u8; 16], params: KdfParams) -> Result<LessSafeKey, SnapshotError> {
    if passphrase.is_empty() {
        return Err(SnapshotError::EmptyPassphrase);
    }
    let argon_params = argon2::Params::new(params.m_kib, params.t_cost, params.p_cost, Some(32))
        .map_err(|e| SnapshotError::BadKdfParams(e.to_string()))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, argon_params);
    let mut key = [0u8; 32];
    argon.hash_password_into(passphrase, salt, &mut key).map_err(|e| SnapshotError::Crypto(e.to_string()))?;
    let unbound = UnboundKey::new(&AES_256_GCM, &key).map_err(|_| SnapshotError::Crypto("bad key length".into()))?;
    Ok(LessSafeKey::new(unbound))
}

fn aad(manifest_bytes: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_PREFIX.len() + manifest_bytes.len());
    aad.extend_from_slice(AAD_PREFIX);
    aad.extend_from_slice(manifest_bytes);
    aad
}

/// Chooses the salt and nonce the manifest will carry.
pub(crate) fn plan(params: KdfParams) -> Result<SecretsInfo, SnapshotError> {
    let params = params.check()?;
    Ok(SecretsInfo {
        kdf: KDF.into(),
        m_kib: params.m_kib,
        t_cost: params.t_cost,
        p_cost: params.p_cost,
        salt_hex: to_hex(&random::<16>()?),
        nonce_hex: to_hex(&random::<12>()?),
    })
}

/// The parameters of a manifest's secrets info, refused before any work when out of bounds.
pub(crate) fn check_info(info: &SecretsInfo) -> Result<(KdfParams, [u8; 16], [u8; 12]), SnapshotError> {
    if info.kdf != KDF {
        return Err(SnapshotError::BadKdfParams(format!("unknown KDF {:?} (only {KDF})", info.kdf)));
    }
    let params = KdfParams { m_kib: info.m_kib, t_cost: info.t_cost, p_cost: info.p_cost }.check()?;
    let salt = from_hex::<16>(&info.salt_hex)
        .ok_or_else(|| SnapshotError::BadKdfParams("salt_hex is not 16 bytes of lowercase hex".into()))?;
    let nonce = from_hex::<12>(&info.nonce_hex)
        .ok_or_else(|| SnapshotError::BadKdfParams("nonce_hex is not 12 bytes of lowercase hex".into()))?;
    Ok((params, salt, nonce))
}

pub(crate) fn info_shape_ok(info: &SecretsInfo) -> bool {
    is_hex(&info.salt_hex, 16) && is_hex(&info.nonce_hex, 12)
}

pub(crate) fn seal(
    input: &SecretsInput<'_>,
    info: &SecretsInfo,
    manifest_bytes: &[u8],
) -> Result<Vec<u8>, SnapshotError> {
    let (params, salt, nonce) = check_info(info)?;
    let key = derive(input.passphrase, &salt, params)?;
    let mut sealed = serde_json::to_vec(input.secrets).map_err(|e| SnapshotError::Crypto(e.to_string()))?;
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad(manifest_bytes)), &mut sealed)
        .map_err(|_| SnapshotError::Crypto("sealing failed".into()))?;
    Ok(sealed)
}

pub(crate) fn open(
    sealed: &[u8],
    info: &SecretsInfo,
    manifest_bytes: &[u8],
    passphrase: &[u8],
) -> Result<Secrets, SnapshotError> {
    let (params, salt, nonce) = check_info(info)?;
    let key = derive(passphrase, &salt, params)?;
    let mut buffer = sealed.to_vec();
    let plain = key
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad(manifest_bytes)), &mut buffer)
        .map_err(|_| SnapshotError::WrongPassphrase)?;
    serde_json::from_slice(plain).map_err(|e| SnapshotError::Crypto(format!("the opened secrets do not decode: {e}")))
}
