//! `explain` names the deciding group and rule and says why, for each way a decision is made.

mod common;

use common::{compiled, explain_query, icmp, tcp, udp};
use sluice_policy::{Action, Cause, CompiledPolicy, FlowQuery, RuleKey};

const POLICY: &str = r#"{
  "default_action": "deny",
  "source_groups": [
    { "id": "apps", "priority": 10, "sources": { "cidrs": ["10.10.0.0/24"] },
      "rules": [
        { "id": "api", "action": "allow",
          "match": { "hostnames": ["api.example.com", "*.cdn.example.com"], "proto": "tcp", "dst_ports": [443] } },
        { "id": "block-db", "action": "deny", "match": { "dst_cidrs": ["198.51.100.0/24"] } },
        { "id": "web", "action": "allow", "match": { "proto": "tcp", "dst_ports": [80, "8000-8099"] } },
        { "id": "ntp", "action": "allow",
          "match": { "dst_cidrs": ["203.0.113.0/24"], "proto": "udp", "dst_ports": [123] } },
        { "id": "ping", "action": "allow", "match": { "proto": "icmp", "icmp_types": [8] } }
      ],
      "default_action": "deny" },
    { "id": "office", "priority": 20, "sources": { "cidrs": ["10.20.0.0/16"] },
      "rules": [ { "id": "mail", "action": "allow", "match": { "proto": "tcp", "dst_ports": [25] } } ] },
    { "id": "everyone", "priority": 30, "sources": { "cidrs": ["10.0.0.0/8"] },
      "rules": [ { "id": "dns", "action": "allow", "match": { "proto": "udp", "dst_ports": [53] } } ] },
    { "id": "trial", "priority": 5, "mode": "audit", "sources": { "cidrs": ["10.30.0.0/16"] },
      "rules": [ { "id": "https", "action": "allow", "match": { "proto": "tcp", "dst_ports": [443] } } ],
      "default_action": "deny" },
    { "id": "trial-open", "priority": 6, "mode": "audit", "sources": { "cidrs": ["10.40.0.0/16"] } }
  ]
}"#;

struct Case {
    name: &'static str,
    flow: FlowQuery,
    hostname: Option<&'static str>,
    action: Action,
    audit_would_deny: bool,
    group: Option<&'static str>,
    rule: Option<&'static str>,
    description: &'static str,
}

fn case(
    name: &'static str,
    flow: FlowQuery,
    action: Action,
    group: Option<&'static str>,
    rule: Option<&'static str>,
) -> Case {
    Case { name, flow, hostname: None, action, audit_would_deny: false, group, rule, description: "" }
}

impl Case {
    fn hostname(mut self, name: &'static str) -> Self {
        self.hostname = Some(name);
        self
    }

    fn would_deny(mut self) -> Self {
        self.audit_would_deny = true;
        self
    }

    fn says(mut self, description: &'static str) -> Self {
        self.description = description;
        self
    }
}

