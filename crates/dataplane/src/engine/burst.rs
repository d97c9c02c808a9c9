//! A burst in three stages (see [`Engine::process_burst`]), and the scratch space they share.

use std::sync::Arc;

use super::lead::{probe_kind, Lead, LeadKind};
use super::{forward, Action, Engine, PortId, MAX_BURST, PREFETCH_AHEAD};
use crate::counters::Counter;
use crate::packet::Packet;
use crate::parse::{self, parse_frame, ParseError, ParsedFrame, L3};
use crate::policy_handle::PublishedPolicy;

/// What stage 1 of a chunk leaves for stage 3: per packet, its lead, and the full parse of
/// a packet the probe did not take. Owned by the engine and reused, so a burst neither
/// allocates nor clears it: stage 1 writes `leads[i]` for every packet of the chunk and
/// `parsed[i]` for every packet it parsed, and stage 3 parses a probed packet it declines
/// before it reads `parsed[i]`, so no slot is read before this chunk wrote it.
pub(super) struct BurstScratch {
    parsed: [Result<ParsedFrame, ParseError>; MAX_BURST],
    leads: [Lead; MAX_BURST],
}

impl BurstScratch {
    pub(super) fn new() -> Box<BurstScratch> {
        Box::new(BurstScratch {
            parsed: [Err(ParseError::EthernetTruncated); MAX_BURST],
            leads: [Lead::default(); MAX_BURST],
        })
    }
}

/// The counters of packets received on and sent to `port`: rx packets, rx bytes, tx
/// packets, tx bytes.
#[inline(always)]
pub(super) fn port_counters(port: PortId) -> [Counter; 4] {
    match port {
        PortId::Internal => {
            [Counter::InternalRxPackets, Counter::InternalRxBytes, Counter::InternalTxPackets, Counter::InternalTxBytes]
        }
        PortId::External => {
            [Counter::ExternalRxPackets, Counter::ExternalRxBytes, Counter::ExternalTxPackets, Counter::ExternalTxBytes]
        }
        PortId::Host => [Counter::HostRxPackets, Counter::HostRxBytes, Counter::HostTxPackets, Counter::HostTxBytes],
    }
}

