//! Frames the engine originates itself: ARP requests/replies and ICMP errors.
//!
//! Every writer fills a caller-provided buffer and returns the frame length, or 0 if `buf` is
//! too small (the caller counts a drop). Nothing allocates and nothing else can fail. Frames are
//! padded with zeros to the 60-byte Ethernet minimum (FCS excluded), tagged or not. A `vlan` of
//! `Some(id)` adds one 802.1Q tag with priority 0.
//!
//! Addresses are host-order `u32`, MACs `[u8; 6]`.

use crate::checksum;

/// Minimum Ethernet frame length without FCS; shorter frames are zero-padded.
pub const ETH_MIN_FRAME_LEN: usize = 60;
/// Length of every ARP frame written here (28-byte body, padded).
pub const ARP_FRAME_LEN: usize = ETH_MIN_FRAME_LEN;
/// ICMP errors are at most this long at the IP layer (RFC 1812 §4.3.2.3).
pub const ICMP_ERROR_MAX_IP_LEN: usize = 576;
/// TTL of the ICMP errors we originate.
pub const ICMP_ERROR_TTL: u8 = 64;
/// TOS of the ICMP errors we originate: precedence 6, internetwork control (RFC 1812 §4.3.2.5).
pub const ICMP_ERROR_TOS: u8 = 0xC0;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_VLAN: u16 = 0x8100;
const IP_HEADER_LEN: usize = 20;
const ICMP_HEADER_LEN: usize = 8;
const ICMP_QUOTE_MAX: usize = ICMP_ERROR_MAX_IP_LEN - IP_HEADER_LEN - ICMP_HEADER_LEN;

#[inline]
fn l2_len(vlan: Option<u16>) -> usize {
    if vlan.is_some() {
        18
    } else {
        14
    }
}

/// Writes the Ethernet header (and tag); returns the offset of the L3 header. `buf` must have
/// been checked to be long enough.
#[inline]
fn write_eth(buf: &mut [u8], vlan: Option<u16>, dst: [u8; 6], src: [u8; 6], ethertype: u16) -> usize {
    buf[0..6].copy_from_slice(&dst);
    buf[6..12].copy_from_slice(&src);
    match vlan {
        Some(vid) => {
            debug_assert!(vid < 4096, "VLAN id {vid} out of range");
            buf[12..14].copy_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
            buf[14..16].copy_from_slice(&(vid & 0x0FFF).to_be_bytes());
            buf[16..18].copy_from_slice(&ethertype.to_be_bytes());
            18
        }
        None => {
            buf[12..14].copy_from_slice(&ethertype.to_be_bytes());
            14
        }
    }
}

/// Zero-pads `buf[len..]` up to the Ethernet minimum; returns the final length.
#[inline]
fn pad(buf: &mut [u8], len: usize) -> usize {
    if len < ETH_MIN_FRAME_LEN {
        buf[len..ETH_MIN_FRAME_LEN].fill(0);
        ETH_MIN_FRAME_LEN
    } else {
        len
    }
}

#[allow(clippy::too_many_arguments)]
#[inline]
fn write_arp(
    buf: &mut [u8],
    vlan: Option<u16>,
    op: u16,
    eth_dst: [u8; 6],
    src_mac: [u8; 6],
    src_ip: u32,
    target_mac: [u8; 6],
    target_ip: u32,
) -> usize {
    if buf.len() < ARP_FRAME_LEN {
        return 0;
    }
    let o = write_eth(buf, vlan, eth_dst, src_mac, ETHERTYPE_ARP);
    let a = &mut buf[o..o + 28];
    a[0..2].copy_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    a[2..4].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    a[4] = 6;
    a[5] = 4;
    a[6..8].copy_from_slice(&op.to_be_bytes());
    a[8..14].copy_from_slice(&src_mac);
    a[14..18].copy_from_slice(&src_ip.to_be_bytes());
    a[18..24].copy_from_slice(&target_mac);
    a[24..28].copy_from_slice(&target_ip.to_be_bytes());
    let len = pad(buf, o + 28);
    debug_assert_eq!(len, ARP_FRAME_LEN);
    len
}

