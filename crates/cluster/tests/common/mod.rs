//! What the in-process cluster tests share: three members on loopback, each a real
//! `Cluster` with its own data root and mutual-TLS listeners.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_cluster::identity::ClusterPaths;
use sluice_cluster::{Cluster, ClusterConfig, Role};
use sluice_store::state::Command;
use sluice_store::Store;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn config(dir: &Path, join: Option<String>) -> ClusterConfig {
    let port = free_port();
    let join_port = free_port();
    ClusterConfig {
        store_dir: dir.join("store"),
        paths: ClusterPaths::under(dir),
        bind: SocketAddr::from(([127, 0, 0, 1], port)),
        join_bind: SocketAddr::from(([127, 0, 0, 1], join_port)),
        advertise: format!("127.0.0.1:{port}"),
        join,
        expected_cluster_id: None,
    }
}

pub async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn put(version: u32) -> Command {
    let document = format!(
        r#"{{"default_action":"deny","source_groups":[{{"id":"g{version}","priority":1,"sources":{{"cidrs":["10.0.0.0/8"]}},"rules":[]}}]}}"#
    );
    Command::PutPolicy { document, comment: format!("v{version}") }
}

pub struct Member {
    pub cluster: Cluster,
    pub store: Arc<Store>,
    pub config: ClusterConfig,
}

pub async fn start(config: ClusterConfig) -> Member {
    let (cluster, store) = Cluster::start(&config).await.unwrap_or_else(|e| panic!("start: {e}"));
    Member { cluster, store, config }
}

/// A seed and two members joined through it.
pub async fn three(dirs: &[tempfile::TempDir]) -> Vec<Member> {
    let seed = start(config(dirs[0].path(), None)).await;
    assert_eq!(seed.cluster.role, Role::Seed);
    let join_addr = seed.config.join_bind.to_string();
    let token = std::fs::read_to_string(&seed.config.paths.bootstrap_token_path).unwrap();
    let mut members = vec![seed];
    for dir in &dirs[1..3] {
        std::fs::write(dir.path().join("bootstrap-token"), &token).unwrap();
        members.push(start(config(dir.path(), Some(join_addr.clone()))).await);
    }
    members
}

/// Takes a follower out of `members`; returns the leader's id with it.
pub fn take_follower(members: &mut Vec<Member>) -> (u64, Member) {
    let leader = members[0].store.status().leader.unwrap();
    let index = members.iter().position(|m| m.store.status().node_id != leader).unwrap();
    (leader, members.remove(index))
}

/// Stops a member's listeners and Raft and closes its store, as a stopping node does.
pub async fn stop(member: Member) -> ClusterConfig {
    member.cluster.shutdown().await;
    member.store.raft().shutdown().await.unwrap();
    let Member { cluster, store, config } = member;
    drop(cluster);
    // Tasks that held a handle (the probe loop, a forwarded write) let go as they end.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut store = store;
    let owned = loop {
        match Arc::try_unwrap(store) {
            Ok(owned) => break owned,
            Err(shared) => {
                assert!(Instant::now() < deadline, "the store is still held 10 s after its member stopped");
                store = shared;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    owned.shutdown().await.unwrap();
    config
}
