//! Upgrade and rollback on a running node: the API's [`UpgradeService`] (start, abort,
//! rollback, finalize, status), the driver that runs the plan from the replicated state on
//! the leader ([`drive`]), and the [`Fleet`] through which it observes members and acts on
//! them. The plan's rules are `sluice_lifecycle::rollout` (pure); this is their I/O.
//!
//! The fleet of a single node is the node itself ([`LocalFleet`]); a cluster member's is
//! `super::fleet::ClusterFleet`, over the cluster's RPCs. A restart is a request to the
//! control loop, which stops the node cleanly and execs the release (see [`crate::boot`]);
//! the new process reads the same plan from the replicated store and carries on.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sluice_api::cluster::BoxFuture;
use sluice_api::upgrade::{StartRollback, StartUpgrade, UpgradeFailure, UpgradeService};
use sluice_api::Probe;
use sluice_lifecycle::boot;
use sluice_lifecycle::releases::Releases;
use sluice_lifecycle::repository::Kind as SnapshotKind;
use sluice_lifecycle::rollout::{self, Effect, Figures, Gates, Kind, Observation, Phase, Plan, Stop, Target};
use sluice_store::state::{Command, CommandError, Outcome};
use sluice_store::Store;
use tracing::{info, warn};

use super::snapshots::NodeSnapshots;
use super::view::NodeState;
use crate::boot::{now_ms, request_restart};
use crate::build_info;

/// How often the leader's driver looks at the plan.
pub const DRIVE_INTERVAL: Duration = Duration::from_millis(500);
/// Room a pre-upgrade snapshot needs besides the artifact (a floor; the state is smaller).
const SNAPSHOT_ROOM: u64 = 64 << 20;
/// A start or rollback decided on a record that changed meanwhile is decided again, this
/// many times, after this pause (the local store catching up).
const RETRIES: u32 = 3;
const RETRY_PAUSE: Duration = Duration::from_millis(300);

/// The node's own release facts, shared by the service and the fleet.
pub struct LocalNode {
    pub store: Arc<Store>,
    pub data_dir: PathBuf,
    pub state: Arc<NodeState>,
    pub probe: Probe,
    pub snapshots: Arc<NodeSnapshots>,
    /// Set when the control loop must stop the node and exec the release on probation.
    pub restart: Arc<AtomicBool>,
    /// SHA-256 of the node's effective configuration (every setting after flags, env and
    /// file were merged), so the baseline shows whether a node's configuration changed.
    pub config_digest: String,
}

impl LocalNode {
    fn releases(&self) -> Releases {
        Releases::new(&self.data_dir)
    }

    /// What the driver and the baseline read from this node.
    pub fn figures(&self) -> Figures {
        let status = self.store.status();
        let stats = sluice_api::NodeView::stats(self.state.as_ref());
        let counter = |name: &str| stats["counters"][name].as_u64().unwrap_or(0);
        let (api_requests, api_errors) = self.probe.request_totals();
        Figures {
            release: build_info::version(),
            ready: self.probe.ready(),
            applied_index: status.applied_index,
            state_hash: status.state_hash.to_hex(),
            config_digest: self.config_digest.clone(),
            packets: counter("internal_rx_packets") + counter("external_rx_packets"),
            drops: counter("dropped_packets"),
            api_requests,
            api_errors,
        }
    }

    pub fn observe(&self, target: Option<&Target>) -> Observation {
        let releases = self.releases();
        let boot = boot::load(&releases).unwrap_or_default();
        let returned = boot.last.filter(|l| l.outcome == "returned").map(|l| (l.version, l.reason));
        Observation {
            reachable: true,
            figures: self.figures(),
            hash_matches: Some(true),
            returned,
            on_probation: boot.attempt.is_some(),
            free_bytes: releases.free_bytes().unwrap_or(0),
            needed_bytes: target.map_or(0, |t| t.bytes) + SNAPSHOT_ROOM,
            has_target: target.is_some_and(|t| releases.manifest(&t.version).is_ok()),
        }
    }

