//! The edge to the wire: DNS messages through `hickory-proto`, and TCP framing.
//!
//! [`Request::parse`] turns query bytes into a small owned struct that the
//! zone logic matches on; [`emit_response`] writes a response into a
//! caller's buffer and truncates it (TC, RFC 1035 §4.2.1, RFC 6891 §7) when it
//! exceeds what the query allows. [`TcpFramer`] splits a TCP byte stream into
//! messages (two-octet length prefix, RFC 1035 §4.2.2).

use hickory_proto::op::{
    Edns, Header, Message, MessageType, Metadata, OpCode, Query, ResponseCode,
};
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};

use crate::error::{FrameError, QueryError};

/// Classic UDP payload limit without EDNS (RFC 1035 §2.3.4).
pub const MIN_UDP_PAYLOAD: u16 = 512;

/// Transport a query arrived on; it bounds the response size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP: at most 512 octets, or the EDNS payload size (RFC 6891 §6.2.5).
    Udp,
    /// TCP: up to 65,535 octets per message.
    Tcp,
}

/// The EDNS0 parameters of a query (RFC 6891 §6.1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EdnsInfo {
    /// Requestor's UDP payload size.
    pub payload: u16,
    /// EDNS version; only 0 is supported (others get BADVERS).
    pub version: u8,
    /// DNSSEC OK bit.
    pub dnssec_ok: bool,
}

/// A decoded query: what the zone logic needs, nothing more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Message ID, echoed.
    pub id: u16,
    /// Recursion desired, echoed.
    pub recursion_desired: bool,
    /// Checking disabled, echoed.
    pub checking_disabled: bool,
    /// The one question, with the name's case as received.
    pub query: Query,
    /// EDNS0 OPT, if present.
    pub edns: Option<EdnsInfo>,
}

impl Request {
    /// Decodes a query.
    ///
    /// Errors say what to do: drop ([`QueryError::TooShort`],
    /// [`QueryError::NotAQuery`]) or answer FORMERR / NOTIMP.
    pub fn parse(bytes: &[u8]) -> Result<Request, QueryError> {
        let header = Header::read(&mut BinDecoder::new(bytes))
            .map_err(|_| QueryError::TooShort { len: bytes.len() })?;
        let meta = header.metadata;
        if meta.message_type == MessageType::Response {
            return Err(QueryError::NotAQuery);
        }
        let id = meta.id;
        if meta.op_code != OpCode::Query {
            return Err(QueryError::NotImplemented {
                id,
                opcode: meta.op_code,
            });
        }
        // RFC 9619: exactly one question; a query carries no answers.
        if header.counts.queries != 1 || header.counts.answers != 0 {
            return Err(QueryError::Malformed { id });
        }
        let msg = Message::from_vec(bytes).map_err(|_| QueryError::Malformed { id })?;
        let Some(query) = msg.queries.into_iter().next() else {
            return Err(QueryError::Malformed { id });
        };
        let edns = msg.edns.map(|e| EdnsInfo {
            payload: e.max_payload(),
            version: e.version(),
            dnssec_ok: e.flags().dnssec_ok,
        });
        Ok(Request {
            id,
            recursion_desired: meta.recursion_desired,
            checking_disabled: meta.checking_disabled,
            query,
            edns,
        })
    }

    /// Largest response allowed for this query on `transport`: on UDP 512
    /// octets, or the EDNS payload size (at least 512, RFC 6891 §6.2.5),
    /// capped by `server_max`. A `server_max` below 512 forces truncation of
    /// larger answers (the header and question are always sent).
    pub fn response_limit(&self, transport: Transport, server_max: u16) -> usize {
        match transport {
            Transport::Tcp => usize::from(u16::MAX),
            Transport::Udp => {
                let client = match self.edns {
                    Some(e) => e.payload.max(MIN_UDP_PAYLOAD),
                    None => MIN_UDP_PAYLOAD,
                };
                usize::from(client.min(server_max))
            }
        }
    }
}

