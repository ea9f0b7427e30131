//! Persistence of [`CaState`] behind a small trait.

use crate::error::StoreError;
use crate::state::{CaState, Change};

/// Where a [`crate::Ca`] keeps its state.
///
/// Durability contract: when [`Store::save`] or [`Store::record`] returns
/// `Ok`, a later [`Store::load`] (even after a crash or power loss) returns a
/// state that includes the change. A crash during a call leaves either the
/// state before or the state after it, never a mix. The CA hands out a
/// certificate only after `record` of its issue returned `Ok`, so no
/// acknowledged certificate is lost and no serial is used twice.
pub trait Store {
    /// Loads the current state; `None` if nothing was ever saved.
    fn load(&mut self) -> Result<Option<CaState>, StoreError>;

    /// Saves a whole snapshot atomically and durably.
    fn save(&mut self, state: &CaState) -> Result<(), StoreError>;

    /// Records `change`, made to `before`, atomically and durably.
    ///
    /// The default applies it to a copy and saves a whole snapshot; a store
    /// may instead append the change to a journal (as [`crate::FileStore`] does).
    fn record(&mut self, before: &CaState, change: &Change) -> Result<(), StoreError> {
        let mut after = before.clone();
        after.apply(change)?;
        self.save(&after)
    }
}

/// A store chosen at run time, e.g. by a sans-IO composition that holds a
/// [`crate::Ca`] without naming its store (see [`crate::Ca::boxed`]).
pub type BoxedStore = Box<dyn Store + Send>;

impl<S: Store + ?Sized> Store for Box<S> {
    fn load(&mut self) -> Result<Option<CaState>, StoreError> {
        (**self).load()
    }

    fn save(&mut self, state: &CaState) -> Result<(), StoreError> {
        (**self).save(state)
    }

    fn record(&mut self, before: &CaState, change: &Change) -> Result<(), StoreError> {
        (**self).record(before, change)
    }
}

/// An in-memory store (tests, benches, or a CA whose state lives elsewhere).
#[derive(Debug, Default, Clone)]
pub struct MemStore {
    /// The last saved snapshot.
    pub state: Option<CaState>,
    /// When set, the next `save` fails (for failure-injection tests) and clears this flag.
    pub fail_next_save: bool,
}

impl Store for MemStore {
    fn load(&mut self) -> Result<Option<CaState>, StoreError> {
        Ok(self.state.clone())
    }

    fn save(&mut self, state: &CaState) -> Result<(), StoreError> {
        if self.fail_next_save {
            self.fail_next_save = false;
            return Err(StoreError::Io {
                op: "save",
                path: "memory".into(),
                source: std::io::Error::other("injected failure"),
            });
        }
        self.state = Some(state.clone());
        Ok(())
    }
}

/// One write a [`QueueStore`] queued, for the durable store behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Write {
    /// A change, made to the state the previous write left
    /// ([`Store::record`]).
    Change(Change),
    /// A whole snapshot ([`Store::save`]).
    Snapshot(CaState),
}

/// A [`Write`] with its place in the queue (1, 2, …; see
/// [`WriteQueue::mark_durable`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedWrite {
    /// Its sequence number.
    pub seq: u64,
    /// What to write.
    pub write: Write,
}

#[derive(Debug, Default)]
struct Queue {
    writes: Vec<QueuedWrite>,
    queued: u64,
    durable: u64,
}

/// The shared side of a [`QueueStore`]: the writes it queued, and how far
/// they are durable.
///
/// Cloning gives another handle on the same queue. The holder of the
/// [`crate::Ca`] lets nothing that depends on a change out (an enrolment
/// reply, a CRL, a join token) before [`WriteQueue::durable`] reaches the
/// [`WriteQueue::queued`] it saw after the change: see
/// [`QueueStore`].
#[derive(Debug, Clone, Default)]
pub struct WriteQueue {
    inner: std::sync::Arc<std::sync::Mutex<Queue>>,
}

