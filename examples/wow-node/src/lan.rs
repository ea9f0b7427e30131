//! Finding other nodes on the local network, with no bootstrap configured.
//!
//! Every node announces itself by UDP multicast to [`GROUP`]:[`PORT`] on
//! each of its IPv4 interfaces: its network's identity (a digest of the
//! virtual network and the DNS zone, so that two WOW networks on one LAN
//! stay apart), its underlay port, its ring address and whether it is
//! alone (no overlay link). A node that is alone joins the ring through the
//! first announcer of its network it hears (between two lone nodes, the
//! one with the larger ring address joins the other, so that they do not
//! join each other at once); a node in a ring that hears a lone node
//! announces itself at once, so that newcomers join within a second.
//! Lone nodes announce every second, others every ten.
//!
//! [`Discovery`] is the sans-IO part (what to send when, what to do with
//! what arrives); the runtime owns the multicast socket.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use overlay_core::Address;
//! use wow_node::lan::{Announce, Discovery, network_id};
//!
//! let net = network_id("10.128.0.0/16", "wow.internal");
//! let now = Instant::now();
//! let mut a = Discovery::new(net, Address::from_key(b"a"), 4000, now);
//! let mut b = Discovery::new(net, Address::from_key(b"b"), 4000, now);
//! let from_a = a.poll_announce(now, true).unwrap();
//! let from_b = b.poll_announce(now, true).unwrap();
//! // Two lone nodes: exactly one of them joins the other.
//! let a_joins = a.handle_announce(now, "192.0.2.2".parse().unwrap(), &from_b, true);
//! let b_joins = b.handle_announce(now, "192.0.2.1".parse().unwrap(), &from_a, true);
//! assert!(a_joins.is_some() != b_joins.is_some());
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use overlay_core::Address;
use overlay_core::address::ADDRESS_LEN;
use ring::digest;

/// The multicast group (administratively scoped, RFC 2365).
pub const GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 77, 119);
/// The announcement port.
pub const PORT: u16 = 4099;
/// Bytes of an announcement.
pub const ANNOUNCE_LEN: usize = 8 + 8 + 2 + ADDRESS_LEN + 1;
const MAGIC: &[u8; 8] = b"WOWLAN01";
/// Between announcements while alone, and otherwise.
const ALONE_INTERVAL: Duration = Duration::from_secs(1);
const INTERVAL: Duration = Duration::from_secs(10);
/// A peer is joined through at most this often.
const JOIN_HOLDOFF: Duration = Duration::from_secs(5);
/// Peers remembered for the hold-off.
const MAX_PEERS: usize = 256;

/// Why bytes are not an announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AnnounceError {
    /// Wrong length or magic.
    #[error("not a wow LAN announcement")]
    NotAnnounce,
    /// Port zero.
    #[error("announced port 0")]
    ZeroPort,
    /// Flag bits this version does not define (a later version changes
    /// the magic).
    #[error("unknown announcement flags {0:#04x}")]
    Flags(u8),
}

/// The identity of a virtual network on the LAN: the first 8 bytes of
/// SHA-256 over its CIDR and DNS zone.
pub fn network_id(cidr: &str, domain: &str) -> [u8; 8] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"wow-lan\0");
    ctx.update(cidr.as_bytes());
    ctx.update(b"\0");
    ctx.update(domain.as_bytes());
    let d = ctx.finish();
    let mut id = [0u8; 8];
    id.copy_from_slice(&d.as_ref()[..8]);
    id
}

/// One node's announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announce {
    /// [`network_id`] of its network.
    pub network: [u8; 8],
    /// Its underlay UDP port (on the address the announcement came from).
    pub port: u16,
    /// Its ring address.
    pub address: Address,
    /// It has no overlay link.
    pub alone: bool,
}

impl Announce {
    /// Reads an announcement.
    pub fn parse(bytes: &[u8]) -> Result<Announce, AnnounceError> {
        if bytes.len() != ANNOUNCE_LEN || &bytes[..8] != MAGIC {
            return Err(AnnounceError::NotAnnounce);
        }
        let mut network = [0u8; 8];
        network.copy_from_slice(&bytes[8..16]);
        let port = u16::from_be_bytes([bytes[16], bytes[17]]);
        if port == 0 {
            return Err(AnnounceError::ZeroPort);
        }
        let flags = bytes[18 + ADDRESS_LEN];
        if flags > 1 {
            return Err(AnnounceError::Flags(flags));
        }
        let mut a = [0u8; ADDRESS_LEN];
        a.copy_from_slice(&bytes[18..18 + ADDRESS_LEN]);
        Ok(Announce {
            network,
            port,
            address: Address::from_bytes(a),
            alone: flags == 1,
        })
    }

    /// The announcement's bytes.
    pub fn to_bytes(&self) -> [u8; ANNOUNCE_LEN] {
        let mut b = [0u8; ANNOUNCE_LEN];
        b[..8].copy_from_slice(MAGIC);
        b[8..16].copy_from_slice(&self.network);
        b[16..18].copy_from_slice(&self.port.to_be_bytes());
        b[18..18 + ADDRESS_LEN].copy_from_slice(&self.address.to_bytes());
        b[18 + ADDRESS_LEN] = u8::from(self.alone);
        b
    }
}

/// When to announce and whom to join through. See the [module docs](self).
#[derive(Debug)]
pub struct Discovery {
    network: [u8; 8],
    address: Address,
    port: u16,
    next_at: Instant,
    joined_through: HashMap<SocketAddr, Instant>,
}