#[test]
fn explain_names_what_decided_and_why() {
    use Action::{Allow, Deny};
    let policy = compiled(POLICY);
    let cases = [
        case("rule hit", udp("10.10.0.5", "203.0.113.9", 123), Allow, Some("apps"), Some("ntp"))
            .says("allowed by rule apps/ntp"),
        case("later rule hit", tcp("10.10.0.5", "192.0.2.1", 80), Allow, Some("apps"), Some("web")),
        case("earlier deny wins", tcp("10.10.0.5", "198.51.100.7", 80), Deny, Some("apps"), Some("block-db"))
            .says("denied by rule apps/block-db"),
        case("port range start", tcp("10.10.0.5", "192.0.2.1", 8000), Allow, Some("apps"), Some("web")),
        case("port range end", tcp("10.10.0.5", "192.0.2.1", 8099), Allow, Some("apps"), Some("web")),
        case("past port range", tcp("10.10.0.5", "192.0.2.1", 8100), Deny, Some("apps"), None),
        case("group default", tcp("10.10.0.5", "192.0.2.1", 22), Deny, Some("apps"), None)
            .says("denied by default of group apps"),
        case("fall through to next group", udp("10.20.0.5", "192.0.2.53", 53), Allow, Some("everyone"), Some("dns")),
        case("first group still wins", tcp("10.20.0.5", "192.0.2.25", 25), Allow, Some("office"), Some("mail")),
        case("document default", tcp("10.20.0.5", "192.0.2.1", 22), Deny, None, None)
            .says("denied by document default; no rule or group default of the source's groups matched"),
        case("audit turns deny into would-deny", tcp("10.30.0.1", "192.0.2.1", 22), Allow, Some("trial"), None)
            .would_deny()
            .says("allowed: default of group trial would deny, but group trial is in audit mode"),
        case("audit group allow is plain", tcp("10.30.0.1", "192.0.2.1", 443), Allow, Some("trial"), Some("https")),
        case("audited document default", tcp("10.40.0.1", "192.0.2.1", 22), Allow, None, None)
            .would_deny()
            .says("allowed: document default would deny, but group trial-open is in audit mode; no rule or group default of the source's groups matched"),
        case("hostname rule without hostname", tcp("10.10.0.5", "93.184.216.34", 443), Deny, Some("apps"), None),
        case("hostname rule with hostname", tcp("10.10.0.5", "93.184.216.34", 443), Allow, Some("apps"), Some("api"))
            .hostname("API.example.com.")
            .says("allowed by rule apps/api; 93.184.216.34 counts as learned from DNS for API.example.com."),
        case("wildcard hostname", tcp("10.10.0.5", "93.184.216.34", 443), Allow, Some("apps"), Some("api"))
            .hostname("img.eu.cdn.example.com"),
        case("wildcard apex not learned", tcp("10.10.0.5", "93.184.216.34", 443), Deny, Some("apps"), None)
            .hostname("cdn.example.com")
            .says("denied by default of group apps; DNS lookups of cdn.example.com by this source are refused"),
        case("hostname rule port mismatch", tcp("10.10.0.5", "93.184.216.34", 22), Deny, Some("apps"), None)
            .hostname("api.example.com"),
        case("icmp type listed", icmp("10.10.0.5", "192.0.2.1", 8), Allow, Some("apps"), Some("ping")),
        case("icmp type not listed", icmp("10.10.0.5", "192.0.2.1", 0), Deny, Some("apps"), None),
        case("source in no group", tcp("192.168.1.1", "192.0.2.1", 443), Deny, None, None)
            .says("denied by document default; source 192.168.1.1 is in no source group"),
    ];
    for c in cases {
        let explanation = policy.explain(&explain_query(c.flow, c.hostname));
        let name = c.name;
        assert_eq!(explanation.verdict.action, c.action, "{name}: {}", explanation.description);
        assert_eq!(explanation.audit_would_deny, c.audit_would_deny, "{name}");
        assert_eq!(explanation.verdict.audit_would_deny, c.audit_would_deny, "{name}");
        assert_eq!(explanation.group.as_deref(), c.group, "{name}");
        assert_eq!(explanation.rule.as_deref(), c.rule, "{name}");
        if !c.description.is_empty() {
            assert_eq!(explanation.description, c.description, "{name}");
        }
        assert_eq!(explanation.verdict, policy.evaluate(&c.flow, &LearnedFor(&explanation)), "{name}");
    }
}

/// Replays an explanation's DNS learning as a lookup, to check explain agrees with evaluate.
struct LearnedFor<'a>(&'a sluice_policy::Explanation);

impl sluice_policy::LearnedLookup for LearnedFor<'_> {
    fn is_learned(&self, rule: RuleKey, _dst: u32) -> bool {
        self.0.dns.as_ref().is_some_and(|d| d.learn_for.contains(&rule))
    }
}

#[test]
fn explain_lists_candidate_groups_in_priority_order() {
    let policy = compiled(POLICY);
    let explanation = policy.explain(&explain_query(tcp("10.20.0.5", "192.0.2.1", 22), None));
    assert_eq!(explanation.candidate_groups, ["office", "everyone"]);
    let explanation = policy.explain(&explain_query(tcp("10.30.0.1", "192.0.2.1", 22), None));
    assert_eq!(explanation.candidate_groups, ["trial", "everyone"]);
    assert!(explanation.dns.is_none());
}

#[test]
fn hostname_learning_sets_learned_via_to_the_rule_key() {
    let policy = compiled(POLICY);
    let explanation = policy.explain(&explain_query(tcp("10.10.0.5", "93.184.216.34", 443), Some("api.example.com")));
    let key = RuleKey::for_rule("apps", "api", &["api.example.com", "*.cdn.example.com"]);
    assert_eq!(explanation.verdict.learned_via, Some(key));
    assert_eq!(explanation.verdict.cause, Cause::Rule { group: 0, rule: 0 });
    assert_eq!(explanation.dns.unwrap().learn_for, [key]);
}

#[test]
fn explanation_serialises_for_the_api() {
    let policy: CompiledPolicy = compiled(POLICY);
    let explanation = policy.explain(&explain_query(tcp("10.10.0.5", "93.184.216.34", 443), Some("api.example.com")));
    let value = serde_json::to_value(&explanation).unwrap();
    assert_eq!(value["verdict"]["action"], "allow");
    assert_eq!(value["verdict"]["cause"], serde_json::json!({ "rule": { "group": 0, "rule": 0 } }));
    assert_eq!(value["group"], "apps");
    assert_eq!(value["rule"], "api");
    assert_eq!(value["audit_would_deny"], false);
    assert_eq!(value["dns"]["allowed"], true);
    let key = value["verdict"]["learned_via"].as_str().unwrap();
    assert_eq!(key.len(), 16, "keys are written as 16 hex digits");

    let query: sluice_policy::ExplainQuery =
        serde_json::from_str(r#"{"src":"10.10.0.5","dst":"192.0.2.1","proto":6,"dst_port":80}"#).unwrap();
    assert_eq!(policy.explain(&query).rule.as_deref(), Some("web"));
}
