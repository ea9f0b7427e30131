//! Security associations: one direction of protected traffic each
//! (RFC 4301 §4.1), with the ESP-like processing of RFC 4303 §3.
//!
//! The AEAD nonce is a 4-byte salt from the key derivation followed by the
//! 64-bit sequence number, as the ESP transforms of RFC 4106 §4 (AES-GCM)
//! and RFC 7634 §2 (ChaCha20-Poly1305) build it; the cleartext header is the
//! associated data (RFC 4106 §5).
//!
//! # Sealing and opening off the owning thread
//!
//! Each direction is split in two, so that an application may run the
//! AEAD (the costly part) on other threads while the SA stays on one:
//!
//! - outbound, [`OutboundSa::prepare_seal`] does the ordered part on the
//!   SA's owner (the sequence number, hence the nonce, and the header)
//!   and returns a [`SealJob`]: a `Send` value holding the packet and a
//!   shared handle on the key, which [`SealJob::seal`] finishes anywhere;
//! - inbound, [`InboundSa::prepare_open`] checks the SPI and, as a cheap
//!   early refusal, the replay window, and returns an [`OpenJob`];
//!   [`OpenJob::open`] authenticates and decrypts anywhere, giving an
//!   [`Opened`]; only then does [`InboundSa::accept`], on the owner, check
//!   the window again (a copy may have been opened meanwhile) and move it.
//!   The window moves for authenticated packets only, and only for the SA
//!   whose key opened them.
//!
//! The crate starts no thread: the jobs are plain values.

use std::sync::Arc;

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

