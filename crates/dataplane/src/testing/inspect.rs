//! [`inspect`] and [`verify_checksums`]: an independent reader of frames.
//!
//! Nothing here uses the crate's parser or [`crate::checksum`]: the point is to check the
//! engine's output with a second, deliberately simple implementation.

use super::{ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_VLAN, PROTO_ICMP, PROTO_TCP, PROTO_UDP};

/// Everything [`inspect`] found in a frame. Use the accessors ([`ip`](Self::ip),
/// [`tcp`](Self::tcp), ...) in tests: they panic with a clear message when the part is absent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inspected {
    /// Frame length in bytes.
    pub len: usize,
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    /// VLAN id of the (single) 802.1Q tag.
    pub vlan: Option<u16>,
    /// Priority bits of the tag (0 without a tag).
    pub vlan_pcp: u8,
    /// The ethertype after the tag, if any.
    pub ethertype: u16,
    pub ip: Option<Ipv4Info>,
    pub l4: L4Info,
    pub arp: Option<ArpInfo>,
    /// Bytes after the IPv4 packet (total length) or ARP body: Ethernet padding.
    pub padding: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv4Info {
    pub src: u32,
    pub dst: u32,
    pub ttl: u8,
    pub proto: u8,
    pub id: u16,
    pub tos: u8,
    pub total_len: u16,
    /// Header length in bytes (20..=60).
    pub header_len: usize,
    pub df: bool,
    pub mf: bool,
    /// Fragment offset in 8-byte units.
    pub frag_offset: u16,
    pub checksum: u16,
    pub options: Vec<u8>,
}

impl Ipv4Info {
    /// MF set or a non-zero offset.
    pub fn is_fragment(&self) -> bool {
        self.mf || self.frag_offset != 0
    }
}

/// The transport part of an IPv4 packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum L4Info {
    /// Not an IPv4 frame.
    Absent,
    Tcp(TcpInfo),
    Udp(UdpInfo),
    Icmp(IcmpInfo),
    /// A non-first fragment: no L4 header.
    Fragment,
    /// Another protocol; its payload.
    Other(Vec<u8>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpInfo {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    /// Flags byte (FIN 0x01 ... CWR 0x80).
    pub flags: u8,
    pub window: u16,
    pub urgent: u16,
    pub checksum: u16,
    /// Header length in bytes (20..=60).
    pub header_len: usize,
    pub options: Vec<u8>,
    pub payload: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpInfo {
    pub sport: u16,
    pub dport: u16,
    /// The UDP length field.
    pub len: u16,
    /// 0 means "no checksum".
    pub checksum: u16,
    pub payload: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IcmpInfo {
    pub icmp_type: u8,
    pub code: u8,
    pub checksum: u16,
    /// Header bytes 4..6 (the identifier of an echo).
    pub id: u16,
    /// Header bytes 6..8 (the sequence number of an echo).
    pub seq: u16,
    /// Header bytes 4..8 as one number.
    pub rest: u32,
    /// Everything after the 8-byte header (for errors: the quoted datagram).
    pub payload: Vec<u8>,
    /// For error types (3, 4, 5, 11, 12): the quoted datagram, if at least a minimal IPv4
    /// header is there.
    pub quoted: Option<Quoted>,
}

impl IcmpInfo {
    /// Types whose payload quotes the offending datagram.
    pub fn is_error(&self) -> bool {
        matches!(self.icmp_type, 3 | 4 | 5 | 11 | 12)
    }
}

/// The datagram quoted in an ICMP error (usually truncated).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quoted {
    pub src: u32,
    pub dst: u32,
    pub proto: u8,
    pub ttl: u8,
    pub id: u16,
    /// The quoted header's total length field (usually more than was quoted).
    pub total_len: u16,
    pub header_len: usize,
    pub checksum: u16,
    /// TCP/UDP ports, if at least 4 bytes of the L4 header were quoted (first fragment only).
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// TCP sequence number, if quoted.
    pub tcp_seq: Option<u32>,
    /// Quoted ICMP type, and identifier (for an echo, if quoted).
    pub icmp_type: Option<u8>,
    pub icmp_id: Option<u16>,
    /// The quoted bytes, from the IP header on.
    pub bytes: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArpInfo {
    pub op: u16,
    pub sender_mac: [u8; 6],
    pub sender_ip: u32,
    pub target_mac: [u8; 6],
    pub target_ip: u32,
}

impl Inspected {
    /// The IPv4 header fields; panics if this is not an IPv4 frame.
    pub fn ip(&self) -> &Ipv4Info {
        self.ip.as_ref().unwrap_or_else(|| panic!("not an IPv4 frame: {self:?}"))
    }

    /// The TCP header; panics if absent.
    pub fn tcp(&self) -> &TcpInfo {
        match &self.l4 {
            L4Info::Tcp(t) => t,
            other => panic!("not a TCP frame: {other:?}"),
        }
    }

    /// The UDP header; panics if absent.
    pub fn udp(&self) -> &UdpInfo {
        match &self.l4 {
            L4Info::Udp(u) => u,
            other => panic!("not a UDP frame: {other:?}"),
        }
    }

    /// The ICMP message; panics if absent.
    pub fn icmp(&self) -> &IcmpInfo {
        match &self.l4 {
            L4Info::Icmp(i) => i,
            other => panic!("not an ICMP frame: {other:?}"),
        }
    }

    /// The datagram quoted by an ICMP error; panics if absent.
    pub fn quoted(&self) -> &Quoted {
        self.icmp().quoted.as_ref().unwrap_or_else(|| panic!("no quoted datagram: {self:?}"))
    }

    /// The ARP body; panics if this is not an ARP frame.
    pub fn arp(&self) -> &ArpInfo {
        self.arp.as_ref().unwrap_or_else(|| panic!("not an ARP frame: {self:?}"))
    }

    /// (source, destination) ports of TCP or UDP.
    pub fn ports(&self) -> Option<(u16, u16)> {
        match &self.l4 {
            L4Info::Tcp(t) => Some((t.sport, t.dport)),
            L4Info::Udp(u) => Some((u.sport, u.dport)),
            _ => None,
        }
    }
}

fn be16(d: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([d[at], d[at + 1]])
}

fn be32(d: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]])
}

