//! The connection table: one entry per peer, with the roles each side needs
//! the link for, liveness timestamps and the peer's own connection list
//! (kept for lookahead routing and near repair).

use core::net::SocketAddr;
use std::time::Instant;

use crate::address::{Address, Distance};
use crate::wire::Roles;

/// One link to a peer.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The peer's ring address.
    pub address: Address,
    /// The transport endpoint the link uses.
    pub endpoint: SocketAddr,
    /// Roles this node needs the link for.
    pub mine: Roles,
    /// Roles the peer needs the link for (from its last neighbour list).
    pub theirs: Roles,
    /// When the link came up.
    pub established_at: Instant,
    /// Last time anything arrived from the peer.
    pub last_heard_at: Instant,
    /// Last time this node pinged the peer.
    pub last_ping_at: Instant,
    /// First send since `last_heard_at` that expects the peer to be alive
    /// (fast failure detection on busy links).
    pub unanswered_since: Option<Instant>,
    /// Network-size estimate when this link was drawn as a shortcut.
    pub shortcut_size: u32,
    /// The peer's network-size estimate (0: unknown).
    pub size_estimate: u32,
    /// Where the peer's connection list lies in the table's shared
    /// lookahead buffer ([`ConnectionTable::lookahead`]).
    lookahead_start: u32,
    lookahead_len: u32,
}

impl Connection {
    /// A fresh connection.
    pub fn new(now: Instant, address: Address, endpoint: SocketAddr) -> Connection {
        Connection {
            address,
            endpoint,
            mine: Roles::NONE,
            theirs: Roles::NONE,
            established_at: now,
            last_heard_at: now,
            last_ping_at: now,
            unanswered_since: None,
            shortcut_size: 0,
            size_estimate: 0,
            lookahead_start: 0,
            lookahead_len: 0,
        }
    }

    /// Whether either side needs the link.
    pub fn needed(&self) -> bool {
        !self.mine.is_empty() || !self.theirs.is_empty()
    }
}

/// The set of links a node holds, at most one per peer.
///
/// The peers' connection lists (for lookahead routing, near discovery and
/// the size estimate, which scan all of them for every routed message and
/// neighbour list) share one buffer, so that a node reads its lists from
/// contiguous memory rather than one allocation per link.
#[derive(Debug, Clone, Default)]
pub struct ConnectionTable {
    conns: Vec<Connection>,
    lookahead: Vec<u64>,
}