impl WriteQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // The queue is plain data: a panic elsewhere leaves it usable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn push(&self, write: Write) {
        let mut q = self.lock();
        q.queued += 1;
        let seq = q.queued;
        q.writes.push(QueuedWrite { seq, write });
    }

    /// The writes queued since the last `take`, oldest first, for the
    /// caller to make durable (e.g. with a [`StoreWriter`]) and then report
    /// with [`WriteQueue::mark_durable`].
    pub fn take(&self) -> Vec<QueuedWrite> {
        std::mem::take(&mut self.lock().writes)
    }

    /// Reports that every write up to `seq` is durable. Never goes back,
    /// nor past [`WriteQueue::queued`].
    pub fn mark_durable(&self, seq: u64) {
        let mut q = self.lock();
        q.durable = q.durable.max(seq.min(q.queued));
    }

    /// Sequence number of the last write queued (0: none yet).
    pub fn queued(&self) -> u64 {
        self.lock().queued
    }

    /// Sequence number up to which the writes are durable.
    pub fn durable(&self) -> u64 {
        self.lock().durable
    }

    /// Whether every write queued so far is durable.
    pub fn is_durable(&self) -> bool {
        let q = self.lock();
        q.durable >= q.queued
    }
}

/// What [`Barrier::hold`] did with an item.
#[derive(Debug, PartialEq, Eq)]
pub enum Gate<T> {
    /// Every write queued before it is durable and nothing earlier waits:
    /// the item may leave now.
    Pass(T),
    /// Held until [`Barrier::release`] lets it out.
    Held,
    /// Not held: the barrier already holds its capacity. The item is
    /// handed back for the caller to drop (or to refuse).
    Full(T),
}

/// Items (replies, answers, a CRL) held until the writes queued before
/// them on a [`WriteQueue`] are durable: the durability barrier of a
/// write-behind CA ([`QueueStore`]).
///
/// Each held item remembers [`WriteQueue::queued`] at the time it came;
/// [`Barrier::release`] lets out, in order, those whose writes
/// [`WriteQueue::durable`] has reached. At most `capacity` items wait: while
/// writes fail, requests keep coming, and memory must stay bounded.
///
/// ```
/// use ipsec_ca::store::{Barrier, Gate};
/// use ipsec_ca::state::{CaState, Change};
/// use ipsec_ca::{QueueStore, Store};
///
/// let mut store = QueueStore::new(None);
/// let queue = store.queue();
/// let mut replies = Barrier::new(queue.clone(), 16);
/// assert_eq!(replies.hold("before any write"), Gate::Pass("before any write"));
///
/// store.record(&CaState::default(), &Change::CrlIssued { number: 1 })?;
/// assert_eq!(replies.hold("after a write"), Gate::Held);
/// assert!(replies.release().is_empty());
///
/// queue.mark_durable(queue.queued()); // the writer made it durable
/// assert_eq!(replies.release(), vec!["after a write"]);
/// # Ok::<(), ipsec_ca::StoreError>(())
/// ```
#[derive(Debug)]
pub struct Barrier<T> {
    queue: WriteQueue,
    held: std::collections::VecDeque<(u64, T)>,
    capacity: usize,
}

impl<T> Barrier<T> {
    /// A barrier on `queue` holding at most `capacity` items.
    pub fn new(queue: WriteQueue, capacity: usize) -> Barrier<T> {
        Barrier {
            queue,
            held: std::collections::VecDeque::new(),
            capacity,
        }
    }

    /// `item` passes if every write queued so far is durable and no
    /// earlier item waits; else it is held (or handed back, when full).
    pub fn hold(&mut self, item: T) -> Gate<T> {
        let need = self.queue.queued();
        if self.held.is_empty() && self.queue.durable() >= need {
            return Gate::Pass(item);
        }
        if self.held.len() >= self.capacity {
            return Gate::Full(item);
        }
        self.held.push_back((need, item));
        Gate::Held
    }

