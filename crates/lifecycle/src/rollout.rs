//! The rolling upgrade (and rollback) as a pure state machine over a plan kept in the
//! replicated state (design §7). The leader's driver observes every member, calls
//! [`advance`], performs the [`Effect`]s it returns (stage the artifact on a node, restart a
//! node into a release, transfer leadership, save a diagnostic bundle) and stores the plan
//! when it changed, compare-and-set on the record's revision. A new leader reads the same plan
//! and carries on from it: every decision depends only on the plan and on observations.
//!
//! Order: followers one at a time, then leadership moves to an upgraded node and the old
//! leader goes last. A node's step is done when it reports the target release, is ready,
//! caught up, its state hash equals the leader's at its index, and an observation window
//! passed without a trigger (not ready, applied index not advancing, a crash loop, drop rate
//! or API error rate too high against the baseline). A failed step stops the rollout and
//! returns every node that left its release to it, in reverse order, with the same gates.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Events kept in a plan (the oldest are dropped).
pub const MAX_EVENTS: usize = 200;
/// A follower this many entries behind the leader is not caught up.
pub const MAX_LAG: u64 = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Upgrade,
    Rollback,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Checking every member and putting the artifact (and a fresh snapshot) on each.
    Preflight,
    /// Restarting nodes one at a time.
    Rolling,
    /// A step failed (or an operator aborted): returning nodes to their releases.
    RollingBack,
    /// Every node runs the target.
    Completed,
    /// Stopped before any node changed (preflight refused it).
    Failed,
    /// Stopped after a failure; every node is back on the release it ran before.
    RolledBack,
}

impl Phase {
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Completed | Phase::Failed | Phase::RolledBack)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Pending,
    /// Asked to restart into the target; waiting for it to report it, ready and caught up.
    Restarting,
    /// Running the target; the observation window is open.
    Observing,
    Done,
    Failed,
    /// Asked to return to its release (rollback of the rollout).
    Returning,
    /// Back on the release it ran before.
    Returned,
}

/// The thresholds of the triggers and the time limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gates {
    /// How long a node must run the target without a trigger before the next step.
    pub observe_ms: u64,
    /// How long a node may take to report the target, ready and caught up.
    pub step_timeout_ms: u64,
    /// The node's own deadline to become ready (its boot probation).
    pub ready_timeout_ms: u64,
    /// Starts a release may take before the node gives up on it.
    pub max_starts: u32,
    /// API error rate (errors per thousand requests during the window) above which the step
    /// fails.
    pub api_error_permille_max: u64,
    /// Drop rate (per million packets) above `drop_ratio_max` times the baseline's fails
    /// (with a floor of 1000 ppm, so an idle baseline does not fail on one drop).
    pub drop_ratio_max: u64,
}

impl Default for Gates {
    fn default() -> Gates {
        Gates {
            observe_ms: 10_000,
            step_timeout_ms: 180_000,
            ready_timeout_ms: 120_000,
            max_starts: 3,
            api_error_permille_max: 100,
            drop_ratio_max: 2,
        }
    }
}

/// The release the rollout installs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub version: String,
    pub sha256: String,
    pub bytes: u64,
    pub schema_min: u32,
    pub schema_max: u32,
}

/// A node's figures at one moment, as the baseline and the triggers use them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Figures {
    pub release: String,
    pub ready: bool,
    pub applied_index: u64,
    pub state_hash: String,
    pub config_digest: String,
    /// Counters since the node started: packets seen and dropped, API requests and errors.
    pub packets: u64,
    pub drops: u64,
    pub api_requests: u64,
    pub api_errors: u64,
}

/// One member's progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStep {
    pub node_id: u64,
    /// The release it ran when the plan was made (where a rollback returns it).
    pub from_version: String,
    pub state: StepState,
    pub staged: bool,
    pub since_ms: u64,
    /// Applied index and counters when the observation window opened.
    #[serde(default)]
    pub window_start: Option<Figures>,
    #[serde(default)]
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub at_ms: u64,
    #[serde(default)]
    pub node_id: Option<u64>,
    pub message: String,
}

