//! The rollout's rules, turn by turn, on a three-node cluster whose leader is node 1.

use std::collections::BTreeMap;

use super::*;

const LEADER: u64 = 1;

fn target() -> Target {
    Target { version: "2.0.0".into(), sha256: "ab".repeat(32), bytes: 10 << 20, schema_min: 1, schema_max: 2 }
}

fn figures(release: &str, index: u64) -> Figures {
    Figures {
        release: release.into(),
        ready: true,
        applied_index: index,
        state_hash: "h".into(),
        packets: 10_000,
        drops: 10,
        ..Figures::default()
    }
}

fn healthy(release: &str, index: u64) -> Observation {
    Observation {
        reachable: true,
        figures: figures(release, index),
        hash_matches: Some(true),
        free_bytes: 1 << 40,
        needed_bytes: 100 << 20,
        ..Observation::default()
    }
}

fn gates() -> Gates {
    Gates { observe_ms: 1_000, step_timeout_ms: 10_000, ..Gates::default() }
}

fn plan() -> Plan {
    let members: BTreeMap<u64, Figures> = (1..=3).map(|n| (n, figures("1.0.0", 100))).collect();
    Plan::new("upgrade-1".into(), Kind::Upgrade, target(), LEADER, LEADER, &members, gates(), "admin", 0)
}

/// Every node on `release` and healthy, except the ones in `overrides`.
fn seen(release: &str, overrides: &[(u64, Observation)]) -> BTreeMap<u64, Observation> {
    let mut seen: BTreeMap<u64, Observation> = (1..=3).map(|n| (n, healthy(release, 100))).collect();
    for (n, o) in overrides {
        seen.insert(*n, o.clone());
    }
    seen
}

/// Runs preflight to its end with every node staging fine.
fn past_preflight(plan: &mut Plan) {
    for _ in 0..3 {
        match advance(plan, LEADER, &seen("1.0.0", &[]), 0).as_slice() {
            [Effect::Stage { node_id }] => plan.nodes.iter_mut().find(|s| s.node_id == *node_id).unwrap().staged = true,
            other => panic!("expected a stage effect, got {other:?}"),
        }
    }
}

/// Every node healthy at index 100 on the release `releases` gives it.
fn view(releases: &BTreeMap<u64, String>) -> BTreeMap<u64, Observation> {
    releases.iter().map(|(n, r)| (*n, healthy(r, 100))).collect()
}

/// Nodes 1 to 3, all on `release`.
fn all_on(release: &str) -> BTreeMap<u64, String> {
    (1..=3).map(|n| (n, release.to_owned())).collect()
}

/// Brings the node `node` through restart and observation; `at` is the clock when it
/// reports the target.
fn upgrade_step(plan: &mut Plan, node: u64, releases: &mut BTreeMap<u64, String>, at: u64) {
    assert_eq!(
        advance(plan, LEADER, &view(releases), at),
        vec![Effect::Restart { node_id: node, version: "2.0.0".into() }]
    );
    releases.insert(node, "2.0.0".into());
    assert!(advance(plan, LEADER, &view(releases), at + 10).is_empty());
    assert_eq!(plan.step(node).unwrap().state, StepState::Observing);
    // The window is not over yet.
    assert!(advance(plan, LEADER, &view(releases), at + 500).is_empty());
    assert_eq!(plan.step(node).unwrap().state, StepState::Observing);
}

#[test]
fn the_plan_restarts_followers_first_and_the_leader_last() {
    let plan = plan();
    let order: Vec<u64> = plan.nodes.iter().map(|s| s.node_id).collect();
    assert_eq!(order, vec![2, 3, 1]);
    assert_eq!(plan.phase, Phase::Preflight);
    assert!(plan.nodes.iter().all(|s| s.from_version == "1.0.0" && s.state == StepState::Pending));
    assert_eq!(plan.baseline.len(), 3, "the baseline holds every member");
}

#[test]
fn preflight_stages_one_node_at_a_time_then_rolls() {
    let mut plan = plan();
    past_preflight(&mut plan);
    let effects = advance(&mut plan, LEADER, &seen("1.0.0", &[]), 0);
    assert_eq!(plan.phase, Phase::Rolling);
    assert_eq!(effects, vec![Effect::Restart { node_id: 2, version: "2.0.0".into() }]);
}