    /// Like [`Barrier::hold`], for an item that replaces whatever is held
    /// (a newer CRL makes an older one moot): the items held are dropped
    /// first.
    pub fn hold_latest(&mut self, item: T) -> Gate<T> {
        self.held.clear();
        self.hold(item)
    }

    /// The items whose writes are durable now, in the order they came.
    pub fn release(&mut self) -> Vec<T> {
        let durable = self.queue.durable();
        let ready = self
            .held
            .iter()
            .take_while(|(need, _)| *need <= durable)
            .count();
        self.held.drain(..ready).map(|(_, item)| item).collect()
    }

    /// How many items are held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// The queue this barrier waits on.
    pub fn queue(&self) -> &WriteQueue {
        &self.queue
    }
}

/// A [`Store`] that queues its writes for another party to make durable:
/// a write-behind, so that a CA's caller (a node's only event loop) never
/// waits for an fsync.
///
/// Durability is deferred: `save` and `record` return `Ok` once the write
/// is queued on its [`WriteQueue`]. The holder of the [`crate::Ca`] must
/// therefore hold back everything a change makes possible (the CA's
/// replies from [`crate::Ca::poll_transmit`], a CRL, a join token) until
/// [`WriteQueue::durable`] reaches the [`WriteQueue::queued`] it read after
/// the call: a certificate is then never handed out, nor a join token
/// spent, that a crash could make the CA forget. Whoever drains the queue
/// ([`WriteQueue::take`]) writes to a real store, typically with a
/// [`StoreWriter`] on a thread of its own, and calls
/// [`WriteQueue::mark_durable`].
///
/// `load` returns the state the store started from with every change
/// queued since applied (kept in memory).
///
/// # Example
///
/// ```
/// use std::net::Ipv4Addr;
/// use ipsec_ca::{Ca, CaIdentity, KeyType, MemStore, NodeKey, NodeRequest, Policy, Store};
/// use ipsec_ca::store::write_behind;
/// use std::time::{Duration, SystemTime};
///
/// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
/// let identity =
///     CaIdentity::create_root(now, KeyType::Ed25519, "wow CA", Duration::from_secs(3650 * 86_400))?;
/// // The real store (here memory; a node uses a FileStore) goes to the writer.
/// let (store, mut writer) = write_behind(MemStore::default())?;
/// let queue = store.queue();
/// let mut ca = Ca::open(identity, Policy::default(), store)?;
///
/// let ip = Ipv4Addr::new(10, 128, 0, 5);
/// let csr = NodeKey::generate(KeyType::Ed25519)?.certificate_request(&NodeRequest::new(ip))?;
/// let issued = ca.sign(now, &csr, ip, None)?;
/// // Queued, not yet durable: the certificate must not leave yet.
/// assert!(!queue.is_durable());
///
/// // The writer's side (on a thread of its own in a real program).
/// let durable = writer.write(queue.take())?;
/// queue.mark_durable(durable);
/// assert!(queue.is_durable());
/// let on_disk = writer.store_mut().load()?.unwrap();
/// assert_eq!(on_disk.issued[0].serial, issued.serial);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct QueueStore {
    state: Option<CaState>,
    queue: WriteQueue,
}

impl QueueStore {
    /// A store starting from `state` (loaded elsewhere; `None`: nothing was
    /// ever saved), with a new queue.
    pub fn new(state: Option<CaState>) -> QueueStore {
        QueueStore {
            state,
            queue: WriteQueue::default(),
        }
    }

    /// A handle on its queue.
    pub fn queue(&self) -> WriteQueue {
        self.queue.clone()
    }
}

impl Store for QueueStore {
    fn load(&mut self) -> Result<Option<CaState>, StoreError> {
        Ok(self.state.clone())
    }

    fn save(&mut self, state: &CaState) -> Result<(), StoreError> {
        self.state = Some(state.clone());
        self.queue.push(Write::Snapshot(state.clone()));
        Ok(())
    }

