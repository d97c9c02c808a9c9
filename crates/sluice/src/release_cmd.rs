//! `sluice version`, `sluice release list|stage|history`, `sluice upgrade
//! apply|status|abort|finalize`, `sluice rollback`, and the hidden `sluice boot-guard`.
//!
//! `release` works on the data root's slots directly (on the node, as root); `upgrade` and
//! `rollback` ask the running node (admin socket or `--api`) and watch the rollout until it
//! ends, printing each node's progress.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::{json, Value};
use sluice_lifecycle::releases::{probe, ReleaseError, Releases};
use sluice_store::state::SCHEMA_VERSION;

use crate::boot::now_ms;
use crate::build_info;
use crate::cli::{Target, CLIENT_HELP};
use crate::client::Endpoint;
use crate::dns_settings::WrittenDuration;
use crate::exit::{Exit, Failure};

type Output = Result<String, Failure>;

const DEFAULT_DATA_DIR: &str = "/var/lib/sluice";

#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Print version and schema range as JSON (what staging a release reads).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SlotsArgs {
    /// The node's data root. Default: /var/lib/sluice.
    #[arg(long, env = "SLUICE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// The releases staged in the data root, newest first, with current and previous marked.
    /// Example: sluice release list
    List(SlotsArgs),
    /// Check a release binary (checksum, that it runs and reports its version, that it reads
    /// the cluster's active schema) and keep it in releases/<version>/. Exit 0 staged, 5
    /// refused. Example: sluice release stage ./sluice-2.0.0 --sha256 9f86d0...
    Stage {
        file: PathBuf,
        /// Refuse the file unless its SHA-256 is this (hex).
        #[arg(long, value_name = "HEX")]
        sha256: Option<String>,
        /// Also make it the current release: only for a data root that has none yet (the
        /// first install, as an appliance image build does); refused otherwise, since moving
        /// a running node to another release is `sluice upgrade apply`'s.
        #[arg(long)]
        make_current: bool,
        #[command(flatten)]
        slots: SlotsArgs,
    },
    /// What ran when: staged, trying, good, returned (and why), like a rollout history.
    /// Example: sluice release history
    History(SlotsArgs),
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Return at once instead of following the rollout to its end.
    #[arg(long)]
    pub no_wait: bool,
    /// Give up following after this long (the rollout itself goes on). Example: --wait 30m
    #[arg(long, value_name = "DURATION", default_value = "30m")]
    pub wait: WrittenDuration,
}

#[derive(Debug, Subcommand)]
pub enum UpgradeCommand {
    /// Stage FILE on this node, take a pre-upgrade snapshot, restart every member into it
    /// (followers first, the leader last), gate each step, and return automatically if a
    /// step fails. Example: sluice upgrade apply --binary ./sluice-2.0.0 --observe 30s
    // `--version` here names the release to upgrade to, so the binary's own version flag is
    // not offered (`sluice version` prints it).
    #[command(after_long_help = CLIENT_HELP, disable_version_flag = true)]
    Apply {
        /// The new release's binary (staged into this node's data root first).
        #[arg(long, value_name = "FILE", required_unless_present = "version")]
        binary: Option<PathBuf>,
        /// A release already staged (instead of --binary).
        #[arg(long, value_name = "VERSION", conflicts_with = "binary")]
        version: Option<String>,
        /// Observation window after each step.
        #[arg(long, value_name = "DURATION")]
        observe: Option<WrittenDuration>,
        /// How long one node may take to report the release ready and caught up.
        #[arg(long, value_name = "DURATION")]
        step_timeout: Option<WrittenDuration>,
        /// The node's own deadline to become ready before it returns on its own.
        #[arg(long, value_name = "DURATION")]
        ready_timeout: Option<WrittenDuration>,
        /// Starts a release may take before the node gives up on it.
        #[arg(long, value_name = "N")]
        max_starts: Option<u32>,
        /// API errors per thousand requests in a window that fail the step (default 100).
        #[arg(long, value_name = "PERMILLE")]
        api_error_permille_max: Option<u64>,
        /// Drop-rate multiple of the baseline that fails the step (default 2).
        #[arg(long, value_name = "N")]
        drop_ratio_max: Option<u64>,
        #[command(flatten)]
        watch: WatchArgs,
        #[command(flatten)]
        target: Target,
    },
    /// The rollout: plan, each node's progress, events, why it stopped.
    #[command(after_long_help = CLIENT_HELP)]
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// Stop the rollout in progress; the nodes it changed return to their releases.
    #[command(after_long_help = CLIENT_HELP)]
    Abort {
        #[command(flatten)]
        target: Target,
    },
    /// After a completed upgrade: move the cluster's active schema to the new release's.
    /// Rollback is refused afterwards (restore the pre-upgrade snapshot instead).
    #[command(after_long_help = CLIENT_HELP)]
    Finalize {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// A release still kept in every node's slots; default: the one the last upgrade
    /// replaced.
    #[arg(long, value_name = "VERSION")]
    pub to: Option<String>,
    #[command(flatten)]
    pub watch: WatchArgs,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, Args)]
