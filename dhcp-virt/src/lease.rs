//! Client identity, lease records and the lease store trait.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

#[cfg(feature = "serde")]
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::StoreError;
use crate::wire::HardwareAddr;

/// How the server tells clients apart (RFC 2131 §4.2): the client
/// identifier (option 61) when sent, else the hardware address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientKey {
    /// Option 61, byte for byte.
    Id(Vec<u8>),
    /// `htype` and `chaddr`.
    Hardware(HardwareAddr),
}

impl ClientKey {
    /// The key of a client that sent `client_id` (if any) from `hardware`.
    pub fn of(client_id: Option<&[u8]>, hardware: &HardwareAddr) -> Self {
        match client_id {
            Some(id) if !id.is_empty() => ClientKey::Id(id.to_vec()),
            _ => ClientKey::Hardware(*hardware),
        }
    }

    /// The client identifier, when the key is one.
    pub fn client_id(&self) -> Option<&[u8]> {
        match self {
            ClientKey::Id(id) => Some(id),
            ClientKey::Hardware(_) => None,
        }
    }

    /// A canonical byte string: the owner value written to a shared
    /// directory, equal for equal keys on every node.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            ClientKey::Id(id) => {
                let mut v = Vec::with_capacity(id.len() + 1);
                v.push(b'i');
                v.extend_from_slice(id);
                v
            }
            ClientKey::Hardware(hw) => {
                let mut v = Vec::with_capacity(hw.as_bytes().len() + 2);
                v.push(b'h');
                v.push(hw.htype());
                v.extend_from_slice(hw.as_bytes());
                v
            }
        }
    }

    /// FNV-1a of [`ClientKey::to_bytes`]: stable across processes, builds
    /// and nodes.
    pub fn stable_hash(&self) -> u64 {
        self.to_bytes()
            .iter()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
            })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|p| u8::from_str_radix(p, 16).ok()))
        .collect()
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientKey::Id(id) => write!(f, "id:{}", hex(id)),
            ClientKey::Hardware(hw) => write!(f, "hw:{}:{}", hw.htype(), hex(hw.as_bytes())),
        }
    }
}

/// A [`ClientKey`] string that does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid client key")]
pub struct ClientKeyParseError;

impl FromStr for ClientKey {
    type Err = ClientKeyParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(id) = s.strip_prefix("id:") {
            return unhex(id).map(ClientKey::Id).ok_or(ClientKeyParseError);
        }
        let rest = s.strip_prefix("hw:").ok_or(ClientKeyParseError)?;
        let (htype, addr) = rest.split_once(':').ok_or(ClientKeyParseError)?;
        let htype = htype.parse().map_err(|_| ClientKeyParseError)?;
        let addr = unhex(addr).ok_or(ClientKeyParseError)?;
        HardwareAddr::new(htype, &addr)
            .map(ClientKey::Hardware)
            .ok_or(ClientKeyParseError)
    }
}

/// As its [`Display`](fmt::Display) text (feature `serde`).
#[cfg(feature = "serde")]
impl Serialize for ClientKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// From its [`Display`](fmt::Display) text (feature `serde`).
#[cfg(feature = "serde")]
impl<'de> Deserialize<'de> for ClientKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What a stored lease record says about its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum LeaseState {
    /// Leased until `expires_unix`.
    Bound,
    /// Released by the client; remembered so it gets the address back.
    Released,
    /// Expired; remembered so the client gets the address back.
    Expired,
}

/// One lease record as stores keep it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Lease {
    /// The address.
    pub addr: Ipv4Addr,
    /// The client holding (or last holding) it.
    pub client: ClientKey,
    /// End of the lease, in seconds since the Unix epoch.
    pub expires_unix: u64,
    /// Bound, released or expired.
    pub state: LeaseState,
    /// The client's host name (option 12), if it sent one.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub hostname: Option<String>,
}

/// Durable lease storage. The server writes through it before it queues
/// the answer. A write-through store is durable when `put` returns `Ok`; a
/// deferred store (see [`FileStore::deferred`](crate::file_store::FileStore::deferred))
/// is durable after [`LeaseStore::flush`], which the caller runs (through
/// [`Server::flush_store`](crate::Server::flush_store)) once the replies
/// are sent.
///
/// Implementations: [`MemoryStore`] and
/// [`FileStore`](crate::file_store::FileStore). The decentralised
/// allocation contract is separate: see [`crate::directory`].
pub trait LeaseStore {
    /// Every stored record (called once, when the server starts).
    fn load(&mut self) -> Result<Vec<Lease>, StoreError>;
    /// Insert or replace the record of `lease.addr`.
    fn put(&mut self, lease: &Lease) -> Result<(), StoreError>;
    /// Forget the record of `addr`.
    fn remove(&mut self, addr: Ipv4Addr) -> Result<(), StoreError>;
    /// Make every change so far durable (a no-op for write-through stores).
    fn flush(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A lease store in memory (lost when the process ends).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryStore {
    leases: BTreeMap<Ipv4Addr, Lease>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The stored records, by address.
    pub fn leases(&self) -> &BTreeMap<Ipv4Addr, Lease> {
        &self.leases
    }
}

impl LeaseStore for MemoryStore {
    fn load(&mut self) -> Result<Vec<Lease>, StoreError> {
        Ok(self.leases.values().cloned().collect())
    }

    fn put(&mut self, lease: &Lease) -> Result<(), StoreError> {
        self.leases.insert(lease.addr, lease.clone());
        Ok(())
    }

    fn remove(&mut self, addr: Ipv4Addr) -> Result<(), StoreError> {
        self.leases.remove(&addr);
        Ok(())
    }
}

impl<T: LeaseStore + ?Sized> LeaseStore for Box<T> {
    fn load(&mut self) -> Result<Vec<Lease>, StoreError> {
        (**self).load()
    }

    fn put(&mut self, lease: &Lease) -> Result<(), StoreError> {
        (**self).put(lease)
    }

    fn remove(&mut self, addr: Ipv4Addr) -> Result<(), StoreError> {
        (**self).remove(addr)
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        (**self).flush()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn client_key_text_round_trip() {
        for key in [
            ClientKey::Id(vec![1, 2, 3, 0xff]),
            ClientKey::Hardware(HardwareAddr::ethernet([2, 0, 0xab, 0, 0, 1])),
        ] {
            let text = key.to_string();
            assert_eq!(text.parse::<ClientKey>().unwrap(), key);
        }
        assert!("id:0".parse::<ClientKey>().is_err());
        assert!("hw:1".parse::<ClientKey>().is_err());
        assert!("xx:00".parse::<ClientKey>().is_err());
    }

    #[test]
    fn empty_client_id_falls_back_to_hardware() {
        let hw = HardwareAddr::ethernet([2; 6]);
        assert_eq!(ClientKey::of(Some(&[]), &hw), ClientKey::Hardware(hw));
        assert_eq!(ClientKey::of(Some(&[7]), &hw), ClientKey::Id(vec![7]));
        assert_ne!(
            ClientKey::Id(vec![1]).stable_hash(),
            ClientKey::Id(vec![2]).stable_hash()
        );
    }
}
