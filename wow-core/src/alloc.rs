//! Central allocation through the overlay: every node's DHCP server asks
//! one designated node (the *allocator*) to grant each address, the WOW
//! paper's central DHCP server.
//!
//! A node in this mode runs its DHCP server in directory mode (as with the
//! DHT) and sends each [`DirectoryRequest`](dhcp_virt::DirectoryRequest)
//! to the allocator as a [`Message::Claim`] (overlay payload
//! [`crate::wire::Kind::Alloc`]); the allocator's
//! [`dhcp_virt::central::Registry`] decides, keyed by the requesting
//! node's overlay address, and answers with a [`Message::Answer`]. The
//! requester takes an answer only from the allocator's address and only
//! for a request id it has pending ([`Pending`]); ids come from the OS.
//! A claim that goes unanswered fails (the DHCP server's claim timeout),
//! and the guest is offered nothing new while the allocator is out of
//! reach: no duplicate can arise from a partition.
//!
//! Messages (the body of an `Alloc` payload):
//!
//! ```text
//! claim:  1 | id (8) | op (1: 1 claim, 2 release) | IPv4 (4) | lease seconds (4)
//!           | owner length (1) | owner
//! answer: 2 | id (8) | result (1: 1 granted, 2 taken, 3 failed)
//! ```
//!
//! ```
//! use wow_core::alloc::{Message, Op};
//!
//! let claim = Message::Claim {
//!     id: 7,
//!     op: Op::Claim,
//!     addr: "10.128.0.9".parse().unwrap(),
//!     lease_secs: 3600,
//!     owner: vec![1, 2, 0, 0, 0, 0, 0, 9],
//! };
//! assert_eq!(Message::parse(&claim.to_bytes()), Ok(claim));
//! ```

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dhcp_virt::directory::{ClaimResult, RequestId};
use overlay_core::Address;

/// How long an unanswered claim is remembered (the DHCP server gives up on
/// it sooner).
pub const PENDING_FOR: Duration = Duration::from_secs(30);
/// Most claims one node has in flight.
pub const MAX_PENDING: usize = 256;
/// Longest owner carried (a client key: type and up to 255 bytes).
pub const MAX_OWNER: usize = 255;

/// Why an allocation message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AllocError {
    /// Shorter than its fields say, or longer.
    #[error("allocation message truncated or overlong")]
    Length,
    /// Neither a claim nor an answer.
    #[error("unknown allocation message type {0}")]
    UnknownType(u8),
    /// An operation or result code that does not exist.
    #[error("unknown allocation code {0}")]
    UnknownCode(u8),
    /// An empty owner.
    #[error("allocation claim without an owner")]
    NoOwner,
}

/// What a claim asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Grant (or renew) the address.
    Claim,
    /// Give the address up.
    Release,
}

/// One allocation message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A node asks the allocator.
    Claim {
        /// Echoed in the answer.
        id: u64,
        /// Claim or release.
        op: Op,
        /// The address.
        addr: Ipv4Addr,
        /// The lease time asked for.
        lease_secs: u32,
        /// The client ([`dhcp_virt::ClientKey::to_bytes`]).
        owner: Vec<u8>,
    },
    /// The allocator answers.
    Answer {
        /// The claim's id.
        id: u64,
        /// Its outcome.
        result: ClaimResult,
    },
}

impl Message {
    /// Reads a message; every field is checked.
    pub fn parse(bytes: &[u8]) -> Result<Message, AllocError> {
        let mut r = wow_bytes::Reader::new(bytes);
        let ty = r.u8().map_err(|_| AllocError::Length)?;
        let id = r.u64().map_err(|_| AllocError::Length)?;
        let message = match ty {
            1 => {
                let op = match r.u8().map_err(|_| AllocError::Length)? {
                    1 => Op::Claim,
                    2 => Op::Release,
                    c => return Err(AllocError::UnknownCode(c)),
                };
                let addr = Ipv4Addr::from(r.u32().map_err(|_| AllocError::Length)?);
                let lease_secs = r.u32().map_err(|_| AllocError::Length)?;
                let len = usize::from(r.u8().map_err(|_| AllocError::Length)?);
                if len == 0 {
                    return Err(AllocError::NoOwner);
                }
                let owner = r.take(len).map_err(|_| AllocError::Length)?.to_vec();
                Message::Claim {
                    id,
                    op,
                    addr,
                    lease_secs,
                    owner,
                }
            }
            2 => {
                let result = match r.u8().map_err(|_| AllocError::Length)? {
                    1 => ClaimResult::Granted,
                    2 => ClaimResult::Taken,
                    3 => ClaimResult::Failed,
                    c => return Err(AllocError::UnknownCode(c)),
                };
                Message::Answer { id, result }
            }
            t => return Err(AllocError::UnknownType(t)),
        };
        if r.remaining() != 0 {
            return Err(AllocError::Length);
        }
        Ok(message)
    }

    /// The message's bytes. An owner longer than [`MAX_OWNER`] is cut
    /// there (a client key never is).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        match self {
            Message::Claim {
                id,
                op,
                addr,
                lease_secs,
                owner,
            } => {
                out.push(1);
                out.extend_from_slice(&id.to_be_bytes());
                out.push(match op {
                    Op::Claim => 1,
                    Op::Release => 2,
                });
                out.extend_from_slice(&addr.octets());
                out.extend_from_slice(&lease_secs.to_be_bytes());
                let owner = &owner[..owner.len().min(MAX_OWNER)];
                out.push(owner.len() as u8);
                out.extend_from_slice(owner);
            }
            Message::Answer { id, result } => {
                out.push(2);
                out.extend_from_slice(&id.to_be_bytes());
                out.push(match result {
                    ClaimResult::Granted => 1,
                    ClaimResult::Taken => 2,
                    ClaimResult::Failed => 3,
                });
            }
        }
        out
    }
}

