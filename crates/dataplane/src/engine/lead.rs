//! Stage 1's record of each packet of a burst (see `Engine::process_burst`).

use crate::parse;

/// What stage 1 of a burst learned about one packet: its flow key (as the two words of
/// [`crate::flow::FlowKey::words`]) and the key's hash, and whether the fast path's probe
/// took it (then the packet was not parsed in full) or the parser did.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Lead {
    pub(super) addrs: u64,
    pub(super) ports: u64,
    pub(super) hash: u32,
    /// The TTL, for a probed packet.
    pub(super) ttl: u8,
    pub(super) kind: LeadKind,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum LeadKind {
    /// No flow key (not IPv4 with ports, or not parsed): the parse result says what it is.
    #[default]
    Unkeyed,
    /// Parsed in full, with a flow key.
    Parsed,
    /// Probed: a TCP segment without SYN, FIN or RST.
    ProbedTcp,
    /// Probed: a UDP datagram.
    ProbedUdp,
}

pub(super) fn probe_kind(p: &parse::Probe) -> LeadKind {
    if p.tcp {
        LeadKind::ProbedTcp
    } else {
        LeadKind::ProbedUdp
    }
}

impl Lead {
    /// The probe this lead carries, for a probed packet.
    #[inline(always)]
    pub(super) fn probe(&self) -> Option<parse::Probe> {
        let tcp = match self.kind {
            LeadKind::ProbedTcp => true,
            LeadKind::ProbedUdp => false,
            _ => return None,
        };
        Some(parse::Probe { addrs: self.addrs, ports: self.ports, ttl: self.ttl, tcp })
    }

    /// The flow key, for a keyed packet.
    #[inline]
    pub(super) fn key(&self) -> crate::flow::FlowKey {
        debug_assert!(self.kind != LeadKind::Unkeyed);
        crate::flow::FlowKey {
            src: self.addrs as u32,
            dst: (self.addrs >> 32) as u32,
            sport: self.ports as u16,
            dport: (self.ports >> 16) as u16,
            proto: (self.ports >> 32) as u8,
        }
    }
}
