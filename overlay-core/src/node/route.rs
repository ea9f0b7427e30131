//! Routing of messages and the node's own requests (echo and DHT):
//! forwarding, delivery, retries.

use core::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{DhtOutcome, DropReason, Event, Node, Transmit};
use crate::address::Address;
use crate::error::NodeError;
use crate::identity::Identity;
use crate::routing::{NextHop, next_hop};
use crate::wire::{DhtOp, DhtRequest, Message, Mode, Payload, Routed};

/// Most copies kept per link by [`Node::forward`] for
/// [`Node::reroute_unanswered`].
const UNANSWERED_PER_LINK: usize = 4;
/// Most copies kept in all.
const UNANSWERED_MAX: usize = 64;

/// A copy of a routed message that may arrive twice without harm
/// ([`harmless_twice`]) sent on a link that had been quiet for a tick or
/// more: a peer that restarted (same address and endpoint, no
/// memory of the link) drops it and answers `Close(Unneeded)`, and the
/// copy is then routed another way. Dropped when the peer is heard from,
/// or after [`Config::suspect_timeout`](super::Config::suspect_timeout).
#[derive(Debug, Clone)]
pub(super) struct Unanswered {
    pub(super) endpoint: SocketAddr,
    pub(super) sent_at: Instant,
    msg: Routed,
}

/// Whether a payload may be delivered twice without harm (a copy routed
/// again may be): data (datagrams), echoes, DHT gets and replies. Never
/// puts and creates (a create decided by two nodes could have two
/// winners) or ConnectToMe.
fn harmless_twice(payload: &Payload) -> bool {
    match payload {
        Payload::Data(_)
        | Payload::EchoRequest { .. }
        | Payload::EchoReply { .. }
        | Payload::DhtReply { .. } => true,
        Payload::DhtRequest { request, .. } => matches!(**request, DhtRequest::Get { .. }),
        Payload::ConnectToMe { .. } => false,
    }
}

#[derive(Debug, Clone)]
pub(super) enum RequestKind {
    Echo,
    Dht(DhtOp),
}

#[derive(Debug, Clone)]
pub(super) struct PendingRequest {
    pub(super) id: u64,
    pub(super) kind: RequestKind,
    pub(super) destination: Address,
    pub(super) mode: Mode,
    pub(super) payload: Payload,
    pub(super) attempts: u8,
    pub(super) retry_at: Instant,
    /// When it was first sent (a round-trip sample if the first attempt
    /// is answered).
    pub(super) sent_at: Instant,
}

/// The round-trip estimate of echo and DHT requests, as TCP keeps its
/// retransmission timer (RFC 6298): smoothed RTT and its variation, from
/// answers to requests sent once (Karn: an answer to a retried request
/// could be to either copy).
#[derive(Debug, Clone, Copy)]
pub(super) struct RttEstimate {
    srtt: Duration,
    rttvar: Duration,
}

impl RttEstimate {
    pub(super) fn first(rtt: Duration) -> RttEstimate {
        RttEstimate {
            srtt: rtt,
            rttvar: rtt / 2,
        }
    }

    pub(super) fn update(&mut self, rtt: Duration) {
        let err = rtt.abs_diff(self.srtt);
        self.rttvar = (self.rttvar * 3 + err) / 4;
        self.srtt = (self.srtt * 7 + rtt) / 8;
    }

    /// Smoothed RTT + 4 × variation.
    pub(super) fn timeout(&self) -> Duration {
        self.srtt + self.rttvar * 4
    }
}

impl<I: Identity> Node<I> {
    pub(super) fn request(
        &mut self,
        now: Instant,
        id: u64,
        kind: RequestKind,
        destination: Address,
        mode: Mode,
        payload: Payload,
    ) -> Result<(), NodeError> {
        if self.left {
            return Err(NodeError::Left);
        }
        self.requests.push(PendingRequest {
            id,
            kind,
            destination,
            mode,
            payload: payload.clone(),
            attempts: 1,
            retry_at: now + self.request_timeout(),
            sent_at: now,
        });
        let msg = self.routed(destination, mode, payload);
        self.route(now, None, msg);
        Ok(())
    }

