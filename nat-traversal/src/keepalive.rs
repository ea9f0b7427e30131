//! NAT binding keep-alives whose interval adapts to the binding lifetime
//! the NAT actually grants (RFC 4787 §4.3 requires at least two minutes for
//! UDP, but many NATs use 30 s; RFC 8445 §11 sends keep-alives at least
//! every 15 s by default).
//!
//! Each keep-alive is a Binding request to a target (an observer or the
//! peer); its answer carries our mapped address. The idle time before a
//! keep-alive whose mapped address is unchanged is a lifetime the binding is
//! proven to survive; a changed address means the binding expired within
//! that idle time. The interval grows by [`KeepAliveConfig::growth_percent`]
//! while nothing is known to fail, then bisects between the longest proven
//! and the shortest failed idle time, and settles one
//! [`KeepAliveConfig::resolution`] below the proven one.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

use crate::error::Error;
use crate::wire::stun::{Class, Repr, TransactionId};
use crate::{Socket, Transmit};

/// Keep-alive configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepAliveConfig {
    /// First interval.
    pub initial_interval: Duration,
    /// Never send less often than... (lower bound).
    pub min_interval: Duration,
    /// Upper bound of the interval.
    pub max_interval: Duration,
    /// Growth per proven interval, in percent (150 = ×1.5).
    pub growth_percent: u32,
    /// Bisection stops when proven and failed idle times are this close.
    pub resolution: Duration,
    /// Time to wait for an answer before retrying.
    pub response_timeout: Duration,
    /// Unanswered tries in a row before [`KeepAliveEvent::Unreachable`].
    pub max_missed: u32,
}

impl Default for KeepAliveConfig {
    fn default() -> Self {
        KeepAliveConfig {
            initial_interval: Duration::from_secs(15),
            min_interval: Duration::from_secs(5),
            max_interval: Duration::from_secs(300),
            growth_percent: 150,
            resolution: Duration::from_secs(2),
            response_timeout: Duration::from_secs(1),
            max_missed: 3,
        }
    }
}

/// Events from [`KeepAlive`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeepAliveEvent {
    /// First mapped address learned.
    Mapped(SocketAddr),
    /// The binding expired and the NAT made a new one; peers must learn
    /// the new address.
    MappingChanged {
        /// The address before.
        old: SocketAddr,
        /// The address now.
        new: SocketAddr,
    },
    /// The target stopped answering.
    Unreachable,
}

#[derive(Debug, Clone, Copy)]
struct Waiting {
    id: TransactionId,
    idle: Duration,
    timeout_at: Instant,
    tries: u32,
}

/// Adaptive keep-alive towards one target.
#[derive(Debug)]
pub struct KeepAlive {
    config: KeepAliveConfig,
    target: SocketAddr,
    interval: Duration,
    proven: Option<Duration>,
    failed: Option<Duration>,
    mapped: Option<SocketAddr>,
    last_sent_at: Instant,
    next_at: Instant,
    waiting: Option<Waiting>,
    rng: ChaCha8Rng,
    transmits: VecDeque<Transmit>,
    events: VecDeque<KeepAliveEvent>,
}

impl KeepAlive {
    /// Start at `now`: the first keep-alive goes out immediately to learn
    /// the mapping.
    /// Transaction ids come from the operating system's random source.
    ///
    /// # Panics
    /// If the operating system's random source fails (as `std`'s
    /// `HashMap::new` does).
    pub fn new(
        now: Instant,
        config: KeepAliveConfig,
        target: SocketAddr,
    ) -> Result<KeepAlive, Error> {
        KeepAlive::with_rng(config, target, now, crate::os_rng())
    }

    /// [`KeepAlive::new`] with **predictable** randomness from `seed`, for tests and simulators only; production code uses
    /// [`KeepAlive::new`].
    pub fn new_with_insecure_seed(
        now: Instant,
        config: KeepAliveConfig,
        target: SocketAddr,
        seed: u64,
    ) -> Result<KeepAlive, Error> {
        KeepAlive::with_rng(config, target, now, ChaCha8Rng::seed_from_u64(seed))
    }

