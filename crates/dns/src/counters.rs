//! The proxy's counters: plain relaxed atomics, written by the proxy's tasks and read by the
//! node's stats writer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

macro_rules! dns_counters {
    ($($variant:ident => $name:literal,)*) => {
        /// What the proxy counts.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(usize)]
        pub enum DnsCounter { $($variant,)* }

        impl DnsCounter {
            pub const ALL: &'static [DnsCounter] = &[$(DnsCounter::$variant,)*];
            pub fn name(self) -> &'static str {
                match self { $(DnsCounter::$variant => $name,)* }
            }
        }
    };
}

dns_counters! {
    QueriesUdp => "queries_udp",
    QueriesTcp => "queries_tcp",
    Forwarded => "forwarded",
    Answered => "answered",
    NxdomainPolicy => "nxdomain_policy",
    AuditWouldDeny => "audit_would_deny",
    Servfail => "servfail",
    Formerr => "formerr",
    Notimp => "notimp",
    MalformedDropped => "malformed_dropped",
    OverloadDropped => "overload_dropped",
    TruncatedToClient => "truncated_to_client",
    UpstreamTimeouts => "upstream_timeouts",
    UpstreamErrors => "upstream_errors",
    UpstreamFailovers => "upstream_failovers",
    UpstreamBadReplies => "upstream_bad_replies",
    UpstreamTcpRetries => "upstream_tcp_retries",
    UpstreamTcpConnects => "upstream_tcp_connects",
    AllowlistInserts => "allowlist_inserts",
    AllowlistOverCap => "allowlist_over_cap",
    AllowlistFailures => "allowlist_failures",
    TcpClientsRefused => "tcp_clients_refused",
}

/// Upper bounds (inclusive) of the upstream latency buckets, in microseconds; one more
/// bucket takes everything slower.
pub const LATENCY_BOUNDS_US: [u64; 12] =
    [250, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 250_000, 500_000, 1_000_000];

#[derive(Debug, Default)]
pub struct DnsCounters {
    counts: [AtomicU64; DnsCounter::ALL.len()],
    latency: [AtomicU64; LATENCY_BOUNDS_US.len() + 1],
}

impl DnsCounters {
    pub fn inc(&self, c: DnsCounter) {
        self.add(c, 1);
    }

    pub fn add(&self, c: DnsCounter, n: u64) {
        self.counts[c as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self, c: DnsCounter) -> u64 {
        self.counts[c as usize].load(Ordering::Relaxed)
    }

    /// Records one upstream exchange that took `took`.
    pub fn upstream_latency(&self, took: Duration) {
        let us = took.as_micros().min(u128::from(u64::MAX)) as u64;
        let bucket = LATENCY_BOUNDS_US.iter().position(|&b| us <= b).unwrap_or(LATENCY_BOUNDS_US.len());
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// Every counter by name.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        DnsCounter::ALL.iter().map(|&c| (c.name(), self.get(c))).collect()
    }

    /// The latency histogram: (bucket label, count), labels like `le_1000us` and `gt_1000000us`.
    pub fn latency_histogram(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = LATENCY_BOUNDS_US
            .iter()
            .zip(&self.latency)
            .map(|(b, n)| (format!("le_{b}us"), n.load(Ordering::Relaxed)))
            .collect();
        let last = LATENCY_BOUNDS_US[LATENCY_BOUNDS_US.len() - 1];
        out.push((format!("gt_{last}us"), self.latency[LATENCY_BOUNDS_US.len()].load(Ordering::Relaxed)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_land_in_their_bucket() {
        let c = DnsCounters::default();
        c.upstream_latency(Duration::from_micros(250));
        c.upstream_latency(Duration::from_micros(251));
        c.upstream_latency(Duration::from_secs(5));
        let h = c.latency_histogram();
        assert_eq!(h[0], ("le_250us".to_string(), 1));
        assert_eq!(h[1], ("le_500us".to_string(), 1));
        assert_eq!(h[h.len() - 1], ("gt_1000000us".to_string(), 1));
        c.inc(DnsCounter::Servfail);
        assert!(c.snapshot().contains(&("servfail", 1)));
    }
}
