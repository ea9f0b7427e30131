//! Link set-up: probes, challenges and proofs (the handshake of
//! [`crate::identity`]), ConnectToMe, new and closed links.

use core::net::SocketAddr;
use std::time::Instant;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::Rng;
use ring::hmac;

use super::{DisconnectReason, Event, Lost, Node};
use crate::address::Address;
use crate::identity::{Identity, Role, Transcript};
use crate::table::Connection;
use crate::wire::{CloseReason, LinkReply, LinkRequest, LinkStatus, Message, Mode, Payload, Roles};

/// Endpoints named by other nodes that this node remembers probing.
pub(super) const PROBE_ENTRIES: usize = 32;
/// Probes an endpoint named by another node gets before it answers, one
/// per link retry (a TURN relay or a NAT drops the first ones until the
/// peer has opened its side).
pub(super) const PROBES_PER_UNCONFIRMED: u8 = 3;
/// Endpoints named by another node's ConnectToMe that are probed.
pub(super) const PROBES_PER_CONNECT: usize = 4;
/// Observed-endpoint reports remembered.
pub(super) const OBSERVED_ENTRIES: usize = 8;
/// Peers whose last report of our endpoint is remembered.
pub(super) const REPORTED_ENTRIES: usize = 32;
/// Peers whose NAT-traversal candidates are remembered for later links.
pub(super) const LINK_HINT_ENTRIES: usize = 64;
/// Candidates remembered per peer (the most recent first).
pub(super) const LINK_HINT_ENDPOINTS: usize = 4;
/// How long remembered candidates are added to new link attempts: a
/// TURN relayed address is offered once, when punching fails, and the link
/// attempt it was meant for may have ended by then.
pub(super) const LINK_HINT_LIFETIME: core::time::Duration = core::time::Duration::from_secs(120);

/// Candidates the NAT-traversal hook reported for a peer
/// ([`Node::handle_link_candidates`]), kept for the next link to it.
#[derive(Debug, Clone)]
pub(super) struct LinkHint {
    pub(super) endpoints: Vec<SocketAddr>,
    pub(super) expires_at: Instant,
}

/// A responder's challenge, answered with a proof.
#[derive(Debug, Clone, Copy)]
pub(super) struct Answered {
    pub(super) endpoint: SocketAddr,
    pub(super) responder: Address,
    pub(super) challenge: u64,
    pub(super) observed: SocketAddr,
}

#[derive(Debug, Clone)]
pub(super) struct PendingLink {
    pub(super) nonce: u64,
    pub(super) target: Address,
    pub(super) roles: Roles,
    /// Endpoints trusted enough to retry (configured, formerly linked, or
    /// reported by the NAT-traversal hook).
    pub(super) endpoints: Vec<SocketAddr>,
    /// Endpoints another node named, not yet seen to answer: each gets at
    /// most [`PROBES_PER_UNCONFIRMED`] small probes, one per retry, however
    /// many nodes name it (return-routability check).
    pub(super) unconfirmed: Vec<SocketAddr>,
    /// The challenge being answered (step 3 of the handshake).
    pub(super) answered: Option<Answered>,
    /// The link serves the peer's request (a ConnectToMe), not ours.
    pub(super) for_peer: bool,
    pub(super) attempts: u8,
    pub(super) retry_at: Instant,
    /// No request sent yet: waiting for the NAT-traversal hook
    /// ([`Config::defer_links_to_punch`]).
    pub(super) deferred: bool,
}

#[derive(Debug, Clone)]
pub(super) struct PendingCtm {
    pub(super) nonce: u64,
    pub(super) roles: Roles,
    pub(super) target: u64,
    pub(super) expires_at: Instant,
}

/// An endpoint named by another node that was probed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Probe {
    pub(super) endpoint: SocketAddr,
    /// When the first probe went out.
    pub(super) at: Instant,
    /// When the last one went out.
    pub(super) last: Instant,
    /// How many went out.
    pub(super) sent: u8,
    pub(super) answered: bool,
}

/// Reports of our own endpoint by authenticated peers.
#[derive(Debug, Clone)]
pub(super) struct Observed {
    pub(super) endpoint: SocketAddr,
    pub(super) reporters: Vec<Address>,
    pub(super) raised: bool,
}

