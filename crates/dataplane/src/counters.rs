//! Per-worker counters: plain integers on the packet path, published lock-free once per
//! burst, summed across workers on read.
//!
//! A worker owns its [`Counters`] and increments them without atomics; at the end of each
//! burst it copies them into its [`CounterBlock`] with relaxed stores (one writer, any number
//! of readers). A reader may see one burst's increments partially, never a torn value.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::parse::ParseError;

named_enum! {
    /// Why the engine dropped a packet. Every variant has its own counter.
    pub enum DropReason {
        EthernetTruncated => "ethernet_truncated",
        StackedVlan => "stacked_vlan",
        UnsupportedEthertype => "unsupported_ethertype",
        Ipv6 => "ipv6",
        ArpMalformed => "arp_malformed",
        Ipv4Truncated => "ipv4_truncated",
        Ipv4BadVersion => "ipv4_bad_version",
        Ipv4BadHeaderLength => "ipv4_bad_header_length",
        Ipv4BadTotalLength => "ipv4_bad_total_length",
        Ipv4BadChecksum => "ipv4_bad_checksum",
        Ipv4Fragment => "ipv4_fragment",
        Ipv4SourceRoute => "ipv4_source_route",
        Ipv4BadOptions => "ipv4_bad_options",
        TcpTruncated => "tcp_truncated",
        TcpBadDataOffset => "tcp_bad_data_offset",
        UdpTruncated => "udp_truncated",
        UdpBadLength => "udp_bad_length",
        IcmpTruncated => "icmp_truncated",
        /// Tagged frame on an untagged port, untagged on a tagged one, or another VLAN id.
        VlanMismatch => "vlan_mismatch",
        /// Unicast to another MAC, or an IPv4 broadcast/multicast frame.
        NotForUs => "not_for_us",
        /// Source or destination address that must never be routed (loopback, multicast,
        /// broadcast, this-network, or an inside source outside the internal network).
        Martian => "martian",
        NoRoute => "no_route",
        TtlExceeded => "ttl_exceeded",
        /// An IP protocol other than TCP, UDP and ICMP, or an ICMP message that opens nothing.
        UnsupportedProtocol => "unsupported_protocol",
        PolicyDenied => "policy_denied",
        /// A flow that the current policy no longer allows.
        PolicyRevoked => "policy_revoked",
        /// A TCP segment other than a bare SYN for a flow the node does not know.
        TcpNoFlow => "tcp_no_flow",
        /// Traffic from outside that belongs to no flow.
        InboundNoFlow => "inbound_no_flow",
        IcmpErrorNoFlow => "icmp_error_no_flow",
        FlowTableFull => "flow_table_full",
        NatExhausted => "nat_exhausted",
        NeighborFailed => "neighbor_failed",
        NeighborQueueFull => "neighbor_queue_full",
        /// No room in the buffer to add a VLAN tag.
        NoHeadroom => "no_headroom",
        /// Traffic for the node itself while no service lane is configured.
        HostLaneDisabled => "host_lane_disabled",
        /// Generated frames (ARP, ICMP) beyond the per-burst budget.
        GeneratedOverflow => "generated_overflow",
    }
}

impl From<ParseError> for DropReason {
    /// The first drop reasons are the parse errors, in the same order and with the same names
    /// (checked by a test), so the conversion is a position.
    #[inline]
    fn from(e: ParseError) -> Self {
        DropReason::ALL[e as usize]
    }
}

named_enum! {
    /// Everything else a worker counts. Gauges (`*_active`, `*_in_use`) are set, not added.
    pub enum Counter {
        InternalRxPackets => "internal_rx_packets",
        InternalRxBytes => "internal_rx_bytes",
        ExternalRxPackets => "external_rx_packets",
        ExternalRxBytes => "external_rx_bytes",
        HostRxPackets => "host_rx_packets",
        HostRxBytes => "host_rx_bytes",
        InternalTxPackets => "internal_tx_packets",
        InternalTxBytes => "internal_tx_bytes",
        ExternalTxPackets => "external_tx_packets",
        ExternalTxBytes => "external_tx_bytes",
        HostTxPackets => "host_tx_packets",
        HostTxBytes => "host_tx_bytes",
        DroppedPackets => "dropped_packets",
        AllowedByRule => "allowed_by_rule",
        AllowedByGroupDefault => "allowed_by_group_default",
        AllowedByDocumentDefault => "allowed_by_document_default",
        DeniedByRule => "denied_by_rule",
        DeniedByGroupDefault => "denied_by_group_default",
        DeniedByDocumentDefault => "denied_by_document_default",
        AuditWouldDeny => "audit_would_deny",
        FlowsActive => "flows_active",
        FlowsOpened => "flows_opened",
        /// TCP flows that ended by FIN/RST and finished lingering.
        FlowsClosed => "flows_closed",
        /// Flows removed after their idle timeout.
        FlowsExpired => "flows_expired",
        /// Flows removed because a new policy denies them.
        FlowsEvicted => "flows_evicted",
        NatPortsInUse => "nat_ports_in_use",
        HostOriginatedFlows => "host_originated_flows",
        ArpRequestsAnswered => "arp_requests_answered",
        ArpRequestsSent => "arp_requests_sent",
        IcmpErrorsSent => "icmp_errors_sent",
        IcmpErrorsTranslated => "icmp_errors_translated",
        /// ICMP errors the node would have sent, suppressed by the rate limit.
        IcmpErrorsRateLimited => "icmp_errors_rate_limited",
        PolicySwaps => "policy_swaps",
        PolicyGeneration => "policy_generation",
        AllowlistEntries => "allowlist_entries",
        /// Learned addresses that became new allowlist entries.
        AllowlistLearned => "allowlist_learned",
        /// Allowlist entries removed after their TTL (with no flow holding them).
        AllowlistExpired => "allowlist_expired",
        /// Learned addresses refused because the allowlist was full (that worker fails closed).
        AllowlistFullDrops => "allowlist_full_drops",
        /// Flow and allowlist listings the worker answered for the control plane.
        ViewsServed => "views_served",
    }
}

