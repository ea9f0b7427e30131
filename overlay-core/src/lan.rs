//! Finding other nodes of one network on the local network, with no
//! bootstrap configured, and only nodes that hold the network's key
//! (cargo feature `lan`).
//!
//! Every node announces itself by UDP multicast to [`GROUP`]:[`PORT`] on
//! each of its IPv4 interfaces: its underlay endpoint, its ring address
//! and whether it is alone (no overlay link). A node that is alone joins
//! the ring through the first announcer it hears (between two lone nodes,
//! the one with the larger ring address joins the other, so that they do
//! not join each other at once); a node in a ring that hears a lone node
//! announces itself at once, so that newcomers join within a second. Lone
//! nodes announce every second, others every ten.
//!
//! # Authentication
//!
//! Announcements carry an HMAC-SHA256 under a [`NetworkKey`], derived
//! (HKDF-SHA256, RFC 5869) from the network's CA certificate
//! ([`NetworkKey::from_ca_certificate`]) or from a shared network secret
//! ([`NetworkKey::from_secret`]), each with a domain label and the
//! network's CIDR and DNS zone. An announcement without a valid tag is
//! dropped before any of its fields is used, so a neighbour without the
//! key cannot pull a lone node into its own ring. A replayed announcement
//! is dropped too: each carries the sender's wall-clock time and a nonce
//! (a counter from a random start); [`Discovery`] refuses one more than
//! [`REPLAY_WINDOW`] away from its own clock, one whose (ring address,
//! nonce) it has already accepted, and one whose sender IPv4 address is not
//! the datagram's source (a replay from elsewhere would make the victim
//! join the replayer).
//!
//! What the key is worth: a CA certificate is not secret (every member
//! holds a copy). A key derived from it keeps apart networks with different
//! CAs and neighbours who never obtained the certificate; against a
//! neighbour who has it, use a configured secret, and rely on the ring's
//! admission control (only certified nodes in a closed ring) for the rest.
//! Without either, a node should not run discovery at all.
//!
//! # Wire format
//!
//! All integers big-endian; [`ANNOUNCE_LEN`] (91) bytes:
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 8 | magic `WOWLAN02` |
//! | 8 | 8 | network tag: the first 8 bytes of HMAC-SHA256(key, `"wow-lan network tag"`) |
//! | 16 | 8 | sender's wall-clock time, seconds since the Unix epoch |
//! | 24 | 8 | nonce (per sender: a counter from a random start) |
//! | 32 | 4 | sender's IPv4 address (the datagram's source) |
//! | 36 | 2 | sender's underlay UDP port (not 0) |
//! | 38 | 20 | sender's ring address |
//! | 58 | 1 | flags: bit 0 = alone; other bits must be 0 |
//! | 59 | 32 | HMAC-SHA256(key, bytes 0..59) |
//!
//! The network tag lets a node skip other networks' announcements without
//! computing a MAC; it is not a secret.
//!
//! # Use
//!
//! [`Discovery`] is sans-IO: bytes, `Instant` and wall-clock time in,
//! announcements and [`LanEvent::Candidate`] (an endpoint to join the ring
//! through) out. The caller owns the multicast socket.
//!
//! ```
//! use std::time::{Instant, SystemTime};
//! use overlay_core::Address;
//! use overlay_core::lan::{Discovery, LanEvent, NetworkKey};
//!
//! let key = NetworkKey::from_secret(b"correct horse battery staple", "10.128.0.0/16", "wow.internal");
//! let (now, wall) = (Instant::now(), SystemTime::now());
//! let ip_a = "192.0.2.1".parse().unwrap();
//! let ip_b = "192.0.2.2".parse().unwrap();
//! let mut a = Discovery::new(now, key.clone(), Address::from_key(b"a"), 4000).unwrap();
//! let mut b = Discovery::new(now, key, Address::from_key(b"b"), 4000).unwrap();
//! let from_a = a.poll_announce(now, wall, true, &[ip_a]);
//! let from_b = b.poll_announce(now, wall, true, &[ip_b]);
//! a.handle_announce(now, wall, ip_b.into(), &from_b[0].1).unwrap();
//! b.handle_announce(now, wall, ip_a.into(), &from_a[0].1).unwrap();
//! // Two lone nodes: exactly one of them joins the other.
//! let a_joins = matches!(a.poll_event(), Some(LanEvent::Candidate(_)));
//! let b_joins = matches!(b.poll_event(), Some(LanEvent::Candidate(_)));
//! assert!(a_joins != b_joins);
//! ```

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use ring::hmac;

