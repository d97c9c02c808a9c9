//! Differential property test of the established-flow fast path: two engines, identical but
//! for the fast path (on in one, off in the other), get the same random bursts — plain
//! segments, SYN/FIN/RST, UDP, replies, TTLs about to expire, tagged frames, frames for
//! another MAC, echo requests — interleaved with time passing (hop cache and flow expiry),
//! policy swaps and a gateway that changes its MAC. After every burst they must agree on
//! every action, every output byte, every generated frame, every counter and the whole flow
//! table.

mod common;

use common::*;
use proptest::prelude::*;
use sluice_dataplane::counters::{Counter, DropReason};
use sluice_dataplane::engine::{Action, Engine, PortId};
use sluice_dataplane::flow::Flow;
use sluice_dataplane::packet::{BufPacket, Packet};
use sluice_dataplane::policy_handle::PolicyHandle;
use sluice_dataplane::testing::{FrameBuilder, ACK, FIN, RST, SYN};

/// The test policy without UDP: swapping to it evicts UDP flows lazily.
const NO_UDP: &str = r#"{
  "default_action": "deny",
  "source_groups": [
    { "id": "clients", "priority": 10, "sources": { "cidrs": ["10.10.0.0/24"] },
      "rules": [
        { "id": "web", "action": "allow", "match": { "proto": "tcp", "dst_ports": [80, 443], "dst_cidrs": ["198.51.100.0/24"] } }
      ],
      "default_action": "deny" }
  ]
}"#;

const CLIENTS: u8 = 4;

fn client_ip(c: u8) -> u32 {
    CLIENT + 10 + u32::from(c)
}

fn client_mac(c: u8) -> [u8; 6] {
    [2, 0, 0, 0, 9, c]
}

#[derive(Debug, Clone)]
enum Frame {
    Out { client: u8, sport: u8, dst: u8, udp: bool, flags: u8, ttl: u8, odd: u8 },
    In { slot: u8, flags: u8, ttl: u8, odd: u8 },
    Echo { client: u8 },
}

#[derive(Debug, Clone)]
enum Op {
    Burst { external: bool, frames: Vec<Frame> },
    Wait(u32),
    Swap(bool),
    GatewayMac(u8),
}

fn flags() -> impl Strategy<Value = u8> {
    prop::sample::select(vec![ACK, ACK, ACK, ACK | 0x08, SYN, SYN | ACK, FIN | ACK, RST, 0])
}

fn ttl() -> impl Strategy<Value = u8> {
    prop::sample::select(vec![64, 64, 64, 2, 1])
}

/// Mostly ordinary frames; now and then a tag, another MAC, or IP options.
fn odd() -> impl Strategy<Value = u8> {
    prop::sample::select(vec![0, 0, 0, 0, 0, 0, 1, 2, 3])
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        5 => (0..CLIENTS + 1, 0u8..6, 0u8..3, any::<bool>(), flags(), ttl(), odd()).prop_map(
            |(client, sport, dst, udp, flags, ttl, odd)| Frame::Out { client, sport, dst, udp, flags, ttl, odd }
        ),
        4 => (any::<u8>(), flags(), ttl(), odd()).prop_map(|(slot, flags, ttl, odd)| Frame::In { slot, flags, ttl, odd }),
        1 => (0..CLIENTS).prop_map(|client| Frame::Echo { client }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (any::<bool>(), prop::collection::vec(frame(), 1..80))
            .prop_map(|(external, frames)| Op::Burst { external, frames }),
        2 => (0u32..150_000).prop_map(Op::Wait),
        1 => any::<bool>().prop_map(Op::Swap),
        1 => (0u8..2).prop_map(Op::GatewayMac),
    ]
}

fn apply_odd(b: FrameBuilder, odd: u8) -> FrameBuilder {
    match odd {
        1 => b.vlan(Some(7)),
        2 => b.dst_mac([2, 0, 0, 0, 7, 7]),
        3 => b.ip_options(&[1, 1, 1, 0]),
        _ => b,
    }
}