/// Broadcast ARP request "who has `target_ip`? tell `src_ip`" (target hardware address zero).
/// With `target_ip == src_ip` it is a gratuitous ARP announcement.
#[inline]
pub fn write_arp_request(buf: &mut [u8], vlan: Option<u16>, src_mac: [u8; 6], src_ip: u32, target_ip: u32) -> usize {
    write_arp(buf, vlan, 1, [0xFF; 6], src_mac, src_ip, [0; 6], target_ip)
}

/// Unicast ARP reply "`src_ip` is at `src_mac`" to `dst_mac`/`dst_ip`.
#[inline]
pub fn write_arp_reply(
    buf: &mut [u8],
    vlan: Option<u16>,
    src_mac: [u8; 6],
    src_ip: u32,
    dst_mac: [u8; 6],
    dst_ip: u32,
) -> usize {
    write_arp(buf, vlan, 2, dst_mac, src_mac, src_ip, dst_mac, dst_ip)
}

/// The part of `original` an ICMP error quotes: the datagram trimmed to its IPv4 total length
/// (dropping link padding) and to what fits in a 576-byte error.
#[inline]
fn quote(original: &[u8]) -> &[u8] {
    debug_assert!(original.len() >= IP_HEADER_LEN, "quoted datagram shorter than an IP header");
    debug_assert!(original.first().is_some_and(|b| b >> 4 == 4), "quoted datagram not IPv4");
    let mut len = original.len();
    if len >= 4 {
        let total = usize::from(u16::from_be_bytes([original[2], original[3]]));
        if (IP_HEADER_LEN..len).contains(&total) {
            len = total;
        }
    }
    &original[..len.min(ICMP_QUOTE_MAX)]
}

/// Frame length [`write_icmp_error`] needs for `original` (with or without a tag).
#[inline]
pub fn icmp_error_len(vlan: Option<u16>, original: &[u8]) -> usize {
    let len = l2_len(vlan) + IP_HEADER_LEN + ICMP_HEADER_LEN + quote(original).len();
    len.max(ETH_MIN_FRAME_LEN)
}

/// ICMP error with header bytes 4..8 set to `rest` (unused: 0; frag-needed: next-hop MTU;
/// parameter problem: pointer << 24).
#[allow(clippy::too_many_arguments)]
#[inline]
fn write_icmp(
    buf: &mut [u8],
    vlan: Option<u16>,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src_ip: u32,
    dst_ip: u32,
    icmp_type: u8,
    code: u8,
    rest: u32,
    ip_id: u16,
    original: &[u8],
) -> usize {
    let q = quote(original);
    let frame_len = icmp_error_len(vlan, original);
    if buf.len() < frame_len {
        return 0;
    }
    let o = write_eth(buf, vlan, dst_mac, src_mac, ETHERTYPE_IPV4);
    let ip_len = IP_HEADER_LEN + ICMP_HEADER_LEN + q.len();
    debug_assert!(ip_len <= ICMP_ERROR_MAX_IP_LEN);

    let ip = &mut buf[o..o + IP_HEADER_LEN];
    ip[0] = 0x45;
    ip[1] = ICMP_ERROR_TOS;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&ip_id.to_be_bytes());
    ip[6..8].copy_from_slice(&[0, 0]); // DF clear, not a fragment
    ip[8] = ICMP_ERROR_TTL;
    ip[9] = 1; // ICMP
    ip[10..12].copy_from_slice(&[0, 0]);
    ip[12..16].copy_from_slice(&src_ip.to_be_bytes());
    ip[16..20].copy_from_slice(&dst_ip.to_be_bytes());
    let c = checksum::checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());

    let i = o + IP_HEADER_LEN;
    let icmp = &mut buf[i..i + ICMP_HEADER_LEN + q.len()];
    icmp[0] = icmp_type;
    icmp[1] = code;
    icmp[2..4].copy_from_slice(&[0, 0]);
    icmp[4..8].copy_from_slice(&rest.to_be_bytes());
    icmp[8..].copy_from_slice(q);
    let c = checksum::checksum(icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());

    let len = pad(buf, i + ICMP_HEADER_LEN + q.len());
    debug_assert_eq!(len, frame_len);
    len
}