    fn record(&mut self, before: &CaState, change: &Change) -> Result<(), StoreError> {
        let mut state = match self.state.take() {
            Some(s) if s.seq == before.seq => s,
            _ => before.clone(),
        };
        let applied = state.apply(change);
        self.state = Some(state);
        applied?;
        self.queue.push(Write::Change(change.clone()));
        Ok(())
    }
}

/// Makes a [`QueueStore`]'s writes durable in a real store, keeping the
/// state they build in memory (so that a journaling store gets the state
/// each change was made to, and a failed write can be redone as one
/// snapshot).
///
/// After a write fails, the store is *behind*: later writes are only
/// applied in memory, and the next [`StoreWriter::write`] or
/// [`StoreWriter::retry`] saves the whole state as a snapshot.
#[derive(Debug)]
pub struct StoreWriter<S: Store> {
    store: S,
    state: CaState,
    /// Sequence number of the last write applied in memory.
    seen: u64,
    /// Sequence number of the last write durable in `store`.
    written: u64,
    behind: bool,
    /// A change did not fit the state: nothing is written any more.
    broken: bool,
}

/// Loads `store` once and splits it: a [`QueueStore`] starting from its
/// state (for the [`crate::Ca`]) and a [`StoreWriter`] owning it (for the
/// thread that writes).
pub fn write_behind<S: Store>(mut store: S) -> Result<(QueueStore, StoreWriter<S>), StoreError> {
    let state = store.load()?;
    let writer = StoreWriter::new(store, state.clone().unwrap_or_default());
    Ok((QueueStore::new(state), writer))
}

impl<S: Store> StoreWriter<S> {
    /// A writer for `store`, which holds `state` (what its `load` returned;
    /// the default state if it held none: the CA's first write is then a
    /// snapshot).
    pub fn new(store: S, state: CaState) -> StoreWriter<S> {
        StoreWriter {
            store,
            state,
            seen: 0,
            written: 0,
            behind: false,
            broken: false,
        }
    }

    /// Makes `writes` (from [`WriteQueue::take`], in order) durable and
    /// returns the sequence number durable now, for
    /// [`WriteQueue::mark_durable`]. On an error nothing new is durable;
    /// the writes are kept in memory and the next call saves a snapshot.
    pub fn write(
        &mut self,
        writes: impl IntoIterator<Item = QueuedWrite>,
    ) -> Result<u64, StoreError> {
        if self.broken {
            return Err(StoreError::Inconsistent);
        }
        let was_behind = self.behind;
        let mut error = None;
        for QueuedWrite { seq, write } in writes {
            match write {
                Write::Change(change) => {
                    if !self.behind
                        && let Err(e) = self.store.record(&self.state, &change)
                    {
                        self.behind = true;
                        error = Some(e);
                    }
                    if let Err(e) = self.state.apply(&change) {
                        // Only a change the state cannot take gets here
                        // (a bug): write nothing more, report nothing.
                        self.broken = true;
                        return Err(e);
                    }
                }
                Write::Snapshot(state) => {
                    self.state = state;
                    if error.is_none() {
                        match self.store.save(&self.state) {
                            Ok(()) => self.behind = false,
                            Err(e) => {
                                self.behind = true;
                                error = Some(e);
                            }
                        }
                    }
                }
            }
            self.seen = seq;
        }
        match error {
            Some(e) => Err(e),
            None if was_behind && self.behind => self.retry(),
            None => {
                self.written = self.seen;
                Ok(self.written)
            }
        }
    }

    /// If a write failed: saves the whole state as a snapshot. Returns the
    /// sequence number durable now.
    pub fn retry(&mut self) -> Result<u64, StoreError> {
        if self.broken {
            return Err(StoreError::Inconsistent);
        }
        if self.behind {
            self.store.save(&self.state)?;
            self.behind = false;
        }
        self.written = self.seen;
        Ok(self.written)
    }

    /// Whether a write failed and the store lacks some writes.
    pub fn is_behind(&self) -> bool {
        self.behind || self.broken
    }

