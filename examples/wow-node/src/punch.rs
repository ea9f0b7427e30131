//! Authenticated hole punching between two nodes the overlay is linking,
//! with nat-traversal's [`PunchSession`] (ICE-like connectivity checks,
//! RFC 8445 §7).
//!
//! When the overlay links to a peer (or a peer asks us to punch), each node
//! sends the other, through the overlay, an [`Offer`]: a fresh username
//! fragment and password and its candidates (reflexive endpoint learned by
//! STUN, configured endpoints). Both then run a [`PunchSession`] on the
//! underlay socket: STUN Binding checks keyed with the peer's password,
//! which open both NATs and find a working path. The path found is handed
//! to overlay-core as a candidate for its pending link to the peer.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nat_traversal::Transmit;
use nat_traversal::punch::{PunchConfig, PunchEvent, PunchSession};
use nat_traversal::wire::{Candidate, CandidateKind, Offer};
use overlay_core::Address;

/// How long an exchange with one peer is kept before a new one may start.
const EXCHANGE_LIFETIME: Duration = Duration::from_secs(10);
/// Most exchanges in progress at once.
const MAX_EXCHANGES: usize = 64;

/// Counters of the punching machine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PunchStats {
    /// Sessions started.
    pub started: u64,
    /// Sessions that found a direct path.
    pub connected: u64,
    /// Sessions that gave up.
    pub failed: u64,
}

#[derive(Debug)]
struct Exchange {
    local: Offer,
    session: Option<PunchSession>,
    remote_ufrag: Option<String>,
    started_at: Instant,
}

/// Punch sessions by peer.
#[derive(Debug)]
pub struct Puncher {
    name: String,
    exchanges: HashMap<Address, Exchange>,
    connected: VecDeque<(Address, SocketAddr)>,
    failed: VecDeque<Address>,
    stats: PunchStats,
}

