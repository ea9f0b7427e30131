//! Where an endpoint's randomness comes from: the operating system in
//! production, a seeded generator in tests and simulators.

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{Rng as _, SeedableRng as _};

/// The source of SPIs, handshake indexes and Noise keys.
pub(crate) enum Entropy {
    /// `getrandom` on every draw: nothing an attacker can learn (the clock,
    /// the pid, earlier SPIs) predicts a key, and no generator state in
    /// memory reveals past or future keys.
    Os,
    /// A ChaCha20 stream from a caller's seed: reproducible, so predictable.
    Seeded(Box<ChaCha20Rng>),
}

impl Entropy {
    /// A seeded source (tests and simulators only).
    pub(crate) fn insecure_seed(seed: [u8; 32]) -> Entropy {
        Entropy::Seeded(Box::new(ChaCha20Rng::from_seed(seed)))
    }

    /// Fills `out` with random bytes.
    ///
    /// # Panics
    /// If the operating system's random source fails (as `std`'s
    /// `HashMap::new` does): without it there is no safe key to use.
    pub(crate) fn fill(&mut self, out: &mut [u8]) {
        match self {
            Entropy::Os => {
                if let Err(e) = getrandom::fill(out) {
                    panic!("the operating system's random source failed: {e}");
                }
            }
            Entropy::Seeded(rng) => rng.fill_bytes(out),
        }
    }

    /// A random `u32`.
    pub(crate) fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill(&mut b);
        u32::from_le_bytes(b)
    }
}
