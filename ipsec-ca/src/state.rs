//! The CA's persistent state: issued-certificate index, pending queue, counters.
//!
//! Encoded as JSON (byte strings as lower-case hex) so an administrator can read
//! it. Every mutation is a [`Change`]; a [`crate::Store`] persists either whole
//! snapshots or a journal of changes, and [`CaState::apply`] replays them.

use std::net::Ipv4Addr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// Current state format version.
pub const STATE_VERSION: u32 = 1;

/// Why a certificate was revoked (RFC 5280 §5.3.1 reason codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RevocationReason {
    /// unspecified (0).
    Unspecified,
    /// keyCompromise (1).
    KeyCompromise,
    /// superseded (4): replaced by a renewal.
    Superseded,
    /// cessationOfOperation (5).
    CessationOfOperation,
}

impl RevocationReason {
    pub(crate) fn to_rcgen(self) -> rcgen::RevocationReason {
        match self {
            RevocationReason::Unspecified => rcgen::RevocationReason::Unspecified,
            RevocationReason::KeyCompromise => rcgen::RevocationReason::KeyCompromise,
            RevocationReason::Superseded => rcgen::RevocationReason::Superseded,
            RevocationReason::CessationOfOperation => rcgen::RevocationReason::CessationOfOperation,
        }
    }
}

/// One issued certificate in the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedRecord {
    /// Serial number, big-endian, as encoded in the certificate.
    #[serde(with = "hex_bytes")]
    pub serial: Vec<u8>,
    /// The certified virtual IP.
    pub virtual_ip: Ipv4Addr,
    /// DER SubjectPublicKeyInfo of the holder.
    #[serde(with = "hex_bytes")]
    pub spki: Vec<u8>,
    /// Issue time, Unix seconds.
    pub issued_at: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// The certificate, DER.
    #[serde(with = "hex_bytes")]
    pub certificate: Vec<u8>,
    /// Revocation time, Unix seconds.
    pub revoked_at: Option<i64>,
    /// Revocation reason.
    pub revocation_reason: Option<RevocationReason>,
}

impl IssuedRecord {
    /// Whether the certificate is unrevoked and unexpired at `now`
    /// (notAfter itself is inside the validity, RFC 5280 §4.1.2.5).
    pub fn is_live(&self, now: SystemTime) -> bool {
        self.live_at(crate::clock::unix_secs_signed(now))
    }

    /// [`IssuedRecord::is_live`] at `now_s`, Unix seconds.
    pub(crate) fn live_at(&self, now_s: i64) -> bool {
        self.revoked_at.is_none() && self.not_after >= now_s
    }
}

/// One request waiting for an administrator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRecord {
    /// Queue id, unique per CA.
    pub id: u64,
    /// Authenticated source IP of the request.
    pub source_ip: Ipv4Addr,
    /// The requester's correlation id (echoed in enrolment replies).
    pub request_id: u64,
    /// Arrival time, Unix seconds.
    pub received_at: i64,
    /// Requested validity, seconds.
    pub validity_secs: i64,
    /// The CSR, DER.
    #[serde(with = "hex_bytes")]
    pub csr: Vec<u8>,
}

/// A join token the administrator issued (see [`crate::token`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public id.
    pub id: u64,
    /// The MAC key.
    #[serde(with = "hex_bytes")]
    pub secret: Vec<u8>,
    /// The only address it may enrol, if fixed.
    pub ip: Option<Ipv4Addr>,
    /// Issue time, Unix seconds.
    pub issued_at: i64,
    /// Expiry, Unix seconds (inclusive).
    pub expires_at: i64,
    /// When an issue consumed it.
    pub used_at: Option<i64>,
}

impl TokenRecord {
    /// Whether it may still authorise an issue at `now`.
    pub fn is_usable(&self, now: SystemTime) -> bool {
        self.usable_at(crate::clock::unix_secs_signed(now))
    }

    /// [`TokenRecord::is_usable`] at `now_s`, Unix seconds.
    pub(crate) fn usable_at(&self, now_s: i64) -> bool {
        self.used_at.is_none() && now_s <= self.expires_at
    }
}

/// A snapshot of everything the CA must not forget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaState {
    /// Format version ([`STATE_VERSION`]).
    pub version: u32,
    /// Number of changes applied since the CA was created.
    #[serde(default)]
    pub seq: u64,
    /// Number of the last CRL issued (0: none yet).
    pub crl_number: u64,
    /// Next pending-queue id.
    pub next_pending_id: u64,
    /// Every certificate ever issued, in issue order.
    pub issued: Vec<IssuedRecord>,
    /// Requests awaiting approval.
    pub pending: Vec<PendingRecord>,
    /// Join tokens, used or not.
    #[serde(default)]
    pub tokens: Vec<TokenRecord>,
}

impl Default for CaState {
    fn default() -> Self {
        CaState {
            version: STATE_VERSION,
            seq: 0,
            crl_number: 0,
            next_pending_id: 1,
            issued: Vec::new(),
            pending: Vec::new(),
            tokens: Vec::new(),
        }
    }
}

