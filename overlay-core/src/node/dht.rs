//! The DHT protocol: requests, replies, pending decisions, record
//! checks, replication, handoff and republishing.

use core::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_chacha::rand_core::Rng;

use super::{DhtOutcome, Event, Node, RequestKind, Transmit};
use crate::address::{Address, Distance};
use crate::error::NodeError;
use crate::identity::Identity;
use crate::record::{KeySigner, PolicyStage, RecordPolicy, RecordRejection, RecordSigner};
use crate::wire::{
    DhtOp, DhtRequest, DhtStatus, MAX_DHT_STORE_LEN, MAX_KEY_LEN, MAX_RECORDS, MAX_VALUE_LEN,
    Message, Mode, Payload, Record, Replica, Roles, Routed,
};

#[derive(Debug, Clone)]
pub(super) struct PendingDht {
    pub(super) source: Address,
    pub(super) id: u64,
    pub(super) request: Box<DhtRequest>,
    pub(super) hops: u8,
    pub(super) decide_at: Instant,
}

/// A get of ours, sent straight to the near neighbours that should hold
/// replicas of `key`, on behalf of gets for `key` that reached us, the
/// node responsible for it, when our store lacks it (we restarted, or the
/// node that held it just went away): the first correctly signed,
/// accepted record that comes back answers them at once. Once every
/// neighbour asked has answered without one, gets held only for this
/// check are answered (empty); gets held while our near set settles
/// still wait for it.
#[derive(Debug, Clone)]
pub(super) struct Fetch {
    pub(super) id: u64,
    pub(super) key: Vec<u8>,
    /// Neighbours asked that have not answered yet. A reply counts only
    /// once per neighbour and only over that neighbour's own link (a
    /// routed message's source is a claim; the link it came on is not),
    /// so no node can answer "absent" for the others.
    pub(super) asked: Vec<Address>,
    pub(super) expires_at: Instant,
}

/// The node's record signer (boxed; `Debug` shows only the writer).
pub(super) struct Signer(pub(super) Box<dyn RecordSigner>);

impl core::fmt::Debug for Signer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("Signer").field(&self.0.writer()).finish()
    }
}

/// The node's record policy (boxed).
pub(super) struct Policy(pub(super) Box<dyn RecordPolicy>);

impl core::fmt::Debug for Policy {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Policy")
    }
}

impl<I: Identity> Node<I> {
    pub(super) fn signer(&mut self) -> &mut dyn RecordSigner {
        let signer = match self.signer.take() {
            Some(s) => s,
            None => {
                let mut seed = [0u8; 32];
                self.id_rng.fill_bytes(&mut seed);
                Signer(Box::new(KeySigner::ed25519_from_seed(&seed, 0)))
            }
        };
        &mut *self.signer.insert(signer).0
    }

    /// Checks a record arriving to be stored or read: its signature, then
    /// the policy. Counts a rejection.
    pub(super) fn admit(&mut self, now: Instant, stage: PolicyStage, record: &Record) -> bool {
        let verdict = crate::record::verify(record).and_then(|()| {
            if self.policy.0.accept(now, stage, record) {
                Ok(())
            } else {
                Err(RecordRejection::Policy)
            }
        });
        match verdict {
            Ok(()) => true,
            Err(e) => {
                self.stats.records_rejected.count(e);
                false
            }
        }
    }

    /// Stores replicas pushed by a linked peer: each verified, judged and
    /// inserted under the quotas; bad ones are dropped and counted.
    pub(super) fn on_dht_store(&mut self, now: Instant, replicas: Vec<Replica>) {
        for r in replicas {
            let ttl = Duration::from_secs(r.remaining_secs.min(r.record.lifetime_secs).into())
                .min(self.config.dht_max_ttl);
            // The same record again (a periodic republish) is only a
            // refresh: no need to check its signature once more.
            let known = self
                .dht
                .slots(&r.record.key)
                .iter()
                .any(|s| s.record == r.record);
            if !known && !self.admit(now, PolicyStage::Store, &r.record) {
                continue;
            }
            match self.dht.insert(now, &r.record, ttl) {
                Ok(_) => self.answer_held_gets(now, &r.record.key),
                Err(e) => self.stats.records_rejected.count(e),
            }
        }
    }