impl Puncher {
    /// A puncher for the node at ring address `me`. Credentials and the
    /// sessions' transaction ids come from the operating system's random
    /// source (offers travel through the overlay in clear).
    pub fn new(me: Address) -> Puncher {
        Puncher {
            name: me.to_string(),
            exchanges: HashMap::new(),
            connected: VecDeque::new(),
            failed: VecDeque::new(),
            stats: PunchStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> PunchStats {
        self.stats
    }

    fn expire(&mut self, now: Instant) {
        self.exchanges.retain(|_, e| {
            e.session.as_ref().is_some_and(|s| s.is_checking())
                || now < e.started_at + EXCHANGE_LIFETIME
        });
    }

    /// Our offer to `peer` for a new exchange, or `None` if one is already
    /// in progress (or too many are).
    pub fn start(
        &mut self,
        now: Instant,
        peer: Address,
        endpoints: &[SocketAddr],
    ) -> Option<Offer> {
        self.expire(now);
        if self.exchanges.contains_key(&peer) || self.exchanges.len() >= MAX_EXCHANGES {
            return None;
        }
        let offer = self.offer(peer, endpoints)?;
        self.exchanges.insert(
            peer,
            Exchange {
                local: offer.clone(),
                session: None,
                remote_ufrag: None,
                started_at: now,
            },
        );
        Some(offer)
    }

    fn offer(&mut self, peer: Address, endpoints: &[SocketAddr]) -> Option<Offer> {
        let candidates: Vec<Candidate> = endpoints
            .iter()
            .filter(|e| e.is_ipv4())
            .take(8)
            .enumerate()
            .map(|(i, e)| {
                let preference = 65535 - i as u16;
                Candidate::new(CandidateKind::ServerReflexive, *e, preference)
            })
            .collect();
        if candidates.is_empty() {
            return None;
        }
        Some(Offer::with_fresh_credentials(
            self.name.clone(),
            peer.to_string(),
            candidates,
        ))
    }

    /// The peer's offer arrived. Starts (or restarts, for a new offer) the
    /// session; returns our offer if the peer does not have it yet.
    pub fn handle_offer(
        &mut self,
        now: Instant,
        peer: Address,
        remote: &Offer,
        endpoints: &[SocketAddr],
    ) -> Option<Offer> {
        if remote.from != peer.to_string() || remote.to != self.name {
            return None;
        }
        self.expire(now);
        let mut answer = None;
        if !self.exchanges.contains_key(&peer) {
            answer = self.start(now, peer, endpoints);
        }
        let exchange = self.exchanges.get_mut(&peer)?;
        if exchange.remote_ufrag.as_deref() == Some(remote.ufrag.as_str()) {
            return answer;
        }
        match PunchSession::new(PunchConfig::default(), &exchange.local, remote, now) {
            Ok(session) => {
                tracing::debug!(%peer, candidates = ?remote.candidates.iter().map(|c| c.address).collect::<Vec<_>>(), "punch session");
                exchange.session = Some(session);
                exchange.remote_ufrag = Some(remote.ufrag.clone());
                self.stats.started += 1;
            }
            Err(e) => tracing::debug!(%peer, error = %e, "bad punch offer"),
        }
        answer
    }

    /// Offers a STUN datagram to the sessions; returns whether one took it.
    pub fn handle_input(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> bool {
        let mut taken = false;
        for exchange in self.exchanges.values_mut() {
            if let Some(s) = exchange.session.as_mut()
                && s.handle_input(now, from, bytes)
            {
                taken = true;
                break;
            }
        }
        self.collect();
        taken
    }

    /// Advances the sessions' timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        for exchange in self.exchanges.values_mut() {
            if let Some(s) = exchange.session.as_mut() {
                s.handle_timeout(now);
            }
        }
        self.collect();
        self.expire(now);
    }

    fn collect(&mut self) {
        for (peer, exchange) in self.exchanges.iter_mut() {
            let Some(s) = exchange.session.as_mut() else {
                continue;
            };
            while let Some(event) = s.poll_event() {
                match event {
                    PunchEvent::Connected(outcome) => {
                        tracing::debug!(%peer, remote = %outcome.remote, time = ?outcome.time_to_connect, "punched a direct path");
                        self.stats.connected += 1;
                        if self.connected.len() < MAX_EXCHANGES {
                            self.connected.push_back((*peer, outcome.remote));
                        }
                    }
                    PunchEvent::Failed(f) => {
                        tracing::debug!(%peer, failure = ?f, "punch failed");
                        self.stats.failed += 1;
                        if self.failed.len() < MAX_EXCHANGES {
                            self.failed.push_back(*peer);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// The next STUN datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.exchanges
            .values_mut()
            .find_map(|e| e.session.as_mut().and_then(|s| s.poll_transmit()))
    }

    /// The next path a session found: the peer and its working endpoint.
    pub fn poll_connected(&mut self) -> Option<(Address, SocketAddr)> {
        self.connected.pop_front()
    }

    /// The next peer no path could be punched to.
    pub fn poll_failed(&mut self) -> Option<Address> {
        self.failed.pop_front()
    }

    /// When [`Puncher::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.exchanges
            .values()
            .filter_map(|e| e.session.as_ref().and_then(|s| s.poll_timeout()))
            .min()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    /// Two punchers exchange offers as the overlay would carry them and find
    /// each other's endpoint over a lossless "network".
    #[test]
    fn two_punchers_connect() {
        let (a_addr, b_addr) = (Address::from_key(b"a"), Address::from_key(b"b"));
        let a_ep: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let b_ep: SocketAddr = "198.51.100.2:4000".parse().unwrap();
        let now = Instant::now();
        let mut a = Puncher::new(a_addr);
        let mut b = Puncher::new(b_addr);
        let offer_a = a.start(now, b_addr, &[a_ep]).unwrap();
        assert!(
            a.start(now, b_addr, &[a_ep]).is_none(),
            "one exchange per peer"
        );
        let offer_b = b.handle_offer(now, a_addr, &offer_a, &[b_ep]).unwrap();
        assert!(a.handle_offer(now, b_addr, &offer_b, &[a_ep]).is_none());
        for _ in 0..20 {
            while let Some(t) = a.poll_transmit() {
                assert_eq!(t.destination, b_ep);
                b.handle_input(now, a_ep, &t.payload);
            }
            while let Some(t) = b.poll_transmit() {
                assert_eq!(t.destination, a_ep);
                a.handle_input(now, b_ep, &t.payload);
            }
        }
        assert_eq!(a.poll_connected(), Some((b_addr, b_ep)));
        assert_eq!(b.poll_connected(), Some((a_addr, a_ep)));
        assert_eq!(a.stats().connected, 1);
    }

    /// An offer that names another node, or forged probes, change nothing.
    #[test]
    fn foreign_offers_and_probes_are_ignored() {
        let (a_addr, b_addr) = (Address::from_key(b"a"), Address::from_key(b"b"));
        let c_addr = Address::from_key(b"c");
        let now = Instant::now();
        let mut a = Puncher::new(a_addr);
        let mut c = Puncher::new(c_addr);
        let offer = c
            .start(now, b_addr, &["192.0.2.3:1".parse().unwrap()])
            .unwrap();
        assert!(
            a.handle_offer(now, c_addr, &offer, &["192.0.2.1:1".parse().unwrap()])
                .is_none()
        );
        assert_eq!(a.stats().started, 0);
        assert!(!a.handle_input(now, "192.0.2.3:1".parse().unwrap(), &[0u8; 40]));
        assert!(a.poll_transmit().is_none());
    }
}
