//! Service records: SRV (RFC 2782) and TXT (RFC 1035 §3.3.14, the
//! DNS-SD use of RFC 6763 §6) for services the hosts of the zone offer.
//!
//! A host registers a service such as `_slurmctld._tcp` with a
//! [`Service`] (priority, weight, port, target and TXT strings). The zone
//! answers it at two names:
//!
//! - `_service._proto.<host>.<zone>`: the services of one host;
//! - `_service._proto.<zone>`: every host's registration of the service,
//!   one SRV per registrant with that registrant's own name as target (what
//!   a resolver with the zone as search domain finds, e.g. Slurm's
//!   configless `_slurmctld._tcp`).
//!
//! [`ServiceTable`] holds the registrations known here, each with an
//! optional expiry. [`Service::encode`] / [`Service::decode`] are the
//! compact value an overlay store carries (one per registrant), so
//! registrations made on other nodes can be looked up there.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::error::ServiceError;
use crate::table::validate_name;

/// Version octet of the encoded value.
const VERSION: u8 = 1;
/// Most TXT strings in one registration.
pub const MAX_TXT_STRINGS: usize = 16;
/// Most octets of TXT strings in one registration (their length octets
/// included), so that an encoded value stays well under a DHT value.
pub const MAX_TXT_OCTETS: usize = 512;

/// One registration of a service by a host.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Service {
    /// SRV priority: lower is tried first.
    pub priority: u16,
    /// SRV weight among records of the same priority.
    pub weight: u16,
    /// The port the service listens on.
    pub port: u16,
    /// The host offering it, relative to the zone and lowercase (the SRV
    /// target is `<target>.<zone>`).
    pub target: String,
    /// TXT strings (each at most 255 octets).
    pub txt: Vec<Vec<u8>>,
}

impl Service {
    /// A service on `port` of `target` with priority and weight 0 and no
    /// TXT strings.
    pub fn new(target: &str, port: u16) -> Service {
        Service {
            priority: 0,
            weight: 0,
            port,
            target: target.to_ascii_lowercase(),
            txt: Vec::new(),
        }
    }

    /// Checks the target and TXT strings.
    pub fn validate(&self) -> Result<(), ServiceError> {
        validate_name(self.target.as_bytes()).map_err(|_| ServiceError::InvalidTarget)?;
        if self.target.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ServiceError::InvalidTarget);
        }
        if self.txt.len() > MAX_TXT_STRINGS {
            return Err(ServiceError::TooMuchText);
        }
        let mut total = 0usize;
        for s in &self.txt {
            if s.len() > 255 {
                return Err(ServiceError::TooMuchText);
            }
            total += 1 + s.len();
        }
        if total > MAX_TXT_OCTETS {
            return Err(ServiceError::TooMuchText);
        }
        Ok(())
    }

    /// Octets of the encoded value.
    pub fn encoded_len(&self) -> usize {
        8 + self.target.len() + 1 + self.txt.iter().map(|s| 1 + s.len()).sum::<usize>()
    }

    /// Appends the value `version:u8 priority:u16 weight:u16 port:u16
    /// target_len:u8 target txt_count:u8 (len:u8 string)*` to `out`.
    /// The service must [validate](Service::validate).
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), ServiceError> {
        self.validate()?;
        out.reserve(self.encoded_len());
        out.push(VERSION);
        out.extend_from_slice(&self.priority.to_be_bytes());
        out.extend_from_slice(&self.weight.to_be_bytes());
        out.extend_from_slice(&self.port.to_be_bytes());
        // Validated: a name is at most 253 octets, a string 255, at most 16.
        out.push(self.target.len() as u8);
        out.extend_from_slice(self.target.as_bytes());
        out.push(self.txt.len() as u8);
        for s in &self.txt {
            out.push(s.len() as u8);
            out.extend_from_slice(s);
        }
        Ok(())
    }

    /// The encoded value as a new vector.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ServiceError> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(out)
    }

    /// Decodes a value written by [`Service::encode`]; every field is
    /// checked as on encoding, and trailing octets are an error.
    pub fn decode(bytes: &[u8]) -> Result<Service, ServiceError> {
        let mut r = Reader(bytes);
        if r.u8()? != VERSION {
            return Err(ServiceError::Version);
        }
        let priority = r.u16()?;
        let weight = r.u16()?;
        let port = r.u16()?;
        let len = usize::from(r.u8()?);
        let target = std::str::from_utf8(r.take(len)?)
            .map_err(|_| ServiceError::InvalidTarget)?
            .to_owned();
        let count = usize::from(r.u8()?);
        if count > MAX_TXT_STRINGS {
            return Err(ServiceError::TooMuchText);
        }
        let mut txt = Vec::with_capacity(count);
        for _ in 0..count {
            let len = usize::from(r.u8()?);
            txt.push(r.take(len)?.to_vec());
        }
        if !r.0.is_empty() {
            return Err(ServiceError::Trailing);
        }
        let service = Service {
            priority,
            weight,
            port,
            target,
            txt,
        };
        service.validate()?;
        Ok(service)
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ServiceError> {
        if self.0.len() < n {
            return Err(ServiceError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, ServiceError> {
        self.take(1).map(|b| b.first().copied().unwrap_or_default())
    }

    fn u16(&mut self) -> Result<u16, ServiceError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([
            b.first().copied().unwrap_or_default(),
            b.get(1).copied().unwrap_or_default(),
        ]))
    }
}

/// Checks a service name `_service._proto` (RFC 2782, RFC 6335 §5.1:
/// two labels, each `_` and 1–62 letters, digits or `-`) and returns it in
/// lowercase.
pub fn service_name(name: &str) -> Result<String, ServiceError> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let mut labels = name.split('.');
    let (Some(service), Some(proto), None) = (labels.next(), labels.next(), labels.next()) else {
        return Err(ServiceError::InvalidServiceName);
    };
    if !is_service_label(service.as_bytes()) || !is_service_label(proto.as_bytes()) {
        return Err(ServiceError::InvalidServiceName);
    }
    Ok(name.to_ascii_lowercase())
}

