//! A member's identity on disk: its node id, the cluster id, the cluster CA (certificate and
//! key: every member can sign joins), its own certificate and key, and the bootstrap token.
//! Written once, atomically (temporary file, fsync, rename, fsync of the directory), keys and
//! token 0600; read on every start, so a restarted member needs neither the seed nor the token.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::pki::CaMaterial;

const CLUSTER_ID_FILE: &str = "cluster-id";
const CA_CERT_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca-key.pem";
const NODE_CERT_FILE: &str = "node.pem";
const NODE_KEY_FILE: &str = "node-key.pem";
/// Shortest bootstrap token accepted from a file an operator wrote.
pub const MIN_TOKEN_LEN: usize = 16;

/// Where the identity lives (design §6 defaults under the data root).
#[derive(Clone, Debug)]
pub struct ClusterPaths {
    pub cluster_dir: PathBuf,
    pub node_id_path: PathBuf,
    pub bootstrap_token_path: PathBuf,
}

impl ClusterPaths {
    pub fn under(data_root: &Path) -> ClusterPaths {
        ClusterPaths {
            cluster_dir: data_root.join("cluster"),
            node_id_path: data_root.join("node_id"),
            bootstrap_token_path: data_root.join("bootstrap-token"),
        }
    }
}

#[derive(Clone)]
pub struct Identity {
    pub node_id: u64,
    pub cluster_id: String,
    pub ca: CaMaterial,
    pub node_cert_pem: String,
    pub node_key_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("node_id", &self.node_id).field("cluster_id", &self.cluster_id).finish()
    }
}

fn read(path: &Path) -> Result<Option<String>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Writes `text` to `path` atomically with `mode`.
pub fn write_atomically(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    let dir = path.parent().ok_or_else(|| format!("{} has no parent directory", path.display()))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    file.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(|e| format!("{}: {e}", tmp.display()))?;
    file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot move {} into place: {e}", path.display()))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| format!("cannot sync {}: {e}", dir.display()))
}

impl Identity {
    /// The stored identity; `None` when this node never enrolled; an error when only part of
    /// it is there (a crash between writes is not possible, so that is someone's doing).
    pub fn load(paths: &ClusterPaths) -> Result<Option<Identity>, String> {
        let dir = &paths.cluster_dir;
        let files = [CLUSTER_ID_FILE, CA_CERT_FILE, CA_KEY_FILE, NODE_CERT_FILE, NODE_KEY_FILE];
        let mut texts = Vec::new();
        for name in files {
            texts.push(read(&dir.join(name))?);
        }
        let node_id = read(&paths.node_id_path)?;
        if texts.iter().all(Option::is_none) {
            return Ok(None);
        }
        let missing: Vec<&str> = files.iter().zip(&texts).filter(|(_, t)| t.is_none()).map(|(n, _)| *n).collect();
        if !missing.is_empty() || node_id.is_none() {
            return Err(format!(
                "the cluster identity in {} is incomplete (missing: {}{}); restore it from a backup or move {} \
                 aside to enrol again",
                dir.display(),
                missing.join(", "),
                if node_id.is_none() { format!(" and {}", paths.node_id_path.display()) } else { String::new() },
                dir.display()
            ));
        }
        let mut texts = texts.into_iter().map(Option::unwrap_or_default);
        let cluster_id = texts.next().unwrap_or_default().trim().to_owned();
        let ca = CaMaterial { cert_pem: texts.next().unwrap_or_default(), key_pem: texts.next().unwrap_or_default() };
        let node_cert_pem = texts.next().unwrap_or_default();
        let node_key_pem = texts.next().unwrap_or_default();
        let node_id = parse_node_id(&node_id.unwrap_or_default(), &paths.node_id_path)?;
        Ok(Some(Identity { node_id, cluster_id, ca, node_cert_pem, node_key_pem }))
    }

    /// Stores the identity; the node certificate is written last, so its presence means the
    /// rest is there.
    pub fn save(&self, paths: &ClusterPaths) -> Result<(), String> {
        let dir = &paths.cluster_dir;
        write_atomically(&paths.node_id_path, &format!("{}\n", self.node_id), 0o644)?;
        write_atomically(&dir.join(CLUSTER_ID_FILE), &format!("{}\n", self.cluster_id), 0o644)?;
        write_atomically(&dir.join(CA_CERT_FILE), &self.ca.cert_pem, 0o644)?;
        write_atomically(&dir.join(CA_KEY_FILE), &self.ca.key_pem, 0o600)?;
        write_atomically(&dir.join(NODE_KEY_FILE), &self.node_key_pem, 0o600)?;
        write_atomically(&dir.join(NODE_CERT_FILE), &self.node_cert_pem, 0o644)
    }
}

