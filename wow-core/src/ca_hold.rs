//! The CA node's durability barrier: with a write-behind store
//! ([`ipsec_ca::QueueStore`]), what a CA change makes possible (an
//! enrolment reply, a new CRL) waits until the change is durable
//! ([`ipsec_ca::Barrier`]). See [`crate::core::Core::set_ca_queue`].

use ipsec_ca::{Barrier, Gate, Transmit, WriteQueue};

use crate::crl_dht::Published;

/// Replies held at most: while the CA's writes fail, the nodes' retries
/// (rate-limited, see [`crate::enrol`]) would otherwise pile up replies.
/// One past it is dropped: the node asks again.
pub(crate) const MAX_HELD_REPLIES: usize = 4096;

/// Replies and a CRL held until the writes before them are durable.
#[derive(Debug)]
pub(crate) struct Hold {
    /// Replies in the CA's order.
    replies: Barrier<Transmit>,
    /// The newest CRL.
    crl: Barrier<Published>,
}

impl Hold {
    pub(crate) fn new(queue: WriteQueue) -> Hold {
        Hold {
            replies: Barrier::new(queue.clone(), MAX_HELD_REPLIES),
            crl: Barrier::new(queue, 1),
        }
    }

    /// `reply`, if every write so far is durable and no earlier reply
    /// waits; else it is kept (or dropped, past [`MAX_HELD_REPLIES`]).
    pub(crate) fn reply(&mut self, reply: Transmit) -> Option<Transmit> {
        match self.replies.hold(reply) {
            Gate::Pass(reply) => Some(reply),
            Gate::Held => None,
            Gate::Full(reply) => {
                tracing::debug!(to = %reply.destination, "CA reply dropped: too many wait for the CA's writes");
                None
            }
        }
    }

    /// `crl`, if every write so far is durable; else it is kept (in place
    /// of an older one kept).
    pub(crate) fn crl(&mut self, crl: Published) -> Option<Published> {
        match self.crl.hold_latest(crl) {
            Gate::Pass(crl) => Some(crl),
            Gate::Held | Gate::Full(_) => None,
        }
    }

    /// The replies whose writes are durable now, in order.
    pub(crate) fn released_replies(&mut self) -> Vec<Transmit> {
        self.replies.release()
    }

    /// The CRL kept, if its writes are durable now.
    pub(crate) fn released_crl(&mut self) -> Option<Published> {
        self.crl.release().pop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipsec_ca::state::{CaState, Change};
    use ipsec_ca::{QueueStore, Store};

    /// While the CA's writes do not become durable, a flood of requests
    /// (each answered by the CA) cannot make the core hold replies without
    /// bound; once durable, the ones held leave in order.
    #[test]
    fn attack_held_replies_stay_bounded_while_writes_fail() {
        let mut store = QueueStore::new(None);
        let queue = store.queue();
        store
            .record(&CaState::default(), &Change::CrlIssued { number: 1 })
            .unwrap_or_else(|e| panic!("{e}"));
        let mut hold = Hold::new(queue.clone());
        for i in 0..MAX_HELD_REPLIES + 100 {
            let reply = Transmit {
                destination: std::net::Ipv4Addr::from(i as u32),
                payload: vec![0; 512],
            };
            assert!(hold.reply(reply).is_none(), "a reply left before durable");
        }
        assert_eq!(hold.replies.len(), MAX_HELD_REPLIES);
        queue.mark_durable(queue.queued());
        let released = hold.released_replies();
        assert_eq!(released.len(), MAX_HELD_REPLIES);
        assert_eq!(released[1].destination, std::net::Ipv4Addr::from(1));
        assert!(hold.replies.is_empty());
    }
}
