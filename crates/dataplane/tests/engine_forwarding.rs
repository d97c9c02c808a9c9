//! Forwarding through the engine on hand-built frames: SNAT, replies, ARP, TTL, ICMP errors,
//! VLANs and the service lane. Every transmitted frame's checksums are recomputed from
//! scratch by the independent verifier in `testing`.

mod common;

use common::*;
use sluice_dataplane::counters::{Counter, DropReason};
use sluice_dataplane::engine::{Action, PortId};
use sluice_dataplane::testing::{ip_packet, FrameBuilder, L4Info, ACK, SYN};

#[test]
fn allowed_tcp_is_source_natted_and_the_reply_translated_back() {
    let mut lab = Lab::resolved();
    let a = lab.send(PortId::Internal, &tcp(CLIENT, WEB, 40000, 443, SYN));
    assert_eq!(a, Action::Forward(PortId::External));
    let out = lab.one_out(PortId::External);
    assert_eq!(out.src_mac, NODE_OUT_MAC);
    assert_eq!(out.dst_mac, GW_MAC);
    assert_eq!(out.ip().src, NODE_OUT, "source translated to the external address");
    assert_eq!(out.ip().dst, WEB);
    assert_eq!(out.ip().ttl, 63);
    assert_eq!(out.tcp().payload, b"hello");
    let nat_port = out.tcp().sport;

    let a = lab.send(PortId::External, &tcp_in(WEB, nat_port, 443, SYN | ACK));
    assert_eq!(a, Action::Forward(PortId::Internal));
    let back = lab.one_out(PortId::Internal);
    assert_eq!(back.dst_mac, CLIENT_MAC);
    assert_eq!(back.src_mac, NODE_IN_MAC);
    assert_eq!(back.ip().dst, CLIENT);
    assert_eq!(back.tcp().dport, 40000);
    assert_eq!(back.ip().ttl, 59);
    assert_eq!(lab.counter(Counter::AllowedByRule), 1);
    assert_eq!(lab.counter(Counter::FlowsOpened), 1);
}

#[test]
fn allowed_udp_and_icmp_echo_pass_both_ways() {
    let mut lab = Lab::resolved();
    assert_eq!(lab.send(PortId::Internal, &udp(CLIENT, WEB, 5353, 53)), Action::Forward(PortId::External));
    let out = lab.one_out(PortId::External);
    assert_eq!(out.ip().src, NODE_OUT);
    let L4Info::Udp(u) = &out.l4 else { panic!("not udp") };
    let nat_port = u.sport;
    assert_eq!(lab.send(PortId::External, &udp_in(WEB, 53, nat_port)), Action::Forward(PortId::Internal));
    let back = lab.one_out(PortId::Internal);
    assert_eq!(back.ip().dst, CLIENT);
    let L4Info::Udp(u) = &back.l4 else { panic!("not udp") };
    assert_eq!(u.dport, 5353);

    let ping = FrameBuilder::icmp_echo_request(CLIENT_MAC, NODE_IN_MAC, CLIENT, BLOCKED, 777, 1).build();
    assert_eq!(lab.send(PortId::Internal, &ping), Action::Forward(PortId::External));
    let out = lab.one_out(PortId::External);
    let L4Info::Icmp(i) = &out.l4 else { panic!("not icmp") };
    assert_eq!(out.ip().src, NODE_OUT);
    let nat_id = i.id;
    let pong = FrameBuilder::icmp_echo_reply(GW_MAC, NODE_OUT_MAC, BLOCKED, NODE_OUT, nat_id, 1).build();
    assert_eq!(lab.send(PortId::External, &pong), Action::Forward(PortId::Internal));
    let back = lab.one_out(PortId::Internal);
    let L4Info::Icmp(i) = &back.l4 else { panic!("not icmp") };
    assert_eq!((back.ip().dst, i.id, i.icmp_type), (CLIENT, 777, 0));
}

#[test]
fn udp_without_checksum_keeps_it_unset() {
    let mut lab = Lab::resolved();
    let f = FrameBuilder::udp(CLIENT_MAC, NODE_IN_MAC, CLIENT, WEB, 5000, 123).zero_udp_checksum().build();
    assert_eq!(lab.send(PortId::Internal, &f), Action::Forward(PortId::External));
    let out = lab.one_out(PortId::External);
    let L4Info::Udp(u) = &out.l4 else { panic!("not udp") };
    assert_eq!(u.checksum, 0);
}