    /// Queues DhtStore messages carrying `replicas` to `destination`, cut
    /// to at most [`MAX_RECORDS`] records and [`MAX_DHT_STORE_LEN`] bytes
    /// each.
    pub(super) fn push_replicas(&mut self, destination: SocketAddr, replicas: &[Replica]) {
        let mut start = 0;
        while start < replicas.len() {
            let mut len = 3;
            let mut end = start;
            while end < replicas.len() && end - start < MAX_RECORDS {
                let l = replicas[end].record.buffer_len() + 4;
                if end > start && len + l > MAX_DHT_STORE_LEN {
                    break;
                }
                len += l;
                end += 1;
            }
            self.transmits.push_back(Transmit {
                destination,
                message: Message::DhtStore(replicas[start..end].to_vec()),
            });
            start = end;
        }
    }

    pub(super) fn dht_request(
        &mut self,
        now: Instant,
        op: DhtOp,
        key: &[u8],
        value: &[u8],
        ttl: Duration,
    ) -> Result<u64, NodeError> {
        if key.len() > MAX_KEY_LEN {
            return Err(NodeError::KeyTooLong {
                len: key.len(),
                max: MAX_KEY_LEN,
            });
        }
        if value.len() > MAX_VALUE_LEN {
            return Err(NodeError::ValueTooLong {
                len: value.len(),
                max: MAX_VALUE_LEN,
            });
        }
        if self.left {
            return Err(NodeError::Left);
        }
        let request = if op == DhtOp::Get {
            DhtRequest::Get { key: key.to_vec() }
        } else {
            let lifetime_secs =
                u32::try_from(ttl.min(self.config.dht_max_ttl).as_secs()).unwrap_or(u32::MAX);
            let credential = core::mem::take(&mut self.credential);
            let record = crate::record::sign(self.signer(), key, value, lifetime_secs, &credential);
            self.credential = credential;
            let record = record.ok_or(NodeError::SignerFailed)?;
            if op == DhtOp::Put {
                DhtRequest::Put(record)
            } else {
                DhtRequest::Create(record)
            }
        };
        let id = self.fresh_id();
        self.request(
            now,
            id,
            RequestKind::Dht(op),
            Address::from_key(key),
            Mode::Closest,
            Payload::DhtRequest {
                id,
                request: Box::new(request),
            },
        )?;
        Ok(id)
    }

    /// A DHT request delivered to us. Closest-mode gets and creates for a
    /// key we lack wait while our near set settles; an exact-mode get
    /// (another node's [`Fetch`]) is answered from our store at once.
    pub(super) fn on_dht_request(
        &mut self,
        now: Instant,
        source: Address,
        hops: u8,
        mode: Mode,
        id: u64,
        request: Box<DhtRequest>,
    ) {
        if let DhtRequest::Put(r) | DhtRequest::Create(r) = &*request
            && !self.admit(now, PolicyStage::Store, r)
        {
            self.reply_dht(now, source, id, DhtStatus::Rejected, Vec::new());
            return;
        }
        let op = request.op();
        let lacking =
            op != DhtOp::Put && mode == Mode::Closest && !self.dht.contains(now, request.key());
        let settle = self.config.dht_settle_duration;
        let settling = now < self.near_changed_at + settle;
        // A get for a key we lack, outside a settle period, is checked
        // with the replicas first (briefly: `settle / 4` at most).
        // The near neighbours a get for a key we lack asks ([`Fetch`]).
        let targets: Vec<Address> = if lacking && op == DhtOp::Get {
            self.replica_links(request.key())
                .into_iter()
                .filter_map(|i| self.table.get(i).map(|c| c.address))
                .collect()
        } else {
            Vec::new()
        };
        let check = !settling && !targets.is_empty();
        if !(lacking && (op == DhtOp::Create || settling) || check) {
            let (status, records) = self.serve_dht(now, &request);
            self.reply_dht(now, source, id, status, records);
            return;
        }
        // Decide later: once the near set has been stable for a while (so
        // handoffs from the previous responsible node have arrived) and,
        // for creates, after concurrent creates have queued up; or, for a
        // checked get, once the replicas have answered.
        if self
            .pending_dht
            .iter()
            .any(|p| p.source == source && p.id == id)
        {
            return;
        }
        let from_source = self
            .pending_dht
            .iter()
            .filter(|p| p.source == source)
            .count();
        if from_source >= self.config.dht_max_pending_per_peer
            || self.pending_dht.len() >= self.config.dht_max_pending
        {
            if check {
                // No room to wait: answer from what we hold.
                let (status, records) = self.serve_dht(now, &request);
                self.reply_dht(now, source, id, status, records);
                return;
            }
            self.stats.dht_requests_refused += 1;
            self.reply_dht(now, source, id, DhtStatus::QuotaExceeded, Vec::new());
            return;
        }
        let decide_at = if check {
            self.stats.dht_misses_checked += 1;
            now + settle / 4
        } else {
            self.stats.dht_requests_held += 1;
            let hold = if op == DhtOp::Create {
                settle / 4
            } else {
                Duration::ZERO
            };
            (now + hold).max(self.near_changed_at + settle)
        };
        let key = request.key().to_vec();
        self.pending_dht.push(PendingDht {
            source,
            id,
            request,
            hops,
            decide_at,
        });
        self.fetch(now, key, targets);
    }