/// A fresh secret for link challenges.
pub(super) fn challenge_key(rng: &mut ChaCha8Rng) -> hmac::Key {
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    hmac::Key::new(hmac::HMAC_SHA256, &secret)
}

/// The challenge for a probe with `nonce` from `sender` at `endpoint`.
pub(super) fn challenge_for(
    key: &hmac::Key,
    nonce: u64,
    sender: Address,
    endpoint: SocketAddr,
) -> u64 {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(&nonce.to_be_bytes());
    ctx.update(&sender.to_bytes());
    match endpoint {
        SocketAddr::V4(a) => ctx.update(&a.ip().to_ipv6_mapped().octets()),
        SocketAddr::V6(a) => ctx.update(&a.ip().octets()),
    }
    ctx.update(&endpoint.port().to_be_bytes());
    let tag = ctx.sign();
    let mut b = [0u8; 8];
    b.copy_from_slice(&tag.as_ref()[..8]);
    u64::from_be_bytes(b).max(1)
}

impl<I: Identity> Node<I> {
    /// Step 1 of the handshake: a probe without proof or endpoints.
    pub(super) fn probe(&self, nonce: u64, target: Address, roles: Roles) -> Message {
        Message::LinkRequest(LinkRequest {
            nonce,
            challenge: 0,
            sender: self.address,
            target,
            roles,
            endpoints: Vec::new(),
            identity: Vec::new(),
        })
    }

    /// Step 3: the answer to a challenge, with our proof.
    pub(super) fn answer(&mut self, nonce: u64, roles: Roles, a: Answered) -> Message {
        let transcript = Transcript {
            role: Role::Request,
            requester: self.address,
            responder: a.responder,
            nonce,
            challenge: a.challenge,
            roles: roles.0,
            requester_endpoint: a.observed,
        };
        Message::LinkRequest(LinkRequest {
            nonce,
            challenge: a.challenge,
            sender: self.address,
            target: a.responder,
            roles,
            endpoints: self.my_endpoints(),
            identity: self.identity.prove(&transcript),
        })
    }

    /// Sends the probes of pending link `i`: to its trusted endpoints, and
    /// to each unconfirmed endpoint that has had fewer than
    /// [`PROBES_PER_UNCONFIRMED`] probes in this hold period and none
    /// within the last retry interval (whichever link asked).
    pub(super) fn send_probes(&mut self, now: Instant, i: usize) {
        self.send_trusted_probes(i);
        let Some(p) = self.pending_links.get(i) else {
            return;
        };
        if p.unconfirmed.is_empty() {
            return;
        }
        let msg = self.probe(p.nonce, p.target, p.roles);
        let unconfirmed = p.unconfirmed.clone();
        let retry = self.config.link_retry_duration;
        let hold = retry * u32::from(self.config.link_attempts.max(1));
        for e in unconfirmed {
            if let Some(r) = self
                .probes
                .iter_mut()
                .find(|r| r.endpoint == e && now < r.at + hold)
            {
                if r.sent >= PROBES_PER_UNCONFIRMED || now < r.last + retry.mul_f32(0.9) {
                    continue;
                }
                r.sent += 1;
                r.last = now;
                self.send_maintenance(e, msg.clone());
                continue;
            }
            self.probes.retain(|r| r.endpoint != e);
            if self.probes.len() >= PROBE_ENTRIES
                && let Some((j, _)) = self.probes.iter().enumerate().min_by_key(|(_, r)| r.at)
            {
                self.probes.swap_remove(j);
            }
            self.probes.push(Probe {
                endpoint: e,
                at: now,
                last: now,
                sent: 1,
                answered: false,
            });
            self.send_maintenance(e, msg.clone());
        }
    }

    /// Sends the probe of pending link `i` to its trusted endpoints.
    pub(super) fn send_trusted_probes(&mut self, i: usize) {
        let Some(p) = self.pending_links.get(i) else {
            return;
        };
        let msg = self.probe(p.nonce, p.target, p.roles);
        for e in p.endpoints.clone() {
            self.send_maintenance(e, msg.clone());
        }
    }

    /// Whether `e` is known to answer: a linked peer's endpoint or one
    /// that answered a probe.
    pub(super) fn is_confirmed(&self, e: SocketAddr) -> bool {
        self.table.position_by_endpoint(e).is_some()
            || self.probes.iter().any(|r| r.endpoint == e && r.answered)
    }

