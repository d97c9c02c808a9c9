//! The contract between the compiled policy and its two users (dataplane engine, DNS proxy).
//!
//! Everything here is plain data: the engine stores a [`RuleRef`] and [`Verdict`] per flow,
//! so these types stay `Copy` and small.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// IP protocol numbers the policy distinguishes.
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Stable identity of a hostname rule across policy versions.
///
/// Derived from the group id, the rule id and the rule's normalised hostname patterns, so a
/// policy write that keeps a rule's names keeps the IPs already learned for it, and a write
/// that changes its names invalidates them. The dataplane's allowlist is keyed by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleKey(pub u64);

/// What the engine asks about a new flow (addresses as host-order `u32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowQuery {
    pub src: u32,
    pub dst: u32,
    /// IP protocol number.
    pub proto: u8,
    /// Destination port for TCP/UDP, 0 otherwise.
    pub dst_port: u16,
    /// ICMP type for ICMP, 0 otherwise.
    pub icmp_type: u8,
}

impl FlowQuery {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, dst_port: u16, icmp_type: u8) -> Self {
        FlowQuery { src: src.into(), dst: dst.into(), proto, dst_port, icmp_type }
    }
}

/// Answers "was `dst` learned from DNS for this hostname rule, and is it still valid?".
/// The engine implements it over its per-worker allowlist; `explain` over a hostname.
pub trait LearnedLookup {
    fn is_learned(&self, rule: RuleKey, dst: u32) -> bool;
}

/// A lookup that has learned nothing: hostname rules never match.
pub struct NothingLearned;

impl LearnedLookup for NothingLearned {
    fn is_learned(&self, _rule: RuleKey, _dst: u32) -> bool {
        false
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Deny,
}

/// Which part of the policy made a decision. Indices are into the compiled policy's groups
/// (in document order) and that group's rules (in document order); map them back to ids with
/// `CompiledPolicy::group_id` / `rule_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    Rule { group: u16, rule: u16 },
    GroupDefault { group: u16 },
    DocumentDefault,
}

/// The outcome of evaluating a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// What the dataplane must do. In an audit group a deny is turned into `Allow` here and
    /// `audit_would_deny` is set.
    pub action: Action,
    /// True when policy said deny but the deciding group is in audit mode.
    pub audit_would_deny: bool,
    pub cause: Cause,
    /// Set when a hostname rule allowed the flow because `dst` was learned for it: the
    /// engine pins that allowlist entry for the flow's lifetime.
    pub learned_via: Option<RuleKey>,
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        self.action == Action::Allow
    }
}