pub struct BootGuardArgs {
    #[arg(long)]
    pub data_dir: PathBuf,
    #[arg(long)]
    pub pid: u32,
    #[arg(long)]
    pub release: String,
    /// The node's `sluice` arguments.
    #[arg(last = true)]
    pub args: Vec<OsString>,
}

pub fn version(args: &VersionArgs) -> Output {
    let info = build_info::info();
    Ok(if args.json {
        serde_json::to_string(&info).expect("info serializes")
    } else {
        format!("sluice {} (state schemas {}..={})", info.version, info.schema_min, info.schema_max)
    })
}

fn slots(args: &SlotsArgs) -> Releases {
    Releases::new(args.data_dir.as_deref().unwrap_or(std::path::Path::new(DEFAULT_DATA_DIR)))
}

fn refused(e: &ReleaseError) -> Failure {
    let exit = if matches!(e, ReleaseError::Io(_)) { Exit::DataDir } else { Exit::Refused };
    Failure::new(exit, format!("release refused ({}): {e}", e.code()))
}

/// The cluster's active schema as the running node says (this binary's when it cannot be
/// asked: staging offline then checks against what this release writes).
fn active_schema(data_dir: &std::path::Path) -> u32 {
    let target = Target {
        api: None,
        token: None,
        token_file: None,
        ca_cert: None,
        data_dir: Some(data_dir.to_path_buf()),
        timeout: WrittenDuration(Duration::from_secs(5)),
        json: true,
    };
    Endpoint::from_target(&target)
        .ok()
        .and_then(|e| crate::client::call(&e, "GET", "/api/v1/upgrade", None, None).ok())
        .and_then(|v| v["active_schema"].as_u64())
        .map_or(SCHEMA_VERSION, |s| s as u32)
}

fn stage(file: &std::path::Path, sha256: Option<&str>, args: &SlotsArgs) -> Result<Value, Failure> {
    let releases = slots(args);
    let schema = active_schema(releases.dir().parent().unwrap_or(releases.dir()));
    let manifest = releases.stage(file, sha256, schema, now_ms(), probe).map_err(|e| refused(&e))?;
    Ok(serde_json::to_value(manifest).expect("manifests serialize"))
}

pub fn release(command: &ReleaseCommand) -> Output {
    match command {
        ReleaseCommand::List(args) => {
            let list = slots(args).list().map_err(|e| refused(&e))?;
            if args.json {
                return Ok(serde_json::to_string_pretty(&list).unwrap_or_default());
            }
            if list.is_empty() {
                return Ok("no release staged (the first upgrade registers the running one)".into());
            }
            let mut out = format!("{:<2} {:<20} {:<10} {:<9} {}", "", "VERSION", "SCHEMAS", "MB", "SHA256");
            for slot in list {
                let mark = if slot.current {
                    "*"
                } else if slot.previous {
                    "-"
                } else {
                    " "
                };
                let m = &slot.manifest;
                out.push_str(&format!(
                    "\n{mark:<2} {:<20} {:<10} {:<9} {}",
                    m.version,
                    format!("{}..={}", m.schema_min, m.schema_max),
                    m.bytes / (1 << 20),
                    &m.sha256[..16]
                ));
            }
            out.push_str("\n(* current, - previous)");
            Ok(out)
        }
        ReleaseCommand::Stage { file, sha256, make_current, slots: args } => {
            let releases = slots(args);
            let current = if *make_current { releases.current().map_err(|e| refused(&e))? } else { None };
            if let Some(current) = current {
                return Err(Failure::new(
                    Exit::Refused,
                    format!(
                        "release refused (has_current): the data root already runs release {current}; \
                         --make-current is for a first install only, use `sluice upgrade apply` to move a node"
                    ),
                ));
            }
            let manifest = stage(file, sha256.as_deref(), args)?;
            if *make_current {
                let version = manifest["version"].as_str().unwrap_or_default();
                releases
                    .promote(version, now_ms(), "installed", "the first release of this data root")
                    .map_err(|e| refused(&e))?;
            }
            Ok(if args.json {
                serde_json::to_string_pretty(&manifest).unwrap_or_default()
            } else {
                format!(
                    "staged release {} (sha256 {})",
                    manifest["version"].as_str().unwrap_or("?"),
                    manifest["sha256"].as_str().unwrap_or("?")
                )
            })
        }
        ReleaseCommand::History(args) => {
            let history = slots(args).history().map_err(|e| refused(&e))?;
            if args.json {
                return Ok(serde_json::to_string_pretty(&history).unwrap_or_default());
            }
            let mut out = format!("{:<24} {:<9} {:<16} {:<16} {}", "AT", "EVENT", "RELEASE", "FROM", "DETAIL");
            for e in history {
                out.push_str(&format!(
                    "\n{:<24} {:<9} {:<16} {:<16} {}",
                    crate::client::render::timestamp(&json!(e.at_ms)),
                    e.event,
                    e.version,
                    e.from.unwrap_or_default(),
                    e.detail
                ));
            }
            Ok(out)
        }
    }
}