    /// Links kept only because the peer asked for an untrimmable role.
    pub(super) fn exempt_links(&self) -> usize {
        self.table
            .iter()
            .filter(|c| {
                c.mine.is_empty()
                    && (c.theirs.contains(Roles::NEAR)
                        || c.theirs.contains(Roles::LEAF)
                        || c.theirs.contains(Roles::DEMAND))
            })
            .count()
    }

    /// An authenticated peer reports our endpoint; raise it once confirmed.
    pub(super) fn observe(&mut self, reporter: Address, endpoint: SocketAddr, trusted: bool) {
        let i = match self.observed.iter().position(|o| o.endpoint == endpoint) {
            Some(i) => i,
            None => {
                if self.observed.len() >= OBSERVED_ENTRIES {
                    self.observed.remove(0);
                }
                self.observed.push(Observed {
                    endpoint,
                    reporters: Vec::new(),
                    raised: false,
                });
                self.observed.len() - 1
            }
        };
        let need = self.config.observed_confirmations.max(1);
        let o = &mut self.observed[i];
        if !o.reporters.contains(&reporter) && o.reporters.len() < need {
            o.reporters.push(reporter);
        }
        if !o.raised && (trusted || o.reporters.len() >= need) {
            o.raised = true;
            self.events.push_back(Event::ObservedEndpoint { endpoint });
        }
    }

    /// An authenticated peer (a signed link reply) reports our endpoint as
    /// `endpoint`. If it reported another one before, our mapping changed.
    fn note_reported(&mut self, now: Instant, reporter: Address, endpoint: SocketAddr) {
        let changed = match self.reported.iter_mut().find(|(a, _)| *a == reporter) {
            Some(r) => core::mem::replace(&mut r.1, endpoint) != endpoint,
            None => {
                if self.reported.len() >= REPORTED_ENTRIES {
                    self.reported.remove(0);
                }
                self.reported.push((reporter, endpoint));
                false
            }
        };
        if changed {
            self.on_mapping_changed(now, reporter, endpoint);
        }
    }

