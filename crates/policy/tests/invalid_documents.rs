//! Invalid documents are rejected with every problem reported at its exact field path.

use sluice_policy::{parse_policy, PolicyErrors};

/// A document with one group whose single rule has the given `match` object.
fn with_match(match_json: &str) -> String {
    format!(
        r#"{{"source_groups":[{{"id":"g","priority":1,"sources":{{"cidrs":["10.0.0.0/8"]}},
            "rules":[{{"id":"r","action":"allow","match":{match_json}}}]}}]}}"#
    )
}

/// A document with one group whose `sources` object is given.
fn with_sources(sources_json: &str) -> String {
    format!(r#"{{"source_groups":[{{"id":"g","priority":1,"sources":{sources_json}}}]}}"#)
}

fn errors_of(json: &str) -> PolicyErrors {
    match parse_policy(json) {
        Ok(doc) => panic!("document should be invalid, parsed as {doc:?}\n{json}"),
        Err(errors) => errors,
    }
}

const MATCH: &str = "source_groups[0].rules[0].match";

#[test]
fn each_invalid_document_reports_the_exact_paths() {
    let port_path = format!("{MATCH}.dst_ports[0]");
    let cases: Vec<(&str, String, Vec<String>, &str)> = vec![
        (
            "bad cidr",
            with_sources(r#"{"cidrs":["10.0.0/8"]}"#),
            vec!["source_groups[0].sources.cidrs[0]".into()],
            "is not an IPv4 CIDR",
        ),
        (
            "host bits",
            with_sources(r#"{"cidrs":["10.0.0.0/8","10.10.0.1/24"]}"#),
            vec!["source_groups[0].sources.cidrs[1]".into()],
            "10.10.0.1/24 has host bits set; did you mean 10.10.0.0/24?",
        ),
        ("no sources", with_sources(r#"{"cidrs":[]}"#), vec!["source_groups[0].sources.cidrs".into()], "must not be empty"),
        (
            "port 0",
            with_match(r#"{"proto":"tcp","dst_ports":[0]}"#),
            vec![port_path.clone()],
            "port 0 is out of range 1..=65535",
        ),
        (
            "port 70000",
            with_match(r#"{"proto":"udp","dst_ports":[70000]}"#),
            vec![port_path.clone()],
            "port 70000 is out of range 1..=65535",
        ),
        (
            "reversed range",
            with_match(r#"{"proto":"tcp","dst_ports":["200-100"]}"#),
            vec![port_path.clone()],
            "range `200-100` is reversed",
        ),
        (
            "malformed range",
            with_match(r#"{"proto":"tcp","dst_ports":["http"]}"#),
            vec![port_path.clone()],
            "is not a port range",
        ),
        (
            "ports with icmp",
            with_match(r#"{"proto":"icmp","dst_ports":[80]}"#),
            vec![format!("{MATCH}.dst_ports")],
            "`dst_ports` needs `proto` \"tcp\" or \"udp\" (proto is \"icmp\")",
        ),
        (
            "ports without proto",
            with_match(r#"{"dst_ports":[80]}"#),
            vec![format!("{MATCH}.dst_ports")],
            "(proto is \"any\")",
        ),
        (
            "icmp types with tcp",
            with_match(r#"{"proto":"tcp","icmp_types":[8]}"#),
            vec![format!("{MATCH}.icmp_types")],
            "`icmp_types` needs `proto` \"icmp\" (proto is \"tcp\")",
        ),
        (
            "icmp type 256",
            with_match(r#"{"proto":"icmp","icmp_types":[0, 256]}"#),
            vec![format!("{MATCH}.icmp_types[1]")],
            "icmp type 256 is out of range 0..=255",
        ),
        (
            "hostnames and dst_cidrs",
            with_match(r#"{"hostnames":["a.example.com"],"dst_cidrs":["192.0.2.0/24"]}"#),
            vec![MATCH.into()],
            "a rule may have `hostnames` or `dst_cidrs`, not both",
        ),
        (
            "bad hostname",
            with_match(r#"{"hostnames":["ok.example.com","bad_label-.example.com"]}"#),
            vec![format!("{MATCH}.hostnames[1]")],
            "starts or ends with `-`",
        ),
        ("bare star", with_match(r#"{"hostnames":["*"]}"#), vec![format!("{MATCH}.hostnames[0]")], "bare `*`"),
        (
            "inner star",
            with_match(r#"{"hostnames":["a.*.com"]}"#),
            vec![format!("{MATCH}.hostnames[0]")],
            "only allowed as the whole leftmost label",
        ),
        (
            "empty list",
            with_match(r#"{"hostnames":[]}"#),
            vec![format!("{MATCH}.hostnames")],
            "must not be empty",
        ),
        (
            "duplicate group id",
            r#"{"source_groups":[
                {"id":"apps","priority":1,"sources":{"cidrs":["10.0.0.0/8"]}},
                {"id":"apps","priority":2,"sources":{"cidrs":["10.0.0.0/8"]}}]}"#
                .into(),
            vec!["source_groups[1].id".into()],
            "duplicate group id `apps` (already used by source_groups[0])",
        ),
        (
            "duplicate priority",
            r#"{"source_groups":[
                {"id":"a","priority":7,"sources":{"cidrs":["10.0.0.0/8"]}},
                {"id":"b","priority":8,"sources":{"cidrs":["10.0.0.0/8"]}},
                {"id":"c","priority":7,"sources":{"cidrs":["10.0.0.0/8"]}}]}"#
                .into(),
            vec!["source_groups[2].priority".into()],
            "priority 7 is already used by source_groups[0]",
        ),
        (
            "duplicate rule id",
            r#"{"source_groups":[{"id":"g","priority":1,"sources":{"cidrs":["10.0.0.0/8"]},"rules":[
                {"id":"r","action":"allow","match":{}},
                {"id":"s","action":"allow","match":{}},
                {"id":"r","action":"deny","match":{}}]}]}"#
                .into(),
            vec!["source_groups[0].rules[2].id".into()],
            "duplicate rule id `r` in this group (already used by source_groups[0].rules[0])",
        ),
        (
            "unknown field",
            with_match(r#"{"prot":"tcp"}"#),
            vec![format!("{MATCH}.prot")],
            "unknown field `prot`; expected one of `proto`, `dst_ports`, `icmp_types`, `dst_cidrs`, `hostnames` (did you mean `proto`?)",
        ),
        (
            "unknown top-level field",
            r#"{"default":"allow"}"#.into(),
            vec!["default".into()],
            "unknown field `default`; expected one of `default_action`, `source_groups`",
        ),
        (
            "wrong type",
            r#"{"source_groups":[{"id":"g","priority":"high","sources":{"cidrs":["10.0.0.0/8"]}}]}"#.into(),
            vec!["source_groups[0].priority".into()],
            "expected an integer, found the string \"high\"",
        ),
        (
            "wrong type for a list",
            with_sources(r#"{"cidrs":"10.0.0.0/8"}"#),
            vec!["source_groups[0].sources.cidrs".into()],
            "expected an array, found the string \"10.0.0.0/8\"",
        ),
        (
            "missing id",
            r#"{"source_groups":[{"priority":1,"sources":{"cidrs":["10.0.0.0/8"]}}]}"#.into(),
            vec!["source_groups[0].id".into()],
            "required field is missing",
        ),
        (
            "bad id characters",
            r#"{"source_groups":[{"id":"web servers","priority":1,"sources":{"cidrs":["10.0.0.0/8"]}}]}"#.into(),
            vec!["source_groups[0].id".into()],
            "contains ` `",
        ),
        (
            "bad action",
            r#"{"source_groups":[{"id":"g","priority":1,"sources":{"cidrs":["10.0.0.0/8"]},
                "rules":[{"id":"r","action":"permit","match":{}}]}]}"#
                .into(),
            vec!["source_groups[0].rules[0].action".into()],
            "unknown value \"permit\"; expected \"allow\" or \"deny\"",
        ),
        (
            "missing match",
            r#"{"source_groups":[{"id":"g","priority":1,"sources":{"cidrs":["10.0.0.0/8"]},
                "rules":[{"id":"r","action":"allow"}]}]}"#
                .into(),
            vec!["source_groups[0].rules[0].match".into()],
            "required field is missing",
        ),
        ("not an object", "[]".into(), vec!["".into()], "expected an object, found an array"),
        ("syntax error", r#"{"default_action": }"#.into(), vec!["".into()], "invalid JSON: expected value at line 1 column 20"),
    ];

    for (name, json, expected_paths, expected_message) in cases {
        let errors = errors_of(&json);
        assert_eq!(errors.paths(), expected_paths, "{name}: {errors}");
        assert!(
            errors.iter().any(|e| e.message.contains(expected_message)),
            "{name}: expected a message containing {expected_message:?}, got:\n{errors}"
        );
    }
}

#[test]
fn several_errors_are_all_reported_in_document_order() {
    let json = r#"{
      "default_action": "block",
      "source_groups": [
        { "id": "apps", "priority": 10, "sources": { "cidrs": ["10.10.0.1/24", "10.20.0.0/16"] },
          "rules": [
            { "id": "api", "action": "allow",
              "match": { "hostnames": ["*"], "proto": "tcp", "dst_ports": [443, 0, "9-1"] } },
            { "id": "api", "action": "allow", "match": { "proto": "icmp", "icmp_types": [8], "colour": "red" } }
          ] },
        { "id": "apps", "priority": 10, "mode": "watch", "sources": { "cidrs": [] } }
      ]
    }"#;
    let errors = errors_of(json);
    assert_eq!(
        errors.paths(),
        [
            "default_action",
            "source_groups[0].sources.cidrs[0]",
            "source_groups[0].rules[0].match.dst_ports[1]",
            "source_groups[0].rules[0].match.dst_ports[2]",
            "source_groups[0].rules[0].match.hostnames[0]",
            "source_groups[0].rules[1].match.colour",
            "source_groups[0].rules[1].id",
            "source_groups[1].mode",
            "source_groups[1].sources.cidrs",
            "source_groups[1].id",
            "source_groups[1].priority",
        ],
        "{errors}"
    );
    // The Display form is one `path: message` per line.
    let text = errors.to_string();
    assert_eq!(text.lines().count(), errors.len());
    assert!(text.lines().nth(1).unwrap().starts_with("source_groups[0].sources.cidrs[0]: 10.10.0.1/24 has host bits"));
}

#[test]
fn limits_are_enforced_with_one_error_per_oversized_list() {
    let ports: Vec<String> = (1..=257).map(|p| p.to_string()).collect();
    let errors = errors_of(&with_match(&format!(r#"{{"proto":"tcp","dst_ports":[{}]}}"#, ports.join(","))));
    assert_eq!(errors.paths(), [format!("{MATCH}.dst_ports")]);
    assert!(errors.0[0].message.contains("has 257 entries; at most 256"));

    let rules: Vec<String> = (0..1001).map(|i| format!(r#"{{"id":"r{i}","action":"allow","match":{{}}}}"#)).collect();
    let json = format!(
        r#"{{"source_groups":[{{"id":"g","priority":1,"sources":{{"cidrs":["10.0.0.0/8"]}},"rules":[{}]}}]}}"#,
        rules.join(",")
    );
    let errors = errors_of(&json);
    assert_eq!(errors.paths(), ["source_groups[0].rules"]);
    assert!(errors.0[0].message.contains("at most 1000"));

    let long_id = "x".repeat(65);
    let errors = errors_of(&format!(
        r#"{{"source_groups":[{{"id":"{long_id}","priority":1,"sources":{{"cidrs":["10.0.0.0/8"]}}}}]}}"#
    ));
    assert_eq!(errors.paths(), ["source_groups[0].id"]);
}

#[test]
fn too_many_groups_is_one_error() {
    let group = r#"{"id":"g","priority":1,"sources":{"cidrs":["10.0.0.0/8"]}}"#;
    let json = format!(r#"{{"source_groups":[{}]}}"#, vec![group; 10_001].join(","));
    let errors = errors_of(&json);
    assert_eq!(errors.paths(), ["source_groups"]);
    assert!(errors.0[0].message.contains("10001 entries; at most 10000"));
}

#[test]
fn a_flood_of_errors_is_capped() {
    let bad: Vec<&str> = vec!["\"not-a-cidr\""; 256];
    let group = format!(r#"{{"id":"g","priority":1,"sources":{{"cidrs":[{}]}}}}"#, bad.join(","));
    let groups: Vec<String> = (0..10).map(|i| group.replace("\"priority\":1", &format!("\"priority\":{i}"))).collect();
    let errors = errors_of(&format!(r#"{{"source_groups":[{}]}}"#, groups.join(",")));
    // 2560 CIDR errors and 9 duplicate ids: the first 1000 are kept, then one summary line.
    assert_eq!(errors.len(), 1001);
    assert_eq!(errors.0[1000].path, "");
    assert_eq!(errors.0[1000].message, "1569 more errors not shown; fix the ones above first");
}

#[test]
fn errors_serialise_for_the_api() {
    let errors = errors_of(&with_match(r#"{"proto":"tcp","dst_ports":[0]}"#));
    let value = serde_json::to_value(&errors).unwrap();
    assert_eq!(
        value,
        serde_json::json!([{ "path": format!("{MATCH}.dst_ports[0]"), "message": "port 0 is out of range 1..=65535" }])
    );
}
