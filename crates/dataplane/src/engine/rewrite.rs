//! In-place header rewrites with incremental checksum updates (RFC 1624): NAT of one
//! address and port, TTL decrement. Nothing here re-reads the payload, so the cost does not
//! grow with packet size.

use crate::checksum::{apply_delta, apply_udp_delta, delta16, delta32, update16, update32};
use crate::parse::{Ipv4, L4};

#[inline]
pub(super) fn get16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

#[inline]
pub(super) fn put16(f: &mut [u8], at: usize, v: u16) {
    f[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline]
fn put32(f: &mut [u8], at: usize, v: u32) {
    f[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// Which endpoint of the packet a NAT rewrite replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Source address and port (SNAT, outbound).
    Source,
    /// Destination address and port (reverse translation of replies).
    Destination,
}

/// Rewrite one endpoint's address and port (ICMP echo id for echo packets) and decrement
/// the TTL, updating the IPv4, TCP, UDP or ICMP checksum incrementally. The caller has
/// checked that the TTL is above 1.
///
/// Hot path: each header is borrowed once as a fixed-size array (one bounds check, which
/// the parse already guarantees to pass), and each checksum gets one fold of summed deltas;
/// the address delta is shared by the IPv4 header and the TCP/UDP pseudo-header.
#[inline(always)]
pub fn translate(frame: &mut [u8], ip: &Ipv4, which: Endpoint, addr: u32, port: u16) {
    debug_assert!(ip.ttl > 1);
    let (old_addr, addr_at) = match which {
        Endpoint::Source => (ip.src, 12),
        Endpoint::Destination => (ip.dst, 16),
    };
    let addr_delta = delta32(old_addr, addr);
    let h: &mut [u8; 20] = frame[ip.at()..].first_chunk_mut().expect("a parsed IPv4 header is in the frame");
    // The TTL shares a 16-bit word with the protocol number.
    let ttl_delta = delta16(get16(h, 8), u16::from_be_bytes([ip.ttl - 1, h[9]]));
    h[8] = ip.ttl - 1;
    put32(h, addr_at, addr);
    let ip_csum = apply_delta(get16(h, 10), ttl_delta + addr_delta);
    put16(h, 10, ip_csum);

    let l4 = ip.l4_offset();
    match ip.l4 {
        L4::Tcp { sport, dport, .. } => {
            let t: &mut [u8; 20] = frame[l4..].first_chunk_mut().expect("a parsed TCP header is in the frame");
            let (old_port, port_at) = if which == Endpoint::Source { (sport, 0) } else { (dport, 2) };
            put16(t, port_at, port);
            let c = apply_delta(get16(t, 16), addr_delta + delta16(old_port, port));
            put16(t, 16, c);
        }
        L4::Udp { sport, dport } => {
            let u: &mut [u8; 8] = frame[l4..].first_chunk_mut().expect("a parsed UDP header is in the frame");
            let (old_port, port_at) = if which == Endpoint::Source { (sport, 0) } else { (dport, 2) };
            put16(u, port_at, port);
            // A zero UDP checksum means "not computed" and stays so; a computed zero is sent
            // as all ones.
            let c = apply_udp_delta(get16(u, 6), addr_delta + delta16(old_port, port));
            put16(u, 6, c);
        }
        L4::IcmpEcho { id, .. } => {
            // The ICMP checksum has no pseudo-header: only the id matters.
            let m: &mut [u8; 8] = frame[l4..].first_chunk_mut().expect("a parsed ICMP header is in the frame");
            put16(m, 4, port);
            let c = apply_delta(get16(m, 2), delta16(id, port));
            put16(m, 2, c);
        }
        _ => debug_assert!(false, "translate called for a packet without ports"),
    }
}

/// [`translate`] for a frame [`crate::parse::probe`] took: IPv4 without options at offset
/// 14, a TCP segment (`tcp`) or a UDP datagram behind it, TTL above 1. Every field is at a
/// fixed offset, so the old values are read from the frame and nothing parsed is needed.
///
/// The checksum arithmetic runs on the 16-bit words as they lie in memory, without turning
/// them to host order and back: a one's-complement sum of byte-swapped words is the
/// byte-swap of the sum (RFC 1071, section 2), so every delta and fold gives the same bytes
/// as [`translate`]'s (the engine's differential test compares them).
#[inline(always)]
pub fn translate_plain(frame: &mut [u8], tcp: bool, which: Endpoint, addr: u32, port: u16) {
    const IP: usize = 14;
    const L4: usize = IP + 20;
    let (addr_at, port_at) = match which {
        Endpoint::Source => (IP + 12, L4),
        Endpoint::Destination => (IP + 16, L4 + 2),
    };
    let (addr, port) = (addr.to_be_bytes(), port.to_be_bytes());
    // Through the UDP checksum; a TCP segment is longer still (checked below).
    let h: &mut [u8; L4 + 8] = frame.first_chunk_mut().expect("a probed frame holds IPv4 and UDP headers");
    let ttl = h[IP + 8];
    debug_assert!(ttl > 1);
    let addr_delta = delta32(ne32(h, addr_at), u32::from_ne_bytes(addr));
    let l4_delta = addr_delta + delta16(ne16(h, port_at), u16::from_ne_bytes(port));
    // The TTL shares a 16-bit word with the protocol number.
    let ttl_delta = delta16(ne16(h, IP + 8), u16::from_ne_bytes([ttl - 1, h[IP + 9]]));
    h[IP + 8] = ttl - 1;
    h[addr_at..addr_at + 4].copy_from_slice(&addr);
    let ip_csum = apply_delta(ne16(h, IP + 10), ttl_delta + addr_delta);
    h[IP + 10..IP + 12].copy_from_slice(&ip_csum.to_ne_bytes());
    h[port_at..port_at + 2].copy_from_slice(&port);
    if tcp {
        let t: &mut [u8; L4 + 20] = frame.first_chunk_mut().expect("a probed TCP frame holds a TCP header");
        let c = apply_delta(ne16(t, L4 + 16), l4_delta);
        t[L4 + 16..L4 + 18].copy_from_slice(&c.to_ne_bytes());
    } else {
        // A zero UDP checksum means "not computed" and stays so (zero in either byte order).
        let c = apply_udp_delta(ne16(h, L4 + 6), l4_delta);
        h[L4 + 6..L4 + 8].copy_from_slice(&c.to_ne_bytes());
    }
}

/// A 16-bit field as it lies in memory (see [`translate_plain`]).
#[inline(always)]
fn ne16(f: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([f[at], f[at + 1]])
}

#[inline(always)]
fn ne32(f: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([f[at], f[at + 1], f[at + 2], f[at + 3]])
}

/// Decrement the TTL and replace one address of the IPv4 header, updating its checksum;
/// returns the address replaced. The transport header is the caller's business.
#[inline]
pub(super) fn rewrite_ipv4(frame: &mut [u8], ip: &Ipv4, which: Endpoint, addr: u32) -> u32 {
    debug_assert!(ip.ttl > 1);
    let o = ip.at();
    let mut ip_csum = get16(frame, o + 10);

    // TTL shares a 16-bit word with the protocol number.
    let old_word = get16(frame, o + 8);
    frame[o + 8] = ip.ttl - 1;
    ip_csum = update16(ip_csum, old_word, get16(frame, o + 8));

    let (addr_at, old_addr) = match which {
        Endpoint::Source => (o + 12, ip.src),
        Endpoint::Destination => (o + 16, ip.dst),
    };
    if old_addr != addr {
        put32(frame, addr_at, addr);
        ip_csum = update32(ip_csum, old_addr, addr);
    }
    put16(frame, o + 10, ip_csum);
    old_addr
}

/// Decrement the TTL only (routed without translation).
#[inline]
pub fn decrement_ttl(frame: &mut [u8], ip: &Ipv4) {
    debug_assert!(ip.ttl > 1);
    let o = ip.at();
    let old_word = get16(frame, o + 8);
    frame[o + 8] = ip.ttl - 1;
    let c = update16(get16(frame, o + 10), old_word, get16(frame, o + 8));
    put16(frame, o + 10, c);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{parse_frame, probe, ParsedFrame, L3};
    use crate::testing::FrameBuilder;
    use proptest::prelude::*;

    const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 2];

    proptest! {
        /// The fixed-offset rewrite gives the general one's bytes, checksums included, for
        /// every frame the probe takes.
        #[test]
        fn plain_translation_writes_the_general_translations_bytes(
            tcp in any::<bool>(),
            src in any::<u32>(), dst in any::<u32>(), sport in any::<u16>(), dport in any::<u16>(),
            ttl in 2u8..=255,
            payload in prop::collection::vec(any::<u8>(), 0..40),
            zero_udp in any::<bool>(),
            source in any::<bool>(),
            addr in any::<u32>(), port in any::<u16>(),
        ) {
            let b = if tcp {
                FrameBuilder::tcp(A, B, src, dst, sport, dport).flags(0x10)
            } else {
                FrameBuilder::udp(A, B, src, dst, sport, dport)
            };
            let mut b = b.ttl(ttl).payload(&payload);
            if zero_udp && !tcp {
                b = b.zero_udp_checksum();
            }
            let frame = b.build();
            prop_assert!(probe(&frame).is_some());
            let Ok(ParsedFrame { l3: L3::Ipv4(ip), .. }) = parse_frame(&frame) else {
                panic!("a built frame parses");
            };
            let which = if source { Endpoint::Source } else { Endpoint::Destination };
            let (mut general, mut plain) = (frame.clone(), frame);
            translate(&mut general, &ip, which, addr, port);
            translate_plain(&mut plain, tcp, which, addr, port);
            prop_assert_eq!(plain, general);
        }
    }
}
