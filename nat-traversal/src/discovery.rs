//! Reflexive address discovery from several observers and NAT behaviour
//! classification (RFC 8489 §6.2.1 retransmissions, RFC 4787 §4
//! terminology, RFC 5780 §4.3–4.4 tests).
//!
//! One Binding request goes to each observer from the same socket. If all
//! observers report the same mapped address the mapping is
//! endpoint-independent (RFC 4787 §4.1); if they differ it depends on the
//! destination ("symmetric"). When an observer advertises `OTHER-ADDRESS`
//! and [`DiscoveryConfig::test_filtering`] is set, a `CHANGE-REQUEST`
//! asking for an answer from its other port tells whether the NAT lets in
//! packets from a port we never sent to (RFC 5780 §4.4, test III).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

use crate::error::Error;
use crate::wire::stun::{Attribute, Class, Repr, TransactionId};
use crate::{Socket, Transmit};

/// Discovery configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// STUN servers to ask; two or more on different addresses are needed
    /// to classify the mapping.
    pub observers: Vec<SocketAddr>,
    /// The local socket address, when known, to detect "no NAT".
    pub local: Option<SocketAddr>,
    /// First retransmission timeout (RFC 8489 §6.2.1 suggests 500 ms).
    pub initial_rto: Duration,
    /// Transmissions per request before giving up (RFC 8489 `Rc`, 7).
    pub max_transmits: u32,
    /// Whether to run the filtering test when an observer supports it.
    pub test_filtering: bool,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            observers: Vec::new(),
            local: None,
            initial_rto: Duration::from_millis(250),
            max_transmits: 5,
            test_filtering: true,
        }
    }
}

/// How the NAT maps one internal endpoint to external ones (RFC 4787 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MappingBehavior {
    /// Fewer than two observers answered.
    Unknown,
    /// The observed address is our local address: no NAT.
    NotTranslated,
    /// One external endpoint for all destinations ("cone").
    EndpointIndependent,
    /// A different external endpoint per destination ("symmetric").
    EndpointDependent,
}

/// Which inbound packets the NAT lets through (RFC 4787 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilteringBehavior {
    /// No observer supports the test, or it was disabled.
    NotTested,
    /// A packet from the observer's other port came in: filtering is
    /// address-dependent or endpoint-independent.
    PortIndependent,
    /// It did not: filtering is address-and-port-dependent.
    AddressAndPortDependent,
}

/// What one observer saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// The observer.
    pub observer: SocketAddr,
    /// Our address as it saw it, or `None` if it never answered.
    pub mapped: Option<SocketAddr>,
    /// Round-trip time of the answered transmission.
    pub rtt: Option<Duration>,
}

/// The outcome of a discovery run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatReport {
    /// One entry per observer, in configuration order.
    pub observations: Vec<Observation>,
    /// The reflexive address seen by the first observer that answered.
    pub reflexive: Option<SocketAddr>,
    /// Mapping classification.
    pub mapping: MappingBehavior,
    /// Filtering classification.
    pub filtering: FilteringBehavior,
    /// Requests sent, retransmissions included.
    pub requests_sent: u32,
    /// Time from start to completion.
    pub elapsed: Duration,
}

/// Events from [`Discovery`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiscoveryEvent {
    /// Every request was answered or gave up.
    Complete(NatReport),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Mapping(usize),
    Filtering,
}

#[derive(Debug)]
struct Transaction {
    id: TransactionId,
    purpose: Purpose,
    destination: SocketAddr,
    bytes_sent: u32,
    first_sent_at: Option<Instant>,
    last_sent_at: Option<Instant>,
    retransmit_at: Instant,
    rto: Duration,
    done: bool,
}

/// The discovery machine. Call order: [`Discovery::new`], then drain
/// [`Discovery::poll_transmit`]; feed answers to
/// [`Discovery::handle_input`] and call [`Discovery::handle_timeout`] at
/// [`Discovery::poll_timeout`]; read [`Discovery::poll_event`].
#[derive(Debug)]
pub struct Discovery {
    config: DiscoveryConfig,
    started_at: Instant,
    rng: ChaCha8Rng,
    transactions: Vec<Transaction>,
    observations: Vec<Observation>,
    filtering: FilteringBehavior,
    requests_sent: u32,
    transmits: VecDeque<Transmit>,
    events: VecDeque<DiscoveryEvent>,
    complete: bool,
}