#[test]
fn preflight_waits_for_a_passing_problem_and_refuses_a_lasting_or_fatal_one() {
    let cases: Vec<(Observation, &str, bool)> = vec![
        (Observation { reachable: false, ..healthy("1.0.0", 100) }, "not reachable", true),
        (
            Observation { figures: Figures { ready: false, ..figures("1.0.0", 100) }, ..healthy("1.0.0", 100) },
            "not ready",
            true,
        ),
        (healthy("1.0.0", 100 - MAX_LAG - 1), "not caught up", true),
        (Observation { on_probation: true, ..healthy("1.0.0", 100) }, "proving a release", true),
        (Observation { hash_matches: Some(false), ..healthy("1.0.0", 100) }, "state hash differs", false),
        (Observation { free_bytes: 1, ..healthy("1.0.0", 100) }, "bytes free", false),
    ];
    for (bad, expected, transient) in cases {
        let mut plan = plan();
        let effects = advance(&mut plan, LEADER, &seen("1.0.0", &[(3, bad.clone())]), 5);
        assert!(effects.is_empty(), "{expected}: nothing was touched, so no diagnostics: {effects:?}");
        if transient {
            assert_eq!(plan.phase, Phase::Preflight, "{expected}: waited for");
            assert!(plan.step(3).unwrap().message.contains(expected), "{:?}", plan.step(3));
            let later = 5 + super::advance::PREFLIGHT_PATIENCE_MS + 1;
            assert!(advance(&mut plan, LEADER, &seen("1.0.0", &[(3, bad)]), later).is_empty());
        }
        assert_eq!(plan.phase, Phase::Failed, "{expected}");
        let stop = plan.stop.as_ref().unwrap();
        assert_eq!(stop.trigger, "preflight");
        assert!(stop.message.contains("node 3") && stop.message.contains(expected), "{}", stop.message);
    }
    // A problem that passes lets preflight go on.
    let mut plan = plan();
    let unready = Observation { figures: Figures { ready: false, ..figures("1.0.0", 100) }, ..healthy("1.0.0", 100) };
    advance(&mut plan, LEADER, &seen("1.0.0", &[(3, unready)]), 5);
    let effects = advance(&mut plan, LEADER, &seen("1.0.0", &[]), 1_000);
    assert!(matches!(effects.as_slice(), [Effect::Stage { .. }]), "{effects:?}");
    assert_eq!(plan.step(3).unwrap().problem_since_ms, None);
}

#[test]
fn a_full_upgrade_moves_leadership_before_the_leaders_turn() {
    let mut plan = plan();
    past_preflight(&mut plan);
    let mut releases = all_on("1.0.0");
    upgrade_step(&mut plan, 2, &mut releases, 0);
    // Window over: node 2 done and node 3's restart asked in the same turn.
    assert_eq!(
        advance(&mut plan, LEADER, &view(&releases), 1_100),
        vec![Effect::Restart { node_id: 3, version: "2.0.0".into() }]
    );
    assert_eq!(plan.step(2).unwrap().state, StepState::Done);
    releases.insert(3, "2.0.0".into());
    assert!(advance(&mut plan, LEADER, &view(&releases), 1_200).is_empty());
    // Node 3's window passes; the leader's turn starts with a transfer to an upgraded node.
    let effects = advance(&mut plan, LEADER, &view(&releases), 2_300);
    assert_eq!(effects, vec![Effect::TransferLeadership { to: 3 }]);
    assert_eq!(plan.step(1).unwrap().state, StepState::Pending, "the old leader waits for the transfer");
    // Node 3 now leads and drives: the old leader restarts as a follower.
    assert_eq!(
        advance(&mut plan, 3, &view(&releases), 2_400),
        vec![Effect::Restart { node_id: 1, version: "2.0.0".into() }]
    );
    releases.insert(1, "2.0.0".into());
    assert!(advance(&mut plan, 3, &view(&releases), 2_500).is_empty());
    assert!(advance(&mut plan, 3, &view(&releases), 3_600).is_empty());
    assert_eq!(plan.phase, Phase::Completed);
    assert!(plan.nodes.iter().all(|s| s.state == StepState::Done));
    assert!(plan.events.last().unwrap().message.contains("completed"));
}

#[test]
fn a_leader_that_lost_the_leadership_on_its_own_restarts_without_a_transfer_and_the_log_says_why() {
    let mut plan = plan();
    past_preflight(&mut plan);
    let mut releases = all_on("1.0.0");
    upgrade_step(&mut plan, 2, &mut releases, 0);
    advance(&mut plan, LEADER, &view(&releases), 1_100);
    releases.insert(3, "2.0.0".into());
    assert!(advance(&mut plan, LEADER, &view(&releases), 1_200).is_empty());
    // An election made node 2 the leader before the planned leader's turn.
    let effects = advance(&mut plan, 2, &view(&releases), 2_300);
    assert_eq!(effects, vec![Effect::Restart { node_id: LEADER, version: "2.0.0".into() }]);
    let said: Vec<&str> =
        plan.events.iter().filter(|e| e.node_id == Some(LEADER)).map(|e| e.message.as_str()).collect();
    assert!(!said.iter().any(|m| m.contains("moving leadership")), "{said:?}");
    let moved = said.iter().position(|m| m.contains("moved to node 2 on its own")).expect("the move is logged");
    let restart = said.iter().position(|m| m.contains("restarting into")).unwrap();
    assert!(moved < restart, "{said:?}");
}

