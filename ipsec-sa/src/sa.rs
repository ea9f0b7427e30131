//! Security associations: one direction of protected traffic each
//! (RFC 4301 §4.1), with the ESP-like processing of RFC 4303 §3.
//!
//! The AEAD nonce is a 4-byte salt from the key derivation followed by the
//! 64-bit sequence number, as the ESP transforms of RFC 4106 §4 (AES-GCM)
//! and RFC 7634 §2 (ChaCha20-Poly1305) build it; the cleartext header is the
//! associated data (RFC 4106 §5).

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};

use crate::error::{Rejection, SealError, WireError};
use crate::replay::ReplayWindow;
use crate::wire::{HEADER_LEN, MAX_PLAINTEXT_LEN, Packet, PacketRepr, Suite, TAG_LEN};

/// Key bytes and nonce salt for one SA; wiped on drop. The SAs keep a
/// copy beside ring's (opaque) key schedule only so that they can be
/// handed to the next process of a self-update ([`crate::resume`]).
#[derive(Clone, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct SaKeys {
    /// The AEAD key.
    pub key: [u8; 32],
    /// The salt that prefixes every nonce.
    pub salt: [u8; 4],
}

impl core::fmt::Debug for SaKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SaKeys(..)")
    }
}

fn algorithm(suite: Suite) -> &'static aead::Algorithm {
    match suite {
        Suite::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
        Suite::Aes256Gcm => &aead::AES_256_GCM,
    }
}

fn make_key(suite: Suite, keys: &SaKeys) -> LessSafeKey {
    // Both algorithms take 32-byte keys, so this cannot fail.
    match UnboundKey::new(algorithm(suite), &keys.key) {
        Ok(key) => LessSafeKey::new(key),
        Err(_) => unreachable!("32-byte key for a 256-bit AEAD"),
    }
}

fn nonce(salt: [u8; 4], seq: u64) -> Nonce {
    let mut raw = [0u8; 12];
    raw[..4].copy_from_slice(&salt);
    raw[4..].copy_from_slice(&seq.to_be_bytes());
    Nonce::assume_unique_for_key(raw)
}

/// The sending half: seals plaintext into data packets.
pub struct OutboundSa {
    spi: u32,
    suite: Suite,
    key: LessSafeKey,
    /// The key bytes, kept (wiped on drop) only for a handover to the next
    /// process ([`crate::resume`]).
    keys: SaKeys,
    salt: [u8; 4],
    /// Last sequence number used (0: none yet).
    sequence_number: u64,
    bytes: u64,
}

impl core::fmt::Debug for OutboundSa {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("OutboundSa")
            .field("spi", &self.spi)
            .field("suite", &self.suite)
            .field("sequence_number", &self.sequence_number)
            .finish_non_exhaustive()
    }
}

impl OutboundSa {
    /// A new SA that sends to the peer's inbound SA `spi`.
    pub fn new(spi: u32, suite: Suite, keys: &SaKeys) -> OutboundSa {
        OutboundSa {
            spi,
            suite,
            key: make_key(suite, keys),
            keys: keys.clone(),
            salt: keys.salt,
            sequence_number: 0,
            bytes: 0,
        }
    }

    /// An SA carried over from another process: the next packet uses
    /// `sequence_number + 1`.
    pub(crate) fn resumed(spi: u32, suite: Suite, keys: &SaKeys, sequence_number: u64) -> Self {
        OutboundSa {
            sequence_number,
            ..OutboundSa::new(spi, suite, keys)
        }
    }

    /// The key bytes, for a handover.
    pub(crate) fn keys(&self) -> &SaKeys {
        &self.keys
    }

    /// The SPI written into every packet.
    pub const fn spi(&self) -> u32 {
        self.spi
    }

    /// The AEAD suite.
    pub const fn suite(&self) -> Suite {
        self.suite
    }

    /// Packets sealed so far.
    pub const fn packets(&self) -> u64 {
        self.sequence_number
    }

