//! Sluice policy: the document operators write, its validation, and the compiled form the
//! dataplane and the DNS proxy consult. A pure library: no I/O, threads or clock.
//!
//! # Flow
//! [`parse_policy`] turns JSON text into a validated [`PolicyDocument`], reporting every
//! problem with its field path ([`PolicyErrors`]). [`compile`] turns a document into a
//! [`CompiledPolicy`] (`Send + Sync`, immutable, shared behind an `Arc`), which answers
//! [`CompiledPolicy::evaluate`] for each new flow, [`CompiledPolicy::dns_decision`] for each
//! DNS query and [`CompiledPolicy::explain`] for people.
//!
//! # Evaluation
//! A source's *candidate groups* are the groups whose `sources.cidrs` contain it, lowest
//! `priority` first (priorities are unique). In each group the rules are tried in document
//! order and the first match decides; with no match the group's `default_action` decides, or,
//! when it has none, the next candidate group is tried. When no group decides, the document's
//! `default_action` does. A deny decided by a group in `audit` mode is returned as an allow
//! with `audit_would_deny`; a document-default deny is audited when the source's first
//! candidate group is in audit mode.
//!
//! A hostname rule matches a flow when the proto/port/type constraints hold and the
//! dataplane learned `dst` for that rule's [`RuleKey`] from a DNS answer.
//!
//! # Decisions on details the format leaves open
//! - Absent optional fields and explicit `null` mean the same.
//! - `source_groups` may be left out (no groups); `rules` may be left out (no rules).
//! - A CIDR without `/len` is a single host (`/32`). Octets with leading zeros are rejected
//!   because some tools read them as octal.
//! - Lists in a `match` (and `sources.cidrs`) must not be empty when present: an empty list
//!   would read as "matches nothing" to some and "no constraint" to others; leaving the field
//!   out is the one way to say "no constraint". Every list holds at most 256 entries,
//!   `sources.cidrs` included.
//! - Port strings must be `"lo-hi"`; a single port is written as a number.
//! - `dst_ports` need `proto` tcp or udp and `icmp_types` need `proto` icmp; with `proto`
//!   any (or absent) neither may appear.
//! - Hostname patterns must be ASCII (internationalised names in `xn--` form), may contain
//!   `_` (service names), and may not be IPv4 literals (DNS never resolves those; use
//!   `dst_cidrs`). `*.com` is accepted. Duplicate patterns in one rule are kept as written
//!   and count once for the rule key.
//! - Group and rule ids use `[A-Za-z0-9_.-]`, 1..=64 characters, and are case-sensitive.
//! - Duplicate keys inside one JSON object cannot be reported: the JSON reader keeps the
//!   last one.
//! - At most 1000 errors are reported, plus one line saying how many more there were.
//! - [`CompiledPolicy::dns_decision`]: a name no hostname rule of the client's groups
//!   matches is refused, except that the refusal is audited (allowed, `audit_would_deny`)
//!   when the client's first candidate group is in audit mode, mirroring the document
//!   default in `evaluate`. Allowed-by-audit decisions learn nothing.
//! - A hostname rule that denies matches only if something learned `dst` for it; the DNS
//!   proxy never learns for deny rules, so in practice such rules act by refusing the
//!   DNS query. `Verdict::learned_via` is set only when a hostname rule allows.
//! - [`CompiledPolicy::group_id`] and [`CompiledPolicy::rule_id`] return `"(unknown)"` for
//!   indices the policy does not have (a cause kept from an older policy version).
//! - [`RuleKey`] is a hash of the group id, rule id and the rule's sorted, de-duplicated,
//!   normalised patterns: it survives reordering patterns and changing ports or action, and
//!   changes when a name or either id changes.

mod cidr;
mod compile;
mod decision;
mod decode;
mod dns;
mod error;
mod evaluate;
mod explain;
mod hostname;
mod model;
mod rule_key;

pub use cidr::CidrError;
pub use compile::{compile, compile_json, CompiledPolicy, IndexSize};
pub use decision::*;
pub use decode::{parse_policy, MAX_GROUPS, MAX_ID_LEN, MAX_LIST_ENTRIES, MAX_RULES_PER_GROUP};
pub use dns::DnsDecision;
pub use error::{FieldError, PolicyErrors};
pub use explain::{ExplainQuery, Explanation};
pub use model::{GroupMode, Ipv4Cidr, PolicyDocument, PortRange, Protocol, Rule, RuleMatch, SourceGroup, Sources};