impl Discovery {
    /// Start discovery at `now`; transaction ids come from the operating
    /// system's random source.
    ///
    /// # Panics
    /// If the operating system's random source fails (as `std`'s
    /// `HashMap::new` does).
    pub fn new(now: Instant, config: DiscoveryConfig) -> Result<Discovery, Error> {
        Discovery::with_rng(config, now, crate::os_rng())
    }

    /// [`Discovery::new`] with **predictable** randomness from `seed`, for tests and simulators only; production code uses
    /// [`Discovery::new`].
    pub fn new_with_insecure_seed(
        now: Instant,
        config: DiscoveryConfig,
        seed: u64,
    ) -> Result<Discovery, Error> {
        Discovery::with_rng(config, now, ChaCha8Rng::seed_from_u64(seed))
    }

    fn with_rng(
        config: DiscoveryConfig,
        now: Instant,
        rng: ChaCha8Rng,
    ) -> Result<Discovery, Error> {
        if config.observers.is_empty() {
            return Err(Error::InvalidConfig {
                what: "no observers",
            });
        }
        if config.max_transmits == 0 {
            return Err(Error::InvalidConfig {
                what: "max_transmits is zero",
            });
        }
        let mut d = Discovery {
            observations: config
                .observers
                .iter()
                .map(|&observer| Observation {
                    observer,
                    mapped: None,
                    rtt: None,
                })
                .collect(),
            started_at: now,
            rng,
            transactions: Vec::new(),
            filtering: FilteringBehavior::NotTested,
            requests_sent: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            complete: false,
            config,
        };
        for i in 0..d.config.observers.len() {
            let dest = d.config.observers[i];
            d.start(now, Purpose::Mapping(i), dest);
        }
        Ok(d)
    }

    fn start(&mut self, now: Instant, purpose: Purpose, destination: SocketAddr) {
        let mut id = [0; 12];
        self.rng.fill_bytes(&mut id);
        self.transactions.push(Transaction {
            id: TransactionId(id),
            purpose,
            destination,
            bytes_sent: 0,
            first_sent_at: None,
            last_sent_at: None,
            retransmit_at: now,
            rto: self.config.initial_rto,
            done: false,
        });
        self.handle_timeout(now);
    }

    fn send(&mut self, index: usize, now: Instant) {
        let t = &mut self.transactions[index];
        let mut req = Repr::binding_request(t.id);
        req.fingerprint = true;
        if t.purpose == Purpose::Filtering {
            req.attributes.push(Attribute::ChangeRequest {
                change_ip: false,
                change_port: true,
            });
        }
        t.bytes_sent += 1;
        t.first_sent_at.get_or_insert(now);
        t.last_sent_at = Some(now);
        t.retransmit_at = now + t.rto;
        t.rto *= 2;
        self.requests_sent += 1;
        if let Ok(payload) = req.to_bytes(&[]) {
            self.transmits.push_back(Transmit {
                source: Socket::Primary,
                destination: t.destination,
                payload,
                ttl: None,
            });
        }
    }

