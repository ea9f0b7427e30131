//! The decentralised store contract, and an in-memory fake of it.
//!
//! In decentralised mode the [`crate::Server`] publishes the names registered
//! with it into the overlay's DHT and looks up names it does not know there,
//! by name (A queries) or by address (PTR queries; without an answer the
//! address's rule name is given).
//! The contract is sans-IO like the rest: the server emits
//! [`StoreRequest`]s (drained with [`crate::Server::poll_store_request`]),
//! each carrying a [`RequestId`]; the caller performs them against the real
//! store, in any order and with any delay, and feeds each result back with
//! [`crate::Server::handle_store_response`]. A lookup not answered by its
//! deadline is abandoned and its queries get SERVFAIL (RFC 1035 §4.1.1); a
//! late result is ignored.
//!
//! [`MemoryStore`] is a shared fake with seeded random delays and losses, for
//! tests and simulations; the node backs the contract with the real DHT.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};

use crate::service::Service;
use rand_chacha::ChaCha8Rng;

/// Identifies one store request of one server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// An operation for the store. Keys are lowercase names relative to the
/// zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreRequest {
    /// Find the address of `name`.
    Lookup {
        /// Request id, returned with the result.
        id: RequestId,
        /// Lowercase relative name.
        name: String,
    },
    /// Find the name registered for `addr` (for PTR queries).
    LookupAddress {
        /// Request id, returned with the result.
        id: RequestId,
        /// The address.
        addr: Ipv4Addr,
    },
    /// Publish `name` → `addr` for `ttl`; the store indexes it by address
    /// too, for [`StoreRequest::LookupAddress`].
    Publish {
        /// Request id, returned with the result.
        id: RequestId,
        /// Lowercase relative name.
        name: String,
        /// Its address.
        addr: Ipv4Addr,
        /// How long the record lives in the store.
        ttl: Duration,
    },
    /// Withdraw `name`.
    Unpublish {
        /// Request id, returned with the result.
        id: RequestId,
        /// Lowercase relative name.
        name: String,
    },
    /// Find the registrations of service `name` (`_service._proto`): by
    /// `host` only, or by every host.
    LookupService {
        /// Request id, returned with the result.
        id: RequestId,
        /// Lowercase service name.
        name: String,
        /// Lowercase relative host name, or `None` for every registrant.
        host: Option<String>,
    },
    /// Publish `host`'s registration of service `name` for `ttl`, under the
    /// host and among every registrant of the service.
    PublishService {
        /// Request id, returned with the result.
        id: RequestId,
        /// Lowercase service name.
        name: String,
        /// Lowercase relative host name.
        host: String,
        /// The registration.
        service: Service,
        /// How long it lives in the store.
        ttl: Duration,
    },
    /// Withdraw `host`'s registration of service `name`.
    UnpublishService {
        /// Request id, returned with the result.
        id: RequestId,
        /// Lowercase service name.
        name: String,
        /// Lowercase relative host name.
        host: String,
    },
}

impl StoreRequest {
    /// The request's id.
    pub fn id(&self) -> RequestId {
        match self {
            StoreRequest::Lookup { id, .. }
            | StoreRequest::LookupAddress { id, .. }
            | StoreRequest::Publish { id, .. }
            | StoreRequest::Unpublish { id, .. }
            | StoreRequest::LookupService { id, .. }
            | StoreRequest::PublishService { id, .. }
            | StoreRequest::UnpublishService { id, .. } => *id,
        }
    }
}

/// The store's answer to a [`StoreRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreResult {
    /// Lookup: the name's address and remaining lifetime.
    Found {
        /// The address.
        addr: Ipv4Addr,
        /// Remaining lifetime in the store.
        ttl: Duration,
    },
    /// Address lookup: the name registered for the address, lowercase and
    /// relative to the zone.
    FoundName {
        /// The name.
        name: String,
        /// Remaining lifetime in the store.
        ttl: Duration,
    },
    /// Service lookup: the registrations found (possibly none).
    FoundServices(Vec<Service>),
    /// Lookup: no such name (or address).
    NotFound,
    /// Publish or unpublish done.
    Done,
    /// The store failed (overlay unreachable, …).
    Failed,
}

/// Settings of the [`MemoryStore`] fake.
#[derive(Clone, Copy, Debug)]
pub struct MemoryStoreConfig {
    /// Shortest delay before a request completes.
    pub min_delay: Duration,
    /// Longest delay before a request completes.
    pub max_delay: Duration,
    /// Probability (0–1) that a request is lost and never answered.
    pub loss: f64,
}

impl Default for MemoryStoreConfig {
    fn default() -> Self {
        MemoryStoreConfig {
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
            loss: 0.0,
        }
    }
}

/// An in-memory store shared by many servers, answering after seeded random
/// delays. Operations take effect when they complete, as in a DHT.
#[derive(Debug)]
pub struct MemoryStore {
    config: MemoryStoreConfig,
    rng: ChaCha8Rng,
    records: HashMap<String, (Ipv4Addr, Instant)>,
    by_addr: HashMap<Ipv4Addr, String>,
    services: HashMap<(String, String), (Service, Instant)>,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    inflight: HashMap<u64, (usize, StoreRequest)>,
    seq: u64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new(config: MemoryStoreConfig, seed: u64) -> Self {
        MemoryStore {
            config,
            rng: ChaCha8Rng::seed_from_u64(seed),
            records: HashMap::new(),
            by_addr: HashMap::new(),
            services: HashMap::new(),
            queue: BinaryHeap::new(),
            inflight: HashMap::new(),
            seq: 0,
        }
    }

