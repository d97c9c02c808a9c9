//! Property tests: the engine never panics on any input; the flow table never exceeds its
//! capacity and stays consistent; the SNAT mapping is a bijection over live flows.

mod common;

use std::collections::HashSet;

use common::*;
use proptest::prelude::*;
use sluice_dataplane::engine::PortId;
use sluice_dataplane::testing::{FrameBuilder, ACK, FIN, RST, SYN};

fn port_of(i: u8) -> PortId {
    match i % 3 {
        0 => PortId::Internal,
        1 => PortId::External,
        _ => PortId::Host,
    }
}

/// A valid frame of some kind, for mutation.
fn seed_frame(kind: u8) -> Vec<u8> {
    match kind % 6 {
        0 => tcp(CLIENT, WEB, 40000, 443, SYN),
        1 => udp(CLIENT, WEB, 5353, 53),
        2 => FrameBuilder::icmp_echo_request(CLIENT_MAC, NODE_IN_MAC, CLIENT, WEB, 9, 1).build(),
        3 => FrameBuilder::arp_request(CLIENT_MAC, CLIENT, NODE_IN).build(),
        4 => {
            let inner = FrameBuilder::udp(NODE_OUT_MAC, GW_MAC, NODE_OUT, WEB, 1024, 53).build_ipv4();
            FrameBuilder::icmp_error(GW_MAC, NODE_OUT_MAC, GW, NODE_OUT, 3, 3, &inner).build()
        }
        _ => FrameBuilder::tcp(CLIENT_MAC, NODE_IN_MAC, CLIENT, WEB, 1, 80)
            .vlan(Some(7))
            .ip_options(&[1, 1, 1, 0])
            .build(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(frames in prop::collection::vec((any::<u8>(), prop::collection::vec(any::<u8>(), 0..160)), 1..20)) {
        let mut lab = Lab::resolved();
        for (port, bytes) in frames {
            let _ = sluice_dataplane::parse::parse_frame(&bytes);
            lab.node.inject(port_of(port), &bytes);
            lab.node.poll(lab.now);
            lab.drain_all();
        }
        lab.node.engine().flows().check_invariants().map_err(TestCaseError::fail)?;
    }

    #[test]
    fn mutated_valid_frames_never_panic(kind in any::<u8>(), port in any::<u8>(), flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
        let mut f = seed_frame(kind);
        for (at, v) in flips {
            let n = f.len();
            f[at % n] ^= v;
        }
        let keep = f.len() - cut % (f.len() / 2 + 1);
        f.truncate(keep);
        let mut lab = Lab::resolved();
        lab.node.inject(port_of(port), &f);
        lab.node.poll(lab.now);
        lab.drain_all();
        lab.node.engine().flows().check_invariants().map_err(TestCaseError::fail)?;
    }
}

#[derive(Debug, Clone)]
enum Op {
    Out { client: u8, sport: u8, dst: u8, udp: bool, flags: u8 },
    In { slot: u8, flags: u8 },
    Wait(u32),
}

fn op() -> impl Strategy<Value = Op> {
    let flags = prop::sample::select(vec![SYN, SYN | ACK, ACK, FIN | ACK, RST]);
    prop_oneof![
        4 => (0u8..6, 0u8..12, 0u8..3, any::<bool>(), flags.clone())
            .prop_map(|(client, sport, dst, udp, flags)| Op::Out { client, sport, dst, udp, flags }),
        3 => (any::<u8>(), flags).prop_map(|(slot, flags)| Op::In { slot, flags }),
        1 => (0u32..200_000).prop_map(Op::Wait),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn flow_table_stays_bounded_and_snat_is_a_bijection(ops in prop::collection::vec(op(), 1..150)) {
        let mut cfg = config();
        cfg.flow_capacity = 16;
        // A small port range so that allocation collides and exhausts.
        cfg.nat_port_min = 3000;
        cfg.nat_port_max = 3023;
        cfg.timeouts.udp_new = 60 * 1_000_000;
        cfg.timeouts.tcp_syn = 80 * 1_000_000;
        let mut lab = Lab::with(cfg, POLICY);
        for c in 0..6u32 {
            let a = FrameBuilder::arp_request([2, 0, 0, 0, 9, c as u8], CLIENT + 10 + c, NODE_IN).build();
            lab.send(PortId::Internal, &a);
        }
        lab.resolve();
        for op in ops {
            match op {
                Op::Out { client, sport, dst, udp: is_udp, flags } => {
                    let src = CLIENT + 10 + u32::from(client);
                    let dst = WEB + u32::from(dst);
                    let mac = [2, 0, 0, 0, 9, client];
                    let sport = 1000 + u16::from(sport);
                    let f = if is_udp {
                        FrameBuilder::udp(mac, NODE_IN_MAC, src, dst, sport, 53).build()
                    } else {
                        FrameBuilder::tcp(mac, NODE_IN_MAC, src, dst, sport, 443).flags(flags).build()
                    };
                    lab.send(PortId::Internal, &f);
                }
                Op::In { slot, flags } => {
                    let flows = lab.engine().flows();
                    let live: Vec<_> = flows.iter().map(|(_, f)| flows.reply_key(f)).collect();
                    if let Some(r) = live.get(usize::from(slot) % live.len().max(1)).copied() {
                        let frame = if r.proto == 17 {
                            FrameBuilder::udp(GW_MAC, NODE_OUT_MAC, r.src, r.dst, r.sport, r.dport).build()
                        } else {
                            FrameBuilder::tcp(GW_MAC, NODE_OUT_MAC, r.src, r.dst, r.sport, r.dport).flags(flags).build()
                        };
                        lab.send(PortId::External, &frame);
                    }
                }
                Op::Wait(us) => {
                    lab.advance(u64::from(us) * 1000);
                    lab.node.poll(lab.now);
                }
            }
            lab.drain_all();
            let flows = lab.engine().flows();
            prop_assert!(flows.len() <= flows.capacity());
            flows.check_invariants().map_err(TestCaseError::fail)?;
            let mut outside = HashSet::new();
            let mut inside = HashSet::new();
            for (_, f) in flows.iter() {
                prop_assert!(outside.insert(flows.reply_key(f)), "two live flows share an outside tuple");
                prop_assert!(inside.insert(f.orig), "two live flows share an inside tuple");
                prop_assert!((3000..=3023).contains(&f.nat_port));
                prop_assert_eq!(flows.nat_ip(f), NODE_OUT);
            }
        }
    }
}
