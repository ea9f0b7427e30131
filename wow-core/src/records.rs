//! Which DHT records this node stores and believes: the node's
//! [`RecordPolicy`].
//!
//! The overlay already guarantees that every record is signed by its
//! writer and that no writer changes another's slot
//! ([`overlay_core::record`]). This policy decides which *writers* may
//! say what, under each of the node's keys (`wow/<kind>/<suffix>`):
//!
//! | key | in a network with a CA | without a CA |
//! |---|---|---|
//! | `name/<host>` | the writer's certificate (the record's credential) binds `<host>` (`<host>.<zone>` dNSName) and the value is its certified IP | the value is a guest address of the network |
//! | `ip/<addr>` | the certificate binds `<addr>` (the value is a ring address) | the value is a ring address |
//! | `lease/<addr>` | `<addr>` is in the network; a certified writer may claim only its certified address (uncertified writers may claim, for enrolment; certified claims win, see [`claim_rank`]) | `<addr>` is in the network |
//! | `srv/<service>/<host>`, `srv/<service>` | the value is a service registration ([`dns_virt::Service`]) of `<service>` (`_name._proto`); the certificate binds `<host>` (when given) and the registration's SRV target | the value is a service registration of `<service>` |
//! | `ca` | the value is the CA's signed announcement naming the writer's key | any |
//! | `crl` | the value is a CRL manifest signed by the CA (any node may relay it) | any |
//! | `crl-chunk/…` | any (readers check each chunk against the signed manifest) | any |
//! | `release/<channel>` | the value is a release manifest signed by a configured release key ([`crate::update`]); without keys, a well-formed manifest of `<channel>` from a certified writer | the same with keys configured, else any |
//! | `release-chunk/…` | any (readers check each chunk along the manifest's hash chain) | any |
//! | anything else | refused | any |
//!
//! "Certified" means: the record's credential is a DER certificate that
//! chains to the CA, is valid now and not revoked, and whose key is the
//! writer's key. The CA node itself need not hold a host certificate: its
//! records carry its signed announcement as their credential instead.
//! Storing nodes and readers apply the same rules ([`PolicyStage`] is
//! ignored), so a record refused here is neither stored nor believed.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Instant, SystemTime};

use ipnet::Ipv4Net;
use ipsec_ca::Verifier;
use overlay_core::RecordPolicy;
use overlay_core::record::PolicyStage;
use overlay_core::wire::Record;

/// Certificates verified recently, by their SHA-256: verifying a chain
/// costs a signature check; a node re-reads the same few certificates.
const CACHE_LIMIT: usize = 4096;

/// What a record's writer can show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// A host certificate from the CA for this IP, with these names.
    Certified {
        /// The certified virtual IP.
        ip: Ipv4Addr,
        /// The certified host names (dNSName SANs).
        names: Vec<String>,
    },
    /// The CA node (its credential is the CA's announcement naming it).
    CaNode,
    /// Nothing the CA vouches for.
    None,
}

/// The node's rules for DHT records (see the module docs).
pub struct NodePolicy {
    network: Ipv4Net,
    gateway: Ipv4Addr,
    zone: String,
    ca: Option<Verifier>,
    /// Wall time at `base`: the policy gets only `Instant`s.
    base: (Instant, SystemTime),
    /// `[update] keys`: who may publish under `wow/release/…`.
    release_keys: Vec<[u8; crate::update::PUBLIC_KEY_LEN]>,
    cache: HashMap<[u8; 32], Option<(Vec<u8>, Standing)>>,
}

impl std::fmt::Debug for NodePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodePolicy")
            .field("network", &self.network)
            .field("with_ca", &self.ca.is_some())
            .finish_non_exhaustive()
    }
}

impl NodePolicy {
    /// Rules for `network` (guest addresses; `gateway` is the node itself),
    /// host names in `zone`, and, in a network with a CA, `ca` (with the
    /// current CRL loaded). `now` and `wall` are the same moment.
    pub fn new(
        now: Instant,
        wall: SystemTime,
        network: Ipv4Net,
        gateway: Ipv4Addr,
        zone: &str,
        ca: Option<Verifier>,
    ) -> NodePolicy {
        NodePolicy {
            network,
            gateway,
            zone: zone.trim_end_matches('.').to_ascii_lowercase(),
            ca,
            base: (now, wall),
            release_keys: Vec::new(),
            cache: HashMap::new(),
        }
    }

    /// The release keys (`[update] keys`) whose manifests are stored under
    /// `wow/release/<channel>`.
    pub fn with_release_keys(
        mut self,
        keys: Vec<[u8; crate::update::PUBLIC_KEY_LEN]>,
    ) -> NodePolicy {
        self.release_keys = keys;
        self
    }

