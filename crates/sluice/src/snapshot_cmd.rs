//! `sluice snapshot create|list|verify|inspect` and `sluice restore`.
//!
//! `create` and `list` ask a running node (API or admin socket); `verify`, `inspect` and
//! `restore` work on files, offline, and never need the node.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use sluice_lifecycle::repository::{read_file, MAX_SNAPSHOT_FILE_BYTES};
use sluice_lifecycle::restore::{restore as restore_root, RestoreError, RestoreOptions};
use sluice_lifecycle::snapshot::{open_secrets, verify, Verified, VerifyError};

use clap::{Args, Subcommand};

use crate::cli::{Target, CLIENT_HELP};
use crate::client::Endpoint;
use crate::exit::{Exit, Failure};

// `sluice snapshot ...` and `sluice restore` (subcommands of `cli::Command`).
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Take a snapshot on the node now and keep it in its <data-dir>/snapshots; with --out
    /// also copy it here. Example: sluice snapshot create --include-secrets --passphrase-file
    /// /root/dr-passphrase --out /backup/node1.snap
    #[command(after_long_help = CLIENT_HELP)]
    Create {
        /// Also seal the node's identity and secrets (bootstrap token, API certificate and
        /// key) into the snapshot, encrypted under the passphrase of --passphrase-file.
        #[arg(long, requires = "passphrase_file")]
        include_secrets: bool,
        /// File holding the passphrase (one trailing newline is ignored).
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
        /// Also write the snapshot file here (verified after the copy).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        #[command(flatten)]
        target: Target,
    },
    /// The snapshots kept on the node, newest first. Example: sluice snapshot list
    #[command(after_long_help = CLIENT_HELP)]
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Check a snapshot file completely without touching any state: format, checksums,
    /// schema, and that its state has the state hash its manifest names; with
    /// --passphrase-file also that the secrets open. Exit 0 valid, 7 refused.
    /// Example: sluice snapshot verify /backup/node1.snap
    Verify {
        file: PathBuf,
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a snapshot file's manifest and a summary of its state (verified first).
    /// Example: sluice snapshot inspect /backup/node1.snap --json
    Inspect {
        file: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The snapshot file to restore (see sluice snapshot create --out).
    #[arg(long, value_name = "FILE")]
    pub snapshot: PathBuf,
    /// The data root to write (the node must not be running on it). Must be empty or
    /// missing, unless --force. Example: --data-dir /var/lib/sluice
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Restore the node's identity and secrets from the snapshot, opened with this
    /// passphrase; without it the node gets a new identity and bootstrap token.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Move a non-empty data root aside (renamed to <DIR>.before-restore-<ms>, never
    /// deleted) instead of refusing.
    #[arg(long)]
    pub force: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

type Output = Result<String, Failure>;

/// Reads a passphrase file: its bytes without one trailing newline; empty is refused.
pub fn read_passphrase(path: &Path) -> Result<Vec<u8>, Failure> {
    let mut bytes = std::fs::read(path)
        .map_err(|e| Failure::new(Exit::Usage, format!("--passphrase-file {}: cannot read it: {e}", path.display())))?;
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    if bytes.is_empty() {
        return Err(Failure::new(
            Exit::Usage,
            format!("--passphrase-file {}: the passphrase is empty", path.display()),
        ));
    }
    Ok(bytes)
}

fn refused(e: &VerifyError) -> Failure {
    Failure::new(Exit::SnapshotRefused, format!("snapshot refused ({}): {e}", e.code()))
}

fn load(file: &Path) -> Result<(Vec<u8>, Verified), Failure> {
    let bytes = read_file(file).map_err(|e| Failure::new(Exit::SnapshotRefused, e))?;
    let verified = verify(&bytes).map_err(|e| refused(&e))?;
    Ok((bytes, verified))
}

fn summary(verified: &Verified) -> Value {
    let m = &verified.manifest;
    let state = &verified.state;
    json!({
        "format_version": m.format_version,
        "cluster_id": m.cluster_id,
        "node_id": m.node_id,
        "schema_version": m.schema_version,
        "release_version": m.release_version,
        "applied_index": m.last_applied.index,
        "term": m.last_applied.term,
        "state_hash": m.state_hash,
        "created_at_ms": m.created_at_ms,
        "sections": m.sections.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "state_bytes": m.state_bytes,
        "has_secrets": m.secrets.is_some(),
        "file_sha256": verified.file_sha256,
        "membership": {
            "voters": m.membership.voters,
            "learners": m.membership.learners,
            "nodes": m.membership.nodes.iter().map(|n| json!({"id": n.id, "addr": n.addr})).collect::<Vec<_>>(),
        },
        "state": {
            "schema_version": state.schema_version(),
            "policy_versions": state.policy_versions().count(),
            "active_policy_version": state.active_policy().map(|p| p.version),
            "tokens": state.tokens().count(),
            "audit_entries": state.audit_log().count(),
            "lineage": state.cluster().map(|c| c.lineage.iter().map(|o| o.cluster_id.clone()).collect::<Vec<_>>()),
        },
    })
}

fn human(value: &Value) -> String {
    let s = &value["state"];
    format!(
        "snapshot of cluster {} taken on node {} by release {} at {}\n\
         applied index {} (term {}), state hash {}\n\
         schema {} (format {}), sections: {}{}\n\
         state: {} policy versions (active {}), {} tokens, {} audit entries\n\
         voters {}, file sha256 {}",
        value["cluster_id"].as_str().unwrap_or("-"),
        value["node_id"],
        value["release_version"].as_str().unwrap_or("-"),
        crate::client::timestamp(&value["created_at_ms"]),
        value["applied_index"],
        value["term"],
        value["state_hash"].as_str().unwrap_or("-"),
        value["schema_version"],
        value["format_version"],
        value["sections"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
            .unwrap_or_default(),
        if value["has_secrets"] == true { " (secrets sealed under a passphrase)" } else { "" },
        s["policy_versions"],
        s["active_policy_version"],
        s["tokens"],
        s["audit_entries"],
        value["membership"]["voters"],
        value["file_sha256"].as_str().unwrap_or("-"),
    )
}

pub fn snapshot(command: &SnapshotCommand) -> Output {
    match command {
        SnapshotCommand::Verify { file, passphrase_file, json } => {
            let (bytes, verified) = load(file)?;
            let mut value = summary(&verified);
            if let Some(path) = passphrase_file {
                let passphrase = read_passphrase(path)?;
                let secrets = open_secrets(&bytes, &passphrase).map_err(|e| refused(&e))?;
                value["secrets_opened"] = json!(secrets.files.keys().collect::<Vec<_>>());
            }
            Ok(if *json {
                serde_json::to_string_pretty(&value).unwrap_or_default()
            } else {
                let secrets = match value.get("secrets_opened") {
                    Some(files) => format!("; secrets open with the passphrase ({files})"),
                    None => String::new(),
                };
                format!(
                    "{}: valid: cluster {}, applied index {}, state hash {}{secrets}",
                    file.display(),
                    verified.manifest.cluster_id,
                    verified.manifest.last_applied.index,
                    verified.manifest.state_hash
                )
            })
        }
        SnapshotCommand::Inspect { file, json } => {
            let (_, verified) = load(file)?;
            let value = summary(&verified);
            Ok(if *json { serde_json::to_string_pretty(&value).unwrap_or_default() } else { human(&value) })
        }
        SnapshotCommand::List { target } => {
            let endpoint = Endpoint::from_target(target)?;
            let body = crate::client::call(&endpoint, "GET", "/api/v1/snapshots", None, None)?;
            Ok(if target.json { serde_json::to_string_pretty(&body).unwrap_or_default() } else { list(&body) })
        }
        SnapshotCommand::Create { include_secrets, passphrase_file, out, target } => {
            let endpoint = Endpoint::from_target(target)?;
            if passphrase_file.is_some() && !include_secrets {
                return Err(Failure::new(
                    Exit::Usage,
                    "--passphrase-file without --include-secrets: nothing would be encrypted with it",
                ));
            }
            let passphrase = match passphrase_file {
                Some(path) => Some(
                    String::from_utf8(read_passphrase(path)?)
                        .map_err(|_| Failure::new(Exit::Usage, "the passphrase must be UTF-8 text"))?,
                ),
                None => None,
            };
            let request = json!({ "include_secrets": include_secrets, "passphrase": passphrase }).to_string();
            let body = crate::client::call(&endpoint, "POST", "/api/v1/snapshots", Some(request), None)?;
            let id = body["id"].as_str().unwrap_or_default().to_owned();
            let mut text = format!(
                "snapshot {id} taken: applied index {}, state hash {}, {} bytes{}",
                body["applied_index"],
                body["state_hash"].as_str().unwrap_or("-"),
                body["bytes"],
                if *include_secrets { ", secrets sealed" } else { "" }
            );
            if let Some(out) = out {
                copy_out(&endpoint, &id, out)?;
                text.push_str(&format!("\ncopied to {} and verified", out.display()));
            }
            Ok(if target.json { serde_json::to_string_pretty(&body).unwrap_or_default() } else { text })
        }
    }
}

/// Brings snapshot `id` to `out`: downloaded over the API, or read from the node's data
/// directory when the admin socket is used; verified before it is put in place.
fn copy_out(endpoint: &Endpoint, id: &str, out: &Path) -> Result<(), Failure> {
    let bytes = match endpoint.local_data_dir() {
        Some(data_dir) => {
            let path = data_dir.join(sluice_lifecycle::layout::SNAPSHOTS_DIR).join(format!("{id}.snap"));
            read_file(&path).map_err(|e| Failure::new(Exit::AdminSocket, e))?
        }
        None => match endpoint.download(&format!("/api/v1/snapshots/{id}"), MAX_SNAPSHOT_FILE_BYTES as usize)? {
            Ok(bytes) => bytes,
            Err(answer) => return Err(crate::client::refusal(&answer, None)),
        },
    };
    verify(&bytes).map_err(|e| refused(&e))?;
    let tmp = PathBuf::from(format!("{}.tmp", out.display()));
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, out)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Failure::new(Exit::DataDir, format!("cannot write {}: {e}", out.display()))
    })
}