fn mac(d: &[u8], at: usize) -> [u8; 6] {
    let mut m = [0u8; 6];
    m.copy_from_slice(&d[at..at + 6]);
    m
}

/// Ethernet layer: (dst, src, vlan, pcp, ethertype, offset of the L3 header).
type EthHeader = ([u8; 6], [u8; 6], Option<u16>, u8, u16, usize);

fn parse_eth(frame: &[u8]) -> Result<EthHeader, String> {
    if frame.len() < 14 {
        return Err(format!("frame of {} bytes is shorter than an Ethernet header", frame.len()));
    }
    let ethertype = be16(frame, 12);
    if ethertype == ETHERTYPE_VLAN {
        if frame.len() < 18 {
            return Err("truncated 802.1Q tag".into());
        }
        let tci = be16(frame, 14);
        let inner = be16(frame, 16);
        Ok((mac(frame, 0), mac(frame, 6), Some(tci & 0x0FFF), (tci >> 13) as u8, inner, 18))
    } else {
        Ok((mac(frame, 0), mac(frame, 6), None, 0, ethertype, 14))
    }
}

/// The IPv4 header of `p` (not checking the total length against `p`).
fn parse_ipv4_header(p: &[u8]) -> Result<Ipv4Info, String> {
    if p.len() < 20 {
        return Err(format!("IPv4 header truncated: {} bytes", p.len()));
    }
    if p[0] >> 4 != 4 {
        return Err(format!("IP version {} is not 4", p[0] >> 4));
    }
    let header_len = usize::from(p[0] & 0x0F) * 4;
    if header_len < 20 {
        return Err(format!("IPv4 header length {header_len} below 20"));
    }
    if p.len() < header_len {
        return Err(format!("IPv4 header of {header_len} bytes truncated at {}", p.len()));
    }
    let total_len = be16(p, 2);
    if usize::from(total_len) < header_len {
        return Err(format!("IPv4 total length {total_len} below header length {header_len}"));
    }
    let frag = be16(p, 6);
    if frag & 0x8000 != 0 {
        return Err("IPv4 reserved flag set".into());
    }
    Ok(Ipv4Info {
        src: be32(p, 12),
        dst: be32(p, 16),
        ttl: p[8],
        proto: p[9],
        id: be16(p, 4),
        tos: p[1],
        total_len,
        header_len,
        df: frag & 0x4000 != 0,
        mf: frag & 0x2000 != 0,
        frag_offset: frag & 0x1FFF,
        checksum: be16(p, 10),
        options: p[20..header_len].to_vec(),
    })
}

