//! Frame parsing: Ethernet (one optional 802.1Q tag), ARP, IPv4, TCP, UDP, ICMP.
//!
//! The parser reads only: it returns offsets and the few header fields the engine decides on,
//! and every way a frame can be malformed is a [`ParseError`] that the engine counts as a drop
//! cause. It never panics on any input (fuzzed and property-tested).
//!
//! Rules that are deliberate, not accidental:
//! - The IPv4 header checksum is verified (20-60 bytes, cheap). TCP/UDP checksums are not: the
//!   engine updates them incrementally, which preserves an error for the receiver to see, as
//!   routers do, and verifying them would make the per-packet cost grow with the payload.
//! - Fragments are dropped, the first one too: the node does not reassemble, and a first
//!   fragment forwarded alone is useless to the receiver while its followers carry no ports to
//!   apply policy to. Clients that set DF and use path-MTU discovery never fragment.
//! - Packets carrying a source-route option (LSRR/SSRR) are dropped; other options pass.
//! - Ethernet padding after the IPv4 total length is ignored; a total length that runs past
//!   the frame is a truncation.
//!
//! Almost every frame on the packet path is untagged IPv4 without options carrying TCP or UDP:
//! [`parse_frame`] tries a short parser for exactly that case first (`fast`) and hands
//! everything else to the full one. The two are property-tested to agree on every frame the
//! short one accepts.

mod fast;

pub use fast::{probe, Probe};

use core::fmt;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_IPV6: u16 = 0x86DD;

pub const ETH_HEADER_LEN: usize = 14;
pub const VLAN_TAG_LEN: usize = 4;
pub const ARP_LEN: usize = 28;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DEST_UNREACHABLE: u8 = 3;
pub const ICMP_SOURCE_QUENCH: u8 = 4;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETER_PROBLEM: u8 = 12;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

named_enum! {
    /// Why a frame could not be parsed. Each variant is a drop cause with its own counter
    /// (`DropReason` starts with these, in this order).
    pub enum ParseError {
        /// Shorter than an Ethernet header (or its VLAN tag).
        EthernetTruncated => "ethernet_truncated",
        /// A second 802.1Q/802.1ad tag: QinQ is not supported.
        StackedVlan => "stacked_vlan",
        /// An ethertype the node does not handle (neither IPv4, ARP nor IPv6).
        UnsupportedEthertype => "unsupported_ethertype",
        /// IPv6 is recognised and dropped.
        Ipv6 => "ipv6",
        ArpMalformed => "arp_malformed",
        Ipv4Truncated => "ipv4_truncated",
        Ipv4BadVersion => "ipv4_bad_version",
        Ipv4BadHeaderLength => "ipv4_bad_header_length",
        Ipv4BadTotalLength => "ipv4_bad_total_length",
        Ipv4BadChecksum => "ipv4_bad_checksum",
        Ipv4Fragment => "ipv4_fragment",
        Ipv4SourceRoute => "ipv4_source_route",
        Ipv4BadOptions => "ipv4_bad_options",
        TcpTruncated => "tcp_truncated",
        TcpBadDataOffset => "tcp_bad_data_offset",
        UdpTruncated => "udp_truncated",
        UdpBadLength => "udp_bad_length",
        IcmpTruncated => "icmp_truncated",
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the Ethernet payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L3 {
    Arp(Arp),
    Ipv4(Ipv4),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    /// 1 = request, 2 = reply; other values are reported and ignored by the engine.
    pub op: u16,
    pub sender_mac: [u8; 6],
    pub sender_ip: u32,
    pub target_mac: [u8; 6],
    pub target_ip: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4 {
    /// Offset of the IPv4 header in the frame. (Offsets and lengths are `u16`, frames being
    /// shorter than 64 KiB: the parsed burst stays small and moves cheaply.)
    pub offset: u16,
    pub header_len: u16,
    /// The IPv4 total length (header + payload), excluding any Ethernet padding.
    pub total_len: u16,
    pub src: u32,
    pub dst: u32,
    pub proto: u8,
    pub ttl: u8,
    pub l4: L4,
}

impl Ipv4 {
    /// Offset of the IPv4 header.
    #[inline]
    pub fn at(&self) -> usize {
        usize::from(self.offset)
    }

    /// Offset of the transport header.
    #[inline]
    pub fn l4_offset(&self) -> usize {
        usize::from(self.offset) + usize::from(self.header_len)
    }

    /// Offset just past the IPv4 packet (before any Ethernet padding).
    #[inline]
    pub fn end(&self) -> usize {
        usize::from(self.offset) + usize::from(self.total_len)
    }
}

/// Transport header summary. For ICMP echo, `id` stands in for a port: requests use it as
/// the source "port" and replies as the destination "port", so a flow key reversed is the
/// key of its replies, as with TCP and UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    IcmpEcho {
        request: bool,
        id: u16,
    },
    /// ICMP error carrying a quoted datagram, which starts at `inner_offset` in the frame.
    IcmpError {
        icmp_type: u8,
        code: u8,
        inner_offset: u16,
    },
    /// Any other ICMP message.
    IcmpOther {
        icmp_type: u8,
        code: u8,
    },
    /// Another IP protocol: the engine drops it.
    Other,
}

/// What the parser found in a frame. The MAC addresses are not copied out: read them from
/// the frame with [`dst_mac`] and [`src_mac`] (a parsed frame is at least a full Ethernet
/// header long).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedFrame {
    /// The 802.1Q VLAN id if the frame carries one tag.
    pub vlan: Option<u16>,
    /// Offset of the Ethernet payload (14, or 18 with a tag).
    pub l3_offset: u8,
    pub l3: L3,
}

