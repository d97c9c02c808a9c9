//! `kill -9` durability: a child process writes policy versions as fast as it can and reports
//! each acknowledged write; it is killed at a random moment. After reopening, every
//! acknowledged version is present, each acknowledged hash equals what a replay of the log
//! computes at that index, and the reopened node's hash equals the replay's.
//!
//! Runs: `SLUICE_STORE_CRASH_RUNS` (default 3).

use std::collections::hash_map::RandomState;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use sluice_store::state::{Command, Outcome, StateHash};
use sluice_store::storage::replay;
use sluice_store::{Store, StoreConfig};

const CHILD_DIR_ENV: &str = "SLUICE_STORE_CRASH_CHILD_DIR";
const CHILD_SNAPSHOT_ENV: &str = "SLUICE_STORE_CRASH_CHILD_SNAPSHOT_EVERY";

fn document(version: u64) -> String {
    format!("{{\"written_as_version\":{version}}}")
}

fn config(dir: &Path, snapshot_every: u64) -> StoreConfig {
    StoreConfig { snapshot_every, ..StoreConfig::single_node(dir) }
}

/// The child: writes until killed, printing `ACK <index> <version> <hash>` after each
/// acknowledged write. Does nothing when run as an ordinary (ignored) test.
#[test]
#[ignore = "the child process of kill_9_loses_no_acknowledged_write"]
fn crash_child_writer() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else { return };
    let snapshot_every = std::env::var(CHILD_SNAPSHOT_ENV).unwrap().parse().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let store = Store::open_single_node(config(Path::new(&dir), snapshot_every)).await.unwrap();
        let limit = Command::UpdateSettings { policy_history_limit: Some(10_000), audit_log_limit: None };
        store.write("crash-test", limit).await.unwrap();
        let mut stdout = std::io::stdout().lock();
        for expected_version in 1.. {
            let command = Command::PutPolicy { document: document(expected_version), comment: String::new() };
            let applied = store.write("crash-test", command).await.unwrap();
            let Ok(Outcome::PolicyStored { version, .. }) = applied.response else { panic!("{applied:?}") };
            writeln!(stdout, "ACK {} {version} {}", applied.index, applied.state_hash).unwrap();
            stdout.flush().unwrap();
        }
    });
}

struct Ack {
    index: u64,
    version: u64,
    state_hash: StateHash,
}

fn parse_ack(line: &str) -> Option<Ack> {
    let mut fields = line.strip_prefix("ACK ")?.split(' ');
    let index = fields.next()?.parse().ok()?;
    let version = fields.next()?.parse().ok()?;
    let state_hash = StateHash::from_hex(fields.next()?)?;
    Some(Ack { index, version, state_hash })
}

fn random_below(bound: u64) -> u64 {
    RandomState::new().build_hasher().finish() % bound
}

/// Starts the child, kills it with SIGKILL between 100 and 1500 ms after its first
/// acknowledged write, and returns every write it acknowledged.
fn write_until_killed(dir: &Path, snapshot_every: u64) -> Vec<Ack> {
    let mut child = Process::new(std::env::current_exe().unwrap())
        .args(["crash_child_writer", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_SNAPSHOT_ENV, snapshot_every.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the child starts");
    let stdout = child.stdout.take().unwrap();
    let (first_ack, first_ack_seen) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut acks = Vec::new();
        // Lines already in the pipe when the child dies are read too: they were acknowledged.
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(ack) = parse_ack(&line) {
                if acks.is_empty() {
                    let _ = first_ack.send(());
                }
                acks.push(ack);
            }
        }
        acks
    });
    if first_ack_seen.recv_timeout(Duration::from_secs(60)).is_err() {
        let _ = child.kill();
        panic!("the child acknowledged no write within 60 s");
    }
    std::thread::sleep(Duration::from_millis(100 + random_below(1400)));
    child.kill().expect("SIGKILL is delivered");
    child.wait().unwrap();
    reader.join().unwrap()
}

#[test]
fn kill_9_loses_no_acknowledged_write() {
    let runs: u32 = std::env::var("SLUICE_STORE_CRASH_RUNS").ok().and_then(|n| n.parse().ok()).unwrap_or(3);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    for run in 0..runs {
        let dir = tempfile::tempdir().unwrap();
        // Every other run snapshots often, so kills also land during snapshots and purges.
        let snapshot_every = if run % 2 == 0 { 1_000_000 } else { 40 };
        let acks = write_until_killed(dir.path(), snapshot_every);
        assert!(!acks.is_empty());

        // First what the killed process left on disk: every acknowledged entry is in the log
        // (or under the snapshot) with the hash that was acknowledged.
        let on_disk = replay(dir.path(), None).unwrap();
        let disk_hashes: BTreeMap<u64, StateHash> = on_disk.points.iter().map(|p| (p.index, p.state_hash)).collect();
        let last_on_disk = on_disk.points.last().map_or(on_disk.snapshot_index, |p| p.index);
        assert!(acks.last().unwrap().index <= last_on_disk, "run {run}: an acknowledged entry is missing from the log");
        let mut compared = 0;
        for ack in acks.iter().filter(|ack| ack.index >= on_disk.snapshot_index) {
            assert_eq!(disk_hashes.get(&ack.index), Some(&ack.state_hash), "run {run}: index {}", ack.index);
            compared += 1;
        }

        // Then the node reopened: every acknowledged version is there, and its hash is what a
        // replay computes at its applied index.
        let status = runtime.block_on(async {
            let store =
                Store::open_single_node(config(dir.path(), snapshot_every)).await.expect("reopens after kill -9");
            store.read(|state| {
                for ack in &acks {
                    let policy = state.policy(ack.version).unwrap_or_else(|| panic!("version {} is lost", ack.version));
                    assert_eq!(&*policy.document, document(ack.version));
                }
            });
            let status = store.status();
            store.shutdown().await.unwrap();
            status
        });
        let replayed = replay(dir.path(), Some(status.applied_index)).unwrap();
        assert_eq!(replayed.state.applied_index(), status.applied_index);
        assert_eq!(replayed.state.state_hash(), status.state_hash, "run {run}: the reopened hash equals a replay");
        eprintln!(
            "run {run}: {} acknowledged writes (last index {}); on disk: snapshot at {}, log to {last_on_disk}, \
             {compared} acknowledged hashes equal the replay; reopened at index {}",
            acks.len(),
            acks.last().unwrap().index,
            on_disk.snapshot_index,
            status.applied_index,
        );
    }
}