/// Why the rollout stopped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stop {
    pub node_id: Option<u64>,
    /// A stable name: `preflight`, `step_timeout`, `returned_on_its_own`, `not_ready`,
    /// `not_progressing`, `crash_loop`, `drop_rate`, `api_error_rate`, `hash_mismatch`,
    /// `aborted`, `effect_failed`.
    pub trigger: String,
    pub message: String,
    /// The measured values behind the trigger.
    #[serde(default)]
    pub measured: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub id: String,
    pub kind: Kind,
    pub target: Target,
    /// The node whose release slot holds the artifact; the others fetch it from there.
    pub source_node: u64,
    pub started_at_ms: u64,
    pub started_by: String,
    pub gates: Gates,
    pub phase: Phase,
    /// Restart order: followers first, the leader (when the plan was made) last.
    pub nodes: Vec<NodeStep>,
    pub baseline: BTreeMap<u64, Figures>,
    pub events: Vec<Event>,
    pub stop: Option<Stop>,
    /// Set by `sluice upgrade finalize`: the active schema moved; rollback means restore.
    #[serde(default)]
    pub finalized: bool,
    /// The pre-upgrade snapshot ids, per node.
    #[serde(default)]
    pub snapshots: BTreeMap<u64, String>,
    /// Where failed steps left their diagnostic bundles, per node.
    #[serde(default)]
    pub diagnostics: BTreeMap<u64, String>,
    pub updated_at_ms: u64,
}

/// What the driver saw of one member just now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    pub reachable: bool,
    pub figures: Figures,
    /// Its hash equals the leader's at its applied index (`None`: cannot tell, e.g. the
    /// leader no longer remembers that index).
    pub hash_matches: Option<bool>,
    /// Its boot state says its last attempt at `version` was returned from, and why.
    pub returned: Option<(String, String)>,
    /// Its boot state has an attempt pending (it is on probation).
    pub on_probation: bool,
    /// Free bytes in its data root and what the artifact and a snapshot need.
    pub free_bytes: u64,
    pub needed_bytes: u64,
    /// The target release is staged in its slots.
    pub has_target: bool,
}

/// What the driver must do for the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Fetch the target from the source node, verify and stage it, take a pre-upgrade
    /// snapshot; then the driver sets `staged` (or stops the rollout).
    Stage {
        node_id: u64,
    },
    Restart {
        node_id: u64,
        version: String,
    },
    /// Move leadership off this (the leader's) node to `to`, which runs the target.
    TransferLeadership {
        to: u64,
    },
    /// Save the failed node's logs, readiness and counters next to the plan.
    Diagnostics {
        node_id: u64,
    },
}

impl Plan {
    /// A plan to move every member of `members` (the leader included) to `target`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        kind: Kind,
        target: Target,
        source_node: u64,
        leader: u64,
        members: &BTreeMap<u64, Figures>,
        gates: Gates,
        started_by: &str,
        now_ms: u64,
    ) -> Plan {
        let mut order: Vec<u64> = members.keys().copied().filter(|n| *n != leader).collect();
        order.push(leader);
        let nodes = order
            .iter()
            .map(|&node_id| NodeStep {
                node_id,
                from_version: members.get(&node_id).map(|f| f.release.clone()).unwrap_or_default(),
                state: StepState::Pending,
                staged: false,
                since_ms: now_ms,
                window_start: None,
                message: String::new(),
            })
            .collect();
        let mut plan = Plan {
            id,
            kind,
            target,
            source_node,
            started_at_ms: now_ms,
            started_by: started_by.to_owned(),
            gates,
            phase: Phase::Preflight,
            nodes,
            baseline: members.clone(),
            events: Vec::new(),
            stop: None,
            finalized: false,
            snapshots: BTreeMap::new(),
            diagnostics: BTreeMap::new(),
            updated_at_ms: now_ms,
        };
        let order: Vec<String> = order.iter().map(u64::to_string).collect();
        plan.event(now_ms, None, format!("plan made: order {}", order.join(", ")));
        plan
    }

    pub fn event(&mut self, at_ms: u64, node_id: Option<u64>, message: String) {
        if self.events.len() == MAX_EVENTS {
            self.events.remove(0);
        }
        self.events.push(Event { at_ms, node_id, message });
        self.updated_at_ms = at_ms;
    }

    pub fn step(&self, node_id: u64) -> Option<&NodeStep> {
        self.nodes.iter().find(|s| s.node_id == node_id)
    }

    fn step_mut(&mut self, node_id: u64) -> &mut NodeStep {
        self.nodes.iter_mut().find(|s| s.node_id == node_id).expect("the node is in the plan")
    }

    /// Stops the rollout: before any node changed it simply fails; otherwise the nodes that
    /// left their release return to it.
    pub fn stop(&mut self, stop: Stop, now_ms: u64) -> Vec<Effect> {
        if self.phase.is_terminal() || self.phase == Phase::RollingBack {
            return Vec::new();
        }
        let mut effects = Vec::new();
        if let Some(node) = stop.node_id {
            effects.push(Effect::Diagnostics { node_id: node });
            if let Some(step) = self.nodes.iter_mut().find(|s| s.node_id == node) {
                step.state = StepState::Failed;
                step.message = stop.message.clone();
            }
        }
        let touched = self.nodes.iter().any(|s| s.state != StepState::Pending);
        self.event(now_ms, stop.node_id, format!("stopped ({}): {}", stop.trigger, stop.message));
        self.phase = if touched { Phase::RollingBack } else { Phase::Failed };
        self.stop = Some(stop);
        effects
    }

    /// The nodes done so far, as "upgraded" (for leadership transfer targets).
    fn done(&self) -> impl Iterator<Item = u64> + '_ {
        self.nodes.iter().filter(|s| s.state == StepState::Done).map(|s| s.node_id)
    }
}

