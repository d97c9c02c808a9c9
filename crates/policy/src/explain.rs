//! "Why was (or would) this flow be allowed?" for operators and the API.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::compile::CompiledPolicy;
use crate::decision::{Action, Cause, FlowQuery, LearnedLookup, RuleKey, Verdict};
use crate::dns::DnsDecision;

/// A flow to explain. With `hostname`, the flow is taken to follow a DNS lookup of that name
/// by `src`: hostname rules for which that lookup would learn addresses treat `dst` as
/// learned. Without it, hostname rules do not match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainQuery {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// IP protocol number (1 icmp, 6 tcp, 17 udp).
    pub proto: u8,
    #[serde(default)]
    pub dst_port: u16,
    #[serde(default)]
    pub icmp_type: u8,
    #[serde(default)]
    pub hostname: Option<String>,
}

/// The verdict for an [`ExplainQuery`], with names instead of indices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    pub verdict: Verdict,
    /// Id of the deciding group; `None` for the document default.
    pub group: Option<String>,
    /// Id of the deciding rule; `None` for a group or document default.
    pub rule: Option<String>,
    /// One sentence for a person, e.g. "allowed by rule apps/api".
    pub description: String,
    /// Same as `verdict.audit_would_deny`, at top level for readers of the JSON form.
    pub audit_would_deny: bool,
    /// Ids of the groups containing `src`, in the order they were tried.
    pub candidate_groups: Vec<String>,
    /// What the DNS proxy would do with `hostname` for `src`, when a hostname was given.
    pub dns: Option<DnsDecision>,
}

/// Addresses "learned" for an explain query: whatever `dst` is, for exactly the rules the DNS
/// proxy would learn the hostname for.
struct LearnedForHostname<'a>(&'a [RuleKey]);

impl LearnedLookup for LearnedForHostname<'_> {
    fn is_learned(&self, rule: RuleKey, _dst: u32) -> bool {
        self.0.contains(&rule)
    }
}

impl CompiledPolicy {
    pub fn explain(&self, q: &ExplainQuery) -> Explanation {
        let src = u32::from(q.src);
        let dns = q.hostname.as_deref().map(|name| self.dns_decision(src, name));
        let learned = LearnedForHostname(dns.as_ref().map_or(&[], |d| d.learn_for.as_slice()));
        let flow = FlowQuery::new(q.src, q.dst, q.proto, q.dst_port, q.icmp_type);
        let verdict = self.evaluate(&flow, &learned);

        let candidates = self.sources.candidates(src);
        let candidate_groups: Vec<String> = candidates.iter().map(|&g| self.group_id(g).to_string()).collect();
        let (group, rule) = match verdict.cause {
            Cause::Rule { group, rule } => {
                (Some(self.group_id(group).to_string()), Some(self.rule_id(group, rule).to_string()))
            }
            Cause::GroupDefault { group } => (Some(self.group_id(group).to_string()), None),
            Cause::DocumentDefault => (None, None),
        };
        let description = self.describe_verdict(q, &verdict, candidates, dns.as_ref());
        Explanation {
            verdict,
            group,
            rule,
            description,
            audit_would_deny: verdict.audit_would_deny,
            candidate_groups,
            dns,
        }
    }

    fn describe_verdict(
        &self,
        q: &ExplainQuery,
        verdict: &Verdict,
        candidates: &[u16],
        dns: Option<&DnsDecision>,
    ) -> String {
        let what = self.describe(verdict.cause);
        let mut text = if verdict.audit_would_deny {
            // The group whose mode turned the deny into an allow.
            let audit_group = match verdict.cause {
                Cause::Rule { group, .. } | Cause::GroupDefault { group } => Some(group),
                Cause::DocumentDefault => candidates.first().copied(),
            };
            let audit_group = audit_group.map_or("(unknown)", |g| self.group_id(g));
            format!("allowed: {what} would deny, but group {audit_group} is in audit mode")
        } else if verdict.action == Action::Allow {
            format!("allowed by {what}")
        } else {
            format!("denied by {what}")
        };
        if verdict.cause == Cause::DocumentDefault {
            if candidates.is_empty() {
                text.push_str(&format!("; source {} is in no source group", q.src));
            } else {
                text.push_str("; no rule or group default of the source's groups matched");
            }
        }
        if let (Some(_), Some(hostname)) = (verdict.learned_via, q.hostname.as_deref()) {
            text.push_str(&format!("; {} counts as learned from DNS for {hostname}", q.dst));
        }
        if let (Some(dns), Some(hostname)) = (dns, q.hostname.as_deref()) {
            if !dns.allowed {
                text.push_str(&format!("; DNS lookups of {hostname} by this source are refused"));
            } else if dns.learn_for.is_empty() {
                text.push_str(&format!("; DNS answers for {hostname} are not learned for any rule"));
            }
        }
        text
    }
}
