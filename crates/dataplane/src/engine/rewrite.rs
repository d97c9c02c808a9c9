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