    /// Asks `targets`, the near neighbours that should hold replicas of
    /// `key`, for it ([`Fetch`]; none for creates), unless a fetch for
    /// `key` is already out (several held gets for one key share it).
    /// Bounded by [`Config::dht_max_pending`](super::Config::dht_max_pending).
    fn fetch(&mut self, now: Instant, key: Vec<u8>, targets: Vec<Address>) {
        if targets.is_empty() {
            return;
        }
        self.fetches.retain(|f| f.expires_at > now);
        if self.fetches.len() >= self.config.dht_max_pending
            || self.fetches.iter().any(|f| f.key == key)
        {
            return;
        }
        let id = self.fresh_id();
        for &t in &targets {
            let payload = Payload::DhtRequest {
                id,
                request: Box::new(DhtRequest::Get { key: key.clone() }),
            };
            let msg = self.routed(t, Mode::Exact, payload);
            self.route(now, None, msg);
        }
        self.stats.dht_fetches_sent += 1;
        self.fetches.push(Fetch {
            id,
            key,
            asked: targets,
            expires_at: now + self.config.dht_settle_duration,
        });
    }

    /// A reply to one of our [`Fetch`]es (`at` in `self.fetches`): records
    /// for the key, correctly signed and accepted by the policy, answer
    /// the gets held for it, whoever sent them. When every neighbour asked
    /// has answered without one, each over its own link (`via`, the peer
    /// of the link the reply came on), the gets held only for this check
    /// are decided now.
    fn on_fetch_reply(
        &mut self,
        now: Instant,
        at: usize,
        from: Address,
        via: Option<Address>,
        status: DhtStatus,
        records: Vec<Record>,
    ) {
        let key = self.fetches[at].key.clone();
        let kept = if status == DhtStatus::Ok {
            self.readable(now, &key, from, records)
        } else {
            Vec::new()
        };
        if !kept.is_empty() {
            self.fetches.swap_remove(at);
            self.answer_held(now, &key, &kept);
            return;
        }
        let f = &mut self.fetches[at];
        if via != Some(from) {
            return;
        }
        let before = f.asked.len();
        f.asked.retain(|&a| a != from);
        if f.asked.len() == before || !f.asked.is_empty() {
            return;
        }
        self.fetches.swap_remove(at);
        if now < self.near_changed_at + self.config.dht_settle_duration {
            // Settling: a handoff may still come from a neighbour we have
            // not linked yet.
            return;
        }
        let mut due = false;
        for p in &mut self.pending_dht {
            if is_get_of(&p.request, &key) && p.decide_at > now {
                p.decide_at = now;
                due = true;
            }
        }
        if due {
            self.decide_pending_dht(now);
        }
    }

    /// Answers at once the gets held for `key` now that our store holds
    /// it (a handoff, republish or put arrived while they waited).
    fn answer_held_gets(&mut self, now: Instant, key: &[u8]) {
        if !self.pending_dht.iter().any(|p| is_get_of(&p.request, key)) {
            return;
        }
        let records = self.dht.get(now, key);
        if !records.is_empty() {
            self.answer_held(now, key, &records);
        }
    }

    fn answer_held(&mut self, now: Instant, key: &[u8], records: &[Record]) {
        let (answer, keep): (Vec<PendingDht>, Vec<PendingDht>) = self
            .pending_dht
            .drain(..)
            .partition(|p| is_get_of(&p.request, key));
        self.pending_dht = keep;
        self.fetches.retain(|f| f.key != key);
        for p in answer {
            self.stats.dht_held_gets_answered_early += 1;
            self.reply_dht(now, p.source, p.id, DhtStatus::Ok, records.to_vec());
        }
    }

