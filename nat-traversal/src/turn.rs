//! A TURN client (RFC 8656) for relaying through a TURN server when no
//! direct path works and no common neighbour relays.
//!
//! It allocates a relayed address (§7), keeps it with Refresh (§8),
//! installs and refreshes permissions for peers' IP addresses (§9) and
//! exchanges data with Send and Data indications (§11) or, once
//! [`TurnClient::bind_channel`] has bound a channel to a peer, with 4-byte
//! ChannelData headers (§12). With
//! [`TurnConfig::credentials`] it answers the server's 401 challenge with
//! the long-term credential mechanism (RFC 8489 §9.2: USERNAME, REALM,
//! NONCE and MESSAGE-INTEGRITY keyed with `MD5(username:realm:password)`)
//! and follows 438 Stale Nonce; without, a challenge yields
//! [`TurnFailure::AuthRequired`]. Usernames and passwords are used as given
//! (no OpaqueString preparation, RFC 8265).
//!
//! # Data path
//!
//! [`TurnClient::send`] and [`TurnEvent::Data`] copy every packet into a
//! new `Vec`. The allocation-free path is [`TurnClient::send_into`], which
//! writes a ChannelData message (or, before the peer's channel is bound, a
//! Send indication) into the caller's buffer, and
//! [`TurnClient::handle_channel_data`], which returns the payload of a
//! ChannelData message as a slice of the received datagram (Data
//! indications still arrive as owned [`TurnEvent::Data`]). Channels are
//! bound explicitly, once per peer; a bound channel is re-bound every
//! 4 minutes, which refreshes both the binding (10 minute lifetime, §12)
//! and the peer's permission (5 minutes, §9) with one request.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

use md5::{Digest, Md5};

use crate::error::Error;
use crate::wire::channel_data::{
    self, MAX_CHANNEL, MIN_CHANNEL, Packet as ChannelDataPacket, Repr as ChannelDataRepr,
};
use crate::wire::stun::{self, Attribute, Class, Method, Packet, Repr, TransactionId};
use crate::{Socket, Transmit};

/// Permission lifetime (RFC 8656 §9): 300 s; refreshed a minute early.
const PERMISSION_REFRESH: Duration = Duration::from_secs(240);
/// Channel bindings last 600 s (RFC 8656 §12); re-binding at the
/// permission's pace refreshes both with one request.
const CHANNEL_REFRESH: Duration = PERMISSION_REFRESH;
/// UDP, for REQUESTED-TRANSPORT.
const UDP: u8 = 17;

/// TURN client configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnConfig {
    /// The TURN server.
    pub server: SocketAddr,
    /// Requested allocation lifetime (RFC 8656 default 600 s).
    pub lifetime: Duration,
    /// First retransmission timeout of requests.
    pub initial_rto: Duration,
    /// Transmissions per request before giving up.
    pub max_transmits: u32,
    /// Long-term credentials, if the server asks for them.
    pub credentials: Option<TurnCredentials>,
}

/// A TURN username and password (RFC 8489 §9.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnCredentials {
    /// The username.
    pub username: String,
    /// The password.
    pub password: String,
}

impl TurnConfig {
    /// Defaults for `server`.
    pub fn new(server: SocketAddr) -> TurnConfig {
        TurnConfig {
            server,
            lifetime: Duration::from_secs(600),
            initial_rto: Duration::from_millis(250),
            max_transmits: 5,
            credentials: None,
        }
    }
}

/// Why the client gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TurnFailure {
    /// A request went unanswered.
    Timeout {
        /// Its method.
        method: u16,
    },
    /// The server wants long-term credentials we lack, or refused ours.
    AuthRequired,
    /// The server refused a request.
    Rejected {
        /// Its method.
        method: u16,
        /// The error code.
        code: u16,
    },
}

/// Events from [`TurnClient`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TurnEvent {
    /// The allocation exists.
    Allocated {
        /// Our relayed address: peers send here.
        relayed: SocketAddr,
        /// Our address as the server saw it.
        mapped: Option<SocketAddr>,
        /// Granted lifetime.
        lifetime: Duration,
    },
    /// A permission for this peer IP is installed.
    PermissionCreated(IpAddr),
    /// A channel to `peer` is bound (RFC 8656 §12):
    /// [`TurnClient::send_into`] now sends ChannelData, and the server
    /// relays the peer's data as ChannelData too.
    ChannelBound {
        /// The peer.
        peer: SocketAddr,
        /// The channel number.
        channel: u16,
    },
    /// Binding or re-binding a channel failed. The channel is released;
    /// data to the peer goes by Send indication, which needs a permission
    /// ([`TurnClient::create_permission`]). The allocation is unaffected.
    ChannelFailed {
        /// The peer.
        peer: SocketAddr,
        /// The channel number.
        channel: u16,
        /// Why.
        failure: TurnFailure,
    },
    /// Data relayed from a peer.
    Data {
        /// The peer.
        peer: SocketAddr,
        /// Its bytes.
        data: Vec<u8>,
    },
    /// The client gave up; the allocation is unusable.
    Failed(TurnFailure),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Allocate,
    Refresh,
    Permission(IpAddr),
    Channel { number: u16, peer: SocketAddr },
}

/// A channel bound, or being bound, to a peer.
#[derive(Debug, Clone, Copy)]
struct Channel {
    number: u16,
    /// A ChannelBind succeeded; ChannelData may be sent.
    bound: bool,
    /// When to re-bind (meaningful once bound).
    refresh_at: Instant,
}

#[derive(Debug)]
struct Request {
    id: TransactionId,
    purpose: Purpose,
    method: Method,
    attributes: Vec<Attribute>,
    /// Challenges (401, 438) answered for this request so far.
    challenges: u8,
    payload: Vec<u8>,
    transmits: u32,
    retransmit_at: Instant,
    rto: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Allocating,
    Allocated {
        relayed: SocketAddr,
        refresh_at: Instant,
    },
    Failed,
}

