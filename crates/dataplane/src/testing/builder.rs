//! [`FrameBuilder`]: complete Ethernet frames with correct checksums.

use super::{
    ARP_REPLY, ARP_REQUEST, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_VLAN, ETH_MIN_LEN, ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST, MAC_BROADCAST, MAC_ZERO, PROTO_ICMP, PROTO_TCP, PROTO_UDP,
};
use crate::checksum;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Tcp,
    Udp,
    Icmp,
    Raw(u8),
    Arp,
}

/// Builds one Ethernet frame. Start with a constructor ([`tcp`](Self::tcp), [`udp`](Self::udp),
/// [`icmp_echo_request`](Self::icmp_echo_request), [`icmp_error`](Self::icmp_error),
/// [`arp_request`](Self::arp_request), ...), chain setters, finish with [`build`](Self::build)
/// (the whole frame) or [`build_ipv4`](Self::build_ipv4) (the IP packet only, e.g. to quote it
/// in an ICMP error).
///
/// Defaults: no VLAN tag, TTL 64, TOS 0, IP id 0, DF clear, no IP options; TCP seq/ack 0, no
/// flags, window 65535; UDP checksum computed; frames padded to 60 bytes.
///
/// Fragments: with a non-zero fragment offset no L4 header is written (the IP payload is just
/// [`payload`](Self::payload)). A first fragment (MF, offset 0) gets an L4 header whose checksum
/// covers only the bytes present.
#[derive(Clone, Debug)]
pub struct FrameBuilder {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    vlan: Option<u16>,
    vlan_pcp: u8,
    pad: bool,
    kind: Kind,
    // IPv4 (for ARP: sender and target protocol addresses)
    src_ip: u32,
    dst_ip: u32,
    ttl: u8,
    tos: u8,
    id: u16,
    df: bool,
    mf: bool,
    frag_offset: u16,
    ip_options: Vec<u8>,
    // TCP/UDP
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    tcp_flags: u8,
    window: u16,
    urgent: u16,
    tcp_options: Vec<u8>,
    udp_zero_checksum: bool,
    // ICMP
    icmp_type: u8,
    icmp_code: u8,
    /// Bytes 4..8 of the ICMP header (echo: id and sequence; errors: unused/MTU/pointer).
    icmp_rest: u32,
    payload: Vec<u8>,
    // ARP
    arp_op: u16,
    arp_sender_mac: [u8; 6],
    arp_target_mac: [u8; 6],
    // Deliberate damage
    corrupt_ip: bool,
    corrupt_l4: bool,
}

impl FrameBuilder {
    fn base(src_mac: [u8; 6], dst_mac: [u8; 6], kind: Kind, src_ip: u32, dst_ip: u32) -> Self {
        FrameBuilder {
            src_mac,
            dst_mac,
            vlan: None,
            vlan_pcp: 0,
            pad: true,
            kind,
            src_ip,
            dst_ip,
            ttl: 64,
            tos: 0,
            id: 0,
            df: false,
            mf: false,
            frag_offset: 0,
            ip_options: Vec::new(),
            sport: 0,
            dport: 0,
            seq: 0,
            ack: 0,
            tcp_flags: 0,
            window: 65535,
            urgent: 0,
            tcp_options: Vec::new(),
            udp_zero_checksum: false,
            icmp_type: 0,
            icmp_code: 0,
            icmp_rest: 0,
            payload: Vec::new(),
            arp_op: 0,
            arp_sender_mac: src_mac,
            arp_target_mac: MAC_ZERO,
            corrupt_ip: false,
            corrupt_l4: false,
        }
    }

    /// A TCP segment (no flags until [`flags`](Self::flags)).
    pub fn tcp(src_mac: [u8; 6], dst_mac: [u8; 6], src_ip: u32, dst_ip: u32, sport: u16, dport: u16) -> Self {
        let mut b = Self::base(src_mac, dst_mac, Kind::Tcp, src_ip, dst_ip);
        b.sport = sport;
        b.dport = dport;
        b
    }

