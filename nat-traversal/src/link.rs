//! The data path between two peers: authenticated, sequenced frames sent
//! directly or through a relay, with relay fallback and a relay → direct
//! upgrade that loses nothing in flight.
//!
//! Frames are [`SignalRepr::Data`](crate::wire::SignalRepr::Data) messages
//! tagged with HMAC-SHA256 under a key both peers derive from their offers
//! ([`session_key`]). The receiver accepts frames from either path at any
//! time and drops only replays (a sliding window of 128 sequence numbers,
//! as in RFC 4303 §3.4.3), so frames still travelling through the relay
//! when the sender switches to the direct path are delivered, and none
//! twice.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ring::hmac;

use crate::error::Error;
use crate::wire::signal::{Offer, Repr, TAG_LEN};

/// Where frames go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// Straight to the peer's address.
    Direct(SocketAddr),
    /// Through the relay (wrap in [`SignalRepr::Relay`](crate::wire::SignalRepr::Relay)).
    Relay,
}

/// Which kind of path a frame used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathKind {
    /// Peer to peer.
    Direct,
    /// Through a relay.
    Relay,
}

impl Route {
    /// The kind of path.
    pub fn kind(&self) -> PathKind {
        match self {
            Route::Direct(_) => PathKind::Direct,
            Route::Relay => PathKind::Relay,
        }
    }
}

/// A frame to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkTransmit {
    /// The route.
    pub route: Route,
    /// The encoded data frame.
    pub payload: Vec<u8>,
}

/// Events from [`Link`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkEvent {
    /// An authenticated, new frame arrived.
    Received {
        /// Its sequence number.
        sequence: u64,
        /// Its payload.
        payload: Vec<u8>,
        /// The path it came by.
        path: PathKind,
    },
    /// Outgoing frames now take `to`.
    PathChanged {
        /// The route before, if any.
        from: Option<Route>,
        /// The route now.
        to: Route,
    },
}

/// Counters of a link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkMetrics {
    /// Frames sent directly.
    pub sent_direct: u64,
    /// Frames sent through the relay.
    pub sent_relay: u64,
    /// Frames delivered that came directly.
    pub received_direct: u64,
    /// Frames delivered that came through the relay.
    pub received_relay: u64,
    /// Replays and frames too old for the window.
    pub duplicates: u64,
    /// Frames with a bad tag or malformed.
    pub rejected: u64,
    /// Time from link creation to the first delivered frame.
    pub time_to_first_packet: Option<Duration>,
}

const WINDOW: u64 = 128;

