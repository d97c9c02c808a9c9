//! The data root layout shared by `sluice run`, snapshots and restore.

use std::path::{Path, PathBuf};

use sluice_cluster::identity::ClusterPaths;

/// The store's directory inside the data root.
pub const STORE_DIR: &str = "store";
/// Where the node keeps its snapshots.
pub const SNAPSHOTS_DIR: &str = "snapshots";
/// Secret files of the data root that a snapshot with secrets carries (by name, relative to
/// the data root), besides the bootstrap token: the API's generated certificate and key, so
/// clients that pinned the node's certificate keep working after a restore.
pub const SECRET_FILES: [&str; 2] = ["api-cert.pem", "api-key.pem"];
/// The bootstrap token's name inside a snapshot's secrets.
pub const TOKEN_SECRET: &str = "bootstrap-token";

/// The paths of one data root, as `sluice run` uses them with default cluster paths.
#[derive(Clone, Debug)]
pub struct DataRoot {
    pub root: PathBuf,
    pub cluster: ClusterPaths,
}

impl DataRoot {
    pub fn new(root: &Path) -> DataRoot {
        DataRoot { root: root.to_path_buf(), cluster: ClusterPaths::under(root) }
    }

    pub fn with_cluster_paths(root: &Path, cluster: ClusterPaths) -> DataRoot {
        DataRoot { root: root.to_path_buf(), cluster }
    }

    pub fn store_dir(&self) -> PathBuf {
        self.root.join(STORE_DIR)
    }

    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join(SNAPSHOTS_DIR)
    }
}
