//! Valid documents parse, compile with the right counts, normalise, and round-trip.

mod common;

use common::{compiled, EXAMPLE};
use sluice_policy::{
    compile, compile_json, parse_policy, Action, CompiledPolicy, GroupMode, Ipv4Cidr, PolicyDocument, PortRange,
    Protocol, Rule, RuleMatch, SourceGroup, Sources,
};

const TWO_GROUPS: &str = r#"{
  "default_action": "allow",
  "source_groups": [
    { "id": "lab.hosts", "priority": 5, "mode": "audit",
      "sources": { "cidrs": ["10.20.0.0/16", "192.0.2.7"] },
      "rules": [
        { "id": "web", "action": "allow",
          "match": { "proto": "tcp", "dst_ports": [80, 443, "8000-8999"] } },
        { "id": "no-smb", "action": "deny", "match": { "proto": "tcp", "dst_ports": ["139-139", 445] } },
        { "id": "anything", "action": "allow", "match": {} }
      ] },
    { "id": "all_hosts", "priority": 100,
      "sources": { "cidrs": ["0.0.0.0/0"] },
      "rules": [
        { "id": "Docs", "action": "allow",
          "match": { "hostnames": ["Docs.Example.ORG.", "*.static.example.org"] } }
      ] },
    { "id": "empty", "priority": 0, "sources": { "cidrs": ["172.16.0.0/12"] }, "rules": [], "default_action": null }
  ]
}"#;

#[test]
fn example_document_compiles_with_the_right_counts() {
    let policy = compiled(EXAMPLE);
    assert_eq!(policy.group_count(), 1);
    assert_eq!(policy.rule_count(), 3);
    assert_eq!(policy.hostname_rule_count(), 1);
    assert_eq!(policy.group_id(0), "apps");
    assert_eq!(policy.rule_id(0, 2), "ping");
    let rules: Vec<_> = policy.hostname_rules().collect();
    let key = sluice_policy::RuleKey::for_rule("apps", "api", &["api.example.com", "*.cdn.example.com"]);
    assert_eq!(rules, [(key, "apps", "api")], "hostname rules are named by group and rule id");
}

#[test]
fn richer_document_compiles_with_the_right_counts() {
    let policy = compiled(TWO_GROUPS);
    assert_eq!(policy.group_count(), 3);
    assert_eq!(policy.rule_count(), 4);
    assert_eq!(policy.hostname_rule_count(), 1);
    assert_eq!(policy.document().default_action, Action::Allow);
}

