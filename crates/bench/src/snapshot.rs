//! `sluice-bench snapshot`: snapshot create, verify and restore of a state with 1 000 policy
//! versions and 10 000 tokens, on a disk under `target/bench` (every write fsynced).
//!
//! - `snapshot_create_ms`: `sluice_lifecycle::snapshot::create` with the node's secrets
//!   sealed under a passphrase (argon2id at the default cost), plus the repository's atomic
//!   write (fsync, rename, fsync of the directory): what `sluice snapshot create
//!   --include-secrets` costs on the node.
//! - `snapshot_verify_ms`: `verify` of the file in memory: section and file checksums, the
//!   manifest, decoding the state and checking its index and hash against the manifest.
//! - `snapshot_restore_ms`: the whole offline `restore` into an empty directory: read,
//!   verify, open the secrets, write the store (fsync), replay it to check the hash, mint the
//!   new cluster's CA and node certificate, write identity and secrets, rename into place.
//! - `snapshot_bytes`: the file's size.
//!
//! Each time is the median of several runs.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use sluice_lifecycle::repository::{Kind, Repository};
use sluice_lifecycle::restore::{restore, RestoreOptions};
use sluice_lifecycle::snapshot::{create, verify, Writer};
use sluice_snapshot::Secrets;
use sluice_store::state::{hash_token_secret, Command, Role};
use sluice_store::{Store, StoreConfig};

pub struct Report {
    pub figures: Vec<(&'static str, f64, &'static str)>,
    pub notes: Vec<String>,
}

const POLICY_VERSIONS: usize = 1_000;
const TOKENS: usize = 10_000;
const PASSPHRASE: &[u8] = b"benchmark passphrase";

