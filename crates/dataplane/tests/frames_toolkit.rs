//! The frame toolkit checks itself: builder output verifies and inspects back to what was asked
//! for, and the verifier notices any damaged byte in a checksummed region.

use sluice_dataplane::testing::*;

fn tcp_frame() -> Vec<u8> {
    FrameBuilder::tcp(MAC_CLIENT, MAC_INTERNAL, IP_CLIENT, IP_SERVER, 40000, 443)
        .flags(SYN | ACK)
        .seq(0x1122_3344)
        .ack(0x5566_7788)
        .window(1234)
        .ttl(17)
        .tos(0x10)
        .id(0xBEEF)
        .df(true)
        .payload(b"hello, tcp")
        .build()
}

fn udp_frame() -> Vec<u8> {
    FrameBuilder::udp(MAC_CLIENT, MAC_INTERNAL, IP_CLIENT, IP_SERVER, 5353, 53)
        .payload(b"query bytes, odd length")
        .build()
}

fn echo_frame() -> Vec<u8> {
    FrameBuilder::icmp_echo_request(MAC_CLIENT, MAC_INTERNAL, IP_CLIENT, IP_SERVER, 0x4242, 7)
        .payload(&[0xAB; 33])
        .build()
}

fn error_frame() -> Vec<u8> {
    let inner = udp_frame();
    FrameBuilder::icmp_error(
        MAC_GATEWAY,
        MAC_EXTERNAL,
        IP_GATEWAY,
        IP_CLIENT,
        ICMP_DEST_UNREACH,
        ICMP_CODE_PORT_UNREACH,
        ip_packet(&inner),
    )
    .build()
}

/// Every kind of frame the builder makes, with and without a VLAN tag.
fn all_frames() -> Vec<(&'static str, Vec<u8>)> {
    let mut v = vec![
        ("tcp", tcp_frame()),
        ("udp", udp_frame()),
        ("echo", echo_frame()),
        ("icmp error", error_frame()),
        (
            "udp zero checksum",
            FrameBuilder::udp(MAC_CLIENT, MAC_INTERNAL, IP_CLIENT, IP_SERVER, 1, 2)
                .zero_udp_checksum()
                .payload(b"x")
                .build(),
        ),
        ("echo reply", FrameBuilder::icmp_echo_reply(MAC_GATEWAY, MAC_EXTERNAL, IP_SERVER, IP_EXTERNAL, 9, 9).build()),
        (
            "ip options",
            FrameBuilder::tcp(MAC_CLIENT, MAC_INTERNAL, IP_CLIENT, IP_SERVER, 1, 80)
                .ip_options(&[0x94, 0x04, 0x00, 0x00, 0x01])
                .tcp_options(&[0x02, 0x04, 0x05, 0xB4])
                .flags(SYN)
                .build(),
        ),
        (
            "first fragment",
            FrameBuilder::udp(MAC_CLIENT, MAC_INTERNAL, IP_CLIENT, IP_SERVER, 1, 2).mf(true).payload(&[1; 64]).build(),
        ),
        (
            "later fragment",
            FrameBuilder::udp(MAC_CLIENT, MAC_INTERNAL, IP_CLIENT, IP_SERVER, 1, 2)
                .frag_offset(9)
                .payload(&[2; 40])
                .build(),
        ),
        (
            "raw proto",
            FrameBuilder::ipv4_raw(MAC_CLIENT, MAC_INTERNAL, IP_CLIENT, IP_SERVER, 47)
                .payload(&[0, 0, 0x08, 0])
                .build(),
        ),
        ("arp request", FrameBuilder::arp_request(MAC_CLIENT, IP_CLIENT, IP_INTERNAL).build()),
        ("arp reply", FrameBuilder::arp_reply(MAC_INTERNAL, IP_INTERNAL, MAC_CLIENT, IP_CLIENT).build()),
    ];
    let tagged: Vec<_> = v
        .iter()
        .map(|(name, f)| {
            // Re-tag by splicing a tag in: must stay valid (checksums do not cover L2).
            let mut t = f[..12].to_vec();
            t.extend_from_slice(&[0x81, 0x00, 0x20, 0x64]);
            t.extend_from_slice(&f[12..]);
            (*name, t)
        })
        .collect();
    v.extend(tagged);
    v
}