/// The destination MAC address of a frame that parsed.
#[inline]
pub fn dst_mac(frame: &[u8]) -> [u8; 6] {
    mac(frame, 0)
}

/// The source MAC address of a frame that parsed.
#[inline]
pub fn src_mac(frame: &[u8]) -> [u8; 6] {
    mac(frame, 6)
}

#[inline]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline]
fn mac(b: &[u8], at: usize) -> [u8; 6] {
    let mut m = [0u8; 6];
    m.copy_from_slice(&b[at..at + 6]);
    m
}

/// Parse one Ethernet frame.
#[inline]
pub fn parse_frame(frame: &[u8]) -> Result<ParsedFrame, ParseError> {
    match fast::parse_common(frame) {
        Some(parsed) => Ok(parsed),
        None => parse_any(frame),
    }
}

/// The full parser: every frame, every rule. Out of line so the common case stays small.
#[inline(never)]
fn parse_any(frame: &[u8]) -> Result<ParsedFrame, ParseError> {
    if frame.len() < ETH_HEADER_LEN {
        return Err(ParseError::EthernetTruncated);
    }
    let mut ethertype = be16(frame, 12);
    let mut l3_offset = ETH_HEADER_LEN;
    let mut vlan = None;
    if ethertype == ETHERTYPE_VLAN {
        if frame.len() < ETH_HEADER_LEN + VLAN_TAG_LEN {
            return Err(ParseError::EthernetTruncated);
        }
        vlan = Some(be16(frame, 14) & 0x0FFF);
        ethertype = be16(frame, 16);
        l3_offset += VLAN_TAG_LEN;
        if ethertype == ETHERTYPE_VLAN || ethertype == 0x88A8 {
            return Err(ParseError::StackedVlan);
        }
    }
    let l3 = match ethertype {
        ETHERTYPE_IPV4 => L3::Ipv4(parse_ipv4(frame, l3_offset)?),
        ETHERTYPE_ARP => L3::Arp(parse_arp(frame, l3_offset)?),
        ETHERTYPE_IPV6 => return Err(ParseError::Ipv6),
        _ => return Err(ParseError::UnsupportedEthertype),
    };
    Ok(ParsedFrame { vlan, l3_offset: l3_offset as u8, l3 })
}

