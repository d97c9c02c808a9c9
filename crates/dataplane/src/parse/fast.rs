//! The parser for the common case: an untagged Ethernet frame carrying IPv4 without options,
//! not a fragment, with TCP or UDP. It reads the headers at fixed offsets with one length
//! check each and returns `None` for anything else, which the full parser then handles (and
//! reports if malformed). Wherever it returns a result, that result is exactly the full
//! parser's (property-tested below), so it changes speed, never verdicts.
//!
//! [`probe`] is narrower still: the frames the engine's fast path can forward (a TCP segment
//! without SYN, FIN or RST, or a UDP datagram, in such a frame). It goes from raw bytes
//! straight to the flow key's two words and the TTL, without building a [`ParsedFrame`],
//! and accepts a subset of what `parse_common` accepts, with the same values (tested below).

use super::{
    be16, be32, ipv4_header_checksum_ok, Ipv4, ParsedFrame, ETH_HEADER_LEN, L3, L4, PROTO_TCP, PROTO_UDP, TCP_FIN,
    TCP_RST, TCP_SYN,
};

/// Start of the IPv4 header.
const IP: usize = ETH_HEADER_LEN;
/// Start of the transport header (IPv4 header without options).
const L4_AT: usize = IP + 20;

/// What [`probe`] read from a frame the fast path may forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Probe {
    /// Source and destination address as the flow key's first word: `dst << 32 | src`
    /// (see `FlowKey::words`).
    pub addrs: u64,
    /// Ports and protocol as the flow key's second word: `proto << 32 | dport << 16 | sport`.
    pub ports: u64,
    pub ttl: u8,
    /// TCP (a segment without SYN, FIN or RST); otherwise UDP.
    pub tcp: bool,
}

impl Probe {
    #[inline(always)]
    pub fn src(&self) -> u32 {
        self.addrs as u32
    }

    #[inline(always)]
    pub fn dst(&self) -> u32 {
        (self.addrs >> 32) as u32
    }
}

/// The fast path's parser: `Some` only for an untagged IPv4 frame without options, not a
/// fragment, with a valid header checksum, carrying a TCP segment without SYN, FIN or RST
/// or a UDP datagram, with lengths `parse_common` accepts. Fixed offsets, one pass.
#[inline(always)]
pub fn probe(frame: &[u8]) -> Option<Probe> {
    // Ethernet and IPv4 headers and both ports.
    let h: &[u8; L4_AT + 4] = frame.first_chunk()?;
    let len = frame.len();
    // Ethertype 0x0800 and version 4 with a 20-byte header, in one comparison.
    if u32::from_be_bytes([h[12], h[13], h[IP], 0]) != 0x0800_4500 || len > usize::from(u16::MAX) {
        return None;
    }
    let total_len = usize::from(be16(h, IP + 2));
    // More-fragments flag and fragment offset (DF and the reserved bit do not matter).
    if be16(h, IP + 6) & 0x3FFF != 0 || IP + total_len > len || !ipv4_header_checksum_ok(&h[IP..L4_AT]) {
        return None;
    }
    let proto = h[IP + 9];
    let tcp = match proto {
        PROTO_TCP => {
            // A whole TCP header inside the IP packet; `IP + total_len <= len` makes the
            // chunk below exist.
            if total_len < 40 {
                return None;
            }
            let t: &[u8; L4_AT + 20] = frame.first_chunk()?;
            let data_offset = usize::from(t[L4_AT + 12] >> 4) * 4;
            if data_offset < 20 || data_offset > total_len - 20 || t[L4_AT + 13] & (TCP_SYN | TCP_FIN | TCP_RST) != 0 {
                return None;
            }
            true
        }
        PROTO_UDP => {
            if total_len < 28 {
                return None;
            }
            let u: &[u8; L4_AT + 8] = frame.first_chunk()?;
            let udp_len = usize::from(be16(u, L4_AT + 4));
            if udp_len < 8 || udp_len > total_len - 20 {
                return None;
            }
            false
        }
        _ => return None,
    };
    // Both addresses, and both ports, in one load each, turned into the key's word order.
    let addrs = u64::from_be_bytes(*h[IP + 12..].first_chunk::<8>()?).rotate_left(32);
    let ports = (u64::from(proto) << 32) | u64::from(be32(h, L4_AT).rotate_left(16));
    Some(Probe { addrs, ports, ttl: h[IP + 8], tcp })
}

