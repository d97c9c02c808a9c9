//! Frame toolkit **for tests and benchmarks**; not used by the engine.
//!
//! - [`FrameBuilder`] makes complete Ethernet frames (optional 802.1Q tag; IPv4 with TCP, UDP,
//!   ICMP echo, ICMP errors or a raw payload; ARP) with correct checksums.
//! - [`inspect`] and [`verify_checksums`] read frames back. They are deliberately independent of
//!   the engine: they use no parser and no checksum code from the rest of this crate (the
//!   checksum is a plain loop over big-endian words in [`inspect`]'s module), so tests can check
//!   what the engine emits against a second implementation.
//!
//! The builder does use [`crate::checksum`] to fill in checksums, so every builder test is also a
//! cross-check of that module against the independent verifier.
//!
//! Everything here allocates freely and panics on misuse: it is test code.
//!
//! ```
//! use sluice_dataplane::testing::*;
//!
//! let frame = FrameBuilder::tcp(MAC_CLIENT, MAC_INTERNAL, IP_CLIENT, IP_SERVER, 40000, 443)
//!     .flags(SYN)
//!     .ttl(64)
//!     .vlan(Some(100))
//!     .build();
//! verify_checksums(&frame).unwrap();
//! let i = inspect(&frame).unwrap();
//! assert_eq!(i.vlan, Some(100));
//! assert_eq!(i.tcp().flags, SYN);
//! assert_eq!(i.ip().dst, IP_SERVER);
//! ```

mod builder;
mod inspect;

pub use builder::{ip_packet, FrameBuilder};
pub use inspect::{
    inspect, verify_checksums, ArpInfo, IcmpInfo, Inspected, Ipv4Info, L4Info, Quoted, TcpInfo, UdpInfo,
};

// TCP flag bits (byte 13 of the TCP header).
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
pub const URG: u8 = 0x20;
pub const ECE: u8 = 0x40;
pub const CWR: u8 = 0x80;

// Ethertypes.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_IPV6: u16 = 0x86DD;

// IP protocol numbers.
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

// ICMP types and a few codes.
pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAM_PROBLEM: u8 = 12;
pub const ICMP_CODE_NET_UNREACH: u8 = 0;
pub const ICMP_CODE_HOST_UNREACH: u8 = 1;
pub const ICMP_CODE_PORT_UNREACH: u8 = 3;
pub const ICMP_CODE_FRAG_NEEDED: u8 = 4;
pub const ICMP_CODE_ADMIN_PROHIBITED: u8 = 13;

// ARP operations.
pub const ARP_REQUEST: u16 = 1;
pub const ARP_REPLY: u16 = 2;

/// Minimum Ethernet frame length without FCS.
pub const ETH_MIN_LEN: usize = 60;

// Test MAC addresses (locally administered).
pub const MAC_BROADCAST: [u8; 6] = [0xFF; 6];
pub const MAC_ZERO: [u8; 6] = [0; 6];
/// A client on the internal network.
pub const MAC_CLIENT: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x05];
/// A second client on the internal network.
pub const MAC_CLIENT2: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x06];
/// The appliance's internal port.
pub const MAC_INTERNAL: [u8; 6] = [0x02, 0x51, 0x00, 0x00, 0x00, 0x01];
/// The appliance's external port.
pub const MAC_EXTERNAL: [u8; 6] = [0x02, 0x51, 0x00, 0x00, 0x00, 0x02];
/// The upstream gateway on the external network.
pub const MAC_GATEWAY: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0xFE];

// Test IPv4 addresses (host order).
/// 10.10.0.5, a client on the internal network 10.10.0.0/24.
pub const IP_CLIENT: u32 = ipv4(10, 10, 0, 5);
/// 10.10.0.6, a second client.
pub const IP_CLIENT2: u32 = ipv4(10, 10, 0, 6);
/// 10.10.0.1, the appliance's internal address.
pub const IP_INTERNAL: u32 = ipv4(10, 10, 0, 1);
/// 198.51.100.2, the appliance's external address (on 198.51.100.0/24).
pub const IP_EXTERNAL: u32 = ipv4(198, 51, 100, 2);
/// 198.51.100.1, the upstream gateway.
pub const IP_GATEWAY: u32 = ipv4(198, 51, 100, 1);
/// 203.0.113.10, a server on the internet.
pub const IP_SERVER: u32 = ipv4(203, 0, 113, 10);
/// 203.0.113.20, another server on the internet.
pub const IP_SERVER2: u32 = ipv4(203, 0, 113, 20);

/// `a.b.c.d` as a host-order `u32`.
pub const fn ipv4(a: u8, b: u8, c: u8, d: u8) -> u32 {
    u32::from_be_bytes([a, b, c, d])
}

/// Dotted-quad text of a host-order address (for assertion messages).
pub fn ip_to_string(ip: u32) -> String {
    let [a, b, c, d] = ip.to_be_bytes();
    format!("{a}.{b}.{c}.{d}")
}

/// `aa:bb:cc:dd:ee:ff` text of a MAC address (for assertion messages).
pub fn mac_to_string(mac: [u8; 6]) -> String {
    let parts: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(":")
}
