//! The sans-IO DNS server: query bytes in, response bytes out.
//!
//! Method families, as in quinn-proto's `Connection`:
//!
//! - **inputs** `handle_input` (one DNS message from UDP or TCP),
//!   `handle_store_response`, `handle_forward_response`, `handle_timeout`;
//! - **commands** `register`, `unregister`, `register_service`,
//!   `unregister_service`;
//! - **outputs** `poll_transmit` (after `handle_input` and every result),
//!   `poll_store_request` (after `handle_input` in decentralised mode and
//!   after commands), `poll_forward` (after `handle_input` with forwarding
//!   on), `poll_event`, and `poll_timeout` (after anything).
//!
//! Nothing here reads a clock: every input carries `now`.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::error::{ForwardError, QueryError, RegisterError, ServiceError};
use crate::forward::{self, Cache, Key};
use crate::service::{Service, service_name};
use crate::store::{RequestId, StoreRequest, StoreResult};
use crate::wire::{Request, Sections, Transport, emit_truncated, frame_tcp};
use crate::zone::{Answer, Outcome, Response, ServiceQuery, Zone, ZoneConfig, refused};

/// Where names come from besides the local table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Only local names: unknown names are NXDOMAIN at once.
    #[default]
    Local,
    /// Unknown names are looked up in the overlay store; registered names
    /// are published there.
    Decentralised,
}

/// Server configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The zone.
    pub zone: ZoneConfig,
    /// Local or decentralised.
    pub mode: Mode,
    /// How long a query waits for the store or upstream before SERVFAIL
    /// (default 2 s, below common stub resolver timeouts).
    pub lookup_timeout: Duration,
    /// Lifetime of names published for registrations without one
    /// (default 1 h).
    pub publish_ttl: Duration,
    /// Longest time a name learned from the store stays cached (default
    /// 60 s).
    pub cache_ttl: Duration,
    /// Forward queries outside the zones through [`Server::poll_forward`]
    /// instead of answering REFUSED (default false): split DNS. Each goes
    /// upstream under a fresh message ID from the OS; identical queries in
    /// flight share one forward; answers are cached (see
    /// [`Config::forward_cache_bytes`]).
    pub forward: bool,
    /// Most bytes of upstream answers cached (default 4 MiB); 0 turns the
    /// cache off.
    pub forward_cache_bytes: usize,
    /// Longest time an upstream answer is cached, whatever its TTL
    /// (default 1 h).
    pub forward_cache_max_ttl: Duration,
    /// Most queries waiting at once; beyond it new ones get SERVFAIL
    /// (default 10,000).
    pub max_pending: usize,
    /// Seed of the name table's hash.
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            zone: ZoneConfig::default(),
            mode: Mode::Local,
            lookup_timeout: Duration::from_secs(2),
            publish_ttl: Duration::from_secs(3600),
            cache_ttl: Duration::from_secs(60),
            forward: false,
            forward_cache_bytes: 4 << 20,
            forward_cache_max_ttl: Duration::from_secs(3600),
            max_pending: 10_000,
            seed: 0,
        }
    }
}

/// A response to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Destination: the querier.
    pub destination: SocketAddr,
    /// Transport the query came on.
    pub transport: Transport,
    /// Bytes to write: a UDP datagram, or a length-prefixed message on TCP.
    pub payload: Vec<u8>,
}

/// A query outside the zones for the caller's upstream resolver.
///
/// Send it from a fresh socket (a random source port: with the random
/// message ID, what an off-path forger must guess) and hand the reply back
/// with [`Server::handle_forward_response`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    /// Id to hand back with the upstream's reply.
    pub id: RequestId,
    /// The query as received, under a message ID of its own.
    pub query: Vec<u8>,
    /// How to ask: UDP, or TCP (without the length prefix: frame it with
    /// [`crate::wire::frame_tcp`]) for a client that asked over TCP or an
    /// answer that came back truncated.
    pub transport: Transport,
}

