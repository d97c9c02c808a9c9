//! A deliberately naive evaluator over the document itself: every group, every rule, in the
//! plainest possible code. The compiled policy must agree with it on every query.

use sluice_policy::{
    Action, Cause, DnsDecision, Ipv4Cidr, LearnedLookup, PolicyDocument, Protocol, RuleKey, Verdict, PROTO_ICMP,
    PROTO_TCP, PROTO_UDP,
};

fn cidr_contains(cidr: &Ipv4Cidr, addr: u32) -> bool {
    let len = u32::from(cidr.prefix_len());
    let network = u32::from(cidr.network());
    len == 0 || (addr >> (32 - len)) == (network >> (32 - len))
}

/// Group indices containing `src`, lowest priority first.
pub fn candidate_groups(doc: &PolicyDocument, src: u32) -> Vec<usize> {
    let mut groups: Vec<usize> = (0..doc.source_groups.len())
        .filter(|&g| doc.source_groups[g].sources.cidrs.iter().any(|c| cidr_contains(c, src)))
        .collect();
    groups.sort_by_key(|&g| doc.source_groups[g].priority);
    groups
}

fn proto_matches(proto: Protocol, number: u8) -> bool {
    match proto {
        Protocol::Tcp => number == PROTO_TCP,
        Protocol::Udp => number == PROTO_UDP,
        Protocol::Icmp => number == PROTO_ICMP,
        Protocol::Any => true,
    }
}

fn make_verdict(action: Action, audit: bool, cause: Cause, learned_via: Option<RuleKey>) -> Verdict {
    if action == Action::Deny && audit {
        Verdict { action: Action::Allow, audit_would_deny: true, cause, learned_via: None }
    } else if action == Action::Deny {
        Verdict { action, audit_would_deny: false, cause, learned_via: None }
    } else {
        Verdict { action, audit_would_deny: false, cause, learned_via }
    }
}

pub fn evaluate(doc: &PolicyDocument, q: &sluice_policy::FlowQuery, learned: &impl LearnedLookup) -> Verdict {
    let candidates = candidate_groups(doc, q.src);
    for &g in &candidates {
        let group = &doc.source_groups[g];
        for (r, rule) in group.rules.iter().enumerate() {
            let m = &rule.matches;
            if !proto_matches(m.proto, q.proto) {
                continue;
            }
            if !m.dst_ports.is_empty() && !m.dst_ports.iter().any(|p| p.first <= q.dst_port && q.dst_port <= p.last) {
                continue;
            }
            if !m.icmp_types.is_empty() && !m.icmp_types.contains(&q.icmp_type) {
                continue;
            }
            let mut via = None;
            if !m.hostnames.is_empty() {
                let key = RuleKey::for_rule(&group.id, &rule.id, &m.hostnames);
                if !learned.is_learned(key, q.dst) {
                    continue;
                }
                via = Some(key);
            }
            if !m.dst_cidrs.is_empty() && !m.dst_cidrs.iter().any(|c| cidr_contains(c, q.dst)) {
                continue;
            }
            let cause = Cause::Rule { group: g as u16, rule: r as u16 };
            return make_verdict(rule.action, group.is_audit(), cause, via);
        }
        if let Some(action) = group.default_action {
            return make_verdict(action, group.is_audit(), Cause::GroupDefault { group: g as u16 }, None);
        }
    }
    let audit = candidates.first().is_some_and(|&g| doc.source_groups[g].is_audit());
    make_verdict(doc.default_action, audit, Cause::DocumentDefault, None)
}

pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix('*') {
        // "*.example.com": the name must end in ".example.com" with something before it.
        Some(dot_suffix) => name.len() > dot_suffix.len() && name.ends_with(dot_suffix),
        None => pattern == name,
    }
}

pub fn dns_decision(doc: &PolicyDocument, client: u32, qname: &str) -> DnsDecision {
    let name = qname.strip_suffix('.').unwrap_or(qname).to_ascii_lowercase();
    let candidates = candidate_groups(doc, client);
    for &g in &candidates {
        let group = &doc.source_groups[g];
        let matching: Vec<usize> = (0..group.rules.len())
            .filter(|&r| group.rules[r].matches.hostnames.iter().any(|p| pattern_matches(p, &name)))
            .collect();
        let Some(&first) = matching.first() else {
            continue;
        };
        let cause = Some(Cause::Rule { group: g as u16, rule: first as u16 });
        if group.rules[first].action == Action::Deny {
            let audit = group.is_audit();
            return DnsDecision { allowed: audit, audit_would_deny: audit, learn_for: vec![], cause };
        }
        let learn_for = matching
            .iter()
            .map(|&r| &group.rules[r])
            .take_while(|rule| rule.action == Action::Allow)
            .map(|rule| RuleKey::for_rule(&group.id, &rule.id, &rule.matches.hostnames))
            .collect();
        return DnsDecision { allowed: true, audit_would_deny: false, learn_for, cause };
    }
    let audit = candidates.first().is_some_and(|&g| doc.source_groups[g].is_audit());
    DnsDecision { allowed: audit, audit_would_deny: audit, learn_for: vec![], cause: None }
}
