//! The proxy-ARP responder of the virtual gateway.

use std::collections::VecDeque;
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use smoltcp::wire::EthernetAddress;

use crate::error::{ConfigError, FrameError};
use crate::wire::{FRAME_LEN, Operation, Repr};

/// Events kept when the caller does not drain [`Responder::poll_event`];
/// further ones are counted in [`Stats::events_dropped`] and dropped, so a
/// guest flooding conflicting announcements cannot grow memory.
const EVENT_QUEUE_LIMIT: usize = 64;

/// The responder's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// The virtual network. Host bits are ignored (`10.0.0.7/24` means
    /// `10.0.0.0/24`).
    pub network: Ipv4Net,
    /// The gateway's virtual IPv4 address; a host address of `network`.
    pub gateway_addr: Ipv4Addr,
    /// The gateway's virtual MAC, the answer to every who-has the responder
    /// answers.
    pub gateway_hardware_addr: EthernetAddress,
    /// The guest's own address, once known (from DHCP or configuration). The
    /// responder never answers for it.
    pub guest_addr: Option<Ipv4Addr>,
}

impl Config {
    /// A configuration for `network` whose gateway is the first host address
    /// of the network (`10.0.0.1` in `10.0.0.0/24`) and whose guest address
    /// is not known yet.
    pub fn new(network: Ipv4Net, gateway_hardware_addr: EthernetAddress) -> Config {
        let network = network.trunc();
        Config {
            network,
            gateway_addr: HostRange::new(network).first_addr(),
            gateway_hardware_addr,
            guest_addr: None,
        }
    }
}

impl Default for Config {
    /// `10.254.0.0/16`, gateway `10.254.0.1` at `02:77:6f:77:00:01` (a locally
    /// administered address spelling "wow").
    fn default() -> Config {
        Config::new(
            Ipv4Net::new_assert(Ipv4Addr::new(10, 254, 0, 0), 16),
            EthernetAddress([0x02, 0x77, 0x6f, 0x77, 0x00, 0x01]),
        )
    }
}

/// Whether an address is held by a virtual host other than the guest behind
/// this TAP: the check behind conflict detection (RFC 5227).
///
/// Implemented for closures `Fn(Ipv4Addr) -> bool`. The gateway's own address
/// always counts as held; implementations need not report it.
pub trait OtherHosts {
    /// Whether a virtual host other than the guest holds `addr`.
    fn holds(&self, addr: Ipv4Addr) -> bool;
}

impl<F: Fn(Ipv4Addr) -> bool + ?Sized> OtherHosts for F {
    fn holds(&self, addr: Ipv4Addr) -> bool {
        self(addr)
    }
}

/// An [`OtherHosts`] for a network where only the gateway and the guest
/// exist.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoOtherHosts;

impl OtherHosts for NoOtherHosts {
    fn holds(&self, _addr: Ipv4Addr) -> bool {
        false
    }
}

/// One Ethernet frame to write to the TAP device: an ARP reply or
/// announcement, held in a fixed array (no allocation).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Transmit {
    bytes: [u8; FRAME_LEN],
    repr: Repr,
}

impl Transmit {
    #[inline]
    fn new(repr: &Repr) -> Transmit {
        Transmit {
            bytes: repr.to_bytes(),
            repr: *repr,
        }
    }

    /// The frame's bytes (42: Ethernet header and ARP, unpadded).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The frame, parsed.
    pub fn repr(&self) -> &Repr {
        &self.repr
    }
}

impl AsRef<[u8]> for Transmit {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for Transmit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Transmit({})", self.repr)
    }
}

/// What [`Responder::handle_frame`] made of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Write this reply to the TAP device.
    Reply(Transmit),
    /// Nothing to send, for this reason.
    Ignored(Ignored),
}

impl Outcome {
    /// The reply to send, if any.
    pub fn into_transmit(self) -> Option<Transmit> {
        match self {
            Outcome::Reply(transmit) => Some(transmit),
            Outcome::Ignored(_) => None,
        }
    }
}

/// Why a well-formed frame got no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Ignored {
    /// Not an ARP frame.
    NotArp {
        /// The frame's EtherType.
        ethertype: u16,
    },
    /// ARP for a hardware or protocol other than Ethernet and IPv4.
    NotEthernetIpv4 {
        /// `ar$hrd`.
        hardware_type: u16,
        /// `ar$pro`.
        protocol_type: u16,
    },
    /// An ARP operation other than request and reply.
    UnknownOperation {
        /// `ar$op`.
        operation: u16,
    },
    /// An ARP reply: the gateway asks nobody, so replies only feed conflict
    /// detection.
    Reply,
    /// Addressed (Ethernet destination) to neither broadcast nor the gateway.
    NotForGateway {
        /// The Ethernet destination.
        destination: EthernetAddress,
    },
    /// Sent with the gateway's own hardware address (looped back or spoofed).
    FromGateway,
    /// The target address is outside the virtual network.
    OutsideNetwork(Ipv4Addr),
    /// The target is the network's own or broadcast address, which no host
    /// holds.
    NotHostAddress(Ipv4Addr),
    /// The target is the guest's own address.
    GuestAddress(Ipv4Addr),
    /// An RFC 5227 probe or announcement of an address nobody else holds:
    /// silence lets the guest take it.
    Unclaimed(Ipv4Addr),
}