    /// Sequence number of the last write durable.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The state the writes built (the CA's, as far as they go).
    pub fn state(&self) -> &CaState {
        &self.state
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store, mutably.
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Items leave in order, each once the writes before it are durable;
    /// one that came before any write passes at once, but not past an
    /// earlier one still held.
    #[test]
    fn the_barrier_releases_in_order_as_writes_become_durable() {
        let mut store = QueueStore::new(None);
        let queue = store.queue();
        let mut barrier = Barrier::new(queue.clone(), 8);
        assert_eq!(barrier.hold(0), Gate::Pass(0));
        let state = CaState::default();
        store.save(&state).unwrap();
        assert_eq!(barrier.hold(1), Gate::Held);
        store.save(&state).unwrap();
        assert_eq!(barrier.hold(2), Gate::Held);
        queue.mark_durable(1);
        assert_eq!(barrier.release(), [1]);
        // Durable so far, but 2 still waits: 3 goes behind it.
        queue.mark_durable(2);
        assert_eq!(barrier.hold(3), Gate::Held);
        assert_eq!(barrier.release(), [2, 3]);
        assert!(barrier.is_empty());
        assert_eq!(barrier.hold(4), Gate::Pass(4));
    }

    /// While writes never become durable, a flood of items is held up to
    /// the capacity and the rest handed back: memory stays bounded.
    #[test]
    fn attack_a_barrier_whose_writes_fail_stays_bounded() {
        let mut store = QueueStore::new(None);
        let queue = store.queue();
        store.save(&CaState::default()).unwrap();
        let mut barrier = Barrier::new(queue.clone(), 16);
        let mut handed_back = 0;
        for i in 0..1000 {
            if let Gate::Full(_) = barrier.hold(i) {
                handed_back += 1;
            }
        }
        assert_eq!((barrier.len(), handed_back), (16, 984));
        queue.mark_durable(queue.queued());
        assert_eq!(barrier.release(), (0..16).collect::<Vec<_>>());
    }

    /// `hold_latest` keeps only the newest item.
    #[test]
    fn hold_latest_replaces_what_is_held() {
        let mut store = QueueStore::new(None);
        let queue = store.queue();
        let mut barrier = Barrier::new(queue.clone(), 4);
        store.save(&CaState::default()).unwrap();
        assert_eq!(barrier.hold_latest("crl 1"), Gate::Held);
        assert_eq!(barrier.hold_latest("crl 2"), Gate::Held);
        queue.mark_durable(queue.queued());
        assert_eq!(barrier.release(), ["crl 2"]);
        assert_eq!(barrier.hold_latest("crl 3"), Gate::Pass("crl 3"));
    }

    #[test]
    fn durability_counters() {
        let mut store = QueueStore::new(None);
        let queue = store.queue();
        assert!(queue.is_durable());
        assert_eq!((queue.queued(), queue.durable()), (0, 0));
        let state = CaState::default();
        store.save(&state).unwrap();
        store
            .record(&state, &Change::CrlIssued { number: 1 })
            .unwrap();
        assert_eq!((queue.queued(), queue.durable()), (2, 0));
        assert!(!queue.is_durable());
        let writes = queue.take();
        assert_eq!(writes.iter().map(|w| w.seq).collect::<Vec<_>>(), [1, 2]);
        assert!(queue.take().is_empty(), "taken once");
        queue.mark_durable(1);
        assert!(!queue.is_durable());
        // Never past what was queued, never back.
        queue.mark_durable(7);
        assert_eq!(queue.durable(), 2);
        queue.mark_durable(1);
        assert_eq!(queue.durable(), 2);
        assert!(queue.is_durable());
        // `load` sees the changes; a change that does not fit is refused
        // and not queued.
        assert_eq!(store.load().unwrap().unwrap().crl_number, 1);
        let mut after = state.clone();
        after.apply(&Change::CrlIssued { number: 1 }).unwrap();
        assert!(
            store
                .record(&after, &Change::CrlIssued { number: 1 })
                .is_err()
        );
        assert_eq!(queue.queued(), 2);
    }
}
