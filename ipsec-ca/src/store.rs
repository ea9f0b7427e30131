//! Persistence of [`CaState`] behind a small trait.

use crate::error::StoreError;
use crate::state::CaState;

/// Where a [`crate::Ca`] keeps its state.
///
/// `save` must be atomic: after a crash at any point, `load` returns either the
/// previous snapshot or the new one, never a mix. The CA releases a certificate
/// only after `save` of the state recording it returned `Ok`.
pub trait Store {
    /// Loads the last saved snapshot; `None` if nothing was ever saved.
    fn load(&mut self) -> Result<Option<CaState>, StoreError>;
    /// Saves a snapshot atomically and durably.
    fn save(&mut self, state: &CaState) -> Result<(), StoreError>;
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