fn parse_arp(frame: &[u8], at: usize) -> Result<Arp, ParseError> {
    if frame.len() < at + ARP_LEN {
        return Err(ParseError::ArpMalformed);
    }
    // Ethernet hardware (1), IPv4 protocol, 6-byte and 4-byte address lengths: anything else
    // is not an ARP the node can answer.
    if be16(frame, at) != 1 || be16(frame, at + 2) != ETHERTYPE_IPV4 || frame[at + 4] != 6 || frame[at + 5] != 4 {
        return Err(ParseError::ArpMalformed);
    }
    Ok(Arp {
        op: be16(frame, at + 6),
        sender_mac: mac(frame, at + 8),
        sender_ip: be32(frame, at + 14),
        target_mac: mac(frame, at + 18),
        target_ip: be32(frame, at + 24),
    })
}

/// One's-complement sum check of an IPv4 header: a correct header sums to 0xFFFF. Sums
/// 32-bit native-endian words with end-around carry; the test against 0xFFFF does not depend
/// on byte order, and IPv4 header lengths are multiples of four.
///
/// Folding with end-around carry keeps a sum's value modulo 0xFFFF (2^16 = 1 mod 0xFFFF) and
/// gives 0xFFFF for a non-zero multiple of 0xFFFF, 0 only for 0: so the fold is 0xFFFF
/// exactly when the wide sum is a non-zero multiple of 0xFFFF, which one remainder decides.
#[inline]
fn ipv4_header_checksum_ok(header: &[u8]) -> bool {
    debug_assert!(header.len().is_multiple_of(4));
    let mut sum: u64 = 0;
    for w in header.chunks_exact(4) {
        sum += u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
    }
    sum != 0 && sum.is_multiple_of(0xFFFF)
}

fn check_options(options: &[u8]) -> Result<(), ParseError> {
    let mut i = 0;
    while i < options.len() {
        match options[i] {
            0 => return Ok(()), // end of option list
            1 => i += 1,        // no-op
            kind => {
                if kind == 0x83 || kind == 0x89 {
                    return Err(ParseError::Ipv4SourceRoute);
                }
                let len = *options.get(i + 1).ok_or(ParseError::Ipv4BadOptions)? as usize;
                if len < 2 || i + len > options.len() {
                    return Err(ParseError::Ipv4BadOptions);
                }
                i += len;
            }
        }
    }
    Ok(())
}

/// Parse an IPv4 packet whose header starts at `at`; used for frames and for the datagram
/// quoted inside ICMP errors (where `quoted` relaxes the length rules: an ICMP error carries
/// only the start of the original datagram).
#[inline(always)]
fn parse_ipv4_at(frame: &[u8], at: usize, quoted: bool) -> Result<Ipv4, ParseError> {
    // Frames are bounded by u16 offsets; anything longer is not a frame we handle.
    if frame.len() > usize::from(u16::MAX) {
        return Err(ParseError::Ipv4BadTotalLength);
    }
    if frame.len() < at + 20 {
        return Err(ParseError::Ipv4Truncated);
    }
    let vihl = frame[at];
    if vihl >> 4 != 4 {
        return Err(ParseError::Ipv4BadVersion);
    }
    let header_len = usize::from(vihl & 0x0F) * 4;
    if header_len < 20 {
        return Err(ParseError::Ipv4BadHeaderLength);
    }
    if frame.len() < at + header_len {
        return Err(ParseError::Ipv4Truncated);
    }
    let total_len = usize::from(be16(frame, at + 2));
    if total_len < header_len {
        return Err(ParseError::Ipv4BadTotalLength);
    }
    // The end of the IPv4 packet inside the frame (the quoted datagram may be cut short).
    let end = if quoted {
        frame.len().min(at + total_len)
    } else {
        if at + total_len > frame.len() {
            return Err(ParseError::Ipv4Truncated);
        }
        at + total_len
    };
    if !ipv4_header_checksum_ok(&frame[at..at + header_len]) {
        return Err(ParseError::Ipv4BadChecksum);
    }
    let frag = be16(frame, at + 6);
    let more_fragments = frag & 0x2000 != 0;
    let frag_offset = frag & 0x1FFF;
    if !quoted && (more_fragments || frag_offset != 0) {
        return Err(ParseError::Ipv4Fragment);
    }
    if header_len > 20 {
        check_options(&frame[at + 20..at + header_len])?;
    }
    let proto = frame[at + 9];
    let l4_at = at + header_len;
    let l4_bytes = &frame[l4_at..end];
    let l4 = if quoted && frag_offset != 0 { L4::Other } else { parse_l4(proto, l4_bytes, l4_at, quoted)? };
    Ok(Ipv4 {
        offset: at as u16,
        header_len: header_len as u16,
        total_len: total_len as u16,
        src: be32(frame, at + 12),
        dst: be32(frame, at + 16),
        proto,
        ttl: frame[at + 8],
        l4,
    })
}