#[test]
fn denied_traffic_is_dropped_with_its_reason() {
    let mut lab = Lab::resolved();
    let a = lab.send(PortId::Internal, &tcp(CLIENT, BLOCKED, 40000, 443, SYN));
    assert_eq!(a, Action::Drop(DropReason::PolicyDenied));
    assert!(lab.out(PortId::External).is_empty());
    assert_eq!(lab.dropped(DropReason::PolicyDenied), 1);
    assert_eq!(lab.counter(Counter::DeniedByGroupDefault), 1);
    // Outside cannot open anything.
    let a = lab.send(PortId::External, &tcp_in(WEB, 40000, 443, SYN));
    assert_eq!(a, Action::Drop(DropReason::InboundNoFlow));
    // A mid-stream segment with no flow.
    let a = lab.send(PortId::Internal, &tcp(CLIENT, WEB, 40001, 443, ACK));
    assert_eq!(a, Action::Drop(DropReason::TcpNoFlow));
}

#[test]
fn arp_requests_for_the_node_are_answered() {
    let mut lab = Lab::new();
    let req = FrameBuilder::arp_request(CLIENT_MAC, CLIENT, NODE_IN).build();
    assert_eq!(lab.send(PortId::Internal, &req), Action::Consumed);
    let reply = lab.one_out(PortId::Internal);
    let arp = reply.arp.expect("an ARP reply");
    assert_eq!(arp.op, 2);
    assert_eq!((arp.sender_mac, arp.sender_ip), (NODE_IN_MAC, NODE_IN));
    assert_eq!((arp.target_mac, arp.target_ip), (CLIENT_MAC, CLIENT));
    assert_eq!(reply.dst_mac, CLIENT_MAC);
    // Not for us: ignored.
    let other = FrameBuilder::arp_request(CLIENT_MAC, CLIENT, ip(10, 10, 0, 77)).build();
    assert_eq!(lab.send(PortId::Internal, &other), Action::Consumed);
    assert!(lab.out(PortId::Internal).is_empty());
    assert_eq!(lab.counter(Counter::ArpRequestsAnswered), 1);
}

#[test]
fn unknown_next_hop_is_resolved_then_the_packet_forwarded() {
    let mut lab = Lab::new();
    let req = FrameBuilder::arp_request(CLIENT_MAC, CLIENT, NODE_IN).build();
    lab.send(PortId::Internal, &req);
    lab.drain_all();
    // Gateway unknown: the SYN waits and an ARP request goes out.
    assert_eq!(lab.send(PortId::Internal, &tcp(CLIENT, WEB, 40000, 443, SYN)), Action::Consumed);
    let probe = lab.one_out(PortId::External);
    let arp = probe.arp.expect("ARP request");
    assert_eq!((arp.op, arp.target_ip, arp.sender_ip), (1, GW, NODE_OUT));
    assert_eq!(probe.dst_mac, [0xFF; 6]);
    // The gateway answers: the parked SYN leaves with its MAC.
    let rep = FrameBuilder::arp_reply(GW_MAC, GW, NODE_OUT_MAC, NODE_OUT).build();
    assert_eq!(lab.send(PortId::External, &rep), Action::Consumed);
    let out = lab.one_out(PortId::External);
    assert_eq!(out.dst_mac, GW_MAC);
    assert_eq!(out.ip().src, NODE_OUT);
    assert_eq!(out.tcp().flags, SYN);
}