    fn with_rng(
        config: KeepAliveConfig,
        target: SocketAddr,
        now: Instant,
        rng: ChaCha8Rng,
    ) -> Result<KeepAlive, Error> {
        if config.min_interval.is_zero() || config.min_interval > config.max_interval {
            return Err(Error::InvalidConfig {
                what: "keep-alive interval bounds",
            });
        }
        let mut k = KeepAlive {
            interval: config
                .initial_interval
                .clamp(config.min_interval, config.max_interval),
            config,
            target,
            proven: None,
            failed: None,
            mapped: None,
            last_sent_at: now,
            next_at: now,
            waiting: None,
            rng,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        k.handle_timeout(now);
        Ok(k)
    }

    /// The current interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The longest idle time the binding is known to survive.
    pub fn proven_lifetime(&self) -> Option<Duration> {
        self.proven
    }

    /// Our mapped address as last seen.
    pub fn mapped(&self) -> Option<SocketAddr> {
        self.mapped
    }

    /// Tell the machine other traffic to the target just refreshed the
    /// binding: the next keep-alive moves back.
    pub fn handle_outbound(&mut self, now: Instant) {
        if self.waiting.is_none() {
            self.last_sent_at = now;
            self.next_at = now + self.interval;
        }
    }

    fn send(&mut self, now: Instant, idle: Duration, tries: u32) {
        let mut id = [0; 12];
        self.rng.fill_bytes(&mut id);
        let mut req = Repr::binding_request(TransactionId(id));
        req.fingerprint = true;
        if let Ok(payload) = req.to_bytes(&[]) {
            self.transmits.push_back(Transmit {
                source: Socket::Primary,
                destination: self.target,
                payload,
                ttl: None,
            });
        }
        self.last_sent_at = now;
        self.waiting = Some(Waiting {
            id: TransactionId(id),
            idle,
            timeout_at: now + self.config.response_timeout,
            tries,
        });
    }

    /// Send due keep-alives and retries.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.waiting {
            Some(w) if now >= w.timeout_at => {
                if w.tries >= self.config.max_missed {
                    self.waiting = None;
                    self.events.push_back(KeepAliveEvent::Unreachable);
                    self.next_at = now + self.config.min_interval;
                } else {
                    // A retry follows a short idle time: it proves nothing.
                    self.send(now, Duration::ZERO, w.tries + 1);
                }
            }
            Some(_) => {}
            None if now >= self.next_at => {
                let idle = now.saturating_duration_since(self.last_sent_at);
                self.send(now, idle, 1);
            }
            None => {}
        }
    }

    /// Handle a datagram; returns whether it answered our keep-alive.
    pub fn handle_input(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> bool {
        let Some(w) = self.waiting else {
            return false;
        };
        let Ok(resp) = Repr::parse_bytes(bytes) else {
            return false;
        };
        if resp.class != Class::Success || resp.transaction_id != w.id || from != self.target {
            return false;
        }
        let Some(mapped) = resp.mapped_address() else {
            return false;
        };
        self.waiting = None;
        match self.mapped.replace(mapped) {
            None => self.events.push_back(KeepAliveEvent::Mapped(mapped)),
            Some(old) if old == mapped => {
                if w.idle > self.proven.unwrap_or_default() {
                    self.proven = Some(w.idle);
                }
            }
            Some(old) => {
                if !w.idle.is_zero() {
                    self.failed = Some(self.failed.map_or(w.idle, |f| f.min(w.idle)));
                    // Keep bounds consistent if the NAT shortened its timer.
                    if self.proven.is_some_and(|p| p >= w.idle) {
                        self.proven = None;
                    }
                }
                self.events
                    .push_back(KeepAliveEvent::MappingChanged { old, new: mapped });
            }
        }
        self.interval = self.next_interval();
        self.next_at = now + self.interval;
        true
    }

    fn next_interval(&self) -> Duration {
        let proven = self.proven.unwrap_or_default();
        let next = match self.failed {
            None => (proven.max(self.interval) * self.config.growth_percent) / 100,
            // Settled: stay one resolution step under the proven lifetime,
            // so scheduling jitter does not push an idle time past it.
            Some(failed) if failed.saturating_sub(proven) <= self.config.resolution => proven
                .saturating_sub(self.config.resolution)
                .max(failed / 2),
            Some(failed) if self.proven.is_none() => failed / 2,
            Some(failed) => (proven + failed) / 2,
        };
        next.clamp(self.config.min_interval, self.config.max_interval)
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// When [`KeepAlive::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(self.waiting.map_or(self.next_at, |w| w.timeout_at))
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<KeepAliveEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::server::{Server, ServerConfig};

    /// A NAT whose binding expires after `lifetime` idle; each new binding
    /// gets the next port.
    struct Nat {
        lifetime: Duration,
        port: u16,
        last_out: Option<Instant>,
    }

    impl Nat {
        fn outbound(&mut self, now: Instant) -> SocketAddr {
            if self.last_out.is_some_and(|t| now - t > self.lifetime) {
                self.port += 1;
            }
            self.last_out = Some(now);
            SocketAddr::new("198.51.100.1".parse().unwrap(), self.port)
        }
    }

    fn run(lifetime: Duration, rounds: usize) -> (KeepAlive, usize, Vec<Duration>) {
        let target: SocketAddr = "203.0.113.1:3478".parse().unwrap();
        let mut server = Server::new(ServerConfig {
            primary: target,
            alternate: None,
            software: None,
        });
        let mut nat = Nat {
            lifetime,
            port: 5000,
            last_out: None,
        };
        let t0 = Instant::now();
        let mut k =
            KeepAlive::new_with_insecure_seed(t0, KeepAliveConfig::default(), target, 3).unwrap();
        let mut changes = 0;
        let mut intervals = vec![];
        let mut now = t0;
        for _ in 0..rounds {
            while let Some(t) = k.poll_transmit() {
                server.handle_input(Socket::Primary, nat.outbound(now), &t.payload);
                let r = server.poll_transmit().unwrap();
                assert!(k.handle_input(now, target, &r.payload));
            }
            while let Some(e) = k.poll_event() {
                if matches!(e, KeepAliveEvent::MappingChanged { .. }) {
                    changes += 1;
                }
            }
            intervals.push(k.interval());
            now = k.poll_timeout().unwrap();
            k.handle_timeout(now);
        }
        (k, changes, intervals)
    }

    #[test]
    fn interval_converges_below_binding_lifetime() {
        let (k, changes, intervals) = run(Duration::from_secs(30), 40);
        let last = *intervals.last().unwrap();
        assert!(last <= Duration::from_secs(30), "{intervals:?}");
        assert!(last >= Duration::from_secs(26), "{intervals:?}");
        assert!(changes <= 4, "{changes} changes: {intervals:?}");
        // Once settled it stays put and the mapping stays.
        assert!(intervals[30..].iter().all(|i| *i == last), "{intervals:?}");
        assert!(k.proven_lifetime().unwrap() <= Duration::from_secs(30));
    }

    #[test]
    fn long_lived_binding_grows_to_the_maximum() {
        let (_, changes, intervals) = run(Duration::from_secs(3600), 20);
        assert_eq!(changes, 0);
        assert_eq!(*intervals.last().unwrap(), Duration::from_secs(300));
        assert!(intervals.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn silent_target_is_reported_unreachable() {
        let target: SocketAddr = "203.0.113.1:3478".parse().unwrap();
        let t0 = Instant::now();
        let mut k =
            KeepAlive::new_with_insecure_seed(t0, KeepAliveConfig::default(), target, 3).unwrap();
        let mut sent = 0;
        loop {
            sent += std::iter::from_fn(|| k.poll_transmit()).count();
            if let Some(e) = k.poll_event() {
                assert_eq!(e, KeepAliveEvent::Unreachable);
                break;
            }
            let at = k.poll_timeout().unwrap();
            k.handle_timeout(at);
        }
        assert_eq!(sent, 3);
    }
}
