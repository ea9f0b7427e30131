//! Maintenance: neighbour lists, near-link discovery, shortcuts, demand
//! shortcuts, trimming, size estimate and liveness checks.

use core::net::SocketAddr;
use std::time::Instant;

use rand_chacha::rand_core::Rng;

use super::{DisconnectReason, Event, Node, PendingLink};
use crate::address::{Address, Distance};
use crate::identity::Identity;
use crate::wire::{CloseReason, Message, Mode, Neighbor, Roles};

/// Peers whose data traffic is counted for demand shortcuts.
pub(super) const DEMAND_ENTRIES: usize = 32;

#[derive(Debug, Clone)]
pub(super) struct Lost {
    pub(super) address: Address,
    pub(super) endpoint: SocketAddr,
    pub(super) lost_at: Instant,
    pub(super) retry_at: Instant,
}

#[derive(Debug, Clone)]
pub(super) struct Demand {
    pub(super) peer: Address,
    pub(super) count: u32,
    pub(super) window_start: Instant,
    pub(super) requested: bool,
}

impl<I: Identity> Node<I> {
    pub(super) fn neighbor_list(&self) -> Message {
        Message::Neighbors {
            size_estimate: self.size_estimate.min(f64::from(u32::MAX)) as u32,
            neighbors: self
                .table
                .iter()
                .map(|c| Neighbor {
                    address: c.address,
                    roles: c.mine,
                })
                .collect(),
        }
    }

    pub(super) fn on_neighbors(
        &mut self,
        now: Instant,
        i: usize,
        size_estimate: u32,
        list: &[Neighbor],
    ) {
        let me = self.address;
        let from_reporter = self
            .table
            .get(i)
            .is_some_and(|c| Some(c.address) == self.mapping_reporter);
        if let Some(c) = self.table.get_mut(i) {
            c.size_estimate = size_estimate;
            c.theirs = list
                .iter()
                .find(|n| n.address == me)
                .map_or(Roles::NONE, |n| n.roles);
            self.table
                .set_lookahead(i, list.iter().map(|n| n.address.prefix()));
        }
        if from_reporter {
            self.flush_mapping_relinks(now);
        }
        self.discover_near(now, &[]);
    }

    /// Looks for nodes nearer than the current near links among everything
    /// known (lookahead lists and `extra`), and asks them to connect.
    pub(super) fn discover_near(&mut self, now: Instant, extra: &[u64]) {
        let per_side = self.config.near_per_side;
        let me = self.address.prefix();
        // The per_side-th nearest connected distance on each side.
        let mut right: Vec<u64> = self
            .table
            .iter()
            .map(|c| c.address.prefix().wrapping_sub(me))
            .collect();
        let mut left: Vec<u64> = self
            .table
            .iter()
            .map(|c| me.wrapping_sub(c.address.prefix()))
            .collect();
        right.sort_unstable();
        left.sort_unstable();
        let rbound = right.get(per_side - 1).copied().unwrap_or(u64::MAX);
        let lbound = left.get(per_side - 1).copied().unwrap_or(u64::MAX);
        // (candidate, index of the link whose list named it)
        let mut want: Vec<(u64, Option<usize>)> = Vec::new();
        let known = self
            .table
            .iter_with_lookahead()
            .enumerate()
            .flat_map(|(i, (_, list))| list.iter().map(move |&q| (q, Some(i))))
            .chain(extra.iter().map(|&q| (q, None)));
        for (q, via) in known {
            if q == me {
                continue;
            }
            let r = q.wrapping_sub(me);
            let l = me.wrapping_sub(q);
            if (r < rbound || l < lbound)
                && !want.iter().any(|w| w.0 == q)
                && !self.table.iter().any(|c| c.address.prefix() == q)
            {
                want.push((q, via));
            }
        }
        // Only the nearest candidates.
        want.sort_unstable_by_key(|&(q, _)| q.wrapping_sub(me).min(me.wrapping_sub(q)));
        want.truncate(2 * per_side);
        for (q, via) in want {
            if self
                .pending_ctms
                .iter()
                .any(|p| p.target == q && p.roles == Roles::NEAR)
            {
                continue;
            }
            let nonce = self.rng.next_u64();
            // Send it through the peer that listed the candidate: that peer
            // holds a link to it, so the request arrives even where greedy
            // routing would stall in a ring still being built.
            self.send_ctm_via(
                now,
                Address::from_prefix(q),
                Mode::Closest,
                Roles::NEAR,
                nonce,
                via,
            );
        }
    }

