//! [`Endpoint::export_state`] and [`Endpoint::import_state`]: the SAs
//! handed to the next process of a self-update (format and checks in
//! [`crate::resume`]).

use core::net::IpAddr;
use std::collections::HashSet;
use std::time::{Duration, Instant, UNIX_EPOCH};

use super::{Endpoint, InboundEntry, OutboundEntry, PeerCertificate};
use crate::auth::{PeerAuthenticator, VerifiedPeer, verify_signature};
use crate::policy::Action;
use crate::replay::ReplayWindow;
use crate::resume::{
    InboundState, MAX_STATE_AGE, OutboundState, PeerState, ResumeError, SEQUENCE_MARGIN, State,
};
use crate::sa::{InboundSa, OutboundSa};

impl<A: PeerAuthenticator> Endpoint<A> {
    /// Every established SA (keys, sequence numbers, replay windows) and
    /// its peer's certificate, dated and signed with this endpoint's key,
    /// for [`Endpoint::import_state`] in the next process. Handshakes under
    /// way and queued packets are left out (they start again).
    ///
    /// The blob holds keys: hand it over through an anonymous descriptor
    /// and stop sealing with this endpoint afterwards.
    pub fn export_state(&self, now: Instant) -> Result<Vec<u8>, ResumeError> {
        let exported_at_ms = self
            .wall(now)
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut peers = Vec::new();
        for (ip, peer) in &self.peers {
            let Some(certificate) = &peer.certificate else {
                continue;
            };
            let outbound = peer.outbound.as_ref().map(|o| OutboundState {
                spi: o.sa.spi(),
                suite: o.sa.suite(),
                keys: o.sa.keys().clone(),
                sequence_number: o.sa.packets(),
                used: o.used,
                rekey_in: o.rekey_at.saturating_duration_since(now),
                expires_in: o.expires_at.saturating_duration_since(now),
            });
            let inbound: Vec<InboundState> = peer
                .inbound_spis
                .iter()
                .filter_map(|spi| self.inbound.get(spi))
                .map(|e| {
                    let (top, bitmap) = e.sa.window().to_parts();
                    InboundState {
                        spi: e.sa.spi(),
                        suite: e.sa.suite(),
                        keys: e.sa.keys().clone(),
                        role: e.role,
                        expires_in: e
                            .deadline(self.config.drain_timeout)
                            .saturating_duration_since(now),
                        superseded: e.superseded_at.is_some(),
                        top,
                        bitmap,
                    }
                })
                .collect();
            if outbound.is_none() && inbound.is_empty() {
                continue;
            }
            peers.push(PeerState {
                ip: *ip,
                certificate: certificate.der.clone(),
                outbound,
                inbound,
            });
        }
        State {
            exported_at_ms,
            peers,
        }
        .emit(|bytes| self.identity.sign(bytes))
    }

    /// Takes the SAs of a blob from [`Endpoint::export_state`] (made by an
    /// endpoint with the same key). All or nothing: a blob that is
    /// truncated, not signed by this endpoint's key, older than
    /// [`MAX_STATE_AGE`], or that names a peer whose certificate does not
    /// verify now, or an SPI already in use, is refused and nothing
    /// changes. Outbound sequence numbers resume [`SEQUENCE_MARGIN`]
    /// higher. Returns the number of peers whose SAs were taken.
    pub fn import_state(&mut self, now: Instant, bytes: &[u8]) -> Result<usize, ResumeError> {
        let (state, signed, signature) = State::parse(bytes)?;
        let me = VerifiedPeer {
            ip: self.config.local_ip,
            serial: Vec::new(),
            not_after: UNIX_EPOCH,
            public_key: self.identity.public_key().to_vec(),
            algorithm: self.identity.algorithm(),
        };
        if !verify_signature(&me, signed, signature) {
            return Err(ResumeError::BadSignature);
        }
        let wall = self.wall(now);
        let now_ms = wall
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let age_ms = now_ms.saturating_sub(i64::try_from(state.exported_at_ms).unwrap_or(i64::MAX));
        let max_ms = i64::try_from(MAX_STATE_AGE.as_millis()).unwrap_or(i64::MAX);
        // A second of clock step backwards is tolerated.
        if age_ms > max_ms || age_ms < -1000 {
            return Err(ResumeError::Stale(age_ms));
        }
        // Every check before the first change.
        let mut spis = HashSet::new();
        let mut ips = HashSet::new();
        let mut verified = Vec::with_capacity(state.peers.len());
        for peer in &state.peers {
            if !ips.insert(peer.ip) || self.peers.contains_key(&peer.ip) {
                return Err(ResumeError::Invalid("peer twice"));
            }
            let v = self
                .authenticator
                .authenticate(&peer.certificate, peer.ip, wall)
                .map_err(|_| ResumeError::PeerRefused(peer.ip))?;
            for i in &peer.inbound {
                if !spis.insert(i.spi) || self.inbound.contains_key(&i.spi) {
                    return Err(ResumeError::DuplicateSpi(i.spi));
                }
            }
            verified.push(v);
        }
        let count = state.peers.len();
        for (peer, v) in state.peers.into_iter().zip(verified) {
            self.resume_peer(now, peer, &v);
        }
        Ok(count)
    }

