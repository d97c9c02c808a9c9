//! Routing decisions, flow lookup and creation, policy checks and NAT for the three ports.

use super::rewrite::{decrement_ttl, translate, Endpoint};
use super::{release_pin, Action, Engine, Learned, PortId};
use crate::counters::{Counter, DropReason};
use crate::flow::{ticks, Dir, Flow, FlowKey, FlowState, Origin, NO_PIN};
use crate::nat::allocate_port;
use crate::packet::Packet;
use crate::parse::{Ipv4, ParsedFrame, L4, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use crate::policy_handle::PublishedPolicy;
use crate::tcp::{is_finished, is_opening_syn, tcp_next};
use sluice_policy::{Action as PolicyAction, Cause, FlowQuery, Verdict};

/// Addresses that are never routed: this-network (0/8), loopback (127/8), link-local
/// (169.254/16), multicast, reserved and limited broadcast (224/3).
#[inline]
pub(super) fn is_martian(addr: u32) -> bool {
    let a = addr >> 24;
    a == 0 || a == 127 || a >= 224 || addr >> 16 == 0xA9FE
}

/// The flow key of a packet as it travels, if it has one. Echo requests carry their id as
/// the source "port" and replies as the destination "port", so a reversed key matches.
#[inline]
pub(super) fn key_of(ip: &Ipv4) -> Option<FlowKey> {
    let (sport, dport) = match ip.l4 {
        L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport } => (sport, dport),
        L4::IcmpEcho { request: true, id } => (id, 0),
        L4::IcmpEcho { request: false, id } => (0, id),
        _ => return None,
    };
    Some(FlowKey { src: ip.src, dst: ip.dst, sport, dport, proto: ip.proto })
}

/// What policy is asked about a flow with this inside key.
#[inline]
pub(super) fn query_for(orig: &FlowKey) -> FlowQuery {
    let (dst_port, icmp_type) = match orig.proto {
        PROTO_TCP | PROTO_UDP => (orig.dport, 0),
        // Flows are only opened by echo requests.
        PROTO_ICMP => (0, crate::parse::ICMP_ECHO_REQUEST),
        _ => (0, 0),
    };
    FlowQuery { src: orig.src, dst: orig.dst, proto: orig.proto, dst_port, icmp_type }
}

impl Engine {
    /// Next hop on the external side.
    #[inline]
    pub(super) fn external_next_hop(&self, dst: u32) -> u32 {
        if self.cfg.external.contains(dst) {
            dst
        } else {
            self.cfg.gateway
        }
    }

    fn count_decision(&mut self, v: &Verdict) {
        let c = if v.audit_would_deny {
            Counter::AuditWouldDeny
        } else {
            match (v.action, v.cause) {
                (PolicyAction::Allow, Cause::Rule { .. }) => Counter::AllowedByRule,
                (PolicyAction::Allow, Cause::GroupDefault { .. }) => Counter::AllowedByGroupDefault,
                (PolicyAction::Allow, Cause::DocumentDefault) => Counter::AllowedByDocumentDefault,
                (PolicyAction::Deny, Cause::Rule { .. }) => Counter::DeniedByRule,
                (PolicyAction::Deny, Cause::GroupDefault { .. }) => Counter::DeniedByGroupDefault,
                (PolicyAction::Deny, Cause::DocumentDefault) => Counter::DeniedByDocumentDefault,
            }
        };
        self.counters.inc(c);
    }

    #[inline(always)]
    pub(super) fn handle_internal<P: Packet>(
        &mut self,
        pol: &PublishedPolicy,
        p: &mut P,
        eth: &ParsedFrame,
        ip: &Ipv4,
        hash: u32,
        now: u64,
    ) -> Action {
        // The flow is looked up first: a packet carrying the inside key of a flow this port
        // opened has the addresses of the packet that opened it, which passed the checks
        // below, and they depend on nothing else (the configuration does not change). So
        // they are skipped for it; nearly every packet is such a one.
        let hit = self.lookup_key_of(ip, hash);
        let known = matches!(hit, Some((idx, Dir::Orig)) if self.flows.get(idx).origin == Origin::Internal);
        if known {
            debug_assert_eq!(self.internal_address_check(ip), None, "a known flow passes the address checks");
        } else if let Some(refused) = self.internal_address_check(ip) {
            return match refused {
                Ok(()) => {
                    // For the node itself (DNS to the resolver address, ping): up the
                    // service lane, not routed, so the TTL is left alone.
                    self.emit(p, eth, PortId::Host, 0, now)
                }
                Err(r) => Action::Drop(r),
            };
        }
        self.outbound(pol, p, eth, ip, hash, hit, Origin::Internal, now)
    }