    /// A UDP datagram.
    pub fn udp(src_mac: [u8; 6], dst_mac: [u8; 6], src_ip: u32, dst_ip: u32, sport: u16, dport: u16) -> Self {
        let mut b = Self::base(src_mac, dst_mac, Kind::Udp, src_ip, dst_ip);
        b.sport = sport;
        b.dport = dport;
        b
    }

    /// An ICMP echo request (type 8).
    pub fn icmp_echo_request(src_mac: [u8; 6], dst_mac: [u8; 6], src_ip: u32, dst_ip: u32, id: u16, seq: u16) -> Self {
        let mut b = Self::base(src_mac, dst_mac, Kind::Icmp, src_ip, dst_ip);
        b.icmp_type = ICMP_ECHO_REQUEST;
        b.icmp_rest = (u32::from(id) << 16) | u32::from(seq);
        b
    }

    /// An ICMP echo reply (type 0).
    pub fn icmp_echo_reply(src_mac: [u8; 6], dst_mac: [u8; 6], src_ip: u32, dst_ip: u32, id: u16, seq: u16) -> Self {
        let mut b = Self::icmp_echo_request(src_mac, dst_mac, src_ip, dst_ip, id, seq);
        b.icmp_type = ICMP_ECHO_REPLY;
        b
    }

    /// An ICMP error (`icmp_type`/`code`, e.g. 11/0 or 3/3) quoting `quoted`: the original IP
    /// datagram starting at its IP header, as much of it as the test wants (see [`ip_packet`]
    /// and [`build_ipv4`](Self::build_ipv4)). Bytes 4..8 of the ICMP header are 0 unless set
    /// with [`icmp_rest`](Self::icmp_rest).
    pub fn icmp_error(
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        src_ip: u32,
        dst_ip: u32,
        icmp_type: u8,
        code: u8,
        quoted: &[u8],
    ) -> Self {
        let mut b = Self::base(src_mac, dst_mac, Kind::Icmp, src_ip, dst_ip);
        b.icmp_type = icmp_type;
        b.icmp_code = code;
        b.payload = quoted.to_vec();
        b
    }

    /// Any ICMP message: type, code, header bytes 4..8 and [`payload`](Self::payload).
    pub fn icmp(src_mac: [u8; 6], dst_mac: [u8; 6], src_ip: u32, dst_ip: u32, icmp_type: u8, code: u8) -> Self {
        let mut b = Self::base(src_mac, dst_mac, Kind::Icmp, src_ip, dst_ip);
        b.icmp_type = icmp_type;
        b.icmp_code = code;
        b
    }

    /// An IPv4 packet of protocol `proto` whose payload is [`payload`](Self::payload), verbatim.
    pub fn ipv4_raw(src_mac: [u8; 6], dst_mac: [u8; 6], src_ip: u32, dst_ip: u32, proto: u8) -> Self {
        Self::base(src_mac, dst_mac, Kind::Raw(proto), src_ip, dst_ip)
    }

    /// A broadcast ARP request "who has `target_ip`? tell `sender_ip`" from `src_mac`.
    pub fn arp_request(src_mac: [u8; 6], sender_ip: u32, target_ip: u32) -> Self {
        let mut b = Self::base(src_mac, MAC_BROADCAST, Kind::Arp, sender_ip, target_ip);
        b.arp_op = ARP_REQUEST;
        b
    }

    /// An ARP reply "`sender_ip` is at `src_mac`" sent to `dst_mac`/`target_ip`.
    pub fn arp_reply(src_mac: [u8; 6], sender_ip: u32, dst_mac: [u8; 6], target_ip: u32) -> Self {
        let mut b = Self::base(src_mac, dst_mac, Kind::Arp, sender_ip, target_ip);
        b.arp_op = ARP_REPLY;
        b.arp_target_mac = dst_mac;
        b
    }