/// Long-term credential state learned from a challenge.
#[derive(Debug, Clone)]
struct Auth {
    username: String,
    realm: String,
    nonce: String,
    key: [u8; 16],
}

/// The long-term key, `MD5(username ":" realm ":" password)` (RFC 8489 §9.2.2).
fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    let mut key = [0; 16];
    key.copy_from_slice(&h.finalize());
    key
}

/// Counters of a TURN client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TurnMetrics {
    /// Data messages sent: Send indications and ChannelData.
    pub sent: u64,
    /// Data messages received: Data indications and ChannelData.
    pub received: u64,
    /// Requests sent, retransmissions included.
    pub requests_sent: u64,
}

/// The TURN client machine. Call order as for the other machines: drain
/// [`TurnClient::poll_transmit`] after every call, feed datagrams from the
/// server to [`TurnClient::handle_input`], call
/// [`TurnClient::handle_timeout`] at [`TurnClient::poll_timeout`].
#[derive(Debug)]
pub struct TurnClient {
    config: TurnConfig,
    state: State,
    requests: Vec<Request>,
    permissions: HashMap<IpAddr, Instant>,
    pending_permissions: Vec<IpAddr>,
    channels: HashMap<SocketAddr, Channel>,
    channel_peers: HashMap<u16, SocketAddr>,
    next_channel: u16,
    pending_channels: Vec<SocketAddr>,
    auth: Option<Auth>,
    rng: ChaCha8Rng,
    metrics: TurnMetrics,
    transmits: VecDeque<Transmit>,
    events: VecDeque<TurnEvent>,
}

impl TurnClient {
    /// Start allocating at `now`; transaction ids come from the operating
    /// system's random source.
    ///
    /// # Panics
    /// If the operating system's random source fails (as `std`'s
    /// `HashMap::new` does).
    pub fn new(now: Instant, config: TurnConfig) -> Result<TurnClient, Error> {
        TurnClient::with_rng(config, now, crate::os_rng())
    }

    /// [`TurnClient::new`] with **predictable** randomness from `seed`, for tests and simulators only; production code uses
    /// [`TurnClient::new`].
    pub fn new_with_insecure_seed(
        now: Instant,
        config: TurnConfig,
        seed: u64,
    ) -> Result<TurnClient, Error> {
        TurnClient::with_rng(config, now, ChaCha8Rng::seed_from_u64(seed))
    }