    /// Where the addresses of a packet from the inside keep it from being routed out: `None`
    /// when they do not, `Some(Ok(()))` when it is for the node itself, else why it is
    /// dropped.
    #[inline(always)]
    pub(super) fn internal_address_check(&self, ip: &Ipv4) -> Option<Result<(), DropReason>> {
        let int = self.cfg.internal;
        if ip.dst == int.ip || ip.dst == self.cfg.external.ip {
            return Some(Ok(()));
        }
        if is_martian(ip.src) || is_martian(ip.dst) || !int.contains(ip.src) || ip.src == int.ip {
            return Some(Err(DropReason::Martian));
        }
        if int.contains(ip.dst) {
            return Some(Err(DropReason::NoRoute));
        }
        None
    }

    /// The flow index entry for the packet's key, if it has a key and the entry exists.
    #[inline(always)]
    fn lookup_key_of(&self, ip: &Ipv4, hash: u32) -> Option<(u32, Dir)> {
        let key = key_of(ip)?;
        debug_assert_eq!(hash, self.flows.hash(&key));
        self.flows.lookup(&key, hash)
    }

    #[inline(never)]
    pub(super) fn handle_host<P: Packet>(
        &mut self,
        pol: &PublishedPolicy,
        p: &mut P,
        eth: &ParsedFrame,
        ip: &Ipv4,
        hash: u32,
        now: u64,
    ) -> Action {
        if is_martian(ip.src) || is_martian(ip.dst) {
            return Action::Drop(DropReason::Martian);
        }
        let int = self.cfg.internal;
        if int.contains(ip.dst) {
            // The node answering a client (DNS replies): routed onto the inside.
            if ip.dst == int.ip {
                return Action::Drop(DropReason::NoRoute);
            }
            if ip.ttl <= 1 {
                return Action::Drop(DropReason::TtlExceeded);
            }
            decrement_ttl(p.data_mut(), ip);
            return self.emit(p, eth, PortId::Internal, ip.dst, now);
        }
        let hit = self.lookup_key_of(ip, hash);
        self.outbound(pol, p, eth, ip, hash, hit, Origin::Host, now)
    }

