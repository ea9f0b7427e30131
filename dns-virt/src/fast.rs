//! The pre-encoded answer path: the common query, answered without decoding
//! it into a `hickory-proto` message.
//!
//! A query qualifies when it is exactly: a standard query (QR 0, opcode 0, no
//! AA/TC/Z bits, RCODE 0), one question with an uncompressed name, class IN,
//! type A, no answer or authority records, and either no additional record
//! or one EDNS0 OPT (owner root, version 0, no extended RCODE, no option,
//! only the DO flag), and nothing after it. [`Zone::respond`] sends those,
//! when the name is registered in the forward zone, through
//! [`write_a_answer`]: the query's header and question copied, one
//! pre-encoded A record (owner compressed to the question) and OPT appended.
//! Everything else, and any query the fast path declines, goes through the
//! general path; both must give the same bytes (`tests/fast_path.rs`).
//!
//! [`Zone::respond`]: crate::Zone::respond

use std::net::Ipv4Addr;

use crate::wire::MIN_UDP_PAYLOAD;

/// Header length (RFC 1035 §4.1.1).
const HEADER: usize = 12;
/// Longest name on the wire (RFC 1035 §2.3.4).
const MAX_NAME: usize = 255;
/// An OPT RR with no options: root owner, TYPE, CLASS, TTL, RDLENGTH.
const OPT_LEN: usize = 11;
const TYPE_A: u16 = 1;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;

/// A query the fast path can answer, borrowed from its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FastQuery<'a> {
    /// The whole query.
    bytes: &'a [u8],
    /// End of the question (name, type, class).
    question_end: usize,
    /// The EDNS payload size, if the query had an OPT.
    pub(crate) edns_payload: Option<u16>,
}

impl<'a> FastQuery<'a> {
    /// Recognises a query of the qualifying shape; `None` for anything else
    /// (the general path decides those).
    pub(crate) fn parse(bytes: &'a [u8]) -> Option<FastQuery<'a>> {
        let header = bytes.get(..HEADER)?;
        // QR 0, opcode 0, AA 0, TC 0 (RD free); Z 0, RCODE 0 (AD, CD free).
        if header[2] & 0xfe != 0 || header[3] & 0xcf != 0 {
            return None;
        }
        let count = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
        let additional = count(10);
        if count(4) != 1 || count(6) != 0 || count(8) != 0 || additional > 1 {
            return None;
        }
        // The name: uncompressed labels of 1–63 octets, then the root.
        let mut at = HEADER;
        loop {
            let len = usize::from(*bytes.get(at)?);
            if len == 0 {
                at += 1;
                break;
            }
            if len > 63 {
                return None;
            }
            at += 1 + len;
            if at - HEADER >= MAX_NAME {
                return None;
            }
        }
        let fixed = bytes.get(at..at + 4)?;
        if u16::from_be_bytes([fixed[0], fixed[1]]) != TYPE_A
            || u16::from_be_bytes([fixed[2], fixed[3]]) != CLASS_IN
        {
            return None;
        }
        let question_end = at + 4;
        let rest = bytes.get(question_end..)?;
        let edns_payload = match (additional, rest) {
            (0, []) => None,
            // Root owner, TYPE OPT, CLASS = payload, extended RCODE 0,
            // version 0, flags DO or none, RDLENGTH 0.
            (1, [0, t0, t1, p0, p1, 0, 0, f0, 0, 0, 0])
                if u16::from_be_bytes([*t0, *t1]) == TYPE_OPT && *f0 & 0x7f == 0 =>
            {
                Some(u16::from_be_bytes([*p0, *p1]))
            }
            _ => return None,
        };
        Some(FastQuery {
            bytes,
            question_end,
            edns_payload,
        })
    }

    /// The question name's labels, as on the wire (case kept).
    pub(crate) fn labels(&self) -> Labels<'a> {
        Labels {
            name: self.bytes.get(HEADER..self.question_end - 4).unwrap_or(&[]),
        }
    }

    /// Size of the A answer [`write_a_answer`] writes for this query.
    pub(crate) fn answer_len(&self) -> usize {
        self.question_end
            + 16
            + if self.edns_payload.is_some() {
                OPT_LEN
            } else {
                0
            }
    }
}