    /// Takes the pre-upgrade snapshot and checks the target is staged here.
    pub(super) fn stage(&self, target: &Target) -> Result<String, String> {
        let manifest = self.releases().manifest(&target.version).map_err(|e| e.to_string())?;
        if manifest.sha256 != target.sha256 {
            return Err(format!(
                "release {} here has sha256 {}, the plan's is {}",
                target.version, manifest.sha256, target.sha256
            ));
        }
        let snapshot = self.snapshots.take(SnapshotKind::PreUpgrade, None).map_err(|e| format!("{e:?}"))?;
        Ok(snapshot.id)
    }

    pub(super) fn restart_into(&self, version: &str, gates: &Gates, reason: &str) -> Result<(), String> {
        request_restart(
            &self.data_dir,
            version,
            Duration::from_millis(gates.ready_timeout_ms),
            gates.max_starts,
            reason,
        )?;
        self.restart.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Saves what a failed step leaves for study: readiness, counters, boot state, release
    /// history (no secrets are in any of these).
    pub(super) fn diagnostics(&self, plan: &Plan) -> Result<String, String> {
        let dir = self.data_dir.join("upgrade-diagnostics");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let releases = self.releases();
        let bundle = json!({
            "plan_id": plan.id,
            "at_ms": now_ms(),
            "node_id": self.store.status().node_id,
            "release": build_info::version(),
            "ready": self.probe.ready(),
            "figures": self.figures(),
            "stats": sluice_api::NodeView::stats(self.state.as_ref()),
            "boot": boot::load(&releases).ok(),
            "history": releases.history().unwrap_or_default(),
            "stop": plan.stop,
        });
        let path = dir.join(format!("{}-node{}.json", plan.id, self.store.status().node_id));
        std::fs::write(&path, serde_json::to_vec_pretty(&bundle).expect("bundles serialize"))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path.display().to_string())
    }
}

/// The members a plan covers and how the driver reaches them.
pub trait Fleet: Send + Sync {
    fn self_id(&self) -> u64;
    /// `None` while no leader is known.
    fn leader(&self) -> Option<u64>;
    fn members(&self) -> Vec<u64>;
    fn observe(&self, node: u64, target: Option<&Target>) -> BoxFuture<'_, Observation>;
    /// Puts the target on `node` (fetching it from `source` when missing), verifies it and
    /// takes a pre-upgrade snapshot there; the snapshot's id.
    fn stage(&self, node: u64, target: &Target, source: u64) -> BoxFuture<'_, Result<String, String>>;
    fn restart(&self, node: u64, version: &str, gates: &Gates, reason: &str) -> BoxFuture<'_, Result<(), String>>;
    fn transfer_leadership(&self, to: u64) -> BoxFuture<'_, Result<(), String>>;
    fn diagnostics(&self, node: u64, plan: &Plan) -> BoxFuture<'_, Result<String, String>>;
}

/// A node without a cluster: the fleet is itself.
pub struct LocalFleet(pub Arc<LocalNode>);

impl Fleet for LocalFleet {
    fn self_id(&self) -> u64 {
        self.0.store.status().node_id
    }

    fn leader(&self) -> Option<u64> {
        Some(self.self_id())
    }

    fn members(&self) -> Vec<u64> {
        vec![self.self_id()]
    }