    fn with_rng(config: TurnConfig, now: Instant, rng: ChaCha8Rng) -> Result<TurnClient, Error> {
        if config.max_transmits == 0 || config.lifetime.is_zero() {
            return Err(Error::InvalidConfig {
                what: "TURN retransmissions or lifetime",
            });
        }
        let mut c = TurnClient {
            config,
            state: State::Allocating,
            requests: Vec::new(),
            permissions: HashMap::new(),
            pending_permissions: Vec::new(),
            channels: HashMap::new(),
            channel_peers: HashMap::new(),
            next_channel: MIN_CHANNEL,
            pending_channels: Vec::new(),
            auth: None,
            rng,
            metrics: TurnMetrics::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        let lifetime = c.lifetime_secs();
        c.request(
            now,
            Purpose::Allocate,
            Method::ALLOCATE,
            vec![
                Attribute::RequestedTransport(UDP),
                Attribute::Lifetime(lifetime),
            ],
        );
        Ok(c)
    }

    fn lifetime_secs(&self) -> u32 {
        u32::try_from(self.config.lifetime.as_secs()).unwrap_or(u32::MAX)
    }

    /// Our relayed address, once allocated.
    pub fn relayed(&self) -> Option<SocketAddr> {
        match self.state {
            State::Allocated { relayed, .. } => Some(relayed),
            _ => None,
        }
    }

    /// Counters so far.
    pub fn metrics(&self) -> TurnMetrics {
        self.metrics
    }

    fn request(&mut self, now: Instant, purpose: Purpose, method: Method, attrs: Vec<Attribute>) {
        self.request_with(now, purpose, method, attrs, 0);
    }

    fn request_with(
        &mut self,
        now: Instant,
        purpose: Purpose,
        method: Method,
        attributes: Vec<Attribute>,
        challenges: u8,
    ) {
        let mut id = [0; 12];
        self.rng.fill_bytes(&mut id);
        let id = TransactionId(id);
        let mut repr = Repr::binding_request(id);
        repr.method = method;
        repr.attributes = attributes.clone();
        repr.fingerprint = true;
        let mut key: &[u8] = &[];
        if let Some(auth) = &self.auth {
            repr.attributes
                .push(Attribute::Username(auth.username.clone()));
            repr.attributes.push(Attribute::Realm(auth.realm.clone()));
            repr.attributes.push(Attribute::Nonce(auth.nonce.clone()));
            repr.message_integrity = true;
            key = &auth.key;
        }
        let Ok(payload) = repr.to_bytes(key) else {
            debug_assert!(false, "TURN request does not encode");
            return;
        };
        self.requests.retain(|r| r.purpose != purpose);
        self.requests.push(Request {
            id,
            purpose,
            method,
            attributes,
            challenges,
            payload,
            transmits: 0,
            retransmit_at: now,
            rto: self.config.initial_rto,
        });
        self.handle_timeout(now);
    }

    /// Allow `peer` to send to our relayed address (and us to it). Queued
    /// until the allocation exists.
    pub fn create_permission(&mut self, now: Instant, peer: IpAddr) {
        match self.state {
            State::Allocated { .. } => {
                self.request(
                    now,
                    Purpose::Permission(peer),
                    Method::CREATE_PERMISSION,
                    vec![Attribute::XorPeerAddress(SocketAddr::new(peer, 0))],
                );
            }
            State::Allocating => self.pending_permissions.push(peer),
            State::Failed => {}
        }
    }

    /// Bind a channel to `peer` (RFC 8656 §12.1) and return its number.
    ///
    /// Sends a ChannelBind request (queued until the allocation exists),
    /// which also installs a permission for the peer's IP. On success
    /// [`TurnEvent::ChannelBound`] follows, on failure
    /// [`TurnEvent::ChannelFailed`]. Until bound, [`TurnClient::send_into`]
    /// uses Send indications. Binding an already bound (or binding) peer
    /// returns its number and sends nothing. Numbers are handed out in
    /// turn over 0x4000..=0x4FFF, so a released number is reused only after
    /// all others (§12: not within 5 minutes of its expiry).
    pub fn bind_channel(&mut self, now: Instant, peer: SocketAddr) -> Result<u16, Error> {
        if self.state == State::Failed {
            return Err(Error::NoPath);
        }
        if let Some(channel) = self.channels.get(&peer) {
            return Ok(channel.number);
        }
        let number = (0..=MAX_CHANNEL - MIN_CHANNEL)
            .map(|i| {
                MIN_CHANNEL
                    + (self.next_channel - MIN_CHANNEL + i) % (MAX_CHANNEL - MIN_CHANNEL + 1)
            })
            .find(|n| !self.channel_peers.contains_key(n))
            .ok_or(Error::NoFreeChannel)?;
        self.next_channel = if number == MAX_CHANNEL {
            MIN_CHANNEL
        } else {
            number + 1
        };
        self.channels.insert(
            peer,
            Channel {
                number,
                bound: false,
                refresh_at: now,
            },
        );
        self.channel_peers.insert(number, peer);
        match self.state {
            State::Allocated { .. } => self.request_channel_bind(now, number, peer),
            _ => self.pending_channels.push(peer),
        }
        Ok(number)
    }

    fn request_channel_bind(&mut self, now: Instant, number: u16, peer: SocketAddr) {
        self.request(
            now,
            Purpose::Channel { number, peer },
            Method::CHANNEL_BIND,
            vec![
                Attribute::ChannelNumber(number),
                Attribute::XorPeerAddress(peer),
            ],
        );
    }

    fn release_channel(&mut self, number: u16, peer: SocketAddr, failure: TurnFailure) {
        if self.channels.get(&peer).is_some_and(|c| c.number == number) {
            self.channels.remove(&peer);
            self.channel_peers.remove(&number);
            self.events.push_back(TurnEvent::ChannelFailed {
                peer,
                channel: number,
                failure,
            });
        }
    }

    /// The channel bound to `peer`, once [`TurnEvent::ChannelBound`] said
    /// so.
    pub fn channel(&self, peer: SocketAddr) -> Option<u16> {
        self.channels
            .get(&peer)
            .filter(|c| c.bound)
            .map(|c| c.number)
    }

    /// Write a message relaying `data` to `peer` into `out`, without
    /// allocating; returns the destination (the server) and the message
    /// length.
    ///
    /// With a bound channel this is a ChannelData message (RFC 8656
    /// §12.4, 4 bytes of overhead, unpadded as allowed over UDP, §12.5).
    /// Otherwise it is a Send indication (§11.1, 36 bytes of overhead for
    /// an IPv4 peer, 48 for IPv6, plus padding), which the server relays
    /// only if the peer's IP has a permission
    /// ([`TurnClient::create_permission`], or a ChannelBind once it
    /// succeeded). Fails with [`Error::NoPath`] before allocation and with
    /// [`WireError::BufferTooSmall`](crate::WireError::BufferTooSmall) when `out` is too short.
    pub fn send_into(
        &mut self,
        peer: SocketAddr,
        data: &[u8],
        out: &mut [u8],
    ) -> Result<(SocketAddr, usize), Error> {
        if self.relayed().is_none() {
            return Err(Error::NoPath);
        }
        let len = match self.channels.get(&peer) {
            Some(channel) if channel.bound => ChannelDataRepr {
                channel_number: channel.number,
                payload: data,
            }
            .emit(&mut ChannelDataPacket::new_unchecked(out))?,
            _ => {
                let id = self.transaction_id();
                stun::emit_send_indication(&mut Packet::new_unchecked(out), id, peer, data)?
            }
        };
        self.metrics.sent += 1;
        Ok((self.config.server, len))
    }

    fn transaction_id(&mut self) -> TransactionId {
        let mut id = [0; 12];
        self.rng.fill_bytes(&mut id);
        TransactionId(id)
    }

    /// Handle a datagram that may be ChannelData from the server (RFC 8656
    /// §12.6), without allocating: returns the peer and the payload, a
    /// slice of `bytes`. Returns `None` for anything else (feed that to
    /// [`TurnClient::handle_input`]), for malformed messages and for
    /// channels we have not bound.
    pub fn handle_channel_data<'a>(
        &mut self,
        from: SocketAddr,
        bytes: &'a [u8],
    ) -> Option<(SocketAddr, &'a [u8])> {
        if from != self.config.server
            || self.relayed().is_none()
            || !channel_data::is_channel_data(bytes)
        {
            return None;
        }
        let repr = ChannelDataRepr::parse_bytes(bytes).ok()?;
        let peer = *self.channel_peers.get(&repr.channel_number)?;
        self.metrics.received += 1;
        Some((peer, repr.payload))
    }

