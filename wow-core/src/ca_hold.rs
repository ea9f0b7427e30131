//! The CA node's durability barrier: with a write-behind store
//! ([`ipsec_ca::QueueStore`]), what a CA change makes possible (an
//! enrolment reply, a new CRL) waits until the change is durable
//! ([`ipsec_ca::WriteQueue`]). See [`crate::core::Core::set_ca_queue`].

use std::collections::VecDeque;

use ipsec_ca::{Transmit, WriteQueue};

use crate::crl_dht::Published;

/// Replies and a CRL held until the writes before them are durable.
#[derive(Debug)]
pub(crate) struct Hold {
    queue: WriteQueue,
    /// Replies in the CA's order, each with the write it waits for.
    replies: VecDeque<(u64, Transmit)>,
    /// The newest CRL and the write it waits for.
    crl: Option<(u64, Published)>,
}

impl Hold {
    pub(crate) fn new(queue: WriteQueue) -> Hold {
        Hold {
            queue,
            replies: VecDeque::new(),
            crl: None,
        }
    }

    /// `reply`, if every write so far is durable and no earlier reply
    /// waits; else it is kept.
    pub(crate) fn reply(&mut self, reply: Transmit) -> Option<Transmit> {
        let need = self.queue.queued();
        if self.replies.is_empty() && self.queue.durable() >= need {
            return Some(reply);
        }
        self.replies.push_back((need, reply));
        None
    }

    /// `crl`, if every write so far is durable; else it is kept (in place
    /// of an older one kept).
    pub(crate) fn crl(&mut self, crl: Published) -> Option<Published> {
        let need = self.queue.queued();
        if self.queue.durable() >= need {
            self.crl = None;
            return Some(crl);
        }
        self.crl = Some((need, crl));
        None
    }

    /// The replies whose writes are durable now, in order.
    pub(crate) fn released_replies(&mut self) -> Vec<Transmit> {
        let durable = self.queue.durable();
        let mut out = Vec::new();
        while let Some((need, _)) = self.replies.front()
            && *need <= durable
        {
            if let Some((_, t)) = self.replies.pop_front() {
                out.push(t);
            }
        }
        out
    }

    /// The CRL kept, if its writes are durable now.
    pub(crate) fn released_crl(&mut self) -> Option<Published> {
        let durable = self.queue.durable();
        match self.crl.take() {
            Some((need, p)) if need <= durable => Some(p),
            kept => {
                self.crl = kept;
                None
            }
        }
    }
}