/// Iterator over a validated uncompressed wire name's labels (root excluded).
#[derive(Clone, Debug)]
pub(crate) struct Labels<'a> {
    name: &'a [u8],
}

impl<'a> Iterator for Labels<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let (&len, rest) = self.name.split_first()?;
        let label = rest.get(..usize::from(len)).filter(|l| !l.is_empty())?;
        self.name = rest.get(usize::from(len)..).unwrap_or(&[]);
        Some(label)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.clone().fold(0, |n, _| n + 1);
        (n, Some(n))
    }
}

impl ExactSizeIterator for Labels<'_> {}

/// Writes the authoritative answer to `query`: its name has address `addr`
/// with `ttl`. `server_payload` is advertised in the OPT when the query had
/// one. The caller checks [`FastQuery::answer_len`] against the limit.
pub(crate) fn write_a_answer(
    query: &FastQuery<'_>,
    addr: Ipv4Addr,
    ttl: u32,
    server_payload: u16,
    out: &mut Vec<u8>,
) {
    out.clear();
    let (header, question) = query.bytes.split_at(HEADER);
    let question = question.get(..query.question_end - HEADER).unwrap_or(&[]);
    out.extend_from_slice(&header[..2]);
    // QR, AA, RD echoed; CD echoed; RCODE NOERROR.
    out.push(0x84 | (header[2] & 0x01));
    out.push(header[3] & 0x10);
    let additional = u8::from(query.edns_payload.is_some());
    out.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, additional]);
    out.extend_from_slice(question);
    // The answer: owner is a pointer to the question name at offset 12.
    out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&[0, 4]);
    out.extend_from_slice(&addr.octets());
    if query.edns_payload.is_some() {
        let payload = server_payload.max(MIN_UDP_PAYLOAD).to_be_bytes();
        out.extend_from_slice(&[0, 0, 41, payload[0], payload[1], 0, 0, 0, 0, 0, 0]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &[u8], qtype: u16, opt: Option<[u8; 11]>) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        q[11] = u8::from(opt.is_some());
        q.extend_from_slice(name);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        if let Some(o) = opt {
            q.extend_from_slice(&o);
        }
        q
    }

    const NAME: &[u8] = b"\x05alpha\x03wow\x00";
    const OPT: [u8; 11] = [0, 0, 41, 4, 0xd0, 0, 0, 0x80, 0, 0, 0];

    #[test]
    fn recognises_only_the_plain_shape() {
        let q = query(NAME, 1, None);
        let f = FastQuery::parse(&q).unwrap();
        assert_eq!(f.labels().collect::<Vec<_>>(), [&b"alpha"[..], b"wow"]);
        assert_eq!(f.labels().len(), 2);
        assert_eq!(f.edns_payload, None);
        let q = query(NAME, 1, Some(OPT));
        assert_eq!(FastQuery::parse(&q).unwrap().edns_payload, Some(1232));
        // AAAA, a compression pointer, trailing bytes, an OPT with an option,
        // version 1, a response, opcode 1: all declined.
        assert!(FastQuery::parse(&query(NAME, 28, None)).is_none());
        assert!(FastQuery::parse(&query(b"\xc0\x0c", 1, None)).is_none());
        let mut trailing = query(NAME, 1, None);
        trailing.push(0);
        assert!(FastQuery::parse(&trailing).is_none());
        let mut opt = OPT;
        opt[10] = 4;
        assert!(FastQuery::parse(&query(NAME, 1, Some(opt))).is_none());
        let mut v1 = OPT;
        v1[6] = 1;
        assert!(FastQuery::parse(&query(NAME, 1, Some(v1))).is_none());
        for (byte, bits) in [(2, 0x80), (2, 0x08), (3, 0x40), (3, 0x01)] {
            let mut q = query(NAME, 1, None);
            q[byte] |= bits;
            assert!(FastQuery::parse(&q).is_none(), "{byte} {bits:#x}");
        }
        // A name over 255 octets.
        let mut long = Vec::new();
        for _ in 0..5 {
            long.push(63);
            long.extend_from_slice(&[b'a'; 63]);
        }
        long.push(0);
        assert!(FastQuery::parse(&query(&long, 1, None)).is_none());
    }
}