#[test]
fn ttl_one_gets_time_exceeded_from_the_node() {
    let mut lab = Lab::resolved();
    let f = FrameBuilder::udp(CLIENT_MAC, NODE_IN_MAC, CLIENT, WEB, 33434, 53).ttl(1).build();
    assert_eq!(lab.send(PortId::Internal, &f), Action::Drop(DropReason::TtlExceeded));
    assert!(lab.out(PortId::External).is_empty());
    let te = lab.one_out(PortId::Internal);
    assert_eq!(te.ip().src, NODE_IN);
    assert_eq!(te.ip().dst, CLIENT);
    assert_eq!(te.dst_mac, CLIENT_MAC);
    let L4Info::Icmp(i) = &te.l4 else { panic!("not icmp") };
    assert_eq!((i.icmp_type, i.code), (11, 0));
    let q = i.quoted.as_ref().expect("quotes the original");
    assert_eq!((q.src, q.dst, q.sport, q.dport), (CLIENT, WEB, Some(33434), Some(53)));
    assert_eq!(lab.counter(Counter::IcmpErrorsSent), 1);
    // TTL 2 still passes, leaving with 1.
    let f = FrameBuilder::udp(CLIENT_MAC, NODE_IN_MAC, CLIENT, WEB, 33435, 53).ttl(2).build();
    assert_eq!(lab.send(PortId::Internal, &f), Action::Forward(PortId::External));
    assert_eq!(lab.one_out(PortId::External).ip().ttl, 1);
}

#[test]
fn icmp_errors_about_a_flow_are_translated_to_the_inside_host() {
    let mut lab = Lab::resolved();
    lab.send(PortId::Internal, &udp(CLIENT, WEB, 5353, 123));
    let sent = lab.out(PortId::External).remove(0);
    let nat_port = sluice_dataplane::testing::inspect(&sent).unwrap().udp().sport;
    // A router outside reports the port unreachable, quoting what we sent.
    let quoted = ip_packet(&sent).to_vec();
    let err = FrameBuilder::icmp_error(GW_MAC, NODE_OUT_MAC, GW, NODE_OUT, 3, 3, &quoted).build();
    assert_eq!(lab.send(PortId::External, &err), Action::Forward(PortId::Internal));
    let back = lab.one_out(PortId::Internal);
    assert_eq!(back.ip().dst, CLIENT);
    let L4Info::Icmp(i) = &back.l4 else { panic!("not icmp") };
    assert_eq!((i.icmp_type, i.code), (3, 3));
    let q = i.quoted.as_ref().expect("quoted datagram");
    assert_eq!((q.src, q.dst, q.sport, q.dport), (CLIENT, WEB, Some(5353), Some(123)));
    assert_ne!(nat_port, 0);
    assert_eq!(lab.counter(Counter::IcmpErrorsTranslated), 1);
    // An error about nothing we sent is dropped.
    let mut stranger = quoted.clone();
    stranger[12..16].copy_from_slice(&ip(203, 0, 113, 77).to_be_bytes());
    let err = FrameBuilder::icmp_error(GW_MAC, NODE_OUT_MAC, GW, NODE_OUT, 3, 3, &stranger).build();
    assert!(matches!(lab.send(PortId::External, &err), Action::Drop(_)));
}

#[test]
fn vlan_tags_are_checked_and_rewritten_per_port() {
    let mut cfg = config();
    cfg.internal.vlan = Some(100);
    let mut lab = Lab::with(cfg, POLICY);
    let req = FrameBuilder::arp_request(CLIENT_MAC, CLIENT, NODE_IN).vlan(Some(100)).build();
    assert_eq!(lab.send(PortId::Internal, &req), Action::Consumed);
    assert_eq!(lab.one_out(PortId::Internal).vlan, Some(100), "ARP reply tagged");
    let rep = FrameBuilder::arp_reply(GW_MAC, GW, NODE_OUT_MAC, NODE_OUT).build();
    lab.send(PortId::External, &rep);
    // Untagged on a tagged port: refused.
    assert_eq!(lab.send(PortId::Internal, &tcp(CLIENT, WEB, 1, 443, SYN)), Action::Drop(DropReason::VlanMismatch));
    // Tagged in, untagged out, and the reply gets its tag back.
    let syn = FrameBuilder::tcp(CLIENT_MAC, NODE_IN_MAC, CLIENT, WEB, 40000, 443).flags(SYN).vlan(Some(100)).build();
    assert_eq!(lab.send(PortId::Internal, &syn), Action::Forward(PortId::External));
    let out = lab.one_out(PortId::External);
    assert_eq!(out.vlan, None);
    let back = tcp_in(WEB, out.tcp().sport, 443, SYN | ACK);
    assert_eq!(lab.send(PortId::External, &back), Action::Forward(PortId::Internal));
    let b = lab.one_out(PortId::Internal);
    assert_eq!(b.vlan, Some(100));
    assert_eq!(b.ip().dst, CLIENT);
}

