//! The ring walk behind `wow-node status --network`: a view of the whole
//! network, node by node, from one node.
//!
//! The walker asks its right-hand neighbour on the ring who it is; each
//! node answers (through the overlay, [`crate::wire::Kind::Walk`]) with its
//! ring address, its guest's name and virtual IP, its version and *its*
//! right-hand neighbour, which the walker asks next, until the walk comes
//! round to a node already seen, reaches its limit, or a node does not
//! answer within [`STEP_TIMEOUT`]. The answers travel the overlay, so in a
//! closed network only certified members take part; a node answers at most
//! [`MAX_REPLIES_PER_SEC`] requests a second.
//!
//! Messages (the body of a `Walk` payload):
//!
//! ```text
//! request: 1 | nonce (8)
//! reply:   2 | nonce (8) | right neighbour (20, zero: none) | IPv4 (4, zero: none)
//!            | name length (1) | name | version length (1) | version
//! ```
//!
//! ```
//! use wow_core::walk::Message;
//!
//! let reply = Message::Reply {
//!     nonce: 7,
//!     right: None,
//!     ip: Some("10.128.0.5".parse().unwrap()),
//!     name: "alpha.wow.internal".into(),
//!     version: "0.1.0".into(),
//! };
//! assert_eq!(Message::parse(&reply.to_bytes()), Ok(reply));
//! ```

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use overlay_core::Address;
use serde::Serialize;

/// How long the walker waits for each node's answer.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(2);
/// Walk requests a node answers per second at most.
pub const MAX_REPLIES_PER_SEC: u32 = 20;
/// Most nodes one walk lists.
pub const MAX_LIMIT: usize = 10_000;
/// Longest name or version carried.
const MAX_TEXT: usize = 253;

/// Why a walk message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WalkError {
    /// Shorter than its fields say.
    #[error("walk message truncated")]
    Truncated,
    /// Neither a request nor a reply.
    #[error("unknown walk message type {0}")]
    UnknownType(u8),
    /// A name or version that is not UTF-8.
    #[error("walk reply text is not UTF-8")]
    NotUtf8,
    /// Bytes after the last field.
    #[error("{0} bytes after the walk message")]
    Trailing(usize),
    /// A walk is already under way.
    #[error("a walk is already under way")]
    Busy,
}

/// A walk message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Who are you, and who is on your right?
    Request {
        /// Echoed in the reply.
        nonce: u64,
    },
    /// The answer.
    Reply {
        /// The request's nonce.
        nonce: u64,
        /// The replier's right-hand ring neighbour, if it has one.
        right: Option<Address>,
        /// Its guest's virtual IP, if leased.
        ip: Option<Ipv4Addr>,
        /// Its guest's name (empty: none).
        name: String,
        /// Its software version.
        version: String,
    },
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], WalkError> {
    if bytes.len() < n {
        return Err(WalkError::Truncated);
    }
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Ok(head)
}

fn take_array<const N: usize>(bytes: &mut &[u8]) -> Result<[u8; N], WalkError> {
    let mut out = [0; N];
    out.copy_from_slice(take(bytes, N)?);
    Ok(out)
}

fn take_text(bytes: &mut &[u8]) -> Result<String, WalkError> {
    let [len] = take_array::<1>(bytes)?;
    let text = take(bytes, usize::from(len))?;
    String::from_utf8(text.to_vec()).map_err(|_| WalkError::NotUtf8)
}

fn put_text(text: &str, out: &mut Vec<u8>) {
    // Cut at a character boundary within MAX_TEXT bytes.
    let mut end = text.len().min(MAX_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    out.push(end as u8);
    out.extend_from_slice(&text.as_bytes()[..end]);
}

impl Message {
    /// Decodes a message.
    pub fn parse(mut bytes: &[u8]) -> Result<Message, WalkError> {
        let b = &mut bytes;
        let [kind] = take_array::<1>(b)?;
        let nonce = u64::from_be_bytes(take_array(b)?);
        let message = match kind {
            1 => Message::Request { nonce },
            2 => {
                let right = Address::from_bytes(take_array(b)?);
                let ip = Ipv4Addr::from(take_array::<4>(b)?);
                Message::Reply {
                    nonce,
                    right: (right != Address::ZERO).then_some(right),
                    ip: (!ip.is_unspecified()).then_some(ip),
                    name: take_text(b)?,
                    version: take_text(b)?,
                }
            }
            other => return Err(WalkError::UnknownType(other)),
        };
        if !b.is_empty() {
            return Err(WalkError::Trailing(b.len()));
        }
        Ok(message)
    }

    /// Encodes the message (names and versions past 253 bytes are cut).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        match self {
            Message::Request { nonce } => {
                out.push(1);
                out.extend_from_slice(&nonce.to_be_bytes());
            }
            Message::Reply {
                nonce,
                right,
                ip,
                name,
                version,
            } => {
                out.push(2);
                out.extend_from_slice(&nonce.to_be_bytes());
                out.extend_from_slice(&right.unwrap_or(Address::ZERO).to_bytes());
                out.extend_from_slice(&ip.unwrap_or(Ipv4Addr::UNSPECIFIED).octets());
                put_text(name, &mut out);
                put_text(version, &mut out);
            }
        }
        out
    }
}

