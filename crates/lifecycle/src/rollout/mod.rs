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
    /// Since when a passing problem (not ready, unreachable, behind) has been seen: preflight
    /// and the observation window wait a while before they fail on it.
    #[serde(default)]
    pub problem_since_ms: Option<u64>,
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

/// What the driver saw of one member just now (a member sends its own over cluster RPC).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
                problem_since_ms: None,
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

mod advance;
#[cfg(test)]
mod tests;

pub use advance::advance;
