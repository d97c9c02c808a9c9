//! The DNS proxy's question: may `client` resolve `qname`, and for which hostname rules
//! should the answer's addresses be learned?

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::compile::CompiledPolicy;
use crate::decision::{Action, Cause, RuleKey};
use crate::hostname::{normalise_name, parent_suffixes, Pattern};
use crate::model::SourceGroup;

/// What the DNS proxy does with one query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsDecision {
    /// Forward the query (true) or answer it with a refusal (false).
    pub allowed: bool,
    /// Policy said deny, but the deciding group (or, with no matching rule, the client's
    /// first group) is in audit mode.
    pub audit_would_deny: bool,
    /// Hostname rules to learn the answer's addresses for, in rule order. Empty when denied
    /// or when allowed only by audit mode.
    pub learn_for: Vec<RuleKey>,
    /// The rule that decided; `None` when no hostname rule of the client's groups matches
    /// the name (DNS is only ever allowed by an explicit hostname rule).
    pub cause: Option<Cause>,
}

/// A hostname rule, by group and rule index (document order).
type RuleRef = (u16, u16);

/// Hostname patterns → rules, so a query costs one lookup per label of the name rather than
/// a scan of every rule.
#[derive(Debug, Default)]
pub(crate) struct HostnameIndex {
    /// Exact names.
    exact: HashMap<String, Vec<RuleRef>>,
    /// `*.suffix` patterns, keyed by `suffix`.
    below: HashMap<String, Vec<RuleRef>>,
}

impl HostnameIndex {
    pub(crate) fn build(groups: &[SourceGroup]) -> Self {
        let mut index = HostnameIndex::default();
        for (g, group) in groups.iter().enumerate() {
            for (r, rule) in group.rules.iter().enumerate() {
                for pattern in &rule.matches.hostnames {
                    let (map, key) = match Pattern::of(pattern) {
                        Pattern::Exact(name) => (&mut index.exact, name),
                        Pattern::Below(suffix) => (&mut index.below, suffix),
                    };
                    map.entry(key.to_string()).or_default().push((g as u16, r as u16));
                }
            }
        }
        index
    }

    /// The rule lists of every pattern matching `name` (normalised): one list per matching
    /// exact name or wildcard suffix, so at most one per label of the name.
    fn matching_lists(&self, name: &str) -> Vec<&[RuleRef]> {
        let mut lists: Vec<&[RuleRef]> = Vec::new();
        if let Some(rules) = self.exact.get(name) {
            lists.push(rules);
        }
        // `*.example.com` sits under "example.com" and must match names strictly below it,
        // so only proper suffixes of the name are looked up, never the name itself.
        for suffix in parent_suffixes(name) {
            if let Some(rules) = self.below.get(suffix) {
                lists.push(rules);
            }
        }
        lists
    }
}

/// Rule indices of group `group` in any of `lists`, ascending, each once. Lists are sorted by
/// (group, rule) because the index is built in document order, so each is searched rather
/// than scanned: a wildcard shared by every group costs a few comparisons per group.
fn rules_of_group(lists: &[&[RuleRef]], group: u16) -> Vec<u16> {
    let mut rules: Vec<u16> = Vec::new();
    for list in lists {
        let first = list.partition_point(|&(g, _)| g < group);
        let end = list.partition_point(|&(g, _)| g <= group);
        rules.extend(list[first..end].iter().map(|&(_, rule)| rule));
    }
    rules.sort_unstable();
    rules.dedup();
    rules
}

impl CompiledPolicy {
    /// Decides a DNS query from `client` (host-order IPv4) for `qname` (any case, with or
    /// without the trailing dot).
    ///
    /// The client's groups are tried in priority order; in each, the first hostname rule
    /// (in rule order) matching the name decides. On allow, the answer is learned for that
    /// rule and every later allow rule of the same group that also matches the name, up to
    /// the first matching deny rule, so each rule that could let the flow through finds its
    /// addresses. A group with no matching hostname rule defers to the next group.
    pub fn dns_decision(&self, client: u32, qname: &str) -> DnsDecision {
        let name = normalise_name(qname);
        let lists = self.hostnames.matching_lists(&name);
        let candidates = self.sources.candidates(client);
        for &g in candidates.iter().filter(|_| !lists.is_empty()) {
            let group_hits = rules_of_group(&lists, g);
            let (Some(&r), Some(group)) = (group_hits.first(), self.groups.get(usize::from(g))) else {
                continue;
            };
            let Some(rule) = group.rules.get(usize::from(r)) else {
                continue;
            };
            let cause = Some(Cause::Rule { group: g, rule: r });
            return match rule.action {
                Action::Deny => {
                    DnsDecision { allowed: group.audit, audit_would_deny: group.audit, learn_for: Vec::new(), cause }
                }
                Action::Allow => {
                    let learn_for = group_hits
                        .iter()
                        .map_while(|&r| group.rules.get(usize::from(r)))
                        .take_while(|rule| rule.action == Action::Allow)
                        .filter_map(|rule| rule.key())
                        .collect();
                    DnsDecision { allowed: true, audit_would_deny: false, learn_for, cause }
                }
            };
        }
        // No hostname rule for this name: refused, unless the client's first group is in
        // audit mode, which (as for the document default in `evaluate`) must not break the
        // traffic it is only observing.
        let audit = candidates.first().and_then(|&g| self.groups.get(usize::from(g))).is_some_and(|g| g.audit);
        DnsDecision { allowed: audit, audit_would_deny: audit, learn_for: Vec::new(), cause: None }
    }
}