    fn observe(&self, _node: u64, target: Option<&Target>) -> BoxFuture<'_, Observation> {
        let observation = self.0.observe(target);
        Box::pin(async move { observation })
    }

    fn stage(&self, _node: u64, target: &Target, _source: u64) -> BoxFuture<'_, Result<String, String>> {
        // A snapshot and a checksum of the binary: disk work, off the async workers.
        let (local, target) = (self.0.clone(), target.clone());
        Box::pin(
            async move { tokio::task::spawn_blocking(move || local.stage(&target)).await.map_err(|e| e.to_string())? },
        )
    }

    fn restart(&self, _node: u64, version: &str, gates: &Gates, reason: &str) -> BoxFuture<'_, Result<(), String>> {
        let result = self.0.restart_into(version, gates, reason);
        Box::pin(async move { result })
    }

    fn transfer_leadership(&self, _to: u64) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Err("a single node has no one to hand leadership to".to_owned()) })
    }

    fn diagnostics(&self, _node: u64, plan: &Plan) -> BoxFuture<'_, Result<String, String>> {
        let (local, plan) = (self.0.clone(), plan.clone());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || local.diagnostics(&plan)).await.map_err(|e| e.to_string())?
        })
    }
}

/// The stored plan and its revision.
fn stored(store: &Store) -> (u64, Option<Plan>) {
    store.read(|s| match s.rollout() {
        Some(r) => (r.revision, serde_json::from_value(r.plan.clone()).ok()),
        None => (0, None),
    })
}

