//! The node side of enrolment: send a CSR to the CA over the overlay, retry
//! until answered, and accept the certificate only if it verifies for this
//! node's virtual IP and key.
//!
//! Every reply must be a statement signed by the CA key
//! ([`crate::wire::enrol::REPLY_LABEL`]); anything else is ignored, so
//! neither a fake CA nor a forged `Rejected` can end the enrolment. A signed
//! `Rejected` for a transient reason ([`RejectReason::Internal`], e.g. a
//! full queue) is retried with the backoff rather than final.
//!
//! Sans-IO, in the house shape: inputs [`Enrolment::handle_input`] and
//! [`Enrolment::handle_timeout`]; outputs [`Enrolment::poll_transmit`] (bytes
//! for the CA), [`Enrolment::poll_timeout`] and [`Enrolment::poll_event`].

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime};

use crate::error::{VerifyError, WireError};
use crate::token::JoinToken;
use crate::verify::{VerifiedPeer, Verifier};
use crate::wire::enrol::REPLY_LABEL;
use crate::wire::{EnrolmentMessage, RejectReason};

/// Retry timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnrolmentConfig {
    /// Wait before re-sending an unanswered request; doubles per attempt.
    pub retry_timeout: Duration,
    /// Largest wait between re-sends.
    pub max_retry_timeout: Duration,
    /// While queued at the CA, re-send this often in case the CA's push of the
    /// result was lost (the CA answers a repeated request idempotently).
    pub pending_timeout: Duration,
    /// Unanswered sends before giving up.
    pub max_attempts: u32,
}