/// One node of the ring, as the walk saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeInfo {
    /// Its ring address.
    pub overlay_address: String,
    /// Its guest's name, if any.
    pub name: Option<String>,
    /// Its guest's virtual IP, if leased.
    pub address: Option<Ipv4Addr>,
    /// Its software version.
    pub version: String,
    /// Overlay hops its answer took (0: the walker itself; 1: a direct
    /// link).
    pub hops: u8,
}

/// A finished walk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalkResult {
    /// The nodes in ring order, starting with the walker.
    pub nodes: Vec<NodeInfo>,
    /// Whether the walk came round the whole ring (else it stopped at its
    /// limit or at a node that did not answer).
    pub complete: bool,
    /// Why it stopped short, if it did.
    pub stopped: Option<String>,
}

impl WalkResult {
    /// The walk as a table.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "{} nodes{}\n",
            self.nodes.len(),
            match &self.stopped {
                None => " (the whole ring)".to_string(),
                Some(why) => format!(" (stopped: {why})"),
            }
        );
        for n in &self.nodes {
            let path = match n.hops {
                0 => "self".to_string(),
                1 => "direct".to_string(),
                h => format!("{h} hops"),
            };
            s += &format!(
                "{}  {:<15} {:<32} {:<8} {}\n",
                &n.overlay_address.get(..16).unwrap_or(&n.overlay_address),
                n.address
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "-".into()),
                n.name.as_deref().unwrap_or("-"),
                n.version,
                path
            );
        }
        s
    }
}

/// A walk under way.
#[derive(Debug)]
pub(crate) struct Walk {
    pub(crate) nonce: u64,
    limit: usize,
    nodes: Vec<NodeInfo>,
    seen: std::collections::HashSet<Address>,
    /// The node asked last, and until when its answer is awaited.
    pub(crate) asked: Option<(Address, Instant)>,
    result: Option<WalkResult>,
}

/// What the walker does next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Ask this node.
    Ask(Address),
    /// Nothing: finished, or the message was not for this walk.
    Nothing,
}

impl Walk {
    /// A walk from `me` (listed first), asking `right` next.
    pub(crate) fn new(
        nonce: u64,
        limit: usize,
        me: NodeInfo,
        my_address: Address,
        right: Option<Address>,
        now: Instant,
    ) -> (Walk, Next) {
        let mut walk = Walk {
            nonce,
            limit: limit.clamp(1, MAX_LIMIT),
            nodes: vec![me],
            seen: std::iter::once(my_address).collect(),
            asked: None,
            result: None,
        };
        let next = walk.advance(right, now);
        (walk, next)
    }

    fn finish(&mut self, complete: bool, stopped: Option<String>) {
        self.asked = None;
        self.result = Some(WalkResult {
            nodes: std::mem::take(&mut self.nodes),
            complete,
            stopped,
        });
    }

    fn advance(&mut self, right: Option<Address>, now: Instant) -> Next {
        match right {
            // Alone on the ring: the walk is the whole of it.
            None if self.nodes.len() == 1 => self.finish(true, None),
            None => self.finish(false, Some("no right-hand neighbour".into())),
            Some(r) if self.seen.contains(&r) => self.finish(true, None),
            Some(_) if self.nodes.len() >= self.limit => {
                self.finish(false, Some(format!("limit of {} nodes", self.limit)))
            }
            Some(r) => {
                self.asked = Some((r, now + STEP_TIMEOUT));
                return Next::Ask(r);
            }
        }
        Next::Nothing
    }

    /// A reply from `source`, `hops` away.
    pub(crate) fn handle_reply(
        &mut self,
        now: Instant,
        source: Address,
        hops: u8,
        reply: &Message,
    ) -> Next {
        let Message::Reply {
            nonce,
            right,
            ip,
            name,
            version,
        } = reply
        else {
            return Next::Nothing;
        };
        // Only the answer to the request under way counts.
        if *nonce != self.nonce || self.asked.is_none() {
            return Next::Nothing;
        }
        if !self.seen.insert(source) {
            self.finish(true, None);
            return Next::Nothing;
        }
        self.nodes.push(NodeInfo {
            overlay_address: source.to_string(),
            name: (!name.is_empty()).then(|| name.clone()),
            address: *ip,
            version: version.clone(),
            hops,
        });
        self.advance(*right, now)
    }

