//! `dns_decision`: which names a client may resolve and which rules learn the answers.

mod common;

use common::{addr, compiled};
use sluice_policy::{Cause, CompiledPolicy, DnsDecision, RuleKey};

const POLICY: &str = r#"{
  "source_groups": [
    { "id": "apps", "priority": 10, "sources": { "cidrs": ["10.10.0.0/24"] },
      "rules": [
        { "id": "no-ads", "action": "deny", "match": { "hostnames": ["ads.example.com", "*.ads.example.com"] } },
        { "id": "api", "action": "allow",
          "match": { "hostnames": ["api.example.com", "*.example.com"], "proto": "tcp", "dst_ports": [443] } },
        { "id": "api-alt", "action": "allow", "match": { "hostnames": ["*.example.com"], "proto": "tcp", "dst_ports": [8443] } },
        { "id": "web", "action": "allow", "match": { "proto": "tcp", "dst_ports": [80] } },
        { "id": "no-legacy", "action": "deny", "match": { "hostnames": ["legacy.example.com"] } },
        { "id": "legacy-late", "action": "allow", "match": { "hostnames": ["*.example.com"] } },
        { "id": "svc", "action": "allow", "match": { "hostnames": ["_ldap._tcp.corp.example.org"] } }
      ],
      "default_action": "allow" },
    { "id": "fallback", "priority": 20, "sources": { "cidrs": ["10.0.0.0/8"] },
      "rules": [ { "id": "updates", "action": "allow", "match": { "hostnames": ["*.updates.example.net"] } } ] },
    { "id": "trial", "priority": 5, "mode": "audit", "sources": { "cidrs": ["10.30.0.0/16"] },
      "rules": [
        { "id": "no-social", "action": "deny", "match": { "hostnames": ["social.example.com"] } },
        { "id": "docs", "action": "allow", "match": { "hostnames": ["docs.example.com"] } }
      ] }
  ]
}"#;

fn key(group: &str, rule: &str, names: &[&str]) -> RuleKey {
    RuleKey::for_rule(group, rule, names)
}

fn api() -> RuleKey {
    key("apps", "api", &["api.example.com", "*.example.com"])
}
fn api_alt() -> RuleKey {
    key("apps", "api-alt", &["*.example.com"])
}
fn legacy_late() -> RuleKey {
    key("apps", "legacy-late", &["*.example.com"])
}

fn decide(policy: &CompiledPolicy, client: &str, qname: &str) -> DnsDecision {
    policy.dns_decision(addr(client), qname)
}

fn allowed(learn_for: Vec<RuleKey>, group: u16, rule: u16) -> DnsDecision {
    DnsDecision { allowed: true, audit_would_deny: false, learn_for, cause: Some(Cause::Rule { group, rule }) }
}

fn denied(group: u16, rule: u16) -> DnsDecision {
    DnsDecision { allowed: false, audit_would_deny: false, learn_for: vec![], cause: Some(Cause::Rule { group, rule }) }
}

#[test]
fn exact_name_learns_for_every_later_matching_allow_rule() {
    let policy = compiled(POLICY);
    assert_eq!(decide(&policy, "10.10.0.1", "api.example.com"), allowed(vec![api(), api_alt(), legacy_late()], 0, 1));
}

#[test]
fn wildcard_matches_at_any_depth_but_not_the_apex() {
    let policy = compiled(POLICY);
    let all = vec![api(), api_alt(), legacy_late()];
    assert_eq!(decide(&policy, "10.10.0.1", "www.example.com"), allowed(all.clone(), 0, 1));
    assert_eq!(decide(&policy, "10.10.0.1", "a.b.c.example.com"), allowed(all, 0, 1));
    // The apex is not below itself; no rule of `apps` or `fallback` names it.
    let apex = decide(&policy, "10.10.0.1", "example.com");
    assert_eq!(apex, DnsDecision { allowed: false, audit_would_deny: false, learn_for: vec![], cause: None });
    assert!(!decide(&policy, "10.10.0.1", "notexample.com").allowed);
}