fn make_key(suite: Suite, keys: &SaKeys) -> Arc<LessSafeKey> {
    // Both algorithms take 32-byte keys, so this cannot fail.
    match UnboundKey::new(algorithm(suite), &keys.key) {
        Ok(key) => Arc::new(LessSafeKey::new(key)),
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
    key: Arc<LessSafeKey>,
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

    /// Seals `plaintext` into a data packet appended to `out`, after what
    /// it holds (a caller's own header, say): one copy, into the buffer
    /// that is sent. On error `out` is unchanged. Returns the sequence
    /// number used.
    pub fn seal_append(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<u64, SealError> {
        if plaintext.len() > MAX_PLAINTEXT_LEN {
            return Err(SealError::TooLarge(plaintext.len()));
        }
        let start = out.len();
        out.reserve(HEADER_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&[0; HEADER_LEN]);
        out.extend_from_slice(plaintext);
        let sealed = self.next_sequence_number(&out[start..]).and_then(|seq| {
            seal_body(&self.key, self.salt, self.spi, seq, &mut out[start..]).map(|tag| (seq, tag))
        });
        match sealed {
            Ok((seq, tag)) => {
                out.extend_from_slice(tag.as_ref());
                self.commit(seq, plaintext.len());
                Ok(seq)
            }
            Err(e) => {
                out.truncate(start);
                Err(e)
            }
        }
    }

    /// Seals in place, without copying the plaintext: `buffer` holds
    /// [`HEADER_LEN`] bytes of headroom (any content) followed by the
    /// plaintext. On success it holds the packet (header written, tag
    /// appended); on error it is unchanged. Returns the sequence number.
    pub fn seal_in_place(&mut self, buffer: &mut Vec<u8>) -> Result<u64, SealError> {
        let seq = self.next_sequence_number(buffer)?;
        let tag = seal_body(&self.key, self.salt, self.spi, seq, buffer)?;
        buffer.extend_from_slice(tag.as_ref());
        self.commit(seq, buffer.len() - HEADER_LEN - TAG_LEN);
        Ok(seq)
    }

    /// The ordered half of [`seal_in_place`](Self::seal_in_place), for
    /// sealing on another thread: assigns the next sequence number (and so
    /// the nonce and header) to the packet in `buffer` (laid out as for
    /// `seal_in_place`), then moves the buffer into the returned job,
    /// leaving `buffer` empty. [`SealJob::seal`] finishes
    /// the packet anywhere. On error `buffer` and the SA are unchanged.
    ///
    /// The sequence number counts as used from here on, whether or not
    /// the job is ever run: a dropped job leaves a gap, which the peer's
    /// replay window tolerates, and never a reused nonce.
    pub fn prepare_seal(&mut self, buffer: &mut Vec<u8>) -> Result<SealJob, SealError> {
        let seq = self.next_sequence_number(buffer)?;
        self.commit(seq, buffer.len() - HEADER_LEN);
        Ok(SealJob {
            key: Arc::clone(&self.key),
            salt: self.salt,
            spi: self.spi,
            seq,
            buffer: core::mem::take(buffer),
        })
    }

    /// The sequence number the next packet in `buffer` (headroom and
    /// plaintext) gets, after the size checks.
    fn next_sequence_number(&self, buffer: &[u8]) -> Result<u64, SealError> {
        let plaintext_len = buffer
            .len()
            .checked_sub(HEADER_LEN)
            .ok_or(SealError::NoHeadroom)?;
        if plaintext_len > MAX_PLAINTEXT_LEN {
            return Err(SealError::TooLarge(plaintext_len));
        }
        // Sequence numbers never wrap (RFC 4303 §3.3.3).
        self.sequence_number
            .checked_add(1)
            .filter(|s| *s != u64::MAX)
            .ok_or(SealError::SequenceExhausted)
    }

    fn commit(&mut self, seq: u64, plaintext_len: usize) {
        self.sequence_number = seq;
        self.bytes = self.bytes.saturating_add(plaintext_len as u64);
    }
}

fn write_header(header: &mut [u8], spi: u32, seq: u64) {
    header[..4].copy_from_slice(&spi.to_be_bytes());
    header[4..HEADER_LEN].copy_from_slice(&seq.to_be_bytes());
}

/// Writes the header into the headroom of `buffer` and encrypts the
/// plaintext after it in place; returns the tag.
fn seal_body(
    key: &LessSafeKey,
    salt: [u8; 4],
    spi: u32,
    seq: u64,
    buffer: &mut [u8],
) -> Result<aead::Tag, SealError> {
    let (header, body) = buffer.split_at_mut(HEADER_LEN);
    write_header(header, spi, seq);
    key.seal_in_place_separate_tag(nonce(salt, seq), Aad::from(&*header), body)
        // ring fails only for inputs over the AEAD's limit (≫ 64 KiB).
        .map_err(|_| SealError::TooLarge(body.len()))
}

/// A packet whose sequence number and header are assigned, waiting for
/// its encryption ([`OutboundSa::prepare_seal`]). It is `Send` and holds
/// a shared handle on the SA's key, so it may be sealed on any thread.
pub struct SealJob {
    key: Arc<LessSafeKey>,
    salt: [u8; 4],
    spi: u32,
    seq: u64,
    buffer: Vec<u8>,
}

impl core::fmt::Debug for SealJob {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SealJob")
            .field("seq", &self.seq)
            .field("len", &self.buffer.len())
            .finish_non_exhaustive()
    }
}

impl SealJob {
    /// The sequence number the packet carries.
    pub const fn sequence_number(&self) -> u64 {
        self.seq
    }

    /// Encrypts the packet and appends the tag: the buffer then holds the
    /// data packet, ready to send. Fails only where
    /// [`OutboundSa::seal_in_place`] would have (never for a job
    /// [`OutboundSa::prepare_seal`] made: it checked the size).
    pub fn seal(mut self) -> Result<Vec<u8>, SealError> {
        let tag = seal_body(&self.key, self.salt, self.spi, self.seq, &mut self.buffer)?;
        self.buffer.extend_from_slice(tag.as_ref());
        Ok(self.buffer)
    }
}

/// The receiving half: authenticates, decrypts and checks for replays.
pub struct InboundSa {
    spi: u32,
    suite: Suite,
    key: Arc<LessSafeKey>,
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
        let seq = self.check(packet)?;
        let plaintext = open_body(&self.key, self.salt, seq, packet)?;
        self.record(seq, plaintext.len());
        Ok(plaintext)
    }

    /// The first half of [`open`](Self::open), for opening on another
    /// thread: parses the packet in `packet`, checks its SPI and refuses a
    /// sequence number the window already refuses (a cheap early drop),
    /// then moves the buffer into the returned job, leaving `packet`
    /// empty. Nothing is recorded: the window moves only in
    /// [`accept`](Self::accept), after [`OpenJob::open`] authenticated the
    /// packet. On error `packet` is unchanged.
    pub fn prepare_open(&self, packet: &mut Vec<u8>) -> Result<OpenJob, Rejection> {
        let seq = self.check(packet)?;
        Ok(OpenJob {
            key: Arc::clone(&self.key),
            salt: self.salt,
            spi: self.spi,
            seq,
            buffer: core::mem::take(packet),
        })
    }

    /// The second half: takes a packet [`OpenJob::open`] processed. It is
    /// refused unless it authenticated under this very SA's key (not an
    /// earlier SA's with the same SPI) and its sequence number is still
    /// new: two copies of one packet may both have been opened, and only
    /// the first accepted moves the window. On error the SA's state is
    /// unchanged.
    pub fn accept(&mut self, opened: &Opened) -> Result<(), Rejection> {
        if opened.spi != self.spi || !Arc::ptr_eq(&opened.key, &self.key) {
            return Err(Rejection::UnknownSpi(opened.spi));
        }
        let len = opened.plaintext_len.ok_or(Rejection::Authentication)?;
        self.window.check(opened.seq)?;
        self.record(opened.seq, len);
        Ok(())
    }

    /// Parses `packet` and checks its SPI and sequence number; returns the
    /// latter.
    fn check(&self, packet: &[u8]) -> Result<u64, Rejection> {
        let view = Packet::new_checked(packet)?;
        let repr = PacketRepr::parse(&view)?;
        if repr.spi != self.spi {
            return Err(Rejection::UnknownSpi(repr.spi));
        }
        self.window.check(repr.sequence_number)?;
        Ok(repr.sequence_number)
    }

    /// Records an authenticated packet.
    fn record(&mut self, seq: u64, plaintext_len: usize) {
        self.window.accept(seq);
        self.packets += 1;
        self.bytes = self.bytes.saturating_add(plaintext_len as u64);
    }
}

