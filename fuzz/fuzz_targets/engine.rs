//! Feeds arbitrary byte sequences through a whole engine (parser, ARP, flows, NAT, ICMP
//! translation, service lane): the input is split into frames, each preceded by a port byte
//! and a length byte. No input may panic the engine or break its flow-table invariants.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use sluice_dataplane::config::{EngineConfig, HostLaneConfig, PortConfig};
use sluice_dataplane::engine::{Engine, PortId};
use sluice_dataplane::policy_handle::PolicyHandle;
use sluice_dataplane::ring::RingNode;
use sluice_policy::CompiledPolicy;

const POLICY: &str = r#"{"default_action":"deny","source_groups":[{"id":"c","priority":1,
 "sources":{"cidrs":["10.10.0.0/24"]},"rules":[
 {"id":"web","action":"allow","match":{"proto":"tcp","dst_ports":[80,443]}},
 {"id":"dns","action":"allow","match":{"proto":"udp","dst_ports":[53]}},
 {"id":"api","action":"allow","match":{"proto":"tcp","dst_ports":[443],"hostnames":["api.example.com"]}},
 {"id":"ping","action":"allow","match":{"proto":"icmp","icmp_types":[8]}}]}]}"#;

fn node() -> RingNode {
    let internal = PortConfig { mac: [2, 0, 0, 0, 1, 1], ip: 0x0A0A_0001, prefix_len: 24, vlan: None };
    let external = PortConfig { mac: [2, 0, 0, 0, 1, 2], ip: 0xCB00_7102, prefix_len: 24, vlan: None };
    let mut cfg = EngineConfig::new(internal, external, 0xCB00_7101);
    cfg.host_lane = Some(HostLaneConfig { engine_mac: [2, 0, 0, 0, 1, 3], host_mac: [2, 0, 0, 0, 1, 4] });
    cfg.flow_capacity = 64;
    cfg.nat_port_min = 40000;
    cfg.nat_port_max = 40015;
    // Compiled once per process: compiling per input would dominate the run time.
    static COMPILED: OnceLock<Arc<CompiledPolicy>> = OnceLock::new();
    let compiled = COMPILED.get_or_init(|| Arc::new(sluice_policy::compile_json(POLICY).unwrap()));
    let policy = PolicyHandle::new(Arc::clone(compiled));
    RingNode::new(Engine::new(cfg, policy.reader(), None).unwrap(), 64)
}

fuzz_target!(|data: &[u8]| {
    let mut node = node();
    let mut rest = data;
    let mut now = 1_000_000_000u64;
    while rest.len() >= 2 {
        let port = match rest[0] % 3 {
            0 => PortId::Internal,
            1 => PortId::External,
            _ => PortId::Host,
        };
        let len = usize::from(rest[1]).min(rest.len() - 2);
        node.inject(port, &rest[2..2 + len]);
        rest = &rest[2 + len..];
        now += u64::from(data.len() as u32) * 1_000_000;
        node.poll(now);
        for p in [PortId::Internal, PortId::External, PortId::Host] {
            node.take_output(p);
        }
    }
    node.engine().flows().check_invariants().unwrap();
});