fn parse_quoted(q: &[u8]) -> Option<Quoted> {
    let h = parse_ipv4_header(q).ok()?;
    let l4 = &q[h.header_len..];
    let first = h.frag_offset == 0;
    let has = |n: usize| first && l4.len() >= n;
    let ported = h.proto == PROTO_TCP || h.proto == PROTO_UDP;
    Some(Quoted {
        src: h.src,
        dst: h.dst,
        proto: h.proto,
        ttl: h.ttl,
        id: h.id,
        total_len: h.total_len,
        header_len: h.header_len,
        checksum: h.checksum,
        sport: (ported && has(2)).then(|| be16(l4, 0)),
        dport: (ported && has(4)).then(|| be16(l4, 2)),
        tcp_seq: (h.proto == PROTO_TCP && has(8)).then(|| be32(l4, 4)),
        icmp_type: (h.proto == PROTO_ICMP && has(1)).then(|| l4[0]),
        icmp_id: (h.proto == PROTO_ICMP && has(6) && matches!(l4[0], 0 | 8)).then(|| be16(l4, 4)),
        bytes: q.to_vec(),
    })
}

fn parse_l4(ip: &Ipv4Info, l4: &[u8]) -> Result<L4Info, String> {
    if ip.frag_offset != 0 {
        return Ok(L4Info::Fragment);
    }
    match ip.proto {
        PROTO_TCP => {
            if l4.len() < 20 {
                return Err(format!("TCP header truncated: {} bytes", l4.len()));
            }
            let header_len = usize::from(l4[12] >> 4) * 4;
            if header_len < 20 || header_len > l4.len() {
                return Err(format!("TCP header length {header_len} invalid for {}", l4.len()));
            }
            Ok(L4Info::Tcp(TcpInfo {
                sport: be16(l4, 0),
                dport: be16(l4, 2),
                seq: be32(l4, 4),
                ack: be32(l4, 8),
                flags: l4[13],
                window: be16(l4, 14),
                checksum: be16(l4, 16),
                urgent: be16(l4, 18),
                header_len,
                options: l4[20..header_len].to_vec(),
                payload: l4[header_len..].to_vec(),
            }))
        }
        PROTO_UDP => {
            if l4.len() < 8 {
                return Err(format!("UDP header truncated: {} bytes", l4.len()));
            }
            let len = be16(l4, 4);
            let end = if ip.mf {
                l4.len()
            } else {
                if len < 8 || usize::from(len) > l4.len() {
                    return Err(format!("UDP length {len} invalid for {} bytes", l4.len()));
                }
                usize::from(len)
            };
            Ok(L4Info::Udp(UdpInfo {
                sport: be16(l4, 0),
                dport: be16(l4, 2),
                len,
                checksum: be16(l4, 6),
                payload: l4[8..end].to_vec(),
            }))
        }
        PROTO_ICMP => {
            if l4.len() < 8 {
                return Err(format!("ICMP header truncated: {} bytes", l4.len()));
            }
            let mut info = IcmpInfo {
                icmp_type: l4[0],
                code: l4[1],
                checksum: be16(l4, 2),
                id: be16(l4, 4),
                seq: be16(l4, 6),
                rest: be32(l4, 4),
                payload: l4[8..].to_vec(),
                quoted: None,
            };
            if info.is_error() && !ip.mf {
                info.quoted = parse_quoted(&l4[8..]);
            }
            Ok(L4Info::Icmp(info))
        }
        _ => Ok(L4Info::Other(l4.to_vec())),
    }
}

/// Parses a frame: Ethernet (one optional 802.1Q tag), then IPv4 with TCP/UDP/ICMP, or ARP.
/// Other ethertypes give just the Ethernet fields. Errors describe what is malformed (truncated
/// headers, bad lengths, wrong IP version, ...).
pub fn inspect(frame: &[u8]) -> Result<Inspected, String> {
    let (dst_mac, src_mac, vlan, vlan_pcp, ethertype, off) = parse_eth(frame)?;
    let mut out = Inspected {
        len: frame.len(),
        dst_mac,
        src_mac,
        vlan,
        vlan_pcp,
        ethertype,
        ip: None,
        l4: L4Info::Absent,
        arp: None,
        padding: 0,
    };
    let l3 = &frame[off..];
    match ethertype {
        ETHERTYPE_IPV4 => {
            let ip = parse_ipv4_header(l3)?;
            let total = usize::from(ip.total_len);
            if total > l3.len() {
                return Err(format!("IPv4 total length {total} beyond the {} bytes", l3.len()));
            }
            out.l4 = parse_l4(&ip, &l3[ip.header_len..total])?;
            out.padding = l3.len() - total;
            out.ip = Some(ip);
        }
        ETHERTYPE_ARP => {
            if l3.len() < 28 {
                return Err(format!("ARP body truncated: {} bytes", l3.len()));
            }
            if be16(l3, 0) != 1 || be16(l3, 2) != ETHERTYPE_IPV4 || l3[4] != 6 || l3[5] != 4 {
                return Err("ARP is not Ethernet/IPv4".into());
            }
            out.arp = Some(ArpInfo {
                op: be16(l3, 6),
                sender_mac: mac(l3, 8),
                sender_ip: be32(l3, 14),
                target_mac: mac(l3, 18),
                target_ip: be32(l3, 24),
            });
            out.padding = l3.len() - 28;
        }
        _ => {}
    }
    Ok(out)
}