    /// Relay `data` to `peer` with a Send indication (RFC 8656 §11.1),
    /// queued for [`TurnClient::poll_transmit`].
    pub fn send(&mut self, peer: SocketAddr, data: &[u8]) -> Result<(), Error> {
        if self.relayed().is_none() {
            return Err(Error::NoPath);
        }
        // Sized for an IPv6 peer; trimmed to the emitted length.
        let mut payload = vec![0; stun::HEADER_LEN + 24 + 4 + data.len() + 3];
        let id = self.transaction_id();
        let len = stun::emit_send_indication(
            &mut Packet::new_unchecked(&mut payload[..]),
            id,
            peer,
            data,
        )?;
        payload.truncate(len);
        self.metrics.sent += 1;
        self.transmits.push_back(Transmit {
            source: Socket::Primary,
            destination: self.config.server,
            payload,
            ttl: None,
        });
        Ok(())
    }

    fn fail(&mut self, failure: TurnFailure) {
        self.state = State::Failed;
        self.requests.clear();
        self.events.push_back(TurnEvent::Failed(failure));
    }

    /// Handle a datagram; returns whether it came from the server and was
    /// a TURN message for us. ChannelData is accepted here too and becomes
    /// a [`TurnEvent::Data`] (a copy); [`TurnClient::handle_channel_data`]
    /// avoids that.
    pub fn handle_input(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> bool {
        if from != self.config.server || self.state == State::Failed {
            return false;
        }
        if channel_data::is_channel_data(bytes) {
            let Some((peer, data)) = self.handle_channel_data(from, bytes) else {
                return false;
            };
            self.events.push_back(TurnEvent::Data {
                peer,
                data: data.to_vec(),
            });
            return true;
        }
        let Ok(msg) = Repr::parse_bytes(bytes) else {
            return false;
        };
        if msg.class == Class::Indication && msg.method == Method::DATA {
            let peer = msg.attributes.iter().find_map(|a| match a {
                Attribute::XorPeerAddress(p) => Some(*p),
                _ => None,
            });
            let data = msg.attributes.iter().find_map(|a| match a {
                Attribute::Data(d) => Some(d.clone()),
                _ => None,
            });
            let (Some(peer), Some(data)) = (peer, data) else {
                return false;
            };
            self.metrics.received += 1;
            self.events.push_back(TurnEvent::Data { peer, data });
            return true;
        }
        let Some(index) = self
            .requests
            .iter()
            .position(|r| r.id == msg.transaction_id)
        else {
            return false;
        };
        let request = self.requests.remove(index);
        // With credentials in use, answers must carry our key's MAC.
        if let Some(auth) = &self.auth
            && msg.class == Class::Success
            && Packet::new_checked(bytes)
                .and_then(|p| p.verify_integrity(&auth.key))
                .is_err()
        {
            self.requests.insert(index, request);
            return false;
        }
        if msg.class == Class::Error {
            let code = msg
                .attributes
                .iter()
                .find_map(|a| match a {
                    Attribute::ErrorCode { code, .. } => Some(*code),
                    _ => None,
                })
                .unwrap_or(0);
            let method = msg.method.0;
            if code == 401 || code == 438 {
                self.challenge(now, &msg, request, code);
                return true;
            }
            match (request.purpose, code) {
                (_, 401) => self.fail(TurnFailure::AuthRequired),
                (Purpose::Permission(_), _) => {
                    // A refused peer does not break the allocation.
                }
                (Purpose::Channel { number, peer }, _) => {
                    self.release_channel(number, peer, TurnFailure::Rejected { method, code });
                }
                _ => self.fail(TurnFailure::Rejected { method, code }),
            }
            return true;
        }
        if msg.class != Class::Success {
            return false;
        }
        let lifetime = msg
            .attributes
            .iter()
            .find_map(|a| match a {
                Attribute::Lifetime(l) => Some(Duration::from_secs(u64::from(*l))),
                _ => None,
            })
            .unwrap_or(self.config.lifetime);
        // Refresh a minute before expiry, or at half time for short lifetimes.
        let refresh_at = now
            + lifetime
                .saturating_sub(Duration::from_secs(60))
                .max(lifetime / 2);
        match request.purpose {
            Purpose::Allocate => {
                let relayed = msg.attributes.iter().find_map(|a| match a {
                    Attribute::XorRelayedAddress(r) => Some(*r),
                    _ => None,
                });
                let Some(relayed) = relayed else {
                    self.fail(TurnFailure::Rejected {
                        method: msg.method.0,
                        code: 0,
                    });
                    return true;
                };
                self.state = State::Allocated {
                    relayed,
                    refresh_at,
                };
                self.events.push_back(TurnEvent::Allocated {
                    relayed,
                    mapped: msg.mapped_address(),
                    lifetime,
                });
                for peer in std::mem::take(&mut self.pending_permissions) {
                    self.create_permission(now, peer);
                }
                for peer in std::mem::take(&mut self.pending_channels) {
                    if let Some(channel) = self.channels.get(&peer) {
                        self.request_channel_bind(now, channel.number, peer);
                    }
                }
            }
            Purpose::Refresh => {
                if let State::Allocated { relayed, .. } = self.state {
                    self.state = State::Allocated {
                        relayed,
                        refresh_at,
                    };
                }
            }
            Purpose::Permission(peer) => {
                self.permissions.insert(peer, now + PERMISSION_REFRESH);
                self.events.push_back(TurnEvent::PermissionCreated(peer));
            }
            Purpose::Channel { number, peer } => {
                if let Some(channel) = self.channels.get_mut(&peer)
                    && channel.number == number
                {
                    channel.refresh_at = now + CHANNEL_REFRESH;
                    if !channel.bound {
                        channel.bound = true;
                        self.events.push_back(TurnEvent::ChannelBound {
                            peer,
                            channel: number,
                        });
                    }
                }
            }
        }
        true
    }

    /// Answer a 401 (credentials wanted) or 438 (stale nonce) challenge by
    /// re-sending the request with fresh long-term credentials, once each.
    fn challenge(&mut self, now: Instant, msg: &Repr, request: Request, code: u16) {
        let text = |kind| {
            msg.attributes.iter().find_map(|a| match (a, kind) {
                (Attribute::Realm(r), 0) | (Attribute::Nonce(r), 1) => Some(r.clone()),
                _ => None,
            })
        };
        let (Some(credentials), Some(nonce)) = (self.config.credentials.clone(), text(1)) else {
            self.fail(TurnFailure::AuthRequired);
            return;
        };
        let realm = text(0).or_else(|| self.auth.as_ref().map(|a| a.realm.clone()));
        // A second 401 for the same request means our credentials are wrong.
        let limit = if code == 438 { 3 } else { 1 };
        let Some(realm) = realm.filter(|_| request.challenges < limit) else {
            self.fail(TurnFailure::AuthRequired);
            return;
        };
        self.auth = Some(Auth {
            key: long_term_key(&credentials.username, &realm, &credentials.password),
            username: credentials.username,
            realm,
            nonce,
        });
        self.request_with(
            now,
            request.purpose,
            request.method,
            request.attributes,
            request.challenges + 1,
        );
    }

    /// Retransmit requests; refresh the allocation and permissions.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Failed {
            return;
        }
        if let State::Allocated { refresh_at, .. } = self.state
            && now >= refresh_at
            && !self.requests.iter().any(|r| r.purpose == Purpose::Refresh)
        {
            let lifetime = self.lifetime_secs();
            self.request(
                now,
                Purpose::Refresh,
                Method::REFRESH,
                vec![Attribute::Lifetime(lifetime)],
            );
        }
        let due: Vec<IpAddr> = self
            .permissions
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in due {
            self.permissions.insert(ip, now + PERMISSION_REFRESH);
            self.create_permission(now, ip);
        }
        let due: Vec<(SocketAddr, u16)> = self
            .channels
            .iter_mut()
            .filter(|(_, c)| c.bound && c.refresh_at <= now)
            .map(|(peer, c)| {
                c.refresh_at = now + CHANNEL_REFRESH;
                (*peer, c.number)
            })
            .collect();
        for (peer, number) in due {
            self.request_channel_bind(now, number, peer);
        }
        let mut timed_out = Vec::new();
        for r in &mut self.requests {
            if r.retransmit_at > now {
                continue;
            }
            if r.transmits >= self.config.max_transmits {
                timed_out.push(r.purpose);
                continue;
            }
            r.transmits += 1;
            r.retransmit_at = now + r.rto;
            r.rto *= 2;
            self.metrics.requests_sent += 1;
            self.transmits.push_back(Transmit {
                source: Socket::Primary,
                destination: self.config.server,
                payload: r.payload.clone(),
                ttl: None,
            });
        }
        for purpose in timed_out {
            self.requests.retain(|r| r.purpose != purpose);
            match purpose {
                Purpose::Permission(_) => {}
                Purpose::Channel { number, peer } => self.release_channel(
                    number,
                    peer,
                    TurnFailure::Timeout {
                        method: Method::CHANNEL_BIND.0,
                    },
                ),
                Purpose::Allocate => self.fail(TurnFailure::Timeout {
                    method: Method::ALLOCATE.0,
                }),
                Purpose::Refresh => self.fail(TurnFailure::Timeout {
                    method: Method::REFRESH.0,
                }),
            }
            if self.state == State::Failed {
                break;
            }
        }
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// When [`TurnClient::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let requests = self.requests.iter().map(|r| r.retransmit_at);
        let permissions = self.permissions.values().copied();
        let channels = self
            .channels
            .values()
            .filter(|c| c.bound)
            .map(|c| c.refresh_at);
        let refresh = match self.state {
            State::Allocated { refresh_at, .. } => Some(refresh_at),
            _ => None,
        };
        requests
            .chain(permissions)
            .chain(channels)
            .chain(refresh)
            .min()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<TurnEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::error::WireError;