/// ICMP error `icmp_type`/`code` from `src_ip` to `dst_ip` about `original`, the offending IPv4
/// packet starting at its IP header, as received (extra bytes past its total length are
/// ignored). The IPv4 header has TTL 64, TOS 0xC0, DF clear and identification `ip_id` (the
/// caller keeps a counter). The ICMP payload quotes as much of `original` as fits in a 576-byte
/// IP packet, which always includes its header and first 8 payload bytes. Header bytes 4..8 are
/// zero. Returns the frame length, or 0 if `buf` is shorter than [`icmp_error_len`].
///
/// Whether an error may be sent at all (not about an ICMP error, a non-first fragment, a
/// broadcast...) is the caller's decision; see [`icmp_error_allowed`].
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn write_icmp_error(
    buf: &mut [u8],
    vlan: Option<u16>,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src_ip: u32,
    dst_ip: u32,
    icmp_type: u8,
    code: u8,
    ip_id: u16,
    original: &[u8],
) -> usize {
    write_icmp(buf, vlan, src_mac, dst_mac, src_ip, dst_ip, icmp_type, code, 0, ip_id, original)
}

/// [`write_icmp_error`] with type 11 code 0: time to live exceeded in transit.
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn write_icmp_time_exceeded(
    buf: &mut [u8],
    vlan: Option<u16>,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src_ip: u32,
    dst_ip: u32,
    ip_id: u16,
    original: &[u8],
) -> usize {
    write_icmp(buf, vlan, src_mac, dst_mac, src_ip, dst_ip, 11, 0, 0, ip_id, original)
}

/// [`write_icmp_error`] with type 3 code 4: fragmentation needed and DF set, advertising
/// `mtu` as the next-hop MTU (RFC 1191).
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn write_icmp_frag_needed(
    buf: &mut [u8],
    vlan: Option<u16>,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src_ip: u32,
    dst_ip: u32,
    mtu: u16,
    ip_id: u16,
    original: &[u8],
) -> usize {
    write_icmp(buf, vlan, src_mac, dst_mac, src_ip, dst_ip, 3, 4, u32::from(mtu), ip_id, original)
}

/// RFC 1812 §4.3.2.7: may an ICMP error be sent about `original` (an IPv4 packet from its
/// header)? No if it is malformed, an ICMP error itself (or ICMP of unknown type), a non-first
/// fragment, or its source is not a unicast host (0.0.0.0/8, 127/8, multicast, class E,
/// broadcast), or its destination is broadcast or multicast. Subnet-directed broadcasts are not
/// known here; check them in the caller.
#[inline]
pub fn icmp_error_allowed(original: &[u8]) -> bool {
    if original.len() < IP_HEADER_LEN || original[0] >> 4 != 4 {
        return false;
    }
    let ihl = usize::from(original[0] & 0x0F) * 4;
    if ihl < IP_HEADER_LEN || original.len() < ihl {
        return false;
    }
    let frag_offset = u16::from_be_bytes([original[6], original[7]]) & 0x1FFF;
    if frag_offset != 0 {
        return false;
    }
    let src = u32::from_be_bytes([original[12], original[13], original[14], original[15]]);
    let dst = u32::from_be_bytes([original[16], original[17], original[18], original[19]]);
    let first = (src >> 24) as u8;
    if first == 0 || first == 127 || first >= 224 {
        return false;
    }
    if dst == u32::MAX || (dst >> 28) == 0xE {
        return false;
    }
    if original[9] == 1 {
        // Only about ICMP queries (echo, timestamp, ...), never about errors.
        let Some(&t) = original.get(ihl) else {
            return false;
        };
        return matches!(t, 0 | 8 | 13 | 14 | 15 | 16 | 17 | 18);
    }
    true
}