    /// A DHT reply counts only if it names one of our pending DHT
    /// requests (ids are random). The responder of a closest-mode request
    /// is not known in advance, so any node may answer; its records are
    /// believed only if they are for the key asked, correctly signed and
    /// accepted by the record policy. `via` is the peer of the link the
    /// reply came on (`None`: from ourselves).
    pub(super) fn finish_dht(
        &mut self,
        now: Instant,
        id: u64,
        from: Address,
        via: Option<Address>,
        status: DhtStatus,
        records: Vec<Record>,
    ) {
        if let Some(at) = self.fetches.iter().position(|f| f.id == id) {
            self.on_fetch_reply(now, at, from, via, status, records);
            return;
        }
        let Some(p) = self
            .requests
            .iter()
            .position(|r| r.id == id && matches!(r.kind, RequestKind::Dht(_)))
        else {
            self.stats.unmatched_replies += 1;
            return;
        };
        let pending = self.requests.swap_remove(p);
        self.sample_rtt(now, from, &pending);
        let RequestKind::Dht(op) = pending.kind else {
            return;
        };
        let key = match &pending.payload {
            Payload::DhtRequest { request, .. } => request.key(),
            _ => &[][..],
        };
        let kept = self.readable(now, key, from, records);
        let values = || kept.iter().map(|r| r.value.clone()).collect();
        let outcome = match status {
            DhtStatus::Ok => DhtOutcome::Ok(values()),
            DhtStatus::Exists => DhtOutcome::Exists(values()),
            DhtStatus::Full => DhtOutcome::Full,
            DhtStatus::Rejected => DhtOutcome::Rejected,
            DhtStatus::Stale => DhtOutcome::Stale,
            DhtStatus::QuotaExceeded => DhtOutcome::QuotaExceeded,
        };
        self.events.push_back(Event::Dht {
            id,
            op,
            outcome,
            records: kept,
        });
    }

    /// The records of a reply from `from` that a reader may believe: for
    /// `key`, correctly signed (already checked when stored, if from our
    /// own store) and accepted by the policy. Counts the rest.
    fn readable(
        &mut self,
        now: Instant,
        key: &[u8],
        from: Address,
        records: Vec<Record>,
    ) -> Vec<Record> {
        let mut kept = Vec::with_capacity(records.len());
        for r in records {
            if r.key != key {
                self.stats.records_rejected.count(RecordRejection::WrongKey);
            } else if from == self.address {
                // From our own store: verified when stored.
                if self.policy.0.accept(now, PolicyStage::Read, &r) {
                    kept.push(r);
                } else {
                    self.stats.records_rejected.count(RecordRejection::Policy);
                }
            } else if self.admit(now, PolicyStage::Read, &r) {
                kept.push(r);
            }
        }
        kept
    }

    pub(super) fn reply_dht(
        &mut self,
        now: Instant,
        source: Address,
        id: u64,
        status: DhtStatus,
        records: Vec<Record>,
    ) {
        if source == self.address {
            self.finish_dht(now, id, source, None, status, records);
        } else {
            let reply = Payload::DhtReply {
                id,
                status,
                records,
            };
            let r = self.routed(source, Mode::Exact, reply);
            self.route(now, None, r);
        }
    }

    /// Decides queued create-if-absent requests (and gets that found
    /// nothing while the near set was changing) that are due, in arrival
    /// order: re-routes them if a nearer node has appeared, else the first
    /// create wins and the rest learn the winning value.
    pub(super) fn decide_pending_dht(&mut self, now: Instant) {
        if self.pending_dht.iter().all(|p| p.decide_at > now) {
            return;
        }
        let (due, rest): (Vec<PendingDht>, Vec<PendingDht>) =
            self.pending_dht.drain(..).partition(|p| p.decide_at <= now);
        self.pending_dht = rest;
        let pending = &self.pending_dht;
        self.fetches.retain(|f| {
            f.expires_at > now && pending.iter().any(|p| is_get_of(&p.request, &f.key))
        });
        for p in due {
            let ka = Address::from_key(p.request.key());
            let mine = self.address.distance_to(ka);
            let nearer = self.table.iter().any(|c| c.address.distance_to(ka) < mine);
            if nearer && !self.dht.contains(now, p.request.key()) {
                // No longer responsible: pass it on toward the key.
                let msg = Routed {
                    source: p.source,
                    destination: ka,
                    mode: Mode::Closest,
                    hops: p.hops,
                    hop_limit: self.config.hop_limit,
                    payload: Payload::DhtRequest {
                        id: p.id,
                        request: p.request,
                    },
                };
                self.route(now, None, msg);
                continue;
            }
            let (status, records) = self.serve_dht(now, &p.request);
            self.reply_dht(now, p.source, p.id, status, records);
        }
    }