    const SERVER: &str = "192.0.2.1:3478";
    const RELAYED: &str = "192.0.2.1:50000";

    /// Answer a request the way a TURN server does.
    fn answer(request: &[u8], class: Class, attrs: Vec<Attribute>) -> Vec<u8> {
        let req = Repr::parse_bytes(request).unwrap();
        let mut resp = Repr::binding_request(req.transaction_id);
        resp.method = req.method;
        resp.class = class;
        resp.attributes = attrs;
        resp.to_bytes(&[]).unwrap()
    }

    fn allocated(now: Instant) -> TurnClient {
        let mut c =
            TurnClient::new_with_insecure_seed(now, TurnConfig::new(SERVER.parse().unwrap()), 1)
                .unwrap();
        let req = c.poll_transmit().unwrap();
        let parsed = Repr::parse_bytes(&req.payload).unwrap();
        assert_eq!(parsed.method, Method::ALLOCATE);
        assert!(
            parsed
                .attributes
                .contains(&Attribute::RequestedTransport(17))
        );
        let resp = answer(
            &req.payload,
            Class::Success,
            vec![
                Attribute::XorRelayedAddress(RELAYED.parse().unwrap()),
                Attribute::XorMappedAddress("198.51.100.1:4000".parse().unwrap()),
                Attribute::Lifetime(600),
            ],
        );
        assert!(c.handle_input(now, SERVER.parse().unwrap(), &resp));
        c
    }