impl Default for EnrolmentConfig {
    fn default() -> Self {
        EnrolmentConfig {
            retry_timeout: Duration::from_secs(1),
            max_retry_timeout: Duration::from_secs(30),
            pending_timeout: Duration::from_secs(60),
            max_attempts: 8,
        }
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
// One event per enrolment: the size of `Issued` costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum EnrolmentEvent {
    /// The CA queued the request for an administrator.
    Pending {
        /// The CA's queue id (what `wow-ca list` shows).
        queue_id: u64,
    },
    /// The certificate arrived and verified.
    Issued {
        /// The certificate, DER.
        certificate: Vec<u8>,
        /// What it certifies.
        peer: VerifiedPeer,
    },
    /// The CA refused.
    Rejected(RejectReason),
    /// The CA never answered.
    GaveUp,
}

/// Why an input was ignored. The machine's state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnrolmentError {
    /// Malformed bytes.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// A reply to another request, or a request sent to a node.
    #[error("message is not a reply to this request")]
    NotOurs,
    /// The enrolment already finished.
    #[error("enrolment already finished")]
    Finished,
    /// The issued certificate does not verify for this node.
    #[error("issued certificate refused: {0}")]
    BadCertificate(VerifyError),
    /// The reply is not signed by the CA.
    #[error("reply not signed by the CA: {0}")]
    Unsigned(VerifyError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Requesting { attempts: u32, retry_at: Instant },
    Pending { resend_at: Instant },
    Done,
}

/// One node's enrolment with the CA.
#[derive(Debug)]
pub struct Enrolment {
    config: EnrolmentConfig,
    virtual_ip: Ipv4Addr,
    spki_der: Vec<u8>,
    request: Vec<u8>,
    request_id: u64,
    verifier: Verifier,
    state: State,
    transmits: VecDeque<Vec<u8>>,
    events: VecDeque<EnrolmentEvent>,
}

impl Enrolment {
    /// Starts enrolling `csr_der` (from [`crate::NodeKey::certificate_request`])
    /// for `virtual_ip`; `spki_der` is the node's public key, which the issued
    /// certificate must carry. `verifier` trusts the CA. The first request is
    /// ready at once in [`Enrolment::poll_transmit`]. With a join `token`
    /// the request carries its id and MAC ([`JoinToken::mac`]) and is
    /// signed at once by the CA; without, it waits for an administrator
    /// (unless it renews a live certificate of the same key).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        now: Instant,
        config: EnrolmentConfig,
        csr_der: &[u8],
        virtual_ip: Ipv4Addr,
        spki_der: Vec<u8>,
        verifier: Verifier,
        request_id: u64,
        token: Option<&JoinToken>,
    ) -> Self {
        let request = match token {
            Some(token) => EnrolmentMessage::TokenRequest {
                request_id,
                token_id: token.id,
                mac: &token.mac(request_id, csr_der),
                csr: csr_der,
            }
            .to_bytes(),
            None => EnrolmentMessage::Request {
                request_id,
                csr: csr_der,
            }
            .to_bytes(),
        };
        let mut enrolment = Enrolment {
            config,
            virtual_ip,
            spki_der,
            request: request.clone(),
            request_id,
            verifier,
            state: State::Requesting {
                attempts: 1,
                retry_at: now + config.retry_timeout,
            },
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        enrolment.transmits.push_back(request);
        enrolment
    }

    /// Whether the enrolment finished (issued, rejected or gave up).
    pub fn is_finished(&self) -> bool {
        self.state == State::Done
    }

    /// Handles a message from the CA. `wall` is the wall-clock time, for
    /// checking the issued certificate.
    pub fn handle_input(
        &mut self,
        now: Instant,
        wall: SystemTime,
        bytes: &[u8],
    ) -> Result<(), EnrolmentError> {
        let body = self
            .verifier
            .verify_statement(REPLY_LABEL, bytes)
            .map_err(EnrolmentError::Unsigned)?;
        let message = EnrolmentMessage::parse(body)?;
        if self.state == State::Done {
            return Err(EnrolmentError::Finished);
        }
        if message.request_id() != self.request_id {
            return Err(EnrolmentError::NotOurs);
        }
        match message {
            EnrolmentMessage::Request { .. } | EnrolmentMessage::TokenRequest { .. } => {
                return Err(EnrolmentError::NotOurs);
            }
            EnrolmentMessage::Pending { queue_id, .. } => {
                if !matches!(self.state, State::Pending { .. }) {
                    self.events.push_back(EnrolmentEvent::Pending { queue_id });
                }
                self.state = State::Pending {
                    resend_at: now + self.config.pending_timeout,
                };
            }
            EnrolmentMessage::Issued { certificate, .. } => {
                let peer = self
                    .verifier
                    .verify(wall, certificate, self.virtual_ip)
                    .map_err(EnrolmentError::BadCertificate)?;
                if peer.spki_der != self.spki_der {
                    return Err(EnrolmentError::BadCertificate(VerifyError::BadSignature));
                }
                self.state = State::Done;
                self.events.push_back(EnrolmentEvent::Issued {
                    certificate: certificate.to_vec(),
                    peer,
                });
            }
            EnrolmentMessage::Rejected {
                reason: RejectReason::Internal,
                ..
            } => {
                // Transient: ask again after the backoff.
                if let State::Requesting { attempts, .. } = self.state {
                    self.state = State::Requesting {
                        attempts,
                        retry_at: now + self.backoff(attempts),
                    };
                }
            }
            EnrolmentMessage::Rejected { reason, .. } => {
                self.state = State::Done;
                self.events.push_back(EnrolmentEvent::Rejected(reason));
            }
        }
        Ok(())
    }

    /// Advances timers: re-sends or gives up.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Requesting { attempts, retry_at } if now >= retry_at => {
                if attempts >= self.config.max_attempts {
                    self.state = State::Done;
                    self.events.push_back(EnrolmentEvent::GaveUp);
                    return;
                }
                let backoff = self.backoff(attempts);
                self.state = State::Requesting {
                    attempts: attempts + 1,
                    retry_at: now + backoff,
                };
                self.transmits.push_back(self.request.clone());
            }
            State::Pending { resend_at } if now >= resend_at => {
                self.state = State::Pending {
                    resend_at: now + self.config.pending_timeout,
                };
                self.transmits.push_back(self.request.clone());
            }
            _ => {}
        }
    }

    /// The wait after `attempts` sends: doubling, capped.
    fn backoff(&self, attempts: u32) -> Duration {
        self.config
            .retry_timeout
            .saturating_mul(1 << attempts.min(16))
            .min(self.config.max_retry_timeout)
    }

    /// The next message for the CA.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    /// When [`Enrolment::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Requesting { retry_at, .. } => Some(retry_at),
            State::Pending { resend_at } => Some(resend_at),
            State::Done => None,
        }
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<EnrolmentEvent> {
        self.events.pop_front()
    }
}