    /// Inside (or host) to outside: existing flow or a new one. `h` is the hash of the
    /// packet's flow key, computed when the burst was parsed, and `hit` the flow index entry
    /// for that key ([`Engine::lookup_key_of`]).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn outbound<P: Packet>(
        &mut self,
        pol: &PublishedPolicy,
        p: &mut P,
        eth: &ParsedFrame,
        ip: &Ipv4,
        h: u32,
        hit: Option<(u32, Dir)>,
        origin: Origin,
        now: u64,
    ) -> Action {
        let key = match ip.l4 {
            L4::IcmpEcho { request: false, .. } | L4::IcmpError { .. } | L4::IcmpOther { .. } | L4::Other => {
                return Action::Drop(DropReason::UnsupportedProtocol)
            }
            _ => match key_of(ip) {
                Some(k) => k,
                None => return Action::Drop(DropReason::UnsupportedProtocol),
            },
        };
        if ip.ttl <= 1 {
            // The node's own stack gets no ICMP from its own dataplane.
            if origin == Origin::Internal {
                self.send_time_exceeded(PortId::Internal, p.data(), ip, now);
            }
            return Action::Drop(DropReason::TtlExceeded);
        }
        let tcp_flags = match ip.l4 {
            L4::Tcp { flags, .. } => Some(flags),
            _ => None,
        };
        debug_assert_eq!(h, self.flows.hash(&key));
        debug_assert_eq!(hit, self.flows.lookup(&key, h));
        let mut found = None;
        if let Some((idx, dir)) = hit {
            if dir != Dir::Orig {
                // An inside packet carrying some flow's outside tuple: only possible with
                // overlapping address plans; never let it alias that flow.
                return Action::Drop(DropReason::Martian);
            }
            let f = self.flows.get(idx);
            if self.is_expired(f, now) {
                self.remove_flow(idx, Counter::FlowsExpired);
            } else if tcp_flags.is_some_and(is_opening_syn) && is_finished(f.state) {
                // The client reused the port of a connection that is closing: start over.
                self.remove_flow(idx, Counter::FlowsClosed);
            } else if f.origin != origin {
                return Action::Drop(DropReason::Martian);
            } else {
                found = Some(idx);
            }
        }
        let idx = match found {
            Some(idx) => {
                if let Err(r) = self.continue_flow(pol, idx, Dir::Orig, tcp_flags, now) {
                    return Action::Drop(r);
                }
                idx
            }
            None => match self.open_flow(pol, key, h, tcp_flags, origin, now) {
                Ok(idx) => idx,
                Err(r) => return Action::Drop(r),
            },
        };
        let f = self.flows.get(idx);
        debug_assert_eq!(f.orig, key);
        let (nat_ip, nat_port) = (self.flows.nat_ip(f), f.nat_port);
        translate(p.data_mut(), ip, Endpoint::Source, nat_ip, nat_port);
        let next_hop = self.external_next_hop(ip.dst);
        self.emit(p, eth, PortId::External, next_hop, now)
    }

    /// Re-check (if the policy changed) and advance an existing flow.
    #[inline(always)]
    fn continue_flow(
        &mut self,
        pol: &PublishedPolicy,
        idx: u32,
        dir: Dir,
        tcp_flags: Option<u8>,
        now: u64,
    ) -> Result<(), DropReason> {
        if self.flows.get(idx).generation != pol.generation && !self.recheck(pol, idx, now) {
            return Err(DropReason::PolicyRevoked);
        }
        let f = self.flows.get_mut(idx);
        f.state = match (f.state, tcp_flags) {
            (s, Some(flags)) => tcp_next(s, dir, flags),
            (FlowState::UdpNew, None) if dir == Dir::Reply => FlowState::UdpReplied,
            (s, None) => s,
        };
        f.last_seen = ticks(now);
        Ok(())
    }

    /// Evaluate a flow against a policy newer than the one it was admitted under; remove it
    /// if it is no longer allowed. Once per flow and policy change: kept out of line.
    #[cold]
    #[inline(never)]
    pub(super) fn recheck(&mut self, pol: &PublishedPolicy, idx: u32, now: u64) -> bool {
        let f = *self.flows.get(idx);
        if f.origin == Origin::Host {
            self.flows.get_mut(idx).generation = pol.generation;
            return true;
        }
        let learned = Learned { allowlist: self.allowlist.as_ref(), now, new_flow: false };
        let v = pol.policy.evaluate(&query_for(&f.orig), &learned);
        if !v.allowed() {
            self.remove_flow(idx, Counter::FlowsEvicted);
            return false;
        }
        // Take the new pin before dropping the old one so a shared entry never hits zero.
        let pin = self.take_pin(&v, f.orig.dst);
        release_pin(&mut self.allowlist, &f);
        let fm = self.flows.get_mut(idx);
        fm.generation = pol.generation;
        fm.pin = pin;
        true
    }

    fn take_pin(&mut self, v: &Verdict, dst: u32) -> u32 {
        match (v.learned_via, self.allowlist.as_mut()) {
            (Some(rule), Some(a)) => a.pin(rule, dst).map_or(NO_PIN, |h| h.to_raw()),
            _ => NO_PIN,
        }
    }

    /// Admission, policy and NAT for a new flow; returns its index. Kept out of line: it is
    /// the slow path, and inlining it into the burst loop costs the fast path registers.
    #[inline(never)]
    fn open_flow(
        &mut self,
        pol: &PublishedPolicy,
        key: FlowKey,
        h_orig: u32,
        tcp_flags: Option<u8>,
        origin: Origin,
        now: u64,
    ) -> Result<u32, DropReason> {
        if tcp_flags.is_some_and(|f| !is_opening_syn(f)) {
            return Err(DropReason::TcpNoFlow);
        }
        // Admission control first, before spending policy or NAT work on a flow that cannot
        // be stored. One extra bounded expiry slice may free a record.
        if self.flows.len() == self.flows.capacity() {
            self.expire_flows(now, self.cfg.sweep_budget);
            if self.flows.len() == self.flows.capacity() {
                return Err(DropReason::FlowTableFull);
            }
        }
        let mut verdict = None;
        if origin == Origin::Internal {
            // A long-lived flow pinning an expired entry must not admit new flows to it.
            let learned = Learned { allowlist: self.allowlist.as_ref(), now, new_flow: true };
            let v = pol.policy.evaluate(&query_for(&key), &learned);
            self.count_decision(&v);
            if !v.allowed() {
                return Err(DropReason::PolicyDenied);
            }
            verdict = Some(v);
        }
        let (nat_port, h_reply) = if self.cfg.snat {
            let ext = self.cfg.external.ip;
            let (min, max, attempts) = (self.cfg.nat_port_min, self.cfg.nat_port_max, self.cfg.nat_attempts);
            match allocate_port(&self.flows, &key, h_orig, ext, min, max, attempts) {
                Some(found) => found,
                None => return Err(DropReason::NatExhausted),
            }
        } else {
            (key.sport, self.flows.hash(&key.reversed()))
        };
        let pin = verdict.as_ref().map_or(NO_PIN, |v| self.take_pin(v, key.dst));
        let state = match key.proto {
            PROTO_TCP => FlowState::TcpSynSent,
            PROTO_UDP => FlowState::UdpNew,
            _ => FlowState::IcmpEcho,
        };
        let flow = Flow { orig: key, nat_port, state, origin, generation: pol.generation, pin, last_seen: ticks(now) };
        match self.flows.insert_hashed(flow, h_orig, h_reply) {
            Ok(idx) => {
                self.counters.inc(Counter::FlowsOpened);
                self.opened_since_sweep += 1;
                if origin == Origin::Host {
                    self.counters.inc(Counter::HostOriginatedFlows);
                }
                Ok(idx)
            }
            Err(_) => {
                release_pin(&mut self.allowlist, &flow);
                Err(DropReason::FlowTableFull)
            }
        }
    }

    #[inline(always)]
    pub(super) fn handle_external<P: Packet>(
        &mut self,
        pol: &PublishedPolicy,
        p: &mut P,
        eth: &ParsedFrame,
        ip: &Ipv4,
        hash: u32,
        now: u64,
    ) -> Action {
        if is_martian(ip.src) || is_martian(ip.dst) {
            return Action::Drop(DropReason::Martian);
        }
        if let L4::IcmpError { .. } = ip.l4 {
            return self.icmp_error_inbound(pol, p, eth, ip, now);
        }
        let Some(key) = key_of(ip) else {
            return Action::Drop(DropReason::UnsupportedProtocol);
        };
        debug_assert_eq!(hash, self.flows.hash(&key));
        let idx = match self.flows.lookup(&key, hash) {
            Some((idx, Dir::Reply)) => idx,
            _ => return Action::Drop(DropReason::InboundNoFlow),
        };
        if self.is_expired(self.flows.get(idx), now) {
            self.remove_flow(idx, Counter::FlowsExpired);
            return Action::Drop(DropReason::InboundNoFlow);
        }
        if ip.ttl <= 1 {
            self.send_time_exceeded(PortId::External, p.data(), ip, now);
            return Action::Drop(DropReason::TtlExceeded);
        }
        let tcp_flags = match ip.l4 {
            L4::Tcp { flags, .. } => Some(flags),
            _ => None,
        };
        if let Err(r) = self.continue_flow(pol, idx, Dir::Reply, tcp_flags, now) {
            return Action::Drop(r);
        }
        let f = *self.flows.get(idx);
        translate(p.data_mut(), ip, Endpoint::Destination, f.orig.src, f.orig.sport);
        match f.origin {
            Origin::Internal => self.emit(p, eth, PortId::Internal, f.orig.src, now),
            Origin::Host => self.emit(p, eth, PortId::Host, 0, now),
        }
    }
}
