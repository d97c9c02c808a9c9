//! Random documents and random queries: the compiled policy agrees with the naive reference
//! evaluator on every verdict and every DNS decision.

mod common;

use std::net::Ipv4Addr;

use common::reference;
use proptest::prelude::*;
use serde_json::{json, Value};
use sluice_policy::{compile_json, FlowQuery, LearnedLookup, RuleKey};

/// Nested and adjacent blocks, the extremes of the space, so boundaries collide often.
const CIDRS: &[&str] = &[
    "0.0.0.0/0",
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.0/24",
    "10.1.2.128/25",
    "10.1.2.3/32",
    "10.1.3.0/24",
    "192.168.0.0/16",
    "255.255.255.255/32",
    "0.0.0.0/31",
];

/// Addresses at and around the blocks' edges.
const ADDRESSES: &[&str] = &[
    "0.0.0.0",
    "0.0.0.1",
    "0.0.0.2",
    "9.255.255.255",
    "10.0.0.0",
    "10.1.2.3",
    "10.1.2.4",
    "10.1.2.127",
    "10.1.2.128",
    "10.1.2.255",
    "10.1.3.7",
    "10.2.0.1",
    "192.168.1.1",
    "8.8.8.8",
    "255.255.255.254",
    "255.255.255.255",
];

const PATTERNS: &[&str] =
    &["api.example.com", "*.example.com", "*.cdn.example.com", "example.com", "Other.NET", "*.b.other.net"];

const QNAMES: &[&str] = &[
    "api.example.com",
    "API.Example.com.",
    "x.cdn.example.com",
    "example.com",
    "other.net",
    "a.b.other.net",
    "b.other.net",
    "unrelated.org",
];

const PORTS: &[u16] = &[0, 1, 22, 53, 80, 443, 1000, 8080, 65534, 65535];

fn port_entry() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(PORTS).prop_filter("ports start at 1", |p| *p > 0).prop_map(|p| json!(p)),
        (prop::sample::select(PORTS), prop::sample::select(PORTS)).prop_filter_map("ports start at 1", |(a, b)| {
            let (lo, hi) = (a.min(b), a.max(b));
            (lo > 0).then(|| json!(format!("{lo}-{hi}")))
        }),
    ]
}

fn rule_match() -> impl Strategy<Value = Value> {
    let proto = prop::option::of(prop::sample::select(&["tcp", "udp", "icmp", "any"][..]));
    let ports = prop::option::of(prop::collection::vec(port_entry(), 1..4));
    let types = prop::option::of(prop::collection::vec(prop_oneof![0u8..10, Just(255u8)], 1..4));
    let cidrs = prop::collection::vec(prop::sample::select(CIDRS), 1..3);
    let names = prop::collection::vec(prop::sample::select(PATTERNS), 1..3);
    let destination = prop_oneof![
        Just(None),
        cidrs.prop_map(|c| Some(("dst_cidrs", json!(c)))),
        names.prop_map(|n| Some(("hostnames", json!(n)))),
    ];
    (proto, ports, types, destination).prop_map(|(proto, ports, types, destination)| {
        let mut m = serde_json::Map::new();
        if let Some(proto) = proto {
            m.insert("proto".into(), json!(proto));
        }
        // Keep only the constraints valid for the protocol, so every document compiles.
        if let (Some(ports), Some("tcp" | "udp")) = (ports, proto) {
            m.insert("dst_ports".into(), json!(ports));
        }
        if let (Some(types), Some("icmp")) = (types, proto) {
            m.insert("icmp_types".into(), json!(types));
        }
        if let Some((field, value)) = destination {
            m.insert(field.into(), value);
        }
        Value::Object(m)
    })
}

fn action() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&["allow", "deny"][..])
}

fn group(index: usize, priority: u32) -> impl Strategy<Value = Value> {
    let rules = prop::collection::vec((action(), rule_match()), 0..7);
    let default = prop::option::of(action());
    let sources = prop::collection::vec(prop::sample::select(CIDRS), 1..3);
    (sources, prop::bool::weighted(0.3), rules, default).prop_map(move |(sources, audit, rules, default)| {
        let rules: Vec<Value> = rules
            .into_iter()
            .enumerate()
            .map(|(r, (action, m))| json!({ "id": format!("r{r}"), "action": action, "match": m }))
            .collect();
        let mut g = json!({
            "id": format!("g{index}"),
            "priority": priority,
            "mode": if audit { "audit" } else { "enforce" },
            "sources": { "cidrs": sources },
            "rules": rules,
        });
        if let Some(default) = default {
            g["default_action"] = json!(default);
        }
        g
    })
}