#[test]
fn a_node_that_returns_on_its_own_stops_the_rollout_and_nothing_else_moves() {
    let mut plan = plan();
    past_preflight(&mut plan);
    advance(&mut plan, LEADER, &seen("1.0.0", &[]), 0);
    let returned =
        Observation { returned: Some(("2.0.0".into(), "not ready within 60 s".into())), ..healthy("1.0.0", 100) };
    let effects = advance(&mut plan, LEADER, &seen("1.0.0", &[(2, returned.clone())]), 50);
    assert_eq!(effects, vec![Effect::Diagnostics { node_id: 2 }]);
    assert_eq!(plan.phase, Phase::RollingBack);
    let stop = plan.stop.clone().unwrap();
    assert_eq!((stop.trigger.as_str(), stop.node_id), ("returned_on_its_own", Some(2)));
    assert_eq!(stop.measured["attempted"], "2.0.0");
    // It is back on its release: the rollback only waits for it, and then ends.
    assert!(advance(&mut plan, LEADER, &seen("1.0.0", &[(2, returned.clone())]), 60).is_empty());
    assert!(advance(&mut plan, LEADER, &seen("1.0.0", &[(2, returned)]), 70).is_empty());
    assert_eq!(plan.phase, Phase::RolledBack);
    assert_eq!(plan.step(2).unwrap().state, StepState::Returned);
    assert_eq!(plan.step(3).unwrap().state, StepState::Pending, "node 3 was never touched");
}

#[test]
fn a_step_that_never_reports_the_target_times_out() {
    let mut plan = plan();
    past_preflight(&mut plan);
    advance(&mut plan, LEADER, &seen("1.0.0", &[]), 0);
    let gone = Observation { reachable: false, ..Observation::default() };
    assert!(advance(&mut plan, LEADER, &seen("1.0.0", &[(2, gone.clone())]), 9_000).is_empty());
    let effects = advance(&mut plan, LEADER, &seen("1.0.0", &[(2, gone)]), 10_001);
    assert_eq!(effects, vec![Effect::Diagnostics { node_id: 2 }]);
    assert_eq!(plan.stop.as_ref().unwrap().trigger, "step_timeout");
    // Unreachable and not on its release: the rollback asks it back.
    let effects = advance(&mut plan, LEADER, &seen("1.0.0", &[(2, healthy("2.0.0", 100))]), 10_100);
    assert_eq!(effects, vec![Effect::Restart { node_id: 2, version: "1.0.0".into() }]);
    assert_eq!(plan.step(2).unwrap().state, StepState::Returning);
}

/// The triggers of the observation window, each on node 2 just after its window opened.
#[test]
fn each_trigger_of_the_window_stops_the_rollout_with_its_measurements() {
    let bad = |f: Figures| Observation { figures: f, ..healthy("2.0.0", 100) };
    let cases: Vec<(Observation, &str)> = vec![
        (Observation { reachable: false, ..Observation::default() }, "crash_loop"),
        (healthy("1.0.0", 100), "crash_loop"),
        (Observation { hash_matches: Some(false), ..healthy("2.0.0", 100) }, "hash_mismatch"),
        (bad(Figures { api_requests: 100, api_errors: 20, ..figures("2.0.0", 100) }), "api_error_rate"),
        // Baseline 1000 ppm (10 of 10 000); 3 000 drops of 10 000 more packets is 300 000 ppm.
        (bad(Figures { packets: 20_000, drops: 3_010, ..figures("2.0.0", 100) }), "drop_rate"),
    ];
    for (observation, trigger) in cases {
        let mut plan = plan();
        past_preflight(&mut plan);
        let mut releases = all_on("1.0.0");
        upgrade_step(&mut plan, 2, &mut releases, 0);
        let effects = advance(&mut plan, LEADER, &seen("1.0.0", &[(2, observation)]), 600);
        assert_eq!(effects, vec![Effect::Diagnostics { node_id: 2 }], "{trigger}");
        let stop = plan.stop.as_ref().unwrap();
        assert_eq!(stop.trigger, trigger);
        assert_eq!(plan.phase, Phase::RollingBack);
        assert_eq!(plan.step(2).unwrap().state, StepState::Failed);
        if trigger == "drop_rate" {
            assert_eq!(stop.measured["baseline_ppm"], "1000");
            assert_eq!(stop.measured["drop_ppm"], "300000");
        }
    }
}