/// Authenticates and decrypts the packet in `packet` (checked already)
/// in place; returns the plaintext.
fn open_body<'a>(
    key: &LessSafeKey,
    salt: [u8; 4],
    seq: u64,
    packet: &'a mut [u8],
) -> Result<&'a [u8], Rejection> {
    if packet.len() < HEADER_LEN {
        return Err(WireError::Truncated.into());
    }
    let (header, body) = packet.split_at_mut(HEADER_LEN);
    key.open_in_place(nonce(salt, seq), Aad::from(&*header), body)
        .map(|p| &*p)
        .map_err(|_| Rejection::Authentication)
}

/// A received packet that passed the cheap checks, waiting for its
/// authentication and decryption ([`InboundSa::prepare_open`]). It is
/// `Send` and holds a shared handle on the SA's key, so it may be opened
/// on any thread.
pub struct OpenJob {
    key: Arc<LessSafeKey>,
    salt: [u8; 4],
    spi: u32,
    seq: u64,
    buffer: Vec<u8>,
}

impl core::fmt::Debug for OpenJob {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("OpenJob")
            .field("spi", &self.spi)
            .field("seq", &self.seq)
            .field("len", &self.buffer.len())
            .finish_non_exhaustive()
    }
}

impl OpenJob {
    /// The SPI the packet names.
    pub const fn spi(&self) -> u32 {
        self.spi
    }

