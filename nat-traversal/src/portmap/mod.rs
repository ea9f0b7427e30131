//! Port mapping: ask the router for a public UDP endpoint with PCP
//! (RFC 6887) or, failing that, NAT-PMP (RFC 6886).
//!
//! [`PortMapper`] is a sans-IO client: it sends a PCP MAP request to the
//! gateway, falls back to NAT-PMP when the gateway answers "unsupported
//! version" or stays silent, retransmits from 250 ms on with doubling
//! intervals (RFC 6886 §3.1), renews the mapping at half its lifetime and
//! deletes it (lifetime 0) on [`PortMapper::close`]. It believes only
//! datagrams from the gateway's address and port, and (PCP) only responses
//! that echo its 96-bit nonce, which comes from the operating system.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use nat_traversal::portmap::{PortMapConfig, PortMapEvent, PortMapper};
//! use nat_traversal::portmap::wire::{PcpOp, PcpRepr, PcpResponse, PcpResultCode};
//!
//! let now = Instant::now();
//! let config = PortMapConfig::new(
//!     "192.168.1.1".parse().unwrap(),
//!     "192.168.1.2".parse().unwrap(),
//!     4000,
//! );
//! let gateway = config.gateway;
//! let mut mapper = PortMapper::new(now, config).unwrap();
//! let request = mapper.poll_transmit().unwrap();
//! assert_eq!(request.destination, gateway);
//! // The gateway grants the mapping: it echoes the request's MAP body.
//! let PcpRepr::Request(req) = PcpRepr::parse_bytes(&request.payload).unwrap() else {
//!     unreachable!()
//! };
//! let PcpOp::Map(mut map) = req.op else { unreachable!() };
//! map.external_ip = "203.0.113.7".parse().unwrap();
//! map.external_port = 40000;
//! let reply = PcpRepr::Response(PcpResponse {
//!     result: PcpResultCode::SUCCESS,
//!     lifetime: 3600,
//!     epoch: 1,
//!     op: PcpOp::Map(map),
//!     options: vec![],
//! });
//! assert!(mapper.handle_datagram(now, gateway, &reply.to_bytes().unwrap()));
//! assert_eq!(
//!     mapper.poll_event(),
//!     Some(PortMapEvent::Mapped {
//!         external: "203.0.113.7:40000".parse().unwrap(),
//!         lifetime: Duration::from_secs(3600),
//!     })
//! );
//! ```

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

use crate::{Socket, Transmit};

pub mod wire;

use wire::{
    PROTO_UDP, PcpMap, PcpOp, PcpRepr, PcpRequest, PcpResultCode, PmpProtocol, PmpRepr,
    PmpResultCode, SERVER_PORT,
};

/// Port mapper configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapConfig {
    /// The gateway's PCP/NAT-PMP server (port 5351).
    pub gateway: SocketAddr,
    /// Our own address towards the gateway: PCP's client address field must
    /// equal the request's source address.
    pub client: IpAddr,
    /// The local UDP port to map.
    pub internal_port: u16,
    /// The external port to suggest (0: any).
    pub suggested_external_port: u16,
    /// Requested lifetime (RFC 6886 recommends 7200 s).
    pub lifetime: Duration,
    /// First retransmission interval; it doubles after each.
    pub initial_rto: Duration,
    /// Whether to try PCP first; `false` asks with NAT-PMP only.
    pub try_pcp: bool,
    /// PCP transmissions before falling back to NAT-PMP.
    pub pcp_max_transmits: u32,
    /// NAT-PMP transmissions per request before giving up (RFC 6886: 9).
    pub pmp_max_transmits: u32,
}

impl PortMapConfig {
    /// Defaults for mapping `internal_port` on `client` through `gateway`.
    pub fn new(gateway: IpAddr, client: IpAddr, internal_port: u16) -> PortMapConfig {
        PortMapConfig {
            gateway: SocketAddr::new(gateway, SERVER_PORT),
            client,
            internal_port,
            suggested_external_port: 0,
            lifetime: Duration::from_secs(7200),
            initial_rto: Duration::from_millis(250),
            try_pcp: true,
            pcp_max_transmits: 3,
            pmp_max_transmits: 9,
        }
    }
}