/// Something the caller may want to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Event {
    /// The guest claims an address the gateway or another virtual host holds.
    Conflict(Conflict),
}

/// An address conflict caused by the guest (RFC 5227 section 2.1.1 and 2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conflict {
    /// The contested address.
    pub addr: Ipv4Addr,
    /// The guest's hardware address (ARP sender hardware address).
    pub guest_hardware_addr: EthernetAddress,
    /// How the guest claimed it.
    pub kind: ConflictKind,
}

/// How the guest claimed an address it may not use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConflictKind {
    /// An ARP probe (sender address 0.0.0.0) for it (RFC 5227 section 2.1.1).
    /// The responder answers it, so the guest picks another address.
    Probe,
    /// An ARP announcement (sender and target address both it, RFC 5227
    /// section 3). A request is answered, defending the address (section 2.4).
    Announcement,
    /// Another ARP packet with it as sender address (RFC 5227 section 2.4).
    Sender,
}

/// Counters, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Replies produced by [`Responder::handle_frame`].
    pub replies: u64,
    /// Well-formed frames that got no reply.
    pub ignored: u64,
    /// Malformed frames (an `Err` from [`Responder::handle_frame`]).
    pub malformed: u64,
    /// Conflicts detected.
    pub conflicts: u64,
    /// Events dropped because the queue was full.
    pub events_dropped: u64,
    /// Gratuitous ARP announcements produced by [`Responder::poll_transmit`].
    pub announcements: u64,
}

/// The host addresses of a network as integers.
#[derive(Debug, Clone, Copy)]
struct HostRange {
    network: u32,
    mask: u32,
    first: u32,
    last: u32,
}

impl HostRange {
    fn new(network: Ipv4Net) -> HostRange {
        let base = u32::from(network.network());
        let mask = u32::from(network.netmask());
        let broadcast = base | !mask;
        let (first, last) = if network.prefix_len() >= 31 {
            // RFC 3021: both addresses of a /31 are hosts; a /32 is one host.
            (base, broadcast)
        } else {
            (base + 1, broadcast - 1)
        };
        HostRange {
            network: base,
            mask,
            first,
            last,
        }
    }

    fn first_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.first)
    }

    #[inline]
    fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & self.mask == self.network
    }

    #[inline]
    fn is_host(&self, addr: Ipv4Addr) -> bool {
        (self.first..=self.last).contains(&u32::from(addr))
    }
}

/// A proxy-ARP responder for the virtual gateway on one guest's TAP device.
///
/// It answers who-has requests for the gateway and for every other host
/// address of the virtual network except the guest's own with the gateway's
/// MAC, so the guest hands all virtual-network traffic to the TAP. It detects
/// guests claiming addresses other hosts hold, and announces the gateway.
///
/// # Driving it
/// - Inputs: [`handle_frame`](Responder::handle_frame) for every frame read
///   from the TAP device (non-ARP frames are cheaply ignored); commands
///   [`set_guest_addr`](Responder::set_guest_addr) and
///   [`announce_gateway`](Responder::announce_gateway).
/// - Outputs: the reply `handle_frame` returns; after `new` and
///   `announce_gateway`, the announcement from
///   [`poll_transmit`](Responder::poll_transmit); after `handle_frame`, the
///   events from [`poll_event`](Responder::poll_event).
///
/// ARP needs no timers, so there is no `poll_timeout`. `handle_frame` does
/// not allocate; only queueing a conflict event may.
#[derive(Debug, Clone)]
pub struct Responder {
    config: Config,
    hosts: HostRange,
    announce: bool,
    events: VecDeque<Event>,
    stats: Stats,
}

impl Responder {
    /// A responder for `config`, with a gratuitous ARP for the gateway queued
    /// for [`poll_transmit`](Responder::poll_transmit).
    pub fn new(config: Config) -> Result<Responder, ConfigError> {
        let mut config = config;
        config.network = config.network.trunc();
        let hosts = HostRange::new(config.network);
        if !hosts.is_host(config.gateway_addr) {
            return Err(ConfigError::GatewayOutsideNetwork {
                gateway: config.gateway_addr,
                network: config.network,
            });
        }
        let gateway_mac = config.gateway_hardware_addr;
        if !gateway_mac.is_unicast() || gateway_mac == EthernetAddress([0; 6]) {
            return Err(ConfigError::GatewayNotUnicast(config.gateway_hardware_addr));
        }
        let guest = config.guest_addr.take();
        let mut responder = Responder {
            config,
            hosts,
            announce: true,
            events: VecDeque::new(),
            stats: Stats::default(),
        };
        responder.set_guest_addr(guest)?;
        Ok(responder)
    }