/// Things worth logging.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A query was answered FORMERR/NOTIMP, or dropped.
    BadQuery(QueryError),
    /// A store lookup or forward missed its deadline; its queries got
    /// SERVFAIL.
    TimedOut {
        /// The request.
        id: RequestId,
    },
    /// Publishing or withdrawing `name` failed in the store.
    PublishFailed {
        /// The name.
        name: String,
    },
    /// Names whose lifetime ended were removed.
    Expired {
        /// How many.
        count: usize,
    },
    /// An upstream reply was dropped; the query still waits.
    ForwardRejected {
        /// The forward.
        id: RequestId,
        /// Why.
        error: ForwardError,
    },
}

#[derive(Clone, Debug)]
struct Waiter {
    from: SocketAddr,
    transport: Transport,
    request: Request,
}

#[derive(Clone, Debug)]
enum Pending {
    Lookup {
        /// Coalescing key: the relative name, or `@ADDR` for addresses.
        name: String,
        /// Set for a reverse (PTR) lookup.
        addr: Option<Ipv4Addr>,
        deadline: Instant,
        waiters: Vec<Waiter>,
    },
    Publish {
        name: String,
    },
    ServiceLookup {
        query: ServiceQuery,
        deadline: Instant,
        waiters: Vec<Waiter>,
    },
    Forward {
        deadline: Instant,
        key: Key,
        /// The message ID it went upstream with.
        upstream_id: u16,
        /// The query as sent (for a retry over TCP).
        query: Vec<u8>,
        transport: Transport,
        waiters: Vec<Waiter>,
    },
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Queries received (parsed or not).
    pub queries: u64,
    /// Responses queued.
    pub responses: u64,
    /// Store lookups started.
    pub lookups: u64,
    /// Queries answered SERVFAIL.
    pub servfail: u64,
    /// Store answers dropped because their address is outside the network.
    pub outside_network: u64,
    /// Queries sent upstream (a retry over TCP counts again).
    pub forwards: u64,
    /// Queries outside the zones answered from the forward cache.
    pub forward_cache_hits: u64,
    /// Upstream replies dropped (see [`Event::ForwardRejected`]).
    pub forward_rejected: u64,
}

/// The DNS server state machine.
#[derive(Debug)]
pub struct Server {
    config: Config,
    zone: Zone,
    pending: HashMap<RequestId, Pending>,
    lookups_by_name: HashMap<String, RequestId>,
    service_lookups: HashMap<ServiceQuery, RequestId>,
    forwards_by_key: HashMap<Key, RequestId>,
    cache: Cache,
    waiting: usize,
    next_id: u64,
    transmits: VecDeque<Transmit>,
    store_requests: VecDeque<StoreRequest>,
    forwards: VecDeque<Forward>,
    events: VecDeque<Event>,
    stats: Stats,
    scratch: Vec<u8>,
}

impl Server {
    /// A server with an empty name table.
    pub fn new(config: Config) -> Self {
        let zone = Zone::new(config.zone.clone(), config.seed);
        Self::with_zone(config, zone)
    }

    /// A server answering from `zone` (for example one loaded with
    /// [`Zone::load_names`]); `config.zone` is ignored.
    pub fn with_zone(config: Config, zone: Zone) -> Self {
        Server {
            cache: Cache::new(config.forward_cache_bytes, config.forward_cache_max_ttl),
            config,
            zone,
            pending: HashMap::new(),
            lookups_by_name: HashMap::new(),
            service_lookups: HashMap::new(),
            forwards_by_key: HashMap::new(),
            waiting: 0,
            next_id: 1,
            transmits: VecDeque::new(),
            store_requests: VecDeque::new(),
            forwards: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            scratch: Vec::with_capacity(512),
        }
    }