use crate::address::{ADDRESS_LEN, Address};

/// The multicast group (administratively scoped, RFC 2365).
pub const GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 77, 119);
/// The announcement port.
pub const PORT: u16 = 4099;
/// Bytes of an announcement.
pub const ANNOUNCE_LEN: usize = BODY_LEN + TAG_LEN;
/// Announcements whose time is further than this from the receiver's clock
/// (either way) are refused.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(30);

const MAGIC: &[u8; 8] = b"WOWLAN02";
const BODY_LEN: usize = 8 + 8 + 8 + 8 + 4 + 2 + ADDRESS_LEN + 1;
const TAG_LEN: usize = 32;
const SALT: &[u8] = b"wow-lan v2 key";
/// Between announcements while alone, and otherwise.
const ALONE_INTERVAL: Duration = Duration::from_secs(1);
const INTERVAL: Duration = Duration::from_secs(10);
/// A peer is joined through at most this often.
const JOIN_HOLDOFF: Duration = Duration::from_secs(5);
/// Peers remembered for the hold-off.
const MAX_PEERS: usize = 256;
/// Accepted (address, nonce) pairs remembered against replays.
const MAX_SEEN: usize = 4096;
/// Events queued and not yet polled.
const MAX_EVENTS: usize = 64;

/// Why an announcement was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AnnounceError {
    /// Wrong length or magic.
    #[error("not a wow LAN announcement")]
    NotAnnounce,
    /// Another network's (its network tag differs).
    #[error("announcement of another network")]
    OtherNetwork,
    /// The tag does not verify under this network's key.
    #[error("announcement not authenticated by this network's key")]
    BadMac,
    /// Port zero.
    #[error("announced port 0")]
    ZeroPort,
    /// Flag bits this version does not define (a later version changes
    /// the magic).
    #[error("unknown announcement flags {0:#04x}")]
    Flags(u8),
    /// The datagram's source is not the sender address it carries.
    #[error("announcement for {announced} arrived from {from}")]
    SourceMismatch {
        /// The address in the announcement.
        announced: Ipv4Addr,
        /// The datagram's source.
        from: IpAddr,
    },
    /// Its time is outside [`REPLAY_WINDOW`] of ours.
    #[error("announcement {skew_secs} s away from our clock")]
    Stale {
        /// Seconds between its time and ours (absolute).
        skew_secs: u64,
    },
    /// Its (ring address, nonce) was accepted before.
    #[error("replayed announcement")]
    Replayed,
    /// Too many recent announcements to remember; dropped rather than risk
    /// accepting a replay.
    #[error("replay cache full")]
    ReplayCacheFull,
}

/// Why discovery could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LanError {
    /// The operating system's random source failed.
    #[error("random source: {0}")]
    Random(getrandom::Error),
}

/// The key that authenticates one network's announcements. See the
/// [module docs](self).
#[derive(Clone)]
pub struct NetworkKey {
    key: hmac::Key,
    tag: [u8; 8],
}

impl std::fmt::Debug for NetworkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkKey")
            .field("tag", &self.tag)
            .finish_non_exhaustive()
    }
}

impl NetworkKey {
    /// The key of the network whose CA certificate (DER) is `ca_der`, with
    /// virtual network `cidr` and DNS zone `domain`.
    pub fn from_ca_certificate(ca_der: &[u8], cidr: &str, domain: &str) -> NetworkKey {
        NetworkKey::derive(b"ca-certificate", ca_der, cidr, domain)
    }

    /// The key of the network that shares `secret`, with virtual network
    /// `cidr` and DNS zone `domain`.
    pub fn from_secret(secret: &[u8], cidr: &str, domain: &str) -> NetworkKey {
        NetworkKey::derive(b"secret", secret, cidr, domain)
    }