    // ----- Ethernet -----

    /// One 802.1Q tag with this VLAN id (0..4095), or none.
    pub fn vlan(mut self, vlan: Option<u16>) -> Self {
        if let Some(v) = vlan {
            assert!(v < 4096, "VLAN id {v} out of range");
        }
        self.vlan = vlan;
        self
    }

    /// The 802.1Q priority (PCP, 0..7) of the tag.
    pub fn vlan_pcp(mut self, pcp: u8) -> Self {
        assert!(pcp < 8, "PCP {pcp} out of range");
        self.vlan_pcp = pcp;
        self
    }

    pub fn src_mac(mut self, mac: [u8; 6]) -> Self {
        self.src_mac = mac;
        self
    }

    pub fn dst_mac(mut self, mac: [u8; 6]) -> Self {
        self.dst_mac = mac;
        self
    }

    /// Pad to the 60-byte Ethernet minimum (default true).
    pub fn pad(mut self, pad: bool) -> Self {
        self.pad = pad;
        self
    }

    // ----- IPv4 -----

    pub fn src_ip(mut self, ip: u32) -> Self {
        self.src_ip = ip;
        self
    }

    pub fn dst_ip(mut self, ip: u32) -> Self {
        self.dst_ip = ip;
        self
    }

    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = ttl;
        self
    }

    pub fn tos(mut self, tos: u8) -> Self {
        self.tos = tos;
        self
    }

    /// The IP identification field.
    pub fn id(mut self, id: u16) -> Self {
        self.id = id;
        self
    }

    /// Don't-fragment flag.
    pub fn df(mut self, df: bool) -> Self {
        self.df = df;
        self
    }

    /// More-fragments flag.
    pub fn mf(mut self, mf: bool) -> Self {
        self.mf = mf;
        self
    }

    /// Fragment offset in 8-byte units (0..8191).
    pub fn frag_offset(mut self, units: u16) -> Self {
        assert!(units < 8192, "fragment offset {units} out of range");
        self.frag_offset = units;
        self
    }

    /// IPv4 options, padded with zero (end-of-options) bytes to a multiple of 4; at most 40.
    pub fn ip_options(mut self, options: &[u8]) -> Self {
        assert!(options.len() <= 40, "IPv4 options longer than 40 bytes");
        self.ip_options = options.to_vec();
        self.ip_options.resize(options.len().next_multiple_of(4), 0);
        self
    }

    // ----- TCP/UDP -----

    pub fn sport(mut self, port: u16) -> Self {
        self.sport = port;
        self
    }

    pub fn dport(mut self, port: u16) -> Self {
        self.dport = port;
        self
    }

    /// TCP flags byte, e.g. `SYN | ACK`.
    pub fn flags(mut self, flags: u8) -> Self {
        self.tcp_flags = flags;
        self
    }

    /// TCP sequence number.
    pub fn seq(mut self, seq: u32) -> Self {
        self.seq = seq;
        self
    }

    /// TCP acknowledgment number (does not set the ACK flag).
    pub fn ack(mut self, ack: u32) -> Self {
        self.ack = ack;
        self
    }

    pub fn window(mut self, window: u16) -> Self {
        self.window = window;
        self
    }

    pub fn urgent(mut self, urgent: u16) -> Self {
        self.urgent = urgent;
        self
    }

    /// TCP options, padded with zero (end-of-options) bytes to a multiple of 4; at most 40.
    pub fn tcp_options(mut self, options: &[u8]) -> Self {
        assert!(options.len() <= 40, "TCP options longer than 40 bytes");
        self.tcp_options = options.to_vec();
        self.tcp_options.resize(options.len().next_multiple_of(4), 0);
        self
    }

    /// Send the UDP datagram without a checksum (field 0).
    pub fn zero_udp_checksum(mut self) -> Self {
        self.udp_zero_checksum = true;
        self
    }

    /// L4 payload (TCP/UDP data, ICMP data after the 8-byte header, raw IP payload). For ICMP
    /// errors this replaces the quoted datagram.
    pub fn payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }

    // ----- ICMP -----

    /// ICMP type (e.g. to turn an echo into something else).
    pub fn icmp_type(mut self, icmp_type: u8) -> Self {
        self.icmp_type = icmp_type;
        self
    }

    pub fn icmp_code(mut self, code: u8) -> Self {
        self.icmp_code = code;
        self
    }

    /// ICMP header bytes 4..8 (echo: id << 16 | seq; frag-needed: next-hop MTU in the low 16).
    pub fn icmp_rest(mut self, rest: u32) -> Self {
        self.icmp_rest = rest;
        self
    }

    // ----- ARP -----

    /// ARP operation (1 request, 2 reply, anything else for malformed tests).
    pub fn arp_op(mut self, op: u16) -> Self {
        self.arp_op = op;
        self
    }

    /// ARP sender hardware address (default: the Ethernet source).
    pub fn arp_sender_mac(mut self, mac: [u8; 6]) -> Self {
        self.arp_sender_mac = mac;
        self
    }

    /// ARP target hardware address (default: zero for requests, `dst_mac` for replies).
    pub fn arp_target_mac(mut self, mac: [u8; 6]) -> Self {
        self.arp_target_mac = mac;
        self
    }

    // ----- Damage -----

    /// Write a wrong IPv4 header checksum.
    pub fn corrupt_ip_checksum(mut self) -> Self {
        self.corrupt_ip = true;
        self
    }

    /// Write a wrong TCP/UDP/ICMP checksum (for UDP never 0, which would mean "none").
    pub fn corrupt_l4_checksum(mut self) -> Self {
        self.corrupt_l4 = true;
        self
    }

    // ----- Output -----

    fn proto(&self) -> u8 {
        match self.kind {
            Kind::Tcp => PROTO_TCP,
            Kind::Udp => PROTO_UDP,
            Kind::Icmp => PROTO_ICMP,
            Kind::Raw(p) => p,
            Kind::Arp => panic!("an ARP frame has no IP protocol"),
        }
    }

    fn l4(&self) -> Vec<u8> {
        if self.frag_offset != 0 {
            return self.payload.clone();
        }
        let mut out = Vec::new();
        let csum_at = match self.kind {
            Kind::Tcp => {
                let hlen = 20 + self.tcp_options.len();
                out.extend_from_slice(&self.sport.to_be_bytes());
                out.extend_from_slice(&self.dport.to_be_bytes());
                out.extend_from_slice(&self.seq.to_be_bytes());
                out.extend_from_slice(&self.ack.to_be_bytes());
                out.push(((hlen / 4) as u8) << 4);
                out.push(self.tcp_flags);
                out.extend_from_slice(&self.window.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&self.urgent.to_be_bytes());
                out.extend_from_slice(&self.tcp_options);
                Some(16)
            }
            Kind::Udp => {
                let len = u16::try_from(8 + self.payload.len()).expect("UDP datagram too long");
                out.extend_from_slice(&self.sport.to_be_bytes());
                out.extend_from_slice(&self.dport.to_be_bytes());
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
                Some(6)
            }
            Kind::Icmp => {
                out.push(self.icmp_type);
                out.push(self.icmp_code);
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&self.icmp_rest.to_be_bytes());
                Some(2)
            }
            Kind::Raw(_) => None,
            Kind::Arp => unreachable!(),
        };
        out.extend_from_slice(&self.payload);
        let Some(at) = csum_at else { return out };
        let len = u16::try_from(out.len()).expect("L4 segment too long");
        let mut csum = match self.kind {
            Kind::Icmp => checksum::checksum(&out),
            Kind::Udp if self.udp_zero_checksum => 0,
            _ => {
                let ph = checksum::pseudo_header_sum(self.src_ip, self.dst_ip, self.proto(), len);
                let c = checksum::fold(checksum::sum16(&out, ph));
                if self.kind == Kind::Udp {
                    checksum::udp_nonzero(c)
                } else {
                    c
                }
            }
        };
        if self.corrupt_l4 {
            csum = if csum == 0x5A5A { 0xA5A5 } else { csum ^ 0x5A5A };
            if csum == 0 {
                csum = 0x1111;
            }
        }
        out[at..at + 2].copy_from_slice(&csum.to_be_bytes());
        out
    }

    /// The IPv4 packet alone (header + L4), without Ethernet. Panics for ARP.
    pub fn build_ipv4(&self) -> Vec<u8> {
        let l4 = self.l4();
        let hlen = 20 + self.ip_options.len();
        let total = u16::try_from(hlen + l4.len()).expect("IPv4 packet too long");
        let mut p = Vec::with_capacity(usize::from(total));
        p.push(0x40 | (hlen / 4) as u8);
        p.push(self.tos);
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&self.id.to_be_bytes());
        let mut frag = self.frag_offset;
        if self.df {
            frag |= 0x4000;
        }
        if self.mf {
            frag |= 0x2000;
        }
        p.extend_from_slice(&frag.to_be_bytes());
        p.push(self.ttl);
        p.push(self.proto());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(&self.src_ip.to_be_bytes());
        p.extend_from_slice(&self.dst_ip.to_be_bytes());
        p.extend_from_slice(&self.ip_options);
        let mut csum = checksum::checksum(&p);
        if self.corrupt_ip {
            csum ^= 0x5A5A;
        }
        p[10..12].copy_from_slice(&csum.to_be_bytes());
        p.extend_from_slice(&l4);
        p
    }

    fn arp_body(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(28);
        p.extend_from_slice(&[0x00, 0x01, 0x08, 0x00, 6, 4]);
        p.extend_from_slice(&self.arp_op.to_be_bytes());
        p.extend_from_slice(&self.arp_sender_mac);
        p.extend_from_slice(&self.src_ip.to_be_bytes());
        p.extend_from_slice(&self.arp_target_mac);
        p.extend_from_slice(&self.dst_ip.to_be_bytes());
        p
    }

    /// The complete Ethernet frame (no FCS).
    pub fn build(&self) -> Vec<u8> {
        let (ethertype, body) = match self.kind {
            Kind::Arp => (ETHERTYPE_ARP, self.arp_body()),
            _ => (ETHERTYPE_IPV4, self.build_ipv4()),
        };
        let mut f = Vec::with_capacity(18 + body.len().max(ETH_MIN_LEN));
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        if let Some(vid) = self.vlan {
            f.extend_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
            let tci = (u16::from(self.vlan_pcp) << 13) | vid;
            f.extend_from_slice(&tci.to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(&body);
        if self.pad && f.len() < ETH_MIN_LEN {
            f.resize(ETH_MIN_LEN, 0);
        }
        f
    }
}

/// The IPv4 packet inside an Ethernet frame (after an optional 802.1Q tag), trimmed to its
/// total length (so Ethernet padding is dropped). Panics if the frame is not IPv4. Handy for
/// quoting a built frame in an ICMP error.
pub fn ip_packet(frame: &[u8]) -> &[u8] {
    assert!(frame.len() >= 14, "frame shorter than an Ethernet header");
    let mut off = 12;
    let mut ethertype = u16::from_be_bytes([frame[off], frame[off + 1]]);
    if ethertype == ETHERTYPE_VLAN {
        off += 4;
        assert!(frame.len() >= off + 2, "truncated VLAN tag");
        ethertype = u16::from_be_bytes([frame[off], frame[off + 1]]);
    }
    assert_eq!(ethertype, ETHERTYPE_IPV4, "not an IPv4 frame");
    let ip = &frame[off + 2..];
    assert!(ip.len() >= 20, "truncated IPv4 header");
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    assert!(total <= ip.len(), "IPv4 total length beyond the frame");
    &ip[..total]
}