/// One's-complement sum of `bytes` as big-endian 16-bit words (odd tail padded with zero),
/// carrying around after every addition. A region that includes a correct checksum sums to
/// 0xFFFF.
fn ones_complement_sum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let hi = u32::from(bytes[i]);
        let lo = if i + 1 < bytes.len() { u32::from(bytes[i + 1]) } else { 0 };
        sum += (hi << 8) | lo;
        if sum > 0xFFFF {
            sum = (sum & 0xFFFF) + 1;
        }
        i += 2;
    }
    sum as u16
}

/// Checks a region whose checksum field is at `at`; `prefix` (a pseudo header) is summed first.
fn check(what: &str, prefix: &[u8], region: &[u8], at: usize) -> Result<(), String> {
    let mut all = prefix.to_vec();
    all.extend_from_slice(region);
    if ones_complement_sum(&all) == 0xFFFF {
        return Ok(());
    }
    let stored = be16(region, at);
    let field = prefix.len() + at;
    all[field] = 0;
    all[field + 1] = 0;
    let expected = !ones_complement_sum(&all);
    Err(format!("{what} checksum wrong: stored {stored:#06x}, expected {expected:#06x}"))
}

/// Recomputes every checksum in the frame from scratch: the IPv4 header, then TCP or UDP (with
/// the pseudo header; a UDP checksum of 0 means "none" and passes) or ICMP; for an ICMP error
/// also the IPv4 header checksum of the quoted datagram (a NAT must keep it right). L4
/// checksums of fragments are not checked (they cover the whole datagram). Non-IPv4 frames
/// pass. The error names the checksum that is wrong, or says why the frame does not parse.
pub fn verify_checksums(frame: &[u8]) -> Result<(), String> {
    let parsed = inspect(frame)?;
    let Some(ip) = &parsed.ip else { return Ok(()) };
    let (_, _, _, _, _, off) = parse_eth(frame)?;
    let packet = &frame[off..off + usize::from(ip.total_len)];
    check("IPv4 header", &[], &packet[..ip.header_len], 10)?;
    if ip.is_fragment() {
        return Ok(());
    }
    let l4 = &packet[ip.header_len..];
    let len = u16::try_from(l4.len()).expect("IPv4 payload fits in 16 bits");
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&ip.src.to_be_bytes());
    pseudo.extend_from_slice(&ip.dst.to_be_bytes());
    pseudo.push(0);
    pseudo.push(ip.proto);
    match &parsed.l4 {
        L4Info::Tcp(_) => {
            pseudo.extend_from_slice(&len.to_be_bytes());
            check("TCP", &pseudo, l4, 16)
        }
        L4Info::Udp(u) => {
            if u.checksum == 0 {
                return Ok(());
            }
            pseudo.extend_from_slice(&u.len.to_be_bytes());
            check("UDP", &pseudo, &l4[..usize::from(u.len)], 6)
        }
        L4Info::Icmp(i) => {
            check("ICMP", &[], l4, 2)?;
            match &i.quoted {
                Some(q) => check("quoted IPv4 header", &[], &q.bytes[..q.header_len], 10),
                None => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_known_vectors() {
        // RFC 1071 section 3 example.
        assert_eq!(ones_complement_sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), 0xddf2);
        // A textbook IPv4 header with checksum 0xb861 sums to 0xFFFF.
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8,
            0x00, 0xc7,
        ];
        assert_eq!(ones_complement_sum(&hdr), 0xFFFF);
        assert_eq!(ones_complement_sum(&[0x12]), 0x1200);
    }
}
