//! The DHCPv4 server state machine (RFC 2131 §4.3).
//!
//! # Driving it
//!
//! * Inputs: [`Server::handle_message`] (a DHCP payload) or
//!   [`Server::handle_frame`] (an Ethernet frame from a TAP),
//!   [`Server::handle_timeout`], and in directory mode
//!   [`Server::handle_directory_completion`].
//! * Outputs, drained after every input: [`Server::poll_transmit`] (or
//!   [`Server::poll_frame`]), [`Server::poll_event`],
//!   [`Server::poll_directory_request`], and [`Server::poll_timeout`] for
//!   the next deadline.
//!
//! The server reads no clock: every input carries `now`. Wall time enters
//! once, in [`Server::new`], to map lease expiry to the Unix seconds the
//! store keeps.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use dhcproto::Name;
use ipnet::Ipv4Net;

use crate::directory::{
    ClaimKind, ClaimResult, DirectoryCompletion, DirectoryOp, DirectoryRequest, RequestId,
};
use crate::error::{ConfigError, FrameError, Refusal, StartError};
use crate::lease::{ClientKey, Lease, LeaseState, LeaseStore};
use crate::pool::Pool;
#[cfg(feature = "frames")]
use crate::wire;
use crate::wire::{
    CLIENT_PORT, ClientFqdn, ClientMessage, ClientMessageKind, HardwareAddr, LeaseTimes, Reply,
    ReplyKind, SERVER_PORT,
};

/// Where addresses come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Allocation {
    /// This server alone owns its pool (central).
    Local,
    /// Every new binding is first claimed in a shared directory (an overlay
    /// DHT), and every renewal re-claims it; a re-claim answered
    /// [`ClaimResult::Taken`] gives the address up ([`Event::ClaimLost`]).
    /// See [`crate::directory`].
    Directory {
        /// How long to wait for the directory before giving up on a claim
        /// (the client retransmits and the server tries again).
        claim_timeout: Duration,
        /// Addresses tried per DISCOVER before refusing with
        /// [`Refusal::PoolExhausted`].
        max_attempts: u32,
    },
}

/// Server configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The virtual network.
    pub network: Ipv4Net,
    /// Server identifier (option 54) and source of framed replies; usually
    /// the virtual gateway.
    pub server_addr: Ipv4Addr,
    /// Source MAC of framed replies.
    pub server_mac: [u8; 6],
    /// Dynamic pool and reservations. An empty pool means every host
    /// address of `network`.
    pub pool: Pool,
    /// Routers (option 3).
    pub routers: Vec<Ipv4Addr>,
    /// DNS servers (option 6).
    pub dns_servers: Vec<Ipv4Addr>,
    /// Domain name (option 15).
    pub domain_name: Option<String>,
    /// Domain search list (option 119, RFC 3397).
    pub domain_search: Vec<String>,
    /// Interface MTU (option 26): the overlay's MTU.
    pub interface_mtu: Option<u16>,
    /// Classless static routes (option 121, RFC 3442); when sent, a default
    /// route via the first router is appended, since clients then ignore
    /// option 3.
    pub classless_routes: Vec<(Ipv4Net, Ipv4Addr)>,
    /// Lease time (option 51).
    pub lease_duration: Duration,
    /// How long an offered address is held for the client.
    pub offer_timeout: Duration,
    /// How long a DECLINEd address stays out of the pool (RFC 2131 §4.3.3),
    /// and how long a directory conflict is remembered.
    pub decline_duration: Duration,
    /// NAK requests for addresses we do not know, instead of staying
    /// silent (RFC 2131 §4.3.2, INIT-REBOOT). With `true`, a request for a
    /// free pool address is granted, so a client keeps its address across
    /// a server restart without state.
    pub authoritative: bool,
    /// Central or decentralised allocation.
    pub allocation: Allocation,
}

impl Config {
    /// A configuration serving `network` from `server_addr` (also router and
    /// DNS server), one-hour leases, every other host address in the pool.
    pub fn new(network: Ipv4Net, server_addr: Ipv4Addr) -> Self {
        Config {
            network,
            server_addr,
            server_mac: [0x02, 0x00, 0x5e, 0x00, 0x00, 0x01],
            pool: Pool::default(),
            routers: vec![server_addr],
            dns_servers: vec![server_addr],
            domain_name: None,
            domain_search: Vec::new(),
            interface_mtu: None,
            classless_routes: Vec::new(),
            lease_duration: Duration::from_secs(3600),
            offer_timeout: Duration::from_secs(30),
            decline_duration: Duration::from_secs(600),
            authoritative: true,
            allocation: Allocation::Local,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::new(
            Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 0), 24).unwrap_or_default(),
            Ipv4Addr::new(10, 0, 0, 1),
        )
    }
}

/// Where a reply goes (RFC 2131 §4.1).
///
/// A host that writes whole frames (a TAP, a raw socket) follows the
/// destination exactly, as [`Server::poll_frame`] does. A host that sends
/// with an ordinary UDP socket cannot reach a client at an address the
/// client does not hold yet ([`Destination::Hardware`]): it sends to
/// [`Destination::socket_addr`], which broadcasts those replies, as
/// RFC 2131 §4.1 allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Destination {
    /// To 255.255.255.255:68 and the broadcast MAC.
    Broadcast,
    /// To `addr`:68, the address the client holds and names in `ciaddr`
    /// (renewing, rebinding, INFORM): it answers ARP, so any UDP socket
    /// can send there. `mac` is its hardware address, for a frame host.
    Unicast {
        /// IP destination.
        addr: Ipv4Addr,
        /// Ethernet destination.
        mac: [u8; 6],
    },
    /// To `addr`:68 at `mac` without ARP: the address offered or
    /// acknowledged (`yiaddr`), which the client does not hold yet and so
    /// cannot answer ARP for. Only a frame host can send this as a
    /// unicast; [`Destination::socket_addr`] turns it into a broadcast.
    Hardware {
        /// IP destination (`yiaddr`).
        addr: Ipv4Addr,
        /// Ethernet destination (`chaddr`).
        mac: [u8; 6],
    },
    /// To the relay agent at `addr`:67.
    Relay {
        /// The relay (`giaddr`).
        addr: Ipv4Addr,
    },
}

