//! A client's query, read and checked before anything is decided about it (pure).

use std::ops::Range;

use hickory_proto::op::{Message, MessageType, OpCode};
use hickory_proto::rr::Name;

use crate::wire::{self, AnswerTo, Rcode};

/// A well-formed standard query with one question.
#[derive(Debug, Clone)]
pub struct ClientQuery {
    pub id: u16,
    /// The question's name as the client wrote it (letter case kept).
    pub name: Name,
    /// The name in presentation form, for policy and logs.
    pub name_text: String,
    /// Where the question sits in the query bytes.
    pub question: Range<usize>,
    /// Byte 2 of the header (opcode, RD).
    flags: u8,
    /// The query carried an OPT record.
    pub edns: bool,
    /// The largest UDP answer the client accepts.
    pub udp_limit: usize,
}

/// Why a query is not forwarded as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    /// Not answerable: too short for a header, or itself a response (answering responses
    /// would let two resolvers bounce packets off each other). Dropped.
    Drop,
    /// Answered with this error response (FORMERR for malformed, NOTIMP for other opcodes).
    Answer(Rcode, Vec<u8>),
}

impl ClientQuery {
    /// Reads `bytes` as a standard query with exactly one question.
    pub fn parse(bytes: &[u8]) -> Result<ClientQuery, Rejected> {
        if bytes.len() < wire::HEADER_LEN || wire::is_response(bytes) {
            return Err(Rejected::Drop);
        }
        let formerr = || match wire::formerr_for_header(bytes) {
            Some(answer) => Rejected::Answer(Rcode::FormErr, answer),
            None => Rejected::Drop,
        };
        let message = Message::from_vec(bytes).map_err(|_| formerr())?;
        if message.metadata.message_type != MessageType::Query {
            return Err(Rejected::Drop);
        }
        let question = wire::question_span(bytes).ok_or_else(formerr)?;
        let [query] = message.queries.as_slice() else {
            return Err(formerr());
        };
        let id = message.metadata.id;
        let edns = message.edns.is_some();
        if message.metadata.op_code != OpCode::Query {
            let to = AnswerTo { id, flags: bytes[2], question: &bytes[question], edns };
            return Err(Rejected::Answer(Rcode::NotImp, wire::own_answer(&to, Rcode::NotImp, false, false)));
        }
        let udp_limit = match &message.edns {
            Some(e) => usize::from(e.max_payload()).max(wire::CLASSIC_UDP_SIZE),
            None => wire::CLASSIC_UDP_SIZE,
        };
        Ok(ClientQuery {
            id,
            name: query.name.clone(),
            name_text: query.name.to_ascii(),
            question,
            flags: bytes[2],
            edns,
            udp_limit,
        })
    }

    /// Context for the answers the proxy writes itself to this query.
    pub fn answer_to<'a>(&self, bytes: &'a [u8]) -> AnswerTo<'a> {
        AnswerTo { id: self.id, flags: self.flags, question: &bytes[self.question.clone()], edns: self.edns }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tests::query;

    #[test]
    fn a_standard_query_is_read_with_its_case() {
        let q = ClientQuery::parse(&query(42, "WwW.Allowed.TEST", true)).unwrap();
        assert_eq!((q.id, q.name_text.as_str(), q.edns, q.udp_limit), (42, "WwW.Allowed.TEST.", true, 4096));
        let plain = ClientQuery::parse(&query(1, "a.test", false)).unwrap();
        assert_eq!(plain.udp_limit, 512);
    }

    #[test]
    fn malformed_queries_get_formerr_or_are_dropped() {
        let good = query(9, "a.test", false);
        assert_eq!(ClientQuery::parse(&good[..5]).unwrap_err(), Rejected::Drop);
        match ClientQuery::parse(&good[..good.len() - 2]).unwrap_err() {
            Rejected::Answer(Rcode::FormErr, a) => assert_eq!(&a[..2], &[0, 9]),
            other => panic!("{other:?}"),
        }
        let mut two = good.clone();
        two[5] = 2;
        assert!(matches!(ClientQuery::parse(&two), Err(Rejected::Answer(Rcode::FormErr, _))));
        let mut response = good.clone();
        response[2] |= 0x80;
        assert_eq!(ClientQuery::parse(&response).unwrap_err(), Rejected::Drop);
        let mut notify = good;
        notify[2] = 4 << 3;
        assert!(matches!(ClientQuery::parse(&notify), Err(Rejected::Answer(Rcode::NotImp, _))));
    }
}