    pub(super) fn enforce_limit(&mut self, now: Instant) {
        let limit = self.max_connections();
        while self.table.len() > limit {
            // Prefer closing a link only the peer needs as a shortcut,
            // then one of our own shortcuts; never a near or leaf link.
            let victim = self
                .table
                .iter()
                .enumerate()
                .filter(|(_, c)| {
                    c.mine.is_empty()
                        && !c.theirs.contains(Roles::NEAR)
                        && !c.theirs.contains(Roles::LEAF)
                        && !c.theirs.contains(Roles::DEMAND)
                })
                .max_by_key(|(_, c)| c.established_at)
                .or_else(|| {
                    self.table
                        .iter()
                        .enumerate()
                        .filter(|(_, c)| {
                            c.mine == Roles::SHORTCUT
                                && !c.theirs.contains(Roles::NEAR)
                                && !c.theirs.contains(Roles::LEAF)
                        })
                        .max_by_key(|(_, c)| c.established_at)
                })
                .map(|(i, _)| i);
            let Some(v) = victim else { break };
            let ep = self.table.get(v).map(|c| c.endpoint);
            if let Some(ep) = ep {
                self.send_maintenance(
                    ep,
                    Message::Close {
                        reason: CloseReason::Full,
                    },
                );
            }
            self.drop_connection(now, v, DisconnectReason::Trimmed);
        }
    }

