//! Rule keys are stable across documents: what the dataplane's learned addresses hang on.

mod common;

use common::compiled;
use sluice_policy::{CompiledPolicy, RuleKey};

fn document(group: &str, rule: &str, hostnames: &str, ports: &str, extra_rule_before: bool) -> String {
    let before = if extra_rule_before {
        r#"{"id":"first","action":"deny","match":{"proto":"udp","dst_ports":[9]}},"#
    } else {
        ""
    };
    format!(
        r#"{{"source_groups":[
            {{"id":"other","priority":1,"sources":{{"cidrs":["192.168.0.0/16"]}}}},
            {{"id":"{group}","priority":2,"sources":{{"cidrs":["10.0.0.0/8"]}},"rules":[{before}
              {{"id":"{rule}","action":"allow","match":{{"hostnames":{hostnames},"proto":"tcp","dst_ports":{ports}}}}}]}}]}}"#
    )
}

/// The key the DNS proxy would learn `name` under for a client in 10.0.0.0/8.
fn learned_key(policy: &CompiledPolicy, name: &str) -> RuleKey {
    let decision = policy.dns_decision(u32::from(std::net::Ipv4Addr::new(10, 0, 0, 1)), name);
    assert_eq!(decision.learn_for.len(), 1, "{decision:?}");
    decision.learn_for[0]
}

#[test]
fn same_rule_in_two_documents_has_the_same_key() {
    let a = compiled(&document("apps", "api", r#"["api.example.com","*.cdn.example.com"]"#, "[443]", false));
    // Different position in the group, patterns reordered and respelled: same rule.
    let b = compiled(&document("apps", "api", r#"["*.CDN.example.com.","api.example.com"]"#, "[443]", true));
    assert_eq!(learned_key(&a, "api.example.com"), learned_key(&b, "api.example.com"));
    assert_eq!(
        learned_key(&a, "api.example.com"),
        RuleKey::for_rule("apps", "api", &["api.example.com", "*.cdn.example.com"])
    );
}

#[test]
fn changed_hostnames_change_the_key() {
    let a = compiled(&document("apps", "api", r#"["api.example.com"]"#, "[443]", false));
    let b = compiled(&document("apps", "api", r#"["api.example.com","api2.example.com"]"#, "[443]", false));
    assert_ne!(learned_key(&a, "api.example.com"), learned_key(&b, "api.example.com"));
}

#[test]
fn changed_ids_change_the_key() {
    let base = compiled(&document("apps", "api", r#"["api.example.com"]"#, "[443]", false));
    let renamed_rule = compiled(&document("apps", "api-v2", r#"["api.example.com"]"#, "[443]", false));
    let renamed_group = compiled(&document("services", "api", r#"["api.example.com"]"#, "[443]", false));
    let key = learned_key(&base, "api.example.com");
    assert_ne!(key, learned_key(&renamed_rule, "api.example.com"));
    assert_ne!(key, learned_key(&renamed_group, "api.example.com"));
}

#[test]
fn changed_ports_keep_the_key() {
    let a = compiled(&document("apps", "api", r#"["api.example.com"]"#, "[443]", false));
    let b = compiled(&document("apps", "api", r#"["api.example.com"]"#, r#"[443, "8000-8080"]"#, false));
    assert_eq!(learned_key(&a, "api.example.com"), learned_key(&b, "api.example.com"));
}

#[test]
fn keys_do_not_depend_on_the_run_or_platform() {
    // Fixed once (and cross-checked against an independent FNV-1a + fmix64 computation):
    // the same on every machine, build and run.
    assert_eq!(RuleKey::for_rule("apps", "api", &["api.example.com"]).to_string(), EXPECTED_HEX);
}

const EXPECTED_HEX: &str = "4b52d669028f0e4c";