    /// Our datagrams now come from `endpoint` (as `reporter` sees them):
    /// peers behind filtering NATs neither hear us nor reach us at the old
    /// endpoint. A link waiting for an answer that has not heard from its
    /// peer since the rebind probe that led to this report (or at all, if
    /// no probe did: the report came first) is stale: it is dropped at
    /// once (its traffic takes other links) and made again through the
    /// NAT-traversal hook ([`Event::LinkAttempt`]), which opens our new
    /// mapping toward the peer. Nothing the peer sent moves the link: only
    /// the new authenticated handshake does.
    fn on_mapping_changed(&mut self, now: Instant, reporter: Address, endpoint: SocketAddr) {
        self.events.push_back(Event::MappingChanged { endpoint });
        // A probe older than one probe period belongs to an earlier
        // silence: links heard from since then tell nothing about this
        // change.
        let since = self
            .rebind_probed_at
            .filter(|&p| now.saturating_duration_since(p) <= self.config.rebind_probe_duration)
            .unwrap_or(now);
        let stale: Vec<(usize, Address, SocketAddr, Roles)> = self
            .table
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                c.address != reporter && c.unanswered_since.is_some() && c.last_heard_at < since
            })
            .map(|(i, c)| (i, c.address, c.endpoint, c.mine))
            .collect();
        for &(i, ..) in stale.iter().rev() {
            self.drop_connection(now, i, DisconnectReason::Timeout);
        }
        self.mapping_relinks.extend(
            stale
                .into_iter()
                .filter(|s| !s.3.is_empty())
                .map(|(_, peer, endpoint, roles)| (peer, endpoint, roles)),
        );
        self.mapping_reporter = Some(reporter);
        // Routing to the peers just dropped needs the reporter's view of
        // the ring; a link that moved (rather than came anew) still has it.
        if self
            .table
            .position(reporter)
            .is_some_and(|i| !self.table.lookahead(i).is_empty())
        {
            self.flush_mapping_relinks(now);
        }
    }

    /// Makes again the links dropped when our mapping changed
    /// ([`on_mapping_changed`](Self::on_mapping_changed)).
    pub(super) fn flush_mapping_relinks(&mut self, now: Instant) {
        self.mapping_reporter = None;
        for (peer, endpoint, roles) in std::mem::take(&mut self.mapping_relinks) {
            if self.table.position(peer).is_some()
                || self.pending_links.iter().any(|p| p.target == peer)
            {
                continue;
            }
            let nonce = self.rng.next_u64();
            self.start_link(now, vec![endpoint], Vec::new(), peer, roles, nonce, false);
        }
    }

    pub(super) fn set_joined(&mut self) {
        self.join_ctms_sent = 0;
        if !self.joined {
            self.joined = true;
            self.events.push_back(Event::Joined);
        }
    }

    pub(super) fn try_bootstrap(&mut self, now: Instant) {
        if self.bootstrap.is_empty() {
            return;
        }
        let ep = self.bootstrap[self.bootstrap_next % self.bootstrap.len()];
        self.bootstrap_next = self.bootstrap_next.wrapping_add(1);
        let nonce = self.rng.next_u64();
        self.start_link(
            now,
            vec![ep],
            Vec::new(),
            Address::ZERO,
            Roles::LEAF,
            nonce,
            false,
        );
    }

    /// Starts a link attempt: `endpoints` are trusted (retried),
    /// `unconfirmed` were named by another node (probed once).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_link(
        &mut self,
        now: Instant,
        endpoints: Vec<SocketAddr>,
        unconfirmed: Vec<SocketAddr>,
        target: Address,
        roles: Roles,
        nonce: u64,
        for_peer: bool,
    ) {
        if target == self.address || (endpoints.is_empty() && unconfirmed.is_empty()) {
            return;
        }
        if target != Address::ZERO
            && self
                .pending_links
                .iter()
                .any(|p| p.target == target && p.nonce == nonce)
        {
            return;
        }
        if for_peer
            && self.pending_links.iter().filter(|p| p.for_peer).count()
                >= self.config.max_pending_links
        {
            return;
        }
        let (mut endpoints, mut unconfirmed) = (endpoints, unconfirmed);
        let (known, rest): (Vec<SocketAddr>, Vec<SocketAddr>) =
            unconfirmed.drain(..).partition(|e| self.is_confirmed(*e));
        for e in known {
            if !endpoints.contains(&e) {
                endpoints.push(e);
            }
        }
        unconfirmed = rest;
        unconfirmed.dedup();
        unconfirmed.truncate(PROBES_PER_CONNECT);
        // The hook's candidates that came within the last retry period:
        // it has just opened our NAT toward them (a peer's punch request
        // that arrived before our own link attempt, as when the peer
        // relinks after its mapping changed), so nothing is held.
        let mut fresh_hint = false;
        if let Some(hint) = self.link_hints.get(&target)
            && now < hint.expires_at
        {
            fresh_hint = hint
                .expires_at
                .checked_sub(LINK_HINT_LIFETIME)
                .is_some_and(|at| {
                    now.saturating_duration_since(at) < self.config.link_retry_duration
                });
            for e in &hint.endpoints {
                if !endpoints.contains(e) {
                    endpoints.push(*e);
                }
            }
        }
        let deferred = self.config.defer_links_to_punch && target != Address::ZERO && !fresh_hint;
        if target != Address::ZERO {
            self.events.push_back(Event::LinkAttempt {
                peer: target,
                endpoints: endpoints.iter().chain(&unconfirmed).copied().collect(),
            });
        }
        self.pending_links.push(PendingLink {
            nonce,
            target,
            roles,
            endpoints,
            unconfirmed,
            answered: None,
            for_peer,
            attempts: if deferred { 0 } else { 1 },
            retry_at: now + self.config.link_retry_duration,
            deferred,
        });
        if !deferred {
            self.send_probes(now, self.pending_links.len() - 1);
        }
    }

    /// Refuses a link request (no proof, no endpoints: never larger than
    /// the request).
    /// Remembers the hook's candidates for `peer` (bounded: expired
    /// entries go first, then the one closest to expiry).
    pub(super) fn remember_link_hint(
        &mut self,
        now: Instant,
        peer: Address,
        endpoints: &[SocketAddr],
    ) {
        if endpoints.is_empty() || peer == Address::ZERO {
            return;
        }
        if !self.link_hints.contains_key(&peer) && self.link_hints.len() >= LINK_HINT_ENTRIES {
            self.link_hints.retain(|_, h| now < h.expires_at);
            if self.link_hints.len() >= LINK_HINT_ENTRIES
                && let Some(oldest) = self
                    .link_hints
                    .iter()
                    .min_by_key(|(_, h)| h.expires_at)
                    .map(|(a, _)| *a)
            {
                self.link_hints.remove(&oldest);
            }
        }
        let hint = self.link_hints.entry(peer).or_insert(LinkHint {
            endpoints: Vec::new(),
            expires_at: now,
        });
        if now >= hint.expires_at {
            hint.endpoints.clear();
        }
        hint.expires_at = now + LINK_HINT_LIFETIME;
        for e in endpoints.iter().rev() {
            hint.endpoints.retain(|x| x != e);
            hint.endpoints.insert(0, *e);
        }
        hint.endpoints.truncate(LINK_HINT_ENDPOINTS);
    }

    pub(super) fn refuse(
        &mut self,
        from: SocketAddr,
        req: &LinkRequest,
        status: LinkStatus,
        challenge: u64,
    ) {
        let msg = Message::LinkReply(LinkReply {
            nonce: req.nonce,
            challenge,
            sender: self.address,
            status,
            roles: req.roles,
            observed: from,
            endpoints: Vec::new(),
            identity: Vec::new(),
        });
        self.send_maintenance(from, msg);
    }

    pub(super) fn on_link_request(&mut self, now: Instant, from: SocketAddr, req: LinkRequest) {
        if req.sender == self.address {
            return;
        }
        if req.target != Address::ZERO && req.target != self.address {
            self.refuse(from, &req, LinkStatus::WrongTarget, req.challenge);
            return;
        }
        let fresh = challenge_for(&self.challenge_keys[0], req.nonce, req.sender, from);
        let valid = req.challenge != 0
            && (req.challenge == fresh
                || req.challenge
                    == challenge_for(&self.challenge_keys[1], req.nonce, req.sender, from));
        if !valid {
            // A probe, or an answer to a challenge made for another
            // endpoint (a replay) or long ago: challenge it. Nothing is
            // stored and nothing moves.
            self.refuse(from, &req, LinkStatus::Challenge, fresh);
            return;
        }
        let transcript = Transcript {
            role: Role::Request,
            requester: req.sender,
            responder: self.address,
            nonce: req.nonce,
            challenge: req.challenge,
            roles: req.roles.0,
            requester_endpoint: from,
        };
        if let Err(error) = self.identity.verify(req.sender, &transcript, &req.identity) {
            self.events.push_back(Event::PeerRejected {
                peer: req.sender,
                endpoint: from,
                error,
            });
            self.refuse(from, &req, LinkStatus::IdentityRejected, req.challenge);
            return;
        }
        // Authenticated from here on.
        // A request answering our own ConnectToMe: we need this link.
        let ctm = self
            .pending_ctms
            .iter()
            .position(|p| p.nonce == req.nonce && p.roles == req.roles);
        if self.table.position(req.sender).is_none() && ctm.is_none() {
            let room = self.table.len() < self.max_connections();
            let must = req.roles.contains(Roles::NEAR)
                || req.roles.contains(Roles::LEAF)
                || req.roles.contains(Roles::DEMAND);
            if (!room && !must) || (must && self.exempt_links() >= self.config.max_exempt_links) {
                self.refuse(from, &req, LinkStatus::Full, req.challenge);
                return;
            }
        }
        self.replace_at_endpoint(now, from, req.sender);
        let existing = self.table.position(req.sender);
        let mut moved = false;
        let i = match existing {
            Some(i) => {
                if let Some(c) = self.table.get_mut(i) {
                    moved = c.endpoint != from;
                    c.endpoint = from;
                    c.last_heard_at = now;
                }
                self.handshook_again(now, i);
                i
            }
            None => self.add_connection(now, req.sender, from),
        };
        if let Some(c) = self.table.get_mut(i) {
            if ctm.is_some() {
                c.mine = c.mine.with(req.roles);
                if req.roles.contains(Roles::SHORTCUT) {
                    c.shortcut_size = self.size_estimate as u32;
                }
            } else {
                c.theirs = c.theirs.with(req.roles);
            }
        }
        if let Some(p) = ctm {
            let pc = self.pending_ctms.swap_remove(p);
            if Some(pc.nonce) == self.join_nonce {
                self.set_joined();
            }
        }
        let proof = self.identity.prove(&Transcript {
            role: Role::Reply,
            ..transcript
        });
        let msg = Message::LinkReply(LinkReply {
            nonce: req.nonce,
            challenge: req.challenge,
            sender: self.address,
            status: LinkStatus::Accepted,
            roles: req.roles,
            observed: from,
            endpoints: self.my_endpoints(),
            identity: proof,
        });
        self.send_maintenance(from, msg);
        if existing.is_none() {
            self.after_new_connection(now, i);
        } else if moved {
            self.after_moved_connection(from);
        }
    }

    /// A link moved to a new endpoint by an authenticated handshake (the
    /// peer's NAT rebound): the peer may have dropped its end and lost our
    /// neighbour list with it, which its routing needs; send it again.
    pub(super) fn after_moved_connection(&mut self, endpoint: SocketAddr) {
        let list = self.neighbor_list();
        self.stats.neighbor_lists_sent += 1;
        self.send_maintenance(endpoint, list);
    }

    /// One link per endpoint: a node other than `peer` that held
    /// `endpoint` is gone (`peer` just authenticated from there).
    pub(super) fn replace_at_endpoint(
        &mut self,
        now: Instant,
        endpoint: SocketAddr,
        peer: Address,
    ) {
        if let Some(j) = self.table.position_by_endpoint(endpoint)
            && self.table.get(j).is_some_and(|c| c.address != peer)
        {
            self.drop_connection(now, j, DisconnectReason::Replaced);
        }
    }

    pub(super) fn on_link_reply(&mut self, now: Instant, from: SocketAddr, rep: LinkReply) {
        if rep.sender == self.address {
            return;
        }
        let Some(p) = self.pending_links.iter().position(|p| {
            p.nonce == rep.nonce && (p.target == Address::ZERO || p.target == rep.sender)
        }) else {
            return;
        };
        match rep.status {
            LinkStatus::Challenge => {
                let pl = &mut self.pending_links[p];
                // Only the first endpoint that answers, and each challenge
                // once (a duplicate is not answered again: the retry timer
                // resends).
                if rep.challenge == 0
                    || pl
                        .answered
                        .is_some_and(|a| a.endpoint != from || a.challenge == rep.challenge)
                {
                    return;
                }
                let a = Answered {
                    endpoint: from,
                    responder: rep.sender,
                    challenge: rep.challenge,
                    observed: rep.observed,
                };
                pl.answered = Some(a);
                let (nonce, roles) = (pl.nonce, pl.roles);
                // The endpoint answered our probe: it is reachable.
                if let Some(r) = self.probes.iter_mut().find(|r| r.endpoint == from) {
                    r.answered = true;
                }
                let msg = self.answer(nonce, roles, a);
                self.send_maintenance(from, msg);
            }
            LinkStatus::Accepted => self.on_link_accepted(now, from, p, rep),
            status => {
                // Not authenticated, but bound to our fresh nonce.
                self.pending_links.swap_remove(p);
                if status == LinkStatus::IdentityRejected {
                    self.events.push_back(Event::LinkRefused {
                        peer: rep.sender,
                        endpoint: from,
                        status,
                    });
                }
                // A refused leaf link: the next tick tries the next
                // bootstrap (no tight retry loop against a full or closed
                // node).
            }
        }
    }

    pub(super) fn on_link_accepted(
        &mut self,
        now: Instant,
        from: SocketAddr,
        p: usize,
        rep: LinkReply,
    ) {
        let Some(a) = self.pending_links[p].answered else {
            return;
        };
        if a.endpoint != from || a.responder != rep.sender || a.challenge != rep.challenge {
            return;
        }
        let transcript = Transcript {
            role: Role::Reply,
            requester: self.address,
            responder: rep.sender,
            nonce: rep.nonce,
            challenge: rep.challenge,
            roles: self.pending_links[p].roles.0,
            requester_endpoint: a.observed,
        };
        if let Err(error) = self.identity.verify(rep.sender, &transcript, &rep.identity) {
            self.events.push_back(Event::PeerRejected {
                peer: rep.sender,
                endpoint: from,
                error,
            });
            return;
        }
        let pl = self.pending_links.swap_remove(p);
        // The link's endpoint is known to answer from now on.
        self.probes.retain(|r| r.endpoint != from);
        // The node we joined through, or any configured bootstrap node (as
        // trusted: we would have joined through it), is believed alone;
        // after a NAT rebinding it is often the only peer that still
        // reaches us to report our new endpoint.
        let trusted = (pl.roles.contains(Roles::LEAF) && pl.target == Address::ZERO)
            || self.bootstrap.contains(&from);
        self.observe(rep.sender, a.observed, trusted);
        if self.table.position(rep.sender).is_none()
            && self.table.len() >= self.max_connections()
            && !(pl.roles.contains(Roles::NEAR) || pl.roles.contains(Roles::LEAF))
            && !pl.for_peer
        {
            self.send_maintenance(
                from,
                Message::Close {
                    reason: CloseReason::Full,
                },
            );
            return;
        }
        self.replace_at_endpoint(now, from, rep.sender);
        let existing = self.table.position(rep.sender);
        let mut moved = false;
        let i = match existing {
            Some(i) => {
                if let Some(c) = self.table.get_mut(i) {
                    moved = c.endpoint != from;
                    c.endpoint = from;
                }
                self.handshook_again(now, i);
                i
            }
            None => self.add_connection(now, rep.sender, from),
        };
        let size = self.size_estimate as u32;
        if let Some(c) = self.table.get_mut(i) {
            if pl.for_peer {
                c.theirs = c.theirs.with(pl.roles);
            } else {
                c.mine = c.mine.with(pl.roles);
                if pl.roles.contains(Roles::SHORTCUT) {
                    c.shortcut_size = size;
                }
            }
        }
        // With the link in the table, stale links' traffic and the
        // traversal hook's signalling can take it.
        self.note_reported(now, rep.sender, a.observed);
        // Joining, or joining again after every link was lost.
        if pl.roles.contains(Roles::LEAF) && (!self.joined || pl.target == Address::ZERO) {
            self.send_join_ctm(now);
        }
        if existing.is_none() {
            self.after_new_connection(now, i);
        } else if moved {
            self.after_moved_connection(from);
        }
    }

    pub(super) fn send_join_ctm(&mut self, now: Instant) {
        let nonce = self.rng.next_u64();
        self.join_nonce = Some(nonce);
        self.join_sent_at = Some(now);
        self.join_ctms_sent = self.join_ctms_sent.saturating_add(1);
        self.send_ctm(now, self.address, Mode::ClosestOther, Roles::NEAR, nonce);
    }

    pub(super) fn send_ctm(
        &mut self,
        now: Instant,
        destination: Address,
        mode: Mode,
        roles: Roles,
        nonce: u64,
    ) {
        self.send_ctm_via(now, destination, mode, roles, nonce, None);
    }

    pub(super) fn send_ctm_via(
        &mut self,
        now: Instant,
        destination: Address,
        mode: Mode,
        roles: Roles,
        nonce: u64,
        via: Option<usize>,
    ) {
        self.pending_ctms.push(PendingCtm {
            nonce,
            roles,
            target: destination.prefix(),
            expires_at: now + self.config.link_retry_duration * 5,
        });
        let payload = Payload::ConnectToMe {
            roles,
            nonce,
            endpoints: self.my_endpoints(),
        };
        let msg = self.routed(destination, mode, payload);
        self.stats.maintenance_sent += 1;
        match via {
            Some(i) if i < self.table.len() => self.forward(now, i, None, msg),
            _ => self.route(now, None, msg),
        }
    }

    pub(super) fn add_connection(
        &mut self,
        now: Instant,
        address: Address,
        endpoint: SocketAddr,
    ) -> usize {
        self.lost.retain(|l| l.address != address);
        let i = self.table.push(Connection::new(now, address, endpoint));
        self.events.push_back(Event::Connected { peer: address });
        i
    }

    pub(super) fn after_new_connection(&mut self, now: Instant, i: usize) {
        if self
            .table
            .update_near(self.address, self.config.near_per_side)
        {
            self.near_changed_at = now;
        }
        self.neighbors_dirty = true;
        // Give the new peer our list right away: it needs it to find its
        // other neighbours.
        if let Some(c) = self.table.get(i) {
            let ep = c.endpoint;
            let addr = c.address;
            let near = c.mine.contains(Roles::NEAR);
            let list = self.neighbor_list();
            self.stats.neighbor_lists_sent += 1;
            self.send_maintenance(ep, list);
            if near {
                self.handoff_to(now, addr, ep);
            }
        }
        self.enforce_limit(now);
    }

    /// The peer of link `i` made a handshake (request or accepted reply)
    /// on a link we have: it may have restarted, and then it dropped what
    /// we routed through it since (its Close for those may come after
    /// the handshake, or never) and lost its records. The copies are
    /// routed another way (each may arrive twice, which they allow), and
    /// a near neighbour is handed the records it should hold, as on a new
    /// near link: without this a node killed and restarted before its
    /// neighbours noticed never got its records back, and answered gets
    /// for them empty.
    fn handshook_again(&mut self, now: Instant, i: usize) {
        let Some(c) = self.table.get(i) else { return };
        let (addr, ep, near) = (c.address, c.endpoint, c.mine.contains(Roles::NEAR));
        self.reroute_unanswered(now, ep);
        if near {
            self.handoff_to(now, addr, ep);
        }
    }

    pub(super) fn drop_connection(&mut self, now: Instant, i: usize, reason: DisconnectReason) {
        if i >= self.table.len() {
            return;
        }
        let was_near = self
            .table
            .get(i)
            .is_some_and(|c| c.mine.contains(Roles::NEAR));
        // The peer's list names candidates for the gap it leaves.
        let lookahead = if was_near {
            self.table.lookahead(i).to_vec()
        } else {
            Vec::new()
        };
        let c = self.table.remove(i);
        if was_near && reason == DisconnectReason::Timeout {
            self.lost.retain(|l| l.address != c.address);
            self.lost.push(Lost {
                address: c.address,
                endpoint: c.endpoint,
                lost_at: now,
                retry_at: now + self.config.lost_retry_duration,
            });
        }
        self.events.push_back(Event::Disconnected {
            peer: c.address,
            reason,
        });
        if self
            .table
            .update_near(self.address, self.config.near_per_side)
            || was_near
        {
            self.near_changed_at = now;
        }
        self.neighbors_dirty = true;
        if was_near {
            let extra: Vec<u64> = lookahead
                .iter()
                .copied()
                .filter(|&q| q != c.address.prefix())
                .collect();
            self.discover_near(now, &extra);
            // Records this node held as a replica may now be ours to serve.
            self.republish(now, false);
        }
    }

    pub(super) fn on_connect_to_me(
        &mut self,
        now: Instant,
        source: Address,
        roles: Roles,
        nonce: u64,
        endpoints: Vec<SocketAddr>,
    ) {
        if source == self.address {
            return;
        }
        let connected = self.table.position(source);
        if roles.contains(Roles::SHORTCUT)
            && connected.is_none()
            && self.table.len() >= self.max_connections()
        {
            return;
        }
        // Endpoints the (unauthenticated) requester named are probed once
        // before anything else is sent there.
        let (trusted, named) = match connected.and_then(|i| self.table.get(i)) {
            Some(c) => (vec![c.endpoint], Vec::new()),
            None => (Vec::new(), endpoints),
        };
        self.start_link(now, trusted, named, source, roles, nonce, true);
    }

    pub(super) fn retry_links(&mut self, now: Instant) {
        let mut sends = Vec::new();
        let attempts = self.config.link_attempts;
        let retry = self.config.link_retry_duration;
        let mut failed_leaf = false;
        self.pending_links.retain_mut(|p| {
            if p.retry_at > now {
                return true;
            }
            if p.attempts >= attempts {
                failed_leaf |= p.roles.contains(Roles::LEAF);
                return false;
            }
            p.attempts += 1;
            p.retry_at = now + retry;
            sends.push((p.nonce, p.answered));
            // The hook did not answer in time: link without it.
            p.deferred = false;
            true
        });
        for (nonce, answered) in sends {
            let Some(i) = self.pending_links.iter().position(|p| p.nonce == nonce) else {
                continue;
            };
            match answered {
                Some(a) => {
                    let roles = self.pending_links[i].roles;
                    let msg = self.answer(nonce, roles, a);
                    self.send_maintenance(a.endpoint, msg);
                }
                None => self.send_probes(now, i),
            }
        }
        if failed_leaf && !self.joined {
            self.try_bootstrap(now);
        }
    }
}
