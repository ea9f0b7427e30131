//! The core's part of a self-update: its established security
//! associations handed to the next process ([`ipsec_sa::resume`]), so that
//! the guest's peers need no new key exchange.

use std::time::Instant;

use ipsec_sa::resume::ResumeError;

use super::{Core, LeaseStore};

impl<S: LeaseStore> Core<S> {
    /// The established SAs, signed with this node's certificate key and
    /// dated, for [`Core::import_sa_state`] in the next process; `None`
    /// without a certificate (no SAs). The bytes hold keys: hand them over
    /// through an anonymous descriptor, and send nothing sealed afterwards.
    pub fn export_sa_state(&self, now: Instant) -> Option<Result<Vec<u8>, ResumeError>> {
        self.sa.as_ref().map(|sa| sa.export_state(now))
    }

    /// Takes the SAs exported by the previous process (after the identity
    /// is installed). All or nothing: a refused blob (truncated, not
    /// signed by this node's key, stale, a peer no longer valid) changes
    /// nothing, and the peers get fresh key exchanges. Returns the number
    /// of peers resumed.
    pub fn import_sa_state(&mut self, now: Instant, bytes: &[u8]) -> Result<usize, ResumeError> {
        match self.sa.as_mut() {
            Some(sa) => sa.import_state(now, bytes),
            None => Err(ResumeError::Invalid("no certificate installed")),
        }
    }
}
