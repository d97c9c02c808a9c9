//! A node on in-memory rings with a small policy and the neighbours of a typical lab:
//! client 10.10.0.2 behind the internal port, gateway 203.0.113.1 outside.
#![allow(dead_code)]

use std::time::Duration;

use sluice_dataplane::allowlist::{allowlist_channel, AllowlistConfig, AllowlistWriter};
use sluice_dataplane::config::{EngineConfig, HostLaneConfig, PortConfig};
use sluice_dataplane::counters::{Counter, DropReason};
use sluice_dataplane::engine::{Action, Engine, PortId};
use sluice_dataplane::policy_handle::PolicyHandle;
use sluice_dataplane::ring::RingNode;
use sluice_dataplane::testing::{inspect, verify_checksums, FrameBuilder, Inspected};
use sluice_policy::RuleKey;

pub const SEC: u64 = 1_000_000_000;

pub const NODE_IN_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 1];
pub const NODE_OUT_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 2];
pub const NODE_HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 3];
pub const TAP_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 4];
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 2, 2];
pub const CLIENT2_MAC: [u8; 6] = [0x02, 0, 0, 0, 2, 3];
pub const GW_MAC: [u8; 6] = [0x02, 0, 0, 0, 3, 1];

pub const fn ip(a: u8, b: u8, c: u8, d: u8) -> u32 {
    u32::from_be_bytes([a, b, c, d])
}

pub const NODE_IN: u32 = ip(10, 10, 0, 1);
pub const NODE_OUT: u32 = ip(203, 0, 113, 2);
pub const GW: u32 = ip(203, 0, 113, 1);
pub const CLIENT: u32 = ip(10, 10, 0, 2);
pub const CLIENT2: u32 = ip(10, 10, 0, 3);
pub const WEB: u32 = ip(198, 51, 100, 10);
pub const BLOCKED: u32 = ip(192, 0, 2, 99);
pub const API_IP: u32 = ip(192, 0, 2, 50);
pub const UPSTREAM_DNS: u32 = ip(198, 51, 100, 53);

pub const POLICY: &str = r#"{
  "default_action": "deny",
  "source_groups": [
    { "id": "clients", "priority": 10, "sources": { "cidrs": ["10.10.0.0/24"] },
      "rules": [
        { "id": "web", "action": "allow", "match": { "proto": "tcp", "dst_ports": [80, 443], "dst_cidrs": ["198.51.100.0/24"] } },
        { "id": "dns", "action": "allow", "match": { "proto": "udp", "dst_ports": [53, 123], "dst_cidrs": ["198.51.100.0/24"] } },
        { "id": "api", "action": "allow", "match": { "proto": "tcp", "dst_ports": [443], "hostnames": ["api.example.com"] } },
        { "id": "ping", "action": "allow", "match": { "proto": "icmp", "icmp_types": [8] } }
      ],
      "default_action": "deny" }
  ]
}"#;

pub fn config() -> EngineConfig {
    let internal = PortConfig { mac: NODE_IN_MAC, ip: NODE_IN, prefix_len: 24, vlan: None };
    let external = PortConfig { mac: NODE_OUT_MAC, ip: NODE_OUT, prefix_len: 24, vlan: None };
    let mut cfg = EngineConfig::new(internal, external, GW);
    cfg.host_lane = Some(HostLaneConfig { engine_mac: NODE_HOST_MAC, host_mac: TAP_MAC });
    cfg.flow_capacity = 1024;
    cfg
}

pub struct Lab {
    pub node: RingNode,
    pub policy: PolicyHandle,
    pub allow: AllowlistWriter,
    pub now: u64,
}

impl Lab {
    pub fn new() -> Lab {
        Lab::with(config(), POLICY)
    }

    pub fn with(cfg: EngineConfig, policy_json: &str) -> Lab {
        let policy = PolicyHandle::new(sluice_policy::compile_json(policy_json).expect("test policy"));
        let (allow, mut readers) = allowlist_channel(1, &AllowlistConfig { capacity: 1024, channel_capacity: 64 });
        let engine = Engine::new(cfg, policy.reader(), readers.pop()).expect("engine");
        Lab { node: RingNode::new(engine, 256), policy, allow, now: 10 * SEC }
    }

    /// A lab whose client and gateway MACs are already known.
    pub fn resolved() -> Lab {
        let mut lab = Lab::new();
        lab.resolve();
        lab
    }

