//! `sluice policy validate` and `sluice policy explain` on real files.

mod common;

use common::{run, sluice};

const GOOD: &str = r#"{
  "default_action": "deny",
  "source_groups": [
    { "id": "apps", "priority": 10, "sources": { "cidrs": ["10.10.0.0/24"] },
      "rules": [
        { "id": "api", "action": "allow",
          "match": { "hostnames": ["api.example.com"], "proto": "tcp", "dst_ports": [443] } },
        { "id": "web", "action": "allow", "match": { "proto": "tcp", "dst_ports": [80] } }
      ],
      "default_action": "deny" },
    { "id": "everyone", "priority": 30, "sources": { "cidrs": ["10.0.0.0/8"] },
      "rules": [ { "id": "dns", "action": "allow", "match": { "proto": "udp", "dst_ports": [53] } } ] }
  ]
}"#;

const BAD: &str = r#"{
  "default_action": "deny",
  "source_groups": [
    { "id": "apps", "priority": 10, "sources": { "cidrs": ["10.10.0.0/33"] },
      "rules": [ { "id": "web", "action": "allow", "match": { "proto": "tcp", "dst_ports": [0] } } ] }
  ]
}"#;

fn file(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn validate_good_policy_prints_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, _) = run(sluice().args(["policy", "validate", &file(&dir, "p.json", GOOD)]));
    assert_eq!(code, 0);
    assert_eq!(stdout.trim(), "OK: 2 source groups, 3 rules (1 hostname rules)");
}

#[test]
fn validate_bad_policy_prints_every_error_path() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, _) = run(sluice().args(["policy", "validate", &file(&dir, "p.json", BAD)]));
    assert_eq!(code, 1, "{stdout}");
    let paths: Vec<&str> = stdout.lines().map(|l| l.split_once(": ").expect("path: message").0).collect();
    assert_eq!(
        paths,
        ["source_groups[0].sources.cidrs[0]", "source_groups[0].rules[0].match.dst_ports[0]"],
        "{stdout}"
    );
}

#[test]
fn validate_reports_json_syntax_and_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, _) = run(sluice().args(["policy", "validate", &file(&dir, "p.json", "{")]));
    assert_eq!(code, 1);
    assert!(stdout.contains("JSON"), "{stdout}");
    let (code, stdout, _) = run(sluice().args(["policy", "validate", "/nonexistent/p.json"]));
    assert_eq!(code, 1);
    assert!(stdout.contains("cannot read policy file /nonexistent/p.json"), "{stdout}");
}

fn explain(policy: &str, extra: &[&str]) -> (i32, String) {
    let (code, stdout, stderr) = run(sluice().args(["policy", "explain", policy]).args(extra));
    (code, format!("{stdout}{stderr}"))
}

#[test]
fn explain_names_rule_group_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let p = file(&dir, "p.json", GOOD);
    let (code, out) = explain(&p, &["--src", "10.10.0.2", "--dst", "93.184.216.34", "--proto", "tcp", "--port", "80"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.trim(),
        "verdict: allow\ngroup: apps\nrule: web\ncandidate groups: apps, everyone\nwhy: allowed by rule apps/web"
    );
}

#[test]
fn explain_with_hostname_matches_hostname_rules() {
    let dir = tempfile::tempdir().unwrap();
    let p = file(&dir, "p.json", GOOD);
    let flow = ["--src", "10.10.0.2", "--dst", "93.184.216.34", "--proto", "tcp", "--port", "443"];
    let (code, out) = explain(&p, &flow);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("verdict: deny\ngroup: apps\nrule: (none)\n"), "{out}");

    let (code, out) = explain(&p, &[&flow[..], &["--hostname", "api.example.com"]].concat());
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("verdict: allow\ngroup: apps\nrule: api\n"), "{out}");
    assert!(out.contains("dns api.example.com: forwarded, learned for 1 rule(s)"), "{out}");
}

#[test]
fn explain_document_default_and_protocol_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let p = file(&dir, "p.json", GOOD);
    let (code, out) = explain(&p, &["--src", "192.168.1.1", "--dst", "1.1.1.1", "--proto", "17", "--port", "53"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("verdict: deny\ngroup: (document default)\nrule: (none)\ncandidate groups: (none)"), "{out}");
    assert!(out.contains("source 192.168.1.1 is in no source group"), "{out}");
}

#[test]
fn explain_refuses_invalid_policy_and_bad_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) =
        explain(&file(&dir, "bad.json", BAD), &["--src", "10.10.0.2", "--dst", "1.1.1.1", "--proto", "tcp"]);
    assert_eq!(code, 1);
    assert!(out.contains("source_groups[0].sources.cidrs[0]: "), "{out}");
    let (code, out) =
        explain(&file(&dir, "p.json", GOOD), &["--src", "10.0.0.1", "--dst", "1.1.1.1", "--proto", "sctp"]);
    assert_eq!(code, 2);
    assert!(out.contains("not tcp, udp, icmp or a protocol number"), "{out}");
}