/// Sections of a response, handed to [`emit_response`].
#[derive(Clone, Debug, Default)]
pub struct Sections {
    /// Answer section.
    pub answers: Vec<Record>,
    /// Authority section.
    pub authorities: Vec<Record>,
    /// Additional section (besides the OPT); dropped first when the
    /// response would not fit (RFC 2181 §9).
    pub additionals: Vec<Record>,
}

/// Writes the response to `req` into `out` (cleared first) and returns whether
/// it was truncated.
///
/// `authoritative` sets AA. The question and ID are echoed; when the query had
/// EDNS, the response carries an OPT advertising `server_payload`. If the
/// whole response exceeds `limit`, it is replaced by the header, question and
/// OPT with TC set (RFC 2181 §9: never a partial RRset).
pub fn emit_response(
    req: &Request,
    rcode: ResponseCode,
    authoritative: bool,
    sections: &Sections,
    server_payload: u16,
    limit: usize,
    out: &mut Vec<u8>,
) -> bool {
    let mut metadata = Metadata::new(req.id, MessageType::Response, OpCode::Query);
    metadata.authoritative = authoritative;
    metadata.recursion_desired = req.recursion_desired;
    metadata.checking_disabled = req.checking_disabled;
    metadata.response_code = rcode;
    let edns = req.edns.map(|_| {
        let mut e = Edns::new();
        e.set_max_payload(server_payload.max(MIN_UDP_PAYLOAD));
        e.set_version(0);
        e
    });
    let emit = |metadata: &Metadata, sections: Option<&Sections>, out: &mut Vec<u8>| {
        out.clear();
        let mut enc = BinEncoder::new(out);
        let none: [Record; 0] = [];
        let (answers, authorities, additionals) = match sections {
            Some(s) => (&s.answers[..], &s.authorities[..], &s.additionals[..]),
            None => (&none[..], &none[..], &none[..]),
        };
        hickory_proto::op::emit_message_parts(
            metadata,
            &mut std::iter::once(&req.query),
            &mut answers.iter(),
            &mut authorities.iter(),
            &mut additionals.iter(),
            edns.as_ref(),
            None,
            &mut enc,
        )
        .is_ok()
    };
    if emit(&metadata, Some(sections), out) && out.len() <= limit {
        return false;
    }
    if !sections.additionals.is_empty() {
        let bare = Sections {
            answers: sections.answers.clone(),
            authorities: sections.authorities.clone(),
            additionals: Vec::new(),
        };
        if emit(&metadata, Some(&bare), out) && out.len() <= limit {
            return false;
        }
    }
    metadata.truncation = true;
    // Header, question and OPT always fit 512 octets (a name is at most 255).
    if !emit(&metadata, None, out) || out.len() > limit.max(usize::from(MIN_UDP_PAYLOAD)) {
        emit_header_only(req.id, OpCode::Query, rcode, out);
        if let Some(flags) = out.get_mut(2) {
            *flags |= 0x02;
        }
    }
    true
}

/// Writes the header, question and OPT of a response to `req` with TC set:
/// "retry over TCP" (RFC 7766 §5).
pub fn emit_truncated(req: &Request, server_payload: u16, out: &mut Vec<u8>) {
    emit_response(
        req,
        ResponseCode::NoError,
        false,
        &Sections::default(),
        server_payload,
        0,
        out,
    );
}

/// Writes a bare header (no sections) answering `id` with `rcode`: for
/// FORMERR and NOTIMP, where the question cannot be trusted.
pub fn emit_header_only(id: u16, op_code: OpCode, rcode: ResponseCode, out: &mut Vec<u8>) {
    out.clear();
    let mut metadata = Metadata::new(id, MessageType::Response, op_code);
    metadata.response_code = rcode;
    let header = Header {
        metadata,
        counts: Default::default(),
    };
    let mut enc = BinEncoder::new(out);
    // Emitting a fixed-size header into a Vec cannot fail.
    let _ = header.emit(&mut enc);
}

/// Splits a TCP byte stream into DNS messages (RFC 1035 §4.2.2).
///
/// Push received bytes with [`TcpFramer::push`], then take whole messages
/// with [`TcpFramer::next_message`] until it returns `Ok(None)`.
#[derive(Clone, Debug, Default)]
pub struct TcpFramer {
    buf: Vec<u8>,
    start: usize,
}