    /// The zone.
    pub fn zone(&self) -> &Zone {
        &self.zone
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Queries waiting for the store or upstream.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    fn new_id(&mut self) -> RequestId {
        let id = RequestId(self.next_id);
        self.next_id += 1;
        id
    }

    /// Handles one DNS message from `from`. On TCP, pass one message without
    /// its length prefix (see [`crate::TcpFramer`]).
    pub fn handle_input(
        &mut self,
        now: Instant,
        from: SocketAddr,
        transport: Transport,
        bytes: &[u8],
    ) {
        self.stats.queries += 1;
        // A registered name's A record: the same bytes as the general path
        // below, without decoding the query.
        let mut out = std::mem::take(&mut self.scratch);
        let fast = self.zone.respond_fast(bytes, transport, &mut out);
        if fast {
            self.queue(from, transport, &out);
        }
        self.scratch = out;
        if fast {
            return;
        }
        let request = match Request::parse(bytes) {
            Ok(r) => r,
            Err(e) => {
                self.events.push_back(Event::BadQuery(e));
                let mut out = std::mem::take(&mut self.scratch);
                if let Outcome::Answered { .. } = self.zone.respond_error(e, &mut out) {
                    self.queue(from, transport, &out);
                }
                self.scratch = out;
                return;
            }
        };
        let waiter = Waiter {
            from,
            transport,
            request,
        };
        match self.zone.answer(&waiter.request) {
            Answer::Ready(response) => self.reply(&waiter, &response),
            Answer::Missing => match self.config.mode {
                Mode::Local => {
                    let r = self.zone.nxdomain();
                    self.reply(&waiter, &r);
                }
                Mode::Decentralised => self.start_lookup(now, waiter, None),
            },
            Answer::MissingReverse(addr) => match self.config.mode {
                Mode::Decentralised
                    if matches!(
                        waiter.request.query.query_type(),
                        RecordType::PTR | RecordType::ANY
                    ) =>
                {
                    self.start_lookup(now, waiter, Some(addr))
                }
                _ => {
                    let r = self.zone.reverse_response(&waiter.request, addr, None);
                    self.reply(&waiter, &r);
                }
            },
            Answer::Service(query) => match self.config.mode {
                // A host's own registration here is the answer; every
                // registrant of a service may be elsewhere.
                Mode::Decentralised
                    if query
                        .host
                        .as_ref()
                        .is_none_or(|h| self.zone.services().get(&query.name, h).is_none()) =>
                {
                    self.start_service_lookup(now, waiter, query)
                }
                _ => {
                    let r = self.zone.service_response(&waiter.request, &query, &[]);
                    self.reply(&waiter, &r);
                }
            },
            Answer::Outside if self.config.forward => self.forward(now, waiter, bytes),
            Answer::Outside => self.reply(&waiter, &refused()),
        }
    }

    /// Answers `waiter` from the cache, or joins or starts a forward.
    fn forward(&mut self, now: Instant, waiter: Waiter, bytes: &[u8]) {
        let key = Key::of(&waiter.request);
        if let Some((reply, age)) = self.cache.get(&key, now)
            && let Some(answer) = forward::rewrite(reply, &waiter.request, age)
        {
            self.stats.forward_cache_hits += 1;
            return self.relay(&waiter, &answer);
        }
        if self.waiting >= self.config.max_pending {
            return self.servfail(&waiter);
        }
        if let Some(id) = self.forwards_by_key.get(&key)
            && let Some(Pending::Forward { waiters, .. }) = self.pending.get_mut(id)
        {
            waiters.push(waiter);
            self.waiting += 1;
            return;
        }
        // A message ID the client did not choose, from the OS.
        let mut upstream_id = [0; 2];
        if getrandom::fill(&mut upstream_id).is_err() {
            return self.servfail(&waiter);
        }
        let mut query = bytes.to_vec();
        if let Some(head) = query.get_mut(..2) {
            head.copy_from_slice(&upstream_id);
        }
        let id = self.new_id();
        let transport = waiter.transport;
        self.stats.forwards += 1;
        self.forwards.push_back(Forward {
            id,
            query: query.clone(),
            transport,
        });
        self.forwards_by_key.insert(key.clone(), id);
        self.waiting += 1;
        self.pending.insert(
            id,
            Pending::Forward {
                deadline: now + self.config.lookup_timeout,
                key,
                upstream_id: u16::from_be_bytes(upstream_id),
                query,
                transport,
                waiters: vec![waiter],
            },
        );
    }

    /// Sends `waiter` the upstream's `answer` (already carrying its ID),
    /// truncated if it exceeds what the client takes.
    fn relay(&mut self, waiter: &Waiter, answer: &[u8]) {
        let limit = self.zone.response_limit(&waiter.request, waiter.transport);
        if answer.len() <= limit {
            self.queue(waiter.from, waiter.transport, answer);
        } else {
            let mut out = std::mem::take(&mut self.scratch);
            emit_truncated(
                &waiter.request,
                self.zone.config().max_udp_payload,
                &mut out,
            );
            self.queue(waiter.from, waiter.transport, &out);
            self.scratch = out;
        }
    }

    fn start_lookup(&mut self, now: Instant, waiter: Waiter, addr: Option<Ipv4Addr>) {
        if self.waiting >= self.config.max_pending {
            return self.servfail(&waiter);
        }
        let name = match addr {
            Some(addr) => format!("@{addr}"),
            None => relative_lowercase(&self.zone, &waiter.request),
        };
        // Coalesce queries for the same name into one lookup.
        if let Some(id) = self.lookups_by_name.get(&name)
            && let Some(Pending::Lookup { waiters, .. }) = self.pending.get_mut(id)
        {
            waiters.push(waiter);
            self.waiting += 1;
            return;
        }
        let id = self.new_id();
        self.stats.lookups += 1;
        self.store_requests.push_back(match addr {
            Some(addr) => StoreRequest::LookupAddress { id, addr },
            None => StoreRequest::Lookup {
                id,
                name: name.clone(),
            },
        });
        self.lookups_by_name.insert(name.clone(), id);
        self.waiting += 1;
        self.pending.insert(
            id,
            Pending::Lookup {
                name,
                addr,
                deadline: now + self.config.lookup_timeout,
                waiters: vec![waiter],
            },
        );
    }

    fn start_service_lookup(&mut self, now: Instant, waiter: Waiter, query: ServiceQuery) {
        if self.waiting >= self.config.max_pending {
            return self.servfail(&waiter);
        }
        if let Some(id) = self.service_lookups.get(&query)
            && let Some(Pending::ServiceLookup { waiters, .. }) = self.pending.get_mut(id)
        {
            waiters.push(waiter);
            self.waiting += 1;
            return;
        }
        let id = self.new_id();
        self.stats.lookups += 1;
        self.store_requests.push_back(StoreRequest::LookupService {
            id,
            name: query.name.clone(),
            host: query.host.clone(),
        });
        self.service_lookups.insert(query.clone(), id);
        self.waiting += 1;
        self.pending.insert(
            id,
            Pending::ServiceLookup {
                query,
                deadline: now + self.config.lookup_timeout,
                waiters: vec![waiter],
            },
        );
    }

    fn reply(&mut self, waiter: &Waiter, response: &Response) {
        let mut out = std::mem::take(&mut self.scratch);
        self.zone
            .emit(&waiter.request, response, waiter.transport, &mut out);
        self.queue(waiter.from, waiter.transport, &out);
        self.scratch = out;
    }

    fn servfail(&mut self, waiter: &Waiter) {
        self.stats.servfail += 1;
        let response = Response {
            rcode: ResponseCode::ServFail,
            authoritative: false,
            sections: Sections::default(),
        };
        self.reply(waiter, &response);
    }

    fn queue(&mut self, to: SocketAddr, transport: Transport, message: &[u8]) {
        let payload = match transport {
            Transport::Udp => message.to_vec(),
            Transport::Tcp => {
                let mut framed = Vec::with_capacity(message.len() + 2);
                if frame_tcp(message, &mut framed).is_err() {
                    debug_assert!(false, "responses never exceed 65535 octets");
                    return;
                }
                framed
            }
        };
        self.stats.responses += 1;
        self.transmits.push_back(Transmit {
            destination: to,
            transport,
            payload,
        });
    }

    /// Registers `name` (relative to the zone, or absolute inside it) →
    /// `addr`, from a DHCP hostname/FQDN option or the API; with `ttl` it
    /// expires. In decentralised mode the name is also published.
    pub fn register(
        &mut self,
        now: Instant,
        name: &str,
        addr: Ipv4Addr,
        ttl: Option<Duration>,
    ) -> Result<(), RegisterError> {
        if !self.zone.config().network.contains(&addr) {
            return Err(RegisterError::OutsideNetwork(addr));
        }
        let rel = self
            .zone
            .relative(name)
            .ok_or(crate::error::TableError::InvalidName { len: name.len() })?
            .to_ascii_lowercase();
        self.zone.insert(&rel, addr, ttl.map(|t| now + t))?;
        if self.config.mode == Mode::Decentralised {
            let id = self.new_id();
            self.store_requests.push_back(StoreRequest::Publish {
                id,
                name: rel.clone(),
                addr,
                ttl: ttl.unwrap_or(self.config.publish_ttl),
            });
            self.pending.insert(id, Pending::Publish { name: rel });
        }
        Ok(())
    }

    /// Sets the IPv6 addresses of the host at `addr`, for AAAA and
    /// `ip6.arpa` answers ([`Zone::set_ipv6_addrs`]).
    pub fn set_ipv6_addrs(&mut self, addr: Ipv4Addr, v6: &[std::net::Ipv6Addr]) {
        self.zone.set_ipv6_addrs(addr, v6);
    }

    /// Registers `service` under `name` (`_service._proto`) for `host`
    /// (relative to the zone, or absolute inside it). In decentralised mode
    /// it is also published for `ttl` (default [`Config::publish_ttl`]):
    /// call again before it runs out to keep it in the store.
    pub fn register_service(
        &mut self,
        name: &str,
        host: &str,
        service: Service,
        ttl: Option<Duration>,
    ) -> Result<(), ServiceError> {
        let name = service_name(name)?;
        let host = self
            .zone
            .relative(host)
            .ok_or(ServiceError::InvalidHost)?
            .to_ascii_lowercase();
        self.zone
            .insert_service(&name, &host, service.clone(), None)?;
        if self.config.mode == Mode::Decentralised {
            let id = self.new_id();
            self.store_requests.push_back(StoreRequest::PublishService {
                id,
                name: name.clone(),
                host,
                service,
                ttl: ttl.unwrap_or(self.config.publish_ttl),
            });
            self.pending.insert(id, Pending::Publish { name });
        }
        Ok(())
    }

    /// Removes `host`'s registration of service `name`; in decentralised
    /// mode it is withdrawn from the store too.
    pub fn unregister_service(&mut self, name: &str, host: &str) -> Option<Service> {
        let name = service_name(name).ok()?;
        let host = self.zone.relative(host)?.to_ascii_lowercase();
        let prev = self.zone.remove_service(&name, &host)?;
        if self.config.mode == Mode::Decentralised {
            let id = self.new_id();
            self.store_requests
                .push_back(StoreRequest::UnpublishService {
                    id,
                    name: name.clone(),
                    host,
                });
            self.pending.insert(id, Pending::Publish { name });
        }
        Some(prev)
    }

    /// Removes `name`; in decentralised mode it is withdrawn from the store
    /// too. Returns its address.
    pub fn unregister(&mut self, name: &str) -> Option<Ipv4Addr> {
        let rel = self.zone.relative(name)?.to_ascii_lowercase();
        let addr = self.zone.remove(&rel)?;
        if self.config.mode == Mode::Decentralised {
            let id = self.new_id();
            self.store_requests.push_back(StoreRequest::Unpublish {
                id,
                name: rel.clone(),
            });
            self.pending.insert(id, Pending::Publish { name: rel });
        }
        Some(addr)
    }

    /// Feeds the store's result for request `id`. Unknown or late ids are
    /// ignored.
    pub fn handle_store_response(&mut self, now: Instant, id: RequestId, result: StoreResult) {
        let Some(pending) = self.pending.remove(&id) else {
            return;
        };
        match pending {
            Pending::Publish { name } => {
                if result == StoreResult::Failed {
                    self.events.push_back(Event::PublishFailed { name });
                }
            }
            Pending::Lookup {
                name,
                addr: Some(addr),
                waiters,
                ..
            } => {
                self.lookups_by_name.remove(&name);
                self.waiting -= waiters.len();
                // Every address of the network has a rule name: without an
                // answer from the store, that is the answer.
                let found = match result {
                    StoreResult::FoundName { name, ttl } => {
                        let ttl = ttl.min(self.config.cache_ttl);
                        let _ = self.zone.insert(&name, addr, Some(now + ttl));
                        Some(name)
                    }
                    _ => None,
                };
                for w in &waiters {
                    let r = self
                        .zone
                        .reverse_response(&w.request, addr, found.as_deref());
                    self.reply(w, &r);
                }
            }
            Pending::Lookup {
                name,
                addr: None,
                waiters,
                ..
            } => {
                self.lookups_by_name.remove(&name);
                self.waiting -= waiters.len();
                match result {
                    // The store is written by others: an address outside
                    // the network is never answered (nor cached).
                    StoreResult::Found { addr, .. }
                        if !self.config.zone.network.contains(&addr) =>
                    {
                        self.stats.outside_network += 1;
                        let r = self.zone.nxdomain();
                        for w in &waiters {
                            self.reply(w, &r);
                        }
                    }
                    StoreResult::Found { addr, ttl } => {
                        let ttl = ttl.min(self.config.cache_ttl);
                        // Cache it; a name the table refuses is still answered.
                        let _ = self.zone.insert(&name, addr, Some(now + ttl));
                        for w in &waiters {
                            let r = self.zone.address_response(&w.request, addr);
                            self.reply(w, &r);
                        }
                    }
                    StoreResult::NotFound
                    | StoreResult::Done
                    | StoreResult::FoundName { .. }
                    | StoreResult::FoundServices(_) => {
                        let r = self.zone.nxdomain();
                        for w in &waiters {
                            self.reply(w, &r);
                        }
                    }
                    StoreResult::Failed => {
                        for w in &waiters {
                            self.servfail(w);
                        }
                    }
                }
            }
            Pending::ServiceLookup { query, waiters, .. } => {
                self.service_lookups.remove(&query);
                self.waiting -= waiters.len();
                let local = match &query.host {
                    Some(h) => self.zone.services().get(&query.name, h).is_some(),
                    None => self
                        .zone
                        .services()
                        .of_service(&query.name)
                        .next()
                        .is_some(),
                };
                let remote = match result {
                    StoreResult::FoundServices(found) => found,
                    // The registrations here still stand.
                    StoreResult::Failed if local => Vec::new(),
                    StoreResult::Failed => {
                        for w in &waiters {
                            self.servfail(w);
                        }
                        return;
                    }
                    _ => Vec::new(),
                };
                for w in &waiters {
                    let r = self.zone.service_response(&w.request, &query, &remote);
                    self.reply(w, &r);
                }
            }
            Pending::Forward { key, waiters, .. } => {
                // Forwarding results arrive through handle_forward_response:
                // here only its deadline ends it.
                self.forwards_by_key.remove(&key);
                self.waiting -= waiters.len();
                for w in &waiters {
                    self.servfail(w);
                }
            }
        }
    }

    /// Feeds the upstream resolver's reply to forward `id`. A reply that
    /// is not a response to the query as sent (its message ID and question)
    /// is dropped with [`Event::ForwardRejected`] and the query keeps
    /// waiting; a truncated one is asked again over TCP (a new
    /// [`Server::poll_forward`] with the same `id`); otherwise every client
    /// waiting for it gets it (truncated to what each takes) and it is
    /// cached for its TTL.
    pub fn handle_forward_response(&mut self, now: Instant, id: RequestId, reply: &[u8]) {
        let Some(Pending::Forward {
            key,
            upstream_id,
            query,
            transport,
            ..
        }) = self.pending.get_mut(&id)
        else {
            return;
        };
        let checked = match forward::check(reply, *upstream_id, key) {
            Ok(c) => c,
            Err(error) => {
                self.stats.forward_rejected += 1;
                self.events.push_back(Event::ForwardRejected { id, error });
                return;
            }
        };
        if checked.truncated && *transport == Transport::Udp {
            *transport = Transport::Tcp;
            self.stats.forwards += 1;
            self.forwards.push_back(Forward {
                id,
                query: query.clone(),
                transport: Transport::Tcp,
            });
            return;
        }
        let Some(Pending::Forward { key, waiters, .. }) = self.pending.remove(&id) else {
            return;
        };
        self.forwards_by_key.remove(&key);
        self.waiting -= waiters.len();
        if let Some(ttl) = checked.ttl {
            self.cache.insert(key, reply, now, ttl);
        }
        for w in &waiters {
            match forward::rewrite(reply, &w.request, Duration::ZERO) {
                Some(answer) => self.relay(w, &answer),
                None => self.servfail(w),
            }
        }
    }

    /// Bytes and entries of upstream answers cached.
    pub fn forward_cache(&self) -> (usize, usize) {
        (self.cache.bytes(), self.cache.len())
    }

    /// Handles the passing of time: expired names go, overdue lookups and
    /// forwards get SERVFAIL.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired = self.zone.expire(now);
        if expired > 0 {
            self.events.push_back(Event::Expired { count: expired });
        }
        let mut due: Vec<RequestId> = self
            .pending
            .iter()
            .filter(|(_, p)| match p {
                Pending::Lookup { deadline, .. }
                | Pending::ServiceLookup { deadline, .. }
                | Pending::Forward { deadline, .. } => *deadline <= now,
                Pending::Publish { .. } => false,
            })
            .map(|(id, _)| *id)
            .collect();
        due.sort();
        for id in due {
            self.events.push_back(Event::TimedOut { id });
            self.handle_store_response(now, id, StoreResult::Failed);
        }
    }

    /// The next instant [`Server::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let pending = self
            .pending
            .values()
            .filter_map(|p| match p {
                Pending::Lookup { deadline, .. }
                | Pending::ServiceLookup { deadline, .. }
                | Pending::Forward { deadline, .. } => Some(*deadline),
                Pending::Publish { .. } => None,
            })
            .min();
        [
            pending,
            self.zone.table().next_expiry(),
            self.zone.services().next_expiry(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next response to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next request for the store.
    pub fn poll_store_request(&mut self) -> Option<StoreRequest> {
        self.store_requests.pop_front()
    }

    /// The next query to forward upstream.
    pub fn poll_forward(&mut self) -> Option<Forward> {
        self.forwards.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

fn relative_lowercase(zone: &Zone, request: &Request) -> String {
    let name = request.query.name();
    let n = name.iter().len();
    let z = zone.config().zone.iter().len();
    let mut out = String::new();
    for (i, label) in name.iter().take(n.saturating_sub(z)).enumerate() {
        if i > 0 {
            out.push('.');
        }
        out.extend(label.iter().map(|b| char::from(b.to_ascii_lowercase())));
    }
    out
}