fn secs(d: &Option<WrittenDuration>) -> Option<u64> {
    d.as_ref().map(|d| d.0.as_secs())
}

pub fn upgrade(command: &UpgradeCommand) -> Output {
    match command {
        UpgradeCommand::Apply {
            binary,
            version,
            observe,
            step_timeout,
            ready_timeout,
            max_starts,
            api_error_permille_max,
            drop_ratio_max,
            watch,
            target,
        } => {
            let version = match (binary, version) {
                (Some(file), _) => {
                    if target.api.is_some() && target.data_dir.is_none() {
                        return Err(Failure::new(
                            Exit::Usage,
                            "--binary stages the file into the data root of the node this command runs on: give its \
                             --data-dir (or run it on the node without --api), or stage it there and pass --version",
                        ));
                    }
                    let args = SlotsArgs { data_dir: target.data_dir.clone(), json: false };
                    let manifest = stage(file, None, &args)?;
                    manifest["version"].as_str().unwrap_or_default().to_owned()
                }
                (None, Some(v)) => v.clone(),
                (None, None) => unreachable!("clap requires one"),
            };
            let body = json!({
                "version": version,
                "observe_s": secs(observe),
                "step_timeout_s": secs(step_timeout),
                "ready_timeout_s": secs(ready_timeout),
                "max_starts": max_starts,
                "api_error_permille_max": api_error_permille_max,
                "drop_ratio_max": drop_ratio_max,
            });
            let body: serde_json::Map<String, Value> = body
                .as_object()
                .expect("object")
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let endpoint = Endpoint::from_target(target)?;
            let plan =
                crate::client::call(&endpoint, "POST", "/api/v1/upgrade", Some(Value::Object(body).to_string()), None)?;
            follow(target, watch, &plan)
        }
        UpgradeCommand::Status { target } => {
            let endpoint = Endpoint::from_target(target)?;
            let status = crate::client::call(&endpoint, "GET", "/api/v1/upgrade", None, None)?;
            Ok(if target.json {
                serde_json::to_string_pretty(&status).unwrap_or_default()
            } else {
                render(&status["rollout"], status["active_schema"].as_u64())
            })
        }
        UpgradeCommand::Abort { target } => {
            let endpoint = Endpoint::from_target(target)?;
            let plan = crate::client::call(&endpoint, "POST", "/api/v1/upgrade/abort", Some("{}".into()), None)?;
            Ok(if target.json { serde_json::to_string_pretty(&plan).unwrap_or_default() } else { render(&plan, None) })
        }
        UpgradeCommand::Finalize { target } => {
            let endpoint = Endpoint::from_target(target)?;
            let plan = crate::client::call(&endpoint, "POST", "/api/v1/upgrade/finalize", Some("{}".into()), None)?;
            Ok(if target.json { serde_json::to_string_pretty(&plan).unwrap_or_default() } else { render(&plan, None) })
        }
    }
}