    /// Serves a request whose record (if any) has been verified and
    /// accepted by the policy.
    pub(super) fn serve_dht(
        &mut self,
        now: Instant,
        request: &DhtRequest,
    ) -> (DhtStatus, Vec<Record>) {
        let record = match request {
            DhtRequest::Get { key } => return (DhtStatus::Ok, self.dht.get(now, key)),
            DhtRequest::Put(r) => r,
            DhtRequest::Create(r) => {
                // A create loses to a live slot of another writer, unless
                // the creator already holds a slot (a retried winner, or an
                // update of its own claim).
                let own = self
                    .dht
                    .slots(&r.key)
                    .iter()
                    .any(|s| s.expires_at > now && s.record.writer == r.writer);
                if !own && self.dht.held_by_other(now, &r.key, &r.writer) {
                    return (DhtStatus::Exists, self.dht.get(now, &r.key));
                }
                r
            }
        };
        let ttl = Duration::from_secs(record.lifetime_secs.into()).min(self.config.dht_max_ttl);
        match self.dht.insert(now, record, ttl) {
            Ok(_) => {
                self.replicate(now, &record.key);
                self.answer_held_gets(now, &record.key);
                (DhtStatus::Ok, Vec::new())
            }
            Err(e) => {
                self.stats.records_rejected.count(e);
                let status = match e {
                    RecordRejection::Stale => DhtStatus::Stale,
                    RecordRejection::Full => DhtStatus::Full,
                    RecordRejection::Quota => DhtStatus::QuotaExceeded,
                    _ => DhtStatus::Rejected,
                };
                (status, Vec::new())
            }
        }
    }

    /// Links nearest to `key` that should hold replicas.
    pub(super) fn replica_links(&self, key: &[u8]) -> Vec<usize> {
        let ka = Address::from_key(key);
        let mut v: Vec<(Distance, usize)> = self
            .table
            .iter()
            .enumerate()
            .filter(|(_, c)| c.mine.contains(Roles::NEAR))
            .map(|(i, c)| (c.address.distance_to(ka), i))
            .collect();
        v.sort_unstable();
        v.into_iter()
            .take(self.config.dht_replicas.saturating_sub(1))
            .map(|(_, i)| i)
            .collect()
    }

    pub(super) fn replicate(&mut self, now: Instant, key: &[u8]) {
        let records = self.dht.replicas(now, key);
        if records.is_empty() {
            return;
        }
        for i in self.replica_links(key) {
            if let Some(c) = self.table.get(i) {
                let ep = c.endpoint;
                self.push_replicas(ep, &records);
            }
        }
    }

    /// Pushes to a new near neighbour the records it should now hold.
    pub(super) fn handoff_to(&mut self, now: Instant, peer: Address, endpoint: SocketAddr) {
        if self.dht.is_empty() {
            return;
        }
        let keys: Vec<Vec<u8>> = self.dht.keys().cloned().collect();
        let mut out = Vec::new();
        for k in keys {
            let targets = self.replica_links(&k);
            let ka = Address::from_key(&k);
            let peer_is_replica = targets
                .iter()
                .any(|&i| self.table.get(i).is_some_and(|c| c.address == peer))
                || peer.distance_to(ka) < self.address.distance_to(ka);
            if peer_is_replica {
                out.extend(self.dht.replicas(now, &k));
            }
        }
        self.push_replicas(endpoint, &out);
    }

    /// Re-sends the records this node is responsible for to their replica
    /// set (all of them when `all`, else only keys nearest this node).
    pub(super) fn republish(&mut self, now: Instant, all: bool) {
        self.dht.expire(now);
        if self.dht.is_empty() {
            return;
        }
        let keys: Vec<Vec<u8>> = self.dht.keys().cloned().collect();
        let mut per_peer: Vec<(SocketAddr, Vec<Replica>)> = Vec::new();
        for k in keys {
            let ka = Address::from_key(&k);
            let mine = self.address.distance_to(ka);
            let responsible = self.table.iter().all(|c| c.address.distance_to(ka) >= mine);
            if !responsible && !all {
                continue;
            }
            if !responsible {
                continue;
            }
            let records = self.dht.replicas(now, &k);
            for i in self.replica_links(&k) {
                let Some(c) = self.table.get(i) else { continue };
                match per_peer.iter_mut().find(|(e, _)| *e == c.endpoint) {
                    Some((_, v)) => v.extend(records.iter().cloned()),
                    None => per_peer.push((c.endpoint, records.clone())),
                }
            }
        }
        for (ep, records) in per_peer {
            self.push_replicas(ep, &records);
        }
    }
}

fn is_get_of(request: &DhtRequest, key: &[u8]) -> bool {
    matches!(request, DhtRequest::Get { key: k } if k == key)
}