fn document() -> impl Strategy<Value = String> {
    (1usize..7)
        .prop_flat_map(|n| {
            // Unique priorities in an order unrelated to document order.
            let priorities = Just((0..n as u32).map(|p| p * 7 + 3).collect::<Vec<_>>()).prop_shuffle();
            (priorities, action())
        })
        .prop_flat_map(|(priorities, default)| {
            let groups: Vec<_> = priorities.iter().enumerate().map(|(i, &p)| group(i, p)).collect();
            (groups, Just(default))
        })
        .prop_map(|(groups, default)| json!({ "default_action": default, "source_groups": groups }).to_string())
}

fn address() -> impl Strategy<Value = u32> {
    prop_oneof![
        3 => prop::sample::select(ADDRESSES).prop_map(|a| u32::from(a.parse::<Ipv4Addr>().unwrap())),
        1 => any::<u32>(),
    ]
}

fn flow() -> impl Strategy<Value = FlowQuery> {
    let proto = prop::sample::select(&[1u8, 6, 17, 47, 0][..]);
    let port = prop_oneof![prop::sample::select(PORTS), any::<u16>()];
    let icmp_type = prop_oneof![0u8..10, any::<u8>()];
    (address(), address(), proto, port, icmp_type).prop_map(|(src, dst, proto, port, icmp_type)| FlowQuery {
        src,
        dst,
        proto,
        dst_port: if proto == 6 || proto == 17 { port } else { 0 },
        icmp_type: if proto == 1 { icmp_type } else { 0 },
    })
}

/// A pseudo-random but fixed set of learned (rule, address) pairs.
struct SomeLearned(u64);

impl LearnedLookup for SomeLearned {
    fn is_learned(&self, rule: RuleKey, dst: u32) -> bool {
        let mut x = rule.0 ^ u64::from(dst).rotate_left(17) ^ self.0;
        x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (x >> 61) < 4
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn compiled_evaluation_matches_the_reference(
        json in document(),
        flows in prop::collection::vec(flow(), 24),
        seed in any::<u64>(),
    ) {
        let policy = compile_json(&json).map_err(|e| TestCaseError::fail(format!("{e}\n{json}")))?;
        let doc = policy.document();
        let learned = SomeLearned(seed);
        for flow in &flows {
            let expected = reference::evaluate(doc, flow, &learned);
            prop_assert_eq!(policy.evaluate(flow, &learned), expected, "flow {:?}", flow);
        }
    }

    #[test]
    fn dns_decisions_and_explain_match_the_reference(
        json in document(),
        clients in prop::collection::vec(address(), 6),
        flow in flow(),
    ) {
        let policy = compile_json(&json).map_err(|e| TestCaseError::fail(format!("{e}\n{json}")))?;
        let doc = policy.document();
        for &client in &clients {
            for qname in QNAMES {
                prop_assert_eq!(
                    policy.dns_decision(client, qname),
                    reference::dns_decision(doc, client, qname),
                    "client {} name {}", Ipv4Addr::from(client), qname
                );
            }
            // explain with a hostname = evaluate with what DNS would have learned.
            let qname = QNAMES[client as usize % QNAMES.len()];
            let learn_for = reference::dns_decision(doc, client, qname).learn_for;
            let expected = reference::evaluate(doc, &FlowQuery { src: client, ..flow }, &LearnedKeys(&learn_for));
            let query = common::explain_query(FlowQuery { src: client, ..flow }, Some(qname));
            prop_assert_eq!(policy.explain(&query).verdict, expected);
        }
    }
}

struct LearnedKeys<'a>(&'a [RuleKey]);

impl LearnedLookup for LearnedKeys<'_> {
    fn is_learned(&self, rule: RuleKey, _dst: u32) -> bool {
        self.0.contains(&rule)
    }
}
