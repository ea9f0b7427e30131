//! Anti-replay window (RFC 4303 §3.4.3), as the ring of bitmap words of
//! RFC 6479 so that advancing the window never shifts bits.

use crate::error::Rejection;

/// Words of the bitmap.
pub(crate) const WORDS: usize = 32;
const BITS: u64 = (WORDS as u64) * 64;
const _: () = assert!(REPLAY_WINDOW >= 1024);

/// Number of sequence numbers below the highest one received that are still
/// accepted once. One bitmap word is kept as slack (RFC 6479 §2).
pub const REPLAY_WINDOW: u64 = BITS - 64;

/// Tracks which sequence numbers of one inbound SA were received.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// Highest sequence number accepted so far (0: none yet).
    top: u64,
    bitmap: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayWindow {
    /// An empty window.
    pub const fn new() -> Self {
        ReplayWindow {
            top: 0,
            bitmap: [0; WORDS],
        }
    }

    /// Highest sequence number accepted so far.
    pub const fn highest(&self) -> u64 {
        self.top
    }

    /// The highest sequence number and the bitmap, for a handover.
    pub(crate) fn to_parts(&self) -> (u64, [u64; WORDS]) {
        (self.top, self.bitmap)
    }

    /// A window from [`ReplayWindow::to_parts`].
    pub(crate) const fn from_parts(top: u64, bitmap: [u64; WORDS]) -> Self {
        ReplayWindow { top, bitmap }
    }

    fn slot(seq: u64) -> (usize, u64) {
        // Both casts are in range: the modulus is below WORDS.
        (((seq / 64) % WORDS as u64) as usize, 1u64 << (seq % 64))
    }

    /// Checks `seq` without recording it; call before the (costly)
    /// integrity check, then [`accept`](Self::accept) after it passed.
    pub fn check(&self, seq: u64) -> Result<(), Rejection> {
        if seq == 0 {
            // Sequence numbers start at 1 (RFC 4303 §3.3.3).
            return Err(Rejection::OutsideWindow(0));
        }
        if seq > self.top {
            return Ok(());
        }
        if self.top - seq >= REPLAY_WINDOW {
            return Err(Rejection::OutsideWindow(seq));
        }
        let (word, bit) = Self::slot(seq);
        if self.bitmap[word] & bit != 0 {
            return Err(Rejection::Replayed(seq));
        }
        Ok(())
    }

    /// Records `seq` as received. Only call after `check(seq)` passed and the
    /// packet authenticated.
    pub fn accept(&mut self, seq: u64) {
        if seq > self.top {
            let old_word = self.top / 64;
            let new_word = seq / 64;
            let clear = (new_word - old_word).min(WORDS as u64);
            for step in 1..=clear {
                let (word, _) = Self::slot((old_word + step) * 64);
                self.bitmap[word] = 0;
            }
            self.top = seq;
        }
        let (word, bit) = Self::slot(seq);
        self.bitmap[word] |= bit;
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn take(w: &mut ReplayWindow, seq: u64) -> Result<(), Rejection> {
        w.check(seq)?;
        w.accept(seq);
        Ok(())
    }

    #[test]
    fn in_order_reorder_replay() {
        let mut w = ReplayWindow::new();
        assert_eq!(take(&mut w, 0), Err(Rejection::OutsideWindow(0)));
        for seq in [1, 3, 2, 5000, 4000, 5000 - REPLAY_WINDOW + 1] {
            assert_eq!(take(&mut w, seq), Ok(()), "{seq}");
        }
        assert_eq!(take(&mut w, 3), Err(Rejection::OutsideWindow(3)));
        assert_eq!(take(&mut w, 4000), Err(Rejection::Replayed(4000)));
        assert_eq!(take(&mut w, 5000), Err(Rejection::Replayed(5000)));
        assert_eq!(
            take(&mut w, 5000 - REPLAY_WINDOW),
            Err(Rejection::OutsideWindow(5000 - REPLAY_WINDOW))
        );
    }

    #[test]
    fn advancing_clears_old_bits() {
        let mut w = ReplayWindow::new();
        take(&mut w, 100).unwrap();
        // Jump exactly one ring length ahead: slot of 100 is reused.
        take(&mut w, 100 + BITS).unwrap();
        assert_eq!(take(&mut w, 100 + BITS - 1), Ok(()));
        assert_eq!(
            take(&mut w, 100 + BITS),
            Err(Rejection::Replayed(100 + BITS))
        );
    }
}