async fn save(
    store: &Store,
    actor: &str,
    revision: u64,
    plan: &Plan,
    active_schema: Option<u32>,
) -> Result<u64, String> {
    let plan_value = serde_json::to_value(plan).expect("plans serialize");
    let command = Command::PutRollout { expected_revision: revision, plan: plan_value, active_schema };
    let applied = store.write(actor, command).await.map_err(|e| e.to_string())?;
    match applied.response {
        Ok(Outcome::RolloutSaved { revision, .. }) => Ok(revision),
        Ok(other) => Err(format!("unexpected outcome {other:?}")),
        Err(e @ CommandError::RolloutRevisionMismatch { .. }) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// The leader's driver: forever, one turn per [`DRIVE_INTERVAL`].
pub async fn drive(store: Arc<Store>, fleet: Arc<dyn Fleet>) {
    loop {
        tokio::time::sleep(DRIVE_INTERVAL).await;
        if fleet.leader() != Some(fleet.self_id()) {
            continue;
        }
        if let Err(e) = turn(&store, fleet.as_ref()).await {
            warn!("upgrade driver: {e}");
        }
    }
}

/// One turn: observe, advance, save, act.
pub async fn turn(store: &Store, fleet: &dyn Fleet) -> Result<(), String> {
    let (revision, Some(mut plan)) = stored(store) else { return Ok(()) };
    if plan.phase.is_terminal() {
        return Ok(());
    }
    let leader = fleet.self_id();
    let mut seen = BTreeMap::new();
    for step in &plan.nodes {
        seen.insert(step.node_id, fleet.observe(step.node_id, Some(&plan.target)).await);
    }
    let before = plan.clone();
    let effects = rollout::advance(&mut plan, leader, &seen, now_ms());
    let mut revision = revision;
    if plan != before {
        revision = save(store, "upgrade", revision, &plan, None).await?;
    }
    for effect in effects {
        let outcome = match &effect {
            Effect::Stage { node_id } => match fleet.stage(*node_id, &plan.target, plan.source_node).await {
                Ok(snapshot) => {
                    let step = plan.nodes.iter_mut().find(|s| s.node_id == *node_id).expect("planned node");
                    step.staged = true;
                    plan.snapshots.insert(*node_id, snapshot.clone());
                    plan.event(
                        now_ms(),
                        Some(*node_id),
                        format!("release verified here; pre-upgrade snapshot {snapshot}"),
                    );
                    Ok(())
                }
                Err(e) => Err(format!("staging on node {node_id}: {e}")),
            },
            Effect::Restart { node_id, version } => {
                info!(node = node_id, release = %version, plan = %plan.id, "upgrade: restarting a node into a release");
                fleet
                    .restart(*node_id, version, &plan.gates, &plan.id)
                    .await
                    .map_err(|e| format!("restarting node {node_id}: {e}"))
            }
            Effect::TransferLeadership { to } => {
                fleet.transfer_leadership(*to).await.map_err(|e| format!("moving leadership to node {to}: {e}"))
            }
            Effect::Diagnostics { node_id } => match fleet.diagnostics(*node_id, &plan).await {
                Ok(path) => {
                    plan.diagnostics.insert(*node_id, path.clone());
                    plan.event(now_ms(), Some(*node_id), format!("diagnostic bundle saved: {path}"));
                    Ok(())
                }
                Err(e) => {
                    plan.event(now_ms(), Some(*node_id), format!("no diagnostic bundle: {e}"));
                    Ok(())
                }
            },
        };
        if let Err(message) = outcome {
            let node_id = match effect {
                Effect::Stage { node_id } | Effect::Restart { node_id, .. } | Effect::Diagnostics { node_id } => {
                    Some(node_id)
                }
                Effect::TransferLeadership { .. } => None,
            };
            let stop = Stop { node_id, trigger: "effect_failed".into(), message, measured: BTreeMap::new() };
            let more = plan.stop(stop, now_ms());
            for effect in more {
                if let Effect::Diagnostics { node_id } = effect {
                    if let Ok(path) = fleet.diagnostics(node_id, &plan).await {
                        plan.diagnostics.insert(node_id, path);
                    }
                }
            }
        }
    }
    if plan != before {
        save(store, "upgrade", revision, &plan, None).await.map(drop)
    } else {
        Ok(())
    }
}

/// The API's side of upgrades.
pub struct Upgrades {
    pub local: Arc<LocalNode>,
    pub fleet: Arc<dyn Fleet>,
    /// One start/rollback/abort/finalize at a time on this node.
    busy: tokio::sync::Mutex<()>,
}

fn conflict(code: &'static str, message: impl Into<String>) -> UpgradeFailure {
    UpgradeFailure::Conflict { code, message: message.into() }
}

impl Upgrades {
    pub fn new(local: Arc<LocalNode>, fleet: Arc<dyn Fleet>) -> Upgrades {
        Upgrades { local, fleet, busy: tokio::sync::Mutex::new(()) }
    }

    fn target(&self, version: &str) -> Result<Target, UpgradeFailure> {
        let manifest = self.local.releases().manifest(version).map_err(|e| match e {
            sluice_lifecycle::releases::ReleaseError::Unknown(_) => UpgradeFailure::NotFound(format!(
                "release {version} is not staged on this node; stage it first: sluice release stage FILE"
            )),
            other => UpgradeFailure::BadRequest { code: other.code(), message: other.to_string() },
        })?;
        let active = self.local.store.read(|s| s.active_schema());
        if !manifest.info().supports(active) {
            return Err(UpgradeFailure::BadRequest {
                code: "schema_unsupported",
                message: format!(
                    "release {version} reads schemas {}..={}, the cluster's active schema is {active}",
                    manifest.schema_min, manifest.schema_max
                ),
            });
        }
        Ok(Target {
            version: manifest.version,
            sha256: manifest.sha256,
            bytes: manifest.bytes,
            schema_min: manifest.schema_min,
            schema_max: manifest.schema_max,
        })
    }

    async fn members(&self, target: &Target) -> BTreeMap<u64, Figures> {
        let mut members = BTreeMap::new();
        for node in self.fleet.members() {
            members.insert(node, self.fleet.observe(node, Some(target)).await.figures);
        }
        members
    }

    /// Starts a rollout on the record as the caller read it (`read`): the save is
    /// compare-and-set on that revision, so a decision made on a stale record (a finalize
    /// this node had not applied yet) is refused as `rollout_changed`, and retried.
    async fn begin(
        &self,
        kind: Kind,
        target: Target,
        gates: Gates,
        actor: &str,
        read: (u64, Option<Plan>),
    ) -> Result<Value, UpgradeFailure> {
        let (revision, current) = read;
        if let Some(plan) = current.as_ref().filter(|p| !p.phase.is_terminal()) {
            return Err(conflict(
                "rollout_in_progress",
                format!("rollout {} is in progress ({:?}); wait for it or abort it", plan.id, plan.phase),
            ));
        }
        let leader = self.fleet.leader().ok_or_else(|| conflict("no_leader", "no leader is known; try again"))?;
        let members = self.members(&target).await;
        if members.values().all(|f| f.release == target.version) {
            return Err(conflict("already_running", format!("every member already runs {}", target.version)));
        }
        let now = now_ms();
        let id = format!("{}-{now}", if kind == Kind::Upgrade { "upgrade" } else { "rollback" });
        let plan = Plan::new(id, kind, target, self.fleet.self_id(), leader, &members, gates, actor, now);
        save(&self.local.store, actor, revision, &plan, None).await.map_err(|e| {
            if e.contains("another writer changed it") {
                conflict("rollout_changed", e)
            } else {
                conflict("rollout_not_saved", e)
            }
        })?;
        info!(plan = %plan.id, release = %plan.target.version, actor, "rollout started");
        Ok(serde_json::to_value(&plan).expect("plans serialize"))
    }

    async fn rollback_once(&self, request: &StartRollback, actor: &str) -> Result<Value, UpgradeFailure> {
        let (revision, last) = stored(&self.local.store);

        let Some(last) = last else {
            return Err(conflict("nothing_to_roll_back", "no upgrade was ever run on this cluster"));
        };
        if last.finalized {
            let snapshots: Vec<String> = last.snapshots.values().cloned().collect();
            return Err(conflict(
                "finalized",
                format!(
                    "upgrade {} to {} was finalized: the active schema moved forward and the previous release may not read \
                     it. To go back, restore the pre-upgrade snapshot ({}) with sluice restore --snapshot FILE --data-dir DIR",
                    last.id,
                    last.target.version,
                    if snapshots.is_empty() { "see sluice snapshot list".to_owned() } else { snapshots.join(", ") }
                ),
            ));
        }
        let to = match request.to.clone() {
            Some(to) => to,
            None => last.nodes.first().map(|s| s.from_version.clone()).unwrap_or_default(),
        };
        let target = self.target(&to)?;
        let read = (revision, Some(last.clone()));
        self.begin(Kind::Rollback, target, last.gates, actor, read).await
    }
}

fn gates(request: &StartUpgrade) -> Result<Gates, UpgradeFailure> {
    let mut gates = Gates::default();
    let bad = |message: &str| UpgradeFailure::BadRequest { code: "invalid_gate", message: message.to_owned() };
    if let Some(s) = request.observe_s {
        gates.observe_ms = (s.min(3600)) * 1000;
    }
    if let Some(s) = request.step_timeout_s {
        if !(10..=3600).contains(&s) {
            return Err(bad("step_timeout_s must be 10..=3600"));
        }
        gates.step_timeout_ms = s * 1000;
    }
    if let Some(s) = request.ready_timeout_s {
        if !(5..=3600).contains(&s) {
            return Err(bad("ready_timeout_s must be 5..=3600"));
        }
        gates.ready_timeout_ms = s * 1000;
    }
    if let Some(n) = request.max_starts {
        if !(1..=10).contains(&n) {
            return Err(bad("max_starts must be 1..=10"));
        }
        gates.max_starts = n;
    }
    if let Some(p) = request.api_error_permille_max {
        gates.api_error_permille_max = p.min(1000);
    }
    if let Some(r) = request.drop_ratio_max {
        if r == 0 {
            return Err(bad("drop_ratio_max must be at least 1"));
        }
        gates.drop_ratio_max = r;
    }
    Ok(gates)
}

impl UpgradeService for Upgrades {
    fn status(&self) -> Value {
        let (revision, plan) = stored(&self.local.store);
        let releases = self.local.releases();
        json!({
            "active_schema": self.local.store.read(|s| s.active_schema()),
            "revision": revision,
            "rollout": plan,
            "node": {
                "node_id": self.fleet.self_id(),
                "release": build_info::version(),
                "boot": boot::load(&releases).ok(),
                "releases": releases.list().unwrap_or_default(),
            },
        })
    }

    fn releases(&self) -> Value {
        let releases = self.local.releases();
        json!({
            "current": releases.current().ok().flatten(),
            "previous": releases.previous().ok().flatten(),
            "releases": releases.list().unwrap_or_default(),
            "history": releases.history().unwrap_or_default(),
            "boot": boot::load(&releases).ok(),
        })
    }

    fn start(&self, request: StartUpgrade, actor: String) -> BoxFuture<'_, Result<Value, UpgradeFailure>> {
        Box::pin(async move {
            let Ok(_busy) = self.busy.try_lock() else {
                return Err(conflict("busy", "another upgrade request is being handled"));
            };
            let gates = gates(&request)?;
            let target = self.target(&request.version)?;
            for attempt in 0.. {
                let read = stored(&self.local.store);
                match self.begin(Kind::Upgrade, target.clone(), gates, &actor, read).await {
                    Err(UpgradeFailure::Conflict { code: "rollout_changed", .. }) if attempt < RETRIES => {
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                    other => return other,
                }
            }
            unreachable!("the loop returns")
        })
    }

    fn rollback(&self, request: StartRollback, actor: String) -> BoxFuture<'_, Result<Value, UpgradeFailure>> {
        Box::pin(async move {
            let Ok(_busy) = self.busy.try_lock() else {
                return Err(conflict("busy", "another upgrade request is being handled"));
            };
            for attempt in 0.. {
                match self.rollback_once(&request, &actor).await {
                    Err(UpgradeFailure::Conflict { code: "rollout_changed", .. }) if attempt < RETRIES => {
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                    other => return other,
                }
            }
            unreachable!("the loop returns")
        })
    }

    fn abort(&self, actor: String) -> BoxFuture<'_, Result<Value, UpgradeFailure>> {
        Box::pin(async move {
            let (revision, plan) = stored(&self.local.store);
            let Some(mut plan) = plan.filter(|p| !p.phase.is_terminal() && p.phase != Phase::RollingBack) else {
                return Err(conflict("no_rollout", "no rollout is in progress"));
            };
            let stop = Stop {
                node_id: None,
                trigger: "aborted".into(),
                message: format!("aborted by {actor}"),
                measured: BTreeMap::new(),
            };
            plan.stop(stop, now_ms());
            save(&self.local.store, &actor, revision, &plan, None)
                .await
                .map_err(|e| conflict("rollout_not_saved", e))?;
            Ok(serde_json::to_value(&plan).expect("plans serialize"))
        })
    }

    fn finalize(&self, actor: String) -> BoxFuture<'_, Result<Value, UpgradeFailure>> {
        Box::pin(async move {
            let (revision, plan) = stored(&self.local.store);
            let Some(mut plan) = plan.filter(|p| p.kind == Kind::Upgrade && p.phase == Phase::Completed) else {
                return Err(conflict("nothing_to_finalize", "finalize follows a completed upgrade; none is waiting"));
            };
            if plan.finalized {
                return Err(conflict("finalized", format!("upgrade {} is already finalized", plan.id)));
            }
            for node in self.fleet.members() {
                let seen = self.fleet.observe(node, None).await;
                if !seen.reachable || seen.figures.release != plan.target.version {
                    return Err(conflict(
                        "not_all_upgraded",
                        format!(
                            "node {node} runs {:?}, not {}: finalize needs every member on the new release",
                            seen.figures.release, plan.target.version
                        ),
                    ));
                }
            }
            plan.finalized = true;
            let schema = plan.target.schema_max.max(self.local.store.read(|s| s.active_schema()));
            plan.event(
                now_ms(),
                None,
                format!("finalized by {actor}: active schema {schema}; rollback now means restore"),
            );
            save(&self.local.store, &actor, revision, &plan, Some(schema))
                .await
                .map_err(|e| conflict("rollout_not_saved", e))?;
            Ok(serde_json::to_value(&plan).expect("plans serialize"))
        })
    }
}
