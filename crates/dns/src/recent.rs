//! What the proxy knows the workers already hold, so an answer for a name asked a thousand
//! times a second does not send the same address to every worker and wait for it each time
//! (pure: the caller passes the clock and the policy generation).
//!
//! An address is re-sent only when the new expiry would be later than the one the workers
//! applied by more than a slack; when it is not re-sent, the answer's TTLs are lowered to
//! what is left of the applied entry, so no client caches an address past its allowlist entry.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use sluice_policy::RuleKey;

/// Entries remembered at most; past it the memory starts over (the cost is a few re-sends).
const MAX_ENTRIES: usize = 65_536;

/// One allowlist entry to send: rule, address, expiry (monotonic ns).
pub type Learn = (RuleKey, Ipv4Addr, u64);

#[derive(Debug, Default)]
pub struct RecentlyLearned {
    generation: u32,
    applied: HashMap<(RuleKey, Ipv4Addr), u64>,
}

/// What to do for one answer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub send: Vec<Learn>,
    /// When some entries were not re-sent: the fewest whole seconds left on any of them.
    pub ttl_cap: Option<u32>,
}

impl RecentlyLearned {
    /// Entries for `addresses` (with their TTL in seconds) under every rule of `rules`, at
    /// `now_ns`, under policy `generation` (a new generation forgets everything: a policy
    /// change may have removed entries).
    pub fn plan(
        &mut self,
        generation: u32,
        rules: &[RuleKey],
        addresses: &[(Ipv4Addr, u32)],
        now_ns: u64,
        slack_ns: u64,
    ) -> Plan {
        if generation != self.generation {
            self.generation = generation;
            self.applied.clear();
        }
        let mut plan = Plan::default();
        for &rule in rules {
            for &(ip, ttl) in addresses {
                let expires_at = now_ns.saturating_add(u64::from(ttl) * 1_000_000_000);
                match self.applied.get(&(rule, ip)) {
                    Some(&held) if held.saturating_add(slack_ns) >= expires_at => {
                        let left = (held.saturating_sub(now_ns) / 1_000_000_000) as u32;
                        plan.ttl_cap = Some(plan.ttl_cap.map_or(left, |c| c.min(left)));
                    }
                    _ => plan.send.push((rule, ip, expires_at)),
                }
            }
        }
        plan
    }

    /// Every worker applied `sent` (under `generation`).
    pub fn applied(&mut self, generation: u32, sent: &[Learn]) {
        if generation != self.generation {
            return;
        }
        if self.applied.len() + sent.len() > MAX_ENTRIES {
            self.applied.clear();
        }
        for &(rule, ip, expires_at) in sent {
            let held = self.applied.entry((rule, ip)).or_insert(0);
            *held = (*held).max(expires_at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn an_address_is_resent_only_when_it_would_live_longer() {
        let mut r = RecentlyLearned::default();
        let (rule, ip) = (RuleKey(7), Ipv4Addr::new(192, 0, 2, 1));
        let first = r.plan(1, &[rule], &[(ip, 60)], 100 * S, S);
        assert_eq!(first.send, [(rule, ip, 160 * S)]);
        // Not applied yet: still sent.
        assert_eq!(r.plan(1, &[rule], &[(ip, 60)], 100 * S, S).send.len(), 1);
        r.applied(1, &first.send);
        // Half a second later: skipped, and the answer's TTL capped to what is left.
        let again = r.plan(1, &[rule], &[(ip, 60)], 100 * S + S / 2, S);
        assert_eq!(again, Plan { send: vec![], ttl_cap: Some(59) });
        // Two seconds later: the new expiry is later by more than the slack.
        assert_eq!(r.plan(1, &[rule], &[(ip, 60)], 102 * S, S).send.len(), 1);
        // A new policy generation forgets what was applied.
        assert_eq!(r.plan(2, &[rule], &[(ip, 60)], 100 * S, S).send.len(), 1);
    }
}