fn stop_at(node: u64, trigger: &str, message: String, measured: &[(&str, String)]) -> Stop {
    Stop {
        node_id: Some(node),
        trigger: trigger.into(),
        message,
        measured: measured.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect(),
    }
}

/// One turn of the driver on leader `leader`: updates `plan` from `seen` and returns what to
/// do. Returns no effect while waiting.
pub fn advance(plan: &mut Plan, leader: u64, seen: &BTreeMap<u64, Observation>, now_ms: u64) -> Vec<Effect> {
    match plan.phase {
        Phase::Preflight => preflight(plan, leader, seen, now_ms),
        Phase::Rolling => rolling(plan, leader, seen, now_ms),
        Phase::RollingBack => rolling_back(plan, leader, seen, now_ms),
        Phase::Completed | Phase::Failed | Phase::RolledBack => Vec::new(),
    }
}

fn preflight(plan: &mut Plan, leader: u64, seen: &BTreeMap<u64, Observation>, now_ms: u64) -> Vec<Effect> {
    let leader_index = seen.get(&leader).map_or(0, |o| o.figures.applied_index);
    for step in plan.nodes.clone() {
        let id = step.node_id;
        let refuse = |why: String, measured: &[(&str, String)]| {
            Some(Stop {
                node_id: None,
                trigger: "preflight".into(),
                message: format!("node {id}: {why}"),
                measured: measured.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect(),
            })
        };
        let problem = match seen.get(&id) {
            None => refuse("is not a member any more".into(), &[]),
            Some(o) if !o.reachable => refuse("is not reachable".into(), &[]),
            Some(o) if !o.figures.ready => refuse("is not ready".into(), &[]),
            Some(o) if o.on_probation => refuse("is still proving a release".into(), &[]),
            Some(o) if leader_index.saturating_sub(o.figures.applied_index) > MAX_LAG => refuse(
                format!("is not caught up ({} entries behind)", leader_index - o.figures.applied_index),
                &[("applied_index", o.figures.applied_index.to_string()), ("leader_index", leader_index.to_string())],
            ),
            Some(o) if o.hash_matches == Some(false) => refuse(
                "its state hash differs from the leader's at the same index".into(),
                &[("state_hash", o.figures.state_hash.clone())],
            ),
            Some(o) if !step.staged && !o.has_target && o.free_bytes < o.needed_bytes => refuse(
                format!(
                    "has {} bytes free in its data root; the artifact and a snapshot need {}",
                    o.free_bytes, o.needed_bytes
                ),
                &[("free_bytes", o.free_bytes.to_string()), ("needed_bytes", o.needed_bytes.to_string())],
            ),
            _ => None,
        };
        if let Some(stop) = problem {
            return plan.stop(stop, now_ms);
        }
    }
    // Stage one node at a time (the driver sets `staged` when it is done).
    if let Some(next) = plan.nodes.iter().find(|s| !s.staged) {
        return vec![Effect::Stage { node_id: next.node_id }];
    }
    plan.phase = Phase::Rolling;
    plan.event(
        now_ms,
        None,
        format!("preflight passed; the artifact is verified on every node; rolling to {}", plan.target.version),
    );
    rolling(plan, leader, seen, now_ms)
}