    pub fn resolve(&mut self) {
        let req = FrameBuilder::arp_request(CLIENT_MAC, CLIENT, NODE_IN).build();
        assert_eq!(self.send(PortId::Internal, &req), Action::Consumed);
        let req = FrameBuilder::arp_request(CLIENT2_MAC, CLIENT2, NODE_IN).build();
        assert_eq!(self.send(PortId::Internal, &req), Action::Consumed);
        let rep = FrameBuilder::arp_reply(GW_MAC, GW, NODE_OUT_MAC, NODE_OUT).build();
        assert_eq!(self.send(PortId::External, &rep), Action::Consumed);
        self.drain_all();
    }

    /// Inject one frame, run the node once, and return the engine's action for it.
    pub fn send(&mut self, port: PortId, frame: &[u8]) -> Action {
        assert!(self.node.inject(port, frame));
        assert_eq!(self.node.poll(self.now), 1);
        self.node.last_actions(port)[0]
    }

    pub fn out(&mut self, port: PortId) -> Vec<Vec<u8>> {
        self.node.take_output(port)
    }

    /// The single frame transmitted on `port`, checked for valid checksums.
    pub fn one_out(&mut self, port: PortId) -> Inspected {
        let out = self.out(port);
        assert_eq!(out.len(), 1, "expected one frame on {port:?}, got {}", out.len());
        verify_checksums(&out[0]).expect("checksums of transmitted frame");
        inspect(&out[0]).expect("transmitted frame parses")
    }

    pub fn drain_all(&mut self) {
        for p in [PortId::Internal, PortId::External, PortId::Host] {
            self.out(p);
        }
    }

    pub fn advance(&mut self, ns: u64) {
        self.now += ns;
    }

    /// Run housekeeping until the whole flow table has been swept at least once.
    pub fn sweep_all(&mut self) {
        let cap = self.engine().flows().capacity();
        let budget = self.engine().config().sweep_budget;
        for _ in 0..cap / budget + 2 {
            self.node.poll(self.now);
        }
    }

    pub fn engine(&self) -> &Engine {
        self.node.engine()
    }

    pub fn counter(&self, c: Counter) -> u64 {
        self.engine().counters().get(c)
    }

    pub fn dropped(&self, r: DropReason) -> u64 {
        self.engine().counters().dropped(r)
    }

    pub fn publish(&mut self, json: &str) -> u32 {
        self.policy.publish(sluice_policy::compile_json(json).expect("policy"))
    }

    /// Learn `addr` for the hostname rule `name` resolves to for `client`, as the DNS proxy
    /// would, and wait until the worker applied it (the next poll drains it).
    pub fn learn(&mut self, client: u32, name: &str, addr: u32, ttl: u64) -> RuleKey {
        let d = self.policy.current().policy.dns_decision(client, name);
        assert!(d.allowed, "{name} must be allowed for the test");
        let key = d.learn_for[0];
        let t = self.allow.learn(key, addr, self.now + ttl, Duration::from_secs(1)).expect("learn");
        assert!(!self.allow.is_applied(t));
        self.node.poll(self.now);
        assert!(self.allow.is_applied(t), "worker applied the update");
        key
    }
}

pub fn tcp(src: u32, dst: u32, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mac = if src == CLIENT2 { CLIENT2_MAC } else { CLIENT_MAC };
    FrameBuilder::tcp(mac, NODE_IN_MAC, src, dst, sport, dport).flags(flags).ttl(64).payload(b"hello").build()
}

pub fn tcp_in(src: u32, dport_nat: u16, sport: u16, flags: u8) -> Vec<u8> {
    FrameBuilder::tcp(GW_MAC, NODE_OUT_MAC, src, NODE_OUT, sport, dport_nat).flags(flags).ttl(60).build()
}

pub fn udp(src: u32, dst: u32, sport: u16, dport: u16) -> Vec<u8> {
    FrameBuilder::udp(CLIENT_MAC, NODE_IN_MAC, src, dst, sport, dport).ttl(64).payload(b"query").build()
}

pub fn udp_in(src: u32, sport: u16, dport_nat: u16) -> Vec<u8> {
    FrameBuilder::udp(GW_MAC, NODE_OUT_MAC, src, NODE_OUT, sport, dport_nat).ttl(60).payload(b"answer").build()
}
