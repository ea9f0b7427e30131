//! Enrolment around ipsec-ca: the CA node's signed announcement in the DHT,
//! per-source rate limits on requests, and the certificate lifetime rules (renewal at two thirds, warning within three
//! days of expiry).
//!
//! The announcement under `wow/ca` is a statement signed by the CA key
//! ([`ipsec_ca::CaIdentity::sign_statement`], label [`ANNOUNCE_LABEL`])
//! whose body is the CA node's overlay address and the Unix time it was
//! signed. A node believes only announcements that verify against its
//! `ca_cert`, and among several the newest.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use ipsec_ca::{CaIdentity, Verifier};
use overlay_core::Address;
use overlay_core::address::ADDRESS_LEN;

/// Statement label of the CA node's announcement.
pub const ANNOUNCE_LABEL: &[u8] = b"wow-ca-location/1";

/// The CA node signs its announcement again after this long.
pub const ANNOUNCE_RESIGN_SECS: u64 = 3600;

/// Renew when this fraction of the lifetime (numerator / denominator) has
/// passed.
pub const RENEW_AT: (i64, i64) = (2, 3);

/// How long a CA location found in the DHT is used before looking again.
pub const CA_LOOKUP_PERIOD: Duration = Duration::from_secs(60);

/// The node's enrolment timing: retries with doubling backoff up to a
/// minute, a poll every 10 s while queued (so an approval arrives even if
/// its push is lost), and no giving up.
pub fn enrolment_config() -> ipsec_ca::EnrolmentConfig {
    ipsec_ca::EnrolmentConfig {
        retry_timeout: Duration::from_secs(1),
        max_retry_timeout: Duration::from_secs(60),
        pending_timeout: Duration::from_secs(10),
        max_attempts: u32::MAX,
    }
}

/// Warn when the certificate expires within this many seconds.
pub const EXPIRY_WARNING_SECS: i64 = 3 * 24 * 3600;

/// The signed announcement of the CA node at `address`, made at `unix`.
/// `writer` is the public key the CA node signs its DHT records with, so
/// that the announcement vouches for that key and no other (a copy
/// attached to someone else's records proves nothing).
pub fn announcement(
    identity: &CaIdentity,
    address: Address,
    unix: u64,
    writer: &[u8],
) -> Result<Vec<u8>, ipsec_ca::CaError> {
    let mut body = Vec::with_capacity(ADDRESS_LEN + 8 + writer.len());
    body.extend_from_slice(&address.to_bytes());
    body.extend_from_slice(&unix.to_be_bytes());
    body.extend_from_slice(writer);
    identity.sign_statement(ANNOUNCE_LABEL, &body)
}

/// A CA announcement that verified: where the CA node is, when it said
/// so, and the key it signs its DHT records with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// The CA node's ring address.
    pub address: Address,
    /// When it was signed (Unix seconds).
    pub unix: u64,
    /// The CA node's DHT record key (raw public key).
    pub writer: Vec<u8>,
}

/// `value` as an announcement signed by the CA `verifier` trusts.
pub fn verify_announcement(verifier: &Verifier, value: &[u8]) -> Option<Announcement> {
    let body = verifier.verify_statement(ANNOUNCE_LABEL, value).ok()?;
    if body.len() < ADDRESS_LEN + 8 {
        return None;
    }
    let (addr, rest) = body.split_at(ADDRESS_LEN);
    let (time, writer) = rest.split_at(8);
    Some(Announcement {
        address: Address::from_bytes(<[u8; ADDRESS_LEN]>::try_from(addr).ok()?),
        unix: u64::from_be_bytes(<[u8; 8]>::try_from(time).ok()?),
        writer: writer.to_vec(),
    })
}

/// The CA node's address from the newest announcement among `values`
/// that `verifier` accepts; unsigned, wrongly signed or malformed values
/// are ignored.
pub fn newest_announcement(verifier: &Verifier, values: &[Vec<u8>]) -> Option<Address> {
    values
        .iter()
        .filter_map(|v| verify_announcement(verifier, v))
        .max_by_key(|a| a.unix)
        .map(|a| a.address)
}

/// Requests each source may send in a burst.
const BURST: f64 = 4.0;
/// Requests per second each source earns back.
const REFILL_PER_SEC: f64 = 0.2;
/// Requests per second all sources together may send.
const GLOBAL_PER_SEC: f64 = 20.0;
/// Sources tracked at once; beyond this the oldest idle ones are forgotten.
const MAX_SOURCES: usize = 4096;

/// Token buckets on enrolment requests, per overlay source and overall,
/// so that no source (and no flood of them) keeps the CA signing and
/// writing its journal.
#[derive(Debug)]
pub struct RateLimiter {
    sources: HashMap<Address, (f64, Instant)>,
    global: (f64, Instant),
}

impl RateLimiter {
    /// A limiter with full buckets at `now`.
    pub fn new(now: Instant) -> RateLimiter {
        RateLimiter {
            sources: HashMap::new(),
            global: (GLOBAL_PER_SEC, now),
        }
    }

    /// Whether a request from `source` at `now` may be handled (and
    /// counts it).
    pub fn allow(&mut self, now: Instant, source: Address) -> bool {
        let (tokens, at) = &mut self.global;
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * GLOBAL_PER_SEC)
            .min(GLOBAL_PER_SEC);
        *at = now;
        if *tokens < 1.0 {
            return false;
        }
        if self.sources.len() >= MAX_SOURCES && !self.sources.contains_key(&source) {
            // Forget sources whose bucket has refilled.
            let full = Duration::from_secs_f64(BURST / REFILL_PER_SEC);
            self.sources
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < full);
            if self.sources.len() >= MAX_SOURCES {
                return false;
            }
        }
        let (tokens, at) = self.sources.entry(source).or_insert((BURST, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * REFILL_PER_SEC)
            .min(BURST);
        *at = now;
        if *tokens < 1.0 {
            return false;
        }
        *tokens -= 1.0;
        self.global.0 -= 1.0;
        true
    }
}

