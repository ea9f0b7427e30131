//! The certificate authority: signing policy, pending queue, revocation, CRLs.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr};

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use rcgen::{
    CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyUsagePurpose, PublicKeyData, RevokedCertParams,
    SanType, SerialNumber, SignatureAlgorithm,
};
use ring::rand::{SecureRandom as _, SystemRandom};
use std::time::{Duration, SystemTime};

use time::OffsetDateTime;

use crate::clock;
use crate::csr::{CsrInfo, parse_csr};
use crate::error::{CaError, PolicyError, StoreError, WireError};
use crate::groups::Groups;
use crate::identity::CaIdentity;
use crate::key::KeyType;
use crate::state::{CaState, Change, IssuedRecord, PendingRecord, RevocationReason, TokenRecord};
use crate::store::{BoxedStore, Store};
use crate::token::JoinToken;
use crate::wire::enrol::REPLY_LABEL;
use crate::wire::{CrlEnvelope, EnrolmentMessage, RejectReason};

/// The signing policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Key types a node may certify.
    pub allowed_key_types: Vec<KeyType>,
    /// Validity used when the request names none.
    pub default_validity: Duration,
    /// Longest validity the CA grants; longer requests are refused.
    pub max_validity: Duration,
    /// notBefore is set this far before `now`, to absorb clock skew.
    pub backdate: Duration,
    /// **Insecure**: enrolment requests without a valid join token are
    /// signed at once (`true`) instead of queued for an administrator
    /// (`false`). Anyone who can reach the CA then gets a certificate for any
    /// free address of the network; for closed test networks only.
    pub auto_approve: bool,
    /// The network the CA serves (address, prefix length): a certificate is
    /// only issued for one of its host addresses. `None`: any address.
    pub network: Option<(Ipv4Addr, u8)>,
    /// Time from a CRL's thisUpdate to its nextUpdate.
    pub crl_validity: Duration,
    /// Longest pending queue; further requests are refused.
    pub max_pending: usize,
    /// The DNS zone the CA names hosts in (e.g. `wow.internal`): a
    /// requested DNS name must be one label under it. `None`: any
    /// [`crate::csr::is_dns_name`]. Either way a name live in another key's
    /// certificate is refused ([`PolicyError::NameInUse`]).
    pub dns_zone: Option<String>,
    /// The groups the operator grants each identity (virtual IP). A
    /// certificate for an address carries the groups listed here, or only
    /// those of them its request asks for if it asks for any; a request
    /// never gains a group that is not listed (an address not listed gets
    /// none). [`Ca::sign_in_groups`] is the operator's direct grant.
    pub groups: BTreeMap<Ipv4Addr, Groups>,
}

/// Seconds in a day.
const DAY: u64 = 86_400;

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allowed_key_types: KeyType::ALL.to_vec(),
            default_validity: Duration::from_secs(30 * DAY),
            max_validity: Duration::from_secs(365 * DAY),
            backdate: Duration::from_secs(5 * 60),
            auto_approve: false,
            crl_validity: Duration::from_secs(7 * DAY),
            max_pending: 1024,
            dns_zone: None,
            network: None,
            groups: BTreeMap::new(),
        }
    }
}

/// A freshly issued certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// Serial number, big-endian.
    pub serial: Vec<u8>,
    /// The certificate, DER.
    pub certificate: Vec<u8>,
}

/// A freshly signed CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCrl {
    /// CRL number (RFC 5280 §5.2.3), strictly increasing.
    pub number: u64,
    /// The CRL, DER.
    pub der: Vec<u8>,
    /// Its thisUpdate.
    pub this_update: SystemTime,
    /// Its nextUpdate: re-issue well before.
    pub next_update: SystemTime,
}

impl SignedCrl {
    /// The distribution envelope carrying this CRL over the overlay.
    pub fn envelope(&self) -> Vec<u8> {
        CrlEnvelope {
            crl_number: self.number,
            crl: &self.der,
        }
        .to_bytes()
    }
}

/// An enrolment reply for the overlay, addressed to a virtual IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The node to send to.
    pub destination: Ipv4Addr,
    /// An encoded [`EnrolmentMessage`] inside a statement signed by the CA
    /// key (label [`crate::wire::enrol::REPLY_LABEL`]).
    pub payload: Vec<u8>,
}