    /// Plaintext bytes sealed so far.
    pub const fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Seals `plaintext` into a data packet written to `out` (cleared
    /// first). Returns the sequence number used.
    pub fn seal(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<u64, SealError> {
        if plaintext.len() > MAX_PLAINTEXT_LEN {
            return Err(SealError::TooLarge(plaintext.len()));
        }
        out.clear();
        out.reserve(HEADER_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&[0; HEADER_LEN]);
        out.extend_from_slice(plaintext);
        self.seal_in_place(out)
    }

    /// Seals in place, without copying the plaintext: `buffer` holds
    /// [`HEADER_LEN`] bytes of headroom (any content) followed by the
    /// plaintext. On success it holds the packet (header written, tag
    /// appended); on error it is unchanged. Returns the sequence number.
    pub fn seal_in_place(&mut self, buffer: &mut Vec<u8>) -> Result<u64, SealError> {
        let plaintext_len = buffer
            .len()
            .checked_sub(HEADER_LEN)
            .ok_or(SealError::NoHeadroom)?;
        if plaintext_len > MAX_PLAINTEXT_LEN {
            return Err(SealError::TooLarge(plaintext_len));
        }
        // Sequence numbers never wrap (RFC 4303 §3.3.3).
        let seq = self
            .sequence_number
            .checked_add(1)
            .filter(|s| *s != u64::MAX)
            .ok_or(SealError::SequenceExhausted)?;
        let (header, body) = buffer.split_at_mut(HEADER_LEN);
        header[..4].copy_from_slice(&self.spi.to_be_bytes());
        header[4..].copy_from_slice(&seq.to_be_bytes());
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce(self.salt, seq), Aad::from(&*header), body)
            // ring fails only for inputs over the AEAD's limit (≫ 64 KiB).
            .map_err(|_| SealError::TooLarge(plaintext_len))?;
        buffer.extend_from_slice(tag.as_ref());
        self.sequence_number = seq;
        self.bytes = self.bytes.saturating_add(plaintext_len as u64);
        Ok(seq)
    }
}

/// The receiving half: authenticates, decrypts and checks for replays.
pub struct InboundSa {
    spi: u32,
    suite: Suite,
    key: LessSafeKey,
    /// The key bytes, kept (wiped on drop) only for a handover.
    keys: SaKeys,
    salt: [u8; 4],
    window: ReplayWindow,
    packets: u64,
    bytes: u64,
}

impl core::fmt::Debug for InboundSa {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("InboundSa")
            .field("spi", &self.spi)
            .field("suite", &self.suite)
            .field("highest", &self.window.highest())
            .finish_non_exhaustive()
    }
}

impl InboundSa {
    /// A new SA that accepts packets carrying `spi`.
    pub fn new(spi: u32, suite: Suite, keys: &SaKeys) -> InboundSa {
        InboundSa {
            spi,
            suite,
            key: make_key(suite, keys),
            keys: keys.clone(),
            salt: keys.salt,
            window: ReplayWindow::new(),
            packets: 0,
            bytes: 0,
        }
    }

    /// An SA carried over from another process, with its replay window.
    pub(crate) fn resumed(spi: u32, suite: Suite, keys: &SaKeys, window: ReplayWindow) -> Self {
        InboundSa {
            window,
            ..InboundSa::new(spi, suite, keys)
        }
    }

    /// The key bytes, for a handover.
    pub(crate) fn keys(&self) -> &SaKeys {
        &self.keys
    }

    /// The replay window, for a handover.
    pub(crate) fn window(&self) -> &ReplayWindow {
        &self.window
    }

    /// The SPI this SA accepts.
    pub const fn spi(&self) -> u32 {
        self.spi
    }

    /// The AEAD suite.
    pub const fn suite(&self) -> Suite {
        self.suite
    }

    /// Packets accepted so far.
    pub const fn packets(&self) -> u64 {
        self.packets
    }