struct Twin {
    engines: [Engine; 2],
    policy: PolicyHandle,
    now: u64,
}

impl Twin {
    fn new() -> Twin {
        let mut cfg = config();
        cfg.flow_capacity = 32;
        cfg.nat_port_min = 3000;
        cfg.nat_port_max = 3047;
        let ms = 1_000_000;
        cfg.timeouts.tcp_syn = 40 * ms;
        cfg.timeouts.tcp_established = 120 * ms;
        cfg.timeouts.tcp_fin = 30 * ms;
        cfg.timeouts.tcp_linger = 10 * ms;
        cfg.timeouts.udp_new = 30 * ms;
        cfg.timeouts.udp_replied = 90 * ms;
        let policy = PolicyHandle::new(sluice_policy::compile_json(POLICY).expect("test policy"));
        let engines = [true, false].map(|fast| {
            let mut e = Engine::new(cfg.clone(), policy.reader(), None).expect("engine");
            e.set_fast_path(fast);
            e
        });
        let mut twin = Twin { engines, policy, now: 10 * SEC };
        let mut arps: Vec<Vec<u8>> =
            (0..CLIENTS).map(|c| FrameBuilder::arp_request(client_mac(c), client_ip(c), NODE_IN).build()).collect();
        twin.burst(PortId::Internal, &arps).expect("clients resolve");
        arps = vec![FrameBuilder::arp_reply(GW_MAC, GW, NODE_OUT_MAC, NODE_OUT).build()];
        twin.burst(PortId::External, &arps).expect("gateway resolves");
        twin
    }

    fn build(&self, f: &Frame) -> Option<Vec<u8>> {
        Some(match *f {
            Frame::Out { client, sport, dst, udp, flags, ttl, odd } => {
                let (src, mac) = (client_ip(client), client_mac(client));
                let (dst, sport) = (WEB + u32::from(dst), 1000 + u16::from(sport));
                let b = if udp {
                    FrameBuilder::udp(mac, NODE_IN_MAC, src, dst, sport, 53)
                } else {
                    FrameBuilder::tcp(mac, NODE_IN_MAC, src, dst, sport, 443).flags(flags)
                };
                apply_odd(b.ttl(ttl).payload(b"data"), odd).build()
            }
            Frame::In { slot, flags, ttl, odd } => {
                let flows = self.engines[0].flows();
                let live: Vec<_> = flows.iter().map(|(_, f)| flows.reply_key(f)).collect();
                let r = *live.get(usize::from(slot) % live.len().max(1))?;
                let b = if r.proto == 17 {
                    FrameBuilder::udp(GW_MAC, NODE_OUT_MAC, r.src, r.dst, r.sport, r.dport)
                } else {
                    FrameBuilder::tcp(GW_MAC, NODE_OUT_MAC, r.src, r.dst, r.sport, r.dport).flags(flags)
                };
                apply_odd(b.ttl(ttl).payload(b"reply"), odd).build()
            }
            Frame::Echo { client } => {
                FrameBuilder::icmp_echo_request(client_mac(client), NODE_IN_MAC, client_ip(client), WEB, 7, 1).build()
            }
        })
    }

    /// Run one burst through both engines and compare everything observable.
    fn burst(&mut self, from: PortId, frames: &[Vec<u8>]) -> Result<(), TestCaseError> {
        let mut outputs = Vec::new();
        for e in &mut self.engines {
            let mut packets: Vec<BufPacket> = frames.iter().map(|f| BufPacket::from_frame(f)).collect();
            let mut actions = vec![Action::Consumed; frames.len()];
            e.process_burst(from, &mut packets, &mut actions, self.now);
            let bytes: Vec<Vec<u8>> = packets.iter().map(|p| p.data().to_vec()).collect();
            let mut generated = Vec::new();
            e.drain_generated(|port, f| generated.push((port, f.to_vec())));
            outputs.push((actions, bytes, generated));
        }
        prop_assert_eq!(&outputs[0].0, &outputs[1].0, "actions");
        prop_assert_eq!(&outputs[0].1, &outputs[1].1, "output bytes");
        prop_assert_eq!(&outputs[0].2, &outputs[1].2, "generated frames");
        self.compare_state()
    }