    /// Accepts `request` from the server numbered `client`.
    pub fn handle_request(&mut self, now: Instant, client: usize, request: StoreRequest) {
        if self.config.loss > 0.0 && self.rng.random_bool(self.config.loss.clamp(0.0, 1.0)) {
            return;
        }
        let (lo, hi) = (
            self.config.min_delay,
            self.config.max_delay.max(self.config.min_delay),
        );
        let delay = if hi > lo {
            lo + Duration::from_nanos(self.rng.random_range(0..(hi - lo).as_nanos() as u64))
        } else {
            lo
        };
        self.seq += 1;
        self.queue.push(Reverse((now + delay, self.seq)));
        self.inflight.insert(self.seq, (client, request));
    }

    /// When the next result is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((at, _))| *at)
    }

    /// The next result due at or before `now`, as `(client, id, result)`.
    pub fn poll_response(&mut self, now: Instant) -> Option<(usize, RequestId, StoreResult)> {
        let &Reverse((at, seq)) = self.queue.peek()?;
        if at > now {
            return None;
        }
        self.queue.pop();
        let (client, request) = self.inflight.remove(&seq)?;
        let result = match request {
            StoreRequest::Lookup { ref name, .. } => match self.records.get(name) {
                Some(&(addr, expires_at)) if expires_at > at => StoreResult::Found {
                    addr,
                    ttl: expires_at - at,
                },
                _ => StoreResult::NotFound,
            },
            StoreRequest::LookupAddress { addr, .. } => {
                let live = self.by_addr.get(&addr).and_then(|name| {
                    let &(a, expires_at) = self.records.get(name)?;
                    (a == addr && expires_at > at).then(|| StoreResult::FoundName {
                        name: name.clone(),
                        ttl: expires_at - at,
                    })
                });
                live.unwrap_or(StoreResult::NotFound)
            }
            StoreRequest::Publish {
                ref name,
                addr,
                ttl,
                ..
            } => {
                self.records.insert(name.clone(), (addr, at + ttl));
                self.by_addr.insert(addr, name.clone());
                StoreResult::Done
            }
            StoreRequest::Unpublish { ref name, .. } => {
                if let Some((addr, _)) = self.records.remove(name)
                    && self.by_addr.get(&addr) == Some(name)
                {
                    self.by_addr.remove(&addr);
                }
                StoreResult::Done
            }
            StoreRequest::LookupService {
                ref name, ref host, ..
            } => {
                let mut found: Vec<Service> = self
                    .services
                    .iter()
                    .filter(|((n, h), (_, expires_at))| {
                        n == name && host.as_ref().is_none_or(|x| x == h) && *expires_at > at
                    })
                    .map(|(_, (s, _))| s.clone())
                    .collect();
                found.sort_by(|a, b| a.target.cmp(&b.target));
                StoreResult::FoundServices(found)
            }
            StoreRequest::PublishService {
                ref name,
                ref host,
                ref service,
                ttl,
                ..
            } => {
                self.services
                    .insert((name.clone(), host.clone()), (service.clone(), at + ttl));
                StoreResult::Done
            }
            StoreRequest::UnpublishService {
                ref name, ref host, ..
            } => {
                self.services.remove(&(name.clone(), host.clone()));
                StoreResult::Done
            }
        };
        Some((client, request.id(), result))
    }

    /// Address stored for `name` at `now` (for assertions).
    pub fn get(&self, now: Instant, name: &str) -> Option<Ipv4Addr> {
        self.records
            .get(name)
            .filter(|(_, expires_at)| *expires_at > now)
            .map(|(addr, _)| *addr)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn results_arrive_after_delay_and_apply_then() {
        let t0 = Instant::now();
        let cfg = MemoryStoreConfig {
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(10),
            loss: 0.0,
        };
        let mut s = MemoryStore::new(cfg, 1);
        let name = "h1".to_string();
        s.handle_request(
            t0,
            3,
            StoreRequest::Publish {
                id: RequestId(1),
                name: name.clone(),
                addr: Ipv4Addr::new(10, 128, 0, 1),
                ttl: Duration::from_secs(60),
            },
        );
        assert_eq!(s.get(t0, "h1"), None);
        assert_eq!(s.poll_response(t0 + Duration::from_millis(9)), None);
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_millis(10)));
        assert_eq!(
            s.poll_response(t0 + Duration::from_millis(10)),
            Some((3, RequestId(1), StoreResult::Done))
        );
        let t1 = t0 + Duration::from_millis(10);
        s.handle_request(
            t1,
            4,
            StoreRequest::Lookup {
                id: RequestId(7),
                name,
            },
        );
        assert_eq!(
            s.poll_response(t1 + Duration::from_millis(10)),
            Some((
                4,
                RequestId(7),
                StoreResult::Found {
                    addr: Ipv4Addr::new(10, 128, 0, 1),
                    ttl: Duration::from_millis(59_990)
                }
            ))
        );
        let t2 = t1 + Duration::from_millis(10);
        s.handle_request(
            t2,
            4,
            StoreRequest::LookupAddress {
                id: RequestId(8),
                addr: Ipv4Addr::new(10, 128, 0, 1),
            },
        );
        assert_eq!(
            s.poll_response(t2 + Duration::from_millis(10)),
            Some((
                4,
                RequestId(8),
                StoreResult::FoundName {
                    name: "h1".into(),
                    ttl: Duration::from_millis(59_980)
                }
            ))
        );
        assert_eq!(s.get(t0 + Duration::from_secs(61), "h1"), None);
    }
}