    /// Authenticates and decrypts the packet in place. The result says
    /// whether it authenticated; either way it must go back to the SA's
    /// owner ([`InboundSa::accept`]), which alone records it.
    pub fn open(mut self) -> Opened {
        let plaintext_len = open_body(&self.key, self.salt, self.seq, &mut self.buffer)
            .ok()
            .map(<[u8]>::len);
        Opened {
            key: self.key,
            spi: self.spi,
            seq: self.seq,
            buffer: self.buffer,
            plaintext_len,
        }
    }
}

/// A packet [`OpenJob::open`] processed: authenticated and decrypted, or
/// refused. Only `OpenJob::open` makes one, so an `Opened` that says it
/// authenticated did, under the key it carries.
pub struct Opened {
    key: Arc<LessSafeKey>,
    spi: u32,
    seq: u64,
    buffer: Vec<u8>,
    /// `None`: authentication failed.
    plaintext_len: Option<usize>,
}

impl core::fmt::Debug for Opened {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Opened")
            .field("spi", &self.spi)
            .field("seq", &self.seq)
            .field("plaintext_len", &self.plaintext_len)
            .finish_non_exhaustive()
    }
}

impl Opened {
    /// The SPI the packet named.
    pub const fn spi(&self) -> u32 {
        self.spi
    }

    /// The packet's sequence number.
    pub const fn sequence_number(&self) -> u64 {
        self.seq
    }

    /// The decrypted plaintext, if the packet authenticated. Deliver it
    /// only after the SA's owner accepted the packet.
    pub fn plaintext(&self) -> Option<&[u8]> {
        let len = self.plaintext_len?;
        self.buffer.get(HEADER_LEN..HEADER_LEN + len)
    }