    /// Forwards or delivers a routed message. `previous` is the link it
    /// arrived on.
    pub(super) fn route(&mut self, now: Instant, previous: Option<usize>, msg: Routed) {
        let hop = next_hop(
            self.address,
            &self.table,
            msg.source,
            msg.destination,
            msg.mode,
            previous,
            self.config.lookahead,
        );
        match hop {
            NextHop::Local => self.deliver(now, previous, msg),
            NextHop::NotFound => self.drop_routed(msg, DropReason::NotFound),
            NextHop::Forward(i) => self.forward(now, i, previous, msg),
        }
    }

    /// Sends a routed message on link `i`.
    pub(super) fn forward(
        &mut self,
        now: Instant,
        i: usize,
        previous: Option<usize>,
        mut msg: Routed,
    ) {
        if msg.hops >= msg.hop_limit {
            self.drop_routed(msg, DropReason::HopLimit);
            return;
        }
        msg.hops += 1;
        if previous.is_some() {
            self.stats.forwarded += 1;
        }
        let Some(c) = self.table.get_mut(i) else {
            Message::Routed(msg).recycle_into(&mut self.pool);
            return;
        };
        if c.unanswered_since.is_none() {
            c.unanswered_since = Some(now);
        }
        let ep = c.endpoint;
        let next = c.address;
        // A link quiet for a tick may lead to a peer that restarted: keep a
        // copy until it shows it is alive (bounded; busy links copy no
        // data). Echoes and DHT gets and replies are few and each one
        // lost costs a request timeout: they are copied on any link, as a
        // peer killed and restarted within a tick leaves no quiet spell.
        let quiet = now.saturating_duration_since(c.last_heard_at) >= self.config.tick_duration;
        if (quiet || !matches!(msg.payload, Payload::Data(_)))
            && harmless_twice(&msg.payload)
            && self.unanswered.len() < UNANSWERED_MAX
            && self.unanswered.iter().filter(|u| u.endpoint == ep).count() < UNANSWERED_PER_LINK
        {
            self.unanswered.push(Unanswered {
                endpoint: ep,
                sent_at: now,
                msg: msg.clone(),
            });
        }
        if self.config.forward_events && previous.is_some() {
            self.events.push_back(Event::Forwarded {
                destination: msg.destination,
                next_hop: next,
            });
        }
        self.transmits.push_back(Transmit {
            destination: ep,
            message: Message::Routed(msg),
        });
    }

    /// Routes again, another way, the copies of messages sent to
    /// `endpoint` since its link fell quiet (its peer said it has no such
    /// link: they were dropped there). Each is routed again once; one
    /// the peer handled before it restarted (or before it closed a link it
    /// did have) arrives twice, which datagrams allow.
    pub(super) fn reroute_unanswered(&mut self, now: Instant, endpoint: SocketAddr) {
        if self.unanswered.is_empty() {
            return;
        }
        let (again, keep): (Vec<Unanswered>, Vec<Unanswered>) = self
            .unanswered
            .drain(..)
            .partition(|u| u.endpoint == endpoint);
        self.unanswered = keep;
        for u in again {
            self.route(now, None, u.msg);
        }
    }

    pub(super) fn drop_routed(&mut self, msg: Routed, reason: DropReason) {
        let reason = if self.table.is_empty() && reason == DropReason::NotFound {
            DropReason::NoRoute
        } else {
            reason
        };
        self.stats.dropped += 1;
        self.events.push_back(Event::Dropped {
            source: msg.source,
            destination: msg.destination,
            reason,
        });
        Message::Routed(msg).recycle_into(&mut self.pool);
    }

    pub(super) fn deliver(&mut self, now: Instant, previous: Option<usize>, msg: Routed) {
        match msg.payload {
            Payload::Data(payload) => {
                self.count_demand(now, msg.source);
                self.events.push_back(Event::Delivered {
                    source: msg.source,
                    hops: msg.hops,
                    payload,
                });
            }
            Payload::ConnectToMe {
                roles,
                nonce,
                endpoints,
            } => self.on_connect_to_me(now, msg.source, roles, nonce, endpoints),
            Payload::EchoRequest { id } => {
                if msg.source == self.address {
                    self.finish_echo(now, id, self.address, 0);
                    return;
                }
                let reply = self.routed(
                    msg.source,
                    Mode::Exact,
                    Payload::EchoReply {
                        id,
                        request_hops: msg.hops,
                    },
                );
                self.route(now, None, reply);
            }
            Payload::EchoReply { id, request_hops } => {
                self.finish_echo(now, id, msg.source, request_hops)
            }
            Payload::DhtRequest { id, request } => {
                self.on_dht_request(now, msg.source, msg.hops, msg.mode, id, request)
            }
            Payload::DhtReply {
                id,
                status,
                records,
            } => {
                let via = previous.and_then(|i| self.table.get(i)).map(|c| c.address);
                self.finish_dht(now, id, msg.source, via, status, records)
            }
        }
    }