    /// A packet from `peer` for an SPI unknown here, while this side has
    /// no SA with it: this side lost its SAs (a restart whose state was
    /// refused or never handed over) and the peer still seals with its
    /// old ones, which it would do until its own rekey. Starts a fresh key
    /// exchange at once. Does nothing while an SA or an exchange with
    /// `peer` exists, when the policy lets `peer` send in the clear, or
    /// when [`MAX_UNKNOWN_SPI_EXCHANGES_PER_SECOND`](super::MAX_UNKNOWN_SPI_EXCHANGES_PER_SECOND)
    /// exchanges have started this second (such packets prove nothing:
    /// a flood claiming many peers must not turn into as many exchanges).
    /// Returns whether an exchange started.
    pub fn handle_unknown_spi(&mut self, now: Instant, peer: IpAddr) -> bool {
        if self.config.policy.action(peer) == Action::Bypass
            || peer == self.config.local_ip
            || self.has_sa(peer)
            || self
                .peers
                .get(&peer)
                .is_some_and(|p| p.initiating.is_some() || p.unconfirmed.is_some())
        {
            return false;
        }
        let rate = &mut self.unknown_spi_rate;
        if now.saturating_duration_since(rate.start) >= Duration::from_secs(1) {
            rate.start = now;
            rate.count = 0;
        }
        if rate.count >= super::MAX_UNKNOWN_SPI_EXCHANGES_PER_SECOND {
            return false;
        }
        rate.count += 1;
        self.maybe_rekey(now, peer);
        self.peers
            .get(&peer)
            .is_some_and(|p| p.initiating.is_some())
    }

    fn resume_peer(&mut self, now: Instant, state: PeerState, verified: &VerifiedPeer) {
        let PeerState {
            ip,
            certificate,
            outbound,
            inbound,
        } = state;
        let cert_expires_at = self.instant_for(verified.not_after);
        let drain = self.config.drain_timeout;
        let mut spis = Vec::with_capacity(inbound.len());
        for i in inbound {
            let window = ReplayWindow::from_parts(i.top, i.bitmap);
            let expires_at = now + i.expires_in.min(self.config.reject_after + drain);
            self.inbound.insert(
                i.spi,
                InboundEntry {
                    peer: ip,
                    sa: InboundSa::resumed(i.spi, i.suite, &i.keys, window),
                    role: i.role,
                    created_at: now,
                    expires_at,
                    last_received_at: None,
                    // Draining: its deadline is now + drain at most.
                    superseded_at: i.superseded.then_some(now),
                },
            );
            spis.push(i.spi);
        }
        let outbound = outbound.map(|o| {
            let sequence_number = o.sequence_number.saturating_add(SEQUENCE_MARGIN);
            OutboundEntry {
                sa: OutboundSa::resumed(o.spi, o.suite, &o.keys, sequence_number),
                used: o.used,
                rekey_at: now + o.rekey_in.min(self.config.rekey_after),
                expires_at: now + o.expires_in.min(self.config.reject_after),
            }
        });
        if self.recent_peers.len() < super::MAX_RECENT_PEERS {
            self.recent_peers.insert(ip, now);
        }
        let peer = self.peers.entry(ip).or_default();
        peer.certificate = Some(PeerCertificate {
            der: certificate,
            expires_at: cert_expires_at,
        });
        peer.inbound_spis = spis;
        peer.outbound = outbound;
    }
}