    /// Ends the walk if its node did not answer in time.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if let Some((node, deadline)) = self.asked
            && deadline <= now
        {
            self.finish(false, Some(format!("{node} did not answer")));
        }
    }

    /// The result, once finished.
    pub(crate) fn take_result(&mut self) -> Option<WalkResult> {
        self.result.take()
    }
}

/// Walk requests answered per one-second window, at most
/// [`MAX_REPLIES_PER_SEC`].
#[derive(Debug, Default)]
pub(crate) struct ReplyLimit {
    window: Option<Instant>,
    count: u32,
}

impl ReplyLimit {
    /// Whether one more reply may go now.
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        match self.window {
            Some(start) if now.saturating_duration_since(start) < Duration::from_secs(1) => {}
            _ => {
                self.window = Some(now);
                self.count = 0;
            }
        }
        self.count += 1;
        self.count <= MAX_REPLIES_PER_SEC
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(i: u8) -> NodeInfo {
        NodeInfo {
            overlay_address: format!("node {i}"),
            name: None,
            address: None,
            version: "0".into(),
            hops: 0,
        }
    }

    fn reply(nonce: u64, right: Address) -> Message {
        Message::Reply {
            nonce,
            right: Some(right),
            ip: None,
            name: String::new(),
            version: "0".into(),
        }
    }

    #[test]
    fn a_walk_goes_round_once_and_ignores_other_nonces() {
        let now = Instant::now();
        let a: Vec<Address> = (1..=3).map(|i| Address::from_key(&[i])).collect();
        let (mut w, next) = Walk::new(9, 100, info(0), a[0], Some(a[1]), now);
        assert_eq!(next, Next::Ask(a[1]));
        assert_eq!(w.handle_reply(now, a[1], 1, &reply(8, a[2])), Next::Nothing);
        assert_eq!(
            w.handle_reply(now, a[1], 1, &reply(9, a[2])),
            Next::Ask(a[2])
        );
        assert_eq!(w.handle_reply(now, a[2], 2, &reply(9, a[0])), Next::Nothing);
        let r = w.take_result().unwrap_or_else(|| panic!("not finished"));
        assert!(r.complete);
        assert_eq!(r.nodes.len(), 3);
        assert_eq!(r.nodes[2].hops, 2);
    }

    #[test]
    fn a_silent_node_or_the_limit_ends_the_walk() {
        let now = Instant::now();
        let a: Vec<Address> = (1..=3).map(|i| Address::from_key(&[i])).collect();
        let (mut w, _) = Walk::new(1, 100, info(0), a[0], Some(a[1]), now);
        w.handle_timeout(now + STEP_TIMEOUT);
        let r = w.take_result().unwrap_or_else(|| panic!("not finished"));
        assert!(!r.complete && r.stopped.is_some_and(|s| s.contains("did not answer")));
        let (mut w, _) = Walk::new(1, 2, info(0), a[0], Some(a[1]), now);
        assert_eq!(w.handle_reply(now, a[1], 1, &reply(1, a[2])), Next::Nothing);
        let r = w.take_result().unwrap_or_else(|| panic!("not finished"));
        assert_eq!((r.nodes.len(), r.complete), (2, false));
    }

    /// A flood of walk requests gets at most the limit's replies a second.
    #[test]
    fn attack_walk_requests_are_answered_at_a_bounded_rate() {
        let now = Instant::now();
        let mut limit = ReplyLimit::default();
        let answered = (0..1000).filter(|_| limit.allow(now)).count();
        assert_eq!(answered, MAX_REPLIES_PER_SEC as usize);
        assert!(limit.allow(now + Duration::from_secs(1)));
    }

    #[test]
    fn bad_messages_are_typed_errors() {
        assert_eq!(Message::parse(&[]), Err(WalkError::Truncated));
        assert_eq!(Message::parse(&[3; 9]), Err(WalkError::UnknownType(3)));
        let mut r = reply(1, Address::from_key(b"x")).to_bytes();
        r.push(0);
        assert_eq!(Message::parse(&r), Err(WalkError::Trailing(1)));
        let mut r = reply(1, Address::from_key(b"x")).to_bytes();
        r.truncate(r.len() - 1);
        assert_eq!(Message::parse(&r), Err(WalkError::Truncated));
    }
}