    fn compare_state(&self) -> Result<(), TestCaseError> {
        let [fast, general] = &self.engines;
        for &c in Counter::ALL {
            prop_assert_eq!(fast.counters().get(c), general.counters().get(c), "counter {:?}", c);
        }
        for &r in DropReason::ALL {
            prop_assert_eq!(fast.counters().dropped(r), general.counters().dropped(r), "drop {:?}", r);
        }
        let flows = |e: &Engine| e.flows().iter().map(|(i, f)| (i, *f)).collect::<Vec<(u32, Flow)>>();
        prop_assert_eq!(flows(fast), flows(general), "flow tables");
        fast.flows().check_invariants().map_err(TestCaseError::fail)?;
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn fast_path_changes_nothing_but_speed(ops in prop::collection::vec(op(), 1..40)) {
        let mut twin = Twin::new();
        for op in ops {
            match op {
                Op::Burst { external, frames } => {
                    let frames: Vec<Vec<u8>> = frames.iter().filter_map(|f| twin.build(f)).collect();
                    let from = if external { PortId::External } else { PortId::Internal };
                    twin.burst(from, &frames)?;
                }
                Op::Wait(us) => {
                    twin.now += u64::from(us) * 1000;
                    let now = twin.now;
                    for e in &mut twin.engines {
                        e.housekeeping(now);
                    }
                    twin.compare_state()?;
                }
                Op::Swap(no_udp) => {
                    let json = if no_udp { NO_UDP } else { POLICY };
                    twin.policy.publish(sluice_policy::compile_json(json).expect("policy"));
                }
                Op::GatewayMac(v) => {
                    let mac = if v == 0 { GW_MAC } else { [2, 0, 0, 0, 3, 9] };
                    let arp = FrameBuilder::arp_reply(mac, GW, NODE_OUT_MAC, NODE_OUT).build();
                    twin.burst(PortId::External, &[arp])?;
                }
            }
        }
    }
}

/// The fast path runs at all: after the handshake, an established flow's plain segments
/// in both directions take it.
#[test]
fn established_flow_takes_the_fast_path() {
    let mut twin = Twin::new();
    let (c, sport) = (0, 1001);
    let out = |flags| FrameBuilder::tcp(client_mac(c), NODE_IN_MAC, client_ip(c), WEB, sport, 443).flags(flags).build();
    twin.burst(PortId::Internal, &[out(SYN)]).unwrap();
    let nat_port = twin.engines[0].flows().iter().next().expect("flow opened").1.nat_port;
    let back = |flags| FrameBuilder::tcp(GW_MAC, NODE_OUT_MAC, WEB, NODE_OUT, 443, nat_port).flags(flags).build();
    twin.burst(PortId::External, &[back(SYN | ACK)]).unwrap();
    twin.burst(PortId::Internal, &[out(ACK)]).unwrap();
    assert_eq!(twin.engines[0].fast_path_packets(), 0, "handshake packets change the state: general path");
    twin.burst(PortId::Internal, &[out(ACK), out(ACK | 0x08)]).unwrap();
    twin.burst(PortId::External, &[back(ACK)]).unwrap();
    assert_eq!(twin.engines[0].fast_path_packets(), 3);
    assert_eq!(twin.engines[1].fast_path_packets(), 0);
    twin.burst(PortId::Internal, &[out(FIN | ACK)]).unwrap();
    assert_eq!(twin.engines[0].fast_path_packets(), 3, "FIN: general path");
    let fast = &twin.engines[0];
    assert_eq!(fast.counters().get(Counter::ExternalTxPackets), 5);
    assert_eq!(fast.counters().get(Counter::DroppedPackets), 0);
}
