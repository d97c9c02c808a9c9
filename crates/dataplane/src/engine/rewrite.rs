//! In-place header rewrites with incremental checksum updates (RFC 1624): NAT of one
//! address and port, TTL decrement. Nothing here re-reads the payload, so the cost does not
//! grow with packet size.

use crate::checksum::{update16, update32};
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
#[inline]
pub fn translate(frame: &mut [u8], ip: &Ipv4, which: Endpoint, addr: u32, port: u16) {
    let old_addr = rewrite_ipv4(frame, ip, which, addr);
    let l4 = ip.l4_offset();
    match ip.l4 {
        L4::Tcp { sport, dport, .. } => {
            let old_port = if which == Endpoint::Source { sport } else { dport };
            let port_at = if which == Endpoint::Source { l4 } else { l4 + 2 };
            let mut c = get16(frame, l4 + 16);
            c = update32(c, old_addr, addr);
            c = update16(c, old_port, port);
            put16(frame, port_at, port);
            put16(frame, l4 + 16, c);
        }
        L4::Udp { sport, dport } => {
            let old_port = if which == Endpoint::Source { sport } else { dport };
            let port_at = if which == Endpoint::Source { l4 } else { l4 + 2 };
            put16(frame, port_at, port);
            let c = get16(frame, l4 + 6);
            // A zero UDP checksum means "not computed" and stays so; a computed zero is
            // sent as all ones.
            if c != 0 {
                let mut c = update32(c, old_addr, addr);
                c = update16(c, old_port, port);
                put16(frame, l4 + 6, if c == 0 { 0xFFFF } else { c });
            }
        }
        L4::IcmpEcho { id, .. } => {
            // The ICMP checksum has no pseudo-header: only the id matters.
            let c = get16(frame, l4 + 2);
            put16(frame, l4 + 4, port);
            put16(frame, l4 + 2, update16(c, id, port));
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