/// The requesting side: claims sent to the allocator and not yet
/// answered.
#[derive(Debug)]
pub struct Pending {
    allocator: Address,
    claims: HashMap<u64, (RequestId, Instant)>,
}

impl Pending {
    /// Claims go to `allocator`.
    pub fn new(allocator: Address) -> Self {
        Pending {
            allocator,
            claims: HashMap::new(),
        }
    }

    /// The allocator's overlay address.
    pub fn allocator(&self) -> Address {
        self.allocator
    }

    /// Records a claim sent at `now` under the wire id `id` (random, from
    /// the OS) for the DHCP server's `request`. `false` when too many are
    /// in flight: fail the request instead of sending it.
    pub fn insert(&mut self, now: Instant, id: u64, request: RequestId) -> bool {
        self.claims
            .retain(|_, (_, sent)| now.saturating_duration_since(*sent) < PENDING_FOR);
        if self.claims.len() >= MAX_PENDING {
            return false;
        }
        self.claims.insert(id, (request, now));
        true
    }

    /// An answer from `source`: the DHCP request it completes, if it came
    /// from the allocator for a claim still pending (anything else is
    /// ignored, and the claim stays pending).
    pub fn answer(
        &mut self,
        source: Address,
        id: u64,
        result: ClaimResult,
    ) -> Option<(RequestId, ClaimResult)> {
        if source != self.allocator {
            return None;
        }
        self.claims
            .remove(&id)
            .map(|(request, _)| (request, result))
    }

    /// Claims in flight.
    pub fn len(&self) -> usize {
        self.claims.len()
    }

    /// Whether none is in flight.
    pub fn is_empty(&self) -> bool {
        self.claims.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn address(byte: u8) -> Address {
        Address::from_bytes([byte; 20])
    }

    #[test]
    fn truncated_and_unknown_messages_are_refused() {
        let claim = Message::Claim {
            id: 1,
            op: Op::Release,
            addr: Ipv4Addr::new(10, 0, 0, 1),
            lease_secs: 60,
            owner: vec![1; 7],
        }
        .to_bytes();
        for len in 0..claim.len() {
            assert!(Message::parse(&claim[..len]).is_err(), "{len}");
        }
        let mut long = claim.clone();
        long.push(0);
        assert_eq!(Message::parse(&long), Err(AllocError::Length));
        let mut bad = claim.clone();
        bad[0] = 9;
        assert_eq!(Message::parse(&bad), Err(AllocError::UnknownType(9)));
        let mut bad = claim;
        bad[9] = 3;
        assert_eq!(Message::parse(&bad), Err(AllocError::UnknownCode(3)));
        let mut empty = Message::Answer {
            id: 1,
            result: ClaimResult::Taken,
        }
        .to_bytes();
        empty[9] = 0;
        assert_eq!(Message::parse(&empty), Err(AllocError::UnknownCode(0)));
    }

    #[test]
    fn pending_claims_are_bounded_and_age_out() {
        let now = Instant::now();
        let mut p = Pending::new(address(1));
        for i in 0..MAX_PENDING as u64 {
            assert!(p.insert(now, i, RequestId(i)));
        }
        assert!(!p.insert(now, 9999, RequestId(9999)));
        assert!(p.insert(now + PENDING_FOR, 9999, RequestId(9999)));
        assert_eq!(p.len(), 1);
    }

    /// A node that is not the allocator (or replays an answer) cannot
    /// grant an address: its answer is ignored and the claim still waits
    /// for the allocator.
    #[test]
    fn attack_answers_not_from_the_allocator_are_ignored() {
        let now = Instant::now();
        let mut p = Pending::new(address(1));
        p.insert(now, 42, RequestId(3));
        assert_eq!(p.answer(address(2), 42, ClaimResult::Granted), None);
        assert_eq!(p.answer(address(1), 43, ClaimResult::Granted), None);
        assert_eq!(
            p.answer(address(1), 42, ClaimResult::Taken),
            Some((RequestId(3), ClaimResult::Taken))
        );
        // Replayed: already answered.
        assert_eq!(p.answer(address(1), 42, ClaimResult::Granted), None);
    }

    proptest! {
        #[test]
        fn messages_round_trip(
            id: u64,
            release: bool,
            addr: u32,
            lease_secs: u32,
            owner in proptest::collection::vec(any::<u8>(), 1..=MAX_OWNER),
            result in 0u8..3,
        ) {
            let claim = Message::Claim {
                id,
                op: if release { Op::Release } else { Op::Claim },
                addr: Ipv4Addr::from(addr),
                lease_secs,
                owner,
            };
            prop_assert_eq!(Message::parse(&claim.to_bytes()), Ok(claim));
            let result = [ClaimResult::Granted, ClaimResult::Taken, ClaimResult::Failed][usize::from(result)];
            let answer = Message::Answer { id, result };
            prop_assert_eq!(Message::parse(&answer.to_bytes()), Ok(answer));
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Message::parse(&bytes);
        }
    }
}