    /// An echo reply counts only from the node the echo went to.
    pub(super) fn finish_echo(&mut self, now: Instant, id: u64, from: Address, hops: u8) {
        match self.requests.iter().position(|r| {
            r.id == id && matches!(r.kind, RequestKind::Echo) && r.destination == from
        }) {
            Some(p) => {
                let r = self.requests.swap_remove(p);
                self.sample_rtt(now, from, &r);
                self.events.push_back(Event::EchoReply { id, hops });
            }
            None => self.stats.unmatched_replies += 1,
        }
    }

    /// How long a request waits for its answer before it is sent again:
    /// the round-trip estimate between [`Config::min_request_timeout`]
    /// and [`Config::request_timeout`] (the latter until answers have
    /// been measured).
    ///
    /// [`Config::min_request_timeout`]: super::Config::min_request_timeout
    /// [`Config::request_timeout`]: super::Config::request_timeout
    pub(super) fn request_timeout(&self) -> Duration {
        let max = self.config.request_timeout;
        match self.rtt {
            Some(e) => e
                .timeout()
                .clamp(self.config.min_request_timeout.min(max), max),
            None => max,
        }
    }

    /// Feeds the answer to `r` (from `from`) to the round-trip estimate:
    /// only answers to requests sent once, from another node.
    pub(super) fn sample_rtt(&mut self, now: Instant, from: Address, r: &PendingRequest) {
        if r.attempts != 1 || from == self.address {
            return;
        }
        let rtt = now.saturating_duration_since(r.sent_at);
        match &mut self.rtt {
            Some(e) => e.update(rtt),
            None => self.rtt = Some(RttEstimate::first(rtt)),
        }
    }

    pub(super) fn retry_requests(&mut self, now: Instant) {
        let mut resend = Vec::new();
        let mut failed = Vec::new();
        let attempts = self.config.request_attempts.max(1);
        let max = self.config.request_timeout;
        let timeout = self.request_timeout();
        // However short the measured round trips, a request is given as
        // long as with `request_timeout` before it fails: a dead hop on
        // the path takes the suspect timeout to be noticed, and a node
        // may hold a DHT request while its near set settles.
        let patience: Duration = (1..=attempts)
            .map(|k| max.mul_f64(1.0 + 0.5 * f64::from(k - 1)))
            .sum();
        self.requests.retain_mut(|r| {
            if r.retry_at > now {
                return true;
            }
            if r.attempts >= attempts {
                let give_up = r.sent_at + patience;
                if now < give_up {
                    r.retry_at = give_up;
                    return true;
                }
                failed.push((r.id, r.kind.clone()));
                return false;
            }
            r.attempts += 1;
            // Back off: doubling the measured wait, never longer than
            // with `request_timeout` (half of it more per attempt).
            let k = r.attempts - 1;
            let doubled = timeout.saturating_mul(1 << k.min(16));
            r.retry_at = now + doubled.min(max.mul_f64(1.0 + 0.5 * f64::from(k)));
            resend.push((r.destination, r.mode, r.payload.clone()));
            true
        });
        self.stats.requests_retried += resend.len() as u64;
        for (destination, mode, payload) in resend {
            let msg = self.routed(destination, mode, payload);
            self.route(now, None, msg);
        }
        for (id, kind) in failed {
            self.events.push_back(match kind {
                RequestKind::Echo => Event::EchoFailed { id },
                RequestKind::Dht(op) => Event::Dht {
                    id,
                    op,
                    outcome: DhtOutcome::Failed,
                    records: Vec::new(),
                },
            });
        }
    }
}