fn list(body: &Value) -> String {
    let Some(snapshots) = body["snapshots"].as_array().filter(|s| !s.is_empty()) else {
        return "no snapshots on this node".into();
    };
    let mut out = format!("{:<36} {:>10} {:>12}  {:<16} {}\n", "ID", "INDEX", "BYTES", "STATE HASH", "CREATED");
    for s in snapshots {
        let hash = s["state_hash"].as_str().map(|h| &h[..h.len().min(16)]).unwrap_or("-");
        let mut line = format!(
            "{:<36} {:>10} {:>12}  {:<16} {}",
            s["id"].as_str().unwrap_or("-"),
            s["applied_index"],
            s["bytes"],
            hash,
            crate::client::timestamp(&s["created_at_ms"])
        );
        if s["has_secrets"] == true {
            line.push_str("  secrets");
        }
        if s["valid"] == false {
            line.push_str(&format!("  INVALID: {}", s["error"].as_str().unwrap_or("?")));
        }
        out.push_str(&line);
        out.push('\n');
    }
    out.trim_end().to_owned()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

pub fn restore(args: &RestoreArgs) -> Output {
    let passphrase = args.passphrase_file.as_deref().map(read_passphrase).transpose()?;
    let options = RestoreOptions {
        snapshot: &args.snapshot,
        data_dir: &args.data_dir,
        passphrase: passphrase.as_deref(),
        force: args.force,
        now_ms: now_ms(),
    };
    let started = std::time::Instant::now();
    let mut progress = |step: &str| eprintln!("[{:>6.2}s] {step}", started.elapsed().as_secs_f64());
    let report = restore_root(&options, &mut progress).map_err(|e| match &e {
        RestoreError::Snapshot(inner) => refused(inner),
        RestoreError::Read(_) => Failure::new(Exit::SnapshotRefused, e.to_string()),
        RestoreError::NotEmpty(_) => Failure::new(Exit::DataRootNotEmpty, e.to_string()),
        RestoreError::Write { .. } => Failure::new(Exit::DataDir, e.to_string()),
    })?;
    if args.json {
        return Ok(serde_json::to_string_pretty(&json!({
            "data_dir": report.data_dir,
            "node_id": report.node_id,
            "cluster_id": report.cluster_id,
            "from_cluster_id": report.from_cluster_id,
            "applied_index": report.index,
            "state_hash": report.state_hash,
            "identity_restored": report.identity_restored,
            "moved_aside": report.moved_aside,
            "policy_versions": report.policy_versions,
            "tokens": report.tokens,
        }))
        .unwrap_or_default());
    }
    let mut out = format!(
        "restored {} at applied index {} with state hash {} (equal to the snapshot's manifest)\n\
         node {} is the seed of the NEW cluster {} (restored from cluster {}); {} policy versions, {} tokens\n",
        report.data_dir.display(),
        report.index,
        report.state_hash,
        report.node_id,
        report.cluster_id,
        report.from_cluster_id,
        report.policy_versions,
        report.tokens
    );
    out.push_str(if report.identity_restored {
        "identity restored: the node keeps its id, bootstrap token and API certificate\n"
    } else {
        "no passphrase given: the node has a new identity and a new bootstrap token\n"
    });
    if let Some(old) = &report.moved_aside {
        out.push_str(&format!("the previous data root was moved to {}\n", old.display()));
    }
    out.push_str(&format!(
        "next: start the node with --data-dir {} and its cluster flags (no --join); then start the other nodes \
         with empty data roots, a copy of {}/bootstrap-token, and --join <this node's join address>",
        report.data_dir.display(),
        report.data_dir.display()
    ));
    Ok(out)
}
