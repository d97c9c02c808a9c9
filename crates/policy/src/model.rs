//! The policy document as operators write it, after validation.
//!
//! A value produced by [`crate::parse_policy`] is valid and normalised (hostnames lowercase
//! without trailing dot). The fields are public so callers can read and build documents;
//! [`crate::compile`] validates again, so a hand-built invalid document is rejected there
//! rather than trusted.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use crate::cidr::Ipv4Cidr;
use crate::decision::{Action, PROTO_ICMP, PROTO_TCP, PROTO_UDP};

/// A whole policy: ordered source groups and the action when none of them decides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyDocument {
    pub default_action: Action,
    pub source_groups: Vec<SourceGroup>,
}

impl Default for PolicyDocument {
    /// No groups and deny by default: the document `{}`.
    fn default() -> Self {
        PolicyDocument { default_action: Action::Deny, source_groups: Vec::new() }
    }
}

/// Deserialising goes through the same validating decoder as [`crate::parse_policy`], so no
/// path produces an unvalidated document; the error text lists every problem.
impl<'de> Deserialize<'de> for PolicyDocument {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        crate::decode::decode_document(&value).map_err(serde::de::Error::custom)
    }
}

/// Whether a group's denies are enforced or only reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupMode {
    #[default]
    Enforce,
    /// Denies decided by this group let the traffic through and are flagged
    /// `audit_would_deny`, so a policy can be tried on live traffic before it bites.
    Audit,
}

/// A set of sources (by address) and the rules that apply to their traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceGroup {
    pub id: String,
    /// Lower priorities are tried first; unique across the document.
    pub priority: u32,
    pub mode: GroupMode,
    pub sources: Sources,
    /// Tried in order; the first matching rule decides.
    pub rules: Vec<Rule>,
    /// Decides when no rule matches; `None` falls through to the next candidate group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_action: Option<Action>,
}

impl SourceGroup {
    pub fn is_audit(&self) -> bool {
        self.mode == GroupMode::Audit
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sources {
    pub cidrs: Vec<Ipv4Cidr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub id: String,
    pub action: Action,
    #[serde(rename = "match")]
    pub matches: RuleMatch,
}

impl Rule {
    /// A hostname rule matches destinations learned from DNS answers for its names.
    pub fn is_hostname_rule(&self) -> bool {
        !self.matches.hostnames.is_empty()
    }
}

/// What a rule matches. Every list is either absent (no constraint) or non-empty; empty
/// fields are left out when serialising.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct RuleMatch {
    #[serde(skip_serializing_if = "Protocol::is_any")]
    pub proto: Protocol,
    /// Only with `proto` tcp or udp.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dst_ports: Vec<PortRange>,
    /// Only with `proto` icmp.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub icmp_types: Vec<u8>,
    /// Exclusive with `hostnames`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dst_cidrs: Vec<Ipv4Cidr>,
    /// Normalised patterns: `name` or `*.suffix`. Exclusive with `dst_cidrs`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    #[default]
    Any,
}

impl Protocol {
    pub fn is_any(&self) -> bool {
        *self == Protocol::Any
    }

    /// Whether a packet with IP protocol number `proto` is of this protocol.
    pub fn matches(self, proto: u8) -> bool {
        match self {
            Protocol::Tcp => proto == PROTO_TCP,
            Protocol::Udp => proto == PROTO_UDP,
            Protocol::Icmp => proto == PROTO_ICMP,
            Protocol::Any => true,
        }
    }

    /// Whether this protocol has ports a rule can constrain.
    pub fn has_ports(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Udp)
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
            Protocol::Any => "any",
        }
    }
}

/// An inclusive port range; a single port has `first == last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn single(port: u16) -> Self {
        PortRange { first: port, last: port }
    }

    pub fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// Written back the way operators write it: a number for one port, `"lo-hi"` for a range.
impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.first == self.last {
            serializer.serialize_u16(self.first)
        } else {
            serializer.collect_str(self)
        }
    }
}