    /// The buffer, for reuse.
    pub fn into_buffer(self) -> Vec<u8> {
        self.buffer
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
    fn appended_equals_copying_after_the_prefix() {
        let (mut a, mut in_sa) = pair(Suite::Aes256Gcm);
        let (mut b, _) = pair(Suite::Aes256Gcm);
        let mut copied = Vec::new();
        a.seal(b"payload", &mut copied).unwrap();
        let mut appended = b"prefix".to_vec();
        assert_eq!(b.seal_append(b"payload", &mut appended), Ok(1));
        assert_eq!(&appended[..6], b"prefix");
        assert_eq!(&appended[6..], &copied[..]);
        assert_eq!(in_sa.open(&mut appended[6..]).unwrap(), b"payload");
        // Refused: the prefix alone, the sequence number unused.
        let mut too_long = b"prefix".to_vec();
        let huge = vec![0; MAX_PLAINTEXT_LEN + 1];
        assert!(b.seal_append(&huge, &mut too_long).is_err());
        assert_eq!(too_long, b"prefix");
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

    fn headroom(plaintext: &[u8]) -> Vec<u8> {
        let mut buffer = vec![0xa5; HEADER_LEN];
        buffer.extend_from_slice(plaintext);
        buffer
    }

    #[test]
    fn jobs_are_send() {
        fn send<T: Send + 'static>() {}
        send::<SealJob>();
        send::<OpenJob>();
        send::<Opened>();
    }

    #[test]
    fn split_seal_equals_inline_seal_and_opens_both_ways() {
        for suite in Suite::ALL {
            let (mut inline, mut in_sa) = pair(suite);
            let (mut split, _) = pair(suite);
            let mut expected = headroom(b"payload");
            inline.seal_in_place(&mut expected).unwrap();
            let mut buffer = headroom(b"payload");
            let job = split.prepare_seal(&mut buffer).unwrap();
            assert!(buffer.is_empty());
            assert_eq!((job.sequence_number(), split.packets()), (1, 1));
            // Sealed on another thread.
            let packet = std::thread::spawn(move || job.seal()).join().unwrap();
            assert_eq!(packet, Ok(expected.clone()));
            let mut packet = packet.unwrap();
            let job = in_sa.prepare_open(&mut packet).unwrap();
            assert_eq!(in_sa.packets(), 0, "nothing recorded before opening");
            let opened = std::thread::spawn(move || job.open()).join().unwrap();
            assert_eq!(opened.plaintext(), Some(&b"payload"[..]));
            assert_eq!(in_sa.accept(&opened), Ok(()));
            assert_eq!(in_sa.packets(), 1);
            // The inline path refuses it now: one window for both paths.
            assert_eq!(in_sa.open(&mut expected), Err(Rejection::Replayed(1)));
        }
    }

    #[test]
    fn prepare_errors_leave_buffer_and_sa_unchanged() {
        let (mut out_sa, in_sa) = pair(Suite::Aes256Gcm);
        let mut short = vec![0; HEADER_LEN - 1];
        assert_eq!(
            out_sa.prepare_seal(&mut short).unwrap_err(),
            SealError::NoHeadroom
        );
        let mut big = vec![0; HEADER_LEN + MAX_PLAINTEXT_LEN + 1];
        assert!(matches!(
            out_sa.prepare_seal(&mut big),
            Err(SealError::TooLarge(_))
        ));
        assert_eq!(
            (short.len(), big.len(), out_sa.packets()),
            (HEADER_LEN - 1, HEADER_LEN + MAX_PLAINTEXT_LEN + 1, 0)
        );
        let mut garbage = vec![1, 2, 3];
        assert!(in_sa.prepare_open(&mut garbage).is_err());
        assert_eq!(garbage, [1, 2, 3]);
    }

    /// A forged packet opened on a worker moves nothing: not the window
    /// (a forged sequence number far ahead would otherwise push every
    /// genuine packet out of it), not the counters.
    #[test]
    fn attack_forged_packet_on_the_worker_path_moves_no_window() {
        let (mut out_sa, mut in_sa) = pair(Suite::ChaCha20Poly1305);
        let mut genuine = Vec::new();
        out_sa.seal(b"genuine", &mut genuine).unwrap();
        let mut forged = genuine.clone();
        forged[4..HEADER_LEN].copy_from_slice(&1_000_000u64.to_be_bytes());
        let job = in_sa.prepare_open(&mut forged).unwrap();
        let opened = job.open();
        assert_eq!(opened.plaintext(), None);
        assert_eq!(in_sa.accept(&opened), Err(Rejection::Authentication));
        assert_eq!((in_sa.packets(), in_sa.window.highest()), (0, 0));
        let opened = in_sa.prepare_open(&mut genuine).unwrap().open();
        assert_eq!(in_sa.accept(&opened), Ok(()));
        assert_eq!(opened.plaintext(), Some(&b"genuine"[..]));
    }

    /// Two copies of one packet, both past the early check and both
    /// opened (on two workers) before either is accepted: only one is.
    #[test]
    fn attack_replay_opened_twice_is_accepted_once() {
        let (mut out_sa, mut in_sa) = pair(Suite::Aes256Gcm);
        let mut packet = Vec::new();
        out_sa.seal(b"once", &mut packet).unwrap();
        let first = in_sa.prepare_open(&mut packet.clone()).unwrap().open();
        let second = in_sa.prepare_open(&mut packet).unwrap().open();
        assert_eq!(in_sa.accept(&first), Ok(()));
        assert_eq!(in_sa.accept(&second), Err(Rejection::Replayed(1)));
        assert_eq!(in_sa.packets(), 1);
    }

    /// A packet opened under one SA is never accepted by another, even with
    /// the same SPI and keys (an SA that replaced it after a rekey or
    /// teardown): its replay window never saw the first one's packets.
    #[test]
    fn attack_packet_opened_under_a_replaced_sa_is_refused() {
        let (mut out_sa, old) = pair(Suite::Aes256Gcm);
        let (_, mut new) = pair(Suite::Aes256Gcm);
        let mut packet = Vec::new();
        out_sa.seal(b"old", &mut packet).unwrap();
        let opened = old.prepare_open(&mut packet).unwrap().open();
        assert!(opened.plaintext().is_some());
        drop(old);
        assert_eq!(new.accept(&opened), Err(Rejection::UnknownSpi(0x1000)));
        assert_eq!(new.packets(), 0);
    }
}