#[inline(always)]
pub(super) fn parse_common(frame: &[u8]) -> Option<ParsedFrame> {
    let h: &[u8; L4_AT] = frame.first_chunk()?;
    // IPv4 ethertype, version 4 with a 20-byte header; frames longer than u16 offsets allow
    // are the full parser's to refuse.
    if h[12] != 0x08 || h[13] != 0x00 || h[IP] != 0x45 || frame.len() > usize::from(u16::MAX) {
        return None;
    }
    let total_len = usize::from(be16(h, IP + 2));
    if total_len < 20 || IP + total_len > frame.len() {
        return None;
    }
    // More-fragments flag or a fragment offset (the DF and reserved bits do not matter).
    if h[IP + 6] & 0x3F != 0 || h[IP + 7] != 0 {
        return None;
    }
    if !ipv4_header_checksum_ok(&h[IP..L4_AT]) {
        return None;
    }
    let proto = h[IP + 9];
    let l4_bytes = &frame[L4_AT..IP + total_len];
    let l4 = match proto {
        PROTO_TCP => {
            let t: &[u8; 20] = l4_bytes.first_chunk()?;
            let data_offset = usize::from(t[12] >> 4) * 4;
            if data_offset < 20 || data_offset > l4_bytes.len() {
                return None;
            }
            L4::Tcp { sport: be16(t, 0), dport: be16(t, 2), flags: t[13] }
        }
        PROTO_UDP => {
            let u: &[u8; 8] = l4_bytes.first_chunk()?;
            let udp_len = usize::from(be16(u, 4));
            if udp_len < 8 || udp_len > l4_bytes.len() {
                return None;
            }
            L4::Udp { sport: be16(u, 0), dport: be16(u, 2) }
        }
        _ => return None,
    };
    debug_assert!(total_len <= usize::from(u16::MAX));
    Some(ParsedFrame {
        vlan: None,
        l3_offset: IP as u8,
        l3: L3::Ipv4(Ipv4 {
            offset: IP as u16,
            header_len: 20,
            total_len: total_len as u16,
            src: be32(h, IP + 12),
            dst: be32(h, IP + 16),
            proto,
            ttl: h[IP + 8],
            l4,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::super::{parse_any, parse_frame};
    use super::*;
    use crate::testing::FrameBuilder;
    use proptest::prelude::*;

    const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 2];

    /// A frame of one of the shapes the engine sees, valid or not in the ways that matter to
    /// the short parser: tags, options, fragments, other protocols, odd lengths.
    fn frame(kind: u8, vlan: bool, options: bool, frag: u8, payload: usize, tcp_options: bool) -> Vec<u8> {
        let (src, dst) = (0x0A00_0002, 0xC612_0001);
        let mut b = match kind % 5 {
            0 => FrameBuilder::tcp(A, B, src, dst, 40000, 443).flags(0x10),
            1 => FrameBuilder::udp(A, B, src, dst, 5353, 53),
            2 => FrameBuilder::icmp_echo_request(A, B, src, dst, 7, 1),
            3 => FrameBuilder::ipv4_raw(A, B, src, dst, 47),
            _ => FrameBuilder::arp_request(A, src, dst),
        };
        b = b.vlan(vlan.then_some(5)).payload(&vec![0xAB; payload]);
        if options {
            b = b.ip_options(&[1, 1, 1, 0]);
        }
        if tcp_options && kind.is_multiple_of(5) {
            b = b.tcp_options(&[1, 1, 1, 1]);
        }
        match frag % 4 {
            1 => b = b.mf(true),
            2 => b = b.frag_offset(3),
            3 => b = b.df(true),
            _ => {}
        }
        b.build()
    }

    /// What `probe` must answer for a frame, derived from the full parser's result: the
    /// reference the probe is tested against.
    fn probe_from_parsed(full: &Result<ParsedFrame, crate::parse::ParseError>) -> Option<Probe> {
        let Ok(ParsedFrame { vlan: None, l3: L3::Ipv4(ip), .. }) = full else {
            return None;
        };
        if ip.header_len != 20 {
            return None;
        }
        let (sport, dport, tcp) = match ip.l4 {
            L4::Tcp { sport, dport, flags } if flags & (TCP_SYN | TCP_FIN | TCP_RST) == 0 => (sport, dport, true),
            L4::Udp { sport, dport } => (sport, dport, false),
            _ => return None,
        };
        let key = crate::flow::FlowKey { src: ip.src, dst: ip.dst, sport, dport, proto: ip.proto };
        let (addrs, ports) = key.words();
        Some(Probe { addrs, ports, ttl: ip.ttl, tcp })
    }

    #[test]
    fn plain_segments_and_datagrams_are_probed_like_the_full_parser_reads_them() {
        for kind in [0, 1] {
            for payload in [0, 1, 100, 1400] {
                for frag in [0, 3] {
                    let f = frame(kind, false, false, frag, payload, true);
                    let p = probe(&f).expect("a plain segment or datagram is probed");
                    assert_eq!(Some(p), probe_from_parsed(&parse_any(&f)));
                    assert_eq!((p.src(), p.dst()), (0x0A00_0002, 0xC612_0001));
                    assert_eq!(p.tcp, kind == 0);
                }
            }
        }
        for flags in [0x02, 0x12, 0x01, 0x11, 0x04, 0x14] {
            let f = FrameBuilder::tcp(A, B, 1, 2, 3, 4).flags(flags).build();
            assert_eq!(probe(&f), None, "TCP flags {flags:#x} change a flow's state");
            assert!(parse_common(&f).is_some());
        }
        assert_eq!(probe(&frame(0, true, false, 0, 0, false)), None, "tagged");
        assert_eq!(probe(&frame(0, false, true, 0, 0, false)), None, "IP options");
        assert_eq!(probe(&frame(1, false, false, 1, 0, false)), None, "fragment");
        assert_eq!(probe(&frame(2, false, false, 0, 0, false)), None, "ICMP");
        let bad = FrameBuilder::udp(A, B, 1, 2, 3, 4).corrupt_ip_checksum().build();
        assert_eq!(probe(&bad), None, "bad IP checksum");
    }

    #[test]
    fn common_frames_take_the_short_path() {
        for kind in [0, 1] {
            for payload in [0, 1, 100, 1400] {
                for df in [0, 3] {
                    let f = frame(kind, false, false, df, payload, true);
                    let short = parse_common(&f).expect("common frame parsed by the short parser");
                    assert_eq!(Ok(short), parse_any(&f));
                }
            }
        }
    }

    #[test]
    fn other_frames_are_left_to_the_full_parser() {
        assert_eq!(parse_common(&frame(0, true, false, 0, 0, false)), None, "tagged");
        assert_eq!(parse_common(&frame(0, false, true, 0, 0, false)), None, "IP options");
        assert_eq!(parse_common(&frame(1, false, false, 1, 0, false)), None, "first fragment");
        assert_eq!(parse_common(&frame(1, false, false, 2, 0, false)), None, "later fragment");
        assert_eq!(parse_common(&frame(2, false, false, 0, 0, false)), None, "ICMP");
        assert_eq!(parse_common(&frame(3, false, false, 0, 0, false)), None, "GRE");
        assert_eq!(parse_common(&frame(4, false, false, 0, 0, false)), None, "ARP");
        let bad = FrameBuilder::tcp(A, B, 1, 2, 3, 4).corrupt_ip_checksum().build();
        assert_eq!(parse_common(&bad), None, "bad IP checksum");
        assert!(parse_frame(&bad).is_err());
    }

    /// Recompute the IPv4 header checksum of an untagged frame, if it has a whole header.
    fn refresh_ip_checksum(f: &mut [u8]) {
        let ihl = usize::from(f.get(IP).copied().unwrap_or(0) & 0x0F) * 4;
        if f.len() < IP + ihl.max(20) || f[12..14] != [0x08, 0x00] || ihl < 20 {
            return;
        }
        f[IP + 10..IP + 12].fill(0);
        let c = crate::checksum::checksum(&f[IP..IP + ihl]);
        f[IP + 10..IP + 12].copy_from_slice(&c.to_be_bytes());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

        /// Wherever the short parser answers, the full parser gives the same answer; and
        /// `parse_frame` always gives the full parser's answer.
        #[test]
        fn short_parser_agrees_with_the_full_one(
            kind in any::<u8>(),
            vlan in any::<bool>(),
            options in any::<bool>(),
            frag in any::<u8>(),
            payload in 0usize..80,
            tcp_options in any::<bool>(),
            flips in prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
            cut in any::<usize>(),
            extra in 0usize..8,
            fix_checksum in any::<bool>(),
        ) {
            let mut f = frame(kind, vlan, options, frag, payload, tcp_options);
            // Corrupt a few bytes, mostly in the headers, and cut or extend the frame.
            for (at, v) in flips {
                let n = f.len().min(64);
                f[at % n] ^= v;
            }
            if cut % 3 == 0 {
                let keep = f.len() - cut % (f.len() + 1);
                f.truncate(keep);
            }
            f.extend(std::iter::repeat_n(0u8, extra));
            if fix_checksum {
                // Let corrupted lengths, versions and fragment fields reach the checks after
                // the checksum.
                refresh_ip_checksum(&mut f);
            }
            let full = parse_any(&f);
            if let Some(short) = parse_common(&f) {
                prop_assert_eq!(Ok(short), full);
            }
            prop_assert_eq!(parse_frame(&f), full);
            if let Some(p) = probe(&f) {
                prop_assert_eq!(Some(p), probe_from_parsed(&full));
            }
        }
    }
}
