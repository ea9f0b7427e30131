//! What a CA administrator's command-line front end needs beyond [`Ca`]:
//! host names as typed, serials as typed, request files in DER or PEM, a
//! node's key and certificate issued in one step, and each certificate's
//! state for a listing. No I/O: the front end reads and writes the files
//! (see also [`crate::FileStore::open_ca`] and [`crate::FileStore::init_ca`]).

use core::fmt;
use std::net::Ipv4Addr;

use std::time::{Duration, SystemTime};

use crate::error::{CaError, KeyError};
use crate::groups::Groups;
use crate::key::{KeyType, NodeKey, NodeRequest, from_pem, to_pem};
use crate::state::{IssuedRecord, hex_decode};
use crate::store::Store;
use crate::{Ca, Issued};

/// The DNS name certified for host name `name` in zone `domain`:
/// `name.domain` (lowercased, trailing dots dropped), or `name` itself when
/// it already has a dot.
pub fn host_name_in(name: &str, domain: &str) -> String {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name.contains('.') {
        name
    } else {
        format!(
            "{name}.{}",
            domain.trim_end_matches('.').to_ascii_lowercase()
        )
    }
}

/// A serial number as an administrator types it: hex in either case, an
/// optional `0x`, surrounding blanks ignored. `None` for anything else.
pub fn parse_serial(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    hex_decode(text.strip_prefix("0x").unwrap_or(text))
}

/// The DER contents of a file that holds either DER or PEM (the first
/// block tagged `tag`, e.g. `CERTIFICATE REQUEST`).
pub fn der_or_pem(tag: &str, bytes: Vec<u8>) -> Result<Vec<u8>, KeyError> {
    match std::str::from_utf8(&bytes) {
        Ok(text) if text.contains("-----BEGIN") => from_pem(tag, text),
        _ => Ok(bytes),
    }
}

/// Why [`issue_node`] issued nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// The node key could not be generated.
    #[error("node key: {0}")]
    Key(#[source] KeyError),
    /// A host name is not acceptable (or there are too many).
    #[error("{0}")]
    Names(#[source] KeyError),
    /// The CA refused or could not record the certificate.
    #[error(transparent)]
    Ca(#[from] CaError),
}

/// A node's key and the certificate the CA issued for it.
#[derive(Debug)]
pub struct NodeCredentials {
    /// The node's private key (store it mode 0600: [`NodeKey::to_pem`]).
    pub key: NodeKey,
    /// The certificate and its serial.
    pub issued: Issued,
}

impl NodeCredentials {
    /// The certificate as PEM.
    pub fn cert_pem(&self) -> String {
        to_pem("CERTIFICATE", &self.issued.certificate)
    }
}

/// Provisions a node by hand: generates a `key_type` key for `ip` and has
/// `ca` certify it for `ip` and the DNS names `dns_names` (already in
/// their final form, see [`host_name_in`]) for `validity` (the policy's
/// default when `None`). Names are checked before anything is issued.
pub fn issue_node<S: Store>(
    ca: &mut Ca<S>,
    now: SystemTime,
    ip: Ipv4Addr,
    dns_names: impl IntoIterator<Item = String>,
    key_type: KeyType,
    validity: Option<Duration>,
) -> Result<NodeCredentials, IssueError> {
    let groups = ca.policy().groups.get(&ip).cloned().unwrap_or_default();
    issue_node_in_groups(ca, now, ip, dns_names, &groups, key_type, validity)
}

/// [`issue_node`] with the operator granting `groups` (instead of what
/// [`crate::Policy::groups`] lists for `ip`).
pub fn issue_node_in_groups<S: Store>(
    ca: &mut Ca<S>,
    now: SystemTime,
    ip: Ipv4Addr,
    dns_names: impl IntoIterator<Item = String>,
    groups: &Groups,
    key_type: KeyType,
    validity: Option<Duration>,
) -> Result<NodeCredentials, IssueError> {
    let key = NodeKey::generate(key_type).map_err(IssueError::Key)?;
    let request = dns_names
        .into_iter()
        .fold(NodeRequest::new(ip), NodeRequest::with_dns_name);
    let csr = key
        .certificate_request(&request)
        .map_err(IssueError::Names)?;
    let issued = ca.sign_in_groups(now, &csr, ip, validity, groups)?;
    Ok(NodeCredentials { key, issued })
}

/// `t` for a person to read, in UTC (`2027-01-15 8:00:00.0 +00:00:00`);
/// Unix seconds for a time before the epoch or out of range.
pub fn format_time(t: SystemTime) -> String {
    match crate::clock::offset(t) {
        Some(t) => t.to_string(),
        None => crate::clock::unix_secs_signed(t).to_string(),
    }
}

/// The state of an issued certificate at some time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertState {
    /// Neither revoked nor expired.
    Live,
    /// Revoked (whether or not it also expired).
    Revoked,
    /// Past its notAfter.
    Expired,
}

impl CertState {
    /// The state of `record` at `now`.
    pub fn of(now: SystemTime, record: &IssuedRecord) -> CertState {
        if record.revoked_at.is_some() {
            CertState::Revoked
        } else if record.is_live(now) {
            CertState::Live
        } else {
            CertState::Expired
        }
    }

    /// `live`, `revoked` or `expired`.
    pub fn as_str(self) -> &'static str {
        match self {
            CertState::Live => "live",
            CertState::Revoked => "revoked",
            CertState::Expired => "expired",
        }
    }
}

impl fmt::Display for CertState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}