impl Engine {
    /// Process a burst of frames received on `from`. `actions[i]` receives the verdict for
    /// `frames[i]`. Frames the engine originates meanwhile (ARP, ICMP errors, frames
    /// released after ARP resolution) are collected for [`Engine::drain_generated`].
    pub fn process_burst<P: Packet>(&mut self, from: PortId, frames: &mut [P], actions: &mut [Action], now: u64) {
        assert!(actions.len() >= frames.len(), "one action slot per frame");
        self.housekeeping(now);
        // One reference per burst, not per packet: the count lives on a line shared by all
        // workers.
        let current = Arc::clone(&self.current);
        let fast = self.fast_path_usable(from);
        // Taken out for the burst so stage 3 can borrow the engine mutably beside it; a
        // pointer move, not a copy.
        let mut scratch = self.scratch.take().expect("process_burst is not re-entered");
        let BurstScratch { parsed, leads } = &mut *scratch;
        let [rx_packets, rx_bytes, ..] = port_counters(from);
        for (chunk, acts) in frames.chunks_mut(MAX_BURST).zip(actions.chunks_mut(MAX_BURST)) {
            let n = chunk.len();
            let mut bytes = 0;
            // Stage 1: probe (or else parse) everything and prefetch each packet's index
            // slot, and, a few packets behind (so that slot has had time to arrive), the flow
            // record that slot points at; stage 2 does the last few records. By the time
            // stage 3 looks a flow up, its two cache misses have overlapped with the rest of
            // the burst's.
            for i in 0..n {
                let frame = chunk[i].data();
                bytes += frame.len();
                // The lead is built and hashed in registers before it is stored: reading it
                // back from the array right away stalls on store forwarding.
                let probed = if fast { parse::probe(frame) } else { None };
                let mut lead = match probed {
                    Some(probe) => Lead {
                        addrs: probe.addrs,
                        ports: probe.ports,
                        ttl: probe.ttl,
                        kind: probe_kind(&probe),
                        hash: 0,
                    },
                    _ => {
                        let r = parse_frame(frame);
                        let lead = match &r {
                            Ok(ParsedFrame { l3: L3::Ipv4(ip), .. }) => match forward::key_of(ip) {
                                Some(k) => {
                                    let (addrs, ports) = k.words();
                                    Lead { addrs, ports, ttl: 0, kind: LeadKind::Parsed, hash: 0 }
                                }
                                None => Lead::default(),
                            },
                            _ => Lead::default(),
                        };
                        parsed[i] = r;
                        lead
                    }
                };
                if lead.kind != LeadKind::Unkeyed {
                    lead.hash = self.flows.hash_words(lead.addrs, lead.ports);
                    self.flows.prefetch(lead.hash);
                }
                leads[i] = lead;
                if i >= PREFETCH_AHEAD {
                    self.prefetch_record(from, &leads[i - PREFETCH_AHEAD]);
                }
            }
            // Received traffic is counted per chunk, not per packet.
            self.counters.add(rx_packets, n as u64);
            self.counters.add(rx_bytes, bytes as u64);
            for lead in &leads[n.saturating_sub(PREFETCH_AHEAD)..n] {
                self.prefetch_record(from, lead);
            }
            // Stage 3, with the port a constant in each copy of the loop: every decision on
            // it is made once per burst, not per packet.
            let parsed = &mut parsed[..n];
            let leads = &leads[..n];
            match from {
                PortId::Internal => {
                    self.process_chunk(PortId::Internal, chunk, parsed, leads, &mut acts[..n], now, &current)
                }
                PortId::External => {
                    self.process_chunk(PortId::External, chunk, parsed, leads, &mut acts[..n], now, &current)
                }
                PortId::Host => self.process_chunk(PortId::Host, chunk, parsed, leads, &mut acts[..n], now, &current),
            }
        }
        self.scratch = Some(scratch);
        self.finish_burst(now);
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn process_chunk<P: Packet>(
        &mut self,
        from: PortId,
        chunk: &mut [P],
        parsed: &mut [Result<ParsedFrame, ParseError>],
        leads: &[Lead],
        acts: &mut [Action],
        now: u64,
        current: &PublishedPolicy,
    ) {
        debug_assert!(parsed.len() == chunk.len() && leads.len() == chunk.len() && acts.len() == chunk.len());
        // What the fast path sent, counted once per chunk (it always sends out of the other
        // data port).
        let egress = if from == PortId::Internal { PortId::External } else { PortId::Internal };
        let (mut fast_packets, mut fast_bytes) = (0u64, 0usize);
        for (((p, r), lead), act) in chunk.iter_mut().zip(parsed.iter_mut()).zip(leads).zip(acts.iter_mut()) {
            if let Some(probe) = lead.probe() {
                debug_assert!(self.fast_path_usable(from));
                if let Some(len) = self.fast_path(from, p, &probe, lead.hash, now, current) {
                    *act = Action::Forward(egress);
                    fast_packets += 1;
                    fast_bytes += len;
                    continue;
                }
                // Declined: the general path needs the whole parse, which the probe skipped.
                *r = parse_frame(p.data());
            }
            let a = self.process_one(from, p, r, lead.hash, now, current);
            if let Action::Drop(r) = a {
                self.counters.drop(r);
            }
            *act = a;
        }
        if fast_packets > 0 {
            let [.., tx_packets, tx_bytes] = port_counters(egress);
            self.counters.add(tx_packets, fast_packets);
            self.counters.add(tx_bytes, fast_bytes as u64);
            self.fast_path_packets += fast_packets;
        }
    }

    /// Prefetch the flow record the home index slot of a keyed packet points at, or, when
    /// that slot is empty (certainly a new flow), the slot of its first NAT candidate.
    #[inline(always)]
    fn prefetch_record(&self, from: PortId, lead: &Lead) {
        if lead.kind != LeadKind::Unkeyed && self.flows.prefetch_flow(lead.hash) && from != PortId::External {
            self.prefetch_nat_candidate(&lead.key());
        }
    }

    /// Prefetch the index slot of the reply key a new flow gets when its source port can be
    /// kept (the first candidate `nat::allocate_port` tries).
    #[inline]
    fn prefetch_nat_candidate(&self, k: &crate::flow::FlowKey) {
        if self.cfg.snat && (self.cfg.nat_port_min..=self.cfg.nat_port_max).contains(&k.sport) {
            let reply = crate::flow::FlowKey {
                src: k.dst,
                dst: self.cfg.external.ip,
                sport: k.dport,
                dport: k.sport,
                proto: k.proto,
            };
            self.flows.prefetch(self.flows.hash(&reply));
        }
    }
}