#[test]
fn minimal_documents_are_valid() {
    let empty = compiled("{}");
    assert_eq!((empty.group_count(), empty.rule_count()), (0, 0));
    assert_eq!(empty.document().default_action, Action::Deny);

    let no_rules = compiled(r#"{"source_groups":[{"id":"g","priority":1,"sources":{"cidrs":["10.0.0.0/8"]}}]}"#);
    assert_eq!((no_rules.group_count(), no_rules.rule_count()), (1, 0));
    assert_eq!(no_rules.document().source_groups[0].mode, GroupMode::Enforce);
}

#[test]
fn parsing_normalises_and_fills_defaults() {
    let doc = parse_policy(TWO_GROUPS).unwrap();
    let lab = &doc.source_groups[0];
    assert_eq!(lab.mode, GroupMode::Audit);
    assert_eq!(lab.default_action, None);
    assert_eq!(lab.sources.cidrs[1].to_string(), "192.0.2.7/32");
    assert_eq!(
        lab.rules[0].matches.dst_ports,
        [PortRange::single(80), PortRange::single(443), PortRange { first: 8000, last: 8999 }]
    );
    assert_eq!(lab.rules[2].matches, RuleMatch::default());
    let docs_rule = &doc.source_groups[1].rules[0];
    assert_eq!(docs_rule.id, "Docs", "ids keep their case");
    assert_eq!(docs_rule.matches.hostnames, ["docs.example.org", "*.static.example.org"]);
    assert_eq!(doc.source_groups[2].default_action, None, "null means absent");
}

#[test]
fn serialising_and_parsing_again_gives_the_same_document() {
    for text in [EXAMPLE, TWO_GROUPS, "{}"] {
        let doc = parse_policy(text).unwrap();
        let written = serde_json::to_string_pretty(&doc).unwrap();
        let again = parse_policy(&written).unwrap_or_else(|e| panic!("re-parse failed:\n{e}\n{written}"));
        assert_eq!(again, doc);
    }
}

#[test]
fn serialised_form_reads_like_the_input() {
    let doc = parse_policy(TWO_GROUPS).unwrap();
    let value = serde_json::to_value(&doc).unwrap();
    let web = &value["source_groups"][0]["rules"][0]["match"];
    assert_eq!(web["dst_ports"], serde_json::json!([80, 443, "8000-8999"]));
    assert_eq!(value["source_groups"][0]["rules"][2]["match"], serde_json::json!({}));
    assert_eq!(value["source_groups"][0]["mode"], "audit");
    assert!(value["source_groups"][0].get("default_action").is_none());
}

#[test]
fn deserialize_impl_validates_like_parse_policy() {
    let doc: PolicyDocument = serde_json::from_str(EXAMPLE).unwrap();
    assert_eq!(doc, parse_policy(EXAMPLE).unwrap());
    let error = serde_json::from_str::<PolicyDocument>(r#"{"default_action":"maybe"}"#).unwrap_err();
    assert!(error.to_string().contains("default_action: unknown value \"maybe\""), "{error}");
}

fn hand_built_group(id: &str, priority: u32, hostnames: &[&str]) -> SourceGroup {
    SourceGroup {
        id: id.to_string(),
        priority,
        mode: GroupMode::Enforce,
        sources: Sources { cidrs: vec!["10.0.0.0/8".parse::<Ipv4Cidr>().unwrap()] },
        rules: vec![Rule {
            id: "r".to_string(),
            action: Action::Allow,
            matches: RuleMatch {
                proto: Protocol::Tcp,
                hostnames: hostnames.iter().map(|h| h.to_string()).collect(),
                ..RuleMatch::default()
            },
        }],
        default_action: None,
    }
}

#[test]
fn compile_normalises_a_hand_built_document() {
    let doc = PolicyDocument {
        default_action: Action::Deny,
        source_groups: vec![hand_built_group("g", 1, &["API.Example.com."])],
    };
    let policy = compile(&doc).unwrap();
    assert_eq!(policy.document().source_groups[0].rules[0].matches.hostnames, ["api.example.com"]);
}

#[test]
fn compile_revalidates_a_hand_built_document() {
    let doc = PolicyDocument {
        default_action: Action::Deny,
        source_groups: vec![hand_built_group("g", 1, &["*"]), hand_built_group("bad id", 1, &["a.com"])],
    };
    let errors = compile(&doc).unwrap_err();
    assert_eq!(
        errors.paths(),
        ["source_groups[0].rules[0].match.hostnames[0]", "source_groups[1].id", "source_groups[1].priority",]
    );
}

#[test]
fn compiled_policy_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<CompiledPolicy>();
}

#[test]
fn compile_json_and_two_step_compile_agree() {
    let doc = parse_policy(TWO_GROUPS).unwrap();
    let two_step = compile(&doc).unwrap();
    let one_step = compile_json(TWO_GROUPS).unwrap();
    assert_eq!(two_step.document(), one_step.document());
    assert_eq!(two_step.index_size(), one_step.index_size());
}

#[test]
fn document_boundaries_fragment_the_indexes_as_expected() {
    let policy = compiled(EXAMPLE);
    let size = policy.index_size();
    // Below 10.10.0.0, the /24 itself, above it.
    assert_eq!(size.source_intervals, 3);
    // tcp: below 443, 443, above; udp: below 123, 123, above; icmp: below 8, 8, above;
    // other: one interval.
    assert_eq!(size.port_intervals, 10);
}