/// Derive the data key both peers compute from their two offers: HMAC-SHA256
/// keyed with the password of the peer whose name sorts first, over a label
/// and the other password.
pub fn session_key(a: &Offer, b: &Offer) -> [u8; 32] {
    let (first, second) = if a.from <= b.from { (a, b) } else { (b, a) };
    let key = hmac::Key::new(hmac::HMAC_SHA256, &first.password);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(b"wow nat-traversal data v1");
    ctx.update(&second.password);
    let mut out = [0; 32];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// One link's data path. Commands: [`Link::use_route`], [`Link::send`];
/// input: [`Link::handle_input`]; outputs: [`Link::poll_transmit`],
/// [`Link::poll_event`].
#[derive(Debug)]
pub struct Link {
    key: hmac::Key,
    route: Option<Route>,
    next_sequence: u64,
    highest: Option<u64>,
    window: u128,
    created_at: Instant,
    metrics: LinkMetrics,
    transmits: VecDeque<LinkTransmit>,
    events: VecDeque<LinkEvent>,
}

impl Link {
    /// A link keyed with `key` (see [`session_key`]), with no route yet.
    pub fn new(now: Instant, key: &[u8; 32]) -> Link {
        Link {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            route: None,
            next_sequence: 0,
            highest: None,
            window: 0,
            created_at: now,
            metrics: LinkMetrics::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The current route.
    pub fn route(&self) -> Option<Route> {
        self.route
    }

    /// Counters so far.
    pub fn metrics(&self) -> LinkMetrics {
        self.metrics
    }

    /// Send future frames by `route` (relay fallback, or upgrade to direct
    /// after a later punch succeeds). Frames already sent are not resent:
    /// the receiver accepts them from whichever path they arrive by.
    pub fn use_route(&mut self, route: Route) {
        if self.route != Some(route) {
            let from = self.route.replace(route);
            self.events
                .push_back(LinkEvent::PathChanged { from, to: route });
        }
    }

    fn tag(&self, sequence: u64, payload: &[u8]) -> [u8; TAG_LEN] {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(&sequence.to_be_bytes());
        ctx.update(payload);
        let mut tag = [0; TAG_LEN];
        tag.copy_from_slice(&ctx.sign().as_ref()[..TAG_LEN]);
        tag
    }

    /// Queue `payload` as the next frame on the current route.
    pub fn send(&mut self, payload: &[u8]) -> Result<u64, Error> {
        let route = self.route.ok_or(Error::NoPath)?;
        let sequence = self.next_sequence;
        let frame = Repr::Data {
            sequence,
            payload: payload.to_vec(),
            tag: self.tag(sequence, payload),
        };
        let bytes = frame.to_bytes()?;
        self.next_sequence += 1;
        match route {
            Route::Direct(_) => self.metrics.sent_direct += 1,
            Route::Relay => self.metrics.sent_relay += 1,
        }
        self.transmits.push_back(LinkTransmit {
            route,
            payload: bytes,
        });
        Ok(sequence)
    }

    /// Handle a data frame that arrived by `path`. Returns whether it was
    /// delivered (authentic and new).
    pub fn handle_input(&mut self, now: Instant, path: PathKind, bytes: &[u8]) -> bool {
        let Ok(Repr::Data {
            sequence,
            payload,
            tag,
        }) = Repr::parse_bytes(bytes)
        else {
            self.metrics.rejected += 1;
            return false;
        };
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(&sequence.to_be_bytes());
        ctx.update(&payload);
        let expected = ctx.sign();
        if !crate::constant_time_eq(&expected.as_ref()[..TAG_LEN], &tag) {
            self.metrics.rejected += 1;
            return false;
        }
        if !self.accept_sequence(sequence) {
            self.metrics.duplicates += 1;
            return false;
        }
        match path {
            PathKind::Direct => self.metrics.received_direct += 1,
            PathKind::Relay => self.metrics.received_relay += 1,
        }
        self.metrics
            .time_to_first_packet
            .get_or_insert(now.saturating_duration_since(self.created_at));
        self.events.push_back(LinkEvent::Received {
            sequence,
            payload,
            path,
        });
        true
    }

    /// Sliding replay window (RFC 4303 §3.4.3).
    fn accept_sequence(&mut self, sequence: u64) -> bool {
        let Some(highest) = self.highest else {
            self.highest = Some(sequence);
            self.window = 1;
            return true;
        };
        if sequence > highest {
            let shift = sequence - highest;
            self.window = if shift >= WINDOW {
                0
            } else {
                self.window << shift
            };
            self.window |= 1;
            self.highest = Some(sequence);
            return true;
        }
        let offset = highest - sequence;
        if offset >= WINDOW {
            return false;
        }
        let bit = 1u128 << offset;
        if self.window & bit != 0 {
            return false;
        }
        self.window |= bit;
        true
    }

    /// The next frame to send.
    pub fn poll_transmit(&mut self) -> Option<LinkTransmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<LinkEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn pair() -> (Link, Link, Instant) {
        let now = Instant::now();
        let key = [7u8; 32];
        (Link::new(now, &key), Link::new(now, &key), now)
    }

    #[test]
    fn upgrade_to_direct_loses_nothing_in_flight() {
        let (mut a, mut b, now) = pair();
        a.use_route(Route::Relay);
        // Relay is slow: frames 0..10 are still in flight after the switch.
        let mut relay_queue = vec![];
        for i in 0..10u8 {
            a.send(&[i]).unwrap();
            relay_queue.push(a.poll_transmit().unwrap());
        }
        a.use_route(Route::Direct("192.0.2.1:1".parse().unwrap()));
        for i in 10..20u8 {
            a.send(&[i]).unwrap();
            let t = a.poll_transmit().unwrap();
            assert_eq!(t.route.kind(), PathKind::Direct);
            assert!(b.handle_input(now, PathKind::Direct, &t.payload));
        }
        for t in &relay_queue {
            assert_eq!(t.route, Route::Relay);
            assert!(b.handle_input(now, PathKind::Relay, &t.payload));
        }
        // Replays over either path are dropped.
        assert!(!b.handle_input(now, PathKind::Direct, &relay_queue[3].payload));
        let mut got: Vec<u8> = std::iter::from_fn(|| b.poll_event())
            .filter_map(|e| match e {
                LinkEvent::Received { payload, .. } => Some(payload[0]),
                _ => None,
            })
            .collect();
        got.sort_unstable();
        assert_eq!(got, (0..20).collect::<Vec<_>>());
        let m = b.metrics();
        assert_eq!(
            (m.received_direct, m.received_relay, m.duplicates),
            (10, 10, 1)
        );
        assert!(matches!(
            a.poll_event(),
            Some(LinkEvent::PathChanged {
                from: None,
                to: Route::Relay
            })
        ));
    }

    #[test]
    fn forged_and_ancient_frames_are_rejected() {
        let (mut a, mut b, now) = pair();
        assert_eq!(a.send(b"x"), Err(Error::NoPath));
        a.use_route(Route::Relay);
        a.send(b"hello").unwrap();
        let mut frame = a.poll_transmit().unwrap().payload;
        let last = frame.len() - 1;
        frame[last] ^= 1;
        assert!(!b.handle_input(now, PathKind::Relay, &frame));
        let other = Link::new(now, &[8u8; 32]);
        let forged = Repr::Data {
            sequence: 5,
            payload: b"evil".to_vec(),
            tag: other.tag(5, b"evil"),
        };
        assert!(!b.handle_input(now, PathKind::Direct, &forged.to_bytes().unwrap()));
        assert_eq!(b.metrics().rejected, 2);
        // Jump ahead past the window: old sequence numbers are refused.
        let mut frames = vec![];
        for _ in 0..200 {
            a.send(b"y").unwrap();
            frames.push(a.poll_transmit().unwrap().payload);
        }
        assert!(b.handle_input(now, PathKind::Relay, &frames[199]));
        assert!(!b.handle_input(now, PathKind::Relay, &frames[10]));
        assert!(b.handle_input(now, PathKind::Relay, &frames[150]));
    }

    #[test]
    fn both_sides_derive_the_same_key() {
        let o = |from: &str, pw: &[u8]| Offer {
            from: from.into(),
            to: String::new(),
            ufrag: String::new(),
            password: pw.to_vec(),
            candidates: vec![],
        };
        let (a, b) = (o("a", b"1"), o("b", b"2"));
        assert_eq!(session_key(&a, &b), session_key(&b, &a));
        assert_ne!(session_key(&a, &b), session_key(&a, &o("b", b"3")));
    }

    proptest::proptest! {
        /// Frames reordered within the window, with duplicates, are each
        /// delivered exactly once, whatever path they take.
        #[test]
        fn reordered_duplicated_frames_deliver_once(
            order in proptest::collection::vec(0usize..100, 1..300),
        ) {
            let (mut a, mut b, now) = pair();
            a.use_route(Route::Relay);
            let frames: Vec<Vec<u8>> = (0..100u8)
                .map(|i| {
                    a.send(&[i]).unwrap();
                    a.poll_transmit().unwrap().payload
                })
                .collect();
            let mut delivered = std::collections::HashSet::new();
            for (n, &i) in order.iter().enumerate() {
                let path = if n % 2 == 0 { PathKind::Relay } else { PathKind::Direct };
                let fresh = b.handle_input(now, path, &frames[i]);
                proptest::prop_assert_eq!(fresh, delivered.insert(i));
            }
            proptest::prop_assert_eq!(
                b.metrics().duplicates,
                (order.len() - delivered.len()) as u64
            );
        }
    }
}
