//! The turns of the rollout: preflight, rolling forward with its gates and triggers, and
//! rolling back in reverse order. Pure: every decision depends on the plan, the observations
//! and the clock passed in.

use std::collections::BTreeMap;

use super::{Effect, NodeStep, Observation, Phase, Plan, StepState, Stop, MAX_LAG};

/// How long preflight waits for a member that is not ready, not reachable, on probation or
/// behind before it refuses the rollout.
pub const PREFLIGHT_PATIENCE_MS: u64 = 30_000;
/// How long a node may be not ready in its observation window before the step fails.
pub const NOT_READY_MS: u64 = 3_000;

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
        // Readiness, reachability, probation and lag can pass in a moment (a member busy
        // staging, a readiness check between two policy versions): they are waited for up to
        // PREFLIGHT_PATIENCE_MS before the rollout is refused. A diverged hash, a member gone
        // or a full disk refuse at once.
        let transient = seen.get(&id).is_some_and(|o| {
            !o.reachable
                || !o.figures.ready
                || o.on_probation
                || leader_index.saturating_sub(o.figures.applied_index) > MAX_LAG
        }) && seen.get(&id).is_some_and(|o| o.hash_matches != Some(false));
        match problem {
            Some(stop) if transient => {
                let since = *plan.step_mut(id).problem_since_ms.get_or_insert(now_ms);
                if now_ms.saturating_sub(since) > PREFLIGHT_PATIENCE_MS {
                    return plan.stop(stop, now_ms);
                }
                plan.step_mut(id).message = format!("waiting: {}", stop.message);
                return Vec::new();
            }
            Some(stop) => return plan.stop(stop, now_ms),
            None => {
                let s = plan.step_mut(id);
                if s.problem_since_ms.take().is_some() {
                    s.message.clear();
                }
            }
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
            if plan.nodes.len() > 1 && plan.nodes.last().map(|s| s.node_id) == Some(id) {
                // The leader when the plan was made, no longer leading: an election moved the
                // leadership on its own (a restarted follower standing before it heard from
                // the leader, say). Say so, since no transfer will appear in the log.
                plan.event(
                    now_ms,
                    Some(id),
                    format!("the leadership moved to node {leader} on its own; this node restarts as a follower"),
                );
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
            let not_ready = !observed.figures.ready;
            let s = plan.step_mut(id);
            s.problem_since_ms = if not_ready { s.problem_since_ms.or(Some(now_ms)) } else { None };
            if not_ready {
                // The window ends only on a ready node.
                return Vec::new();
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
    // A single not-ready answer may be a blip (a readiness check between two policy
    // versions): only one that lasts NOT_READY_MS fails the step.
    let not_ready_since = if f.ready { None } else { step.problem_since_ms.or(Some(now_ms)) };
    if let Some(since) = not_ready_since.filter(|since| now_ms.saturating_sub(*since) >= NOT_READY_MS) {
        return Some(stop_at(
            id,
            "not_ready",
            format!("the node was not ready for {} ms during its observation window", now_ms - since),
            &[("not_ready_ms", (now_ms - since).to_string())],
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
        let base = plan.baseline.get(&id).map_or(0, |b| (b.drops * 1_000_000).checked_div(b.packets).unwrap_or(0));
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