    fn wall(&self, now: Instant) -> SystemTime {
        self.base.1 + now.saturating_duration_since(self.base.0)
    }

    /// Whether `ip` can be a guest's address.
    pub fn is_guest_addr(&self, ip: Ipv4Addr) -> bool {
        self.network.contains(&ip)
            && ip != self.gateway
            && ip != self.network.network()
            && ip != self.network.broadcast()
    }

    /// What `record`'s writer can show, at `now`.
    pub fn standing(&mut self, now: Instant, record: &Record) -> Standing {
        let Some(verifier) = self.ca.as_ref() else {
            return Standing::None;
        };
        if record.credential.is_empty() {
            return Standing::None;
        }
        // The CA node: its announcement, naming the writer's key.
        if let Some(a) = crate::enrol::verify_announcement(verifier, &record.credential) {
            return if a.writer == record.writer.public_key {
                Standing::CaNode
            } else {
                Standing::None
            };
        }
        let digest: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, &record.credential)
            .as_ref()
            .try_into()
            .unwrap_or([0; 32]);
        let at = self.wall(now);
        let verified = match self.cache.get(&digest) {
            Some(v) => v.clone(),
            None => {
                let v = certified_ip(&record.credential)
                    .and_then(|ip| verifier.verify(at, &record.credential, ip).ok())
                    .map(|peer| {
                        let standing = Standing::Certified {
                            ip: peer.virtual_ip,
                            names: peer.dns_names.clone(),
                        };
                        (peer.public_key, standing)
                    });
                if self.cache.len() >= CACHE_LIMIT {
                    self.cache.clear();
                }
                self.cache.insert(digest, v.clone());
                v
            }
        };
        match verified {
            Some((key, standing)) if key == record.writer.public_key => standing,
            _ => Standing::None,
        }
    }

    fn name_bound(&self, names: &[String], host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let fqdn = format!("{host}.{}", self.zone);
        names
            .iter()
            .any(|n| n.eq_ignore_ascii_case(&host) || n.eq_ignore_ascii_case(&fqdn))
    }

    fn judge(&mut self, now: Instant, record: &Record) -> bool {
        let Some(rest) = record.key.strip_prefix(b"wow/") else {
            return self.ca.is_none();
        };
        let (kind, suffix) = match rest.iter().position(|b| *b == b'/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        };
        let with_ca = self.ca.is_some();
        match kind {
            b"name" => {
                let Some(ip) = name_value(&record.value)
                    .map(|(ip, _)| ip)
                    .filter(|ip| self.is_guest_addr(*ip))
                else {
                    return false;
                };
                if !with_ca {
                    return true;
                }
                let Ok(host) = std::str::from_utf8(suffix) else {
                    return false;
                };
                match self.standing(now, record) {
                    Standing::Certified {
                        ip: certified,
                        names,
                    } => certified == ip && self.name_bound(&names, host),
                    _ => false,
                }
            }
            b"ip" => {
                let Some(addr) = ipv4(suffix).filter(|ip| self.is_guest_addr(*ip)) else {
                    return false;
                };
                if record.value.len() != overlay_core::address::ADDRESS_LEN {
                    return false;
                }
                !with_ca
                    || matches!(self.standing(now, record),
                        Standing::Certified { ip, .. } if ip == addr)
            }
            b"lease" => {
                let Some(addr) = ipv4(suffix).filter(|ip| self.is_guest_addr(*ip)) else {
                    return false;
                };
                match self.standing(now, record) {
                    Standing::Certified { ip, .. } => ip == addr,
                    _ => true,
                }
            }
            b"srv" => {
                let Some((host, target)) = service_record(suffix, &record.value) else {
                    return false;
                };
                if !with_ca {
                    return true;
                }
                match self.standing(now, record) {
                    Standing::Certified { names, .. } => {
                        host.is_none_or(|h| self.name_bound(&names, &h))
                            && self.name_bound(&names, &target)
                    }
                    _ => false,
                }
            }
            b"ca" => match self.ca.as_ref() {
                None => true,
                Some(verifier) => crate::enrol::verify_announcement(verifier, &record.value)
                    .is_some_and(|a| a.writer == record.writer.public_key),
            },
            // Any node may relay the CA's CRL: the manifest is the CA's
            // statement, and readers check each chunk against its digest.
            b"crl" => match self.ca.as_ref() {
                None => true,
                Some(verifier) => crate::crl_dht::verify_manifest(verifier, &record.value).is_ok(),
            },
            b"crl-chunk" => true,
            // A release manifest only under a configured key; the channel
            // in the key is the manifest's own.
            b"release" if !self.release_keys.is_empty() => {
                crate::update::verify(&record.value, &self.release_keys)
                    .is_ok_and(|m| m.channel.as_bytes() == suffix)
            }
            // Without keys a node cannot check the signature, but it may
            // be the record's home in the DHT: with a CA it stores a
            // well-formed manifest for this channel from a certified
            // writer (readers with keys verify it), so nodes without
            // `[update] keys` do not cut the others off from releases.
            b"release" => {
                !with_ca
                    || (!matches!(self.standing(now, record), Standing::None)
                        && crate::update::split_signed(&record.value)
                            .and_then(|s| crate::update::Manifest::parse_body(s.body))
                            .is_ok_and(|m| m.channel.as_bytes() == suffix))
            }
            b"release-chunk" => true,
            _ => !with_ca,
        }
    }
}