    pub(super) fn count_demand(&mut self, now: Instant, peer: Address) {
        if self.config.demand_threshold == 0 || peer == self.address {
            return;
        }
        if self
            .table
            .position(peer)
            .is_some_and(|i| self.table.get(i).is_some_and(|c| !c.mine.is_empty()))
        {
            return;
        }
        let window = self.config.demand_window_duration;
        let entry = match self.demand.iter().position(|d| d.peer == peer) {
            Some(i) => i,
            None => {
                if self.demand.capacity() == 0 {
                    // One allocation for the whole table, on first use.
                    self.demand.reserve_exact(DEMAND_ENTRIES);
                }
                if self.demand.len() >= DEMAND_ENTRIES {
                    // Forget the stalest entry.
                    if let Some((i, _)) = self
                        .demand
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, d)| d.window_start)
                    {
                        self.demand.swap_remove(i);
                    }
                }
                self.demand.push(Demand {
                    peer,
                    count: 0,
                    window_start: now,
                    requested: false,
                });
                self.demand.len() - 1
            }
        };
        let d = &mut self.demand[entry];
        if now.saturating_duration_since(d.window_start) > window {
            d.window_start = now;
            d.count = 0;
            d.requested = false;
        }
        d.count += 1;
        if d.count >= self.config.demand_threshold && !d.requested {
            d.requested = true;
            self.events.push_back(Event::DemandShortcut { peer });
            let nonce = self.rng.next_u64();
            self.send_ctm(now, peer, Mode::Exact, Roles::DEMAND, nonce);
        }
    }

    /// Local estimate averaged with the peers' gossiped estimates, so that
    /// all nodes converge on nearly the same figure.
    pub(super) fn update_size_estimate(&mut self) {
        let local = self.table.estimate_size(self.address);
        let peers: Vec<f64> = self
            .table
            .iter()
            .filter(|c| c.size_estimate > 0)
            .map(|c| f64::from(c.size_estimate))
            .collect();
        self.size_estimate = if peers.is_empty() {
            local
        } else {
            let mean = peers.iter().sum::<f64>() / peers.len() as f64;
            0.25 * local + 0.75 * mean
        };
    }

    pub(super) fn upkeep(&mut self, now: Instant) {
        // Near check: find our ring neighbours by routing to our own address.
        let per_side = self.config.near_per_side;
        let right = self.table.nearest_side(self.address, true, per_side).len();
        let left = self.table.nearest_side(self.address, false, per_side).len();
        if now >= self.near_check_at || (right.min(left) < per_side && self.table.len() > 1) {
            let period = if right.min(left) < per_side {
                self.config.near_check_duration / 6
            } else {
                self.config.near_check_duration
            };
            self.near_check_at = now + period;
            let nonce = self.rng.next_u64();
            if !self
                .pending_ctms
                .iter()
                .any(|p| p.target == self.address.prefix())
            {
                self.send_ctm(now, self.address, Mode::ClosestOther, Roles::NEAR, nonce);
            }
            self.discover_near(now, &[]);
        }

        // Leaf links are only for joining.
        let grace = self.config.unneeded_grace_duration;
        let has_near = self.table.iter().any(|c| c.mine.contains(Roles::NEAR));
        for c in self.table.iter_mut() {
            if c.mine.contains(Roles::LEAF) && has_near {
                c.mine = c.mine.without(Roles::LEAF);
                self.neighbors_dirty = true;
            }
        }

        // Shortcuts.
        if now >= self.shortcut_check_at {
            self.shortcut_check_at = now + self.config.shortcut_check_duration;
            let size = self.size_estimate;
            // Replace one shortcut drawn for a much smaller ring.
            if let Some(c) = self.table.iter_mut().find(|c| {
                c.mine.contains(Roles::SHORTCUT) && f64::from(c.shortcut_size) * 2.0 < size
            }) {
                c.mine = c.mine.without(Roles::SHORTCUT);
                self.neighbors_dirty = true;
            }
            let have = self
                .table
                .iter()
                .filter(|c| c.mine.contains(Roles::SHORTCUT))
                .count();
            let pending = self.pending_ctms.iter().any(|p| p.roles == Roles::SHORTCUT);
            if have < self.target_shortcuts() && !pending && size >= 8.0 {
                let target = self.draw_shortcut(size);
                let nonce = self.rng.next_u64();
                self.send_ctm(now, target, Mode::Closest, Roles::SHORTCUT, nonce);
            }
        }

        // Demand links whose traffic stopped.
        let window = self.config.demand_window_duration;
        self.demand
            .retain(|d| now.saturating_duration_since(d.window_start) <= window * 6);
        let demand = &self.demand;
        for c in self.table.iter_mut() {
            if c.mine.contains(Roles::DEMAND) && !demand.iter().any(|d| d.peer == c.address) {
                c.mine = c.mine.without(Roles::DEMAND);
                self.neighbors_dirty = true;
            }
        }

        // Close links neither side needs.
        let unneeded: Vec<usize> = self
            .table
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                !c.needed() && now.saturating_duration_since(c.established_at) >= grace
            })
            .map(|(i, _)| i)
            .collect();
        for i in unneeded.into_iter().rev() {
            if let Some(ep) = self.table.get(i).map(|c| c.endpoint) {
                self.send_maintenance(
                    ep,
                    Message::Close {
                        reason: CloseReason::Unneeded,
                    },
                );
            }
            self.drop_connection(now, i, DisconnectReason::Trimmed);
        }
        self.enforce_limit(now);

        // Lost near neighbours: retry directly (heals partitions).
        let memory = self.config.lost_memory_duration;
        self.lost
            .retain(|l| now.saturating_duration_since(l.lost_at) < memory);
        let retry = self.config.lost_retry_duration;
        let mut due = Vec::new();
        for l in self.lost.iter_mut() {
            if l.retry_at <= now {
                l.retry_at = now + retry;
                due.push((l.address, l.endpoint));
            }
        }
        for (address, endpoint) in due {
            self.relink(
                now,
                address,
                endpoint,
                Roles::NEAR,
                self.config.link_attempts,
            );
        }

        if now >= self.republish_at {
            self.republish_at = now + self.config.dht_republish_duration;
            self.republish(now, true);
        }
    }

    /// Probes `peer` at `endpoint`, where a link to it worked, for a link
    /// with `roles` at once (no NAT-traversal hook: the path was open),
    /// `attempts` already counted against [`Config::link_attempts`]. The
    /// link comes back only once the handshake proves the peer's key
    /// (and the peer moves its end of the link to where our request came
    /// from). Nothing happens if a link to `peer` is already being made.
    ///
    /// [`Config::link_attempts`]: super::Config::link_attempts
    pub(super) fn relink(
        &mut self,
        now: Instant,
        peer: Address,
        endpoint: SocketAddr,
        roles: Roles,
        attempts: u8,
    ) {
        if self.pending_links.iter().any(|p| p.target == peer) {
            return;
        }
        let nonce = self.rng.next_u64();
        let msg = self.probe(nonce, peer, roles);
        self.send_maintenance(endpoint, msg);
        self.pending_links.push(PendingLink {
            nonce,
            target: peer,
            roles,
            endpoints: vec![endpoint],
            unconfirmed: Vec::new(),
            answered: None,
            for_peer: false,
            attempts,
            retry_at: now + self.config.link_retry_duration,
            deferred: false,
        });
    }

    /// A shortcut target drawn from the harmonic distribution of Symphony:
    /// distance `n^(u-1)` of the ring, in a random direction.
    pub(super) fn draw_shortcut(&mut self, size: f64) -> Address {
        let u = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let fraction = (size.ln() * (u - 1.0)).exp().min(0.5);
        let d = Distance::from_fraction(fraction);
        if self.rng.next_u32() & 1 == 0 {
            self.address + d
        } else {
            self.address - d
        }
    }

    /// When the next rebind probe is due: a link's send has gone
    /// unanswered for [`Config::rebind_probe_duration`] since the last
    /// probe (at most one probe per that period).
    pub(super) fn rebind_probe_due(&self) -> Option<Instant> {
        let d = self.config.rebind_probe_duration;
        if d.is_zero() {
            return None;
        }
        let first = self
            .table
            .iter()
            .filter_map(|c| c.unanswered_since)
            .filter(|&t| self.rebind_probed_at.is_none_or(|p| t > p))
            .min()?;
        Some(match self.rebind_probed_at {
            Some(p) => (first + d).max(p + d),
            None => first + d,
        })
    }

    /// A send got no answer for [`Config::rebind_probe_duration`]: our NAT
    /// may have rebound, or our address changed. Every link is pinged once;
    /// a peer that does not know us where our datagrams now come from
    /// answers `Close(Unneeded)`, the link is made again by handshake, and
    /// the peer's signed report of our new endpoint reveals the change
    /// ([`Event::MappingChanged`]).
    pub(super) fn rebind_probe(&mut self, now: Instant) {
        if self.rebind_probe_due().is_none_or(|t| t > now) {
            return;
        }
        self.rebind_probed_at = Some(now);
        let mut pings = Vec::with_capacity(self.table.len());
        for c in self.table.iter_mut() {
            c.last_ping_at = now;
            if c.unanswered_since.is_none() {
                c.unanswered_since = Some(now);
            }
            pings.push(c.endpoint);
        }
        self.send_pings(pings);
    }

    /// Pings each of `endpoints` (a fresh nonce each).
    fn send_pings(&mut self, endpoints: Vec<SocketAddr>) {
        for ep in endpoints {
            let nonce = self.rng.next_u64();
            self.send_maintenance(
                ep,
                Message::Ping {
                    sender: self.address,
                    nonce,
                },
            );
        }
    }

    pub(super) fn check_links(&mut self, now: Instant) {
        let mut dead = Vec::new();
        let mut pings = Vec::new();
        for (i, c) in self.table.iter_mut().enumerate() {
            let silent = now.saturating_duration_since(c.last_heard_at);
            let suspect = c
                .unanswered_since
                .is_some_and(|t| now.saturating_duration_since(t) >= self.config.suspect_timeout);
            if silent >= self.config.idle_timeout || suspect {
                dead.push(i);
                continue;
            }
            let since_ping = now.saturating_duration_since(c.last_ping_at);
            let probe = c.unanswered_since.is_some_and(|t| t < now)
                && since_ping >= self.config.tick_duration;
            if (silent >= self.config.keepalive_duration
                && since_ping >= self.config.keepalive_duration / 3)
                || probe
            {
                c.last_ping_at = now;
                if c.unanswered_since.is_none() {
                    c.unanswered_since = Some(now);
                }
                pings.push(c.endpoint);
            }
        }
        self.send_pings(pings);
        for i in dead.into_iter().rev() {
            self.drop_connection(now, i, DisconnectReason::Timeout);
        }
    }
}
