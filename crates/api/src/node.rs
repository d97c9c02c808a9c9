//! What the API needs from the running node that the store does not hold: the dataplane's
//! and DNS proxy's health, counters, the learned allowlist, live flows, and which policy
//! version the dataplane runs. The `sluice` runtime implements [`NodeView`]; the API only
//! reads through it (every call is answered from memory and bounded by the caller's limit).

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use utoipa::{IntoParams, ToSchema};

/// One named readiness check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Check {
    pub ok: bool,
    /// Why, for a person: "2 workers running", "upstream 10.0.0.53 unreachable".
    pub detail: String,
}

impl Check {
    pub fn ok(detail: impl Into<String>) -> Check {
        Check { ok: true, detail: detail.into() }
    }

    pub fn failed(detail: impl Into<String>) -> Check {
        Check { ok: false, detail: detail.into() }
    }
}

/// Counters by stable name, summed over workers.
pub type NamedCounters = Vec<(String, u64)>;

/// Counters for the Prometheus page. Names are the runtime's counter names
/// (`policy_denied`, `rx_packets`, ...); the API turns them into labels of fixed metric names.
#[derive(Clone, Debug, Default)]
pub struct NodeCounters {
    pub dataplane: NamedCounters,
    pub dns: NamedCounters,
    /// Per port (`internal`, `external`, `host`): its counters.
    pub ports: Vec<(String, NamedCounters)>,
    /// Gauges: current sizes (`flows`, `allowlist_entries`, ...).
    pub gauges: Vec<(String, u64)>,
}

/// A learned allowlist entry: `(group, rule, ip) -> expiry`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct AllowlistEntry {
    #[schema(value_type = String)]
    pub ip: Ipv4Addr,
    /// Source group id; null when the active policy no longer has the rule (the entry lives
    /// out its TTL, or while a flow pins it).
    pub group: Option<String>,
    /// Rule id, null like `group`.
    pub rule: Option<String>,
    /// The rule's stable key (16 hex digits): hash of group id, rule id and hostnames.
    pub rule_key: String,
    /// Milliseconds until it expires (0 when pinned past its TTL by a live flow).
    pub expires_in_ms: u64,
    /// A live flow keeps it alive.
    pub pinned: bool,
}

#[derive(Clone, Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AllowlistFilter {
    /// Only entries for this address.
    #[param(value_type = Option<String>)]
    pub ip: Option<Ipv4Addr>,
    /// Only entries of this source group id.
    pub group: Option<String>,
    /// Only entries of this rule id.
    pub rule: Option<String>,
    /// At most this many entries (default 100, at most 1000).
    pub limit: Option<usize>,
}

impl AllowlistFilter {
    pub fn matches(&self, entry: &AllowlistEntry) -> bool {
        self.ip.is_none_or(|ip| ip == entry.ip)
            && self.group.as_deref().is_none_or(|g| entry.group.as_deref() == Some(g))
            && self.rule.as_deref().is_none_or(|r| entry.rule.as_deref() == Some(r))
    }
}