/// The total number of counter slots: named counters, then one per drop reason.
pub const SLOTS: usize = Counter::COUNT + DropReason::COUNT;

/// A worker's private counters.
#[derive(Clone)]
pub struct Counters {
    v: [u64; SLOTS],
}

impl Default for Counters {
    fn default() -> Self {
        Counters { v: [0; SLOTS] }
    }
}

impl Counters {
    #[inline]
    pub fn add(&mut self, c: Counter, n: u64) {
        self.v[c as usize] += n;
    }

    #[inline]
    pub fn inc(&mut self, c: Counter) {
        self.v[c as usize] += 1;
    }

    #[inline]
    pub fn set(&mut self, c: Counter, n: u64) {
        self.v[c as usize] = n;
    }

    #[inline]
    pub fn drop(&mut self, r: DropReason) {
        self.v[Counter::COUNT + r as usize] += 1;
        self.v[Counter::DroppedPackets as usize] += 1;
    }

    pub fn get(&self, c: Counter) -> u64 {
        self.v[c as usize]
    }

    pub fn dropped(&self, r: DropReason) -> u64 {
        self.v[Counter::COUNT + r as usize]
    }
}

/// The published copy of one worker's counters.
pub struct CounterBlock {
    v: [AtomicU64; SLOTS],
}

impl Default for CounterBlock {
    fn default() -> Self {
        CounterBlock { v: std::array::from_fn(|_| AtomicU64::new(0)) }
    }
}

impl CounterBlock {
    /// Called by the owning worker only.
    #[inline]
    pub fn publish(&self, c: &Counters) {
        for (slot, value) in self.v.iter().zip(c.v.iter()) {
            slot.store(*value, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> Counters {
        let mut c = Counters::default();
        for (dst, src) in c.v.iter_mut().zip(self.v.iter()) {
            *dst = src.load(Ordering::Relaxed);
        }
        c
    }
}

/// Sum of several workers' published counters, with names, for the API and metrics.
pub fn aggregate(blocks: &[Arc<CounterBlock>]) -> Vec<(&'static str, u64)> {
    let mut total = [0u64; SLOTS];
    for b in blocks {
        let s = b.snapshot();
        for (t, v) in total.iter_mut().zip(s.v.iter()) {
            *t += *v;
        }
    }
    let mut out = Vec::with_capacity(SLOTS);
    for c in Counter::ALL {
        out.push((c.name(), total[*c as usize]));
    }
    for r in DropReason::ALL {
        out.push((r.name(), total[Counter::COUNT + *r as usize]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_and_aggregate() {
        let a = Arc::new(CounterBlock::default());
        let b = Arc::new(CounterBlock::default());
        let mut ca = Counters::default();
        ca.inc(Counter::FlowsOpened);
        ca.drop(DropReason::PolicyDenied);
        let mut cb = Counters::default();
        cb.add(Counter::FlowsOpened, 2);
        a.publish(&ca);
        b.publish(&cb);
        let all = aggregate(&[a, b]);
        let get = |n: &str| all.iter().find(|(k, _)| *k == n).unwrap().1;
        assert_eq!(get("flows_opened"), 3);
        assert_eq!(get("policy_denied"), 1);
        assert_eq!(get("dropped_packets"), 1);
    }

    #[test]
    fn every_parse_error_has_a_drop_reason_with_the_same_name() {
        for (i, e) in ParseError::ALL.iter().enumerate() {
            assert_eq!(*e as usize, i);
            assert_eq!(DropReason::from(*e).name(), e.name());
        }
    }
}
