//! The cluster settings of `sluice run` (design §6): flags, file keys and their defaults.
//! Cluster mode is on when any of them is given; without them the node is a single node.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Deserialize;

use crate::exit::{Exit, Failure};

/// The default cluster listener: this host only, like the API.
pub const DEFAULT_CLUSTER_BIND: &str = "127.0.0.1:9600";

#[derive(Debug, Default, Clone, Args)]
pub struct ClusterArgs {
    /// Address of the cluster listener (Raft and node-agent RPCs, mutual TLS). Giving any
    /// cluster flag turns cluster mode on. Default: 127.0.0.1:9600.
    /// Example: --cluster-bind 192.0.2.10:9600
    #[arg(long, env = "SLUICE_CLUSTER_BIND", value_name = "ADDR:PORT")]
    pub cluster_bind: Option<SocketAddr>,
    /// Address of the join listener new nodes enrol through. Default: the cluster listener's
    /// address, port + 1. Example: --cluster-join-bind 192.0.2.10:9601
    #[arg(long, env = "SLUICE_CLUSTER_JOIN_BIND", value_name = "ADDR:PORT")]
    pub cluster_join_bind: Option<SocketAddr>,
    /// host:port at which the other members reach this node's cluster listener. Default: the
    /// --cluster-bind address (which then must not be 0.0.0.0). Example: --cluster-advertise 192.0.2.10:9600
    #[arg(long, env = "SLUICE_CLUSTER_ADVERTISE", value_name = "HOST:PORT")]
    pub cluster_advertise: Option<String>,
    /// The seed's join listener: enrol into its cluster on first start (with the bootstrap
    /// token copied from the seed). Ignored once this node has enrolled.
    /// Example: --join 192.0.2.10:9601
    #[arg(long, env = "SLUICE_JOIN", value_name = "HOST:PORT")]
    pub join: Option<String>,
    /// The cluster --join expects; a node of another cluster refuses the join.
    /// Example: --cluster-id 4f6c0e...
    #[arg(long, env = "SLUICE_CLUSTER_ID", value_name = "ID")]
    pub cluster_id: Option<String>,
    /// Where the cluster identity (CA, node certificate and keys) is kept.
    /// Default: <data-dir>/cluster
    #[arg(long, env = "SLUICE_CLUSTER_DATA_DIR", value_name = "DIR")]
    pub cluster_data_dir: Option<PathBuf>,
    /// This node's id file. Default: <data-dir>/node_id
    #[arg(long, env = "SLUICE_NODE_ID_PATH", value_name = "FILE")]
    pub node_id_path: Option<PathBuf>,
    /// The bootstrap token file: created (0600) by a seed, copied by an operator to joiners.
    /// Default: <data-dir>/bootstrap-token
    #[arg(long, env = "SLUICE_BOOTSTRAP_TOKEN_PATH", value_name = "FILE")]
    pub bootstrap_token_path: Option<PathBuf>,
}

/// The same settings as configuration-file keys.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct ClusterFile {
    pub cluster_bind: Option<SocketAddr>,
    pub cluster_join_bind: Option<SocketAddr>,
    pub cluster_advertise: Option<String>,
    pub join: Option<String>,
    pub cluster_id: Option<String>,
    pub cluster_data_dir: Option<PathBuf>,
    pub node_id_path: Option<PathBuf>,
    pub bootstrap_token_path: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    pub bind: SocketAddr,
    pub join_bind: SocketAddr,
    pub advertise: String,
    pub join: Option<String>,
    pub expected_cluster_id: Option<String>,
    pub cluster_data_dir: PathBuf,
    pub node_id_path: PathBuf,
    pub bootstrap_token_path: PathBuf,
}

fn setting(message: String) -> Failure {
    Failure::new(Exit::Setting, message)
}