    #[test]
    fn allocates_permits_and_relays() {
        let now = Instant::now();
        let mut c = allocated(now);
        assert_eq!(c.relayed(), Some(RELAYED.parse().unwrap()));
        assert!(matches!(c.poll_event(), Some(TurnEvent::Allocated { .. })));
        let peer: SocketAddr = "203.0.113.5:7000".parse().unwrap();
        c.create_permission(now, peer.ip());
        let req = c.poll_transmit().unwrap();
        assert_eq!(
            Repr::parse_bytes(&req.payload).unwrap().method,
            Method::CREATE_PERMISSION
        );
        c.handle_input(
            now,
            SERVER.parse().unwrap(),
            &answer(&req.payload, Class::Success, vec![]),
        );
        assert_eq!(
            c.poll_event(),
            Some(TurnEvent::PermissionCreated(peer.ip()))
        );
        c.send(peer, b"hi").unwrap();
        let ind = Repr::parse_bytes(&c.poll_transmit().unwrap().payload).unwrap();
        assert_eq!((ind.class, ind.method), (Class::Indication, Method::SEND));
        assert!(ind.attributes.contains(&Attribute::XorPeerAddress(peer)));
        assert!(ind.attributes.contains(&Attribute::Data(b"hi".to_vec())));
        // A Data indication from the server is delivered; from elsewhere not.
        let mut data = Repr::binding_request(TransactionId([5; 12]));
        data.class = Class::Indication;
        data.method = Method::DATA;
        data.attributes = vec![
            Attribute::XorPeerAddress(peer),
            Attribute::Data(b"yo".to_vec()),
        ];
        let data = data.to_bytes(&[]).unwrap();
        assert!(!c.handle_input(now, peer, &data));
        assert!(c.handle_input(now, SERVER.parse().unwrap(), &data));
        assert_eq!(
            c.poll_event(),
            Some(TurnEvent::Data {
                peer,
                data: b"yo".to_vec()
            })
        );
    }

    #[test]
    fn refreshes_allocation_and_permissions_before_expiry() {
        let now = Instant::now();
        let mut c = allocated(now);
        c.create_permission(now, "203.0.113.5".parse().unwrap());
        let req = c.poll_transmit().unwrap();
        c.handle_input(
            now,
            SERVER.parse().unwrap(),
            &answer(&req.payload, Class::Success, vec![]),
        );
        let at = c.poll_timeout().unwrap();
        assert_eq!(at, now + Duration::from_secs(240));
        c.handle_timeout(at);
        let methods: Vec<Method> = std::iter::from_fn(|| c.poll_transmit())
            .map(|t| Repr::parse_bytes(&t.payload).unwrap().method)
            .collect();
        assert_eq!(methods, vec![Method::CREATE_PERMISSION]);
        let at = now + Duration::from_secs(540);
        c.handle_timeout(at);
        let methods: Vec<Method> = std::iter::from_fn(|| c.poll_transmit())
            .map(|t| Repr::parse_bytes(&t.payload).unwrap().method)
            .collect();
        assert!(methods.contains(&Method::REFRESH), "{methods:?}");
    }

    #[test]
    fn auth_challenge_and_silence_fail() {
        let now = Instant::now();
        let mut c =
            TurnClient::new_with_insecure_seed(now, TurnConfig::new(SERVER.parse().unwrap()), 1)
                .unwrap();
        let req = c.poll_transmit().unwrap();
        let resp = answer(
            &req.payload,
            Class::Error,
            vec![Attribute::ErrorCode {
                code: 401,
                reason: "Unauthorized".into(),
            }],
        );
        c.handle_input(now, SERVER.parse().unwrap(), &resp);
        assert_eq!(
            c.poll_event(),
            Some(TurnEvent::Failed(TurnFailure::AuthRequired))
        );
        assert_eq!(
            c.send("203.0.113.5:1".parse().unwrap(), b"x"),
            Err(Error::NoPath)
        );

        let mut c =
            TurnClient::new_with_insecure_seed(now, TurnConfig::new(SERVER.parse().unwrap()), 1)
                .unwrap();
        let mut sent = 0;
        while let Some(at) = c.poll_timeout() {
            sent += std::iter::from_fn(|| c.poll_transmit()).count();
            c.handle_timeout(at);
        }
        assert_eq!(sent, 5);
        assert_eq!(
            c.poll_event(),
            Some(TurnEvent::Failed(TurnFailure::Timeout { method: 3 }))
        );
    }

    #[test]
    fn answers_long_term_credential_challenges() {
        // MD5("alice:wow.test:secret"), computed independently.
        const KEY: [u8; 16] = [
            13, 148, 75, 38, 174, 184, 204, 231, 243, 202, 199, 17, 241, 50, 10, 141,
        ];
        assert_eq!(long_term_key("alice", "wow.test", "secret"), KEY);
        let now = Instant::now();
        let server: SocketAddr = SERVER.parse().unwrap();
        let mut config = TurnConfig::new(server);
        config.credentials = Some(TurnCredentials {
            username: "alice".into(),
            password: "secret".into(),
        });
        let mut c = TurnClient::new_with_insecure_seed(now, config, 1).unwrap();
        let first = c.poll_transmit().unwrap();
        assert!(!Repr::parse_bytes(&first.payload).unwrap().message_integrity);
        let challenge = answer(
            &first.payload,
            Class::Error,
            vec![
                Attribute::ErrorCode {
                    code: 401,
                    reason: "Unauthorized".into(),
                },
                Attribute::Realm("wow.test".into()),
                Attribute::Nonce("n1".into()),
            ],
        );
        assert!(c.handle_input(now, server, &challenge));
        let second = c.poll_transmit().unwrap();
        let packet = Packet::new_checked(&second.payload[..]).unwrap();
        packet.verify_integrity(&KEY).unwrap();
        let repr = Repr::parse(&packet).unwrap();
        assert!(repr.attributes.contains(&Attribute::Nonce("n1".into())));
        assert!(
            repr.attributes
                .contains(&Attribute::Username("alice".into()))
        );
        // An unauthenticated success is not trusted; an authenticated one is.
        let relayed = vec![Attribute::XorRelayedAddress(RELAYED.parse().unwrap())];
        let forged = answer(&second.payload, Class::Success, relayed.clone());
        assert!(!c.handle_input(now, server, &forged));
        let mut ok = Repr::parse_bytes(&forged).unwrap();
        ok.message_integrity = true;
        assert!(c.handle_input(now, server, &ok.to_bytes(&KEY).unwrap()));
        assert_eq!(c.relayed(), Some(RELAYED.parse().unwrap()));
        // A stale nonce later is followed with the new one.
        c.create_permission(now, "203.0.113.5".parse().unwrap());
        let perm = c.poll_transmit().unwrap();
        let stale = answer(
            &perm.payload,
            Class::Error,
            vec![
                Attribute::ErrorCode {
                    code: 438,
                    reason: "Stale Nonce".into(),
                },
                Attribute::Nonce("n2".into()),
            ],
        );
        assert!(c.handle_input(now, server, &stale));
        let retry = Repr::parse_bytes(&c.poll_transmit().unwrap().payload).unwrap();
        assert_eq!(retry.method, Method::CREATE_PERMISSION);
        assert!(retry.attributes.contains(&Attribute::Nonce("n2".into())));
    }

