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