    /// The configuration in use (with the current guest address).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The guest's address, if known.
    pub fn guest_addr(&self) -> Option<Ipv4Addr> {
        self.config.guest_addr
    }

    /// Counters since creation.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Set (or forget) the guest's own address, for example when DHCP binds
    /// it. The responder stops answering for it. On error nothing changes.
    pub fn set_guest_addr(&mut self, addr: Option<Ipv4Addr>) -> Result<(), ConfigError> {
        if let Some(guest) = addr {
            if !self.hosts.is_host(guest) {
                return Err(ConfigError::GuestOutsideNetwork {
                    guest,
                    network: self.config.network,
                });
            }
            if guest == self.config.gateway_addr {
                return Err(ConfigError::GuestIsGateway(guest));
            }
        }
        self.config.guest_addr = addr;
        Ok(())
    }

    /// Whether a who-has for `addr` gets the gateway's MAC: `addr` is a host
    /// address of the network and not the guest's.
    #[inline]
    pub fn answers_for(&self, addr: Ipv4Addr) -> bool {
        self.hosts.is_host(addr) && Some(addr) != self.config.guest_addr
    }

    /// Queue a gratuitous ARP for the gateway (for example after the guest's
    /// link came up, or after the gateway MAC may have been forgotten).
    pub fn announce_gateway(&mut self) {
        self.announce = true;
    }

