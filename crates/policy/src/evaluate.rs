//! The per-flow decision: the dataplane's hot path.
//!
//! Cost per flow: one binary search over source intervals, then for each candidate group a
//! binary search over its port intervals and a walk of the few rules listed there, each
//! checked by a binary search over its destination ranges or one learned-address lookup.
//! Nothing allocates and no string is hashed or compared.

use crate::compile::{CompiledPolicy, ProtoClass, Target};
use crate::decision::{Action, Cause, FlowQuery, LearnedLookup, Verdict};

impl CompiledPolicy {
    /// Decides a new flow. `learned` answers whether `q.dst` was learned from DNS for a
    /// hostname rule; without it hostname rules never match.
    pub fn evaluate(&self, q: &FlowQuery, learned: &impl LearnedLookup) -> Verdict {
        let candidates = self.sources.candidates(q.src);
        let (class, key) = ProtoClass::of_packet(q.proto, q.dst_port, q.icmp_type);
        for &g in candidates {
            let Some(group) = self.groups.get(usize::from(g)) else {
                continue;
            };
            for &r in group.rules_for(class, key) {
                let Some(rule) = group.rules.get(usize::from(r)) else {
                    continue;
                };
                let (hit, learned_via) = match &rule.target {
                    Target::Anywhere => (true, None),
                    Target::Addresses(ranges) => (Target::contains_address(ranges, q.dst), None),
                    Target::Learned(key) => (learned.is_learned(*key, q.dst), Some(*key)),
                };
                if hit {
                    let cause = Cause::Rule { group: g, rule: r };
                    return verdict(rule.action, group.audit, cause, learned_via);
                }
            }
            if let Some(action) = group.default_action {
                return verdict(action, group.audit, Cause::GroupDefault { group: g }, None);
            }
        }
        // No group decided: the document default applies, audited as the source's first
        // group would audit it, so putting a source's first group in audit mode really lets
        // all of that source's traffic through.
        let audit = candidates.first().and_then(|&g| self.groups.get(usize::from(g))).is_some_and(|g| g.audit);
        verdict(self.default_action, audit, Cause::DocumentDefault, None)
    }
}

/// Applies audit mode and keeps `learned_via` only where it means something: the engine pins
/// the learned entry of the hostname rule that let the flow through.
#[inline]
fn verdict(action: Action, audit: bool, cause: Cause, learned_via: Option<crate::RuleKey>) -> Verdict {
    match action {
        Action::Allow => Verdict { action, audit_would_deny: false, cause, learned_via },
        Action::Deny if audit => Verdict { action: Action::Allow, audit_would_deny: true, cause, learned_via: None },
        Action::Deny => Verdict { action, audit_would_deny: false, cause, learned_via: None },
    }
}
