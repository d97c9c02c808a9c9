//! `evaluate` on hand-picked flows: ordering, protocols, learned addresses, audit, edges.

mod common;

use std::collections::HashSet;

use common::{addr, compiled, icmp, ip, tcp, udp, EXAMPLE};
use sluice_policy::{Action, Cause, FlowQuery, LearnedLookup, NothingLearned, RuleKey, Verdict};

/// A lookup holding explicit (rule, address) pairs, like the dataplane's allowlist.
#[derive(Default)]
struct Learned(HashSet<(RuleKey, u32)>);

impl Learned {
    fn with(mut self, key: RuleKey, dst: &str) -> Self {
        self.0.insert((key, addr(dst)));
        self
    }
}

impl LearnedLookup for Learned {
    fn is_learned(&self, rule: RuleKey, dst: u32) -> bool {
        self.0.contains(&(rule, dst))
    }
}

fn api_key() -> RuleKey {
    RuleKey::for_rule("apps", "api", &["api.example.com", "*.cdn.example.com"])
}

#[test]
fn example_policy_decides_each_rule() {
    let policy = compiled(EXAMPLE);
    let learned = Learned::default().with(api_key(), "93.184.216.34");

    let api = policy.evaluate(&tcp("10.10.0.9", "93.184.216.34", 443), &learned);
    assert_eq!(
        api,
        Verdict {
            action: Action::Allow,
            audit_would_deny: false,
            cause: Cause::Rule { group: 0, rule: 0 },
            learned_via: Some(api_key()),
        }
    );
    // Learned for the rule, but only on the rule's port.
    let other_port = policy.evaluate(&tcp("10.10.0.9", "93.184.216.34", 80), &learned);
    assert_eq!(other_port.cause, Cause::GroupDefault { group: 0 });
    // Another address was not learned.
    assert!(!policy.evaluate(&tcp("10.10.0.9", "93.184.216.35", 443), &learned).allowed());
    // Nothing learned: hostname rules never match.
    assert!(!policy.evaluate(&tcp("10.10.0.9", "93.184.216.34", 443), &NothingLearned).allowed());

    let ntp = policy.evaluate(&udp("10.10.0.9", "203.0.113.200", 123), &NothingLearned);
    assert_eq!((ntp.action, ntp.cause, ntp.learned_via), (Action::Allow, Cause::Rule { group: 0, rule: 1 }, None));
    assert!(!policy.evaluate(&udp("10.10.0.9", "203.0.114.1", 123), &NothingLearned).allowed());
    assert!(!policy.evaluate(&tcp("10.10.0.9", "203.0.113.200", 123), &NothingLearned).allowed());

    let ping = policy.evaluate(&icmp("10.10.0.9", "198.51.100.1", 8), &NothingLearned);
    assert_eq!(ping.cause, Cause::Rule { group: 0, rule: 2 });
    assert!(!policy.evaluate(&icmp("10.10.0.9", "198.51.100.1", 0), &NothingLearned).allowed());

    let outsider = policy.evaluate(&tcp("10.10.1.9", "93.184.216.34", 443), &learned);
    assert_eq!((outsider.action, outsider.cause), (Action::Deny, Cause::DocumentDefault));
}

#[test]
fn groups_are_tried_by_priority_not_document_order() {
    let policy = compiled(
        r#"{"source_groups":[
          {"id":"late","priority":50,"sources":{"cidrs":["10.0.0.0/8"]},"default_action":"allow"},
          {"id":"early","priority":2,"sources":{"cidrs":["10.1.0.0/16"]},
           "rules":[{"id":"ssh","action":"deny","match":{"proto":"tcp","dst_ports":[22]}}]}
        ]}"#,
    );
    let ssh = policy.evaluate(&tcp("10.1.2.3", "192.0.2.1", 22), &NothingLearned);
    assert_eq!((ssh.action, ssh.cause), (Action::Deny, Cause::Rule { group: 1, rule: 0 }));
    // `early` has no default, so other traffic falls through to `late`.
    let web = policy.evaluate(&tcp("10.1.2.3", "192.0.2.1", 443), &NothingLearned);
    assert_eq!((web.action, web.cause), (Action::Allow, Cause::GroupDefault { group: 0 }));
    // Outside `early`'s sources only `late` applies.
    let ssh_elsewhere = policy.evaluate(&tcp("10.2.0.1", "192.0.2.1", 22), &NothingLearned);
    assert_eq!(ssh_elsewhere.cause, Cause::GroupDefault { group: 0 });
}