impl ConnectionTable {
    /// Number of links.
    pub fn len(&self) -> usize {
        self.conns.len()
    }
    /// Whether there are no links.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }
    /// All links.
    pub fn iter(&self) -> impl Iterator<Item = &Connection> {
        self.conns.iter()
    }
    /// All links, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Connection> {
        self.conns.iter_mut()
    }
    /// Index of the link to `address`.
    pub fn position(&self, address: Address) -> Option<usize> {
        self.conns.iter().position(|c| c.address == address)
    }
    /// Index of the link using `endpoint`.
    pub fn position_by_endpoint(&self, endpoint: SocketAddr) -> Option<usize> {
        self.conns.iter().position(|c| c.endpoint == endpoint)
    }
    /// The link at `index`.
    pub fn get(&self, index: usize) -> Option<&Connection> {
        self.conns.get(index)
    }
    /// The link at `index`, mutably.
    pub fn get_mut(&mut self, index: usize) -> Option<&mut Connection> {
        self.conns.get_mut(index)
    }
    /// Adds a link (the caller checked there is none to that peer), with
    /// an empty connection list.
    pub fn push(&mut self, mut c: Connection) -> usize {
        c.lookahead_start = 0;
        c.lookahead_len = 0;
        self.conns.push(c);
        self.conns.len() - 1
    }
    /// Removes the link at `index` (and its peer's connection list).
    ///
    /// # Panics
    /// If `index` is out of bounds.
    pub fn remove(&mut self, index: usize) -> Connection {
        self.clear_lookahead(index);
        self.conns.swap_remove(index)
    }

    /// The connection list of the peer at `index` (as 64-bit address
    /// prefixes), empty if none arrived yet or `index` is out of bounds.
    pub fn lookahead(&self, index: usize) -> &[u64] {
        self.conns.get(index).map_or(&[], |c| self.list(c))
    }

    fn list(&self, c: &Connection) -> &[u64] {
        let start = c.lookahead_start as usize;
        self.lookahead
            .get(start..start + c.lookahead_len as usize)
            .unwrap_or(&[])
    }

    /// All links with their peers' connection lists.
    pub fn iter_with_lookahead(&self) -> impl Iterator<Item = (&Connection, &[u64])> {
        self.conns.iter().map(|c| (c, self.list(c)))
    }

    /// Replaces the connection list of the peer at `index`.
    pub fn set_lookahead(&mut self, index: usize, list: impl IntoIterator<Item = u64>) {
        if index >= self.conns.len() {
            return;
        }
        self.clear_lookahead(index);
        let start = self.lookahead.len();
        let list = list.into_iter();
        // Grow to fit, not by doubling: the lists change rarely and
        // every node holds one buffer.
        self.lookahead.reserve_exact(list.size_hint().0);
        self.lookahead.extend(list);
        let c = &mut self.conns[index];
        c.lookahead_start = start as u32;
        c.lookahead_len = (self.lookahead.len() - start) as u32;
    }

    /// Cuts the list of link `index` out of the shared buffer.
    fn clear_lookahead(&mut self, index: usize) {
        let Some(c) = self.conns.get_mut(index) else {
            return;
        };
        let (start, len) = (c.lookahead_start, c.lookahead_len);
        c.lookahead_start = 0;
        c.lookahead_len = 0;
        if len == 0 {
            return;
        }
        let s = start as usize;
        self.lookahead.drain(s..s + len as usize);
        for c in &mut self.conns {
            if c.lookahead_start > start {
                c.lookahead_start -= len;
            }
        }
    }

    /// Bytes held by the peers' connection lists.
    pub fn lookahead_bytes(&self) -> usize {
        self.lookahead.capacity() * core::mem::size_of::<u64>()
    }

    /// Recomputes the near role: the `per_side` closest peers clockwise and
    /// counter-clockwise of `me`. Returns whether any near role changed.
    pub fn update_near(&mut self, me: Address, per_side: usize) -> bool {
        let mut right: Vec<(Distance, usize)> = Vec::with_capacity(self.conns.len());
        let mut left: Vec<(Distance, usize)> = Vec::with_capacity(self.conns.len());
        for (i, c) in self.conns.iter().enumerate() {
            right.push((me.right_distance_to(c.address), i));
            left.push((me.left_distance_to(c.address), i));
        }
        right.sort_unstable();
        left.sort_unstable();
        let mut near = vec![false; self.conns.len()];
        for &(_, i) in right
            .iter()
            .take(per_side)
            .chain(left.iter().take(per_side))
        {
            near[i] = true;
        }
        let mut changed = false;
        for (c, n) in self.conns.iter_mut().zip(near) {
            let was = c.mine.contains(Roles::NEAR);
            if was != n {
                changed = true;
                c.mine = if n {
                    c.mine.with(Roles::NEAR)
                } else {
                    c.mine.without(Roles::NEAR)
                };
            }
        }
        changed
    }

    /// The `count` nearest connected peers clockwise (`right`) or
    /// counter-clockwise of `me`, nearest first.
    pub fn nearest_side(&self, me: Address, right: bool, count: usize) -> Vec<Address> {
        let mut v: Vec<(Distance, Address)> = self
            .conns
            .iter()
            .map(|c| {
                let d = if right {
                    me.right_distance_to(c.address)
                } else {
                    me.left_distance_to(c.address)
                };
                (d, c.address)
            })
            .collect();
        v.sort_unstable();
        v.into_iter().take(count).map(|(_, a)| a).collect()
    }

    /// Estimates the network size from address spacing: around this node
    /// and around every peer (from its lookahead list), the arc spanned by
    /// the two nearest addresses on each side covers four gaps of mean
    /// size `2^160 / n`. Pooling the arcs of all peers, which sit at random
    /// places on the ring, keeps the estimate within about 10 %.
    pub fn estimate_size(&self, me: Address) -> f64 {
        let mut gaps = 0u32;
        let mut span = 0f64;
        let mut add = |center: u64, others: &mut dyn Iterator<Item = u64>| {
            let mut right = [u64::MAX; 2];
            let mut left = [u64::MAX; 2];
            for q in others {
                for (arr, d) in [
                    (&mut right, q.wrapping_sub(center)),
                    (&mut left, center.wrapping_sub(q)),
                ] {
                    if d == 0 || arr.contains(&d) {
                        continue;
                    }
                    if d < arr[0] {
                        arr[1] = arr[0];
                        arr[0] = d;
                    } else if d < arr[1] {
                        arr[1] = d;
                    }
                }
            }
            if right[1] != u64::MAX && left[1] != u64::MAX {
                gaps += 4;
                span += right[1] as f64 + left[1] as f64;
            }
        };
        add(
            me.prefix(),
            &mut self.conns.iter().map(|c| c.address.prefix()),
        );
        for c in &self.conns {
            add(c.address.prefix(), &mut self.list(c).iter().copied());
        }
        if gaps == 0 || span <= 0.0 {
            return (self.conns.len() + 1) as f64;
        }
        (f64::from(gaps) * 2f64.powi(64) / span).max((self.conns.len() + 1) as f64)
    }
}

#[cfg(test)]
mod test {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The lists share one buffer: replacing or removing one leaves the
    /// others' intact, whatever the order.
    #[test]
    fn lookahead_lists_survive_replacement_and_removal() {
        let now = Instant::now();
        let ep: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let mut t = ConnectionTable::default();
        for k in 0..4u64 {
            let i = t.push(Connection::new(now, Address::from_prefix(k + 1), ep));
            t.set_lookahead(i, (0..=k).map(|q| 10 * k + q));
        }
        t.set_lookahead(1, [7, 8, 9, 10, 11]);
        t.set_lookahead(3, []);
        assert_eq!(t.lookahead(0), &[0]);
        assert_eq!(t.lookahead(1), &[7, 8, 9, 10, 11]);
        assert_eq!(t.lookahead(2), &[20, 21, 22]);
        assert!(t.lookahead(3).is_empty());
        // Swap-remove moves the last link to index 0.
        t.set_lookahead(3, [99]);
        let gone = t.remove(0);
        assert_eq!(gone.address, Address::from_prefix(1));
        assert_eq!(t.get(0).unwrap().address, Address::from_prefix(4));
        assert_eq!(t.lookahead(0), &[99]);
        assert_eq!(t.lookahead(1), &[7, 8, 9, 10, 11]);
        assert_eq!(t.lookahead(2), &[20, 21, 22]);
        assert!(t.lookahead(3).is_empty());
        let lists: Vec<&[u64]> = t.iter_with_lookahead().map(|(_, l)| l).collect();
        assert_eq!(lists, [&[99][..], &[7, 8, 9, 10, 11], &[20, 21, 22]]);
        assert_eq!(t.lookahead.len(), 9, "removed lists leave no bytes behind");
        // A pushed link starts with no list, even one that had a list.
        let i = t.push(gone);
        assert!(t.lookahead(i).is_empty());
    }
}
