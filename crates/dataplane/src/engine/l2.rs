//! Layer 2: ARP, VLAN tags, next-hop resolution and the frames the engine originates.

use super::{Action, Engine, PortId};
use crate::counters::{Counter, DropReason};
use crate::generate::{write_arp_reply, write_arp_request};
use crate::neighbor::Hold;
use crate::packet::Packet;
use crate::parse::{Arp, ParsedFrame, ETHERTYPE_VLAN, VLAN_TAG_LEN};

const ARP_REQUEST: u16 = 1;

/// Frames the engine originates during a burst, in one preallocated arena.
pub(crate) struct Generated {
    buf: Vec<u8>,
    slot_len: usize,
    frames: Vec<(PortId, usize)>,
    max: usize,
}

impl Generated {
    pub(crate) fn new(max: usize, slot_len: usize) -> Generated {
        Generated { buf: vec![0; max * slot_len], slot_len, frames: Vec::with_capacity(max), max }
    }

    /// Write one frame with `write` (which returns its length, 0 on failure).
    pub(crate) fn push(&mut self, port: PortId, write: impl FnOnce(&mut [u8]) -> usize) -> bool {
        if self.frames.len() == self.max {
            return false;
        }
        let i = self.frames.len();
        let slot = &mut self.buf[i * self.slot_len..(i + 1) * self.slot_len];
        let len = write(slot);
        if len == 0 {
            return false;
        }
        debug_assert!(len <= self.slot_len);
        self.frames.push((port, len));
        true
    }

    pub(crate) fn drain(&mut self, mut f: impl FnMut(PortId, &[u8])) {
        for (i, (port, len)) in self.frames.iter().enumerate() {
            f(*port, &self.buf[i * self.slot_len..i * self.slot_len + len]);
        }
        self.frames.clear();
    }

    pub(crate) fn len(&self) -> usize {
        self.frames.len()
    }
}

impl Engine {
    pub(super) fn handle_arp(&mut self, from: PortId, eth: &ParsedFrame, arp: &Arp, now: u64) -> Action {
        if from == PortId::Host {
            return self.handle_host_arp(eth, arp);
        }
        let port = *self.port(from);
        if arp.target_ip != port.ip {
            // Not about us: we neither answer nor learn from other hosts' conversations.
            return Action::Consumed;
        }
        self.hop_cache[from as usize] = Default::default();
        let nbr = self.neighbor_mut(from);
        if arp.sender_ip != 0 {
            nbr.learn(arp.sender_ip, arp.sender_mac, now);
        }
        if arp.op == ARP_REQUEST {
            let vlan = port.vlan;
            let ok = self
                .generated
                .push(from, |buf| write_arp_reply(buf, vlan, port.mac, port.ip, arp.sender_mac, arp.sender_ip));
            if ok {
                self.count_tx(from, 60);
                self.counters.inc(Counter::ArpRequestsAnswered);
            } else {
                self.counters.drop(DropReason::GeneratedOverflow);
            }
        }
        self.release_pending(from);
        Action::Consumed
    }

    /// On the service lane the engine is every address's neighbour (proxy ARP): the host
    /// sends everything to it, and it routes.
    fn handle_host_arp(&mut self, _eth: &ParsedFrame, arp: &Arp) -> Action {
        let Some(lane) = self.cfg.host_lane else {
            return Action::Drop(DropReason::HostLaneDisabled);
        };
        if arp.op == ARP_REQUEST && arp.target_ip != arp.sender_ip {
            let ok = self.generated.push(PortId::Host, |buf| {
                write_arp_reply(buf, None, lane.engine_mac, arp.target_ip, arp.sender_mac, arp.sender_ip)
            });
            if ok {
                self.count_tx(PortId::Host, 60);
                self.counters.inc(Counter::ArpRequestsAnswered);
            } else {
                self.counters.drop(DropReason::GeneratedOverflow);
            }
        }
        Action::Consumed
    }

    /// Frames that were waiting for a neighbour that just resolved go out now.
    pub(super) fn release_pending(&mut self, port: PortId) {
        let src_mac = self.port(port).mac;
        let Engine { neighbors, generated, counters, .. } = self;
        let nbr = &mut neighbors[port as usize];
        nbr.take_released(|_ip, mac, frame| {
            frame[0..6].copy_from_slice(&mac);
            frame[6..12].copy_from_slice(&src_mac);
            let len = frame.len();
            if generated.push(port, |buf| {
                if buf.len() < len {
                    return 0;
                }
                buf[..len].copy_from_slice(frame);
                len
            }) {
                match port {
                    PortId::Internal => {
                        counters.inc(Counter::InternalTxPackets);
                        counters.add(Counter::InternalTxBytes, len as u64);
                    }
                    _ => {
                        counters.inc(Counter::ExternalTxPackets);
                        counters.add(Counter::ExternalTxBytes, len as u64);
                    }
                }
            } else {
                counters.drop(DropReason::GeneratedOverflow);
            }
        });
    }