    /// Bind a channel for `peer` on an allocated client and answer it.
    fn bound(now: Instant, c: &mut TurnClient, peer: SocketAddr) -> u16 {
        let number = c.bind_channel(now, peer).unwrap();
        let req = c.poll_transmit().unwrap();
        let resp = answer(&req.payload, Class::Success, vec![]);
        assert!(c.handle_input(now, SERVER.parse().unwrap(), &resp));
        number
    }

    #[test]
    fn binds_channel_and_relays_channel_data() {
        let now = Instant::now();
        let server: SocketAddr = SERVER.parse().unwrap();
        let peer: SocketAddr = "203.0.113.5:7000".parse().unwrap();
        let mut c = allocated(now);
        c.poll_event();
        assert_eq!(c.bind_channel(now, peer), Ok(0x4000));
        let req = c.poll_transmit().unwrap();
        let parsed = Repr::parse_bytes(&req.payload).unwrap();
        assert_eq!(
            (parsed.class, parsed.method),
            (Class::Request, Method::CHANNEL_BIND)
        );
        assert!(
            parsed
                .attributes
                .contains(&Attribute::ChannelNumber(0x4000))
        );
        assert!(parsed.attributes.contains(&Attribute::XorPeerAddress(peer)));
        // Binding again sends nothing and keeps the number.
        assert_eq!(c.bind_channel(now, peer), Ok(0x4000));
        assert!(c.poll_transmit().is_none());
        // Until bound, send_into writes a Send indication.
        let mut out = [0xa5u8; 128];
        let (to, n) = c.send_into(peer, b"hi", &mut out).unwrap();
        assert_eq!(to, server);
        let ind = Repr::parse_bytes(&out[..n]).unwrap();
        assert_eq!((ind.class, ind.method), (Class::Indication, Method::SEND));
        assert!(ind.attributes.contains(&Attribute::Data(b"hi".to_vec())));
        assert_eq!(c.channel(peer), None);

        let resp = answer(&req.payload, Class::Success, vec![]);
        assert!(c.handle_input(now, server, &resp));
        assert_eq!(
            c.poll_event(),
            Some(TurnEvent::ChannelBound {
                peer,
                channel: 0x4000
            })
        );
        assert_eq!(c.channel(peer), Some(0x4000));
        let (to, n) = c.send_into(peer, b"hi", &mut out).unwrap();
        assert_eq!(
            (to, &out[..n]),
            (server, &[0x40, 0x00, 0x00, 0x02, b'h', b'i'][..])
        );
        assert_eq!(
            c.send_into(peer, b"hi", &mut out[..5]),
            Err(Error::Wire(WireError::BufferTooSmall))
        );
        // ChannelData from the server, padded or not, borrows the payload.
        let padded = [0x40, 0x00, 0x00, 0x02, b'y', b'o', 0, 0];
        assert_eq!(
            c.handle_channel_data(server, &padded),
            Some((peer, &b"yo"[..]))
        );
        assert_eq!(
            c.handle_channel_data(server, &padded[..6]),
            Some((peer, &b"yo"[..]))
        );
        // Not from the server, unbound channel, truncated: ignored.
        assert_eq!(c.handle_channel_data(peer, &padded), None);
        assert_eq!(
            c.handle_channel_data(server, &[0x40, 0x01, 0x00, 0x00]),
            None
        );
        assert_eq!(c.handle_channel_data(server, &padded[..5]), None);
        // handle_input turns it into an owned Data event.
        assert!(c.handle_input(now, server, &padded));
        assert_eq!(
            c.poll_event(),
            Some(TurnEvent::Data {
                peer,
                data: b"yo".to_vec()
            })
        );
        assert!(!c.handle_input(now, server, &[0x40, 0x01, 0x00, 0x00]));
        assert_eq!(c.metrics().sent, 2);
        assert_eq!(c.metrics().received, 3);
        // The next peer gets the next number.
        let other: SocketAddr = "203.0.113.6:7000".parse().unwrap();
        assert_eq!(bound(now, &mut c, other), 0x4001);
    }