    /// Plaintext bytes accepted so far.
    pub const fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Checks and decrypts a data packet in place, returning the plaintext
    /// (a sub-slice of `packet`). On error the SA's state is unchanged.
    pub fn open<'a>(&mut self, packet: &'a mut [u8]) -> Result<&'a [u8], Rejection> {
        let view = Packet::new_checked(&*packet)?;
        let repr = PacketRepr::parse(&view)?;
        if repr.spi != self.spi {
            return Err(Rejection::UnknownSpi(repr.spi));
        }
        let seq = repr.sequence_number;
        self.window.check(seq)?;
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(view.header());
        let body = packet.get_mut(HEADER_LEN..).ok_or(WireError::Truncated)?;
        let plaintext = self
            .key
            .open_in_place(nonce(self.salt, seq), Aad::from(header), body)
            .map_err(|_| Rejection::Authentication)?;
        self.window.accept(seq);
        self.packets += 1;
        self.bytes = self.bytes.saturating_add(plaintext.len() as u64);
        Ok(plaintext)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn pair(suite: Suite) -> (OutboundSa, InboundSa) {
        let keys = SaKeys {
            key: [7; 32],
            salt: [1, 2, 3, 4],
        };
        (
            OutboundSa::new(0x1000, suite, &keys),
            InboundSa::new(0x1000, suite, &keys),
        )
    }

    #[test]
    fn seal_open_each_suite() {
        for suite in Suite::ALL {
            let (mut out_sa, mut in_sa) = pair(suite);
            let mut buf = vec![0xa5; 3];
            assert_eq!(out_sa.seal(b"hello", &mut buf), Ok(1));
            assert_eq!(buf.len(), HEADER_LEN + 5 + TAG_LEN);
            assert_eq!(&buf[..4], &0x1000u32.to_be_bytes());
            assert_ne!(&buf[HEADER_LEN..HEADER_LEN + 5], b"hello");
            assert_eq!(in_sa.open(&mut buf.clone()).unwrap(), b"hello");
            // The same packet again is a replay; state unchanged otherwise.
            assert_eq!(in_sa.open(&mut buf), Err(Rejection::Replayed(1)));
            assert_eq!(in_sa.packets(), 1);
        }
    }

    #[test]
    fn tampering_anywhere_fails() {
        let (mut out_sa, mut in_sa) = pair(Suite::Aes256Gcm);
        let mut buf = Vec::new();
        out_sa.seal(&[9; 40], &mut buf).unwrap();
        // Flip a bit in the sequence number, ciphertext and tag.
        for index in [11, HEADER_LEN, buf.len() - 1] {
            let mut tampered = buf.clone();
            tampered[index] ^= 1;
            let err = in_sa.open(&mut tampered).unwrap_err();
            assert!(
                matches!(err, Rejection::Authentication | Rejection::OutsideWindow(_)),
                "{index}: {err:?}"
            );
        }
        assert_eq!(in_sa.packets(), 0);
        assert_eq!(in_sa.open(&mut buf).unwrap(), &[9; 40]);
    }

    #[test]
    fn in_place_equals_copying() {
        let (mut a, mut in_sa) = pair(Suite::Aes256Gcm);
        let (mut b, _) = pair(Suite::Aes256Gcm);
        let mut copied = Vec::new();
        a.seal(b"payload", &mut copied).unwrap();
        let mut in_place = vec![0xa5; HEADER_LEN];
        in_place.extend_from_slice(b"payload");
        assert_eq!(b.seal_in_place(&mut in_place), Ok(1));
        assert_eq!(in_place, copied);
        assert_eq!(in_sa.open(&mut in_place).unwrap(), b"payload");
        let mut short = vec![0; HEADER_LEN - 1];
        assert_eq!(b.seal_in_place(&mut short), Err(SealError::NoHeadroom));
        assert_eq!(short.len(), HEADER_LEN - 1);
        assert_eq!(b.packets(), 1);
    }

    #[test]
    fn wrong_key_or_suite_fails() {
        let (mut out_sa, _) = pair(Suite::ChaCha20Poly1305);
        let (_, mut other_suite) = pair(Suite::Aes256Gcm);
        let mut other_key = InboundSa::new(
            0x1000,
            Suite::ChaCha20Poly1305,
            &SaKeys {
                key: [8; 32],
                salt: [1, 2, 3, 4],
            },
        );
        let mut buf = Vec::new();
        out_sa.seal(b"x", &mut buf).unwrap();
        assert_eq!(
            other_suite.open(&mut buf.clone()),
            Err(Rejection::Authentication)
        );
        assert_eq!(other_key.open(&mut buf), Err(Rejection::Authentication));
    }
}
