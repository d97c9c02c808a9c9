//! The DNS proxy's query path on arbitrary bytes: a client's query is read, decided by policy
//! and answered (or dropped); the same bytes as an upstream's reply are checked, learned from
//! and TTL-capped. Nothing may panic, and every answer the proxy writes must parse.
#![no_main]

use std::sync::OnceLock;

use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;
use sluice_dns::answer::{check_reply, learn_from_answer, LearnLimits};
use sluice_dns::query::{ClientQuery, Rejected};
use sluice_dns::wire::{self, Rcode};
use sluice_policy::CompiledPolicy;

const POLICY: &str = r#"{ "default_action": "deny", "source_groups": [
  { "id": "c", "priority": 1, "sources": { "cidrs": ["10.0.0.0/8"] }, "rules": [
    { "id": "h", "action": "allow", "match": { "hostnames": ["a.test", "*.b.test"], "proto": "tcp", "dst_ports": [443] } } ] } ] }"#;

fn policy() -> &'static CompiledPolicy {
    static POLICY_ONCE: OnceLock<CompiledPolicy> = OnceLock::new();
    POLICY_ONCE.get_or_init(|| sluice_policy::compile_json(POLICY).expect("fuzz policy compiles"))
}

const LIMITS: LearnLimits = LearnLimits { ttl_floor: 5, ttl_ceiling: 300, max_ips_per_name: 8 };

fuzz_target!(|data: &[u8]| {
    match ClientQuery::parse(data) {
        Ok(q) => {
            let decision = policy().dns_decision(0x0A00_0002, &q.name_text);
            let answer = wire::own_answer(&q.answer_to(data), Rcode::NxDomain, !decision.allowed, true);
            assert!(Message::from_vec(&answer).is_ok(), "the proxy's own answer must parse");
        }
        Err(Rejected::Answer(_, answer)) => assert!(wire::is_response(&answer)),
        Err(Rejected::Drop) => {}
    }
    let mut reply = data.to_vec();
    let _ = wire::cap_ttls(&mut reply, 60);
    // The bytes as an upstream's reply to their own question.
    if let Some(q) = wire::question_span(data) {
        if let Ok(m) = check_reply(data, wire::id(data).unwrap_or(0), &data[q]) {
            if let Some(asked) = m.queries.first() {
                let learned = learn_from_answer(&m, &asked.name, &LIMITS);
                assert!(learned.addresses.len() <= LIMITS.max_ips_per_name);
                assert!(learned.addresses.iter().all(|&(_, ttl)| (5..=300).contains(&ttl)));
            }
        }
    }
});
