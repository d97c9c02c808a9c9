//! Policy in the engine: hot swap with lazy re-check, audit mode, and hostname rules fed
//! by the dynamic allowlist.

mod common;

use common::*;
use sluice_dataplane::counters::{Counter, DropReason};
use sluice_dataplane::engine::{Action, PortId};
use sluice_dataplane::testing::{inspect, ACK, SYN};

const WEB_ONLY_80: &str = r#"{ "default_action": "deny", "source_groups": [
  { "id": "clients", "priority": 10, "sources": { "cidrs": ["10.10.0.0/24"] },
    "rules": [ { "id": "web", "action": "allow", "match": { "proto": "tcp", "dst_ports": [80], "dst_cidrs": ["198.51.100.0/24"] } } ] } ] }"#;

#[test]
fn a_policy_swap_drops_flows_it_no_longer_allows_and_keeps_the_rest() {
    let mut lab = Lab::resolved();
    for dport in [443u16, 80] {
        assert_eq!(
            lab.send(PortId::Internal, &tcp(CLIENT, WEB, 40000 + dport, dport, SYN)),
            Action::Forward(PortId::External)
        );
    }
    let nat443 = inspect(&lab.out(PortId::External)[0]).unwrap().tcp().sport;
    let generation = lab.publish(WEB_ONLY_80);
    // The next burst picks the new policy up; the 443 flow is re-checked and evicted.
    assert_eq!(lab.send(PortId::Internal, &tcp(CLIENT, WEB, 40443, 443, ACK)), Action::Drop(DropReason::PolicyRevoked));
    assert_eq!(lab.engine().policy_generation(), generation);
    assert_eq!(lab.counter(Counter::FlowsEvicted), 1);
    assert_eq!(lab.send(PortId::External, &tcp_in(WEB, nat443, 443, ACK)), Action::Drop(DropReason::InboundNoFlow));
    // The port-80 flow is still allowed and keeps working.
    assert_eq!(lab.send(PortId::Internal, &tcp(CLIENT, WEB, 40080, 80, ACK)), Action::Forward(PortId::External));
    // New flows follow the new policy.
    assert_eq!(lab.send(PortId::Internal, &tcp(CLIENT, WEB, 40999, 443, SYN)), Action::Drop(DropReason::PolicyDenied));
}

#[test]
fn a_revoked_flow_is_dropped_from_the_outside_too() {
    let mut lab = Lab::resolved();
    lab.send(PortId::Internal, &tcp(CLIENT, WEB, 40000, 443, SYN));
    let nat = inspect(&lab.out(PortId::External)[0]).unwrap().tcp().sport;
    lab.publish(WEB_ONLY_80);
    assert_eq!(lab.send(PortId::External, &tcp_in(WEB, nat, 443, SYN | ACK)), Action::Drop(DropReason::PolicyRevoked));
    assert_eq!(lab.engine().flows().len(), 0);
}

#[test]
fn audit_mode_lets_denied_traffic_pass_and_counts_it() {
    let audit = POLICY.replace("\"priority\": 10,", "\"priority\": 10, \"mode\": \"audit\",");
    let mut lab = Lab::with(config(), &audit);
    lab.resolve();
    assert_eq!(lab.send(PortId::Internal, &tcp(CLIENT, BLOCKED, 40000, 443, SYN)), Action::Forward(PortId::External));
    assert_eq!(lab.counter(Counter::AuditWouldDeny), 1);
    assert_eq!(lab.dropped(DropReason::PolicyDenied), 0);
}

#[test]
fn hostname_rules_pass_only_learned_ips_on_their_ports_until_expiry() {
    let mut lab = Lab::resolved();
    // Nothing learned yet: denied.
    assert_eq!(
        lab.send(PortId::Internal, &tcp(CLIENT, API_IP, 40000, 443, SYN)),
        Action::Drop(DropReason::PolicyDenied)
    );
    lab.learn(CLIENT, "api.example.com", API_IP, 30 * SEC);
    assert_eq!(lab.send(PortId::Internal, &tcp(CLIENT, API_IP, 40001, 443, SYN)), Action::Forward(PortId::External));
    let nat = inspect(&lab.out(PortId::External)[0]).unwrap().tcp().sport;
    let synack = sluice_dataplane::testing::FrameBuilder::tcp(GW_MAC, NODE_OUT_MAC, API_IP, NODE_OUT, 443, nat)
        .flags(SYN | ACK)
        .build();
    assert_eq!(lab.send(PortId::External, &synack), Action::Forward(PortId::Internal));
    assert_eq!(lab.send(PortId::Internal, &tcp(CLIENT, API_IP, 40001, 443, ACK)), Action::Forward(PortId::External));
    // Only on the rule's port, only to the learned address.
    assert_eq!(
        lab.send(PortId::Internal, &tcp(CLIENT, API_IP, 40002, 80, SYN)),
        Action::Drop(DropReason::PolicyDenied)
    );
    assert_eq!(
        lab.send(PortId::Internal, &tcp(CLIENT, ip(192, 0, 2, 51), 40003, 443, SYN)),
        Action::Drop(DropReason::PolicyDenied)
    );
    lab.drain_all();
    // After the TTL the live flow keeps its entry alive (design: entries stay alive while a
    // flow uses them), also across a policy swap that keeps the rule.
    lab.advance(31 * SEC);
    assert_eq!(lab.send(PortId::Internal, &tcp(CLIENT, API_IP, 40001, 443, ACK)), Action::Forward(PortId::External));
    lab.publish(&POLICY.replace("\"id\": \"ping\"", "\"id\": \"ping2\""));
    assert_eq!(lab.send(PortId::Internal, &tcp(CLIENT, API_IP, 40001, 443, ACK)), Action::Forward(PortId::External));
    assert_eq!(lab.engine().allowlist().unwrap().len(), 1, "pinned entry kept");
    // Once the flow is gone, the expired entry goes too and new flows are refused.
    lab.send(PortId::Internal, &tcp(CLIENT, API_IP, 40001, 443, sluice_dataplane::testing::RST));
    lab.advance(lab.engine().config().timeouts.tcp_linger + 2 * (1 << sluice_dataplane::flow::TICK_SHIFT));
    lab.sweep_all();
    assert_eq!(lab.engine().flows().len(), 0);
    for _ in 0..64 {
        lab.node.poll(lab.now);
    }
    assert_eq!(lab.engine().allowlist().unwrap().len(), 0, "unpinned expired entry removed");
    assert_eq!(
        lab.send(PortId::Internal, &tcp(CLIENT, API_IP, 40004, 443, SYN)),
        Action::Drop(DropReason::PolicyDenied)
    );
}

#[test]
fn an_unpinned_learned_entry_is_removed_after_expiry() {
    let mut lab = Lab::resolved();
    lab.learn(CLIENT, "api.example.com", API_IP, 5 * SEC);
    assert_eq!(lab.engine().allowlist().unwrap().len(), 1);
    lab.advance(6 * SEC);
    for _ in 0..64 {
        lab.node.poll(lab.now);
    }
    assert_eq!(lab.engine().allowlist().unwrap().len(), 0);
    // The operator sees it in the counters: one entry learned, one expired, none left.
    let c = lab.engine().counters();
    assert_eq!(c.get(Counter::AllowlistLearned), 1);
    assert_eq!(c.get(Counter::AllowlistExpired), 1);
    assert_eq!(c.get(Counter::AllowlistEntries), 0);
    assert_eq!(c.get(Counter::AllowlistFullDrops), 0);
}