impl Destination {
    /// The UDP destination for a host that sends with an ordinary socket:
    /// 255.255.255.255:68 for [`Destination::Broadcast`] and
    /// [`Destination::Hardware`] (RFC 2131 §4.1: "if unicasting is not
    /// possible, the message MAY be sent as an IP broadcast"), the client's
    /// address (port 68) for [`Destination::Unicast`], the relay's (port 67)
    /// for [`Destination::Relay`].
    ///
    /// Such a socket is bound to port 67 on the clients' link only
    /// (`SO_BINDTODEVICE`: a broadcast must leave by that interface, and
    /// only that link's requests may be answered) and may broadcast
    /// (`SO_BROADCAST`). The `dhcp-socket` example is one.
    ///
    /// ```
    /// use std::net::{Ipv4Addr, SocketAddrV4};
    /// use dhcp_virt::Destination;
    ///
    /// let (addr, mac) = (Ipv4Addr::new(10, 8, 0, 9), [2, 0, 0, 0, 0, 9]);
    /// // An OFFER to the address the client does not hold yet: broadcast.
    /// let offer = Destination::Hardware { addr, mac };
    /// assert_eq!(offer.socket_addr(), SocketAddrV4::new(Ipv4Addr::BROADCAST, 68));
    /// assert!(offer.is_socket_broadcast());
    /// // An ACK to a renewing client: unicast.
    /// let renewal = Destination::Unicast { addr, mac };
    /// assert_eq!(renewal.socket_addr(), SocketAddrV4::new(addr, 68));
    /// ```
    pub fn socket_addr(&self) -> SocketAddrV4 {
        match *self {
            Destination::Broadcast | Destination::Hardware { .. } => {
                SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT)
            }
            Destination::Unicast { addr, .. } => SocketAddrV4::new(addr, CLIENT_PORT),
            Destination::Relay { addr } => SocketAddrV4::new(addr, SERVER_PORT),
        }
    }

    /// Whether [`Destination::socket_addr`] is the limited broadcast
    /// address (the socket needs `SO_BROADCAST`).
    pub fn is_socket_broadcast(&self) -> bool {
        matches!(self, Destination::Broadcast | Destination::Hardware { .. })
    }
}

/// A reply to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub destination: Destination,
    /// The DHCP payload.
    pub payload: Vec<u8>,
}