#[inline(always)]
fn parse_ipv4(frame: &[u8], at: usize) -> Result<Ipv4, ParseError> {
    parse_ipv4_at(frame, at, false)
}

/// Parse the datagram quoted in an ICMP error (header + at least 8 bytes of transport).
pub fn parse_quoted_ipv4(frame: &[u8], at: usize) -> Result<Ipv4, ParseError> {
    parse_ipv4_at(frame, at, true)
}

#[inline(always)]
fn parse_l4(proto: u8, l4: &[u8], l4_at: usize, quoted: bool) -> Result<L4, ParseError> {
    match proto {
        PROTO_TCP => {
            // A quoted TCP header need only carry its ports and sequence number (8 bytes).
            let min = if quoted { 8 } else { 20 };
            if l4.len() < min {
                return Err(ParseError::TcpTruncated);
            }
            let flags = if quoted {
                l4.get(13).copied().unwrap_or(0)
            } else {
                let data_offset = usize::from(l4[12] >> 4) * 4;
                if data_offset < 20 || data_offset > l4.len() {
                    return Err(ParseError::TcpBadDataOffset);
                }
                l4[13]
            };
            Ok(L4::Tcp { sport: be16(l4, 0), dport: be16(l4, 2), flags })
        }
        PROTO_UDP => {
            if l4.len() < 8 {
                return Err(ParseError::UdpTruncated);
            }
            let udp_len = usize::from(be16(l4, 4));
            if !quoted && (udp_len < 8 || udp_len > l4.len()) {
                return Err(ParseError::UdpBadLength);
            }
            Ok(L4::Udp { sport: be16(l4, 0), dport: be16(l4, 2) })
        }
        PROTO_ICMP => {
            if l4.len() < 8 {
                return Err(ParseError::IcmpTruncated);
            }
            let icmp_type = l4[0];
            let code = l4[1];
            Ok(match icmp_type {
                ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY => {
                    L4::IcmpEcho { request: icmp_type == ICMP_ECHO_REQUEST, id: be16(l4, 4) }
                }
                ICMP_DEST_UNREACHABLE | ICMP_SOURCE_QUENCH | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM if !quoted => {
                    L4::IcmpError { icmp_type, code, inner_offset: (l4_at + 8) as u16 }
                }
                _ => L4::IcmpOther { icmp_type, code },
            })
        }
        _ => Ok(L4::Other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_frame(proto: u8, l4: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let total = 20 + l4.len();
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        ip[8] = 64;
        ip[9] = proto;
        ip[12..16].copy_from_slice(&[10, 0, 0, 2]);
        ip[16..20].copy_from_slice(&[192, 0, 2, 1]);
        let mut sum: u32 = 0;
        for w in ip.chunks(2) {
            sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        while sum > 0xFFFF {
            sum = (sum & 0xFFFF) + (sum >> 16);
        }
        ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(l4);
        f
    }

    #[test]
    fn tcp_ports_and_flags() {
        let mut tcp = [0u8; 20];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&443u16.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = TCP_SYN;
        let p = parse_frame(&ipv4_frame(PROTO_TCP, &tcp)).unwrap();
        let L3::Ipv4(ip) = p.l3 else { panic!("not ipv4") };
        assert_eq!(ip.l4, L4::Tcp { sport: 40000, dport: 443, flags: TCP_SYN });
        assert_eq!(ip.src, 0x0A00_0002);
        assert_eq!(ip.ttl, 64);
    }

    #[test]
    fn bad_checksum_truncation_and_fragments_are_reported() {
        let udp = [0, 53, 0, 53, 0, 8, 0, 0];
        let good = ipv4_frame(PROTO_UDP, &udp);
        assert!(parse_frame(&good).is_ok());

        // Every single-bit error in the header is caught.
        for byte in 14..34 {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[byte] ^= 1 << bit;
                assert!(parse_frame(&bad).is_err(), "flip of byte {byte} bit {bit} accepted");
            }
        }
        let mut bad = good.clone();
        bad[14 + 10] ^= 0xFF;
        assert_eq!(parse_frame(&bad), Err(ParseError::Ipv4BadChecksum));

        assert_eq!(parse_frame(&good[..good.len() - 1]), Err(ParseError::Ipv4Truncated));
        assert_eq!(parse_frame(&good[..10]), Err(ParseError::EthernetTruncated));

        let mut frag = good.clone();
        frag[14 + 6] = 0x20; // MF
        frag[14 + 10] = 0;
        frag[14 + 11] = 0;
        // Recompute the header checksum so only the fragment rule can reject it.
        let mut s: u32 = 0;
        for w in frag[14..34].chunks(2) {
            s += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        while s > 0xFFFF {
            s = (s & 0xFFFF) + (s >> 16);
        }
        frag[14 + 10..14 + 12].copy_from_slice(&(!(s as u16)).to_be_bytes());
        assert_eq!(parse_frame(&frag), Err(ParseError::Ipv4Fragment));
    }

    #[test]
    fn ipv6_and_unknown_ethertypes() {
        let mut f = vec![0u8; 60];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        assert_eq!(parse_frame(&f), Err(ParseError::Ipv6));
        f[12..14].copy_from_slice(&0x88CCu16.to_be_bytes());
        assert_eq!(parse_frame(&f), Err(ParseError::UnsupportedEthertype));
    }

    #[test]
    fn header_checksum_check_matches_a_plain_fold() {
        let plain = |h: &[u8]| {
            let mut s: u32 = 0;
            for w in h.chunks(2) {
                s += u32::from(u16::from_be_bytes([w[0], w[1]]));
                s = (s & 0xFFFF) + (s >> 16);
            }
            s == 0xFFFF
        };
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut header = [0u8; 24];
        for round in 0..20_000 {
            for b in header.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            let len = if round % 2 == 0 { 20 } else { 24 };
            // Make about half of them valid.
            if round % 4 < 2 {
                header[10..12].fill(0);
                let c = crate::checksum::checksum(&header[..len]);
                header[10..12].copy_from_slice(&c.to_be_bytes());
            }
            assert_eq!(ipv4_header_checksum_ok(&header[..len]), plain(&header[..len]), "{header:?}");
        }
        assert!(!ipv4_header_checksum_ok(&[0; 20]), "all zeros sum to 0, not 0xFFFF");
        assert!(ipv4_header_checksum_ok(&[0xFF; 20]));
    }

    #[test]
    fn options_with_source_route_are_refused() {
        assert_eq!(check_options(&[0x83, 3, 4, 0]), Err(ParseError::Ipv4SourceRoute));
        assert_eq!(check_options(&[1, 1, 0x07, 1]), Err(ParseError::Ipv4BadOptions));
        assert_eq!(check_options(&[1, 0x94, 4, 0, 0]), Ok(()));
    }
}