/// `wall` in whole seconds since the Unix epoch, as certificate lifetimes
/// are kept here; 0 before the epoch (a clock that far off renews nothing
/// early), saturating far in the future.
pub fn unix_secs(wall: SystemTime) -> i64 {
    wall.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// notBefore and notAfter of a certificate, Unix seconds.
pub fn validity(der: &[u8]) -> Option<(i64, i64)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let v = cert.validity();
    Some((v.not_before.timestamp(), v.not_after.timestamp()))
}

/// When to renew a certificate valid from `not_before` to `not_after`.
pub fn renew_at(not_before: i64, not_after: i64) -> i64 {
    not_before + (not_after - not_before) * RENEW_AT.0 / RENEW_AT.1
}

/// The node certificate's lifetime as the runtime tracks it: when to renew
/// and when to warn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lifetime {
    /// notBefore and notAfter of the certificate in use, Unix seconds.
    pub validity: Option<(i64, i64)>,
    /// A renewal is under way.
    pub renewing: bool,
    /// No renewal before this time (Unix seconds, see [`unix_secs`]), after
    /// the CA kept the current certificate.
    pub not_before_retry: i64,
}

/// Wait after the CA answered a renewal with the current certificate.
pub const RENEW_RETRY_SECS: i64 = 3600;

/// What the lifetime asks for at some time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifetimeAction {
    /// Nothing to do.
    Nothing,
    /// Two thirds have passed: renew now.
    Renew,
}

impl Lifetime {
    /// The lifetime of `certificate` (DER).
    pub fn of(certificate: &[u8]) -> Lifetime {
        Lifetime {
            validity: validity(certificate),
            renewing: false,
            not_before_retry: 0,
        }
    }

    /// What to do at `wall`.
    pub fn action(&self, wall: SystemTime) -> LifetimeAction {
        let now = unix_secs(wall);
        match self.validity {
            Some((from, to))
                if !self.renewing && now >= renew_at(from, to) && now >= self.not_before_retry =>
            {
                LifetimeAction::Renew
            }
            _ => LifetimeAction::Nothing,
        }
    }

    /// The warning to show at `wall`, if the certificate expires within
    /// [`EXPIRY_WARNING_SECS`] (or has expired).
    pub fn warning(&self, wall: SystemTime) -> Option<String> {
        let (_, to) = self.validity?;
        let left = to.saturating_sub(unix_secs(wall));
        if left < 0 {
            Some(format!("certificate expired {} s ago", -left))
        } else if left <= EXPIRY_WARNING_SECS {
            Some(format!(
                "certificate expires in {} h {} min",
                left / 3600,
                left % 3600 / 60
            ))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    /// `secs` after the Unix epoch.
    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn renewal_is_at_two_thirds_and_warning_within_three_days() {
        assert_eq!(renew_at(0, 30), 20);
        assert_eq!(renew_at(100, 400), 300);
        let day = 86_400;
        let mut l = Lifetime {
            validity: Some((0, 30 * day as i64)),
            renewing: false,
            not_before_retry: 0,
        };
        assert_eq!(l.action(at(20 * day - 1)), LifetimeAction::Nothing);
        assert_eq!(l.action(at(20 * day)), LifetimeAction::Renew);
        l.renewing = true;
        assert_eq!(l.action(at(21 * day)), LifetimeAction::Nothing);
        l.renewing = false;
        l.not_before_retry = 21 * day as i64 + 3600;
        assert_eq!(l.action(at(21 * day)), LifetimeAction::Nothing);
        assert_eq!(l.action(at(21 * day + 3600)), LifetimeAction::Renew);
        assert_eq!(l.warning(at(27 * day - 1)), None);
        assert!(l.warning(at(27 * day)).is_some());
        assert!(l.warning(at(31 * day)).unwrap().contains("expired"));
    }

    #[test]
    fn attack_one_source_cannot_flood_the_ca() {
        let t = Instant::now();
        let mut l = RateLimiter::new(t);
        let a = Address::from_key(b"a");
        let b = Address::from_key(b"b");
        for _ in 0..4 {
            assert!(l.allow(t, a));
        }
        assert!(!l.allow(t, a), "burst spent");
        assert!(l.allow(t, b), "another source is not held back");
        assert!(l.allow(t + Duration::from_secs(5), a), "refilled");
    }

    #[test]
    fn only_signed_announcements_count_and_the_newest_wins() {
        let now = at(1_800_000_000);
        let ca = ipsec_ca::CaIdentity::create_root(
            now,
            ipsec_ca::KeyType::Ed25519,
            "a",
            Duration::from_secs(86_400),
        )
        .unwrap();
        let fake = ipsec_ca::CaIdentity::create_root(
            now,
            ipsec_ca::KeyType::Ed25519,
            "a",
            Duration::from_secs(86_400),
        )
        .unwrap();
        let verifier = Verifier::new(ca.cert_der()).unwrap();
        let (old, new, evil) = (
            Address::from_key(b"old"),
            Address::from_key(b"new"),
            Address::from_key(b"evil"),
        );
        let values = vec![
            announcement(&ca, new, 200, b"k1").unwrap(),
            announcement(&ca, old, 100, b"k2").unwrap(),
            announcement(&fake, evil, 300, b"k3").unwrap(),
            evil.to_bytes().to_vec(),
        ];
        assert_eq!(newest_announcement(&verifier, &values), Some(new));
        assert_eq!(newest_announcement(&verifier, &values[2..]), None);
    }
}
