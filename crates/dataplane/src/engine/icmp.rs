//! ICMP errors: translating errors about tracked flows back to the inside, and sending
//! time-exceeded for packets whose TTL runs out at the node.

use super::forward::key_of;
use super::rewrite::{get16, put16, rewrite_ipv4, Endpoint};
use super::{Action, Engine, PortId};
use crate::checksum::{update16, update32};
use crate::counters::{Counter, DropReason};
use crate::flow::{Dir, Origin};
use crate::generate::write_icmp_time_exceeded;
use crate::packet::Packet;
use crate::parse::{parse_quoted_ipv4, src_mac, Ipv4, ParsedFrame, L4};
use crate::policy_handle::PublishedPolicy;

impl Engine {
    /// An ICMP error from outside about a packet one of our flows sent: the quoted datagram
    /// carries the translated source, which is rewritten back to the inside host (with every
    /// checksum it touches), and the error is delivered to that host.
    pub(super) fn icmp_error_inbound<P: Packet>(
        &mut self,
        pol: &PublishedPolicy,
        p: &mut P,
        eth: &ParsedFrame,
        ip: &Ipv4,
        now: u64,
    ) -> Action {
        let L4::IcmpError { inner_offset, .. } = ip.l4 else {
            return Action::Drop(DropReason::IcmpErrorNoFlow);
        };
        let end = ip.end();
        let inner = match parse_quoted_ipv4(&p.data()[..end], usize::from(inner_offset)) {
            Ok(i) => i,
            Err(_) => return Action::Drop(DropReason::IcmpErrorNoFlow),
        };
        // The quoted packet went out from our translated address: its reverse is the reply
        // key of the flow it belongs to.
        let Some(sent) = key_of(&inner) else {
            return Action::Drop(DropReason::IcmpErrorNoFlow);
        };
        let reply = sent.reversed();
        let idx = match self.flows.lookup(&reply, self.flows.hash(&reply)) {
            Some((idx, Dir::Reply)) => idx,
            _ => return Action::Drop(DropReason::IcmpErrorNoFlow),
        };
        if self.is_expired(self.flows.get(idx), now) {
            return Action::Drop(DropReason::IcmpErrorNoFlow);
        }
        if ip.ttl <= 1 {
            // Never an ICMP error about an ICMP error.
            return Action::Drop(DropReason::TtlExceeded);
        }
        if self.flows.get(idx).generation != pol.generation && !self.recheck(pol, idx, now) {
            return Action::Drop(DropReason::PolicyRevoked);
        }
        let f = *self.flows.get(idx);
        let frame = p.data_mut();
        let icmp_at = ip.l4_offset();
        let mut icmp_csum = get16(frame, icmp_at + 2);

        // Quoted datagram: source address back to the inside host.
        let i = inner.at();
        let inner_old_csum = get16(frame, i + 10);
        let inner_new_csum = update32(inner_old_csum, inner.src, f.orig.src);
        frame[i + 12..i + 16].copy_from_slice(&f.orig.src.to_be_bytes());
        put16(frame, i + 10, inner_new_csum);
        icmp_csum = update32(icmp_csum, inner.src, f.orig.src);
        icmp_csum = update16(icmp_csum, inner_old_csum, inner_new_csum);

        // Quoted transport header: source port (echo id) back, and its checksum if quoted.
        let l4 = inner.l4_offset();
        let quoted_end = frame.len().min(inner.end()).min(end);
        let (port_at, csum_at, pseudo) = match inner.l4 {
            L4::Tcp { .. } => (l4, l4 + 16, true),
            L4::Udp { .. } => (l4, l4 + 6, true),
            L4::IcmpEcho { .. } => (l4 + 4, l4 + 2, false),
            _ => return Action::Drop(DropReason::IcmpErrorNoFlow),
        };
        let old_port = get16(frame, port_at);
        put16(frame, port_at, f.orig.sport);
        icmp_csum = update16(icmp_csum, old_port, f.orig.sport);
        if csum_at + 2 <= quoted_end {
            let old = get16(frame, csum_at);
            let udp_unset = matches!(inner.l4, L4::Udp { .. }) && old == 0;
            if !udp_unset {
                let mut c = update16(old, old_port, f.orig.sport);
                if pseudo {
                    c = update32(c, inner.src, f.orig.src);
                }
                put16(frame, csum_at, c);
                icmp_csum = update16(icmp_csum, old, c);
            }
        }
        put16(frame, icmp_at + 2, icmp_csum);

        // Outer header: destination to the inside host, TTL down, header checksum.
        rewrite_ipv4(frame, ip, Endpoint::Destination, f.orig.src);

        self.counters.inc(Counter::IcmpErrorsTranslated);
        match f.origin {
            Origin::Internal => self.emit(p, eth, PortId::Internal, f.orig.src, now),
            Origin::Host => self.emit(p, eth, PortId::Host, 0, now),
        }
    }

    /// Send ICMP time-exceeded to the sender of `frame` (on the port it came from), within
    /// the rate limit.
    pub(super) fn send_time_exceeded(&mut self, port: PortId, frame: &[u8], ip: &Ipv4, now: u64) {
        if let L4::IcmpError { .. } = ip.l4 {
            return;
        }
        if !self.icmp_bucket.take(now) {
            self.counters.inc(Counter::IcmpErrorsRateLimited);
            return;
        }
        let cfg = *self.port(port);
        let original = &frame[ip.at()..ip.end()];
        let sender_mac = src_mac(frame);
        let id = self.icmp_ip_id;
        self.icmp_ip_id = id.wrapping_add(1);
        let ok = self.generated.push(port, |buf| {
            write_icmp_time_exceeded(buf, cfg.vlan, cfg.mac, sender_mac, cfg.ip, ip.src, id, original)
        });
        if ok {
            self.counters.inc(Counter::IcmpErrorsSent);
            self.count_tx(port, 0);
        } else {
            self.counters.drop(DropReason::GeneratedOverflow);
        }
    }
}