/// Whether `label` is `_` followed by 1–62 letters, digits or `-`.
pub fn is_service_label(label: &[u8]) -> bool {
    match label.split_first() {
        Some((b'_', rest)) => {
            !rest.is_empty()
                && rest.len() <= 62
                && rest.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        }
        _ => false,
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    service: Service,
    expires_at: Option<Instant>,
}

/// The services registered here, by service name and host (both lowercase,
/// the host relative to the zone).
#[derive(Clone, Debug, Default)]
pub struct ServiceTable {
    entries: BTreeMap<(String, String), Entry>,
}

impl ServiceTable {
    /// An empty table.
    pub fn new() -> ServiceTable {
        ServiceTable::default()
    }

    /// Registers `service` under `name` (`_service._proto`) for `host`
    /// (relative to the zone); replaces and returns an earlier registration
    /// of the same name and host. With `expires_at` it is removed by
    /// [`ServiceTable::expire`].
    pub fn insert(
        &mut self,
        name: &str,
        host: &str,
        service: Service,
        expires_at: Option<Instant>,
    ) -> Result<Option<Service>, ServiceError> {
        let name = service_name(name)?;
        validate_name(host.as_bytes()).map_err(|_| ServiceError::InvalidHost)?;
        service.validate()?;
        let entry = Entry {
            service,
            expires_at,
        };
        Ok(self
            .entries
            .insert((name, host.to_ascii_lowercase()), entry)
            .map(|e| e.service))
    }

    /// Removes the registration of `name` by `host`.
    pub fn remove(&mut self, name: &str, host: &str) -> Option<Service> {
        let key = (name.to_ascii_lowercase(), host.to_ascii_lowercase());
        self.entries.remove(&key).map(|e| e.service)
    }

    /// Removes every registration by `host`; returns how many.
    pub fn remove_host(&mut self, host: &str) -> usize {
        let before = self.entries.len();
        self.entries
            .retain(|(_, h), _| !h.eq_ignore_ascii_case(host));
        before - self.entries.len()
    }

    /// Removes registrations whose lifetime is over; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.entries.len();
        self.entries
            .retain(|_, e| e.expires_at.is_none_or(|t| t > now));
        before - self.entries.len()
    }

    /// The earliest expiry.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.entries.values().filter_map(|e| e.expires_at).min()
    }

    /// The registration of `name` by `host`.
    pub fn get(&self, name: &str, host: &str) -> Option<&Service> {
        let key = (name.to_ascii_lowercase(), host.to_ascii_lowercase());
        self.entries.get(&key).map(|e| &e.service)
    }

    /// Every host's registration of `name`, by host.
    pub fn of_service<'a>(&'a self, name: &str) -> impl Iterator<Item = (&'a str, &'a Service)> {
        let name = name.to_ascii_lowercase();
        self.entries
            .iter()
            .filter(move |((n, _), _)| *n == name)
            .map(|((_, h), e)| (h.as_str(), &e.service))
    }

    /// Every registration: `(name, host, service)`.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, &Service)> {
        self.entries
            .iter()
            .map(|((n, h), e)| (n.as_str(), h.as_str(), &e.service))
    }

    /// Number of registrations.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use std::time::Duration;

    fn slurm() -> Service {
        Service {
            priority: 1,
            weight: 5,
            port: 6817,
            target: "ctl".into(),
            txt: vec![b"cluster=wow".to_vec(), Vec::new()],
        }
    }

    #[test]
    fn encodes_fields_in_order() {
        let bytes = slurm().to_bytes().unwrap();
        assert_eq!(
            bytes,
            [
                &[1, 0, 1, 0, 5, 0x1a, 0xa1, 3][..],
                b"ctl",
                &[2, 11],
                b"cluster=wow",
                &[0]
            ]
            .concat()
        );
        assert_eq!(bytes.len(), slurm().encoded_len());
        assert_eq!(Service::decode(&bytes), Ok(slurm()));
    }

    #[test]
    fn rejects_bad_values() {
        let bytes = slurm().to_bytes().unwrap();
        for cut in 0..bytes.len() {
            assert_eq!(
                Service::decode(&bytes[..cut]),
                Err(ServiceError::Truncated),
                "cut {cut}"
            );
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(Service::decode(&long), Err(ServiceError::Trailing));
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert_eq!(Service::decode(&v2), Err(ServiceError::Version));
        let mut upper = bytes;
        upper[8] = b'C';
        assert_eq!(Service::decode(&upper), Err(ServiceError::InvalidTarget));
        let mut s = slurm();
        s.target = "a..b".into();
        assert_eq!(s.to_bytes(), Err(ServiceError::InvalidTarget));
        s.target = "ok".into();
        s.txt = vec![vec![b'x'; 255]; 3];
        assert_eq!(s.to_bytes(), Err(ServiceError::TooMuchText));
    }

    #[test]
    fn service_names() {
        assert_eq!(
            service_name("_SlurmCtld._TCP."),
            Ok("_slurmctld._tcp".into())
        );
        for bad in ["_a", "a._tcp", "_a._", "_a._b._c", "_a b._tcp", ""] {
            assert_eq!(
                service_name(bad),
                Err(ServiceError::InvalidServiceName),
                "{bad}"
            );
        }
    }

    #[test]
    fn table_replaces_lists_and_expires() {
        let now = Instant::now();
        let mut t = ServiceTable::new();
        assert_eq!(
            t.insert("_x._tcp", "A", Service::new("a", 1), None),
            Ok(None)
        );
        let later = Some(now + Duration::from_secs(10));
        assert_eq!(
            t.insert("_x._tcp", "b", Service::new("b", 2), later),
            Ok(None)
        );
        assert_eq!(
            t.insert("_y._udp", "a", Service::new("a", 3), None),
            Ok(None)
        );
        assert_eq!(
            t.insert("_X._tcp", "a", Service::new("a", 4), None),
            Ok(Some(Service::new("a", 1)))
        );
        let hosts: Vec<_> = t.of_service("_x._TCP").map(|(h, s)| (h, s.port)).collect();
        assert_eq!(hosts, [("a", 4), ("b", 2)]);
        assert_eq!(t.next_expiry(), later);
        assert_eq!(t.expire(now + Duration::from_secs(10)), 1);
        assert_eq!(t.get("_x._tcp", "b"), None);
        assert_eq!(t.remove_host("a"), 2);
        assert!(t.is_empty());
        assert_eq!(
            t.insert("_x._tcp", "bad host", Service::new("a", 1), None),
            Err(ServiceError::InvalidHost)
        );
    }
}