/// Something the caller may act on (register a DNS name, log).
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// An address was bound (ACK sent), first time or renewal.
    Leased {
        /// The client.
        client: ClientKey,
        /// Its hardware address.
        hardware_addr: HardwareAddr,
        /// The address.
        addr: Ipv4Addr,
        /// End of the lease.
        expires_at: Instant,
        /// Host name (option 12).
        hostname: Option<String>,
        /// Client FQDN (option 81).
        fqdn: Option<ClientFqdn>,
        /// Whether the client already held this lease (a renewal).
        renewed: bool,
    },
    /// The client released its address.
    Released {
        /// The client.
        client: ClientKey,
        /// The address.
        addr: Ipv4Addr,
    },
    /// A lease ran out.
    Expired {
        /// The client.
        client: ClientKey,
        /// The address.
        addr: Ipv4Addr,
    },
    /// The client found the address in use and declined it.
    Declined {
        /// The client.
        client: ClientKey,
        /// The address, now quarantined.
        addr: Ipv4Addr,
    },
    /// Directory mode: the renewal's re-claim found the address held by
    /// another owner in the shared directory (two servers granted it during
    /// a partition, and the directory kept the other claim). The binding is
    /// gone from the server and its store, and the address is kept out of
    /// the pool until the client's lease would have ended. The ACK already
    /// sent cannot be called back: the client keeps using the address until
    /// its next REQUEST (at T1, half the lease), which is NAKed (RFC 2131
    /// §4.3.2), so it restarts at DISCOVER and gets another address.
    ClaimLost {
        /// The client that loses the address.
        client: ClientKey,
        /// The address, now another client's.
        addr: Ipv4Addr,
    },
    /// A request answered later (directory mode) was refused.
    Refused {
        /// The client.
        client: ClientKey,
        /// Why.
        reason: Refusal,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BindingState {
    /// Being claimed in the directory; nothing sent yet.
    Claiming { until: Instant },
    /// Offered, awaiting the client's REQUEST.
    Offered { until: Instant },
    /// Leased.
    Bound { expires_at: Instant },
    /// Released or expired: free, but remembered for the same client.
    Idle { released: bool },
}

impl BindingState {
    fn deadline(&self) -> Option<Instant> {
        match *self {
            BindingState::Claiming { until } | BindingState::Offered { until } => Some(until),
            BindingState::Bound { expires_at } => Some(expires_at),
            BindingState::Idle { .. } => None,
        }
    }

    fn is_active(&self) -> bool {
        !matches!(self, BindingState::Idle { .. })
    }
}

#[derive(Debug, Clone)]
struct Binding {
    client: ClientKey,
    hardware_addr: HardwareAddr,
    state: BindingState,
    hostname: Option<String>,
    /// When the state is `Idle`, the expiry that was stored (kept on disk).
    expires_unix: u64,
    /// The earliest timer queued for this binding. A later deadline (a
    /// renewal) queues nothing: the armed timer re-arms when it fires, so
    /// a client renewing in a loop cannot grow the timer heap.
    armed: Option<Instant>,
    /// The latest renewal re-claim in the directory, while bound; older
    /// answers are stale.
    reclaim: Option<RequestId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Binding(Ipv4Addr),
    Quarantine(Ipv4Addr),
    Conflict(Ipv4Addr),
    Claim(RequestId),
}

/// What to answer once a directory claim completes.
#[derive(Debug, Clone)]
struct Pending {
    request_id: RequestId,
    addr: Ipv4Addr,
    message: ClientMessage,
    attempts: u32,
    deadline: Instant,
}

/// The DHCPv4 server. See the [module docs](self) for the call order.
#[derive(Debug)]
pub struct Server<S> {
    config: Config,
    store: S,
    pool: Pool,
    subnet_mask: Ipv4Addr,
    broadcast_addr: Ipv4Addr,
    domain_search: Vec<Name>,
    base: Instant,
    base_unix: u64,
    bindings: HashMap<Ipv4Addr, Binding>,
    by_client: HashMap<ClientKey, Ipv4Addr>,
    quarantine: HashMap<Ipv4Addr, Instant>,
    conflicts: HashMap<Ipv4Addr, Instant>,
    pending: HashMap<ClientKey, Pending>,
    in_flight: HashMap<RequestId, ClientKey>,
    /// Renewal re-claims awaiting the directory: at most one per binding.
    reclaims: HashMap<RequestId, Ipv4Addr>,
    next_request: u64,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    requests: VecDeque<DirectoryRequest>,
    #[cfg(feature = "frames")]
    frame_buf: Vec<u8>,
}

impl<S: LeaseStore> Server<S> {
    /// Start a server at `now`, restoring the leases in `store`.
    /// `wall` is the wall time at `now`, used only to convert stored
    /// expiry times (a time before the Unix epoch counts as the epoch).
    pub fn new(
        now: Instant,
        wall: std::time::SystemTime,
        config: Config,
        mut store: S,
    ) -> Result<Self, StartError> {
        let unix_secs = wall
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let network = config.network;
        if !network.contains(&config.server_addr) {
            return Err(ConfigError::ServerOutsideNetwork(config.server_addr).into());
        }
        if let Some(mtu) = config.interface_mtu
            && mtu < 68
        {
            // RFC 2132 §5.1: the minimum legal MTU is 68.
            return Err(ConfigError::InterfaceMtu(mtu).into());
        }
        let secs = config.lease_duration.as_secs();
        if secs == 0 || secs >= u64::from(u32::MAX) {
            return Err(ConfigError::LeaseDuration.into());
        }
        let mut pool = config.pool.clone();
        if pool.ranges.is_empty() {
            let first = network.network();
            let last = network.broadcast();
            if u32::from(last) > u32::from(first) + 1 {
                pool.ranges.push((
                    Ipv4Addr::from(u32::from(first) + 1),
                    Ipv4Addr::from(u32::from(last) - 1),
                ));
            }
        }
        for &(start, end) in &pool.ranges {
            if u32::from(start) > u32::from(end) {
                return Err(ConfigError::EmptyRange { start, end }.into());
            }
            if !network.contains(&start) || !network.contains(&end) {
                return Err(ConfigError::RangeOutsideNetwork { start, end }.into());
            }
        }
        for r in &pool.reservations {
            if !network.contains(&r.addr) {
                return Err(ConfigError::ReservationOutsideNetwork(r.addr).into());
            }
        }
        // Never lease our own addresses or the network/broadcast addresses.
        for a in [config.server_addr, network.network(), network.broadcast()]
            .into_iter()
            .chain(config.routers.iter().copied())
            .chain(config.dns_servers.iter().copied())
        {
            pool.exclusions.push((a, a));
        }
        let domain_search = config
            .domain_search
            .iter()
            .map(|d| Name::from_utf8(d).map_err(|_| ConfigError::DomainName(d.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        let loaded = store.load()?;
        let mut server = Server {
            subnet_mask: network.netmask(),
            broadcast_addr: network.broadcast(),
            domain_search,
            pool,
            config,
            store,
            base: now,
            base_unix: unix_secs,
            bindings: HashMap::new(),
            by_client: HashMap::new(),
            quarantine: HashMap::new(),
            conflicts: HashMap::new(),
            pending: HashMap::new(),
            in_flight: HashMap::new(),
            reclaims: HashMap::new(),
            next_request: 0,
            timers: BinaryHeap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            requests: VecDeque::new(),
            #[cfg(feature = "frames")]
            frame_buf: Vec::new(),
        };
        for lease in loaded {
            if !server.config.network.contains(&lease.addr) {
                continue;
            }
            let state = match lease.state {
                LeaseState::Bound if lease.expires_unix > unix_secs => BindingState::Bound {
                    expires_at: now + Duration::from_secs(lease.expires_unix - unix_secs),
                },
                LeaseState::Released => BindingState::Idle { released: true },
                _ => BindingState::Idle { released: false },
            };
            // A client owns at most one address; keep its latest record.
            if let Some(&prev) = server.by_client.get(&lease.client) {
                let keep_prev = server
                    .bindings
                    .get(&prev)
                    .is_some_and(|b| b.expires_unix >= lease.expires_unix);
                if keep_prev {
                    continue;
                }
                server.bindings.remove(&prev);
            }
            server.by_client.insert(lease.client.clone(), lease.addr);
            server.bindings.insert(
                lease.addr,
                Binding {
                    client: lease.client,
                    hardware_addr: HardwareAddr::ethernet([0; 6]),
                    state,
                    hostname: lease.hostname,
                    expires_unix: lease.expires_unix,
                    armed: state.deadline(),
                    reclaim: None,
                },
            );
            if let Some(at) = state.deadline() {
                server
                    .timers
                    .push(Reverse((at, Timer::Binding(lease.addr))));
            }
        }
        Ok(server)
    }

    // ---- getters ----

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The lease store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Consume the server and return its lease store (to close it cleanly,
    /// e.g. [`FileStore::compact`](crate::FileStore::compact) on shutdown).
    pub fn into_store(self) -> S {
        self.store
    }

    /// Make the lease store durable ([`LeaseStore::flush`]). With a
    /// deferred store, call it after sending the replies of each input.
    pub fn flush_store(&mut self) -> Result<(), crate::StoreError> {
        self.store.flush()
    }

    /// The address bound to `client`, if it holds a lease.
    pub fn lease_of(&self, client: &ClientKey) -> Option<Ipv4Addr> {
        let addr = *self.by_client.get(client)?;
        let b = self.bindings.get(&addr)?;
        matches!(b.state, BindingState::Bound { .. }).then_some(addr)
    }

    /// Every bound lease: `(address, client, expiry)`.
    pub fn leases(&self) -> impl Iterator<Item = (Ipv4Addr, &ClientKey, Instant)> + '_ {
        self.bindings.iter().filter_map(|(a, b)| match b.state {
            BindingState::Bound { expires_at } => Some((*a, &b.client, expires_at)),
            _ => None,
        })
    }

    /// Number of queued deadlines (for metrics and tests; stays bounded by
    /// the bindings, whatever clients send).
    pub fn queued_timers(&self) -> usize {
        self.timers.len()
    }

    /// Number of clients waiting for the directory.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Whether `id` is a renewal's re-claim whose answer is still awaited.
    /// A directory adapter answers such a claim [`ClaimResult::Taken`] only
    /// when another owner holds the record, since that gives the address up
    /// ([`Event::ClaimLost`]); an answer that says nothing about the owner
    /// (the store is full, the request was refused) should be
    /// [`ClaimResult::Failed`], which keeps the lease until the next renewal.
    /// [`directory::claim_result`](crate::directory::claim_result) applies
    /// this rule, given [`Server::claim_kind`].
    pub fn is_renewal_claim(&self, id: RequestId) -> bool {
        self.reclaims.contains_key(&id)
    }

    /// The kind of the claim `id`, for
    /// [`directory::claim_result`](crate::directory::claim_result):
    /// [`ClaimKind::Renewal`] while a renewal's re-claim is awaited (see
    /// [`Server::is_renewal_claim`]), else [`ClaimKind::New`].
    pub fn claim_kind(&self, id: RequestId) -> ClaimKind {
        if self.is_renewal_claim(id) {
            ClaimKind::Renewal
        } else {
            ClaimKind::New
        }
    }

    // ---- inputs ----

    /// Handle a DHCP payload received on port 67.
    ///
    /// `Ok` means the request was served (a reply may be queued; RELEASE and
    /// DECLINE have none; in directory mode the reply may come later).
    /// `Err` says why not; a NAK may still be queued, as RFC 2131 asks.
    /// Malformed input changes no state.
    pub fn handle_message(&mut self, now: Instant, payload: &[u8]) -> Result<(), Refusal> {
        let msg = ClientMessage::parse(payload).map_err(FrameError::from)?;
        self.handle_client_message(now, msg)
    }

    /// Handle a parsed client message.
    pub fn handle_client_message(
        &mut self,
        now: Instant,
        msg: ClientMessage,
    ) -> Result<(), Refusal> {
        self.handle_timeout(now);
        match msg.kind {
            ClientMessageKind::Discover => self.on_discover(now, msg),
            ClientMessageKind::Request => self.on_request(now, msg),
            ClientMessageKind::Decline => self.on_decline(now, msg),
            ClientMessageKind::Release => self.on_release(now, msg),
            ClientMessageKind::Inform => self.on_inform(msg),
        }
    }

    /// Handle an Ethernet frame from the TAP (feature `frames`).
    ///
    /// Frames that are not IPv4/UDP to port 67 return
    /// `Err(Refusal::Malformed(FrameError::NotDhcp))`: hand them to the next
    /// protocol. Unicast requests addressed to another host are ignored the
    /// same way.
    #[cfg(feature = "frames")]
    pub fn handle_frame(&mut self, now: Instant, frame: &[u8]) -> Result<(), Refusal> {
        let inbound = wire::parse_frame(frame)?;
        if inbound.destination_addr != Ipv4Addr::BROADCAST
            && inbound.destination_addr != self.config.server_addr
        {
            return Err(FrameError::NotDhcp.into());
        }
        self.handle_message(now, inbound.payload)
    }

    /// Advance timers to `now`: expire offers and leases, end quarantines,
    /// give up on unanswered directory claims.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&Reverse((at, timer))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            match timer {
                Timer::Binding(addr) => self.expire_binding(now, addr, at),
                Timer::Quarantine(addr) => {
                    if self.quarantine.get(&addr).is_some_and(|&u| u <= now) {
                        self.quarantine.remove(&addr);
                    }
                }
                Timer::Conflict(addr) => {
                    if self.conflicts.get(&addr).is_some_and(|&u| u <= now) {
                        self.conflicts.remove(&addr);
                    }
                }
                Timer::Claim(id) => {
                    let Some(client) = self.in_flight.get(&id).cloned() else {
                        continue;
                    };
                    if self.pending.get(&client).is_some_and(|p| p.deadline <= now) {
                        self.in_flight.remove(&id);
                        if let Some(p) = self.pending.remove(&client) {
                            self.drop_claiming(p.addr, &client);
                        }
                    }
                }
            }
        }
    }

    /// Feed the answer to a [`DirectoryRequest`]. Unknown or stale ids are
    /// ignored.
    ///
    /// The answer to a renewal's re-claim changes nothing unless it is
    /// [`ClaimResult::Taken`]: then the address is given up
    /// ([`Event::ClaimLost`]). `Failed` is retried by the next renewal.
    pub fn handle_directory_completion(&mut self, now: Instant, completion: DirectoryCompletion) {
        self.handle_timeout(now);
        if let Some(addr) = self.reclaims.remove(&completion.id) {
            if let Some(b) = self.bindings.get_mut(&addr)
                && b.reclaim == Some(completion.id)
            {
                b.reclaim = None;
                if completion.result == ClaimResult::Taken {
                    self.lose_claim(now, addr);
                }
            }
            return;
        }
        let Some(client) = self.in_flight.remove(&completion.id) else {
            return;
        };
        let Some(pending) = self.pending.remove(&client) else {
            return;
        };
        if pending.request_id != completion.id {
            self.pending.insert(client, pending);
            return;
        }
        let addr = pending.addr;
        match completion.result {
            ClaimResult::Granted => {
                let msg = pending.message;
                if msg.kind == ClientMessageKind::Discover {
                    self.set_state(
                        addr,
                        BindingState::Offered {
                            until: now + self.config.offer_timeout,
                        },
                    );
                    self.send_offer(&msg, addr);
                } else if let Err(reason) = self.bind_and_ack(now, &msg, addr) {
                    self.events.push_back(Event::Refused { client, reason });
                }
            }
            ClaimResult::Taken => {
                self.drop_claiming(addr, &client);
                self.mark_conflict(addr, now + self.config.decline_duration);
                let msg = pending.message;
                if msg.kind == ClientMessageKind::Discover {
                    if pending.attempts >= self.max_attempts() {
                        self.events.push_back(Event::Refused {
                            client,
                            reason: Refusal::PoolExhausted,
                        });
                    } else if let Err(reason) = self.allocate(now, msg, pending.attempts + 1) {
                        self.events.push_back(Event::Refused { client, reason });
                    }
                } else {
                    self.send_nak(&msg, "address in use");
                    self.events.push_back(Event::Refused {
                        client,
                        reason: Refusal::AddressTaken { requested: addr },
                    });
                }
            }
            ClaimResult::Failed => {
                // Nothing is known; the client's retransmission retries.
                self.drop_claiming(addr, &client);
            }
        }
    }

    /// Another owner holds `addr` in the directory: give it up, durably,
    /// and keep it out of the pool while the client may still use it.
    fn lose_claim(&mut self, now: Instant, addr: Ipv4Addr) {
        let Some(b) = self.bindings.get(&addr) else {
            return;
        };
        let BindingState::Bound { expires_at } = b.state else {
            return;
        };
        let client = b.client.clone();
        // Removed like a DECLINE. Unlike there, a store error does not keep
        // the binding: a record left on disk comes back Bound after a
        // restart, and the first renewal's re-claim removes it again.
        let _ = self.store.remove(addr);
        self.remove_binding(addr);
        if self.by_client.get(&client) == Some(&addr) {
            self.by_client.remove(&client);
        }
        // The client believes in its lease until `expires_at`: its REQUESTs
        // until then are NAKed (see `on_request`), and no one else is
        // offered the address meanwhile.
        self.mark_conflict(addr, expires_at.max(now + self.config.decline_duration));
        self.events.push_back(Event::ClaimLost { client, addr });
    }

    // ---- outputs ----

    /// The next reply to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next reply as an Ethernet frame for the TAP (RFC 2131 §4.1:
    /// unicast to `chaddr`/`yiaddr` unless the client asked for broadcast).
    #[cfg(feature = "frames")]
    pub fn poll_frame(&mut self) -> Option<Vec<u8>> {
        let t = self.transmits.pop_front()?;
        let (mac, dst, port) = match t.destination {
            Destination::Broadcast => (wire::BROADCAST_MAC, Ipv4Addr::BROADCAST, CLIENT_PORT),
            Destination::Unicast { addr, mac } | Destination::Hardware { addr, mac } => {
                (mac, addr, CLIENT_PORT)
            }
            Destination::Relay { addr } => (wire::BROADCAST_MAC, addr, SERVER_PORT),
        };
        wire::emit_frame(
            self.config.server_mac,
            mac,
            self.config.server_addr,
            dst,
            port,
            &t.payload,
            &mut self.frame_buf,
        );
        Some(self.frame_buf.clone())
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next request for the shared directory (directory mode only).
    pub fn poll_directory_request(&mut self) -> Option<DirectoryRequest> {
        self.requests.pop_front()
    }

    /// When [`Server::handle_timeout`] should next be called. May be early;
    /// never late.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    // ---- message handlers ----

    fn on_discover(&mut self, now: Instant, msg: ClientMessage) -> Result<(), Refusal> {
        let client = client_key(&msg);
        if self.pending.contains_key(&client) {
            return Err(Refusal::Pending);
        }
        self.allocate(now, msg, 1)
    }

    /// Pick an address for a DISCOVER and offer it, claiming it first in
    /// directory mode.
    fn allocate(&mut self, now: Instant, msg: ClientMessage, attempt: u32) -> Result<(), Refusal> {
        let client = client_key(&msg);
        let addr = self
            .choose_addr(now, &client, &msg)
            .ok_or(Refusal::PoolExhausted)?;
        let held = self
            .bindings
            .get(&addr)
            .is_some_and(|b| b.client == client && b.state.is_active());
        self.attach(addr, &client, &msg);
        if held || self.config.allocation == Allocation::Local {
            // Retransmission or returning client we hold: same answer.
            if !matches!(
                self.bindings.get(&addr).map(|b| b.state),
                Some(BindingState::Bound { .. })
            ) {
                self.set_state(
                    addr,
                    BindingState::Offered {
                        until: now + self.config.offer_timeout,
                    },
                );
            }
            self.send_offer(&msg, addr);
            return Ok(());
        }
        self.start_claim(now, client, addr, msg, attempt);
        Ok(())
    }

    fn on_request(&mut self, now: Instant, msg: ClientMessage) -> Result<(), Refusal> {
        let client = client_key(&msg);
        if self.pending.contains_key(&client) {
            return Err(Refusal::Pending);
        }
        if let Some(server_id) = msg.server_id {
            // SELECTING (RFC 2131 §4.3.2).
            if server_id != self.config.server_addr {
                self.withdraw_offer(&client);
                return Err(Refusal::UnknownServerId { server_id });
            }
            let requested = msg.requested_addr.unwrap_or(msg.client_addr);
            let ours = self
                .by_client
                .get(&client)
                .copied()
                .filter(|a| *a == requested)
                .and_then(|a| self.bindings.get(&a))
                .is_some_and(|b| {
                    matches!(
                        b.state,
                        BindingState::Offered { .. } | BindingState::Bound { .. }
                    )
                });
            if !ours {
                self.send_nak(&msg, "not offered");
                return Err(Refusal::OfferMismatch { requested });
            }
            return self.bind_and_ack(now, &msg, requested);
        }
        // INIT-REBOOT names the address in option 50; RENEWING/REBINDING in
        // ciaddr.
        let requested = match (msg.requested_addr, msg.client_addr) {
            (Some(a), _) => a,
            (None, a) if !a.is_unspecified() => a,
            _ => return Err(Refusal::NoAddress),
        };
        if !self.config.network.contains(&requested) {
            self.send_nak(&msg, "wrong network");
            return Err(Refusal::WrongSubnet { requested });
        }
        let binding = self.bindings.get(&requested);
        let mine = binding.is_some_and(|b| b.client == client);
        if mine && binding.is_some_and(|b| b.state.is_active()) {
            return self.bind_and_ack(now, &msg, requested);
        }
        if self.conflicts.get(&requested).is_some_and(|&u| u > now) {
            // Another owner holds it in the directory, e.g. a claim this
            // server lost after granting it: NAK even when not
            // authoritative, since we know (RFC 2131 §4.3.2).
            self.send_nak(&msg, "address in use");
            return Err(Refusal::AddressTaken { requested });
        }
        if let Some(b) = binding
            && b.client != client
            && b.state.is_active()
        {
            self.send_nak(&msg, "address in use");
            return Err(Refusal::AddressTaken { requested });
        }
        // Unknown to us, or our remembered-but-idle record of this client.
        if !self.config.authoritative && !mine {
            return Err(Refusal::NoLease { addr: requested });
        }
        if !self.leasable_for(now, &client, &msg.hardware_addr, requested) {
            self.send_nak(&msg, "address not available");
            return Err(Refusal::NotLeasable { requested });
        }
        self.attach(requested, &client, &msg);
        match self.config.allocation {
            Allocation::Local => self.bind_and_ack(now, &msg, requested),
            Allocation::Directory { .. } => {
                self.start_claim(now, client, requested, msg, 1);
                Ok(())
            }
        }
    }

    fn on_decline(&mut self, now: Instant, msg: ClientMessage) -> Result<(), Refusal> {
        if let Some(server_id) = msg.server_id
            && server_id != self.config.server_addr
        {
            return Err(Refusal::UnknownServerId { server_id });
        }
        let client = client_key(&msg);
        let addr = msg.requested_addr.ok_or(Refusal::NoAddress)?;
        if self.bindings.get(&addr).is_none_or(|b| b.client != client) {
            return Err(Refusal::NoLease { addr });
        }
        // The address is in use by someone we do not know: forget the
        // binding and keep the address out of the pool for a while.
        // Disk first: on a store error nothing changes.
        self.store.remove(addr)?;
        self.remove_binding(addr);
        self.by_client.remove(&client);
        let until = now + self.config.decline_duration;
        self.quarantine.insert(addr, until);
        self.timers.push(Reverse((until, Timer::Quarantine(addr))));
        self.directory_release(addr, &client);
        self.events.push_back(Event::Declined { client, addr });
        Ok(())
    }

    fn on_release(&mut self, now: Instant, msg: ClientMessage) -> Result<(), Refusal> {
        if let Some(server_id) = msg.server_id
            && server_id != self.config.server_addr
        {
            return Err(Refusal::UnknownServerId { server_id });
        }
        let client = client_key(&msg);
        let addr = msg.client_addr;
        let held = self
            .bindings
            .get(&addr)
            .is_some_and(|b| b.client == client && b.state.is_active());
        if !held {
            return Err(Refusal::NoLease { addr });
        }
        self.persist_idle(now, addr, LeaseState::Released)?;
        self.set_state(addr, BindingState::Idle { released: true });
        self.directory_release(addr, &client);
        self.events.push_back(Event::Released { client, addr });
        Ok(())
    }

    fn on_inform(&mut self, msg: ClientMessage) -> Result<(), Refusal> {
        // RFC 2131 §4.3.5: configuration only, no lease, to ciaddr.
        if !msg.client_addr.is_unspecified() && !self.config.network.contains(&msg.client_addr) {
            return Err(Refusal::WrongSubnet {
                requested: msg.client_addr,
            });
        }
        let mut reply = Reply::to_request(ReplyKind::Ack, &msg, self.config.server_addr);
        reply.client_addr = msg.client_addr;
        self.add_config_options(&mut reply, &msg);
        self.queue_reply(&reply, &msg);
        Ok(())
    }

    // ---- helpers ----

    fn max_attempts(&self) -> u32 {
        match self.config.allocation {
            Allocation::Local => 1,
            Allocation::Directory { max_attempts, .. } => max_attempts.max(1),
        }
    }

    /// Whether `addr` may be leased to `client` now.
    fn leasable_for(
        &self,
        now: Instant,
        client: &ClientKey,
        hw: &HardwareAddr,
        addr: Ipv4Addr,
    ) -> bool {
        if !self.config.network.contains(&addr) {
            return false;
        }
        let reserved_here = self.pool.reservation_for(client, hw) == Some(addr);
        if !reserved_here && (!self.pool.is_dynamic(addr) || self.pool.is_reserved(addr)) {
            return false;
        }
        if self.quarantine.get(&addr).is_some_and(|&u| u > now)
            || self.conflicts.get(&addr).is_some_and(|&u| u > now)
        {
            return false;
        }
        match self.bindings.get(&addr) {
            None => true,
            Some(b) => b.client == *client || !b.state.is_active(),
        }
    }

    /// Address preference (RFC 2131 §4.3.1): reservation, the client's
    /// current or previous address, the requested address, then the pool
    /// in the client's stable order (never-used addresses before
    /// remembered ones of other clients).
    fn choose_addr(
        &self,
        now: Instant,
        client: &ClientKey,
        msg: &ClientMessage,
    ) -> Option<Ipv4Addr> {
        let hw = &msg.hardware_addr;
        if let Some(a) = self.pool.reservation_for(client, hw) {
            return self.leasable_for(now, client, hw, a).then_some(a);
        }
        if let Some(&a) = self.by_client.get(client)
            && self.leasable_for(now, client, hw, a)
        {
            return Some(a);
        }
        if let Some(a) = msg.requested_addr
            && self.leasable_for(now, client, hw, a)
        {
            return Some(a);
        }
        let free = |a: &Ipv4Addr| {
            !self.bindings.contains_key(a)
                && self.quarantine.get(a).is_none_or(|&u| u <= now)
                && self.conflicts.get(a).is_none_or(|&u| u <= now)
        };
        self.pool.candidates(client).find(free).or_else(|| {
            self.pool
                .candidates(client)
                .find(|a| self.leasable_for(now, client, hw, *a))
        })
    }

    /// Make `addr` this client's binding (taking it over from an idle
    /// record of another client), keeping the current state if it is ours.
    fn attach(&mut self, addr: Ipv4Addr, client: &ClientKey, msg: &ClientMessage) {
        if let Some(prev) = self.by_client.get(client).copied()
            && prev != addr
            && let Some(b) = self.bindings.get(&prev)
            && b.client == *client
        {
            // One address per client: drop the old one (idle or offered).
            if b.state.is_active() {
                self.directory_release(prev, client);
            }
            self.remove_binding(prev);
            // A failed removal leaves a stale record on disk; on load the
            // client's newest record wins, so it is harmless.
            let _ = self.store.remove(prev);
        }
        let hostname = msg.hostname.clone();
        match self.bindings.get_mut(&addr) {
            Some(b) if b.client == *client => {
                b.hardware_addr = msg.hardware_addr;
                if hostname.is_some() {
                    b.hostname = hostname;
                }
            }
            other => {
                if let Some(old) = other {
                    let old_client = old.client.clone();
                    if self.by_client.get(&old_client) == Some(&addr) {
                        self.by_client.remove(&old_client);
                    }
                }
                self.bindings.insert(
                    addr,
                    Binding {
                        client: client.clone(),
                        hardware_addr: msg.hardware_addr,
                        state: BindingState::Idle { released: false },
                        hostname,
                        expires_unix: 0,
                        armed: None,
                        reclaim: None,
                    },
                );
            }
        }
        self.by_client.insert(client.clone(), addr);
    }

    fn set_state(&mut self, addr: Ipv4Addr, state: BindingState) {
        if let Some(b) = self.bindings.get_mut(&addr) {
            b.state = state;
            if !matches!(state, BindingState::Bound { .. })
                && let Some(id) = b.reclaim.take()
            {
                // No longer bound: the re-claim's answer no longer matters.
                self.reclaims.remove(&id);
            }
            if let Some(at) = state.deadline()
                && b.armed.is_none_or(|armed| at < armed)
            {
                b.armed = Some(at);
                self.timers.push(Reverse((at, Timer::Binding(addr))));
            }
        }
    }

    /// Forget `addr`'s binding, and its re-claim if one is out.
    fn remove_binding(&mut self, addr: Ipv4Addr) -> Option<Binding> {
        let b = self.bindings.remove(&addr)?;
        if let Some(id) = b.reclaim {
            self.reclaims.remove(&id);
        }
        Some(b)
    }

    /// Keep `addr` out of the pool until `until` at least: another owner
    /// holds it in the directory.
    fn mark_conflict(&mut self, addr: Ipv4Addr, until: Instant) {
        let entry = self.conflicts.entry(addr).or_insert(until);
        *entry = (*entry).max(until);
        self.timers.push(Reverse((until, Timer::Conflict(addr))));
    }

    fn start_claim(
        &mut self,
        now: Instant,
        client: ClientKey,
        addr: Ipv4Addr,
        msg: ClientMessage,
        attempts: u32,
    ) {
        let Allocation::Directory { claim_timeout, .. } = self.config.allocation else {
            return;
        };
        let deadline = now + claim_timeout;
        self.set_state(addr, BindingState::Claiming { until: deadline });
        let id = self.directory_request(DirectoryOp::Claim, addr, &client);
        self.in_flight.insert(id, client.clone());
        self.timers.push(Reverse((deadline, Timer::Claim(id))));
        self.pending.insert(
            client,
            Pending {
                request_id: id,
                addr,
                message: msg,
                attempts,
                deadline,
            },
        );
    }

    fn next_id(&mut self) -> RequestId {
        self.next_request += 1;
        RequestId(self.next_request)
    }

    fn directory_release(&mut self, addr: Ipv4Addr, client: &ClientKey) {
        if self.config.allocation == Allocation::Local {
            return;
        }
        self.directory_request(DirectoryOp::Release, addr, client);
    }

    /// Queues a directory request about `addr` for `client`; its id.
    fn directory_request(
        &mut self,
        op: DirectoryOp,
        addr: Ipv4Addr,
        client: &ClientKey,
    ) -> RequestId {
        let id = self.next_id();
        self.requests.push_back(DirectoryRequest {
            id,
            op,
            addr,
            owner: client.clone(),
            lease_duration: self.config.lease_duration,
        });
        id
    }

    /// Forget a binding that was only being claimed.
    fn drop_claiming(&mut self, addr: Ipv4Addr, client: &ClientKey) {
        if self.bindings.get(&addr).is_some_and(|b| {
            b.client == *client && matches!(b.state, BindingState::Claiming { .. })
        }) {
            self.remove_binding(addr);
            if self.by_client.get(client) == Some(&addr) {
                self.by_client.remove(client);
            }
        }
    }

    /// The client chose another server: free our offer (RFC 2131 §4.3.2).
    fn withdraw_offer(&mut self, client: &ClientKey) {
        let Some(&addr) = self.by_client.get(client) else {
            return;
        };
        if self
            .bindings
            .get(&addr)
            .is_some_and(|b| matches!(b.state, BindingState::Offered { .. }))
        {
            self.set_state(addr, BindingState::Idle { released: false });
            self.directory_release(addr, client);
        }
    }

    fn expire_binding(&mut self, now: Instant, addr: Ipv4Addr, fired: Instant) {
        let Some(b) = self.bindings.get_mut(&addr) else {
            return;
        };
        if b.armed == Some(fired) {
            b.armed = None;
        }
        let Some(deadline) = b.state.deadline() else {
            return;
        };
        if deadline > now {
            // Extended since the timer was queued: queue the new deadline.
            if b.armed.is_none() {
                b.armed = Some(deadline);
                self.timers.push(Reverse((deadline, Timer::Binding(addr))));
            }
            return;
        }
        let client = b.client.clone();
        match b.state {
            BindingState::Claiming { .. } => {}
            BindingState::Offered { .. } => {
                self.set_state(addr, BindingState::Idle { released: false });
                self.directory_release(addr, &client);
            }
            BindingState::Bound { .. } => {
                // A failed write leaves a Bound record on disk whose expiry
                // has passed; loading treats it as expired, so it is safe.
                let _ = self.persist_idle(now, addr, LeaseState::Expired);
                self.set_state(addr, BindingState::Idle { released: false });
                self.directory_release(addr, &client);
                self.events.push_back(Event::Expired { client, addr });
            }
            BindingState::Idle { .. } => {}
        }
    }

    fn unix_at(&self, at: Instant) -> u64 {
        self.base_unix + at.saturating_duration_since(self.base).as_secs()
    }

    fn persist_idle(
        &mut self,
        now: Instant,
        addr: Ipv4Addr,
        state: LeaseState,
    ) -> Result<(), Refusal> {
        let Some(b) = self.bindings.get_mut(&addr) else {
            return Ok(());
        };
        let expires_unix = self.base_unix + now.saturating_duration_since(self.base).as_secs();
        b.expires_unix = expires_unix;
        let lease = Lease {
            addr,
            client: b.client.clone(),
            expires_unix,
            state,
            hostname: b.hostname.clone(),
        };
        self.store.put(&lease)?;
        Ok(())
    }

    /// Bind `addr` to the requesting client, persist, ACK.
    fn bind_and_ack(
        &mut self,
        now: Instant,
        msg: &ClientMessage,
        addr: Ipv4Addr,
    ) -> Result<(), Refusal> {
        let client = client_key(msg);
        let expires_at = now + self.config.lease_duration;
        let expires_unix = self.unix_at(expires_at);
        let Some(b) = self.bindings.get(&addr) else {
            return Err(Refusal::NoLease { addr });
        };
        let renewed = matches!(b.state, BindingState::Bound { .. });
        let hostname = msg.hostname.clone().or_else(|| b.hostname.clone());
        let lease = Lease {
            addr,
            client: client.clone(),
            expires_unix,
            state: LeaseState::Bound,
            hostname: hostname.clone(),
        };
        // Durable before the client hears of it.
        self.store.put(&lease)?;
        if let Some(b) = self.bindings.get_mut(&addr) {
            b.expires_unix = expires_unix;
            b.hostname = hostname.clone();
            b.hardware_addr = msg.hardware_addr;
        }
        self.set_state(addr, BindingState::Bound { expires_at });
        if renewed && self.config.allocation != Allocation::Local {
            // Refresh the directory record's lifetime. The ACK does not wait
            // for the answer (the claim is ours already, unless a partition
            // let another server grant the address too); a `Taken` answer
            // gives the address up (see `lose_claim`).
            let id = self.directory_request(DirectoryOp::Claim, addr, &client);
            if let Some(b) = self.bindings.get_mut(&addr)
                && let Some(old) = b.reclaim.replace(id)
            {
                // Only the latest re-claim is awaited, so a renewal flood
                // cannot grow the map.
                self.reclaims.remove(&old);
            }
            self.reclaims.insert(id, addr);
        }
        let mut reply = Reply::to_request(ReplyKind::Ack, msg, self.config.server_addr);
        reply.your_addr = addr;
        reply.client_addr = msg.client_addr;
        reply.lease = Some(self.lease_times());
        self.add_config_options(&mut reply, msg);
        self.queue_reply(&reply, msg);
        self.events.push_back(Event::Leased {
            client,
            hardware_addr: msg.hardware_addr,
            addr,
            expires_at,
            hostname,
            fqdn: msg.fqdn.clone(),
            renewed,
        });
        Ok(())
    }

    fn send_offer(&mut self, msg: &ClientMessage, addr: Ipv4Addr) {
        let mut reply = Reply::to_request(ReplyKind::Offer, msg, self.config.server_addr);
        reply.your_addr = addr;
        reply.lease = Some(self.lease_times());
        self.add_config_options(&mut reply, msg);
        self.queue_reply(&reply, msg);
    }

    fn send_nak(&mut self, msg: &ClientMessage, text: &str) {
        let mut reply = Reply::to_request(ReplyKind::Nak, msg, self.config.server_addr);
        reply.message = Some(text.to_owned());
        // RFC 2131 §4.1: NAKs are broadcast unless relayed.
        let destination = if msg.relay_addr.is_unspecified() {
            Destination::Broadcast
        } else {
            reply.broadcast = true;
            Destination::Relay {
                addr: msg.relay_addr,
            }
        };
        self.transmits.push_back(Transmit {
            destination,
            payload: reply.emit(),
        });
    }

    fn lease_times(&self) -> LeaseTimes {
        let lease_secs =
            u32::try_from(self.config.lease_duration.as_secs()).unwrap_or(u32::MAX - 1);
        // RFC 2131 §4.4.5: T1 = 0.5, T2 = 0.875 of the lease.
        LeaseTimes {
            lease_secs,
            renewal_secs: lease_secs / 2,
            rebinding_secs: (u64::from(lease_secs) * 7 / 8) as u32,
        }
    }

    /// Configuration options, as the parameter request list asks
    /// (RFC 2132 §9.8); the subnet mask always.
    fn add_config_options(&self, reply: &mut Reply, msg: &ClientMessage) {
        let wants = |code: u8| {
            msg.parameter_request_list
                .as_ref()
                .is_none_or(|l| l.contains(&code))
        };
        let c = &self.config;
        reply.subnet_mask = Some(self.subnet_mask);
        if wants(28) {
            reply.broadcast_addr = Some(self.broadcast_addr);
        }
        if wants(3) {
            reply.routers = c.routers.clone();
        }
        if wants(6) {
            reply.dns_servers = c.dns_servers.clone();
        }
        if wants(15) {
            reply.domain_name = c.domain_name.clone();
        }
        if wants(119) {
            reply.domain_search = self.domain_search.clone();
        }
        if wants(26) {
            reply.interface_mtu = c.interface_mtu;
        }
        // RFC 4702 §4: answer option 81 when the client sent it. The
        // virtual DNS registers the A record for the lease, so the server
        // does the update (S), overriding a client that wanted to (O); N
        // stays 0.
        if let Some(f) = &msg.fqdn {
            let client_s = f.flags & FQDN_S != 0;
            let mut flags = FQDN_S;
            if !client_s {
                flags |= FQDN_O;
            }
            reply.fqdn = Some(ClientFqdn {
                flags,
                name: f.name.clone(),
            });
        }
        if wants(121) && !c.classless_routes.is_empty() {
            reply.classless_routes = c.classless_routes.clone();
            if let Some(&gw) = c.routers.first() {
                reply.classless_routes.push((
                    Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0).unwrap_or_default(),
                    gw,
                ));
            }
        }
    }

    /// Queue an OFFER or ACK to where RFC 2131 §4.1 says.
    fn queue_reply(&mut self, reply: &Reply, msg: &ClientMessage) {
        let destination = if !msg.relay_addr.is_unspecified() {
            Destination::Relay {
                addr: msg.relay_addr,
            }
        } else if !msg.client_addr.is_unspecified() {
            match msg.hardware_addr.mac() {
                Some(mac) => Destination::Unicast {
                    addr: msg.client_addr,
                    mac,
                },
                None => Destination::Broadcast,
            }
        } else if msg.broadcast || reply.your_addr.is_unspecified() {
            Destination::Broadcast
        } else {
            match msg.hardware_addr.mac() {
                Some(mac) => Destination::Hardware {
                    addr: reply.your_addr,
                    mac,
                },
                None => Destination::Broadcast,
            }
        };
        self.transmits.push_back(Transmit {
            destination,
            payload: reply.emit(),
        });
    }
}

/// Client FQDN flag S: the server performs the A RR update (RFC 4702 §2.1).
const FQDN_S: u8 = 0x01;
/// Client FQDN flag O: the server overrode the client's S (RFC 4702 §2.1).
const FQDN_O: u8 = 0x02;

fn client_key(msg: &ClientMessage) -> ClientKey {
    ClientKey::of(msg.client_id.as_deref(), &msg.hardware_addr)
}