impl RecordPolicy for NodePolicy {
    fn accept(&mut self, now: Instant, _stage: PolicyStage, record: &Record) -> bool {
        self.judge(now, record)
    }
}

/// How strongly a lease claim holds, for the DHCP conflict rule: a claim
/// by a writer certified for the address beats every other claim, so no
/// uncertified claim (an enrolling node's, or an intruder's) evicts a
/// certified guest. Higher ranks win.
pub fn claim_rank(standing: &Standing, addr: Ipv4Addr) -> u8 {
    match standing {
        Standing::Certified { ip, .. } if *ip == addr => 1,
        _ => 0,
    }
}

/// The value of a `name/<host>` record: the IPv4 address, then up to
/// eight IPv6 interface ids (8 bytes each) of the host's /64 (see
/// [`crate::ipv6`]; an interface id cannot move the /64, which the IPv4
/// address fixes).
pub fn name_value(bytes: &[u8]) -> Option<(Ipv4Addr, impl Iterator<Item = u64> + '_)> {
    let (v4, rest) = bytes.split_first_chunk::<4>()?;
    if rest.len() % 8 != 0 || rest.len() > 8 * 8 {
        return None;
    }
    let iids = rest
        .chunks_exact(8)
        .filter_map(|c| <[u8; 8]>::try_from(c).ok().map(u64::from_be_bytes));
    Some((Ipv4Addr::from(*v4), iids))
}

/// The host (if the key names one) and SRV target of a service record
/// with key suffix `<service>[/<host>]`, if the key and value are well
/// formed (a lowercase service name and host, a valid registration).
fn service_record(suffix: &[u8], value: &[u8]) -> Option<(Option<String>, String)> {
    let suffix = std::str::from_utf8(suffix).ok()?;
    let (service, host) = match suffix.split_once('/') {
        Some((s, h)) => (s, Some(h)),
        None => (suffix, None),
    };
    if dns_virt::service::service_name(service).ok()? != service {
        return None;
    }
    if host.is_some_and(|h| {
        dns_virt::table::validate_name(h.as_bytes()).is_err()
            || h.bytes().any(|b| b.is_ascii_uppercase())
    }) {
        return None;
    }
    let registration = dns_virt::Service::decode(value).ok()?;
    Some((host.map(str::to_owned), registration.target))
}

fn ipv4(bytes: &[u8]) -> Option<Ipv4Addr> {
    <[u8; 4]>::try_from(bytes).ok().map(Ipv4Addr::from)
}

/// The IPv4 SAN of a certificate: the virtual IP it binds.
pub fn certified_ip(der: &[u8]) -> Option<Ipv4Addr> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::IPAddress(b) => ipv4(b),
        _ => None,
    })
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn name_values_take_up_to_eight_whole_interface_ids() {
        let v4 = [10, 128, 0, 20];
        assert_eq!(
            name_value(&v4).map(|(a, i)| (a, i.count())),
            Some((Ipv4Addr::from(v4), 0))
        );
        let mut one = v4.to_vec();
        one.extend_from_slice(&0x0057_54ff_feeb_f0b8u64.to_be_bytes());
        let (_, iids) = name_value(&one).unwrap();
        assert_eq!(iids.collect::<Vec<_>>(), vec![0x0057_54ff_feeb_f0b8]);
        // Partial ids, too many ids, no address: refused.
        assert!(name_value(&one[..7]).is_none());
        assert!(name_value(&[0u8; 4 + 9 * 8]).is_none());
        assert!(name_value(&v4[..3]).is_none());
    }

    proptest::proptest! {
        #[test]
        fn name_values_round_trip(v4: [u8; 4], iids in proptest::collection::vec(proptest::num::u64::ANY, 0..=8)) {
            let mut bytes = v4.to_vec();
            for i in &iids {
                bytes.extend_from_slice(&i.to_be_bytes());
            }
            let (addr, parsed) = name_value(&bytes).unwrap();
            proptest::prop_assert_eq!(addr, Ipv4Addr::from(v4));
            proptest::prop_assert_eq!(parsed.collect::<Vec<_>>(), iids);
        }
    }
}