#[test]
fn the_service_lane_carries_dns_to_the_node_and_its_upstream_queries_out() {
    let mut lab = Lab::resolved();
    // Client asks the node's resolver address: delivered to the host untouched but for L2.
    let q = FrameBuilder::udp(CLIENT_MAC, NODE_IN_MAC, CLIENT, NODE_IN, 5555, 53).build();
    assert_eq!(lab.send(PortId::Internal, &q), Action::Forward(PortId::Host));
    let up = lab.one_out(PortId::Host);
    assert_eq!((up.dst_mac, up.src_mac), (TAP_MAC, NODE_HOST_MAC));
    assert_eq!(up.ip().ttl, 64);
    // The host's proxy asks its upstream: tracked and translated like a client flow.
    let fwd = FrameBuilder::udp(TAP_MAC, NODE_HOST_MAC, NODE_IN, UPSTREAM_DNS, 41000, 53).build();
    assert_eq!(lab.send(PortId::Host, &fwd), Action::Forward(PortId::External));
    let out = lab.one_out(PortId::External);
    assert_eq!(out.ip().src, NODE_OUT);
    let nat = out.udp().sport;
    assert_eq!(lab.send(PortId::External, &udp_in(UPSTREAM_DNS, 53, nat)), Action::Forward(PortId::Host));
    let ans = lab.one_out(PortId::Host);
    assert_eq!((ans.ip().dst, ans.udp().dport), (NODE_IN, 41000));
    // The proxy answers the client.
    let a = FrameBuilder::udp(TAP_MAC, NODE_HOST_MAC, NODE_IN, CLIENT, 53, 5555).build();
    assert_eq!(lab.send(PortId::Host, &a), Action::Forward(PortId::Internal));
    let to_client = lab.one_out(PortId::Internal);
    assert_eq!((to_client.dst_mac, to_client.ip().dst), (CLIENT_MAC, CLIENT));
    // Host ARP: the engine answers for any address.
    let who = FrameBuilder::arp_request(TAP_MAC, NODE_IN, UPSTREAM_DNS).build();
    assert_eq!(lab.send(PortId::Host, &who), Action::Consumed);
    let arp = lab.one_out(PortId::Host).arp.expect("proxy ARP reply");
    assert_eq!((arp.sender_mac, arp.sender_ip), (NODE_HOST_MAC, UPSTREAM_DNS));
    assert_eq!(lab.counter(Counter::HostOriginatedFlows), 1);
}

#[test]
fn malformed_frames_are_counted_by_cause() {
    let mut lab = Lab::resolved();
    let bad = FrameBuilder::tcp(CLIENT_MAC, NODE_IN_MAC, CLIENT, WEB, 1, 443).flags(SYN).corrupt_ip_checksum().build();
    assert_eq!(lab.send(PortId::Internal, &bad), Action::Drop(DropReason::Ipv4BadChecksum));
    assert_eq!(lab.send(PortId::Internal, &[0u8; 8]), Action::Drop(DropReason::EthernetTruncated));
    let frag = FrameBuilder::udp(CLIENT_MAC, NODE_IN_MAC, CLIENT, WEB, 1, 53).mf(true).build();
    assert_eq!(lab.send(PortId::Internal, &frag), Action::Drop(DropReason::Ipv4Fragment));
    let mut v6 = vec![0u8; 60];
    v6[0..6].copy_from_slice(&NODE_IN_MAC);
    v6[12..14].copy_from_slice(&0x86DDu16.to_be_bytes());
    assert_eq!(lab.send(PortId::Internal, &v6), Action::Drop(DropReason::Ipv6));
    let other_mac = FrameBuilder::tcp(CLIENT_MAC, [2, 9, 9, 9, 9, 9], CLIENT, WEB, 1, 443).flags(SYN).build();
    assert_eq!(lab.send(PortId::Internal, &other_mac), Action::Drop(DropReason::NotForUs));
    let spoofed = FrameBuilder::tcp(CLIENT_MAC, NODE_IN_MAC, ip(172, 16, 0, 1), WEB, 1, 443).flags(SYN).build();
    assert_eq!(lab.send(PortId::Internal, &spoofed), Action::Drop(DropReason::Martian));
    assert_eq!(lab.counter(Counter::DroppedPackets), 6);
}
