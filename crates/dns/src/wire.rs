//! Raw-byte edits of DNS messages that the proxy makes on the forwarding path, where
//! re-encoding a whole message would cost time and could change what the upstream said
//! (record order, compression, letter case): the header id and flags, the question's span,
//! TTLs, and the small responses the proxy writes itself.
//!
//! Everything here takes untrusted bytes and returns `None` rather than panicking.

use std::ops::Range;

pub const HEADER_LEN: usize = 12;
/// Largest UDP answer a client without EDNS accepts (RFC 1035).
pub const CLASSIC_UDP_SIZE: usize = 512;
/// The UDP payload size the proxy advertises in the answers it writes itself.
pub const OWN_UDP_PAYLOAD: u16 = 1232;

const FLAG_QR: u8 = 0x80;
const FLAG_TC: u8 = 0x02;
const TYPE_OPT: u16 = 41;
/// Extended DNS Error option (RFC 8914) and its "Blocked" info code.
const EDNS_OPTION_EDE: u16 = 15;
const EDE_BLOCKED: u16 = 15;

/// Response codes the proxy sets itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rcode {
    NoError = 0,
    FormErr = 1,
    ServFail = 2,
    NxDomain = 3,
    NotImp = 4,
    Refused = 5,
}

pub fn id(msg: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.first()?, *msg.get(1)?]))
}

/// Overwrites the id; `msg` must hold a header.
pub fn set_id(msg: &mut [u8], id: u16) {
    msg[..2].copy_from_slice(&id.to_be_bytes());
}

pub fn is_response(msg: &[u8]) -> bool {
    msg.get(2).is_some_and(|b| b & FLAG_QR != 0)
}

pub fn is_truncated(msg: &[u8]) -> bool {
    msg.get(2).is_some_and(|b| b & FLAG_TC != 0)
}

fn u16_at(msg: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]))
}

/// The position just after the (possibly compressed) name starting at `pos`.
fn skip_name(msg: &[u8], mut pos: usize) -> Option<usize> {
    // A name has at most 127 labels; more is a malformed message.
    for _ in 0..128 {
        let len = *msg.get(pos)?;
        match len & 0xC0 {
            0x00 if len == 0 => return Some(pos + 1),
            0x00 => pos += 1 + usize::from(len),
            // A pointer ends the name.
            0xC0 => return msg.get(pos + 1).map(|_| pos + 2),
            _ => return None,
        }
    }
    None
}

/// The bytes of the single question (name, type, class) of `msg`, if it has exactly one and
/// its name is written out (not compressed: the first name of a message has nothing to point
/// back to).
pub fn question_span(msg: &[u8]) -> Option<Range<usize>> {
    if msg.len() < HEADER_LEN || u16_at(msg, 4)? != 1 {
        return None;
    }
    let mut pos = HEADER_LEN;
    loop {
        let len = *msg.get(pos)?;
        if len == 0 {
            pos += 1;
            break;
        }
        if len & 0xC0 != 0 {
            return None;
        }
        pos += 1 + usize::from(len);
    }
    let end = pos + 4;
    (end <= msg.len()).then_some(HEADER_LEN..end)
}

/// Whether two question sections are the same question, ignoring ASCII letter case (the
/// upstream may answer in a different case than it was asked; 0x20).
pub fn same_question(a: &[u8], b: &[u8]) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Lowers every record TTL above `ceiling` to `ceiling` (the OPT pseudo-record's TTL field
/// carries flags and is left alone), so clients do not cache an answer longer than the
/// allowlist keeps its addresses. `None` if the message is malformed.
pub fn cap_ttls(msg: &mut [u8], ceiling: u32) -> Option<()> {
    let question = question_span(msg)?;
    let records = usize::from(u16_at(msg, 6)?) + usize::from(u16_at(msg, 8)?) + usize::from(u16_at(msg, 10)?);
    let mut pos = question.end;
    for _ in 0..records {
        pos = skip_name(msg, pos)?;
        let rtype = u16_at(msg, pos)?;
        let ttl_at = pos + 4;
        let rdlen = usize::from(u16_at(msg, pos + 8)?);
        let next = pos + 10 + rdlen;
        if next > msg.len() {
            return None;
        }
        if rtype != TYPE_OPT {
            let ttl = u32::from_be_bytes(msg[ttl_at..ttl_at + 4].try_into().ok()?);
            if ttl > ceiling {
                msg[ttl_at..ttl_at + 4].copy_from_slice(&ceiling.to_be_bytes());
            }
        }
        pos = next;
    }
    Some(())
}

/// What the proxy needs to write its own answer to a query.
#[derive(Debug, Clone, Copy)]
pub struct AnswerTo<'a> {
    pub id: u16,
    /// Byte 2 of the query header (opcode and RD are copied from it).
    pub flags: u8,
    /// The query's question, copied verbatim (so its letter case is the client's).
    pub question: &'a [u8],
    /// The query carried an OPT record: answer with one.
    pub edns: bool,
}