#[test]
fn proto_any_matches_every_protocol_and_port() {
    let policy = compiled(
        r#"{"source_groups":[{"id":"g","priority":1,"sources":{"cidrs":["0.0.0.0/0"]},
          "rules":[{"id":"lan","action":"allow","match":{"proto":"any","dst_cidrs":["192.168.0.0/16"]}}]}]}"#,
    );
    for proto in [0u8, 1, 6, 17, 47, 50, 255] {
        let flow = FlowQuery::new(ip("10.0.0.1"), ip("192.168.7.7"), proto, 0, 0);
        assert!(policy.evaluate(&flow, &NothingLearned).allowed(), "proto {proto}");
    }
    assert!(policy.evaluate(&tcp("10.0.0.1", "192.168.0.1", 65535), &NothingLearned).allowed());
    assert!(!policy.evaluate(&tcp("10.0.0.1", "192.169.0.1", 1), &NothingLearned).allowed());
}

#[test]
fn audit_mode_reports_would_deny_for_rules_defaults_and_hostnames() {
    let policy = compiled(
        r#"{"source_groups":[{"id":"trial","priority":1,"mode":"audit","sources":{"cidrs":["10.0.0.0/8"]},
          "rules":[
            {"id":"no-tracker","action":"deny","match":{"hostnames":["tracker.example.net"]}},
            {"id":"no-ssh","action":"deny","match":{"proto":"tcp","dst_ports":[22]}}
          ]}]}"#,
    );
    let tracker_key = RuleKey::for_rule("trial", "no-tracker", &["tracker.example.net"]);
    let learned = Learned::default().with(tracker_key, "192.0.2.66");
    let hostname_deny = policy.evaluate(&tcp("10.0.0.1", "192.0.2.66", 443), &learned);
    assert_eq!(
        hostname_deny,
        Verdict {
            action: Action::Allow,
            audit_would_deny: true,
            cause: Cause::Rule { group: 0, rule: 0 },
            learned_via: None,
        }
    );
    let ssh = policy.evaluate(&tcp("10.0.0.1", "192.0.2.1", 22), &NothingLearned);
    assert_eq!((ssh.action, ssh.audit_would_deny, ssh.cause), (Action::Allow, true, Cause::Rule { group: 0, rule: 1 }));
    let other = policy.evaluate(&udp("10.0.0.1", "192.0.2.1", 53), &NothingLearned);
    assert_eq!((other.action, other.audit_would_deny, other.cause), (Action::Allow, true, Cause::DocumentDefault));
}

#[test]
fn enforced_hostname_deny_has_no_learned_via() {
    let policy = compiled(
        r#"{"default_action":"allow","source_groups":[{"id":"g","priority":1,"sources":{"cidrs":["10.0.0.0/8"]},
          "rules":[{"id":"block","action":"deny","match":{"hostnames":["*.example.net"]}}]}]}"#,
    );
    let key = RuleKey::for_rule("g", "block", &["*.example.net"]);
    let verdict = policy.evaluate(&tcp("10.0.0.1", "192.0.2.66", 443), &Learned::default().with(key, "192.0.2.66"));
    assert_eq!((verdict.action, verdict.learned_via), (Action::Deny, None));
    let allowed = policy.evaluate(&tcp("10.0.0.1", "192.0.2.66", 443), &NothingLearned);
    assert_eq!((allowed.action, allowed.audit_would_deny), (Action::Allow, false));
}