    /// Make the frame carry the egress port's tag (or none): rewrite, push or pop one
    /// 802.1Q tag. Returns false when a tag must be added and there is no headroom.
    /// Untagged in and out, the common case, is decided inline by the caller.
    #[inline(never)]
    fn retag<P: Packet>(p: &mut P, have: Option<u16>, want: Option<u16>) -> bool {
        match (have, want) {
            (None, None) => true,
            (Some(h), Some(w)) => {
                if h != w {
                    let f = p.data_mut();
                    let tci = (u16::from_be_bytes([f[14], f[15]]) & 0xF000) | w;
                    f[14..16].copy_from_slice(&tci.to_be_bytes());
                }
                true
            }
            (Some(_), None) => {
                let f = p.data_mut();
                f.copy_within(0..12, VLAN_TAG_LEN);
                p.pull_front(VLAN_TAG_LEN)
            }
            (None, Some(w)) => {
                if !p.push_front(VLAN_TAG_LEN) {
                    return false;
                }
                let f = p.data_mut();
                f.copy_within(VLAN_TAG_LEN..VLAN_TAG_LEN + 12, 0);
                f[12..14].copy_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
                f[14..16].copy_from_slice(&w.to_be_bytes());
                true
            }
        }
    }

    /// Send a routed frame out of `egress` towards `next_hop`: fix its tag and MACs, or park
    /// it until ARP resolves the next hop.
    #[inline]
    pub(super) fn emit<P: Packet>(
        &mut self,
        p: &mut P,
        eth: &ParsedFrame,
        egress: PortId,
        next_hop: u32,
        now: u64,
    ) -> Action {
        let (src_mac, want_vlan) = match egress {
            PortId::Host => match self.cfg.host_lane {
                Some(lane) => (lane.engine_mac, None),
                None => return Action::Drop(DropReason::HostLaneDisabled),
            },
            _ => {
                let port = self.port(egress);
                (port.mac, port.vlan)
            }
        };
        if (eth.vlan.is_some() || want_vlan.is_some()) && !Self::retag(p, eth.vlan, want_vlan) {
            return Action::Drop(DropReason::NoHeadroom);
        }
        let dst_mac = match egress {
            PortId::Host => self.cfg.host_lane.map(|l| l.host_mac),
            _ => self.resolve(egress, next_hop, now),
        };
        let f = p.data_mut();
        let len = f.len();
        let macs: &mut [u8; 12] = f.first_chunk_mut().expect("a parsed frame has an Ethernet header");
        macs[6..12].copy_from_slice(&src_mac);
        match dst_mac {
            Some(mac) => {
                macs[0..6].copy_from_slice(&mac);
                self.count_tx(egress, len);
                Action::Forward(egress)
            }
            None => self.park(p, egress, next_hop, now),
        }
    }

    #[inline]
    fn resolve(&mut self, port: PortId, next_hop: u32, now: u64) -> Option<[u8; 6]> {
        let c = &self.hop_cache[port as usize];
        if c.ip == next_hop && now < c.until {
            return Some(c.mac);
        }
        self.resolve_and_cache(port, next_hop, now)
    }

    #[inline(never)]
    fn resolve_and_cache(&mut self, port: PortId, next_hop: u32, now: u64) -> Option<[u8; 6]> {
        let mac = self.neighbors[port as usize].lookup(next_hop, now)?;
        self.hop_cache[port as usize] = super::HopCache { ip: next_hop, mac, until: now + super::HOP_CACHE_NS };
        Some(mac)
    }

    #[inline(never)]
    fn park<P: Packet>(&mut self, p: &mut P, egress: PortId, next_hop: u32, now: u64) -> Action {
        match self.neighbors[egress as usize].hold(next_hop, p.data(), now) {
            Hold::Queued { send_probe } => {
                if send_probe {
                    self.send_arp_request(egress, next_hop);
                }
                Action::Consumed
            }
            Hold::DroppedFailed => Action::Drop(DropReason::NeighborFailed),
            Hold::DroppedFull | Hold::DroppedTooBig => Action::Drop(DropReason::NeighborQueueFull),
        }
    }

    pub(super) fn send_arp_request(&mut self, port: PortId, target: u32) {
        let cfg = *self.port(port);
        if self.generated.push(port, |buf| write_arp_request(buf, cfg.vlan, cfg.mac, cfg.ip, target)) {
            self.counters.inc(Counter::ArpRequestsSent);
            self.count_tx(port, 60);
        } else {
            self.counters.drop(DropReason::GeneratedOverflow);
        }
    }

    /// Retries and give-ups of pending resolutions; bounded work per call.
    pub(super) fn poll_neighbors(&mut self, now: u64) {
        for port in [PortId::Internal, PortId::External] {
            let mut due = [0u32; 16];
            let mut n = 0;
            let dropped = self.neighbors[port as usize].poll(now, |ip| {
                if n < due.len() {
                    due[n] = ip;
                    n += 1;
                }
            });
            for _ in 0..dropped {
                self.counters.drop(DropReason::NeighborFailed);
            }
            for ip in &due[..n] {
                self.send_arp_request(port, *ip);
            }
        }
    }
}