/// Caller misuse of [`PortMapper`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PortMapError {
    /// A configuration that cannot work.
    #[error("invalid port mapping configuration: {what}")]
    InvalidConfig {
        /// Which setting is wrong.
        what: &'static str,
    },
    /// The operating system's random source failed.
    #[error("the operating system's random source failed")]
    Random,
}

/// Which protocol a mapping was made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortMapProtocol {
    /// PCP (RFC 6887).
    Pcp,
    /// NAT-PMP (RFC 6886).
    NatPmp,
}

/// Events from [`PortMapper`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PortMapEvent {
    /// The gateway maps `external` to our internal port. Reported when the
    /// mapping is made and again when a renewal changes the endpoint.
    Mapped {
        /// The public endpoint to advertise.
        external: SocketAddr,
        /// The lifetime granted; the mapper renews at half of it.
        lifetime: Duration,
    },
    /// A mapping we had is gone: its renewal was refused or went
    /// unanswered until it expired. The mapper stops.
    Lost,
    /// The gateway speaks neither protocol, or refused the mapping. The
    /// mapper stops.
    Unavailable,
    /// [`PortMapper::close`] finished: the gateway confirmed the deletion or
    /// did not answer it.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Asking with PCP.
    Pcp,
    /// NAT-PMP: asking for the external address.
    PmpAddress,
    /// NAT-PMP: mapping the port.
    PmpMap { external_ip: Ipv4Addr },
    /// A mapping is held (a renewal may be in flight).
    Mapped {
        protocol: PortMapProtocol,
        external: SocketAddr,
        renew_at: Instant,
        expires_at: Instant,
    },
    /// The deletion is in flight.
    Closing { protocol: PortMapProtocol },
    /// Stopped.
    Done,
}

#[derive(Debug)]
struct Request {
    payload: Vec<u8>,
    transmits: u32,
    /// `None`: retransmit until the mapping expires (renewals).
    max_transmits: Option<u32>,
    retransmit_at: Instant,
    rto: Duration,
}

/// What a datagram from the gateway says about our request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    UnsupportedVersion,
    ExternalAddress(Ipv4Addr),
    Mapped { external: SocketAddr, lifetime: u32 },
    Refused,
}

/// A PCP/NAT-PMP client for one UDP port; see the [module docs](self).
#[derive(Debug)]
pub struct PortMapper {
    config: PortMapConfig,
    nonce: [u8; 12],
    phase: Phase,
    request: Option<Request>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<PortMapEvent>,
}