fn rolling(plan: &mut Plan, leader: u64, seen: &BTreeMap<u64, Observation>, now_ms: u64) -> Vec<Effect> {
    let Some(step) = plan.nodes.iter().find(|s| s.state != StepState::Done).cloned() else {
        plan.phase = Phase::Completed;
        plan.event(now_ms, None, format!("completed: every node runs {}", plan.target.version));
        return Vec::new();
    };
    let id = step.node_id;
    let target = plan.target.version.clone();
    let observed = seen.get(&id).cloned().unwrap_or_default();
    let figures = &observed.figures;
    match step.state {
        StepState::Pending => {
            if id == leader && plan.nodes.len() > 1 {
                // The leader restarts last, and not as the leader.
                return match plan.done().last() {
                    Some(to) => {
                        plan.event(now_ms, Some(id), format!("moving leadership to node {to}, which runs {target}"));
                        vec![Effect::TransferLeadership { to }]
                    }
                    None => plan.stop(
                        Stop {
                            node_id: Some(id),
                            trigger: "effect_failed".into(),
                            message: "no upgraded node to take the leadership".into(),
                            measured: BTreeMap::new(),
                        },
                        now_ms,
                    ),
                };
            }
            if figures.release == target {
                // Already there (e.g. restarted by an earlier leader that lost the plan write).
                let s = plan.step_mut(id);
                s.state = StepState::Restarting;
                s.since_ms = now_ms;
                return Vec::new();
            }
            let s = plan.step_mut(id);
            s.state = StepState::Restarting;
            s.since_ms = now_ms;
            plan.event(now_ms, Some(id), format!("restarting into {target}"));
            vec![Effect::Restart { node_id: id, version: target }]
        }
        StepState::Restarting => {
            if let Some((version, why)) = observed.returned.clone().filter(|(v, _)| *v == target) {
                if figures.release != target {
                    return plan.stop(
                        stop_at(
                            id,
                            "returned_on_its_own",
                            format!("the node returned to {} on its own: {why}", figures.release),
                            &[("release", figures.release.clone()), ("attempted", version)],
                        ),
                        now_ms,
                    );
                }
            }
            let leader_index = seen.get(&leader).map_or(0, |o| o.figures.applied_index);
            let caught_up = leader_index.saturating_sub(figures.applied_index) <= MAX_LAG;
            if observed.reachable && figures.release == target && figures.ready && caught_up && !observed.on_probation {
                if observed.hash_matches == Some(false) {
                    return plan.stop(
                        stop_at(
                            id,
                            "hash_mismatch",
                            "its state hash differs from the leader's at the same index".into(),
                            &[
                                ("state_hash", figures.state_hash.clone()),
                                ("applied_index", figures.applied_index.to_string()),
                            ],
                        ),
                        now_ms,
                    );
                }
                let s = plan.step_mut(id);
                s.state = StepState::Observing;
                s.since_ms = now_ms;
                s.window_start = Some(figures.clone());
                plan.event(
                    now_ms,
                    Some(id),
                    format!(
                        "runs {target}, ready, caught up, hash equal; observing for {} s",
                        plan.gates.observe_ms / 1000
                    ),
                );
                return Vec::new();
            }
            if now_ms.saturating_sub(step.since_ms) > plan.gates.step_timeout_ms {
                return plan.stop(
                    stop_at(
                        id,
                        "step_timeout",
                        format!(
                            "not running {target} ready and caught up within {} s",
                            plan.gates.step_timeout_ms / 1000
                        ),
                        &[
                            ("release", figures.release.clone()),
                            ("ready", figures.ready.to_string()),
                            ("applied_index", figures.applied_index.to_string()),
                            ("leader_index", leader_index.to_string()),
                        ],
                    ),
                    now_ms,
                );
            }
            Vec::new()
        }
        StepState::Observing => {
            let leader_index = seen.get(&leader).map_or(0, |o| o.figures.applied_index);
            if let Some(stop) = trigger(plan, &step, &observed, leader_index, now_ms) {
                return plan.stop(stop, now_ms);
            }
            if now_ms.saturating_sub(step.since_ms) >= plan.gates.observe_ms {
                plan.step_mut(id).state = StepState::Done;
                plan.event(now_ms, Some(id), "step done: the observation window passed without a trigger".into());
                return rolling(plan, leader, seen, now_ms);
            }
            Vec::new()
        }
        StepState::Done | StepState::Failed | StepState::Returning | StepState::Returned => Vec::new(),
    }
}

