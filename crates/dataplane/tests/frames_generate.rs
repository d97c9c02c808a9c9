//! Frames the engine originates, checked with the independent inspector and verifier.

use sluice_dataplane::generate::*;
use sluice_dataplane::testing::*;

#[test]
fn arp_request_is_broadcast_and_padded() {
    for vlan in [None, Some(42)] {
        let mut buf = [0xEEu8; 128];
        let n = write_arp_request(&mut buf, vlan, MAC_INTERNAL, IP_INTERNAL, IP_CLIENT);
        assert_eq!(n, 60);
        let f = &buf[..n];
        let i = inspect(f).unwrap();
        assert_eq!((i.dst_mac, i.src_mac, i.vlan, i.ethertype), (MAC_BROADCAST, MAC_INTERNAL, vlan, ETHERTYPE_ARP));
        let a = i.arp();
        assert_eq!(
            (a.op, a.sender_mac, a.sender_ip, a.target_mac, a.target_ip),
            (ARP_REQUEST, MAC_INTERNAL, IP_INTERNAL, MAC_ZERO, IP_CLIENT)
        );
        // Padding is zeroed, whatever the buffer held.
        let body_end = if vlan.is_some() { 18 + 28 } else { 14 + 28 };
        assert!(f[body_end..].iter().all(|&b| b == 0));
        assert_eq!(buf[60], 0xEE, "wrote past the frame");
        // Same bytes as the toolkit's builder.
        let expected = FrameBuilder::arp_request(MAC_INTERNAL, IP_INTERNAL, IP_CLIENT).vlan(vlan).build();
        assert_eq!(f, &expected[..]);
    }
}

#[test]
fn arp_reply_is_unicast() {
    let mut buf = [0u8; 60];
    let n = write_arp_reply(&mut buf, Some(7), MAC_INTERNAL, IP_INTERNAL, MAC_CLIENT, IP_CLIENT);
    assert_eq!(n, 60);
    let i = inspect(&buf).unwrap();
    assert_eq!((i.dst_mac, i.vlan), (MAC_CLIENT, Some(7)));
    let a = i.arp();
    assert_eq!(
        (a.op, a.sender_mac, a.sender_ip, a.target_mac, a.target_ip),
        (ARP_REPLY, MAC_INTERNAL, IP_INTERNAL, MAC_CLIENT, IP_CLIENT)
    );
    let expected = FrameBuilder::arp_reply(MAC_INTERNAL, IP_INTERNAL, MAC_CLIENT, IP_CLIENT).vlan(Some(7)).build();
    assert_eq!(&buf[..], &expected[..]);
}

#[test]
fn small_buffers_give_zero() {
    let mut buf = [0u8; 59];
    assert_eq!(write_arp_request(&mut buf, None, MAC_INTERNAL, IP_INTERNAL, IP_CLIENT), 0);
    assert_eq!(write_arp_reply(&mut buf, None, MAC_INTERNAL, IP_INTERNAL, MAC_CLIENT, IP_CLIENT), 0);
    let orig = FrameBuilder::udp(MAC_CLIENT, MAC_INTERNAL, IP_CLIENT, IP_SERVER, 1, 2).payload(&[9; 100]).build();
    let ip = ip_packet(&orig);
    let need = icmp_error_len(Some(3), ip);
    assert_eq!(need, 18 + 20 + 8 + ip.len());
    let mut buf = vec![0u8; need - 1];
    assert_eq!(write_icmp_error(&mut buf, Some(3), MAC_INTERNAL, MAC_CLIENT, IP_INTERNAL, IP_CLIENT, 3, 13, 1, ip), 0);
    let mut buf = vec![0u8; need];
    assert_eq!(
        write_icmp_error(&mut buf, Some(3), MAC_INTERNAL, MAC_CLIENT, IP_INTERNAL, IP_CLIENT, 3, 13, 1, ip),
        need
    );
}

#[test]
fn time_exceeded_quotes_the_whole_small_packet() {
    let orig = FrameBuilder::tcp(MAC_CLIENT, MAC_INTERNAL, IP_CLIENT, IP_SERVER, 40000, 443)
        .flags(SYN)
        .seq(77)
        .ttl(1)
        .id(0x1234)
        .df(true)
        .build();
    // Pass the packet with the Ethernet padding still behind it: it must not be quoted.
    let mut with_padding = ip_packet(&orig).to_vec();
    with_padding.extend_from_slice(&[0xAA; 6]);
    let mut buf = [0u8; 2048];
    let n =
        write_icmp_time_exceeded(&mut buf, None, MAC_INTERNAL, MAC_CLIENT, IP_INTERNAL, IP_CLIENT, 999, &with_padding);
    assert_eq!(n, 14 + 20 + 8 + 40);
    let f = &buf[..n];
    verify_checksums(f).unwrap();
    let i = inspect(f).unwrap();
    assert_eq!((i.src_mac, i.dst_mac, i.vlan), (MAC_INTERNAL, MAC_CLIENT, None));
    let ip = i.ip();
    assert_eq!((ip.src, ip.dst, ip.ttl, ip.proto, ip.id, ip.tos), (IP_INTERNAL, IP_CLIENT, 64, PROTO_ICMP, 999, 0xC0));
    assert!(!ip.df && !ip.mf && ip.frag_offset == 0 && ip.header_len == 20);
    let icmp = i.icmp();
    assert_eq!((icmp.icmp_type, icmp.code, icmp.rest), (ICMP_TIME_EXCEEDED, 0, 0));
    let q = i.quoted();
    assert_eq!(q.bytes, ip_packet(&orig));
    assert_eq!(
        (q.src, q.dst, q.proto, q.sport, q.dport, q.tcp_seq, q.ttl, q.id),
        (IP_CLIENT, IP_SERVER, PROTO_TCP, Some(40000), Some(443), Some(77), 1, 0x1234)
    );
}