    /// Handle a datagram. Returns whether it answered one of our requests
    /// (so the caller can offer unclaimed datagrams to other machines).
    pub fn handle_input(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> bool {
        let Ok(resp) = Repr::parse_bytes(bytes) else {
            return false;
        };
        if !matches!(resp.class, Class::Success | Class::Error) {
            return false;
        }
        let Some(index) = self
            .transactions
            .iter()
            .position(|t| t.id == resp.transaction_id && !t.done)
        else {
            return false;
        };
        let t = &mut self.transactions[index];
        // Mapping answers must come from the observer itself; a filtering
        // answer comes, by design, from its other port.
        if t.purpose != Purpose::Filtering && from != t.destination {
            return false;
        }
        t.done = true;
        let rtt = t.last_sent_at.map(|s| now.saturating_duration_since(s));
        match t.purpose {
            Purpose::Mapping(i) => {
                if resp.class == Class::Success {
                    self.observations[i].mapped = resp.mapped_address();
                    self.observations[i].rtt = rtt;
                    let other = resp.attributes.iter().find_map(|a| match a {
                        Attribute::OtherAddress(o) => Some(*o),
                        _ => None,
                    });
                    let filtering_started = self
                        .transactions
                        .iter()
                        .any(|t| t.purpose == Purpose::Filtering);
                    if other.is_some() && self.config.test_filtering && !filtering_started {
                        self.start(now, Purpose::Filtering, from);
                    }
                }
            }
            Purpose::Filtering => {
                if resp.class == Class::Success {
                    self.filtering = FilteringBehavior::PortIndependent;
                }
            }
        }
        self.check_complete(now);
        true
    }

    /// Retransmit or give up requests whose timer expired.
    pub fn handle_timeout(&mut self, now: Instant) {
        for i in 0..self.transactions.len() {
            let t = &mut self.transactions[i];
            if t.done || t.retransmit_at > now {
                continue;
            }
            if t.bytes_sent >= self.config.max_transmits {
                t.done = true;
                if t.purpose == Purpose::Filtering {
                    self.filtering = FilteringBehavior::AddressAndPortDependent;
                }
            } else {
                self.send(i, now);
            }
        }
        self.check_complete(now);
    }

    fn check_complete(&mut self, now: Instant) {
        if self.complete || self.transactions.iter().any(|t| !t.done) {
            return;
        }
        self.complete = true;
        let report = NatReport {
            reflexive: self.observations.iter().find_map(|o| o.mapped),
            mapping: classify_mapping(&self.observations, self.config.local),
            filtering: self.filtering,
            observations: self.observations.clone(),
            requests_sent: self.requests_sent,
            elapsed: now.saturating_duration_since(self.started_at),
        };
        self.events.push_back(DiscoveryEvent::Complete(report));
    }

    /// Whether discovery has finished.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// When [`Discovery::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.transactions
            .iter()
            .filter(|t| !t.done)
            .map(|t| t.retransmit_at)
            .min()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<DiscoveryEvent> {
        self.events.pop_front()
    }
}

/// Classify the mapping from what observers saw (RFC 4787 §4.1).
pub fn classify_mapping(
    observations: &[Observation],
    local: Option<SocketAddr>,
) -> MappingBehavior {
    let mut mapped = observations.iter().filter_map(|o| o.mapped);
    let Some(first) = mapped.next() else {
        return MappingBehavior::Unknown;
    };
    if Some(first) == local {
        return MappingBehavior::NotTranslated;
    }
    let mut others = mapped.peekable();
    if others.peek().is_none() {
        return MappingBehavior::Unknown;
    }
    if others.all(|m| m == first) {
        MappingBehavior::EndpointIndependent
    } else {
        MappingBehavior::EndpointDependent
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::server::{Server, ServerConfig};

    const O1: &str = "203.0.113.1:3478";
    const O2: &str = "203.0.113.2:3478";

    fn observer(addr: &str, alternate: bool) -> Server {
        let primary: SocketAddr = addr.parse().unwrap();
        Server::new(ServerConfig {
            primary,
            alternate: alternate.then(|| SocketAddr::new(primary.ip(), primary.port() + 1)),
            software: None,
        })
    }

    /// Run discovery against observers through a NAT model: `map` gives
    /// our external address per destination; `filter_other_port` says
    /// whether answers from an unsolicited port get in.
    fn run(map: impl Fn(SocketAddr) -> SocketAddr, filter_other_port: bool) -> NatReport {
        let t0 = Instant::now();
        let mut now = t0;
        let mut servers = [observer(O1, true), observer(O2, false)];
        let mut d = Discovery::new_with_insecure_seed(
            now,
            DiscoveryConfig {
                observers: vec![O1.parse().unwrap(), O2.parse().unwrap()],
                local: Some("10.0.0.2:5000".parse().unwrap()),
                ..Default::default()
            },
            7,
        )
        .unwrap();
        for _ in 0..100 {
            while let Some(t) = d.poll_transmit() {
                let s = servers
                    .iter_mut()
                    .position(|s| s.config().primary == t.destination)
                    .unwrap();
                servers[s].handle_input(Socket::Primary, map(t.destination), &t.payload);
                while let Some(r) = servers[s].poll_transmit() {
                    let from = match r.source {
                        Socket::Primary => servers[s].config().primary,
                        Socket::Alternate => servers[s].config().alternate.unwrap(),
                        Socket::Extra(_) => unreachable!("servers answer from their own sockets"),
                    };
                    if r.source == Socket::Alternate && filter_other_port {
                        continue;
                    }
                    now += Duration::from_millis(10);
                    d.handle_input(now, from, &r.payload);
                }
            }
            if let Some(ev) = d.poll_event() {
                let DiscoveryEvent::Complete(report) = ev;
                return report;
            }
            now = d.poll_timeout().unwrap();
            d.handle_timeout(now);
        }
        panic!("discovery did not complete");
    }

    #[test]
    fn cone_nat_is_endpoint_independent() {
        let ext: SocketAddr = "198.51.100.1:5000".parse().unwrap();
        let report = run(|_| ext, false);
        assert_eq!(report.reflexive, Some(ext));
        assert_eq!(report.mapping, MappingBehavior::EndpointIndependent);
        assert_eq!(report.filtering, FilteringBehavior::PortIndependent);
        assert_eq!(report.requests_sent, 3);
    }

    #[test]
    fn symmetric_nat_is_endpoint_dependent_and_filtering_times_out() {
        let report = run(
            |dst| {
                SocketAddr::new(
                    "198.51.100.1".parse().unwrap(),
                    1000 + dst.port() % 7 + u16::from(dst.ip().to_string().ends_with('2')),
                )
            },
            true,
        );
        assert_eq!(report.mapping, MappingBehavior::EndpointDependent);
        assert_eq!(report.filtering, FilteringBehavior::AddressAndPortDependent);
        // 2 mapping requests + max_transmits filtering attempts.
        assert_eq!(report.requests_sent, 2 + 5);
    }

    #[test]
    fn unanswered_observer_retransmits_with_backoff_then_gives_up() {
        let t0 = Instant::now();
        let mut d = Discovery::new_with_insecure_seed(
            t0,
            DiscoveryConfig {
                observers: vec![O1.parse().unwrap()],
                ..Default::default()
            },
            1,
        )
        .unwrap();
        let mut sends = vec![];
        while !d.is_complete() {
            while d.poll_transmit().is_some() {
                sends.push(d.poll_timeout());
            }
            let at = d.poll_timeout().unwrap();
            d.handle_timeout(at);
        }
        let gaps: Vec<_> = sends
            .windows(2)
            .map(|w| w[1].unwrap() - w[0].unwrap())
            .collect();
        assert_eq!(gaps[0] * 2, gaps[1]);
        assert_eq!(sends.len(), 5);
        let DiscoveryEvent::Complete(report) = d.poll_event().unwrap();
        assert_eq!(report.mapping, MappingBehavior::Unknown);
        assert_eq!(report.reflexive, None);
    }

    #[test]
    fn forged_answer_from_wrong_source_is_ignored() {
        let t0 = Instant::now();
        let mut d = Discovery::new_with_insecure_seed(
            t0,
            DiscoveryConfig {
                observers: vec![O1.parse().unwrap()],
                ..Default::default()
            },
            1,
        )
        .unwrap();
        let req = d.poll_transmit().unwrap();
        let mut s = observer(O1, false);
        s.handle_input(
            Socket::Primary,
            "198.51.100.9:1".parse().unwrap(),
            &req.payload,
        );
        let resp = s.poll_transmit().unwrap();
        assert!(!d.handle_input(t0, "192.0.2.66:3478".parse().unwrap(), &resp.payload));
        assert!(d.handle_input(t0, O1.parse().unwrap(), &resp.payload));
        // The same answer again is a duplicate.
        assert!(!d.handle_input(t0, O1.parse().unwrap(), &resp.payload));
        assert!(d.is_complete());
    }

    #[test]
    fn classification_rules() {
        let o = |m: Option<&str>| Observation {
            observer: O1.parse().unwrap(),
            mapped: m.map(|m| m.parse().unwrap()),
            rtt: None,
        };
        let local = Some("10.0.0.1:1".parse().unwrap());
        assert_eq!(
            classify_mapping(&[o(Some("1.1.1.1:1"))], local),
            MappingBehavior::Unknown
        );
        assert_eq!(
            classify_mapping(&[o(Some("10.0.0.1:1")), o(None)], local),
            MappingBehavior::NotTranslated
        );
        assert_eq!(
            classify_mapping(
                &[o(Some("1.1.1.1:1")), o(None), o(Some("1.1.1.1:1"))],
                local
            ),
            MappingBehavior::EndpointIndependent
        );
        assert_eq!(
            classify_mapping(&[o(Some("1.1.1.1:1")), o(Some("1.1.1.1:2"))], local),
            MappingBehavior::EndpointDependent
        );
    }
}