fn parse_node_id(text: &str, path: &Path) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(0) | Err(_) => Err(format!("{}: not a node id (a positive integer): {:?}", path.display(), text.trim())),
        Ok(id) => Ok(id),
    }
}

/// This node's id: the stored one, else `fallback` (a single-node store becoming a seed keeps
/// its id), else a new random one; stored either way.
pub fn node_id(path: &Path, fallback: Option<u64>) -> Result<u64, String> {
    if let Some(text) = read(path)? {
        return parse_node_id(&text, path);
    }
    let id = match fallback {
        Some(id) => id,
        None => {
            let mut bytes = [0u8; 8];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
                .map_err(|_| "the system random source failed".to_owned())?;
            // Kept below 2^53 so JSON clients that read numbers as doubles see it exactly.
            (u64::from_be_bytes(bytes) >> 11).max(2)
        }
    };
    write_atomically(path, &format!("{id}\n"), 0o644)?;
    Ok(id)
}

/// The bootstrap token an operator gave (a copy of the seed's file).
pub fn read_token(path: &Path) -> Result<String, String> {
    let text = read(path)?.ok_or_else(|| {
        format!(
            "no bootstrap token at {}: copy the seed's token file there (or give --bootstrap-token-path)",
            path.display()
        )
    })?;
    let token = text.trim().to_owned();
    if token.len() < MIN_TOKEN_LEN {
        return Err(format!("{}: a bootstrap token has at least {MIN_TOKEN_LEN} characters", path.display()));
    }
    Ok(token)
}

/// The seed's token: the stored one, or a new 256-bit one written 0600.
pub fn seed_token(path: &Path) -> Result<String, String> {
    if read(path)?.is_some() {
        return read_token(path);
    }
    let token = random_hex(32)?;
    write_atomically(path, &format!("{token}\n"), 0o600)?;
    Ok(token)
}

pub fn random_hex(bytes: usize) -> Result<String, String> {
    let mut buf = vec![0u8; bytes];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut buf)
        .map_err(|_| "the system random source failed".to_owned())?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

pub fn random_bytes<const N: usize>() -> Result<[u8; N], String> {
    let mut buf = [0u8; N];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut buf)
        .map_err(|_| "the system random source failed".to_owned())?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki;

    #[test]
    fn an_identity_round_trips_and_a_partial_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let paths = ClusterPaths::under(dir.path());
        assert!(Identity::load(&paths).unwrap().is_none());
        let ca = pki::new_ca("c1").unwrap();
        let key = pki::new_node_key(5).unwrap();
        let cert = pki::sign_node_csr(&ca, &key.csr_pem, 5).unwrap();
        let identity =
            Identity { node_id: 5, cluster_id: "c1".into(), ca, node_cert_pem: cert, node_key_pem: key.key_pem };
        identity.save(&paths).unwrap();
        let back = Identity::load(&paths).unwrap().unwrap();
        assert_eq!((back.node_id, back.cluster_id.as_str()), (5, "c1"));
        assert_eq!(back.node_key_pem, identity.node_key_pem);
        for secret in [CA_KEY_FILE, NODE_KEY_FILE] {
            let mode = std::fs::metadata(paths.cluster_dir.join(secret)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{secret}");
        }
        std::fs::remove_file(paths.cluster_dir.join(CA_KEY_FILE)).unwrap();
        let e = Identity::load(&paths).unwrap_err();
        assert!(e.contains("incomplete") && e.contains(CA_KEY_FILE), "{e}");
    }

    #[test]
    fn node_ids_and_tokens_are_made_once_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let id_path = dir.path().join("node_id");
        let id = node_id(&id_path, None).unwrap();
        assert!((2..(1 << 53)).contains(&id));
        assert_eq!(node_id(&id_path, Some(1)).unwrap(), id, "stored wins");
        std::fs::write(&id_path, "zero\n").unwrap();
        assert!(node_id(&id_path, None).unwrap_err().contains("not a node id"));

        let token_path = dir.path().join("bootstrap-token");
        assert!(read_token(&token_path).unwrap_err().contains("copy the seed's token file"));
        let token = seed_token(&token_path).unwrap();
        assert_eq!(token.len(), 64);
        assert_eq!(std::fs::metadata(&token_path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(seed_token(&token_path).unwrap(), token, "made once");
        assert_eq!(read_token(&token_path).unwrap(), token);
        std::fs::write(&token_path, "short").unwrap();
        assert!(read_token(&token_path).is_err());
    }
}