/// The triggers of the observation window (only a node whose observation says so).
fn trigger(plan: &Plan, step: &NodeStep, o: &Observation, leader_index: u64, now_ms: u64) -> Option<Stop> {
    let id = step.node_id;
    let f = &o.figures;
    let start = step.window_start.clone().unwrap_or_default();
    if !o.reachable || f.release != plan.target.version {
        return Some(stop_at(
            id,
            "crash_loop",
            format!("the node stopped running {} during its observation window", plan.target.version),
            &[("release", f.release.clone()), ("reachable", o.reachable.to_string())],
        ));
    }
    if !f.ready {
        return Some(stop_at(
            id,
            "not_ready",
            "the node stopped being ready during its observation window".into(),
            &[],
        ));
    }
    if o.hash_matches == Some(false) {
        return Some(stop_at(
            id,
            "hash_mismatch",
            "its state hash differs from the leader's at the same index".into(),
            &[("state_hash", f.state_hash.clone())],
        ));
    }
    let api = f.api_requests.saturating_sub(start.api_requests);
    let errors = f.api_errors.saturating_sub(start.api_errors);
    if api >= 10 && errors * 1000 > plan.gates.api_error_permille_max * api {
        return Some(stop_at(
            id,
            "api_error_rate",
            format!("{errors} of {api} API requests failed during the window"),
            &[
                ("api_requests", api.to_string()),
                ("api_errors", errors.to_string()),
                ("max_permille", plan.gates.api_error_permille_max.to_string()),
            ],
        ));
    }
    let packets = f.packets.saturating_sub(start.packets);
    let drops = f.drops.saturating_sub(start.drops);
    if packets >= 100 {
        let rate = drops * 1_000_000 / packets;
        let base =
            plan.baseline.get(&id).map_or(0, |b| if b.packets == 0 { 0 } else { b.drops * 1_000_000 / b.packets });
        let limit = (base * plan.gates.drop_ratio_max).max(1000);
        if rate > limit {
            return Some(stop_at(
                id,
                "drop_rate",
                format!("drop rate {rate} ppm over the limit {limit} ppm (baseline {base} ppm)"),
                &[("drop_ppm", rate.to_string()), ("baseline_ppm", base.to_string()), ("limit_ppm", limit.to_string())],
            ));
        }
    }
    // Healthy but not progressing: stuck at the index its window opened at while the
    // leader moved on.
    if f.applied_index == start.applied_index && leader_index.saturating_sub(f.applied_index) > MAX_LAG {
        return Some(stop_at(
            id,
            "not_progressing",
            "its applied index does not advance while the leader's does".into(),
            &[("applied_index", f.applied_index.to_string()), ("leader_index", leader_index.to_string())],
        ));
    }
    let _ = now_ms;
    None
}

fn rolling_back(plan: &mut Plan, leader: u64, seen: &BTreeMap<u64, Observation>, now_ms: u64) -> Vec<Effect> {
    // Reverse order: the last node touched first.
    let order: Vec<NodeStep> = plan.nodes.iter().rev().cloned().collect();
    for step in order {
        let id = step.node_id;
        let o = seen.get(&id).cloned().unwrap_or_default();
        let back = o.reachable && o.figures.release == step.from_version && o.figures.ready && !o.on_probation;
        match step.state {
            StepState::Pending | StepState::Returned => continue,
            StepState::Returning => {
                if back {
                    let s = plan.step_mut(id);
                    s.state = StepState::Returned;
                    s.since_ms = now_ms;
                    plan.event(now_ms, Some(id), format!("back on {}", step.from_version));
                    continue;
                }
                if now_ms.saturating_sub(step.since_ms) > plan.gates.step_timeout_ms {
                    // Do not loop forever; the operator sees it in the events.
                    let s = plan.step_mut(id);
                    s.state = StepState::Returned;
                    s.message = format!("did not report {} ready within the step timeout", step.from_version);
                    plan.event(now_ms, Some(id), format!("gave up waiting for it to return to {}", step.from_version));
                    continue;
                }
                return Vec::new();
            }
            StepState::Restarting | StepState::Observing | StepState::Done | StepState::Failed => {
                if back || (o.reachable && o.figures.release == step.from_version) {
                    // It returned on its own (boot probation) or never left.
                    let s = plan.step_mut(id);
                    s.state = StepState::Returning;
                    s.since_ms = now_ms;
                    return Vec::new();
                }
                if id == leader && plan.nodes.len() > 1 {
                    let to = plan
                        .nodes
                        .iter()
                        .find(|s| s.node_id != id && s.state == StepState::Returned)
                        .map(|s| s.node_id)
                        .or_else(|| plan.nodes.iter().find(|s| s.node_id != id).map(|s| s.node_id));
                    if let Some(to) = to {
                        plan.event(
                            now_ms,
                            Some(id),
                            format!("moving leadership to node {to} before returning this node"),
                        );
                        return vec![Effect::TransferLeadership { to }];
                    }
                }
                let s = plan.step_mut(id);
                s.state = StepState::Returning;
                s.since_ms = now_ms;
                plan.event(now_ms, Some(id), format!("returning to {}", step.from_version));
                return vec![Effect::Restart { node_id: id, version: step.from_version }];
            }
        }
    }
    plan.phase = Phase::RolledBack;
    plan.event(now_ms, None, "rolled back: every node runs the release it ran before".into());
    Vec::new()
}