/// One live flow as seen from inside (before source NAT) and its translation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct FlowEntry {
    /// `tcp`, `udp` or `icmp`.
    pub proto: String,
    #[schema(value_type = String)]
    pub src: Ipv4Addr,
    pub src_port: u16,
    #[schema(value_type = String)]
    pub dst: Ipv4Addr,
    pub dst_port: u16,
    /// The source address and port after NAT (the ones the far end sees).
    #[schema(value_type = String)]
    pub nat_ip: Ipv4Addr,
    pub nat_port: u16,
    /// `tcp_syn_sent`, `tcp_syn_received`, `tcp_established`, `tcp_fin_orig`, `tcp_fin_reply`,
    /// `tcp_closing`, `tcp_closed`, `udp_new`, `udp_replied` or `icmp_echo`.
    pub state: String,
    /// `internal` (a client behind the internal port) or `host` (the node's own stack, e.g.
    /// the DNS proxy's upstream queries).
    pub origin: String,
    /// Since the flow's last packet (about 1 ms resolution).
    pub idle_ms: u64,
    /// Until its idle timeout ends it, if no packet comes.
    pub expires_in_ms: u64,
    /// Policy generation the flow was last checked against.
    pub policy_generation: u32,
    /// The hostname rule that admitted it (the allowlist entry it pins), when it came
    /// through one and the active policy still has that rule; null otherwise.
    pub group: Option<String>,
    pub rule: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FlowFilter {
    #[param(value_type = Option<String>)]
    pub src: Option<Ipv4Addr>,
    #[param(value_type = Option<String>)]
    pub dst: Option<Ipv4Addr>,
    /// `tcp`, `udp` or `icmp`.
    pub proto: Option<String>,
    /// Matches the destination port.
    pub port: Option<u16>,
    /// At most this many flows (default 100, at most 1000).
    pub limit: Option<usize>,
}

impl FlowFilter {
    pub fn matches(&self, flow: &FlowEntry) -> bool {
        self.src.is_none_or(|a| a == flow.src)
            && self.dst.is_none_or(|a| a == flow.dst)
            && self.proto.as_deref().is_none_or(|p| p.eq_ignore_ascii_case(&flow.proto))
            && self.port.is_none_or(|p| p == flow.dst_port)
    }
}

/// Why a node-local listing could not be answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListingError {
    /// Another listing is being served and did not finish in time (503).
    Busy(String),
    /// The dataplane worker did not answer in time (504).
    Timeout(String),
    /// No dataplane worker can answer (it stopped) (503).
    Unavailable(String),
}

impl std::fmt::Display for ListingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListingError::Busy(m) | ListingError::Timeout(m) | ListingError::Unavailable(m) => f.write_str(m),
        }
    }
}

/// Default and largest page of node-local lists.
pub const DEFAULT_LIST_LIMIT: usize = 100;
pub const MAX_LIST_LIMIT: usize = 1000;

/// The running node, as the API sees it. Implementations answer from memory and never block
/// for long: handlers call these on the async runtime, except the listings, which may wait
/// (bounded) for the dataplane workers and are called on the blocking pool.
pub trait NodeView: Send + Sync + 'static {
    /// This node's statistics document (dataplane, dns, ports, release): the runtime's stats.
    fn stats(&self) -> serde_json::Value;

    /// Counters for `/metrics`.
    fn counters(&self) -> NodeCounters;

    /// Is the dataplane forwarding (workers alive, ports up)?
    fn dataplane_check(&self) -> Check;

    /// Is the DNS proxy serving?
    fn dns_check(&self) -> Check;

    /// The policy version the dataplane runs now (`None`: none from the store yet). Updated
    /// by the runtime after it has compiled the store's active version and published it to
    /// every worker; policy writes wait on this.
    fn applied_policy_version(&self) -> watch::Receiver<Option<u64>>;

    /// Up to `limit` allowlist entries matching `filter`. May block, with a timeout.
    fn allowlist(&self, filter: &AllowlistFilter, limit: usize) -> Result<Vec<AllowlistEntry>, ListingError>;

    /// Up to `limit` live flows matching `filter`. May block, with a timeout.
    fn flows(&self, filter: &FlowFilter, limit: usize) -> Result<Vec<FlowEntry>, ListingError>;

    /// The release this node runs (what its binary reports).
    fn release(&self) -> String {
        env!("CARGO_PKG_VERSION").to_owned()
    }

    /// The `release` readiness check, when the node has one (a release on probation, or a
    /// test release that never becomes ready).
    fn release_check(&self) -> Option<Check> {
        None
    }
}

/// A page limit from a query, bounded.
pub fn page_limit(requested: Option<usize>) -> usize {
    requested.unwrap_or(DEFAULT_LIST_LIMIT).clamp(1, MAX_LIST_LIMIT)
}