impl TcpFramer {
    /// An empty framer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, if one has arrived.
    ///
    /// A zero length prefix is an error: the caller should close the
    /// connection.
    pub fn next_message(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let rest = self.buf.get(self.start..).unwrap_or_default();
        let Some((len, body)) = rest.split_first_chunk::<2>() else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes(*len));
        if len == 0 {
            return Err(FrameError::EmptyMessage);
        }
        if body.len() < len {
            return Ok(None);
        }
        let begin = self.start + 2;
        self.start = begin + len;
        Ok(self.buf.get(begin..begin + len))
    }

    /// Octets buffered but not yet returned as a message.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// Prefixes `message` with its two-octet length into `out` (cleared first).
pub fn frame_tcp(message: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
    let len =
        u16::try_from(message.len()).map_err(|_| FrameError::TooLong { len: message.len() })?;
    out.clear();
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    Ok(())
}

#[cfg(test)]
mod test {
    use super::*;
    use hickory_proto::rr::{DNSClass, Name, RecordType};

    fn query_bytes(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        if let Some(p) = edns {
            let mut e = Edns::new();
            e.set_max_payload(p);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    #[test]
    fn parses_question_and_edns() {
        let req = Request::parse(&query_bytes("Host.Wow.", RecordType::A, Some(4096))).unwrap();
        assert_eq!(req.id, 0x1234);
        assert!(req.recursion_desired);
        assert_eq!(req.query.name().to_ascii(), "Host.Wow.");
        assert_eq!(req.query.query_class(), DNSClass::IN);
        assert_eq!(req.edns.unwrap().payload, 4096);
        assert_eq!(req.response_limit(Transport::Udp, 1232), 1232);
        assert_eq!(req.response_limit(Transport::Tcp, 1232), 65535);
        let plain = Request::parse(&query_bytes("a.", RecordType::A, None)).unwrap();
        assert_eq!(plain.edns, None);
        assert_eq!(plain.response_limit(Transport::Udp, 1232), 512);
    }

    #[test]
    fn classifies_bad_input() {
        assert_eq!(
            Request::parse(&[1, 2, 3]),
            Err(QueryError::TooShort { len: 3 })
        );
        let mut b = query_bytes("a.", RecordType::A, None);
        b[2] |= 0x80;
        assert_eq!(Request::parse(&b), Err(QueryError::NotAQuery));
        let mut b = query_bytes("a.", RecordType::A, None);
        b[2] |= 0x28; // opcode 5 (UPDATE)
        assert!(matches!(
            Request::parse(&b),
            Err(QueryError::NotImplemented { id: 0x1234, .. })
        ));
        let b = query_bytes("a.", RecordType::A, None);
        assert_eq!(
            Request::parse(&b[..b.len() - 1]),
            Err(QueryError::Malformed { id: 0x1234 })
        );
        let mut b = query_bytes("a.", RecordType::A, None);
        b[5] = 2; // QDCOUNT 2
        assert_eq!(
            Request::parse(&b),
            Err(QueryError::Malformed { id: 0x1234 })
        );
    }

    #[test]
    fn framer_reassembles_split_messages() {
        let mut f = TcpFramer::new();
        let mut framed = Vec::new();
        frame_tcp(b"hello", &mut framed).unwrap();
        let mut two = framed.clone();
        frame_tcp(b"xy", &mut framed).unwrap();
        two.extend_from_slice(&framed);
        f.push(&two[..3]);
        assert_eq!(f.next_message(), Ok(None));
        f.push(&two[3..]);
        assert_eq!(f.next_message(), Ok(Some(&b"hello"[..])));
        assert_eq!(f.next_message(), Ok(Some(&b"xy"[..])));
        assert_eq!(f.next_message(), Ok(None));
        assert_eq!(f.buffered(), 0);
        f.push(&[0, 0]);
        assert_eq!(f.next_message(), Err(FrameError::EmptyMessage));
    }
}