#[test]
fn a_not_ready_blip_in_the_window_passes_and_a_lasting_one_fails() {
    let mut plan = plan();
    past_preflight(&mut plan);
    let mut releases = all_on("1.0.0");
    upgrade_step(&mut plan, 2, &mut releases, 0);
    let unready = Observation { figures: Figures { ready: false, ..figures("2.0.0", 100) }, ..healthy("2.0.0", 100) };
    assert!(advance(&mut plan, LEADER, &seen("1.0.0", &[(2, unready.clone())]), 600).is_empty());
    // The window is over, but it does not end on a node that is not ready.
    assert!(advance(&mut plan, LEADER, &seen("1.0.0", &[(2, unready.clone())]), 1_500).is_empty());
    assert_eq!(plan.step(2).unwrap().state, StepState::Observing);
    assert!(plan.stop.is_none());
    let effects = advance(&mut plan, LEADER, &seen("1.0.0", &[(2, unready)]), 600 + super::advance::NOT_READY_MS);
    assert_eq!(effects, vec![Effect::Diagnostics { node_id: 2 }]);
    let stop = plan.stop.as_ref().unwrap();
    assert_eq!(stop.trigger, "not_ready");
    assert_eq!(stop.measured["not_ready_ms"], super::advance::NOT_READY_MS.to_string());

    // A blip that passes: the window ends and the next node goes.
    let mut plan = self::plan();
    past_preflight(&mut plan);
    let mut releases = all_on("1.0.0");
    upgrade_step(&mut plan, 2, &mut releases, 0);
    let unready = Observation { figures: Figures { ready: false, ..figures("2.0.0", 100) }, ..healthy("2.0.0", 100) };
    advance(&mut plan, LEADER, &seen("1.0.0", &[(2, unready)]), 600);
    let effects = advance(&mut plan, LEADER, &seen("1.0.0", &[(2, healthy("2.0.0", 100))]), 1_100);
    assert_eq!(effects, vec![Effect::Restart { node_id: 3, version: "2.0.0".into() }]);
}

#[test]
fn a_drop_rate_within_twice_the_baseline_and_few_api_errors_pass() {
    let mut plan = plan();
    past_preflight(&mut plan);
    let mut releases = all_on("1.0.0");
    upgrade_step(&mut plan, 2, &mut releases, 0);
    // 15 drops in 10 000 packets (1500 ppm, under 2 x 1000), 5 % API errors.
    let fine = Figures { packets: 20_000, drops: 25, api_requests: 100, api_errors: 5, ..figures("2.0.0", 100) };
    let observation = Observation { figures: fine, ..healthy("2.0.0", 100) };
    let effects = advance(&mut plan, LEADER, &seen("1.0.0", &[(2, observation)]), 1_100);
    assert_eq!(effects, vec![Effect::Restart { node_id: 3, version: "2.0.0".into() }]);
    assert!(plan.stop.is_none());
}

#[test]
fn an_applied_index_that_stops_while_the_leader_moves_on_is_not_progressing() {
    let mut plan = plan();
    past_preflight(&mut plan);
    let mut releases = all_on("1.0.0");
    upgrade_step(&mut plan, 2, &mut releases, 0);
    let leader = healthy("1.0.0", 100 + MAX_LAG + 10);
    advance(&mut plan, LEADER, &seen("1.0.0", &[(1, leader), (2, healthy("2.0.0", 100))]), 700);
    let stop = plan.stop.as_ref().unwrap();
    assert_eq!(stop.trigger, "not_progressing");
    assert_eq!(stop.measured["applied_index"], "100");
}

