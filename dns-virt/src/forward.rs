//! Forwarding outside the zones (split DNS): checking the upstream's
//! replies and caching them.
//!
//! The [`crate::Server`] forwards each query outside its zones under a fresh
//! message ID drawn from the OS, never the client's (which the client, or
//! anyone who sees its queries, chooses). A reply counts only if it is a
//! response carrying that ID and the question asked ([`check`]); anything
//! else is dropped and the query keeps waiting, so a forged datagram can
//! neither poison the [`Cache`] nor end the wait with an error. What passes
//! is cached for its TTL (the SOA's minimum for a negative answer, RFC 2308)
//! in a cache bounded in bytes.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

use crate::error::ForwardError;
use crate::wire::Request;

/// What a cached answer is keyed on: the question (name without case) and
/// the flags that change an upstream's answer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    name: String,
    qtype: u16,
    qclass: u16,
    /// Recursion desired, checking disabled, DNSSEC OK.
    flags: u8,
}

impl Key {
    pub(crate) fn of(request: &Request) -> Key {
        let q = &request.query;
        let dnssec_ok = request.edns.is_some_and(|e| e.dnssec_ok);
        Key {
            name: q.name().to_ascii().to_ascii_lowercase(),
            qtype: u16::from(q.query_type()),
            qclass: u16::from(q.query_class()),
            flags: u8::from(request.recursion_desired)
                | u8::from(request.checking_disabled) << 1
                | u8::from(dnssec_ok) << 2,
        }
    }
}

/// A reply that passed [`check`].
#[derive(Debug)]
pub(crate) struct Checked {
    /// The TC bit: the answer did not fit (ask again over TCP).
    pub(crate) truncated: bool,
    /// How long it may be cached, if at all.
    pub(crate) ttl: Option<Duration>,
}

/// Checks the upstream's `reply` to the query sent with `id` for `key`.
pub(crate) fn check(reply: &[u8], id: u16, key: &Key) -> Result<Checked, ForwardError> {
    let msg = Message::from_vec(reply).map_err(|_| ForwardError::Malformed { len: reply.len() })?;
    let meta = &msg.metadata;
    if meta.message_type != MessageType::Response || meta.op_code != OpCode::Query {
        return Err(ForwardError::NotAResponse);
    }
    if meta.id != id {
        return Err(ForwardError::WrongId {
            expected: id,
            got: meta.id,
        });
    }
    let same_question = msg.queries.len() == 1
        && msg.queries.first().is_some_and(|q| {
            u16::from(q.query_type()) == key.qtype
                && u16::from(q.query_class()) == key.qclass
                && q.name().to_ascii().eq_ignore_ascii_case(&key.name)
        });
    if !same_question {
        return Err(ForwardError::OtherQuestion);
    }
    let truncated = meta.truncation;
    let ttl = if truncated { None } else { cache_ttl(&msg) };
    Ok(Checked { truncated, ttl })
}

/// How long `msg` may be cached: the least TTL of its answers, or for a
/// negative answer the SOA's (RFC 2308 §5); `None` for other outcomes.
fn cache_ttl(msg: &Message) -> Option<Duration> {
    let rcode = msg.metadata.response_code;
    let secs = match rcode {
        ResponseCode::NoError if !msg.answers.is_empty() => msg.answers.iter().map(|r| r.ttl).min(),
        ResponseCode::NoError | ResponseCode::NXDomain => {
            msg.authorities.iter().find_map(|r| match &r.data {
                RData::SOA(soa) if r.record_type() == RecordType::SOA => {
                    Some(r.ttl.min(soa.minimum))
                }
                _ => None,
            })
        }
        _ => None,
    }?;
    (secs > 0).then(|| Duration::from_secs(u64::from(secs)))
}

/// `reply` made the answer to `request`: its ID, its question (with the
/// client's case), each TTL less the `age` it spent in the cache. `None` if
/// it does not decode again or encode.
pub(crate) fn rewrite(reply: &[u8], request: &Request, age: Duration) -> Option<Vec<u8>> {
    let mut msg = Message::from_vec(reply).ok()?;
    msg.metadata.id = request.id;
    msg.queries = vec![request.query.clone()];
    let age = u32::try_from(age.as_secs()).unwrap_or(u32::MAX);
    for r in msg
        .answers
        .iter_mut()
        .chain(msg.authorities.iter_mut())
        .chain(msg.additionals.iter_mut())
    {
        r.ttl = r.ttl.saturating_sub(age);
    }
    msg.to_vec().ok()
}

#[derive(Debug)]
struct Entry {
    reply: Vec<u8>,
    stored: Instant,
    expires: Instant,
    seq: u64,
}

/// Upstream answers kept for their TTL, at most `max_bytes` of them: past
/// it the entries closest to expiry go first.
#[derive(Debug)]
pub(crate) struct Cache {
    entries: HashMap<Key, Entry>,
    by_expiry: BTreeMap<(Instant, u64), Key>,
    bytes: usize,
    max_bytes: usize,
    max_ttl: Duration,
    seq: u64,
}

/// What one entry costs besides its reply: the key, the maps' slots.
const ENTRY_OVERHEAD: usize = 128;

impl Cache {
    pub(crate) fn new(max_bytes: usize, max_ttl: Duration) -> Cache {
        Cache {
            entries: HashMap::new(),
            by_expiry: BTreeMap::new(),
            bytes: 0,
            max_bytes,
            max_ttl,
            seq: 0,
        }
    }

    fn cost(key: &Key, reply: &[u8]) -> usize {
        reply.len() + key.name.len() + ENTRY_OVERHEAD
    }

    /// The cached reply for `key` and how long it has been cached.
    pub(crate) fn get(&mut self, key: &Key, now: Instant) -> Option<(&[u8], Duration)> {
        let expired = self.entries.get(key).is_some_and(|e| e.expires <= now);
        if expired {
            self.remove(key);
        }
        let e = self.entries.get(key)?;
        Some((&e.reply, now.saturating_duration_since(e.stored)))
    }

    /// Keeps `reply` for `key` for `ttl` (at most the cache's longest).
    pub(crate) fn insert(&mut self, key: Key, reply: &[u8], now: Instant, ttl: Duration) {
        let cost = Cache::cost(&key, reply);
        if cost > self.max_bytes {
            return;
        }
        self.remove(&key);
        while self.bytes + cost > self.max_bytes {
            let Some((_, oldest)) = self.by_expiry.pop_first() else {
                break;
            };
            self.remove(&oldest);
        }
        self.seq += 1;
        let expires = now + ttl.min(self.max_ttl);
        self.by_expiry.insert((expires, self.seq), key.clone());
        self.bytes += cost;
        self.entries.insert(
            key,
            Entry {
                reply: reply.to_vec(),
                stored: now,
                expires,
                seq: self.seq,
            },
        );
    }

    fn remove(&mut self, key: &Key) {
        if let Some(e) = self.entries.remove(key) {
            self.by_expiry.remove(&(e.expires, e.seq));
            self.bytes -= Cache::cost(key, &e.reply);
        }
    }

    /// Bytes held, as counted against the bound.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}