pub fn rollback(args: &RollbackArgs) -> Output {
    let endpoint = Endpoint::from_target(&args.target)?;
    let body = json!({ "to": args.to }).to_string();
    let plan = crate::client::call(&endpoint, "POST", "/api/v1/upgrade/rollback", Some(body), None)?;
    follow(&args.target, &args.watch, &plan)
}

/// Follows the rollout until it ends, printing each change of its progress (the node may
/// be restarting: errors reaching it are retried until `--wait` runs out).
fn follow(target: &Target, watch: &WatchArgs, plan: &Value) -> Output {
    let id = plan["id"].as_str().unwrap_or_default().to_owned();
    if watch.no_wait {
        return Ok(if target.json {
            serde_json::to_string_pretty(plan).unwrap_or_default()
        } else {
            render(plan, None)
        });
    }
    let deadline = Instant::now() + watch.wait.0;
    let mut last_shown = String::new();
    let mut last = plan.clone();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        let Ok(endpoint) = Endpoint::from_target(target) else { continue };
        let Ok(status) = crate::client::call(&endpoint, "GET", "/api/v1/upgrade", None, None) else { continue };
        let rollout = &status["rollout"];
        if rollout["id"].as_str() != Some(id.as_str()) {
            continue;
        }
        last = rollout.clone();
        let shown = render(rollout, None);
        if shown != last_shown && !target.json {
            eprintln!("{shown}\n");
            last_shown = shown;
        }
        if matches!(rollout["phase"].as_str(), Some("completed" | "failed" | "rolled_back")) {
            break;
        }
    }
    let out = if target.json { serde_json::to_string_pretty(&last).unwrap_or_default() } else { render(&last, None) };
    match last["phase"].as_str() {
        Some("completed") => Ok(out),
        Some(phase @ ("failed" | "rolled_back")) => Err(Failure::new(
            Exit::Refused,
            format!("rollout {id} {phase}: {}\n{out}", last["stop"]["message"].as_str().unwrap_or("see the events")),
        )),
        _ => Err(Failure::new(
            Exit::Refused,
            format!("rollout {id} still running after --wait; follow it with sluice upgrade status\n{out}"),
        )),
    }
}

fn bar(done: usize, total: usize) -> String {
    let width = 20;
    let filled = (done * width).checked_div(total).unwrap_or(width);
    format!("[{}{}] {done}/{total}", "#".repeat(filled), "-".repeat(width - filled))
}

/// A rollout for people: phase with a progress bar, one line per node, the last events.
pub fn render(plan: &Value, active_schema: Option<u64>) -> String {
    if plan.is_null() {
        return format!(
            "no rollout has run{}",
            active_schema.map(|s| format!("; active schema {s}")).unwrap_or_default()
        );
    }
    let nodes = plan["nodes"].as_array().cloned().unwrap_or_default();
    let done = nodes.iter().filter(|n| matches!(n["state"].as_str(), Some("done" | "returned"))).count();
    let mut out = format!(
        "{} {} -> {}: {} {}{}",
        plan["kind"].as_str().unwrap_or("?"),
        plan["id"].as_str().unwrap_or("?"),
        plan["target"]["version"].as_str().unwrap_or("?"),
        plan["phase"].as_str().unwrap_or("?"),
        bar(done, nodes.len()),
        if plan["finalized"].as_bool() == Some(true) { " (finalized)" } else { "" }
    );
    for n in &nodes {
        out.push_str(&format!(
            "\n  node {:<4} from {:<12} {:<10} {}",
            n["node_id"],
            n["from_version"].as_str().unwrap_or("?"),
            n["state"].as_str().unwrap_or("?"),
            n["message"].as_str().unwrap_or("")
        ));
    }
    if let Some(stop) = plan["stop"].as_object() {
        out.push_str(&format!(
            "\n  stopped by {}: {} {}",
            stop.get("trigger").and_then(Value::as_str).unwrap_or("?"),
            stop.get("message").and_then(Value::as_str).unwrap_or(""),
            stop.get("measured").map(Value::to_string).unwrap_or_default()
        ));
    }
    let events = plan["events"].as_array().cloned().unwrap_or_default();
    for e in events.iter().rev().take(5).rev() {
        out.push_str(&format!(
            "\n  {} {}",
            crate::client::render::timestamp(&e["at_ms"]),
            e["message"].as_str().unwrap_or("")
        ));
    }
    out
}