    #[test]
    fn channel_bind_waits_for_allocation_and_refreshes() {
        let now = Instant::now();
        let server: SocketAddr = SERVER.parse().unwrap();
        let peer: SocketAddr = "203.0.113.5:7000".parse().unwrap();
        let mut c = TurnClient::new_with_insecure_seed(now, TurnConfig::new(server), 1).unwrap();
        let allocate = c.poll_transmit().unwrap();
        assert_eq!(c.bind_channel(now, peer), Ok(0x4000));
        assert!(c.poll_transmit().is_none());
        let mut out = [0u8; 64];
        assert_eq!(c.send_into(peer, b"x", &mut out), Err(Error::NoPath));
        let resp = answer(
            &allocate.payload,
            Class::Success,
            vec![Attribute::XorRelayedAddress(RELAYED.parse().unwrap())],
        );
        assert!(c.handle_input(now, server, &resp));
        let bind = c.poll_transmit().unwrap();
        assert_eq!(
            Repr::parse_bytes(&bind.payload).unwrap().method,
            Method::CHANNEL_BIND
        );
        assert!(c.handle_input(now, server, &answer(&bind.payload, Class::Success, vec![])));
        // Re-bound before the permission (300 s) lapses, with the same
        // number and peer.
        let at = c.poll_timeout().unwrap();
        assert_eq!(at, now + Duration::from_secs(240));
        let events: Vec<TurnEvent> = std::iter::from_fn(|| c.poll_event()).collect();
        assert!(events.contains(&TurnEvent::ChannelBound {
            peer,
            channel: 0x4000
        }));
        c.handle_timeout(at);
        let rebind = c.poll_transmit().unwrap();
        let parsed = Repr::parse_bytes(&rebind.payload).unwrap();
        assert_eq!(parsed.method, Method::CHANNEL_BIND);
        assert!(
            parsed
                .attributes
                .contains(&Attribute::ChannelNumber(0x4000))
        );
        assert!(parsed.attributes.contains(&Attribute::XorPeerAddress(peer)));
        assert!(c.poll_transmit().is_none());
        // Still usable while the refresh is in flight; no second event.
        assert_eq!(c.channel(peer), Some(0x4000));
        let rebind = answer(&rebind.payload, Class::Success, vec![]);
        assert!(c.handle_input(at, server, &rebind));
        assert!(
            std::iter::from_fn(|| c.poll_event())
                .all(|e| !matches!(e, TurnEvent::ChannelBound { .. }))
        );
        assert_eq!(c.poll_timeout(), Some(at + Duration::from_secs(240)));
    }

    #[test]
    fn channel_failures_release_the_channel_only() {
        let now = Instant::now();
        let server: SocketAddr = SERVER.parse().unwrap();
        let peer: SocketAddr = "203.0.113.5:7000".parse().unwrap();
        let mut c = allocated(now);
        c.poll_event();
        let number = c.bind_channel(now, peer).unwrap();
        let req = c.poll_transmit().unwrap();
        let refused = answer(
            &req.payload,
            Class::Error,
            vec![Attribute::ErrorCode {
                code: 403,
                reason: "Forbidden".into(),
            }],
        );
        assert!(c.handle_input(now, server, &refused));
        assert_eq!(
            c.poll_event(),
            Some(TurnEvent::ChannelFailed {
                peer,
                channel: number,
                failure: TurnFailure::Rejected {
                    method: 9,
                    code: 403
                },
            })
        );
        assert_eq!(c.channel(peer), None);
        assert_eq!(c.relayed(), Some(RELAYED.parse().unwrap()));
        // An unanswered bind times out after max_transmits, with a new number.
        assert_eq!(c.bind_channel(now, peer), Ok(number + 1));
        let mut sent = 0;
        let mut at = now;
        while !matches!(c.poll_event(), Some(TurnEvent::ChannelFailed { .. })) {
            sent += std::iter::from_fn(|| c.poll_transmit()).count();
            at = c.poll_timeout().unwrap();
            c.handle_timeout(at);
        }
        assert_eq!(sent, 5);
        assert!(at < now + Duration::from_secs(60));
        assert_eq!(c.channel(peer), None);
        assert_eq!(c.relayed(), Some(RELAYED.parse().unwrap()));
        // ChannelData for a released channel is not delivered.
        assert_eq!(
            c.handle_channel_data(server, &[0x40, 0x01, 0x00, 0x00]),
            None
        );
    }

    #[test]
    fn channel_numbers_run_out_and_wrap() {
        let now = Instant::now();
        let mut c = allocated(now);
        let peer = |i: u32| SocketAddr::new(std::net::Ipv4Addr::from(0xcb00_7100 + i).into(), 7000);
        for i in 0..4096 {
            assert_eq!(c.bind_channel(now, peer(i)), Ok(0x4000 + i as u16));
        }
        assert_eq!(c.bind_channel(now, peer(4096)), Err(Error::NoFreeChannel));
        assert_eq!(c.bind_channel(now, peer(7)), Ok(0x4007));
        // Refuse the bind of 0x4005: that number is the only free one.
        let bind = std::iter::from_fn(|| c.poll_transmit())
            .find(|t| {
                Repr::parse_bytes(&t.payload)
                    .unwrap()
                    .attributes
                    .contains(&Attribute::ChannelNumber(0x4005))
            })
            .unwrap();
        let refused = answer(
            &bind.payload,
            Class::Error,
            vec![Attribute::ErrorCode {
                code: 400,
                reason: "Bad Request".into(),
            }],
        );
        assert!(c.handle_input(now, SERVER.parse().unwrap(), &refused));
        assert_eq!(c.bind_channel(now, peer(4096)), Ok(0x4005));
    }

    #[test]
    fn wrong_credentials_fail_after_one_retry() {
        let now = Instant::now();
        let server: SocketAddr = SERVER.parse().unwrap();
        let mut config = TurnConfig::new(server);
        config.credentials = Some(TurnCredentials {
            username: "alice".into(),
            password: "wrong".into(),
        });
        let mut c = TurnClient::new_with_insecure_seed(now, config, 1).unwrap();
        for _ in 0..2 {
            let req = c.poll_transmit().unwrap();
            let challenge = answer(
                &req.payload,
                Class::Error,
                vec![
                    Attribute::ErrorCode {
                        code: 401,
                        reason: "Unauthorized".into(),
                    },
                    Attribute::Realm("wow.test".into()),
                    Attribute::Nonce("n".into()),
                ],
            );
            c.handle_input(now, server, &challenge);
        }
        assert_eq!(
            c.poll_event(),
            Some(TurnEvent::Failed(TurnFailure::AuthRequired))
        );
        assert!(c.poll_transmit().is_none());
    }
}