/// A policy of 10 groups x 5 rules (about 4 KB), one port varying with `n`.
fn policy(n: usize) -> String {
    let groups: Vec<String> = (0..10)
        .map(|g| {
            let rules: Vec<String> = (0..5)
                .map(|r| {
                    format!(
                        r#"{{"id":"r{r}","action":"allow","match":{{"proto":"tcp","dst_ports":[{}],"dst_cidrs":["203.0.{g}.0/24"]}}}}"#,
                        1 + (n * 7 + r) % 60_000
                    )
                })
                .collect();
            format!(
                r#"{{"id":"g{g}","priority":{g},"sources":{{"cidrs":["10.{g}.0.0/16"]}},"rules":[{}]}}"#,
                rules.join(",")
            )
        })
        .collect();
    format!(r#"{{"default_action":"deny","source_groups":[{}]}}"#, groups.join(","))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Writes `commands` through the store, many in flight at once (Raft batches them).
async fn write_all(store: &Arc<Store>, commands: Vec<Command>) -> Result<(), String> {
    for chunk in commands.chunks(200) {
        let writes: Vec<_> = chunk
            .iter()
            .cloned()
            .map(|command| {
                let store = store.clone();
                tokio::spawn(async move { store.write("bench", command).await })
            })
            .collect();
        for write in writes {
            let applied = write.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
            applied.response.map_err(|e| format!("{e:?}"))?;
        }
    }
    Ok(())
}

pub fn run(quick: bool, parent: &Path) -> Result<Report, String> {
    let runs = if quick { 3 } else { 7 };
    let mut notes = Vec::new();
    std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    let work = tempfile::Builder::new().prefix("snapshot-").tempdir_in(parent).map_err(|e| e.to_string())?;
    notes.push(format!("data under {} ({})", work.path().display(), crate::store::check_real_disk(work.path())?));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let node = work.path().join("node");
    let store = runtime.block_on(async {
        let store = Arc::new(
            Store::open_single_node(StoreConfig::single_node(node.join("store"))).await.map_err(|e| e.to_string())?,
        );
        store.ensure_cluster_identity("bench").await.map_err(|e| e.to_string())?;
        let limit =
            Command::UpdateSettings { policy_history_limit: Some(POLICY_VERSIONS as u32), audit_log_limit: None };
        store.write("bench", limit).await.map_err(|e| e.to_string())?;
        let started = Instant::now();
        let puts = (0..POLICY_VERSIONS).map(|n| Command::PutPolicy { document: policy(n), comment: format!("v{n}") });
        write_all(&store, puts.collect()).await?;
        let mints = (0..TOKENS).map(|n| Command::MintToken {
            id: format!("token-{n:05}"),
            role: if n % 2 == 0 { Role::Admin } else { Role::Readonly },
            secret_hash: hash_token_secret(&format!("secret-{n}")),
            label: format!("bench token {n}"),
            expires_at_ms: None,
        });
        write_all(&store, mints.collect()).await?;
        Ok::<_, String>((store, started.elapsed()))
    })?;
    let (store, built_in) = store;
    let (versions, tokens, index) =
        store.read(|s| (s.policy_versions().count(), s.tokens().count(), s.applied_index()));
    if versions != POLICY_VERSIONS || tokens != TOKENS {
        return Err(format!(
            "the state has {versions} policy versions and {tokens} tokens, not {POLICY_VERSIONS} and {TOKENS}"
        ));
    }
    notes.push(format!(
        "state: {versions} policy versions (~{} bytes each), {tokens} tokens, applied index {index}; built in {:.1} s",
        policy(0).len(),
        built_in.as_secs_f64()
    ));

    let secrets = Secrets {
        node_id: 1,
        files: [
            ("bootstrap-token".to_owned(), "0123456789abcdef0123456789abcdef\n".to_owned()),
            ("api-key.pem".to_owned(), "-----BEGIN PRIVATE KEY-----\nbench\n-----END PRIVATE KEY-----\n".to_owned()),
        ]
        .into(),
    };
    let writer = Writer { release_version: "bench".into(), node_id: 1 };
    let repository = Repository::new(work.path().join("snapshots"));
    let (mut create_ms, mut verify_ms, mut restore_ms) = (Vec::new(), Vec::new(), Vec::new());
    let mut last = None;
    for run in 0..runs {
        let t0 = Instant::now();
        let sluice_snapshot::Written { manifest, bytes, .. } =
            create(&store, &writer, 1_733_000_000_000 + run as u64, Some((&secrets, PASSPHRASE)))
                .map_err(|e| e.to_string())?;
        let entry = repository.save(Kind::Manual, &manifest, &bytes)?;
        create_ms.push(t0.elapsed().as_secs_f64() * 1000.0);

        let t0 = Instant::now();
        let verified = verify(&bytes).map_err(|e| e.to_string())?;
        verify_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        if verified.state.tokens().count() != TOKENS || verified.manifest.last_applied.index != index {
            return Err("the verified snapshot does not hold the state it was taken of".into());
        }

        let target = work.path().join(format!("restored-{run}"));
        let options = RestoreOptions {
            snapshot: &entry.path,
            data_dir: &target,
            passphrase: Some(PASSPHRASE),
            force: false,
            now_ms: 1,
        };
        let t0 = Instant::now();
        let report = restore(&options, &mut |_| {}).map_err(|e| e.to_string())?;
        restore_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        if report.state_hash != manifest.state_hash
            || report.tokens != TOKENS
            || report.policy_versions != POLICY_VERSIONS
        {
            return Err(format!("the restore does not match the snapshot: {report:?}"));
        }
        std::fs::remove_dir_all(&target).map_err(|e| e.to_string())?;
        last = Some(bytes.len());
    }
    let bytes = last.unwrap_or(0) as f64;
    notes.push(format!(
        "{runs} runs (ms): create {:?}, verify {:?}, restore {:?}",
        create_ms.iter().map(|v| v.round()).collect::<Vec<_>>(),
        verify_ms.iter().map(|v| v.round()).collect::<Vec<_>>(),
        restore_ms.iter().map(|v| v.round()).collect::<Vec<_>>()
    ));
    runtime.block_on(async move {
        if let Ok(store) = Arc::try_unwrap(store) {
            let _ = store.shutdown().await;
        }
    });
    Ok(Report {
        figures: vec![
            ("snapshot_create_ms", median(create_ms), "ms"),
            ("snapshot_verify_ms", median(verify_ms), "ms"),
            ("snapshot_restore_ms", median(restore_ms), "ms"),
            ("snapshot_bytes", bytes, "bytes"),
        ],
        notes,
    })
}