    /// HKDF-SHA256 (RFC 5869) with one output block: extract with
    /// [`SALT`], expand with info `label \0 cidr \0 domain`.
    fn derive(label: &[u8], ikm: &[u8], cidr: &str, domain: &str) -> NetworkKey {
        let prk = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, SALT), ikm);
        let mut ctx = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, prk.as_ref()));
        for part in [
            label,
            b"\0",
            cidr.as_bytes(),
            b"\0",
            domain.as_bytes(),
            &[1],
        ] {
            ctx.update(part);
        }
        let okm = ctx.sign();
        let key = hmac::Key::new(hmac::HMAC_SHA256, okm.as_ref());
        let mut tag = [0u8; 8];
        tag.copy_from_slice(&hmac::sign(&key, b"wow-lan network tag").as_ref()[..8]);
        NetworkKey { key, tag }
    }

    /// The network tag (not secret; see the wire format).
    pub fn network_tag(&self) -> [u8; 8] {
        self.tag
    }
}

/// One node's announcement, authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announce {
    /// Sender's wall-clock time, seconds since the Unix epoch.
    pub unix_secs: u64,
    /// Per-sender nonce.
    pub nonce: u64,
    /// Sender's IPv4 address (the datagram's source).
    pub ip: Ipv4Addr,
    /// Its underlay UDP port.
    pub port: u16,
    /// Its ring address.
    pub address: Address,
    /// It has no overlay link.
    pub alone: bool,
}

impl Announce {
    /// Reads an announcement and checks its network tag and MAC under
    /// `key`. Never panics.
    pub fn open(key: &NetworkKey, bytes: &[u8]) -> Result<Announce, AnnounceError> {
        if bytes.len() != ANNOUNCE_LEN || bytes.get(..8) != Some(&MAGIC[..]) {
            return Err(AnnounceError::NotAnnounce);
        }
        let (body, mac) = bytes.split_at(BODY_LEN);
        if body[8..16] != key.tag {
            return Err(AnnounceError::OtherNetwork);
        }
        hmac::verify(&key.key, body, mac).map_err(|_| AnnounceError::BadMac)?;
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&body[i..i + 8]);
            u64::from_be_bytes(b)
        };
        let port = u16::from_be_bytes([body[36], body[37]]);
        if port == 0 {
            return Err(AnnounceError::ZeroPort);
        }
        let flags = body[58];
        if flags > 1 {
            return Err(AnnounceError::Flags(flags));
        }
        let mut ip = [0u8; 4];
        ip.copy_from_slice(&body[32..36]);
        let mut a = [0u8; ADDRESS_LEN];
        a.copy_from_slice(&body[38..38 + ADDRESS_LEN]);
        Ok(Announce {
            unix_secs: u64_at(16),
            nonce: u64_at(24),
            ip: Ipv4Addr::from(ip),
            port,
            address: Address::from_bytes(a),
            alone: flags == 1,
        })
    }

    /// The announcement's bytes, authenticated under `key`.
    pub fn seal(&self, key: &NetworkKey) -> [u8; ANNOUNCE_LEN] {
        let mut b = [0u8; ANNOUNCE_LEN];
        b[..8].copy_from_slice(MAGIC);
        b[8..16].copy_from_slice(&key.tag);
        b[16..24].copy_from_slice(&self.unix_secs.to_be_bytes());
        b[24..32].copy_from_slice(&self.nonce.to_be_bytes());
        b[32..36].copy_from_slice(&self.ip.octets());
        b[36..38].copy_from_slice(&self.port.to_be_bytes());
        b[38..38 + ADDRESS_LEN].copy_from_slice(&self.address.to_bytes());
        b[58] = u8::from(self.alone);
        let tag = hmac::sign(&key.key, &b[..BODY_LEN]);
        b[BODY_LEN..].copy_from_slice(tag.as_ref());
        b
    }
}

/// What [`Discovery`] tells its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LanEvent {
    /// Join the ring through this endpoint (an authenticated member of the
    /// network announced it, and this node is alone).
    Candidate(SocketAddr),
}

