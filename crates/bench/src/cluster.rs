//! `sluice-bench cluster`: three members in one process on loopback, over the real cluster
//! transport (mutual TLS, tonic) with their stores fsyncing on a disk under `target/bench`.
//!
//! - `cluster_put_p50_ms`: sequential policy writes through the leader, each answered once a
//!   quorum has it on disk and the leader applied it.
//! - `failover_ms_median`, `failover_ms_max`: the leader's Raft and listeners are stopped at
//!   once (the in-process stand-in for kill -9: nothing is said to the peers, connections are
//!   refused from then on), and the clock runs until a write through a survivor is
//!   acknowledged; the stopped member is started again from its data root before the next run.
//! - `join_ms`: from the start of a `--join` (empty data root, token copied) until the new
//!   member is a voter and has applied the entry that made it one.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_cluster::identity::ClusterPaths;
use sluice_cluster::{Cluster, ClusterConfig};
use sluice_store::state::Command;
use sluice_store::Store;

pub struct Report {
    pub figures: Vec<(&'static str, f64)>,
    pub notes: Vec<String>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").map(|l| l.local_addr().map(|a| a.port()).unwrap_or(0)).unwrap_or(0)
}

fn config(dir: &Path, join: Option<String>) -> ClusterConfig {
    let (port, join_port) = (free_port(), free_port());
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

fn put(i: usize) -> Command {
    let document = format!(
        r#"{{"default_action":"deny","source_groups":[{{"id":"g","priority":1,"sources":{{"cidrs":["10.0.0.0/8"]}},
        "rules":[{{"id":"r","action":"allow","match":{{"proto":"tcp","dst_ports":[{}],"dst_cidrs":["203.0.113.0/24"]}}}}]}}]}}"#,
        1 + i % 60_000
    );
    Command::PutPolicy { document, comment: String::new() }
}

struct Member {
    cluster: Arc<Cluster>,
    store: Arc<Store>,
    config: ClusterConfig,
}

async fn start(config: ClusterConfig) -> Result<Member, String> {
    let (cluster, store) = Cluster::start(&config).await?;
    Ok(Member { cluster: Arc::new(cluster), store, config })
}

async fn stop(member: Member) {
    member.cluster.shutdown().await;
    let _ = member.store.raft().shutdown().await;
    // Let Raft's tasks release the database before the data root is opened again.
    let mut store = member.store;
    drop(member.cluster);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Arc::try_unwrap(store) {
            Ok(owned) => {
                let _ = owned.shutdown().await;
                return;
            }
            Err(shared) if Instant::now() < deadline => {
                store = shared;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => {
                eprintln!("# a stopped member's store is still referenced; its data root cannot be reopened");
                return;
            }
        }
    }
}

fn leader_of(members: &[Member]) -> Option<usize> {
    let leader = members.iter().find_map(|m| m.store.status().leader)?;
    members.iter().position(|m| m.store.status().node_id == leader)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

pub fn run(quick: bool, parent: &Path) -> Result<Report, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(run_async(quick, parent))
}

async fn run_async(quick: bool, parent: &Path) -> Result<Report, String> {
    let (puts, failovers) = if quick { (50, 3) } else { (300, 10) };
    let mut notes = Vec::new();
    std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    let dirs: Vec<tempfile::TempDir> = (0..4)
        .map(|_| tempfile::Builder::new().prefix("cluster-data-").tempdir_in(parent))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let paths: Vec<PathBuf> = dirs.iter().map(|d| d.path().to_owned()).collect();
    notes
        .push(format!("data roots under {} (three members + one joiner), loopback, LAN Raft timing", parent.display()));

    let mut members = vec![start(config(&paths[0], None)).await?];
    let join_addr = members[0].config.join_bind.to_string();
    let token =
        std::fs::read_to_string(ClusterPaths::under(&paths[0]).bootstrap_token_path).map_err(|e| e.to_string())?;
    for path in &paths[1..3] {
        std::fs::write(path.join("bootstrap-token"), &token).map_err(|e| e.to_string())?;
        members.push(start(config(path, Some(join_addr.clone()))).await?);
    }

    // Sequential writes through the leader.
    let leader = leader_of(&members).ok_or("no leader")?;
    let mut times = Vec::with_capacity(puts);
    for i in 0..puts + 10 {
        let t0 = Instant::now();
        let applied = members[leader].store.write("bench", put(i)).await.map_err(|e| e.to_string())?;
        applied.response.map_err(|e| format!("{e:?}"))?;
        if i >= 10 {
            times.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
    }
    times.sort_by(f64::total_cmp);
    let put_p50 = times[times.len() / 2];
    notes.push(format!("{puts} PUTs after 10 warm-up: p99 {:.2} ms", times[times.len() * 99 / 100]));

    // Failover: stop the leader at once, time the first acknowledged write through a survivor.
    let mut failover_ms = Vec::new();
    let mut writes = puts + 10;
    for run in 0..failovers {
        let leader = leader_of(&members).ok_or("no leader")?;
        let survivor = (leader + 1) % members.len();
        let stopped = members.remove(leader);
        let survivor = if survivor > leader { survivor - 1 } else { survivor };
        let config = stopped.config.clone();
        let t0 = Instant::now();
        stopped.cluster.shutdown().await;
        let _ = stopped.store.raft().shutdown().await;
        loop {
            writes += 1;
            match members[survivor].store.write("bench", put(writes)).await {
                Ok(applied) if applied.response.is_ok() => break,
                _ if t0.elapsed() > Duration::from_secs(30) => return Err(format!("run {run}: no write within 30 s")),
                _ => {}
            }
        }
        failover_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        stop(stopped).await;
        members.insert(leader.min(members.len()), start(config).await?);
        // Back to three healthy members before the next run.
        let deadline = Instant::now() + Duration::from_secs(30);
        while members.iter().any(|m| m.store.status().leader.is_none())
            || members.iter().map(|m| m.store.status().applied_index).min()
                != members.iter().map(|m| m.store.status().applied_index).max()
        {
            if Instant::now() > deadline {
                return Err(format!("run {run}: the restarted member did not catch up"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let failover_max = failover_ms.iter().copied().fold(0.0, f64::max);
    notes.push(format!(
        "failover runs (ms): {}",
        failover_ms.iter().map(|v| format!("{v:.0}")).collect::<Vec<_>>().join(", ")
    ));
    let failover_median = median(failover_ms);

    // A fourth node joins.
    std::fs::write(paths[3].join("bootstrap-token"), &token).map_err(|e| e.to_string())?;
    let seed_join = members.iter().map(|m| m.config.join_bind.to_string()).next().unwrap_or(join_addr);
    let t0 = Instant::now();
    let joined = start(config(&paths[3], Some(seed_join))).await?;
    let join_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let voters = joined.store.status().voters.len();
    if voters != 4 {
        return Err(format!("the joiner sees {voters} voters, not 4"));
    }
    members.push(joined);
    let hashes: Vec<_> =
        members.iter().map(|m| (m.store.status().applied_index, m.store.status().state_hash)).collect();
    notes.push(format!(
        "final (applied index, state hash) per member agree: {}",
        hashes.windows(2).all(|w| w[0] == w[1])
    ));
    for member in members {
        stop(member).await;
    }
    Ok(Report {
        figures: vec![
            ("cluster_put_p50_ms", put_p50),
            ("failover_ms_median", failover_median),
            ("failover_ms_max", failover_max),
            ("join_ms", join_ms),
        ],
        notes,
    })
}