/// Cluster settings when any is given (flag over file), defaults under them; `None` for a
/// single node.
pub fn resolve(args: ClusterArgs, file: ClusterFile, data_dir: &Path) -> Result<Option<ClusterSettings>, Failure> {
    let bind = args.cluster_bind.or(file.cluster_bind);
    let join_bind = args.cluster_join_bind.or(file.cluster_join_bind);
    let advertise = args.cluster_advertise.or(file.cluster_advertise);
    let join = args.join.or(file.join);
    let expected = args.cluster_id.or(file.cluster_id);
    let cluster_dir = args.cluster_data_dir.or(file.cluster_data_dir);
    let node_id_path = args.node_id_path.or(file.node_id_path);
    let token_path = args.bootstrap_token_path.or(file.bootstrap_token_path);
    let any = bind.is_some()
        || join_bind.is_some()
        || advertise.is_some()
        || join.is_some()
        || expected.is_some()
        || cluster_dir.is_some()
        || node_id_path.is_some()
        || token_path.is_some();
    if !any {
        return Ok(None);
    }
    let bind = bind.unwrap_or_else(|| DEFAULT_CLUSTER_BIND.parse().expect("a valid default"));
    let join_bind = match join_bind {
        Some(addr) => addr,
        None => {
            let port = bind.port().checked_add(1).ok_or_else(|| {
                setting(format!(
                    "--cluster-bind {bind}: no port after it for the join listener; give --cluster-join-bind"
                ))
            })?;
            SocketAddr::new(bind.ip(), port)
        }
    };
    if join_bind == bind {
        return Err(setting(format!(
            "--cluster-join-bind {join_bind} is the cluster listener's address; pick another port"
        )));
    }
    let advertise = match advertise {
        Some(a) => a,
        None if bind.ip().is_unspecified() => {
            return Err(setting(format!(
                "--cluster-bind {bind} listens on every address, so the others cannot be told one: give \
                 --cluster-advertise HOST:PORT"
            )))
        }
        None => bind.to_string(),
    };
    if !advertise.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok()) {
        return Err(setting(format!("--cluster-advertise {advertise:?}: not a host:port")));
    }
    if let Some(join) = &join {
        if !join.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok()) {
            return Err(setting(format!("--join {join:?}: not the seed's join listener host:port")));
        }
    }
    Ok(Some(ClusterSettings {
        bind,
        join_bind,
        advertise,
        join,
        expected_cluster_id: expected,
        cluster_data_dir: cluster_dir.unwrap_or_else(|| data_dir.join("cluster")),
        node_id_path: node_id_path.unwrap_or_else(|| data_dir.join("node_id")),
        bootstrap_token_path: token_path.unwrap_or_else(|| data_dir.join("bootstrap-token")),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_design_and_any_flag_turns_cluster_mode_on() {
        let dir = Path::new("/var/lib/sluice");
        assert_eq!(resolve(ClusterArgs::default(), ClusterFile::default(), dir).unwrap(), None);
        let args = ClusterArgs { join: Some("192.0.2.10:9601".into()), ..ClusterArgs::default() };
        let c = resolve(args, ClusterFile::default(), dir).unwrap().unwrap();
        assert_eq!(c.bind, "127.0.0.1:9600".parse().unwrap());
        assert_eq!(c.join_bind, "127.0.0.1:9601".parse().unwrap());
        assert_eq!(c.advertise, "127.0.0.1:9600");
        assert_eq!(c.cluster_data_dir, dir.join("cluster"));
        assert_eq!((c.node_id_path, c.bootstrap_token_path), (dir.join("node_id"), dir.join("bootstrap-token")));

        let file = ClusterFile { cluster_bind: Some("10.0.0.1:7000".parse().unwrap()), ..ClusterFile::default() };
        let args = ClusterArgs { cluster_bind: Some("10.0.0.2:7100".parse().unwrap()), ..ClusterArgs::default() };
        let c = resolve(args, file, dir).unwrap().unwrap();
        assert_eq!((c.bind.to_string(), c.join_bind.to_string()), ("10.0.0.2:7100".into(), "10.0.0.2:7101".into()));
    }

    #[test]
    fn unusable_combinations_say_what_to_give() {
        let dir = Path::new("/d");
        let wildcard = ClusterArgs { cluster_bind: Some("0.0.0.0:9600".parse().unwrap()), ..ClusterArgs::default() };
        let e = resolve(wildcard, ClusterFile::default(), dir).unwrap_err();
        assert!(e.message.contains("--cluster-advertise"), "{}", e.message);
        let same = ClusterArgs {
            cluster_bind: Some("10.0.0.1:9600".parse().unwrap()),
            cluster_join_bind: Some("10.0.0.1:9600".parse().unwrap()),
            ..ClusterArgs::default()
        };
        assert!(resolve(same, ClusterFile::default(), dir).unwrap_err().message.contains("pick another port"));
        let bad = ClusterArgs { join: Some("seed".into()), ..ClusterArgs::default() };
        assert!(resolve(bad, ClusterFile::default(), dir).unwrap_err().message.contains("--join"));
        let top = ClusterArgs { cluster_bind: Some("10.0.0.1:65535".parse().unwrap()), ..ClusterArgs::default() };
        assert!(resolve(top, ClusterFile::default(), dir).unwrap_err().message.contains("--cluster-join-bind"));
    }
}