impl Discovery {
    /// Discovery for the node at ring address `address` whose underlay
    /// socket has port `port`; the first announcement is due at `now`.
    pub fn new(network: [u8; 8], address: Address, port: u16, now: Instant) -> Discovery {
        Discovery {
            network,
            address,
            port,
            next_at: now,
            joined_through: HashMap::new(),
        }
    }

    /// When [`Discovery::poll_announce`] next has something to send.
    pub fn poll_timeout(&self) -> Instant {
        self.next_at
    }

    /// The announcement to multicast now, if one is due; `alone`: the node
    /// has no overlay link.
    pub fn poll_announce(&mut self, now: Instant, alone: bool) -> Option<[u8; ANNOUNCE_LEN]> {
        if now < self.next_at {
            return None;
        }
        self.next_at = now + if alone { ALONE_INTERVAL } else { INTERVAL };
        Some(
            Announce {
                network: self.network,
                port: self.port,
                address: self.address,
                alone,
            }
            .to_bytes(),
        )
    }

    /// An announcement from `from`; returns the endpoint to join the ring
    /// through, if this node (`alone` or not) should.
    pub fn handle_announce(
        &mut self,
        now: Instant,
        from: IpAddr,
        bytes: &[u8],
        alone: bool,
    ) -> Option<SocketAddr> {
        let a = Announce::parse(bytes).ok()?;
        if a.network != self.network || a.address == self.address {
            return None;
        }
        if !alone {
            if a.alone {
                // A newcomer: tell it about us now rather than in ten seconds.
                self.next_at = self.next_at.min(now);
            }
            return None;
        }
        // Two lone nodes: the larger address joins the smaller.
        if a.alone && self.address < a.address {
            return None;
        }
        let endpoint = SocketAddr::new(from, a.port);
        if self
            .joined_through
            .get(&endpoint)
            .is_some_and(|t| now < *t + JOIN_HOLDOFF)
        {
            return None;
        }
        if self.joined_through.len() >= MAX_PEERS {
            self.joined_through.retain(|_, t| now < *t + JOIN_HOLDOFF);
        }
        self.joined_through.insert(endpoint, now);
        Some(endpoint)
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use proptest::prelude::*;

    fn net() -> [u8; 8] {
        network_id("10.128.0.0/16", "wow.internal")
    }

    proptest! {
        #[test]
        fn announcements_round_trip(
            network in any::<[u8; 8]>(),
            port in 1u16..,
            a in any::<[u8; ADDRESS_LEN]>(),
            alone in any::<bool>(),
        ) {
            let x = Announce { network, port, address: Address::from_bytes(a), alone };
            prop_assert_eq!(Announce::parse(&x.to_bytes()), Ok(x));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(a) = Announce::parse(&bytes) {
                prop_assert_eq!(&a.to_bytes()[..], &bytes[..]);
            }
        }
    }

    #[test]
    fn other_networks_and_ourselves_are_ignored() {
        let now = Instant::now();
        let me = Address::from_key(b"me");
        let mut d = Discovery::new(net(), me, 4000, now);
        let from: IpAddr = "192.0.2.9".parse().unwrap();
        let other_net = Announce {
            network: network_id("10.129.0.0/16", "wow.internal"),
            port: 4000,
            address: Address::from_key(b"x"),
            alone: false,
        };
        assert_eq!(
            d.handle_announce(now, from, &other_net.to_bytes(), true),
            None
        );
        let own = Announce {
            network: net(),
            port: 4000,
            address: me,
            alone: false,
        };
        assert_eq!(d.handle_announce(now, from, &own.to_bytes(), true), None);
        assert_eq!(d.handle_announce(now, from, b"garbage", true), None);
        let mut flagged = own.to_bytes();
        flagged[ANNOUNCE_LEN - 1] = 0x2d;
        assert_eq!(Announce::parse(&flagged), Err(AnnounceError::Flags(0x2d)));
        let ring = Announce {
            address: Address::from_key(b"x"),
            ..own
        };
        assert_eq!(
            d.handle_announce(now, from, &ring.to_bytes(), true),
            Some(SocketAddr::new(from, 4000))
        );
        // Held off for a while, then again.
        assert_eq!(d.handle_announce(now, from, &ring.to_bytes(), true), None);
        assert_eq!(
            d.handle_announce(now + JOIN_HOLDOFF, from, &ring.to_bytes(), true),
            Some(SocketAddr::new(from, 4000))
        );
        // In a ring already: nobody to join.
        assert_eq!(
            d.handle_announce(now + 2 * JOIN_HOLDOFF, from, &ring.to_bytes(), false),
            None
        );
    }

    #[test]
    fn a_ring_member_answers_a_newcomer_at_once() {
        let now = Instant::now();
        let mut d = Discovery::new(net(), Address::from_key(b"member"), 4000, now);
        assert!(d.poll_announce(now, false).is_some());
        assert!(
            d.poll_announce(now + Duration::from_secs(1), false)
                .is_none()
        );
        assert_eq!(d.poll_timeout(), now + INTERVAL);
        let newcomer = Announce {
            network: net(),
            port: 4000,
            address: Address::from_key(b"new"),
            alone: true,
        };
        let t = now + Duration::from_secs(2);
        assert_eq!(
            d.handle_announce(t, "192.0.2.3".parse().unwrap(), &newcomer.to_bytes(), false),
            None
        );
        assert_eq!(d.poll_timeout(), t);
        let sent = d.poll_announce(t, false).unwrap();
        assert!(!Announce::parse(&sent).unwrap().alone);
        // Alone, it announces every second.
        assert!(d.poll_announce(t + INTERVAL, true).is_some());
        assert_eq!(d.poll_timeout(), t + INTERVAL + ALONE_INTERVAL);
    }
}