#[test]
fn names_are_case_insensitive_and_may_end_with_a_dot() {
    let policy = compiled(POLICY);
    let expected = decide(&policy, "10.10.0.1", "api.example.com");
    for spelling in ["API.Example.COM", "api.example.com.", "Api.EXAMPLE.com."] {
        assert_eq!(decide(&policy, "10.10.0.1", spelling), expected, "{spelling}");
    }
    assert_eq!(
        decide(&policy, "10.10.0.1", "_LDAP._tcp.corp.example.org."),
        allowed(vec![key("apps", "svc", &["_ldap._tcp.corp.example.org"])], 0, 6)
    );
}

#[test]
fn a_deny_rule_before_the_allow_rules_refuses_the_name() {
    let policy = compiled(POLICY);
    assert_eq!(decide(&policy, "10.10.0.1", "ads.example.com"), denied(0, 0));
    assert_eq!(decide(&policy, "10.10.0.1", "x.y.ads.example.com"), denied(0, 0));
}

#[test]
fn learning_stops_at_the_first_matching_deny_rule() {
    let policy = compiled(POLICY);
    // `no-legacy` matches legacy.example.com between api-alt and legacy-late.
    assert_eq!(decide(&policy, "10.10.0.1", "legacy.example.com"), allowed(vec![api(), api_alt()], 0, 1));
}

#[test]
fn group_default_does_not_allow_dns_but_the_next_group_can() {
    let policy = compiled(POLICY);
    // `apps` has an allow default but no hostname rule for the name: DNS moves on to `fallback`.
    assert_eq!(
        decide(&policy, "10.10.0.1", "dl.updates.example.net"),
        allowed(vec![key("fallback", "updates", &["*.updates.example.net"])], 1, 0)
    );
    assert!(!decide(&policy, "10.10.0.1", "unlisted.example.org").allowed);
    // A client only in `fallback` cannot use `apps`' names.
    assert_eq!(decide(&policy, "10.99.0.1", "api.example.com").cause, None);
}

#[test]
fn audit_group_lets_denied_names_through_without_learning() {
    let policy = compiled(POLICY);
    assert_eq!(
        decide(&policy, "10.30.0.7", "social.example.com"),
        DnsDecision {
            allowed: true,
            audit_would_deny: true,
            learn_for: vec![],
            cause: Some(Cause::Rule { group: 2, rule: 0 })
        }
    );
    assert_eq!(
        decide(&policy, "10.30.0.7", "docs.example.com"),
        allowed(vec![key("trial", "docs", &["docs.example.com"])], 2, 1)
    );
    // No rule for the name anywhere: refused, but audited because `trial` is the first group.
    assert_eq!(
        decide(&policy, "10.30.0.7", "unlisted.example.org"),
        DnsDecision { allowed: true, audit_would_deny: true, learn_for: vec![], cause: None }
    );
}

#[test]
fn client_in_no_group_is_denied() {
    let policy = compiled(POLICY);
    let decision = decide(&policy, "192.168.1.1", "api.example.com");
    assert_eq!(decision, DnsDecision { allowed: false, audit_would_deny: false, learn_for: vec![], cause: None });
}

#[test]
fn degenerate_names_are_denied_without_panicking() {
    let policy = compiled(POLICY);
    for name in ["", ".", "..", "*", "*.example.com.", "例え.jp", &"a.".repeat(300)] {
        let decision = decide(&policy, "10.10.0.1", name);
        // A literal "*.example.com" query is a name below example.com like any other.
        assert_eq!(decision.allowed, name == "*.example.com.", "{name:?}");
    }
}

#[test]
fn decision_serialises_with_hex_keys() {
    let policy = compiled(POLICY);
    let value = serde_json::to_value(decide(&policy, "10.10.0.1", "docs.corp.example.org")).unwrap();
    assert_eq!(
        value,
        serde_json::json!({ "allowed": false, "audit_would_deny": false, "learn_for": [], "cause": null })
    );
    let value = serde_json::to_value(decide(&policy, "10.10.0.1", "legacy.example.com")).unwrap();
    assert_eq!(value["learn_for"][0], api().to_string());
}
