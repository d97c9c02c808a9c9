//! The established-flow fast path: nearly every packet on a busy node belongs to a flow that
//! is already set up and will stay in the state it is in. For such a packet the general path
//! (`process_one`) makes dozens of decisions whose outcome is known; this path checks, in one
//! place and without changing anything, that the packet is such a one, and only then does
//! the little work left: touch the flow, translate, decrement the TTL, write the MACs of the
//! cached next hop (the transmissions are counted once per chunk, by the burst loop).
//!
//! It starts from [`crate::parse::probe`], which reads the flow key's two words and the TTL
//! straight from fixed offsets of the frame, so a packet it forwards is never turned into a
//! [`crate::parse::ParsedFrame`] at all; a packet it declines is parsed in full then and
//! handed to the general path.
//!
//! It is an optimisation only: wherever it answers, the answer, the output bytes, the
//! counters and the flow table are exactly the general path's (a differential property test
//! in `tests/engine_fast_path.rs` runs random traffic through engines with and without it),
//! and wherever it declines it has changed nothing, so the general path takes over as if it
//! had never run. It declines everything unusual: VLAN tags, frames the probe did not take
//! (IP options, fragments, ICMP, SYN/FIN/RST), a flow not yet established, expired, from
//! another origin or checked against an older policy, a TTL about to expire, a next hop not
//! in the one-entry cache.

use super::forward::is_martian;
use super::rewrite::{translate_plain, Endpoint};
use super::{Engine, PortId};
use crate::flow::{ticks, Dir, FlowState, Origin};
use crate::packet::Packet;
use crate::parse::{self, Probe};
use crate::policy_handle::PublishedPolicy;

/// What the fast path compares against, precomputed from the engine's configuration (which
/// does not change after [`Engine::new`]) so each comparison is one instruction.
#[derive(Debug, Clone, Copy)]
pub(super) struct FastConstants {
    /// Each data port's MAC as the low 48 bits of a little-endian word, indexed by `PortId`.
    mac_words: [u64; 2],
    /// The external port's connected network and netmask.
    external_net: u32,
    external_mask: u32,
}

/// The low 48 bits of a word: a MAC address read with an 8-byte load.
const MAC_BITS: u64 = (1 << 48) - 1;

impl FastConstants {
    pub(super) fn new(cfg: &crate::config::EngineConfig) -> FastConstants {
        let word = |mac: [u8; 6]| {
            let mut w = [0u8; 8];
            w[..6].copy_from_slice(&mac);
            u64::from_le_bytes(w)
        };
        let mask = cfg.external.netmask();
        FastConstants {
            mac_words: [word(cfg.internal.mac), word(cfg.external.mac)],
            external_net: cfg.external.ip & mask,
            external_mask: mask,
        }
    }
}

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

    /// Forward a probed packet of an established flow arriving on `from` (a data port) out
    /// of the other data port and return its length, or return `None` having changed
    /// nothing. `hash` is the flow table's hash of the probed key. The caller has checked
    /// [`Engine::fast_path_usable`], and counts the packet as sent when this returns `Some`.
    #[inline(always)]
    pub(super) fn fast_path<P: Packet>(
        &mut self,
        from: PortId,
        p: &mut P,
        probe: &Probe,
        hash: u32,
        now: u64,
        pol: &PublishedPolicy,
    ) -> Option<usize> {
        debug_assert!(self.fast_path_usable(from));
        debug_assert_eq!(hash, self.flows.hash_words(probe.addrs, probe.ports));
        if probe.ttl <= 1 {
            return None;
        }
        let (want_dir, egress) = match from {
            PortId::Internal => (Dir::Orig, PortId::External),
            _ => (Dir::Reply, PortId::Internal),
        };
        let frame = p.data_mut();
        // The destination MAC in one load (a probed frame is longer than 8 bytes).
        let head = u64::from_le_bytes(*frame.first_chunk::<8>().expect("a probed frame holds an Ethernet header"));
        debug_assert_eq!(
            head & MAC_BITS == self.fast.mac_words[from as usize],
            parse::dst_mac(frame) == self.port(from).mac
        );
        if head & MAC_BITS != self.fast.mac_words[from as usize] {
            return None;
        }
        // The general path checks replies' addresses before looking them up.
        if from == PortId::External && (is_martian(probe.src()) || is_martian(probe.dst())) {
            return None;
        }
        let idx = self.flows.lookup_dir(probe.addrs, probe.ports, hash, want_dir)?;
        let f = self.flows.get(idx);
        // Only states a plain segment leaves as they are (a reply to a UDP flow nobody has
        // answered yet moves it on).
        let steady = match f.state {
            FlowState::TcpEstablished => probe.tcp,
            FlowState::UdpReplied => !probe.tcp,
            FlowState::UdpNew => !probe.tcp && from == PortId::Internal,
            _ => false,
        };
        if !steady || f.origin != Origin::Internal || f.generation != pol.generation || self.is_expired(f, now) {
            return None;
        }
        let next_hop = match egress {
            // `external_next_hop` with the netmask precomputed.
            PortId::External if probe.dst() & self.fast.external_mask == self.fast.external_net => probe.dst(),
            PortId::External => self.cfg.gateway,
            _ => f.orig.src,
        };
        debug_assert!(egress != PortId::External || next_hop == self.external_next_hop(probe.dst()));
        let hop = &self.hop_cache[egress as usize];
        if hop.ip != next_hop || now >= hop.until {
            return None;
        }
        let dst_mac = hop.mac;
        // Decided: from here on the packet is forwarded.
        let (addr, port, which) = match egress {
            PortId::External => (self.flows.nat_ip(f), f.nat_port, Endpoint::Source),
            _ => (f.orig.src, f.orig.sport, Endpoint::Destination),
        };
        self.flows.get_mut(idx).last_seen = ticks(now);
        translate_plain(frame, probe.tcp, which, addr, port);
        let len = frame.len();
        let macs: &mut [u8; 12] = frame.first_chunk_mut().expect("a probed frame has an Ethernet header");
        macs[0..6].copy_from_slice(&dst_mac);
        macs[6..12].copy_from_slice(&self.port(egress).mac);
        // The caller counts the transmission, once per chunk.
        Some(len)
    }
}