/// Why a certificate is issued (what the index records with it).
#[derive(Debug, Clone, Copy)]
enum Source {
    /// [`Ca::sign`], or automatic approval.
    Direct,
    /// An approved queue entry.
    Pending(u64),
    /// A request carrying this join token.
    Token(u64),
    /// A renewal for the same address and key.
    Renewal,
}

/// What an enrolment request gets.
enum Outcome {
    /// This existing certificate.
    Issued(Vec<u8>),
    /// A new certificate.
    Sign(CsrInfo, Duration, Source),
    /// A place in the pending queue.
    Queue,
}

/// Whether `ip` is a host address of `net/len` (not its network or
/// broadcast address when the prefix has them).
fn is_host_of(ip: Ipv4Addr, net: Ipv4Addr, len: u8) -> bool {
    let len = u32::from(len.min(32));
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    let (ip, net) = (u32::from(ip), u32::from(net) & mask);
    if ip & mask != net {
        return false;
    }
    len >= 31 || (ip != net && ip != net | !mask)
}

/// The public key of a CSR in the form rcgen signs over.
struct RequestKey {
    alg: &'static SignatureAlgorithm,
    raw: Vec<u8>,
}

impl PublicKeyData for RequestKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.alg
    }
}

/// A certificate authority over a [`Store`].
///
/// Methods fall in three groups, as in the house style:
/// - commands: [`Ca::sign`], [`Ca::enqueue`], [`Ca::approve`], [`Ca::reject`],
///   [`Ca::revoke`], [`Ca::issue_crl`];
/// - the overlay input [`Ca::handle_enrolment`] and its output [`Ca::poll_transmit`];
/// - getters: [`Ca::issued`], [`Ca::pending`], [`Ca::policy`], [`Ca::identity`].
///
/// Every state change is saved through the store before the call returns; if the
/// save fails, the in-memory state is rolled back and the error returned, so a
/// certificate is never handed out that the index does not hold.
pub struct Ca<S: Store> {
    identity: CaIdentity,
    policy: Policy,
    store: S,
    state: CaState,
    by_serial: HashMap<Vec<u8>, usize>,
    by_ip: HashMap<Ipv4Addr, Vec<usize>>,
    rng: SerialSource,
    transmits: VecDeque<Transmit>,
}

enum Serials {
    Os(SystemRandom),
    Seeded([u8; 32]),
}

/// Where serial numbers come from.
enum SerialSource {
    /// A fresh draw from the operating system for each serial.
    Os(SystemRandom),
    /// Tests only.
    Seeded(Box<ChaCha20Rng>),
}

impl SerialSource {
    fn fill(&mut self, out: &mut [u8]) -> Result<(), CaError> {
        match self {
            SerialSource::Os(rng) => rng.fill(out).map_err(|_| CaError::Random),
            SerialSource::Seeded(rng) => {
                rng.fill_bytes(out);
                Ok(())
            }
        }
    }
}

impl<S: Store> core::fmt::Debug for Ca<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Ca")
            .field("identity", &self.identity)
            .field("issued", &self.state.issued.len())
            .field("pending", &self.state.pending.len())
            .finish_non_exhaustive()
    }
}