/// An answer with no records: `rcode`, the question echoed, TC when `truncated`, an OPT record
/// when the query had one (carrying an Extended DNS Error "Blocked" when `blocked`).
pub fn own_answer(to: &AnswerTo<'_>, rcode: Rcode, truncated: bool, blocked: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + to.question.len() + 32);
    out.extend_from_slice(&to.id.to_be_bytes());
    // QR, the query's opcode and RD; AA and TC clear unless asked.
    let mut flags = FLAG_QR | (to.flags & 0x79);
    if truncated {
        flags |= FLAG_TC;
    }
    out.push(flags);
    out.push(0x80 | rcode as u8); // RA: the proxy recurses through its upstreams.
    let qdcount: u16 = if to.question.is_empty() { 0 } else { 1 };
    out.extend_from_slice(&qdcount.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&u16::from(to.edns).to_be_bytes());
    out.extend_from_slice(to.question);
    if to.edns {
        out.push(0); // root name
        out.extend_from_slice(&TYPE_OPT.to_be_bytes());
        out.extend_from_slice(&OWN_UDP_PAYLOAD.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]); // extended rcode, version 0, no flags
        if blocked {
            let text = b"denied by sluice policy";
            let option_len = 2 + text.len() as u16;
            out.extend_from_slice(&(4 + option_len).to_be_bytes());
            out.extend_from_slice(&EDNS_OPTION_EDE.to_be_bytes());
            out.extend_from_slice(&option_len.to_be_bytes());
            out.extend_from_slice(&EDE_BLOCKED.to_be_bytes());
            out.extend_from_slice(text);
        } else {
            out.extend_from_slice(&[0, 0]);
        }
    }
    out
}

/// FORMERR for a message whose header could be read but whose body could not: the id and
/// opcode echoed, no sections.
pub fn formerr_for_header(msg: &[u8]) -> Option<Vec<u8>> {
    if msg.len() < HEADER_LEN || is_response(msg) {
        return None;
    }
    let to = AnswerTo { id: id(msg)?, flags: msg[2], question: &[], edns: false };
    Some(own_answer(&to, Rcode::FormErr, false, false))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A query for `name` type A, optionally with an OPT record.
    pub(crate) fn query(id: u16, name: &str, edns: bool) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)]);
        for label in name.split('.').filter(|l| !l.is_empty()) {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        if edns {
            q.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
        }
        q
    }

    #[test]
    fn question_span_covers_name_type_and_class() {
        let q = query(7, "Api.Example.com", false);
        let span = question_span(&q).unwrap();
        assert_eq!(span, HEADER_LEN..q.len());
        assert!(same_question(&q[span.clone()], &query(9, "api.EXAMPLE.com", false)[span]));
        assert_eq!(question_span(&q[..q.len() - 1]), None);
        assert_eq!(question_span(&q[..5]), None);
    }

    #[test]
    fn own_answers_echo_id_question_and_edns() {
        let q = query(0xBEEF, "Denied.Test", true);
        let span = question_span(&q).unwrap();
        let to = AnswerTo { id: 0xBEEF, flags: q[2], question: &q[span.clone()], edns: true };
        let a = own_answer(&to, Rcode::NxDomain, false, true);
        let m = hickory_proto::op::Message::from_vec(&a).unwrap();
        assert_eq!(m.metadata.id, 0xBEEF);
        assert_eq!(m.metadata.response_code, hickory_proto::op::ResponseCode::NXDomain);
        assert!(m.metadata.recursion_desired);
        assert_eq!(&a[span.clone()], &q[span]);
        assert!(m.edns.is_some());
        let tc = own_answer(&AnswerTo { edns: false, ..to }, Rcode::ServFail, true, false);
        assert!(is_truncated(&tc) && is_response(&tc));
        assert_eq!(formerr_for_header(&q[..12]).unwrap()[3] & 0x0F, Rcode::FormErr as u8);
        assert_eq!(formerr_for_header(&tc), None, "never answer a response");
    }

    #[test]
    fn ttls_above_the_ceiling_are_lowered() {
        use hickory_proto::op::Message;
        use hickory_proto::rr::{rdata::A, Name, RData, Record};
        let name = Name::from_ascii("a.test.").unwrap();
        let mut m = Message::from_vec(&query(1, "a.test", false)).unwrap().into_response();
        m.add_answer(Record::from_rdata(name.clone(), 3600, RData::A(A::new(192, 0, 2, 1))));
        m.add_answer(Record::from_rdata(name, 5, RData::A(A::new(192, 0, 2, 2))));
        let mut bytes = m.to_vec().unwrap();
        cap_ttls(&mut bytes, 300).unwrap();
        let ttls: Vec<u32> = Message::from_vec(&bytes).unwrap().answers.iter().map(|r| r.ttl).collect();
        assert_eq!(ttls, [300, 5]);
        let len = bytes.len();
        assert_eq!(cap_ttls(&mut bytes[..len - 3], 300), None);
    }
}
