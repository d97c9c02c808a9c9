//! The established-flow fast path: nearly every packet on a busy node belongs to a flow that
//! is already set up and will stay in the state it is in. For such a packet the general path
//! (`process_one`) makes dozens of decisions whose outcome is known; this path checks, in one
//! place and without changing anything, that the packet is such a one, and only then does
//! the little work left: touch the flow, translate, decrement the TTL, write the MACs of the
//! cached next hop, count the transmission.
//!
//! It is an optimisation only: wherever it answers, the answer, the output bytes, the
//! counters and the flow table are exactly the general path's (a differential property test
//! in `tests/engine_fast_path.rs` runs random traffic through engines with and without it),
//! and wherever it declines it has changed nothing, so the general path takes over as if it
//! had never run. It declines everything unusual: VLAN tags, frames the short parser did not
//! take (IP options, ICMP), SYN/FIN/RST, a flow not yet established, expired, from another
//! origin or checked against an older policy, a TTL about to expire, a next hop not in the
//! one-entry cache.

use super::forward::{is_martian, key_of};
use super::rewrite::{translate, Endpoint};
use super::{Action, Engine, PortId};
use crate::flow::{ticks, Dir, FlowState, Origin};
use crate::packet::Packet;
use crate::parse::{self, ParseError, ParsedFrame, L3, L4, TCP_FIN, TCP_RST, TCP_SYN};
use crate::policy_handle::PublishedPolicy;

impl Engine {
    /// Whether the fast path may run for frames from `from`: only on untagged data ports
    /// (the general path handles tags), and only while it is enabled.
    #[inline(always)]
    pub(super) fn fast_path_usable(&self, from: PortId) -> bool {
        self.fast_path
            && match from {
                PortId::Internal | PortId::External => {
                    self.cfg.internal.vlan.is_none() && self.cfg.external.vlan.is_none()
                }
                PortId::Host => false,
            }
    }

    /// Forward a packet of an established flow arriving on `from` (a data port), or return
    /// `None` having changed nothing. The caller has checked [`Engine::fast_path_usable`].
    #[inline(always)]
    pub(super) fn fast_path<P: Packet>(
        &mut self,
        from: PortId,
        p: &mut P,
        parsed: &Result<ParsedFrame, ParseError>,
        hash: u32,
        now: u64,
        pol: &PublishedPolicy,
    ) -> Option<Action> {
        debug_assert!(self.fast_path_usable(from));
        let Ok(ParsedFrame { vlan: None, l3: L3::Ipv4(ip), .. }) = parsed else {
            return None;
        };
        // Plain segments only: SYN, FIN and RST change the flow's state.
        let tcp = match ip.l4 {
            L4::Tcp { flags, .. } if flags & (TCP_SYN | TCP_FIN | TCP_RST) == 0 => true,
            L4::Udp { .. } => false,
            _ => return None,
        };
        if ip.ttl <= 1 {
            return None;
        }
        let (want_dir, egress) = match from {
            PortId::Internal => (Dir::Orig, PortId::External),
            _ => (Dir::Reply, PortId::Internal),
        };
        let frame = p.data_mut();
        if parse::dst_mac(frame) != self.port(from).mac {
            return None;
        }
        // The general path checks replies' addresses before looking them up.
        if from == PortId::External && (is_martian(ip.src) || is_martian(ip.dst)) {
            return None;
        }
        let key = key_of(ip)?;
        debug_assert_eq!(hash, self.flows.hash(&key));
        let idx = self.flows.lookup_dir(&key, hash, want_dir)?;
        debug_assert_eq!(self.flows.lookup(&key, hash), Some((idx, want_dir)));
        let f = self.flows.get(idx);
        // Only states a plain segment leaves as they are (a reply to a UDP flow nobody has
        // answered yet moves it on).
        let steady = match f.state {
            FlowState::TcpEstablished => tcp,
            FlowState::UdpReplied => !tcp,
            FlowState::UdpNew => !tcp && from == PortId::Internal,
            _ => false,
        };
        if !steady || f.origin != Origin::Internal || f.generation != pol.generation || self.is_expired(f, now) {
            return None;
        }
        let next_hop = match egress {
            PortId::External => self.external_next_hop(ip.dst),
            _ => f.orig.src,
        };
        let hop = &self.hop_cache[egress as usize];
        if hop.ip != next_hop || now >= hop.until {
            return None;
        }
        let dst_mac = hop.mac;
        debug_assert!(
            from != PortId::Internal || self.internal_address_check(ip).is_none(),
            "a known flow passes the address checks"
        );
        // Decided: from here on the packet is forwarded.
        let (addr, port, which) = match egress {
            PortId::External => (self.flows.nat_ip(f), f.nat_port, Endpoint::Source),
            _ => (f.orig.src, f.orig.sport, Endpoint::Destination),
        };
        self.flows.get_mut(idx).last_seen = ticks(now);
        translate(frame, ip, which, addr, port);
        let len = frame.len();
        let macs: &mut [u8; 12] = frame.first_chunk_mut().expect("a parsed frame has an Ethernet header");
        macs[0..6].copy_from_slice(&dst_mac);
        macs[6..12].copy_from_slice(&self.port(egress).mac);
        self.count_tx(egress, len);
        Some(Action::Forward(egress))
    }
}