fn unix(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

/// `now` for the CA's computations: before the Unix epoch or beyond what a
/// certificate can carry is an error.
fn at(now: SystemTime) -> Result<OffsetDateTime, PolicyError> {
    clock::offset(now).ok_or(PolicyError::TimeOutOfRange)
}

impl<S: Store> Ca<S> {
    /// Opens a CA: loads the state from `store` (saving an empty one if there is
    /// none). Serial numbers are drawn from the operating system's random
    /// source, one draw each (serials must be unpredictable, RFC 5280
    /// §4.1.2.2, CA/B BR §7.1).
    pub fn open(identity: CaIdentity, policy: Policy, store: S) -> Result<Self, CaError> {
        Ca::open_with(identity, policy, store, Serials::Os(SystemRandom::new()))
    }

    /// [`Ca::open`] with serials from a generator seeded with `seed` (mixed
    /// with the state's counters): **predictable**, for tests only.
    pub fn open_with_insecure_seed(
        identity: CaIdentity,
        policy: Policy,
        store: S,
        seed: [u8; 32],
    ) -> Result<Self, CaError> {
        Ca::open_with(identity, policy, store, Serials::Seeded(seed))
    }

    fn open_with(
        identity: CaIdentity,
        policy: Policy,
        mut store: S,
        serials: Serials,
    ) -> Result<Self, CaError> {
        let state = match store.load()? {
            Some(state) => state,
            None => {
                let state = CaState::default();
                store.save(&state)?;
                state
            }
        };
        let rng = match serials {
            Serials::Os(rng) => SerialSource::Os(rng),
            Serials::Seeded(seed) => {
                // Mix the state into the seed: a test that reuses a seed
                // after a restart still gets a fresh serial sequence once
                // anything changed.
                let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
                ctx.update(&seed);
                ctx.update(&(state.issued.len() as u64).to_be_bytes());
                ctx.update(&state.next_pending_id.to_be_bytes());
                ctx.update(&state.crl_number.to_be_bytes());
                let mut seed = [0u8; 32];
                seed.copy_from_slice(ctx.finish().as_ref());
                SerialSource::Seeded(Box::new(ChaCha20Rng::from_seed(seed)))
            }
        };
        let mut ca = Ca {
            identity,
            policy,
            store,
            state,
            by_serial: HashMap::new(),
            by_ip: HashMap::new(),
            rng,
            transmits: VecDeque::new(),
        };
        ca.reindex()?;
        Ok(ca)
    }

    fn reindex(&mut self) -> Result<(), StoreError> {
        self.by_serial.clear();
        self.by_ip.clear();
        for (i, rec) in self.state.issued.iter().enumerate() {
            if self.by_serial.insert(rec.serial.clone(), i).is_some() {
                return Err(StoreError::Inconsistent);
            }
            self.by_ip.entry(rec.virtual_ip).or_default().push(i);
        }
        let mut ids = HashSet::new();
        for p in &self.state.pending {
            if !ids.insert(p.id) || p.id >= self.state.next_pending_id {
                return Err(StoreError::Inconsistent);
            }
        }
        Ok(())
    }

    /// Records `change` durably, then applies it in memory. On a store error
    /// nothing changes.
    fn commit(&mut self, change: Change) -> Result<(), CaError> {
        self.store.record(&self.state, &change)?;
        self.state.apply(&change)?;
        if let Change::Issue { record, .. } = &change {
            let index = self.state.issued.len() - 1;
            self.by_serial.insert(record.serial.clone(), index);
            self.by_ip.entry(record.virtual_ip).or_default().push(index);
        }
        Ok(())
    }

    /// The CA's identity.
    pub fn identity(&self) -> &CaIdentity {
        &self.identity
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Replaces the policy.
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store, mutably (e.g. for failure injection in tests).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// This CA with its store boxed: a holder that must not depend on the
    /// store's type (a file, memory) keeps a `Ca<BoxedStore>`.
    pub fn boxed(self) -> Ca<BoxedStore>
    where
        S: Send + 'static,
    {
        Ca {
            identity: self.identity,
            policy: self.policy,
            store: Box::new(self.store),
            state: self.state,
            by_serial: self.by_serial,
            by_ip: self.by_ip,
            rng: self.rng,
            transmits: self.transmits,
        }
    }

    /// Every certificate issued, in issue order.
    pub fn issued(&self) -> &[IssuedRecord] {
        &self.state.issued
    }

    /// The pending queue, oldest first.
    pub fn pending(&self) -> &[PendingRecord] {
        &self.state.pending
    }

    /// The index entry for `serial`.
    pub fn find_serial(&self, serial: &[u8]) -> Option<&IssuedRecord> {
        self.by_serial
            .get(serial)
            .and_then(|&i| self.state.issued.get(i))
    }

    /// Number of the last CRL issued (0 if none).
    pub fn crl_number(&self) -> u64 {
        self.state.crl_number
    }

    /// Checks a request against the policy without changing anything.
    ///
    /// `source_ip` is the authenticated virtual IP the request came from;
    /// `validity` `None` means [`Policy::default_validity`].
    pub fn check(
        &self,
        now: SystemTime,
        csr_der: &[u8],
        source_ip: Ipv4Addr,
        validity: Option<Duration>,
    ) -> Result<(CsrInfo, Duration), PolicyError> {
        self.check_at(at(now)?, csr_der, source_ip, validity)
    }

    fn check_at(
        &self,
        now: OffsetDateTime,
        csr_der: &[u8],
        source_ip: Ipv4Addr,
        validity: Option<Duration>,
    ) -> Result<(CsrInfo, Duration), PolicyError> {
        let info = parse_csr(csr_der)?;
        if !self.policy.allowed_key_types.contains(&info.key_type) {
            return Err(PolicyError::KeyTypeNotAllowed(info.key_type));
        }
        if info.virtual_ip != source_ip {
            return Err(PolicyError::IpMismatch {
                requested: info.virtual_ip,
                source_ip,
            });
        }
        if let Some((net, len)) = self.policy.network
            && !is_host_of(info.virtual_ip, net, len)
        {
            return Err(PolicyError::OutsideNetwork(info.virtual_ip));
        }
        let validity = validity.unwrap_or(self.policy.default_validity);
        if validity.is_zero() {
            return Err(PolicyError::ValidityNotPositive);
        }
        if validity > self.policy.max_validity {
            return Err(PolicyError::ValidityTooLong {
                requested_secs: clock::secs(validity),
                max_secs: clock::secs(self.policy.max_validity),
            });
        }
        // Capped so no certificate outlives its issuer (RFC 5280 §6.1.3 would
        // reject the chain after the CA expires anyway).
        let remaining = self.identity.not_after_offset() - now;
        let remaining = match Duration::try_from(remaining) {
            Ok(remaining) if !remaining.is_zero() => remaining,
            _ => return Err(PolicyError::BeyondCaValidity),
        };
        let validity = validity.min(remaining);
        let now_s = unix(now);
        for rec in self.live_for_ip(info.virtual_ip, now_s) {
            if rec.spki != info.spki_der {
                return Err(PolicyError::IpInUse {
                    ip: info.virtual_ip,
                    serial_hex: crate::state::hex_encode(&rec.serial),
                });
            }
        }
        self.check_names(&info, now_s)?;
        Ok((info, validity))
    }

    /// Each requested DNS name is in the zone and not live for another key.
    fn check_names(&self, info: &CsrInfo, now_s: i64) -> Result<(), PolicyError> {
        if info.dns_names.is_empty() {
            return Ok(());
        }
        if let Some(zone) = &self.policy.dns_zone {
            for name in &info.dns_names {
                let label = name
                    .strip_suffix(zone.as_str())
                    .and_then(|l| l.strip_suffix('.'));
                if !label.is_some_and(|l| !l.is_empty() && !l.contains('.')) {
                    return Err(PolicyError::NameOutsideZone(name.clone()));
                }
            }
        }
        for rec in self.state.issued.iter().filter(|r| r.live_at(now_s)) {
            if rec.spki == info.spki_der {
                continue;
            }
            let held = crate::verify::certificate_dns_names(&rec.certificate).unwrap_or_default();
            if let Some(name) = info.dns_names.iter().find(|n| held.contains(n)) {
                return Err(PolicyError::NameInUse {
                    name: name.clone(),
                    serial_hex: crate::state::hex_encode(&rec.serial),
                });
            }
        }
        Ok(())
    }

    fn live_for_ip(&self, ip: Ipv4Addr, now_s: i64) -> impl Iterator<Item = &IssuedRecord> {
        self.by_ip
            .get(&ip)
            .into_iter()
            .flatten()
            .filter_map(|&i| self.state.issued.get(i))
            .filter(move |r| r.live_at(now_s))
    }

    /// Signs a request at once (automatic approval).
    ///
    /// A renewal (same IP, same key) revokes the holder's previous live
    /// certificates as superseded, so one IP has at most one live certificate.
    pub fn sign(
        &mut self,
        now: SystemTime,
        csr_der: &[u8],
        source_ip: Ipv4Addr,
        validity: Option<Duration>,
    ) -> Result<Issued, CaError> {
        let now = at(now)?;
        let (info, validity) = self.check_at(now, csr_der, source_ip, validity)?;
        let groups = self.granted_groups(&info);
        self.issue(&info, validity, now, Source::Direct, &groups)
    }

    /// [`Ca::sign`] with the operator granting `groups` directly (whatever
    /// the request asks for and [`Policy::groups`] lists): for an
    /// administrator's front end (`wow-node ca issue --groups`).
    pub fn sign_in_groups(
        &mut self,
        now: SystemTime,
        csr_der: &[u8],
        source_ip: Ipv4Addr,
        validity: Option<Duration>,
        groups: &Groups,
    ) -> Result<Issued, CaError> {
        let now = at(now)?;
        let (info, validity) = self.check_at(now, csr_der, source_ip, validity)?;
        self.issue(&info, validity, now, Source::Direct, groups)
    }

    /// The groups a request gets: those [`Policy::groups`] lists for its
    /// address, narrowed to the ones it asks for if it asks for any. A
    /// requester never grants itself a group.
    fn granted_groups(&self, info: &CsrInfo) -> Groups {
        let allowed = self
            .policy
            .groups
            .get(&info.virtual_ip)
            .cloned()
            .unwrap_or_default();
        if info.requested_groups.is_empty() {
            allowed
        } else {
            allowed.intersection(&info.requested_groups)
        }
    }

    fn fresh_serial(&mut self) -> Result<Vec<u8>, CaError> {
        loop {
            let mut serial = [0u8; 16];
            self.rng.fill(&mut serial)?;
            // Positive, 16 octets, no leading zero: DER-minimal as is.
            serial[0] = (serial[0] & 0x7f) | 0x40;
            if !self.by_serial.contains_key(serial.as_slice()) {
                return Ok(serial.to_vec());
            }
        }
    }

    fn issue(
        &mut self,
        info: &CsrInfo,
        validity: Duration,
        now: OffsetDateTime,
        source: Source,
        groups: &Groups,
    ) -> Result<Issued, CaError> {
        let (pending_id, token, supersede) = match source {
            Source::Direct => (None, None, true),
            Source::Pending(id) => (Some(id), None, true),
            Source::Token(id) => (None, Some(id), true),
            // A renewal leaves the current certificate alone: a replayed
            // renewal request must not cut its holder off.
            Source::Renewal => (None, None, false),
        };
        let serial = self.fresh_serial()?;
        let not_after = clock::add(now, validity).ok_or(CaError::TimeOutOfRange)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        let cn = info
            .common_name
            .clone()
            .unwrap_or_else(|| info.virtual_ip.to_string());
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.not_before = clock::sub(now, self.policy.backdate).unwrap_or(now);
        params.not_after = not_after;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let uri = info
            .overlay_address
            .to_uri()
            .try_into()
            .map_err(CaError::Encode)?;
        params.subject_alt_names = vec![
            SanType::IpAddress(IpAddr::V4(info.virtual_ip)),
            SanType::URI(uri),
        ];
        for name in &info.dns_names {
            params.subject_alt_names.push(SanType::DnsName(
                name.as_str().try_into().map_err(CaError::Encode)?,
            ));
        }
        for uri in groups.to_uris() {
            params
                .subject_alt_names
                .push(SanType::URI(uri.try_into().map_err(CaError::Encode)?));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.key_identifier_method = KeyIdMethod::Sha256;
        let public_key = RequestKey {
            alg: info.key_type.rcgen_alg(),
            raw: info.public_key_raw.clone(),
        };
        let cert = params
            .signed_by(&public_key, self.identity.issuer())
            .map_err(CaError::Encode)?;
        let der = cert.der().to_vec();

        let now_s = unix(now);
        let superseded: Vec<Vec<u8>> = self
            .live_for_ip(info.virtual_ip, now_s)
            .filter(|r| supersede && r.spki == info.spki_der)
            .map(|r| r.serial.clone())
            .collect();
        self.commit(Change::Issue {
            record: IssuedRecord {
                serial: serial.clone(),
                virtual_ip: info.virtual_ip,
                spki: info.spki_der.clone(),
                issued_at: now_s,
                not_after: unix(not_after),
                certificate: der.clone(),
                revoked_at: None,
                revocation_reason: None,
            },
            superseded,
            pending_id,
            token,
        })?;
        Ok(Issued {
            serial,
            certificate: der,
        })
    }

    /// Checks a request and puts it in the pending queue; returns its queue id.
    ///
    /// `request_id` is the requester's correlation id, echoed in replies.
    pub fn enqueue(
        &mut self,
        now: SystemTime,
        csr_der: &[u8],
        source_ip: Ipv4Addr,
        validity: Option<Duration>,
        request_id: u64,
    ) -> Result<u64, CaError> {
        self.enqueue_at(at(now)?, csr_der, source_ip, validity, request_id)
    }

    fn enqueue_at(
        &mut self,
        now: OffsetDateTime,
        csr_der: &[u8],
        source_ip: Ipv4Addr,
        validity: Option<Duration>,
        request_id: u64,
    ) -> Result<u64, CaError> {
        let (_, validity) = self.check_at(now, csr_der, source_ip, validity)?;
        // The same request again (a retry) keeps its place and id.
        if let Some(p) = self
            .state
            .pending
            .iter()
            .find(|p| p.source_ip == source_ip && p.csr == csr_der)
        {
            return Ok(p.id);
        }
        // A node sending a different request replaces its earlier one.
        let replaced: Vec<u64> = self
            .state
            .pending
            .iter()
            .filter(|p| p.source_ip == source_ip)
            .map(|p| p.id)
            .collect();
        if self.state.pending.len() - replaced.len() >= self.policy.max_pending {
            return Err(PolicyError::QueueFull.into());
        }
        let id = self.state.next_pending_id;
        self.commit(Change::Enqueue {
            record: PendingRecord {
                id,
                source_ip,
                request_id,
                received_at: unix(now),
                validity_secs: clock::secs(validity),
                csr: csr_der.to_vec(),
            },
            replaced,
        })?;
        Ok(id)
    }

    fn pending_index(&self, id: u64) -> Result<usize, CaError> {
        self.state
            .pending
            .iter()
            .position(|p| p.id == id)
            .ok_or(CaError::UnknownRequest(id))
    }

    /// Approves a queued request: re-checks the policy at `now` and signs.
    ///
    /// A policy refusal leaves the request queued. The node is told through
    /// [`Ca::poll_transmit`].
    pub fn approve(&mut self, now: SystemTime, id: u64) -> Result<Issued, CaError> {
        let now = at(now)?;
        let index = self.pending_index(id)?;
        let pending = self.state.pending[index].clone();
        // A negative count (only a damaged index holds one) reads as zero:
        // refused as not positive.
        let validity = Duration::from_secs(u64::try_from(pending.validity_secs).unwrap_or(0));
        let (info, validity) =
            self.check_at(now, &pending.csr, pending.source_ip, Some(validity))?;
        let groups = self.granted_groups(&info);
        let issued = self.issue(&info, validity, now, Source::Pending(id), &groups)?;
        self.push_reply(
            pending.source_ip,
            EnrolmentMessage::Issued {
                request_id: pending.request_id,
                certificate: &issued.certificate,
            },
        );
        Ok(issued)
    }

    /// Rejects and removes a queued request. The node is told through
    /// [`Ca::poll_transmit`].
    pub fn reject(&mut self, id: u64) -> Result<PendingRecord, CaError> {
        let index = self.pending_index(id)?;
        let removed = self.state.pending[index].clone();
        self.commit(Change::Reject { id })?;
        self.push_reply(
            removed.source_ip,
            EnrolmentMessage::Rejected {
                request_id: removed.request_id,
                reason: RejectReason::Administrator,
            },
        );
        Ok(removed)
    }

    /// Revokes the certificate with `serial`.
    pub fn revoke(
        &mut self,
        now: SystemTime,
        serial: &[u8],
        reason: RevocationReason,
    ) -> Result<(), CaError> {
        let now = at(now)?;
        let rec = self
            .find_serial(serial)
            .ok_or(CaError::UnknownCertificate)?;
        if rec.revoked_at.is_some() {
            return Err(CaError::AlreadyRevoked);
        }
        self.commit(Change::Revoke {
            serial: serial.to_vec(),
            at: unix(now),
            reason,
        })
    }

    /// Revokes the certificate whose DER is `cert_der` (it must be in the index).
    pub fn revoke_certificate(
        &mut self,
        now: SystemTime,
        cert_der: &[u8],
        reason: RevocationReason,
    ) -> Result<(), CaError> {
        let serial = self
            .state
            .issued
            .iter()
            .find(|r| r.certificate == cert_der)
            .map(|r| r.serial.clone())
            .ok_or(CaError::UnknownCertificate)?;
        self.revoke(now, &serial, reason)
    }

    /// Signs a new X.509 v2 CRL (RFC 5280 §5) with the next CRL number,
    /// listing every revoked certificate that has not expired at `now`.
    pub fn issue_crl(&mut self, wall: SystemTime) -> Result<SignedCrl, CaError> {
        let now = at(wall)?;
        let now_s = unix(now);
        let number = self.state.crl_number + 1;
        let next_update =
            clock::add(now, self.policy.crl_validity).ok_or(CaError::TimeOutOfRange)?;
        let next_update_wall = clock::system(next_update).ok_or(CaError::TimeOutOfRange)?;
        let mut revoked_certs = Vec::new();
        for rec in &self.state.issued {
            let (Some(at), true) = (rec.revoked_at, rec.not_after >= now_s) else {
                continue;
            };
            revoked_certs.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&rec.serial),
                revocation_time: OffsetDateTime::from_unix_timestamp(at)
                    .map_err(|_| CaError::TimeOutOfRange)?,
                reason_code: rec.revocation_reason.map(RevocationReason::to_rcgen),
                invalidity_date: None,
            });
        }
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update,
            crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params
            .signed_by(self.identity.issuer())
            .map_err(CaError::Encode)?;
        self.commit(Change::CrlIssued { number })?;
        Ok(SignedCrl {
            number,
            der: crl.der().to_vec(),
            this_update: wall,
            next_update: next_update_wall,
        })
    }

    /// Issues a single-use join token valid until `now + ttl`, for `ip`
    /// only if given (see [`crate::token`]). Expired tokens are forgotten
    /// in the same change.
    pub fn issue_token(
        &mut self,
        now: SystemTime,
        ip: Option<Ipv4Addr>,
        ttl: Duration,
    ) -> Result<JoinToken, CaError> {
        let now = at(now)?;
        if ttl.is_zero() {
            return Err(PolicyError::ValidityNotPositive.into());
        }
        if let (Some(ip), Some((net, len))) = (ip, self.policy.network)
            && !is_host_of(ip, net, len)
        {
            return Err(PolicyError::OutsideNetwork(ip).into());
        }
        let now_s = unix(now);
        let expires_at = clock::add(now, ttl).ok_or(CaError::TimeOutOfRange)?;
        let mut secret = [0u8; 32];
        self.rng.fill(&mut secret)?;
        let id = loop {
            let mut id = [0u8; 8];
            self.rng.fill(&mut id)?;
            let id = u64::from_be_bytes(id);
            if !self.state.tokens.iter().any(|t| t.id == id) {
                break id;
            }
        };
        let dropped = self
            .state
            .tokens
            .iter()
            .filter(|t| t.expires_at < now_s)
            .map(|t| t.id)
            .collect();
        self.commit(Change::TokenIssued {
            record: TokenRecord {
                id,
                secret: secret.to_vec(),
                ip,
                issued_at: now_s,
                expires_at: unix(expires_at),
                used_at: None,
            },
            dropped,
        })?;
        Ok(JoinToken { id, secret })
    }

    /// The join tokens the state holds (used, unused and not yet forgotten
    /// expired ones).
    pub fn tokens(&self) -> &[TokenRecord] {
        &self.state.tokens
    }

    /// Whether a token request authorises `csr`: the token exists, is
    /// unused and unexpired, the MAC is right and the address is the one it
    /// names (if it names one).
    fn token_authorises(
        &self,
        token_id: u64,
        mac: &[u8],
        request_id: u64,
        csr: &[u8],
        ip: Ipv4Addr,
        now_s: i64,
    ) -> bool {
        self.state.tokens.iter().any(|t| {
            t.id == token_id
                && t.usable_at(now_s)
                && t.ip.is_none_or(|fixed| fixed == ip)
                && crate::token::verify_mac(&t.secret, request_id, csr, mac)
        })
    }

    /// Whether `bytes` is a token request that a usable join token
    /// authorises (without parsing the CSR: one HMAC). Lets a caller that
    /// rate-limits requests let these through even under a flood.
    pub fn has_valid_token(&self, now: SystemTime, bytes: &[u8]) -> bool {
        let Ok(EnrolmentMessage::TokenRequest {
            request_id,
            token_id,
            mac,
            csr,
        }) = EnrolmentMessage::parse(bytes)
        else {
            return false;
        };
        let Some(now_s) = clock::unix_secs(now) else {
            return false;
        };
        self.state.tokens.iter().any(|t| {
            t.id == token_id
                && t.usable_at(now_s)
                && crate::token::verify_mac(&t.secret, request_id, csr, mac)
        })
    }

    /// The newest live certificate for this IP and key.
    fn live_same_key(&self, ip: Ipv4Addr, spki: &[u8], now_s: i64) -> Option<&IssuedRecord> {
        self.live_for_ip(ip, now_s)
            .filter(|r| r.spki == spki)
            .max_by_key(|r| r.not_after)
    }

    /// Handles an enrolment message from `source_ip` (the address in the
    /// overlay header; not authenticated, so nothing is granted for it).
    /// Replies, signed by the CA key, are queued for [`Ca::poll_transmit`];
    /// a policy refusal is a `Rejected` reply, not an error. Malformed
    /// bytes, or a message that is not a request, return an error and
    /// change nothing.
    ///
    /// What a request gets:
    /// - if the CSR's address and key already hold a live certificate: that
    ///   certificate (a repeated request, or a node polling after an
    ///   approval), or a renewal once half its lifetime has passed (the CSR's
    ///   self-signature proves the key; the current certificate is left
    ///   live);
    /// - with a valid join token ([`Ca::issue_token`]): a certificate at
    ///   once, the token consumed;
    /// - with [`Policy::auto_approve`] (insecure): a certificate at once;
    /// - otherwise a place in the pending queue for an administrator.
    pub fn handle_enrolment(
        &mut self,
        now: SystemTime,
        source_ip: Ipv4Addr,
        bytes: &[u8],
    ) -> Result<(), WireError> {
        let (request_id, csr, token) = match EnrolmentMessage::parse(bytes)? {
            EnrolmentMessage::Request { request_id, csr } => (request_id, csr, None),
            EnrolmentMessage::TokenRequest {
                request_id,
                token_id,
                mac,
                csr,
            } => (request_id, csr, Some((token_id, mac))),
            _ => return Err(WireError::Unexpected),
        };
        let now = match at(now) {
            Ok(now) => now,
            Err(e) => {
                let reason = RejectReason::from_error(&CaError::Policy(e));
                self.push_reply(source_ip, EnrolmentMessage::Rejected { request_id, reason });
                return Ok(());
            }
        };
        let now_s = unix(now);
        let outcome = self
            .check_at(now, csr, source_ip, None)
            .map(|(info, validity)| self.decide(info, validity, request_id, csr, token, now_s));
        let reply = match outcome {
            Ok(Outcome::Issued(certificate)) => Ok(certificate),
            Ok(Outcome::Sign(info, validity, source)) => self
                .issue(&info, validity, now, source, &self.granted_groups(&info))
                .map(|i| i.certificate)
                .map_err(|e| RejectReason::from_error(&e)),
            Ok(Outcome::Queue) => match self.enqueue_at(now, csr, source_ip, None, request_id) {
                Ok(queue_id) => {
                    self.push_reply(
                        source_ip,
                        EnrolmentMessage::Pending {
                            request_id,
                            queue_id,
                        },
                    );
                    return Ok(());
                }
                Err(e) => Err(RejectReason::from_error(&e)),
            },
            Err(e) => Err(RejectReason::from_error(&CaError::Policy(e))),
        };
        let message = match &reply {
            Ok(certificate) => EnrolmentMessage::Issued {
                request_id,
                certificate,
            },
            Err(reason) => EnrolmentMessage::Rejected {
                request_id,
                reason: *reason,
            },
        };
        self.push_reply(source_ip, message);
        Ok(())
    }

    /// What a request that passed the policy gets (see
    /// [`Ca::handle_enrolment`]).
    fn decide(
        &self,
        info: CsrInfo,
        validity: Duration,
        request_id: u64,
        csr: &[u8],
        token: Option<(u64, &[u8; 32])>,
        now_s: i64,
    ) -> Outcome {
        if let Some(live) = self.live_same_key(info.virtual_ip, &info.spki_der, now_s) {
            let lifetime = live.not_after - live.issued_at;
            if (live.not_after - now_s).saturating_mul(2) > lifetime {
                return Outcome::Issued(live.certificate.clone());
            }
            return Outcome::Sign(info, validity, Source::Renewal);
        }
        if let Some((token_id, mac)) = token
            && self.token_authorises(token_id, mac, request_id, csr, info.virtual_ip, now_s)
        {
            return Outcome::Sign(info, validity, Source::Token(token_id));
        }
        if self.policy.auto_approve {
            return Outcome::Sign(info, validity, Source::Direct);
        }
        Outcome::Queue
    }

    /// Queues `message`, signed by the CA key, for `destination`. A message
    /// the key cannot sign is not sent (the node retries).
    fn push_reply(&mut self, destination: Ipv4Addr, message: EnrolmentMessage<'_>) {
        if let Ok(payload) = self
            .identity
            .sign_statement(REPLY_LABEL, &message.to_bytes())
        {
            self.transmits.push_back(Transmit {
                destination,
                payload,
            });
        }
    }

    /// The next enrolment reply to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }
}