/// One mutation of the CA state, as journaled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Change {
    /// A certificate was issued; `superseded` serials were revoked as
    /// superseded at its issue time; `pending_id` left the queue.
    Issue {
        /// The new index entry.
        record: IssuedRecord,
        /// Serials the renewal superseded.
        #[serde(with = "hex_list")]
        superseded: Vec<Vec<u8>>,
        /// The queue entry this approval consumed.
        pending_id: Option<u64>,
        /// The join token this issue consumed.
        #[serde(default)]
        token: Option<u64>,
    },
    /// A certificate was revoked.
    Revoke {
        /// Its serial.
        #[serde(with = "hex_bytes")]
        serial: Vec<u8>,
        /// Unix seconds.
        at: i64,
        /// Why.
        reason: RevocationReason,
    },
    /// A request was queued, replacing `replaced` queue entries.
    Enqueue {
        /// The new queue entry.
        record: PendingRecord,
        /// Entries it replaced.
        replaced: Vec<u64>,
    },
    /// A queue entry was rejected.
    Reject {
        /// Its id.
        id: u64,
    },
    /// A CRL with this number was issued.
    CrlIssued {
        /// The CRL number.
        number: u64,
    },
    /// A join token was issued; expired tokens in `dropped` were forgotten.
    TokenIssued {
        /// The new token.
        record: TokenRecord,
        /// Ids of expired tokens removed.
        dropped: Vec<u64>,
    },
}

impl CaState {
    /// Applies one change, checking it fits the state (so a replayed journal
    /// cannot corrupt the index), and advances [`CaState::seq`]. On error the
    /// state is unchanged.
    pub fn apply(&mut self, change: &Change) -> Result<(), StoreError> {
        match change {
            Change::Issue {
                record,
                superseded,
                pending_id,
                token,
            } => {
                if self.issued.iter().any(|r| r.serial == record.serial) {
                    return Err(StoreError::Inconsistent);
                }
                let token_index = match token {
                    Some(id) => {
                        let i = self
                            .tokens
                            .iter()
                            .position(|t| t.id == *id)
                            .ok_or(StoreError::Inconsistent)?;
                        if self.tokens[i].used_at.is_some() {
                            return Err(StoreError::Inconsistent);
                        }
                        Some(i)
                    }
                    None => None,
                };
                let pending_index = match pending_id {
                    Some(id) => Some(
                        self.pending
                            .iter()
                            .position(|p| p.id == *id)
                            .ok_or(StoreError::Inconsistent)?,
                    ),
                    None => None,
                };
                let mut targets = Vec::with_capacity(superseded.len());
                for serial in superseded {
                    let i = self
                        .issued
                        .iter()
                        .position(|r| &r.serial == serial)
                        .ok_or(StoreError::Inconsistent)?;
                    targets.push(i);
                }
                for i in targets {
                    if let Some(r) = self.issued.get_mut(i)
                        && r.revoked_at.is_none()
                    {
                        r.revoked_at = Some(record.issued_at);
                        r.revocation_reason = Some(RevocationReason::Superseded);
                    }
                }
                if let Some(i) = pending_index {
                    self.pending.remove(i);
                }
                if let Some(t) = token_index.and_then(|i| self.tokens.get_mut(i)) {
                    t.used_at = Some(record.issued_at);
                }
                self.issued.push(record.clone());
            }
            Change::Revoke { serial, at, reason } => {
                let rec = self
                    .issued
                    .iter_mut()
                    .find(|r| &r.serial == serial)
                    .ok_or(StoreError::Inconsistent)?;
                if rec.revoked_at.is_some() {
                    return Err(StoreError::Inconsistent);
                }
                rec.revoked_at = Some(*at);
                rec.revocation_reason = Some(*reason);
            }
            Change::Enqueue { record, replaced } => {
                if record.id < self.next_pending_id
                    || self.pending.iter().any(|p| p.id == record.id)
                {
                    return Err(StoreError::Inconsistent);
                }
                self.pending.retain(|p| !replaced.contains(&p.id));
                self.pending.push(record.clone());
                self.next_pending_id = record.id + 1;
            }
            Change::Reject { id } => {
                let i = self
                    .pending
                    .iter()
                    .position(|p| p.id == *id)
                    .ok_or(StoreError::Inconsistent)?;
                self.pending.remove(i);
            }
            Change::CrlIssued { number } => {
                if *number <= self.crl_number {
                    return Err(StoreError::Inconsistent);
                }
                self.crl_number = *number;
            }
            Change::TokenIssued { record, dropped } => {
                if self.tokens.iter().any(|t| t.id == record.id) {
                    return Err(StoreError::Inconsistent);
                }
                self.tokens.retain(|t| !dropped.contains(&t.id));
                self.tokens.push(record.clone());
            }
        }
        self.seq += 1;
        Ok(())
    }

    /// Encodes as JSON.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Decodes JSON, checking the version.
    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let state: CaState = serde_json::from_slice(bytes).map_err(StoreError::Corrupt)?;
        if state.version != STATE_VERSION {
            return Err(StoreError::UnsupportedVersion(state.version));
        }
        Ok(state)
    }
}

mod hex_list {
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(list: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(list.len()))?;
        for bytes in list {
            seq.serialize_element(&crate::state::hex_encode(bytes))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let texts = Vec::<String>::deserialize(d)?;
        texts
            .iter()
            .map(|t| crate::state::hex_decode(t).ok_or_else(|| D::Error::custom("bad hex")))
            .collect()
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        s.serialize_str(&out)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <&str>::deserialize(d)?;
        crate::state::hex_decode(text).ok_or_else(|| D::Error::custom("bad hex"))
    }
}

/// Lower-case hex of `bytes`.
pub fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes hex (either case); `None` on odd length or a non-hex digit.
pub fn hex_decode(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    };
    digits
        .chunks_exact(2)
        .map(|pair| Some((nibble(pair[0])? << 4) | nibble(pair[1])?))
        .collect()
}