    /// The next frame to send on the responder's own initiative: the gateway
    /// announcement queued by [`new`](Responder::new) or
    /// [`announce_gateway`](Responder::announce_gateway).
    ///
    /// The announcement is an ARP request with sender and target address the
    /// gateway's and a zero target hardware address, broadcast (RFC 5227
    /// section 3); Linux updates an existing neighbour entry from it.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if !std::mem::take(&mut self.announce) {
            return None;
        }
        self.stats.announcements += 1;
        let gateway = self.config.gateway_addr;
        Some(Transmit::new(&Repr {
            destination: EthernetAddress::BROADCAST,
            source: self.config.gateway_hardware_addr,
            operation: Operation::Request,
            sender_hardware_addr: self.config.gateway_hardware_addr,
            sender_protocol_addr: gateway,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: gateway,
        }))
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Handle one Ethernet frame the guest sent.
    ///
    /// Returns the reply to write back (at most one), or why there is none.
    /// `others` says which addresses other virtual hosts hold; it is asked
    /// only about addresses the guest claims (probes, announcements, and
    /// sender addresses other than the guest's known one). A conflict is
    /// queued as an [`Event`].
    ///
    /// | request (sender → target)                | answered                         |
    /// |------------------------------------------|----------------------------------|
    /// | who-has T, T a host address of the network other than the guest's | yes (proxy ARP) |
    /// | T outside the network, the network's own or broadcast address, or the guest's | no |
    /// | probe 0.0.0.0 → T (RFC 5227 section 2.1.1) | only if the gateway or another host holds T: conflict |
    /// | announcement T → T (RFC 5227 section 3)  | only if the gateway or another host holds T: conflict |
    /// | any reply                                | never; a held sender address is a conflict |
    ///
    /// Any other packet whose sender address the gateway or another host holds
    /// is a conflict too (RFC 5227 section 2.4). Only frames sent to broadcast
    /// or to the gateway MAC are considered.
    ///
    /// # Errors
    /// A malformed frame ([`FrameError::is_malformed`]) yields `Err` and
    /// changes nothing but [`Stats::malformed`].
    #[inline]
    pub fn handle_frame<H: OtherHosts + ?Sized>(
        &mut self,
        frame: &[u8],
        others: &H,
    ) -> Result<Outcome, FrameError> {
        let repr = match Repr::parse(frame) {
            Ok(repr) => repr,
            Err(error) => {
                let ignored = match error {
                    FrameError::NotArp { ethertype } => Ignored::NotArp { ethertype },
                    FrameError::NotEthernetIpv4 {
                        hardware_type,
                        protocol_type,
                    } => Ignored::NotEthernetIpv4 {
                        hardware_type,
                        protocol_type,
                    },
                    FrameError::UnknownOperation { operation } => {
                        Ignored::UnknownOperation { operation }
                    }
                    _ => {
                        self.stats.malformed += 1;
                        return Err(error);
                    }
                };
                return Ok(self.ignore(ignored));
            }
        };
        self.handle_repr(&repr, others)
    }

    /// Handle one already parsed ARP frame; see
    /// [`handle_frame`](Responder::handle_frame).
    #[inline]
    pub fn handle_repr<H: OtherHosts + ?Sized>(
        &mut self,
        repr: &Repr,
        others: &H,
    ) -> Result<Outcome, FrameError> {
        let guest_hardware_addr = repr.sender_hardware_addr;
        if !guest_hardware_addr.is_unicast() || guest_hardware_addr == EthernetAddress([0; 6]) {
            self.stats.malformed += 1;
            return Err(FrameError::SenderNotUnicast(guest_hardware_addr));
        }
        let gateway_hardware_addr = self.config.gateway_hardware_addr;
        if guest_hardware_addr == gateway_hardware_addr {
            return Ok(self.ignore(Ignored::FromGateway));
        }
        if !(repr.destination.is_broadcast() || repr.destination == gateway_hardware_addr) {
            return Ok(self.ignore(Ignored::NotForGateway {
                destination: repr.destination,
            }));
        }

        let sender = repr.sender_protocol_addr;
        let target = repr.target_protocol_addr;
        let request = repr.operation == Operation::Request;
        // RFC 5227 section 2.1.1: a probe has sender address 0.0.0.0 and
        // claims its target; anything else claims its sender address.
        let (claimed, kind) = if sender.is_unspecified() {
            if !request {
                return Ok(self.ignore(Ignored::Reply));
            }
            (target, ConflictKind::Probe)
        } else if sender == target {
            (sender, ConflictKind::Announcement)
        } else {
            (sender, ConflictKind::Sender)
        };
        let conflict = self.answers_for(claimed)
            && (claimed == self.config.gateway_addr || others.holds(claimed));
        if conflict {
            self.stats.conflicts += 1;
            self.push_event(Event::Conflict(Conflict {
                addr: claimed,
                guest_hardware_addr,
                kind,
            }));
        }

        if !request {
            return Ok(self.ignore(Ignored::Reply));
        }
        if !self.hosts.contains(target) {
            return Ok(self.ignore(Ignored::OutsideNetwork(target)));
        }
        if !self.hosts.is_host(target) {
            return Ok(self.ignore(Ignored::NotHostAddress(target)));
        }
        if Some(target) == self.config.guest_addr {
            return Ok(self.ignore(Ignored::GuestAddress(target)));
        }
        // A probe or announcement is answered only to refuse the address
        // (RFC 5227 sections 2.1.1 and 2.4); otherwise the guest may take it.
        if kind != ConflictKind::Sender && !conflict {
            return Ok(self.ignore(Ignored::Unclaimed(target)));
        }

        self.stats.replies += 1;
        Ok(Outcome::Reply(Transmit::new(&Repr {
            destination: guest_hardware_addr,
            source: gateway_hardware_addr,
            operation: Operation::Reply,
            sender_hardware_addr: gateway_hardware_addr,
            sender_protocol_addr: target,
            target_hardware_addr: guest_hardware_addr,
            target_protocol_addr: sender,
        })))
    }

    fn ignore(&mut self, reason: Ignored) -> Outcome {
        self.stats.ignored += 1;
        Outcome::Ignored(reason)
    }

    fn push_event(&mut self, event: Event) {
        if self.events.len() >= EVENT_QUEUE_LIMIT {
            self.stats.events_dropped += 1;
        } else {
            self.events.push_back(event);
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use proptest::prelude::*;

    const GATEWAY_MAC: EthernetAddress = EthernetAddress([0x02, 0x77, 0x6f, 0x77, 0, 1]);
    const GUEST_MAC: EthernetAddress = EthernetAddress([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 3, 7);

    fn config() -> Config {
        let mut config = Config::new("10.0.0.0/16".parse().unwrap(), GATEWAY_MAC);
        config.guest_addr = Some(GUEST);
        config
    }

    fn responder() -> Responder {
        let mut responder = Responder::new(config()).unwrap();
        assert!(responder.poll_transmit().is_some());
        responder
    }

    fn request(sender: Ipv4Addr, target: Ipv4Addr) -> Repr {
        Repr {
            destination: EthernetAddress::BROADCAST,
            source: GUEST_MAC,
            operation: Operation::Request,
            sender_hardware_addr: GUEST_MAC,
            sender_protocol_addr: sender,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: target,
        }
    }

    fn handle(responder: &mut Responder, repr: &Repr) -> Outcome {
        responder
            .handle_frame(&repr.to_bytes(), &|addr| addr == PEER)
            .unwrap()
    }

    fn reply_to(repr: &Repr, addr: Ipv4Addr) -> Repr {
        Repr {
            destination: repr.sender_hardware_addr,
            source: GATEWAY_MAC,
            operation: Operation::Reply,
            sender_hardware_addr: GATEWAY_MAC,
            sender_protocol_addr: addr,
            target_hardware_addr: repr.sender_hardware_addr,
            target_protocol_addr: repr.sender_protocol_addr,
        }
    }

    #[test]
    fn answers_for_gateway_and_other_addresses() {
        let mut responder = responder();
        for target in [
            GATEWAY,
            PEER,
            Ipv4Addr::new(10, 0, 0, 3),
            Ipv4Addr::new(10, 0, 255, 254),
        ] {
            let req = request(GUEST, target);
            let Outcome::Reply(reply) = handle(&mut responder, &req) else {
                panic!("no reply for {target}");
            };
            assert_eq!(*reply.repr(), reply_to(&req, target));
            assert_eq!(Repr::parse(reply.as_bytes()), Ok(reply_to(&req, target)));
        }
        assert_eq!(responder.stats().replies, 4);
        assert_eq!(responder.poll_event(), None);
    }

    #[test]
    fn answers_unicast_refresh_to_gateway_mac() {
        let mut responder = responder();
        let mut req = request(GUEST, PEER);
        req.destination = GATEWAY_MAC;
        req.target_hardware_addr = GATEWAY_MAC;
        assert!(matches!(handle(&mut responder, &req), Outcome::Reply(_)));
        req.destination = EthernetAddress([0x02, 0, 0, 0, 0, 9]);
        assert_eq!(
            handle(&mut responder, &req),
            Outcome::Ignored(Ignored::NotForGateway {
                destination: req.destination
            })
        );
    }

    #[test]
    fn ignores_guest_own_outside_and_non_host_addresses() {
        let mut responder = responder();
        let cases = [
            (GUEST, Ignored::GuestAddress(GUEST)),
            (
                Ipv4Addr::new(10, 1, 0, 1),
                Ignored::OutsideNetwork(Ipv4Addr::new(10, 1, 0, 1)),
            ),
            (
                Ipv4Addr::new(192, 168, 1, 1),
                Ignored::OutsideNetwork(Ipv4Addr::new(192, 168, 1, 1)),
            ),
            (
                Ipv4Addr::new(10, 0, 0, 0),
                Ignored::NotHostAddress(Ipv4Addr::new(10, 0, 0, 0)),
            ),
            (
                Ipv4Addr::new(10, 0, 255, 255),
                Ignored::NotHostAddress(Ipv4Addr::new(10, 0, 255, 255)),
            ),
        ];
        for (target, reason) in cases {
            assert_eq!(
                handle(&mut responder, &request(GUEST, target)),
                Outcome::Ignored(reason)
            );
        }
        assert_eq!(responder.stats().ignored, 5);
        assert_eq!(responder.stats().replies, 0);
    }

    #[test]
    fn guest_addr_learned_later() {
        let mut config = config();
        config.guest_addr = None;
        let mut responder = Responder::new(config).unwrap();
        assert!(responder.answers_for(GUEST));
        assert!(matches!(
            handle(&mut responder, &request(PEER, GUEST)),
            Outcome::Reply(_)
        ));
        responder.set_guest_addr(Some(GUEST)).unwrap();
        assert!(!responder.answers_for(GUEST));
        assert_eq!(
            handle(&mut responder, &request(PEER, GUEST)),
            Outcome::Ignored(Ignored::GuestAddress(GUEST))
        );
        responder.set_guest_addr(None).unwrap();
        assert!(responder.answers_for(GUEST));
    }

    #[test]
    fn ignores_replies_and_other_kinds() {
        let mut responder = responder();
        let mut reply = request(GUEST, GATEWAY);
        reply.operation = Operation::Reply;
        reply.destination = GATEWAY_MAC;
        reply.target_hardware_addr = GATEWAY_MAC;
        assert_eq!(
            handle(&mut responder, &reply),
            Outcome::Ignored(Ignored::Reply)
        );

        let mut bytes = request(GUEST, GATEWAY).to_bytes();
        bytes[14..16].copy_from_slice(&6u16.to_be_bytes());
        assert_eq!(
            responder.handle_frame(&bytes, &NoOtherHosts),
            Ok(Outcome::Ignored(Ignored::NotEthernetIpv4 {
                hardware_type: 6,
                protocol_type: 0x0800
            }))
        );
        let mut bytes = request(GUEST, GATEWAY).to_bytes();
        bytes[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
        assert_eq!(
            responder.handle_frame(&bytes, &NoOtherHosts),
            Ok(Outcome::Ignored(Ignored::NotArp { ethertype: 0x86dd }))
        );
        let mut bytes = request(GUEST, GATEWAY).to_bytes();
        bytes[21] = 8; // InARP request
        assert_eq!(
            responder.handle_frame(&bytes, &NoOtherHosts),
            Ok(Outcome::Ignored(Ignored::UnknownOperation { operation: 8 }))
        );

        let mut looped = request(GATEWAY, PEER);
        looped.sender_hardware_addr = GATEWAY_MAC;
        assert_eq!(
            handle(&mut responder, &looped),
            Outcome::Ignored(Ignored::FromGateway)
        );
        assert_eq!(responder.stats().replies, 0);
    }

    #[test]
    fn malformed_frames_are_errors_and_change_nothing() {
        let mut responder = responder();
        let bytes = request(GUEST, GATEWAY).to_bytes();
        assert!(matches!(
            responder.handle_frame(&bytes[..30], &NoOtherHosts),
            Err(FrameError::Truncated { .. })
        ));
        let mut req = request(GUEST, GATEWAY);
        req.sender_hardware_addr = EthernetAddress::BROADCAST;
        assert_eq!(
            responder.handle_frame(&req.to_bytes(), &NoOtherHosts),
            Err(FrameError::SenderNotUnicast(EthernetAddress::BROADCAST))
        );
        req.sender_hardware_addr = EthernetAddress([0; 6]);
        assert_eq!(
            responder.handle_frame(&req.to_bytes(), &NoOtherHosts),
            Err(FrameError::SenderNotUnicast(EthernetAddress([0; 6])))
        );
        let mut bytes = request(GUEST, GATEWAY).to_bytes();
        bytes[18] = 8;
        assert_eq!(
            responder.handle_frame(&bytes, &NoOtherHosts),
            Err(FrameError::AddressLength {
                hardware_len: 8,
                protocol_len: 4
            })
        );
        let stats = responder.stats();
        assert_eq!(stats.malformed, 4);
        assert_eq!((stats.replies, stats.ignored, stats.conflicts), (0, 0, 0));
        assert_eq!(responder.poll_event(), None);
        assert_eq!(responder.poll_transmit(), None);
    }

    #[test]
    fn probe_for_held_address_is_refused_and_reported() {
        for held in [PEER, GATEWAY] {
            let mut responder = responder();
            let probe = request(Ipv4Addr::UNSPECIFIED, held);
            let Outcome::Reply(reply) = handle(&mut responder, &probe) else {
                panic!("probe for {held} not refused");
            };
            // RFC 5227 section 2.1.1: the probe's sender address is 0.0.0.0.
            assert_eq!(reply.repr().target_protocol_addr, Ipv4Addr::UNSPECIFIED);
            assert_eq!(reply.repr().sender_protocol_addr, held);
            assert_eq!(
                responder.poll_event(),
                Some(Event::Conflict(Conflict {
                    addr: held,
                    guest_hardware_addr: GUEST_MAC,
                    kind: ConflictKind::Probe
                }))
            );
            assert_eq!(responder.poll_event(), None);
        }
    }

    #[test]
    fn probe_for_free_or_own_address_is_silent() {
        let mut responder = responder();
        let free = Ipv4Addr::new(10, 0, 9, 9);
        assert_eq!(
            handle(&mut responder, &request(Ipv4Addr::UNSPECIFIED, free)),
            Outcome::Ignored(Ignored::Unclaimed(free))
        );
        assert_eq!(
            handle(&mut responder, &request(Ipv4Addr::UNSPECIFIED, GUEST)),
            Outcome::Ignored(Ignored::GuestAddress(GUEST))
        );
        assert_eq!(responder.poll_event(), None);
        assert_eq!(responder.stats().conflicts, 0);
    }

    #[test]
    fn announcements() {
        let mut responder = responder();
        // Announcing its own or a free address is fine.
        for addr in [GUEST, Ipv4Addr::new(10, 0, 9, 9)] {
            assert!(matches!(
                handle(&mut responder, &request(addr, addr)),
                Outcome::Ignored(_)
            ));
        }
        assert_eq!(responder.poll_event(), None);
        // Announcing a held one is defended and reported, as a request...
        let announcement = request(PEER, PEER);
        assert_eq!(
            handle(&mut responder, &announcement),
            Outcome::Reply(Transmit::new(&reply_to(&announcement, PEER)))
        );
        // ...and as a gratuitous reply, which is not answered.
        let mut gratuitous = request(GATEWAY, GATEWAY);
        gratuitous.operation = Operation::Reply;
        assert_eq!(
            handle(&mut responder, &gratuitous),
            Outcome::Ignored(Ignored::Reply)
        );
        let kinds: Vec<_> = std::iter::from_fn(|| responder.poll_event()).collect();
        assert_eq!(
            kinds,
            [
                Event::Conflict(Conflict {
                    addr: PEER,
                    guest_hardware_addr: GUEST_MAC,
                    kind: ConflictKind::Announcement
                }),
                Event::Conflict(Conflict {
                    addr: GATEWAY,
                    guest_hardware_addr: GUEST_MAC,
                    kind: ConflictKind::Announcement
                }),
            ]
        );
    }

    #[test]
    fn request_from_held_sender_is_answered_and_reported() {
        let mut config = config();
        config.guest_addr = None;
        let mut responder = Responder::new(config).unwrap();
        let req = request(PEER, GATEWAY);
        assert_eq!(
            handle(&mut responder, &req),
            Outcome::Reply(Transmit::new(&reply_to(&req, GATEWAY)))
        );
        assert_eq!(
            responder.poll_event(),
            Some(Event::Conflict(Conflict {
                addr: PEER,
                guest_hardware_addr: GUEST_MAC,
                kind: ConflictKind::Sender
            }))
        );
    }

    #[test]
    fn others_consulted_only_for_claims() {
        let mut responder = responder();
        let asked = std::cell::Cell::new(0);
        let others = |_: Ipv4Addr| {
            asked.set(asked.get() + 1);
            false
        };
        let bytes = request(GUEST, PEER).to_bytes();
        responder.handle_frame(&bytes, &others).unwrap();
        assert_eq!(asked.get(), 0);
        let bytes = request(Ipv4Addr::UNSPECIFIED, PEER).to_bytes();
        responder.handle_frame(&bytes, &others).unwrap();
        assert_eq!(asked.get(), 1);
    }

    #[test]
    fn event_queue_is_bounded() {
        let mut responder = responder();
        let probe = request(Ipv4Addr::UNSPECIFIED, GATEWAY).to_bytes();
        for _ in 0..EVENT_QUEUE_LIMIT + 5 {
            responder.handle_frame(&probe, &NoOtherHosts).unwrap();
        }
        assert_eq!(responder.stats().conflicts, EVENT_QUEUE_LIMIT as u64 + 5);
        assert_eq!(responder.stats().events_dropped, 5);
        assert_eq!(
            std::iter::from_fn(|| responder.poll_event()).count(),
            EVENT_QUEUE_LIMIT
        );
    }

    #[test]
    fn gratuitous_arp_on_start_and_on_demand() {
        let mut responder = Responder::new(config()).unwrap();
        let expected = Repr {
            destination: EthernetAddress::BROADCAST,
            source: GATEWAY_MAC,
            operation: Operation::Request,
            sender_hardware_addr: GATEWAY_MAC,
            sender_protocol_addr: GATEWAY,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: GATEWAY,
        };
        assert_eq!(responder.poll_transmit().map(|t| *t.repr()), Some(expected));
        assert_eq!(responder.poll_transmit(), None);
        responder.announce_gateway();
        responder.announce_gateway();
        let transmit = responder.poll_transmit().unwrap();
        assert_eq!(Repr::parse(transmit.as_bytes()), Ok(expected));
        assert_eq!(responder.poll_transmit(), None);
        assert_eq!(responder.stats().announcements, 2);
    }

    #[test]
    fn config_validation() {
        let network: Ipv4Net = "10.0.0.0/24".parse().unwrap();
        let config = Config::new("10.0.0.77/24".parse().unwrap(), GATEWAY_MAC);
        assert_eq!(config.network, network);
        assert_eq!(config.gateway_addr, GATEWAY);

        let mut bad = config;
        bad.gateway_addr = Ipv4Addr::new(10, 0, 1, 1);
        assert_eq!(
            Responder::new(bad).unwrap_err(),
            ConfigError::GatewayOutsideNetwork {
                gateway: bad.gateway_addr,
                network
            }
        );
        bad.gateway_addr = Ipv4Addr::new(10, 0, 0, 255);
        assert!(Responder::new(bad).is_err());
        let mut bad = config;
        bad.gateway_hardware_addr = EthernetAddress([0x01, 0, 0x5e, 0, 0, 1]);
        assert_eq!(
            Responder::new(bad).unwrap_err(),
            ConfigError::GatewayNotUnicast(bad.gateway_hardware_addr)
        );
        bad.gateway_hardware_addr = EthernetAddress([0; 6]);
        assert!(Responder::new(bad).is_err());
        let mut bad = config;
        bad.guest_addr = Some(GATEWAY);
        assert_eq!(
            Responder::new(bad).unwrap_err(),
            ConfigError::GuestIsGateway(GATEWAY)
        );

        let mut responder = Responder::new(config).unwrap();
        responder.set_guest_addr(Some(GUEST)).unwrap();
        let outside = Ipv4Addr::new(10, 0, 1, 2);
        assert_eq!(
            responder.set_guest_addr(Some(outside)),
            Err(ConfigError::GuestOutsideNetwork {
                guest: outside,
                network
            })
        );
        assert_eq!(responder.guest_addr(), Some(GUEST));
    }

    #[test]
    fn tiny_networks() {
        // RFC 3021: both addresses of a /31 are hosts.
        let config = Config::new("10.0.0.0/31".parse().unwrap(), GATEWAY_MAC);
        assert_eq!(config.gateway_addr, Ipv4Addr::new(10, 0, 0, 0));
        let responder = Responder::new(config).unwrap();
        assert!(responder.answers_for(Ipv4Addr::new(10, 0, 0, 1)));
        assert!(!responder.answers_for(Ipv4Addr::new(10, 0, 0, 2)));
        let config = Config::new("10.0.0.9/32".parse().unwrap(), GATEWAY_MAC);
        let responder = Responder::new(config).unwrap();
        assert!(responder.answers_for(Ipv4Addr::new(10, 0, 0, 9)));
        assert!(Responder::new(Config::default()).is_ok());
    }

    /// A few addresses, so that sequences hit the same ones again: hosts of
    /// 10.0.0.0/16 (the gateway, the guest, a held one ending in .7), the
    /// network and broadcast addresses, and addresses outside.
    fn addr() -> impl Strategy<Value = Ipv4Addr> {
        prop_oneof![
            (0u8..10).prop_map(|host| Ipv4Addr::new(10, 0, 0, host)),
            Just(Ipv4Addr::new(10, 0, 255, 255)),
            Just(Ipv4Addr::new(10, 1, 0, 7)),
            Just(Ipv4Addr::new(192, 168, 0, 2)),
        ]
    }

    proptest! {
        /// Every reply is a well-formed frame that round-trips and answers
        /// exactly the request it was given.
        #[test]
        fn replies_round_trip(
            sender in any::<u32>().prop_map(Ipv4Addr::from),
            target in any::<u32>().prop_map(Ipv4Addr::from),
            mac in any::<[u8; 6]>().prop_map(|mut m| { m[0] = (m[0] & 0xfe) | 0x02; EthernetAddress(m) }),
            held in any::<bool>(),
        ) {
            let mut responder = responder();
            let mut req = request(sender, target);
            req.sender_hardware_addr = mac;
            match responder.handle_frame(&req.to_bytes(), &|_| held) {
                Ok(Outcome::Reply(reply)) => {
                    prop_assert_eq!(Repr::parse(reply.as_bytes()), Ok(*reply.repr()));
                    prop_assert_eq!(*reply.repr(), reply_to(&req, target));
                    prop_assert!(responder.answers_for(target));
                }
                Ok(Outcome::Ignored(_)) => {
                    let ordinary = !sender.is_unspecified() && sender != target;
                    prop_assert!(!(ordinary && responder.answers_for(target)) || mac == GATEWAY_MAC);
                }
                Err(error) => prop_assert!(false, "unexpected error {:?}", error),
            }
        }

        /// Announcements round-trip for any gateway in any network.
        #[test]
        fn announcements_round_trip(
            addr in any::<u32>().prop_map(Ipv4Addr::from),
            prefix in 0u8..=32,
            mac in any::<[u8; 6]>().prop_map(|mut m| { m[0] = (m[0] & 0xfe) | 0x02; EthernetAddress(m) }),
        ) {
            let network = Ipv4Net::new(addr, prefix).unwrap();
            let mut responder = Responder::new(Config::new(network, mac)).unwrap();
            let transmit = responder.poll_transmit().unwrap();
            prop_assert_eq!(Repr::parse(transmit.as_bytes()), Ok(*transmit.repr()));
            prop_assert_eq!(transmit.repr().sender_protocol_addr, responder.config().gateway_addr);
            prop_assert!(network.contains(&transmit.repr().sender_protocol_addr));
        }

        /// Random sequences of frames and commands keep the invariants: no
        /// answer for the guest's current address or outside the network,
        /// every frame counted once, one announcement per request for one.
        #[test]
        fn random_sequences(ops in proptest::collection::vec(
            prop_oneof![
                (0u32..4, addr(), addr()).prop_map(|(kind, target, other)| {
                    let sender = match kind {
                        0 => GUEST,
                        1 => target,
                        2 => Ipv4Addr::UNSPECIFIED,
                        _ => other,
                    };
                    (0u8, sender, target)
                }),
                addr().prop_map(|guest| (1u8, guest, Ipv4Addr::UNSPECIFIED)),
                Just((2u8, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED)),
                Just((3u8, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED)),
            ],
            0..64,
        )) {
            let mut responder = responder();
            let mut frames = 0;
            let mut announce = false;
            for (op, a, b) in ops {
                match op {
                    0 => {
                        frames += 1;
                        let outcome = responder.handle_frame(&request(a, b).to_bytes(), &|addr: Ipv4Addr| addr.octets()[3] == 7);
                        if !matches!(outcome, Ok(Outcome::Reply(_))) || !(a.is_unspecified() || a == b) {
                            // Only a refused claim is checked against its event below.
                            while responder.poll_event().is_some() {}
                        }
                        if let Ok(Outcome::Reply(reply)) = outcome {
                            let answered = reply.repr().sender_protocol_addr;
                            prop_assert_eq!(answered, b);
                            prop_assert!(Some(answered) != responder.guest_addr());
                            prop_assert!(responder.config().network.contains(&answered));
                            if a.is_unspecified() || a == b {
                                // Probes and announcements are answered only to refuse.
                                prop_assert!(b == GATEWAY || b.octets()[3] == 7);
                                let event = responder.poll_event();
                                prop_assert!(
                                    matches!(event, Some(Event::Conflict(c)) if c.addr == b),
                                    "{:?}", event
                                );
                            }
                        }
                    }
                    1 => {
                        let before = responder.guest_addr();
                        if responder.set_guest_addr(Some(a)).is_err() {
                            prop_assert_eq!(responder.guest_addr(), before);
                        } else {
                            prop_assert!(!responder.answers_for(a));
                        }
                    }
                    2 => {
                        responder.announce_gateway();
                        announce = true;
                    }
                    _ => prop_assert_eq!(responder.poll_transmit().is_some(), std::mem::take(&mut announce)),
                }
            }
            let stats = responder.stats();
            prop_assert_eq!(stats.replies + stats.ignored + stats.malformed, frames);
            prop_assert_eq!(stats.malformed, 0);
        }

        /// Arbitrary bytes never panic, and malformed ones change nothing.
        #[test]
        fn arbitrary_frames(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut responder = responder();
            if responder.handle_frame(&bytes, &NoOtherHosts).is_err() {
                prop_assert_eq!(responder.stats().replies + responder.stats().ignored, 0);
                prop_assert_eq!(responder.poll_event(), None);
            }
        }
    }
}