#[test]
fn a_failure_on_the_second_node_returns_the_nodes_in_reverse_order() {
    let mut plan = plan();
    past_preflight(&mut plan);
    let mut releases = all_on("1.0.0");
    upgrade_step(&mut plan, 2, &mut releases, 0);
    advance(&mut plan, LEADER, &view(&releases), 1_100);
    releases.insert(3, "2.0.0".into());
    advance(&mut plan, LEADER, &view(&releases), 1_200);
    // Node 3 goes unready in its window, and stays so.
    let mut seen = view(&releases);
    seen.get_mut(&3).unwrap().figures.ready = false;
    advance(&mut plan, LEADER, &seen, 1_250);
    advance(&mut plan, LEADER, &seen, 1_300 + super::advance::NOT_READY_MS);
    assert_eq!(plan.phase, Phase::RollingBack);
    // Reverse order: node 3 (the last touched) first, then node 2.
    assert_eq!(
        advance(&mut plan, LEADER, &view(&releases), 1_400),
        vec![Effect::Restart { node_id: 3, version: "1.0.0".into() }]
    );
    assert!(advance(&mut plan, LEADER, &view(&releases), 1_500).is_empty(), "waits for node 3");
    releases.insert(3, "1.0.0".into());
    assert_eq!(
        advance(&mut plan, LEADER, &view(&releases), 1_600),
        vec![Effect::Restart { node_id: 2, version: "1.0.0".into() }]
    );
    releases.insert(2, "1.0.0".into());
    assert!(advance(&mut plan, LEADER, &view(&releases), 1_700).is_empty());
    assert_eq!(plan.phase, Phase::RolledBack);
    let back: Vec<&str> =
        plan.events.iter().filter(|e| e.message.starts_with("back on")).map(|e| e.message.as_str()).collect();
    assert_eq!(back.len(), 2);
    let first_back = plan.events.iter().find(|e| e.message.starts_with("back on")).unwrap();
    assert_eq!(first_back.node_id, Some(3));
}

#[test]
fn the_leader_hands_over_leadership_before_it_returns() {
    let mut plan = plan();
    // Every node was upgraded, then the leader's own step failed.
    past_preflight(&mut plan);
    for s in plan.nodes.iter_mut() {
        s.state = if s.node_id == LEADER { StepState::Observing } else { StepState::Done };
    }
    plan.phase = Phase::Rolling;
    plan.stop(
        Stop { node_id: Some(LEADER), trigger: "not_ready".into(), message: "x".into(), measured: BTreeMap::new() },
        0,
    );
    let releases: BTreeMap<u64, Observation> = (1..=3).map(|n| (n, healthy("2.0.0", 100))).collect();
    // The leader is last in the order, so first in reverse: it hands over first.
    let effects = advance(&mut plan, LEADER, &releases, 10);
    assert!(matches!(effects.as_slice(), [Effect::TransferLeadership { to }] if *to != LEADER), "{effects:?}");
    // The new leader (node 3) returns node 1.
    assert_eq!(advance(&mut plan, 3, &releases, 20), vec![Effect::Restart { node_id: 1, version: "1.0.0".into() }]);
}

#[test]
fn a_stop_after_the_end_or_during_a_rollback_does_nothing() {
    let mut plan = plan();
    past_preflight(&mut plan);
    advance(&mut plan, LEADER, &seen("1.0.0", &[]), 0);
    let abort =
        || Stop { node_id: None, trigger: "aborted".into(), message: "by admin".into(), measured: BTreeMap::new() };
    assert!(plan.stop(abort(), 10).is_empty());
    assert_eq!(plan.phase, Phase::RollingBack, "node 2 was touched");
    let events = plan.events.len();
    assert!(plan.stop(abort(), 20).is_empty());
    assert_eq!(plan.events.len(), events, "a second stop is ignored");
    assert_eq!(plan.stop.as_ref().unwrap().trigger, "aborted");
}

#[test]
fn a_single_node_plan_restarts_the_leader_itself() {
    let members: BTreeMap<u64, Figures> = [(7, figures("1.0.0", 5))].into();
    let mut plan = Plan::new("u".into(), Kind::Upgrade, target(), 7, 7, &members, gates(), "admin", 0);
    let seen: BTreeMap<u64, Observation> = [(7, healthy("1.0.0", 5))].into();
    assert_eq!(advance(&mut plan, 7, &seen, 0), vec![Effect::Stage { node_id: 7 }]);
    plan.nodes[0].staged = true;
    assert_eq!(advance(&mut plan, 7, &seen, 0), vec![Effect::Restart { node_id: 7, version: "2.0.0".into() }]);
}

#[test]
fn the_event_log_is_bounded_and_plans_round_trip_as_json() {
    let mut plan = plan();
    for i in 0..(MAX_EVENTS as u64 + 50) {
        plan.event(i, None, format!("event {i}"));
    }
    assert_eq!(plan.events.len(), MAX_EVENTS);
    assert_eq!(plan.events.last().unwrap().message, format!("event {}", MAX_EVENTS + 49));
    let back: Plan = serde_json::from_value(serde_json::to_value(&plan).unwrap()).unwrap();
    assert_eq!(back, plan);
}
