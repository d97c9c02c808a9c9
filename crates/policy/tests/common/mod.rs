//! Helpers shared by the integration tests. Each test binary uses a different subset.
#![allow(dead_code)]

pub mod reference;

use std::net::Ipv4Addr;

use sluice_policy::{compile_json, CompiledPolicy, ExplainQuery, FlowQuery, PROTO_ICMP, PROTO_TCP, PROTO_UDP};

/// The example document from the policy format's description.
pub const EXAMPLE: &str = r#"{
  "default_action": "deny",
  "source_groups": [
    { "id": "apps", "priority": 10, "mode": "enforce",
      "sources": { "cidrs": ["10.10.0.0/24"] },
      "rules": [
        { "id": "api",  "action": "allow",
          "match": { "hostnames": ["api.example.com", "*.cdn.example.com"], "proto": "tcp", "dst_ports": [443] } },
        { "id": "ntp",  "action": "allow",
          "match": { "dst_cidrs": ["203.0.113.0/24"], "proto": "udp", "dst_ports": [123] } },
        { "id": "ping", "action": "allow", "match": { "proto": "icmp", "icmp_types": [8] } }
      ],
      "default_action": "deny" }
  ]
}"#;

pub fn ip(text: &str) -> Ipv4Addr {
    text.parse().expect("test address")
}

pub fn addr(text: &str) -> u32 {
    ip(text).into()
}

pub fn compiled(json: &str) -> CompiledPolicy {
    match compile_json(json) {
        Ok(policy) => policy,
        Err(errors) => panic!("document should compile, got:\n{errors}"),
    }
}

pub fn tcp(src: &str, dst: &str, port: u16) -> FlowQuery {
    FlowQuery::new(ip(src), ip(dst), PROTO_TCP, port, 0)
}

pub fn udp(src: &str, dst: &str, port: u16) -> FlowQuery {
    FlowQuery::new(ip(src), ip(dst), PROTO_UDP, port, 0)
}

pub fn icmp(src: &str, dst: &str, icmp_type: u8) -> FlowQuery {
    FlowQuery::new(ip(src), ip(dst), PROTO_ICMP, 0, icmp_type)
}

pub fn explain_query(flow: FlowQuery, hostname: Option<&str>) -> ExplainQuery {
    ExplainQuery {
        src: flow.src.into(),
        dst: flow.dst.into(),
        proto: flow.proto,
        dst_port: flow.dst_port,
        icmp_type: flow.icmp_type,
        hostname: hostname.map(str::to_string),
    }
}