#[test]
fn builder_output_verifies_and_is_padded() {
    for (name, f) in all_frames() {
        verify_checksums(&f).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(f.len() >= ETH_MIN_LEN, "{name}: {} bytes", f.len());
        inspect(&f).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn tcp_fields_round_trip() {
    let i = inspect(&tcp_frame()).unwrap();
    assert_eq!((i.src_mac, i.dst_mac, i.vlan, i.ethertype), (MAC_CLIENT, MAC_INTERNAL, None, 0x0800));
    let ip = i.ip();
    assert_eq!((ip.src, ip.dst, ip.ttl, ip.proto, ip.id, ip.tos), (IP_CLIENT, IP_SERVER, 17, 6, 0xBEEF, 0x10));
    assert!(ip.df && !ip.mf && ip.frag_offset == 0);
    assert_eq!(usize::from(ip.total_len), 20 + 20 + 10);
    let t = i.tcp();
    assert_eq!(
        (t.sport, t.dport, t.seq, t.ack, t.flags, t.window),
        (40000, 443, 0x1122_3344, 0x5566_7788, SYN | ACK, 1234)
    );
    assert_eq!(t.payload, b"hello, tcp");
    assert_eq!(i.ports(), Some((40000, 443)));
    assert_eq!(i.padding, 0);
}

#[test]
fn vlan_and_padding() {
    let f = FrameBuilder::udp(MAC_CLIENT, MAC_INTERNAL, IP_CLIENT, IP_SERVER, 1, 2).vlan(Some(100)).vlan_pcp(5).build();
    assert_eq!(f.len(), 60);
    let i = inspect(&f).unwrap();
    assert_eq!((i.vlan, i.vlan_pcp, i.ethertype), (Some(100), 5, ETHERTYPE_IPV4));
    assert_eq!(i.padding, 60 - 18 - 28);
    assert_eq!(i.udp().payload, b"");
    let unpadded = FrameBuilder::udp(MAC_CLIENT, MAC_INTERNAL, IP_CLIENT, IP_SERVER, 1, 2).pad(false).build();
    assert_eq!(unpadded.len(), 14 + 28);
}

#[test]
fn udp_and_icmp_fields() {
    let u = inspect(&udp_frame()).unwrap();
    assert_eq!(u.udp().payload, b"query bytes, odd length");
    assert_eq!(usize::from(u.udp().len), 8 + 23);
    assert_ne!(u.udp().checksum, 0);

    let e = inspect(&echo_frame()).unwrap();
    let icmp = e.icmp();
    assert_eq!((icmp.icmp_type, icmp.code, icmp.id, icmp.seq), (ICMP_ECHO_REQUEST, 0, 0x4242, 7));
    assert_eq!(icmp.payload, vec![0xAB; 33]);
    assert!(icmp.quoted.is_none());

    let err = inspect(&error_frame()).unwrap();
    assert_eq!((err.icmp().icmp_type, err.icmp().code), (3, 3));
    let q = err.quoted();
    assert_eq!((q.src, q.dst, q.proto, q.sport, q.dport), (IP_CLIENT, IP_SERVER, PROTO_UDP, Some(5353), Some(53)));
    assert_eq!(q.bytes, ip_packet(&udp_frame()));

    let inner_echo = echo_frame();
    let te = FrameBuilder::icmp_error(
        MAC_GATEWAY,
        MAC_EXTERNAL,
        IP_GATEWAY,
        IP_EXTERNAL,
        11,
        0,
        &ip_packet(&inner_echo)[..28],
    )
    .build();
    let q = inspect(&te).unwrap().quoted().clone();
    assert_eq!((q.proto, q.icmp_type, q.icmp_id, q.sport), (PROTO_ICMP, Some(8), Some(0x4242), None));
    verify_checksums(&te).unwrap();
}

#[test]
fn arp_fields() {
    let r = inspect(&FrameBuilder::arp_request(MAC_CLIENT, IP_CLIENT, IP_INTERNAL).build()).unwrap();
    assert_eq!((r.dst_mac, r.ethertype), (MAC_BROADCAST, ETHERTYPE_ARP));
    let a = r.arp();
    assert_eq!(
        (a.op, a.sender_mac, a.sender_ip, a.target_mac, a.target_ip),
        (ARP_REQUEST, MAC_CLIENT, IP_CLIENT, MAC_ZERO, IP_INTERNAL)
    );
    let r = inspect(&FrameBuilder::arp_reply(MAC_INTERNAL, IP_INTERNAL, MAC_CLIENT, IP_CLIENT).build()).unwrap();
    let a = r.arp();
    assert_eq!(
        (r.dst_mac, a.op, a.sender_mac, a.target_mac, a.target_ip),
        (MAC_CLIENT, ARP_REPLY, MAC_INTERNAL, MAC_CLIENT, IP_CLIENT)
    );
}

#[test]
fn fragments_are_recognised() {
    let f = FrameBuilder::udp(MAC_CLIENT, MAC_INTERNAL, IP_CLIENT, IP_SERVER, 1, 2)
        .frag_offset(9)
        .payload(&[2; 40])
        .build();
    let i = inspect(&f).unwrap();
    assert_eq!(i.l4, L4Info::Fragment);
    assert_eq!(i.ip().frag_offset, 9);
    assert_eq!(usize::from(i.ip().total_len), 60);
    let first =
        FrameBuilder::udp(MAC_CLIENT, MAC_INTERNAL, IP_CLIENT, IP_SERVER, 7, 8).mf(true).payload(&[1; 16]).build();
    let i = inspect(&first).unwrap();
    assert!(i.ip().mf);
    assert_eq!(i.ports(), Some((7, 8)));
}

/// Byte ranges (in frame offsets) covered by a checksum the verifier checks.
fn checksummed_ranges(frame: &[u8]) -> Vec<std::ops::Range<usize>> {
    let i = inspect(frame).unwrap();
    let Some(ip) = &i.ip else { return vec![] };
    let off = if i.vlan.is_some() { 18 } else { 14 };
    let mut v = Vec::new();
    v.push(off..off + ip.header_len);
    if !ip.is_fragment() {
        let end = match &i.l4 {
            L4Info::Udp(u) if u.checksum == 0 => return v,
            L4Info::Udp(u) => off + ip.header_len + usize::from(u.len),
            L4Info::Tcp(_) | L4Info::Icmp(_) => off + usize::from(ip.total_len),
            _ => return v,
        };
        v.push(off + ip.header_len..end);
    }
    v
}

#[test]
fn any_damaged_byte_is_detected() {
    for (name, f) in all_frames() {
        for range in checksummed_ranges(&f) {
            for at in range {
                for mask in [0x01u8, 0x80, 0xFF] {
                    let mut bad = f.clone();
                    bad[at] ^= mask;
                    let udp_csum_now_zero = inspect(&bad)
                        .ok()
                        .and_then(|i| match i.l4 {
                            L4Info::Udp(u) => Some(u.checksum == 0),
                            _ => None,
                        })
                        .unwrap_or(false);
                    if udp_csum_now_zero {
                        // Damage that zeroes a UDP checksum turns it into "no checksum".
                        continue;
                    }
                    assert!(
                        verify_checksums(&bad).is_err(),
                        "{name}: flipping {mask:#04x} at byte {at} went unnoticed"
                    );
                }
            }
        }
    }
}

#[test]
fn errors_name_the_bad_checksum() {
    let f = FrameBuilder::tcp(MAC_CLIENT, MAC_INTERNAL, IP_CLIENT, IP_SERVER, 1, 2).corrupt_ip_checksum().build();
    assert!(verify_checksums(&f).unwrap_err().starts_with("IPv4 header checksum wrong"));
    let f = FrameBuilder::tcp(MAC_CLIENT, MAC_INTERNAL, IP_CLIENT, IP_SERVER, 1, 2).corrupt_l4_checksum().build();
    assert!(verify_checksums(&f).unwrap_err().starts_with("TCP checksum wrong"));
    let f = FrameBuilder::udp(MAC_CLIENT, MAC_INTERNAL, IP_CLIENT, IP_SERVER, 1, 2).corrupt_l4_checksum().build();
    assert!(verify_checksums(&f).unwrap_err().starts_with("UDP checksum wrong"));
    let f = FrameBuilder::icmp_echo_request(MAC_CLIENT, MAC_INTERNAL, IP_CLIENT, IP_SERVER, 1, 2)
        .corrupt_l4_checksum()
        .build();
    assert!(verify_checksums(&f).unwrap_err().starts_with("ICMP checksum wrong"));

    // A NAT that rewrote the quoted source without fixing the quoted header checksum (but did
    // fix the ICMP checksum) is caught.
    let inner = FrameBuilder::udp(MAC_CLIENT, MAC_INTERNAL, IP_EXTERNAL, IP_SERVER, 1, 2).build();
    let mut quoted = ip_packet(&inner).to_vec();
    quoted[12..16].copy_from_slice(&IP_CLIENT.to_be_bytes());
    let f = FrameBuilder::icmp_error(MAC_INTERNAL, MAC_CLIENT, IP_SERVER, IP_CLIENT, 3, 3, &quoted).build();
    let e = verify_checksums(&f).unwrap_err();
    assert!(e.starts_with("quoted IPv4 header checksum wrong"), "{e}");
}

#[test]
fn malformed_frames_are_errors() {
    assert!(inspect(&[0u8; 10]).is_err());
    let mut f = tcp_frame();
    f[14] = 0x65; // IP version 6 in an IPv4 ethertype
    assert!(inspect(&f).is_err());
    let mut f = tcp_frame();
    f[16..18].copy_from_slice(&2000u16.to_be_bytes()); // total length beyond the frame
    assert!(inspect(&f).is_err());
    let f = tcp_frame();
    assert!(inspect(&f[..14 + 20 + 10]).is_err()); // truncated
                                                   // Other ethertypes just report Ethernet.
    let mut f = udp_frame();
    f[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    let i = inspect(&f).unwrap();
    assert!(i.ip.is_none() && i.l4 == L4Info::Absent);
    verify_checksums(&f).unwrap();
}

#[test]
fn helpers() {
    assert_eq!(ip_to_string(IP_SERVER), "203.0.113.10");
    assert_eq!(mac_to_string(MAC_INTERNAL), "02:51:00:00:00:01");
    assert_eq!(ipv4(10, 10, 0, 5), IP_CLIENT);
    assert_eq!(ip_packet(&udp_frame()).len(), 20 + 8 + 23);
}