/// When to announce and whom to join through. See the [module docs](self).
#[derive(Debug)]
pub struct Discovery {
    key: NetworkKey,
    address: Address,
    port: u16,
    alone: bool,
    next_at: Instant,
    next_nonce: u64,
    joined_through: HashMap<SocketAddr, Instant>,
    /// Accepted (address, nonce) → when it may be forgotten.
    seen: HashMap<(Address, u64), Instant>,
    events: VecDeque<LanEvent>,
}

fn unix_secs(wall: SystemTime) -> u64 {
    wall.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Discovery {
    /// Discovery for the node at ring address `address` whose underlay
    /// socket has port `port`, authenticated by `key`; the first
    /// announcement is due at `now`. The nonce's start comes from the
    /// operating system.
    pub fn new(
        now: Instant,
        key: NetworkKey,
        address: Address,
        port: u16,
    ) -> Result<Discovery, LanError> {
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).map_err(LanError::Random)?;
        Ok(Discovery::new_with_insecure_seed(
            now,
            key,
            address,
            port,
            u64::from_be_bytes(seed),
        ))
    }

    /// [`Discovery::new`] with a **predictable** nonce start, for tests and
    /// simulators only.
    pub fn new_with_insecure_seed(
        now: Instant,
        key: NetworkKey,
        address: Address,
        port: u16,
        seed: u64,
    ) -> Discovery {
        Discovery {
            key,
            address,
            port,
            alone: true,
            next_at: now,
            next_nonce: seed,
            joined_through: HashMap::new(),
            seen: HashMap::new(),
            events: VecDeque::new(),
        }
    }

    /// Tells discovery whether this node has an overlay link (`alone`:
    /// none). A node that is alone announces more often and joins through
    /// the announcers it hears.
    pub fn set_alone(&mut self, alone: bool) {
        self.alone = alone;
    }

    /// When [`Discovery::poll_announce`] next has something to send.
    pub fn poll_timeout(&self) -> Instant {
        self.next_at
    }

    /// The announcements to multicast now, if due: one per local IPv4
    /// address in `sources` (send each from its address). `wall` is the
    /// wall-clock time; `alone` as in [`Discovery::set_alone`].
    pub fn poll_announce(
        &mut self,
        now: Instant,
        wall: SystemTime,
        alone: bool,
        sources: &[Ipv4Addr],
    ) -> Vec<(Ipv4Addr, [u8; ANNOUNCE_LEN])> {
        self.alone = alone;
        if now < self.next_at {
            return Vec::new();
        }
        self.next_at = now + if alone { ALONE_INTERVAL } else { INTERVAL };
        let unix_secs = unix_secs(wall);
        sources
            .iter()
            .map(|&ip| {
                let nonce = self.next_nonce;
                self.next_nonce = self.next_nonce.wrapping_add(1);
                let a = Announce {
                    unix_secs,
                    nonce,
                    ip,
                    port: self.port,
                    address: self.address,
                    alone,
                };
                (ip, a.seal(&self.key))
            })
            .collect()
    }

    /// A datagram that arrived from `from` on the announcement port, at
    /// `now` and wall-clock time `wall`. Queues a [`LanEvent::Candidate`] when this
    /// node is alone (see [`Discovery::set_alone`]) and should join
    /// through the sender. An error says why the datagram
    /// was dropped (for logs; nothing else changed).
    pub fn handle_announce(
        &mut self,
        now: Instant,
        wall: SystemTime,
        from: IpAddr,
        bytes: &[u8],
    ) -> Result<(), AnnounceError> {
        let a = Announce::open(&self.key, bytes)?;
        if from != IpAddr::V4(a.ip) {
            return Err(AnnounceError::SourceMismatch {
                announced: a.ip,
                from,
            });
        }
        let skew_secs = unix_secs(wall).abs_diff(a.unix_secs);
        if skew_secs > REPLAY_WINDOW.as_secs() {
            return Err(AnnounceError::Stale { skew_secs });
        }
        if a.address == self.address {
            return Ok(());
        }
        self.remember(now, a.address, a.nonce)?;
        if !self.alone {
            if a.alone {
                // A newcomer: tell it about us now rather than in ten seconds.
                self.next_at = self.next_at.min(now);
            }
            return Ok(());
        }
        // Two lone nodes: the larger address joins the smaller.
        if a.alone && self.address < a.address {
            return Ok(());
        }
        let endpoint = SocketAddr::new(from, a.port);
        if self
            .joined_through
            .get(&endpoint)
            .is_some_and(|t| now < *t + JOIN_HOLDOFF)
        {
            return Ok(());
        }
        if self.joined_through.len() >= MAX_PEERS {
            self.joined_through.retain(|_, t| now < *t + JOIN_HOLDOFF);
            if self.joined_through.len() >= MAX_PEERS {
                return Ok(());
            }
        }
        self.joined_through.insert(endpoint, now);
        if self.events.len() < MAX_EVENTS {
            self.events.push_back(LanEvent::Candidate(endpoint));
        }
        Ok(())
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<LanEvent> {
        self.events.pop_front()
    }

    /// Records an accepted (address, nonce); refuses one seen before.
    fn remember(
        &mut self,
        now: Instant,
        address: Address,
        nonce: u64,
    ) -> Result<(), AnnounceError> {
        if self.seen.get(&(address, nonce)).is_some_and(|t| now < *t) {
            return Err(AnnounceError::Replayed);
        }
        if self.seen.len() >= MAX_SEEN {
            self.seen.retain(|_, t| now < *t);
            if self.seen.len() >= MAX_SEEN {
                return Err(AnnounceError::ReplayCacheFull);
            }
        }
        // An announcement is acceptable while its time is within the window
        // of ours: at most twice the window after we first saw it.
        self.seen.insert((address, nonce), now + 2 * REPLAY_WINDOW);
        Ok(())
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn key() -> NetworkKey {
        NetworkKey::from_secret(b"s3cret", "10.128.0.0/16", "wow.internal")
    }

    #[test]
    fn keys_differ_by_source_label_network_and_zone() {
        let tags = [
            NetworkKey::from_secret(b"x", "10.128.0.0/16", "wow.internal").network_tag(),
            NetworkKey::from_ca_certificate(b"x", "10.128.0.0/16", "wow.internal").network_tag(),
            NetworkKey::from_secret(b"x", "10.129.0.0/16", "wow.internal").network_tag(),
            NetworkKey::from_secret(b"x", "10.128.0.0/16", "wow.other").network_tag(),
            NetworkKey::from_secret(b"y", "10.128.0.0/16", "wow.internal").network_tag(),
        ];
        for (i, a) in tags.iter().enumerate() {
            for b in &tags[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    /// Key derivation and format against an independent implementation
    /// (Python's `hmac`; the same bytes seed the fuzz corpus).
    #[test]
    fn known_answer() {
        let key = NetworkKey::from_secret(b"fuzz", "10.128.0.0/16", "wow.internal");
        let mut address = [0u8; ADDRESS_LEN];
        for (i, b) in address.iter_mut().enumerate() {
            *b = i as u8;
        }
        let a = Announce {
            unix_secs: 1_700_000_000,
            nonce: 42,
            ip: Ipv4Addr::new(192, 0, 2, 1),
            port: 4000,
            address: Address::from_bytes(address),
            alone: true,
        };
        let hex: String = a.seal(&key).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "574f574c414e3032171cb71ff5489736000000006553f100000000000000002ac00002010fa0\
             000102030405060708090a0b0c0d0e0f1011121301183e7f93275e7bf98cbcb218d35c46c2a6\
             2befa89613d877bb18d5911cbe0b95"
        );
    }

    #[test]
    fn bad_fields_under_a_good_mac_are_refused() {
        let k = key();
        let a = Announce {
            unix_secs: 1,
            nonce: 2,
            ip: Ipv4Addr::new(192, 0, 2, 1),
            port: 4000,
            address: Address::from_key(b"a"),
            alone: false,
        };
        let reseal = |f: &dyn Fn(&mut [u8])| {
            let mut b = a.seal(&k);
            f(&mut b);
            let tag = hmac::sign(&k.key, &b[..BODY_LEN]);
            b[BODY_LEN..].copy_from_slice(tag.as_ref());
            b
        };
        assert_eq!(
            Announce::open(&k, &reseal(&|b| b[58] = 0x2d)),
            Err(AnnounceError::Flags(0x2d))
        );
        assert_eq!(
            Announce::open(&k, &reseal(&|b| b[36..38].fill(0))),
            Err(AnnounceError::ZeroPort)
        );
        assert_eq!(
            Announce::open(&k, b"garbage"),
            Err(AnnounceError::NotAnnounce)
        );
        let mut other = a.seal(&k);
        other[8] ^= 1;
        assert_eq!(Announce::open(&k, &other), Err(AnnounceError::OtherNetwork));
    }

    #[test]
    fn a_ring_member_answers_a_newcomer_at_once() {
        let now = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let ip = Ipv4Addr::new(192, 0, 2, 1);
        let mut d =
            Discovery::new_with_insecure_seed(now, key(), Address::from_key(b"member"), 4000, 0);
        assert_eq!(d.poll_announce(now, wall, false, &[ip]).len(), 1);
        assert!(
            d.poll_announce(now + Duration::from_secs(1), wall, false, &[ip])
                .is_empty()
        );
        assert_eq!(d.poll_timeout(), now + INTERVAL);
        let newcomer = Announce {
            unix_secs: 1_000_000,
            nonce: 7,
            ip: Ipv4Addr::new(192, 0, 2, 3),
            port: 4000,
            address: Address::from_key(b"new"),
            alone: true,
        };
        let t = now + Duration::from_secs(2);
        d.handle_announce(t, wall, newcomer.ip.into(), &newcomer.seal(&key()))
            .unwrap();
        assert_eq!(d.poll_event(), None);
        assert_eq!(d.poll_timeout(), t);
        let sent = d.poll_announce(t, wall, false, &[ip]);
        let a = Announce::open(&key(), &sent[0].1).unwrap();
        assert!(!a.alone);
        assert_eq!(a.ip, ip);
        // Alone, it announces every second, each with a fresh nonce.
        let again = d.poll_announce(t + INTERVAL, wall, true, &[ip]);
        assert_eq!(
            Announce::open(&key(), &again[0].1).unwrap().nonce,
            a.nonce + 1
        );
        assert_eq!(d.poll_timeout(), t + INTERVAL + ALONE_INTERVAL);
    }

    #[test]
    fn lone_node_joins_once_per_holdoff_and_not_itself() {
        let now = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let me = Address::from_key(b"me");
        let mut d = Discovery::new_with_insecure_seed(now, key(), me, 4000, 0);
        let from = Ipv4Addr::new(192, 0, 2, 9);
        let ring = |nonce| Announce {
            unix_secs: 1_000_000,
            nonce,
            ip: from,
            port: 4000,
            address: Address::from_key(b"x"),
            alone: false,
        };
        let own = Announce {
            address: me,
            ..ring(0)
        };
        d.handle_announce(now, wall, from.into(), &own.seal(&key()))
            .unwrap();
        assert_eq!(d.poll_event(), None);
        d.handle_announce(now, wall, from.into(), &ring(1).seal(&key()))
            .unwrap();
        let endpoint = SocketAddr::new(from.into(), 4000);
        assert_eq!(d.poll_event(), Some(LanEvent::Candidate(endpoint)));
        // Held off for a while, then again.
        d.handle_announce(now, wall, from.into(), &ring(2).seal(&key()))
            .unwrap();
        assert_eq!(d.poll_event(), None);
        d.handle_announce(now + JOIN_HOLDOFF, wall, from.into(), &ring(3).seal(&key()))
            .unwrap();
        assert_eq!(d.poll_event(), Some(LanEvent::Candidate(endpoint)));
        // In a ring already: nobody to join.
        d.set_alone(false);
        d.handle_announce(
            now + 2 * JOIN_HOLDOFF,
            wall,
            from.into(),
            &ring(4).seal(&key()),
        )
        .unwrap();
        assert_eq!(d.poll_event(), None);
    }
}