#[test]
fn address_space_edges_and_overlapping_sources() {
    let policy = compiled(
        r#"{"source_groups":[
          {"id":"top","priority":1,"sources":{"cidrs":["255.255.255.255/32","0.0.0.0/32"]},"default_action":"allow"},
          {"id":"overlap","priority":2,"sources":{"cidrs":["10.0.0.0/8","10.0.0.0/16","10.0.0.128/25"]},
           "rules":[{"id":"edge","action":"allow","match":{"proto":"udp","dst_ports":[65535,"1-1"],
             "dst_cidrs":["255.255.255.254/31","0.0.0.0/32"]}}],
           "default_action":"deny"}
        ]}"#,
    );
    assert!(policy.evaluate(&tcp("255.255.255.255", "1.1.1.1", 1), &NothingLearned).allowed());
    assert!(policy.evaluate(&tcp("0.0.0.0", "1.1.1.1", 1), &NothingLearned).allowed());
    assert_eq!(policy.evaluate(&tcp("0.0.0.1", "1.1.1.1", 1), &NothingLearned).cause, Cause::DocumentDefault);
    for (dst, port, allowed) in [
        ("255.255.255.255", 65535, true),
        ("255.255.255.254", 1, true),
        ("0.0.0.0", 65535, true),
        ("0.0.0.1", 65535, false),
        ("255.255.255.253", 65535, false),
        ("255.255.255.255", 65534, false),
        ("255.255.255.255", 2, false),
    ] {
        let verdict = policy.evaluate(&udp("10.0.0.200", dst, port), &NothingLearned);
        assert_eq!(verdict.allowed(), allowed, "{dst}:{port}");
        let expected_cause = if allowed { Cause::Rule { group: 1, rule: 0 } } else { Cause::GroupDefault { group: 1 } };
        assert_eq!(verdict.cause, expected_cause, "{dst}:{port}");
    }
}

#[test]
fn a_catch_all_rule_hides_the_rules_after_it() {
    let policy = compiled(
        r#"{"source_groups":[{"id":"g","priority":1,"sources":{"cidrs":["0.0.0.0/0"]},"rules":[
          {"id":"web","action":"allow","match":{"proto":"tcp","dst_ports":[443]}},
          {"id":"tcp-off","action":"deny","match":{"proto":"tcp"}},
          {"id":"never","action":"allow","match":{"proto":"tcp","dst_ports":[22]}}]}]}"#,
    );
    assert_eq!(
        policy.evaluate(&tcp("1.1.1.1", "2.2.2.2", 443), &NothingLearned).cause,
        Cause::Rule { group: 0, rule: 0 }
    );
    assert_eq!(
        policy.evaluate(&tcp("1.1.1.1", "2.2.2.2", 22), &NothingLearned).cause,
        Cause::Rule { group: 0, rule: 1 }
    );
    assert_eq!(policy.evaluate(&udp("1.1.1.1", "2.2.2.2", 22), &NothingLearned).cause, Cause::DocumentDefault);
}

#[test]
fn describe_and_id_lookups() {
    let policy = compiled(EXAMPLE);
    assert_eq!(policy.describe(Cause::Rule { group: 0, rule: 0 }), "rule apps/api");
    assert_eq!(policy.describe(Cause::GroupDefault { group: 0 }), "default of group apps");
    assert_eq!(policy.describe(Cause::DocumentDefault), "document default");
    // Causes kept from an older policy version may point past this one's groups and rules.
    assert_eq!(policy.group_id(7), "(unknown)");
    assert_eq!(policy.rule_id(0, 99), "(unknown)");
    assert_eq!(policy.describe(Cause::Rule { group: 3, rule: 1 }), "rule (unknown)/(unknown)");
}
