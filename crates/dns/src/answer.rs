//! An upstream's reply: checked against what was asked, and turned into the addresses the
//! allowlist learns (pure).

use std::net::Ipv4Addr;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use crate::wire;

/// CNAME links followed inside one answer; a longer chain is cut there (its end is not
/// learned), which also ends loops.
pub const MAX_CHAIN: usize = 16;

/// Why a reply was not accepted as the answer to a forwarded query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadReply {
    /// Not a parseable DNS response.
    Malformed,
    /// A response, but to another id (late, or spoofed).
    WrongId,
    /// The right id, but another question.
    WrongQuestion,
}

/// Checks that `reply` answers the query sent with `sent_id` and `question` (its bytes), and
/// parses it.
pub fn check_reply(reply: &[u8], sent_id: u16, question: &[u8]) -> Result<Message, BadReply> {
    if reply.len() < wire::HEADER_LEN || !wire::is_response(reply) {
        return Err(BadReply::Malformed);
    }
    if wire::id(reply) != Some(sent_id) {
        return Err(BadReply::WrongId);
    }
    let span = wire::question_span(reply).ok_or(BadReply::WrongQuestion)?;
    if !wire::same_question(&reply[span], question) {
        return Err(BadReply::WrongQuestion);
    }
    Message::from_vec(reply).map_err(|_| BadReply::Malformed)
}

/// Limits applied to what an answer teaches the allowlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LearnLimits {
    /// Seconds an address is kept at least, whatever its TTL.
    pub ttl_floor: u32,
    /// Seconds an address is kept at most.
    pub ttl_ceiling: u32,
    /// Addresses learned per answer (per queried name); the rest are not learned.
    pub max_ips_per_name: usize,
}

/// The addresses an answer teaches, with how long each is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Learned {
    /// Distinct addresses in answer order, with their TTL in seconds within floor/ceiling.
    pub addresses: Vec<(Ipv4Addr, u32)>,
    /// Addresses left out by the per-name cap.
    pub over_cap: usize,
}

/// Follows the CNAME chain inside `answer` from `qname` and takes the A records of any name
/// on it, so addresses reached through aliases are attributed to the name the client asked
/// for. Records for names off the chain (which an upstream has no business adding) are
/// ignored. Only NOERROR answers teach anything.
pub fn learn_from_answer(answer: &Message, qname: &Name, limits: &LearnLimits) -> Learned {
    let mut learned = Learned::default();
    if answer.metadata.response_code != ResponseCode::NoError {
        return learned;
    }
    let mut chain: Vec<&Name> = vec![qname];
    while chain.len() <= MAX_CHAIN {
        let last = chain[chain.len() - 1];
        let next = answer.answers.iter().find_map(|r| match &r.data {
            RData::CNAME(target) if r.name == *last => Some(&target.0),
            _ => None,
        });
        match next {
            Some(target) if !chain.contains(&target) => chain.push(target),
            _ => break,
        }
    }
    for record in &answer.answers {
        let RData::A(a) = &record.data else { continue };
        if record.record_type() != RecordType::A || !chain.contains(&&record.name) {
            continue;
        }
        let ttl = record.ttl.clamp(limits.ttl_floor, limits.ttl_ceiling.max(limits.ttl_floor));
        if let Some((_, kept)) = learned.addresses.iter_mut().find(|(ip, _)| *ip == a.0) {
            *kept = (*kept).max(ttl);
        } else if learned.addresses.len() < limits.max_ips_per_name {
            learned.addresses.push((a.0, ttl));
        } else {
            learned.over_cap += 1;
        }
    }
    learned
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, CNAME};
    use hickory_proto::rr::Record;

    const LIMITS: LearnLimits = LearnLimits { ttl_floor: 10, ttl_ceiling: 600, max_ips_per_name: 3 };

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn answer(records: Vec<Record>) -> Message {
        let mut m = Message::query();
        m.add_answers(records);
        m.into_response()
    }

    fn a(owner: &str, ip: [u8; 4], ttl: u32) -> Record {
        Record::from_rdata(name(owner), ttl, RData::A(A::new(ip[0], ip[1], ip[2], ip[3])))
    }

    fn cname(owner: &str, target: &str) -> Record {
        Record::from_rdata(name(owner), 300, RData::CNAME(CNAME(name(target))))
    }

    #[test]
    fn cname_chain_addresses_belong_to_the_queried_name() {
        let m = answer(vec![
            cname("www.Example.test.", "edge.cdn.test."),
            cname("edge.cdn.test.", "pop1.cdn.test."),
            a("pop1.cdn.test.", [192, 0, 2, 7], 60),
            a("unrelated.test.", [192, 0, 2, 99], 60),
        ]);
        let learned = learn_from_answer(&m, &name("WWW.example.TEST."), &LIMITS);
        assert_eq!(learned.addresses, [(Ipv4Addr::new(192, 0, 2, 7), 60)]);
    }

    #[test]
    fn ttls_are_kept_within_floor_and_ceiling_and_the_cap_is_counted() {
        let m = answer(vec![
            a("x.test.", [192, 0, 2, 1], 1),
            a("x.test.", [192, 0, 2, 2], 86_400),
            a("x.test.", [192, 0, 2, 2], 30),
            a("x.test.", [192, 0, 2, 3], 100),
            a("x.test.", [192, 0, 2, 4], 100),
            a("x.test.", [192, 0, 2, 5], 100),
        ]);
        let learned = learn_from_answer(&m, &name("x.test."), &LIMITS);
        let ips: Vec<(Ipv4Addr, u32)> = vec![
            (Ipv4Addr::new(192, 0, 2, 1), 10),
            (Ipv4Addr::new(192, 0, 2, 2), 600),
            (Ipv4Addr::new(192, 0, 2, 3), 100),
        ];
        assert_eq!(learned.addresses, ips);
        assert_eq!(learned.over_cap, 2);
    }

    #[test]
    fn loops_and_errors_teach_nothing_unbounded() {
        let looped =
            answer(vec![cname("a.test.", "b.test."), cname("b.test.", "a.test."), a("b.test.", [192, 0, 2, 1], 60)]);
        assert_eq!(learn_from_answer(&looped, &name("a.test."), &LIMITS).addresses.len(), 1);
        let mut nx = answer(vec![a("a.test.", [192, 0, 2, 1], 60)]);
        nx.metadata.response_code = ResponseCode::NXDomain;
        assert_eq!(learn_from_answer(&nx, &name("a.test."), &LIMITS), Learned::default());
    }

    #[test]
    fn replies_must_match_id_and_question() {
        let mut q = Message::query();
        q.metadata.id = 77;
        q.add_query(hickory_proto::op::Query::query(name("Api.Test."), RecordType::A));
        let sent = q.to_vec().unwrap();
        let question = &sent[wire::question_span(&sent).unwrap()];
        let mut reply = q.clone().into_response();
        reply.queries[0].name = name("api.TEST.");
        let bytes = reply.to_vec().unwrap();
        assert!(check_reply(&bytes, 77, question).is_ok(), "case may differ");
        assert_eq!(check_reply(&bytes, 78, question).unwrap_err(), BadReply::WrongId);
        reply.queries[0].name = name("other.test.");
        assert_eq!(check_reply(&reply.to_vec().unwrap(), 77, question).unwrap_err(), BadReply::WrongQuestion);
        assert_eq!(check_reply(&sent, 77, question).unwrap_err(), BadReply::Malformed, "a query is no reply");
    }
}