impl PortMapper {
    /// A mapper whose PCP nonce comes from the operating system. It starts
    /// asking at once: drain [`PortMapper::poll_transmit`].
    pub fn new(now: Instant, config: PortMapConfig) -> Result<PortMapper, PortMapError> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|_| PortMapError::Random)?;
        PortMapper::with_nonce(now, config, nonce)
    }

    /// A mapper whose nonce derives from `seed`: predictable, for tests and
    /// simulators only.
    pub fn new_with_insecure_seed(
        now: Instant,
        config: PortMapConfig,
        seed: u64,
    ) -> Result<PortMapper, PortMapError> {
        let mut nonce = [0u8; 12];
        ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut nonce);
        PortMapper::with_nonce(now, config, nonce)
    }

    fn with_nonce(
        now: Instant,
        config: PortMapConfig,
        nonce: [u8; 12],
    ) -> Result<PortMapper, PortMapError> {
        let invalid = |what| Err(PortMapError::InvalidConfig { what });
        if config.internal_port == 0 {
            return invalid("internal_port is 0");
        }
        if config.gateway.is_ipv4() != config.client.is_ipv4() {
            return invalid("gateway and client addresses of different families");
        }
        if config.lifetime.as_secs() == 0 || config.lifetime.as_secs() > u64::from(u32::MAX) {
            return invalid("lifetime out of range (1 s ..= u32::MAX s)");
        }
        if config.initial_rto.is_zero() || (config.try_pcp && config.pcp_max_transmits == 0) {
            return invalid("zero initial_rto or pcp_max_transmits");
        }
        let mut mapper = PortMapper {
            config,
            nonce,
            phase: Phase::Pcp,
            request: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        if mapper.config.try_pcp {
            let payload = mapper.pcp_map(mapper.lifetime_secs(), None);
            mapper.send(now, payload, Some(mapper.config.pcp_max_transmits));
        } else {
            mapper.fall_back(now);
        }
        Ok(mapper)
    }

    /// The protocol of the mapping held, if any.
    pub fn protocol(&self) -> Option<PortMapProtocol> {
        match self.phase {
            Phase::Mapped { protocol, .. } => Some(protocol),
            _ => None,
        }
    }

    /// The public endpoint held, if any.
    pub fn external(&self) -> Option<SocketAddr> {
        match self.phase {
            Phase::Mapped { external, .. } => Some(external),
            _ => None,
        }
    }

    /// Delete the mapping (a request with lifetime 0) and stop. A mapping
    /// still being asked for is deleted too, in case the gateway made it.
    /// [`PortMapEvent::Closed`] follows once the gateway confirms or the
    /// retransmissions run out.
    pub fn close(&mut self, now: Instant) {
        let protocol = match self.phase {
            Phase::Pcp => PortMapProtocol::Pcp,
            Phase::PmpMap { .. } => PortMapProtocol::NatPmp,
            Phase::Mapped { protocol, .. } => protocol,
            Phase::PmpAddress => {
                self.stop(PortMapEvent::Closed);
                return;
            }
            Phase::Closing { .. } | Phase::Done => return,
        };
        let payload = match protocol {
            PortMapProtocol::Pcp => self.pcp_map(0, None),
            PortMapProtocol::NatPmp => self.pmp_map(0, 0),
        };
        self.phase = Phase::Closing { protocol };
        let max = match protocol {
            PortMapProtocol::Pcp => self.config.pcp_max_transmits,
            PortMapProtocol::NatPmp => self.config.pmp_max_transmits,
        };
        self.send(now, payload, Some(max));
    }

    /// Feed a datagram received on the mapping socket. Returns whether it
    /// was a port-mapping datagram from the gateway (consumed), whatever its
    /// effect.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> bool {
        if from != self.config.gateway {
            return false;
        }
        let answer = match self.phase {
            Phase::Pcp
            | Phase::Closing {
                protocol: PortMapProtocol::Pcp,
            }
            | Phase::Mapped {
                protocol: PortMapProtocol::Pcp,
                ..
            } => self.pcp_answer(bytes),
            Phase::PmpAddress
            | Phase::PmpMap { .. }
            | Phase::Closing {
                protocol: PortMapProtocol::NatPmp,
            }
            | Phase::Mapped {
                protocol: PortMapProtocol::NatPmp,
                ..
            } => self.pmp_answer(bytes),
            Phase::Done => None,
        };
        let Some(answer) = answer else {
            return matches!(bytes.first(), Some(&0 | &2));
        };
        if self.request.is_none() {
            // Nothing asked: a stray or replayed answer.
            return true;
        }
        match (self.phase, answer) {
            (Phase::Pcp, Answer::UnsupportedVersion) => self.fall_back(now),
            // A late answer to an earlier request still grants a lifetime.
            (Phase::Closing { .. }, Answer::Mapped { lifetime, .. }) if lifetime > 0 => {}
            (Phase::Closing { .. }, _) => self.stop(PortMapEvent::Closed),
            (Phase::PmpAddress, Answer::ExternalAddress(external_ip)) => {
                self.phase = Phase::PmpMap { external_ip };
                let payload = self.pmp_map(self.lifetime_secs(), 0);
                self.send(now, payload, Some(self.config.pmp_max_transmits));
            }
            (Phase::Pcp | Phase::PmpMap { .. }, Answer::Mapped { external, lifetime }) => {
                let protocol = match self.phase {
                    Phase::Pcp => PortMapProtocol::Pcp,
                    _ => PortMapProtocol::NatPmp,
                };
                self.mapped(now, protocol, external, lifetime, true);
            }
            (
                Phase::Mapped {
                    protocol,
                    external: old,
                    ..
                },
                Answer::Mapped { external, lifetime },
            ) => self.mapped(now, protocol, external, lifetime, external != old),
            (Phase::Mapped { .. }, _) => self.stop(PortMapEvent::Lost),
            (Phase::Done, _) => {}
            _ => self.stop(PortMapEvent::Unavailable),
        }
        true
    }

    /// Retransmit, fall back, renew or expire as due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Phase::Mapped {
            renew_at,
            expires_at,
            protocol,
            external,
        } = self.phase
        {
            if now >= expires_at {
                self.stop(PortMapEvent::Lost);
                return;
            }
            if self.request.is_none() && now >= renew_at {
                let payload = match protocol {
                    PortMapProtocol::Pcp => self.pcp_map(self.lifetime_secs(), Some(external)),
                    PortMapProtocol::NatPmp => self.pmp_map(self.lifetime_secs(), external.port()),
                };
                self.send(now, payload, None);
                return;
            }
        }
        let Some(request) = &mut self.request else {
            return;
        };
        if now < request.retransmit_at {
            return;
        }
        if request
            .max_transmits
            .is_none_or(|max| request.transmits < max)
        {
            request.transmits += 1;
            request.rto = request.rto.saturating_mul(2);
            request.retransmit_at = now + request.rto;
            if let Phase::Mapped { expires_at, .. } = self.phase {
                request.retransmit_at = request.retransmit_at.min(expires_at);
            }
            let payload = request.payload.clone();
            self.push(payload);
            return;
        }
        match self.phase {
            Phase::Pcp => self.fall_back(now),
            Phase::Closing { .. } => self.stop(PortMapEvent::Closed),
            _ => self.stop(PortMapEvent::Unavailable),
        }
    }

    /// The next datagram to send (from the socket whose port is mapped).
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// When [`PortMapper::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let retransmit = self.request.as_ref().map(|r| r.retransmit_at);
        let mapped = match self.phase {
            Phase::Mapped {
                renew_at,
                expires_at,
                ..
            } => Some(if self.request.is_some() {
                expires_at
            } else {
                renew_at
            }),
            _ => None,
        };
        match (retransmit, mapped) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<PortMapEvent> {
        self.events.pop_front()
    }

    fn lifetime_secs(&self) -> u32 {
        u32::try_from(self.config.lifetime.as_secs()).unwrap_or(u32::MAX)
    }

    fn push(&mut self, payload: Vec<u8>) {
        self.transmits.push_back(Transmit {
            source: Socket::Primary,
            destination: self.config.gateway,
            payload,
            ttl: None,
        });
    }

    fn send(&mut self, now: Instant, payload: Vec<u8>, max_transmits: Option<u32>) {
        self.push(payload.clone());
        self.request = Some(Request {
            payload,
            transmits: 1,
            max_transmits,
            retransmit_at: now + self.config.initial_rto,
            rto: self.config.initial_rto,
        });
    }

    fn stop(&mut self, event: PortMapEvent) {
        self.phase = Phase::Done;
        self.request = None;
        self.events.push_back(event);
    }

    fn fall_back(&mut self, now: Instant) {
        if !self.config.gateway.is_ipv4() || self.config.pmp_max_transmits == 0 {
            self.stop(PortMapEvent::Unavailable);
            return;
        }
        self.phase = Phase::PmpAddress;
        self.send(
            now,
            PmpRepr::ExternalAddressRequest.to_bytes(),
            Some(self.config.pmp_max_transmits),
        );
    }

    fn mapped(
        &mut self,
        now: Instant,
        protocol: PortMapProtocol,
        external: SocketAddr,
        lifetime: u32,
        report: bool,
    ) {
        let lifetime = Duration::from_secs(u64::from(lifetime));
        self.request = None;
        self.phase = Phase::Mapped {
            protocol,
            external,
            renew_at: now + lifetime / 2,
            expires_at: now + lifetime,
        };
        if report {
            self.events
                .push_back(PortMapEvent::Mapped { external, lifetime });
        }
    }

    fn pcp_map(&self, lifetime: u32, suggested: Option<SocketAddr>) -> Vec<u8> {
        let unspecified = match self.config.client {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        };
        let (external_ip, external_port) = match suggested {
            Some(s) => (s.ip(), s.port()),
            None => (unspecified, self.config.suggested_external_port),
        };
        let request = PcpRepr::Request(PcpRequest {
            lifetime,
            client: self.config.client,
            op: PcpOp::Map(PcpMap {
                nonce: self.nonce,
                protocol: PROTO_UDP,
                internal_port: self.config.internal_port,
                external_port,
                external_ip,
            }),
            options: Vec::new(),
        });
        // A MAP request without options always encodes.
        request.to_bytes().unwrap_or_default()
    }

    fn pmp_map(&self, lifetime: u32, suggested_external_port: u16) -> Vec<u8> {
        let suggested_external_port = match suggested_external_port {
            0 => self.config.suggested_external_port,
            port => port,
        };
        PmpRepr::MapRequest {
            protocol: PmpProtocol::Udp,
            internal_port: self.config.internal_port,
            suggested_external_port,
            lifetime,
        }
        .to_bytes()
    }

    /// A PCP response to our MAP (nonce checked), or a NAT-PMP server's
    /// "unsupported version".
    fn pcp_answer(&self, bytes: &[u8]) -> Option<Answer> {
        if bytes.first() == Some(&wire::PMP_VERSION) {
            return match PmpRepr::parse_bytes(bytes).ok()?.result()? {
                PmpResultCode::UNSUPP_VERSION => Some(Answer::UnsupportedVersion),
                _ => None,
            };
        }
        let PcpRepr::Response(response) = PcpRepr::parse_bytes(bytes).ok()? else {
            return None;
        };
        if response.result == PcpResultCode::UNSUPP_VERSION {
            return Some(Answer::UnsupportedVersion);
        }
        let PcpOp::Map(map) = response.op else {
            return None;
        };
        if map.nonce != self.nonce
            || map.protocol != PROTO_UDP
            || map.internal_port != self.config.internal_port
        {
            return None;
        }
        if response.result != PcpResultCode::SUCCESS {
            return Some(Answer::Refused);
        }
        Some(Answer::Mapped {
            external: SocketAddr::new(map.external_ip, map.external_port),
            lifetime: response.lifetime,
        })
    }

    /// A NAT-PMP response to the request in flight.
    fn pmp_answer(&self, bytes: &[u8]) -> Option<Answer> {
        let repr = PmpRepr::parse_bytes(bytes).ok()?;
        let success = repr.result()? == PmpResultCode::SUCCESS;
        if self.phase == Phase::PmpAddress {
            return match repr {
                PmpRepr::ExternalAddressResponse { external, .. } if success => {
                    Some(Answer::ExternalAddress(external))
                }
                PmpRepr::ExternalAddressResponse { .. }
                | PmpRepr::ErrorResponse { opcode: 128, .. } => Some(Answer::Refused),
                _ => None,
            };
        }
        let external_ip = match self.phase {
            Phase::PmpMap { external_ip } => IpAddr::V4(external_ip),
            Phase::Mapped { external, .. } => external.ip(),
            _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        match repr {
            PmpRepr::MapResponse {
                protocol: PmpProtocol::Udp,
                internal_port,
                external_port,
                lifetime,
                ..
            } if internal_port == self.config.internal_port => Some(if success {
                Answer::Mapped {
                    external: SocketAddr::new(external_ip, external_port),
                    lifetime,
                }
            } else {
                Answer::Refused
            }),
            PmpRepr::ErrorResponse { opcode: 129, .. } => Some(Answer::Refused),
            _ => None,
        }
    }
}