#[test]
fn big_packets_are_quoted_up_to_576_bytes() {
    let orig = FrameBuilder::udp(MAC_CLIENT, MAC_INTERNAL, IP_CLIENT, IP_SERVER, 5000, 53)
        .payload(&(0..1400).map(|i| i as u8).collect::<Vec<_>>())
        .vlan(Some(10))
        .build();
    let ip = ip_packet(&orig);
    let mut buf = [0u8; 2048];
    let n = write_icmp_error(
        &mut buf,
        Some(10),
        MAC_INTERNAL,
        MAC_CLIENT,
        IP_INTERNAL,
        IP_CLIENT,
        ICMP_DEST_UNREACH,
        ICMP_CODE_ADMIN_PROHIBITED,
        5,
        ip,
    );
    assert_eq!(n, 18 + 576);
    let f = &buf[..n];
    verify_checksums(f).unwrap();
    let i = inspect(f).unwrap();
    assert_eq!(i.vlan, Some(10));
    assert_eq!(i.ip().total_len, 576);
    assert_eq!((i.icmp().icmp_type, i.icmp().code), (3, 13));
    let q = i.quoted();
    assert_eq!(q.bytes, &ip[..576 - 28]);
    assert_eq!(usize::from(q.total_len), ip.len(), "the quoted header is unchanged");
    assert_eq!((q.sport, q.dport), (Some(5000), Some(53)));
}

#[test]
fn ip_options_and_minimum_quote() {
    // A header with 40 bytes of options: the quote still has the header and 8 more bytes.
    let orig = FrameBuilder::icmp_echo_request(MAC_CLIENT, MAC_INTERNAL, IP_CLIENT, IP_SERVER, 0x77, 1)
        .ip_options(&[1; 40])
        .build();
    let ip = ip_packet(&orig);
    let mut buf = [0u8; 600];
    let n = write_icmp_error(&mut buf, None, MAC_INTERNAL, MAC_CLIENT, IP_INTERNAL, IP_CLIENT, 3, 1, 0, ip);
    verify_checksums(&buf[..n]).unwrap();
    let i = inspect(&buf[..n]).unwrap();
    let q = i.quoted();
    assert_eq!(q.header_len, 60);
    assert!(q.bytes.len() >= 60 + 8);
    assert_eq!((q.icmp_type, q.icmp_id), (Some(8), Some(0x77)));
}

#[test]
fn frag_needed_carries_the_mtu() {
    let orig =
        FrameBuilder::tcp(MAC_CLIENT, MAC_INTERNAL, IP_CLIENT, IP_SERVER, 1, 2).df(true).payload(&[0; 1480]).build();
    let mut buf = [0u8; 1024];
    let n = write_icmp_frag_needed(
        &mut buf,
        None,
        MAC_INTERNAL,
        MAC_CLIENT,
        IP_INTERNAL,
        IP_CLIENT,
        1496,
        3,
        ip_packet(&orig),
    );
    verify_checksums(&buf[..n]).unwrap();
    let i = inspect(&buf[..n]).unwrap();
    assert_eq!((i.icmp().icmp_type, i.icmp().code, i.icmp().seq), (3, 4, 1496));
}

#[test]
fn error_rules() {
    let ok = FrameBuilder::udp(MAC_CLIENT, MAC_INTERNAL, IP_CLIENT, IP_SERVER, 1, 2).build();
    assert!(icmp_error_allowed(ip_packet(&ok)));
    let echo = FrameBuilder::icmp_echo_request(MAC_CLIENT, MAC_INTERNAL, IP_CLIENT, IP_SERVER, 1, 1).build();
    assert!(icmp_error_allowed(ip_packet(&echo)));
    let err = FrameBuilder::icmp_error(MAC_CLIENT, MAC_INTERNAL, IP_CLIENT, IP_SERVER, 3, 3, ip_packet(&ok)).build();
    assert!(!icmp_error_allowed(ip_packet(&err)));
    let frag =
        FrameBuilder::udp(MAC_CLIENT, MAC_INTERNAL, IP_CLIENT, IP_SERVER, 1, 2).frag_offset(3).payload(&[0; 8]).build();
    assert!(!icmp_error_allowed(ip_packet(&frag)));
    let first_frag = FrameBuilder::udp(MAC_CLIENT, MAC_INTERNAL, IP_CLIENT, IP_SERVER, 1, 2).mf(true).build();
    assert!(icmp_error_allowed(ip_packet(&first_frag)));
    for (src, dst) in [
        (ipv4(0, 0, 0, 0), IP_SERVER),
        (ipv4(127, 0, 0, 1), IP_SERVER),
        (ipv4(224, 0, 0, 5), IP_SERVER),
        (ipv4(255, 255, 255, 255), IP_SERVER),
        (IP_CLIENT, ipv4(255, 255, 255, 255)),
        (IP_CLIENT, ipv4(239, 1, 2, 3)),
    ] {
        let f = FrameBuilder::udp(MAC_CLIENT, MAC_INTERNAL, src, dst, 1, 2).build();
        assert!(!icmp_error_allowed(ip_packet(&f)), "{} -> {}", ip_to_string(src), ip_to_string(dst));
    }
    assert!(!icmp_error_allowed(&[0x45; 10]));
}
