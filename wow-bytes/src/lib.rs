//! One bounds-checked reader for the workspace's hand-written wire formats
//! (`overlay-core`'s messages, `nat-traversal`'s signalling): big-endian
//! integers, fixed arrays and slices taken from the front of a buffer,
//! where running out of bytes is a typed [`Truncated`] error (with the
//! offset, what was needed and what was left) and never a panic. Each
//! format keeps its own field encodings (addresses, strings, enums) as an
//! extension on [`Reader`] and converts [`Truncated`] into its own error.
//!
//! ```
//! use wow_bytes::{Reader, Truncated};
//!
//! let mut r = Reader::new(&[0x01, 0x02, 0x03, 0xff]);
//! assert_eq!(r.u16()?, 0x0102);
//! assert_eq!(r.u8()?, 3);
//! assert_eq!(r.position(), 3);
//! assert_eq!(
//!     r.u32(),
//!     Err(Truncated { offset: 3, needed: 4, available: 1 })
//! );
//! // A failed read consumes nothing.
//! assert_eq!(r.rest(), &[0xff]);
//! # Ok::<(), Truncated>(())
//! ```
#![forbid(unsafe_code)]

/// A read ran past the end of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("truncated at byte {offset}: {needed} needed, {available} left")]
pub struct Truncated {
    /// Where the read started.
    pub offset: usize,
    /// How many bytes it needed.
    pub needed: usize,
    /// How many were left.
    pub available: usize,
}

/// Reads from the front of a byte slice; see the [crate] docs.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    #[inline]
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    #[inline]
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not yet consumed.
    #[inline]
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Whether every byte has been consumed.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The bytes not yet consumed (the reader does not move).
    #[inline]
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// Takes the next `n` bytes; on error nothing is consumed.
    #[inline]
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Truncated> {
        match self.pos.checked_add(n).filter(|&end| end <= self.buf.len()) {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(Truncated {
                offset: self.pos,
                needed: n,
                available: self.remaining(),
            }),
        }
    }

    /// Takes the next `N` bytes as an array.
    #[inline]
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], Truncated> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    /// Takes one byte.
    #[inline]
    pub fn u8(&mut self) -> Result<u8, Truncated> {
        Ok(self.array::<1>()?[0])
    }

    /// Takes a big-endian `u16`.
    #[inline]
    pub fn u16(&mut self) -> Result<u16, Truncated> {
        self.array().map(u16::from_be_bytes)
    }

    /// Takes a big-endian `u32`.
    #[inline]
    pub fn u32(&mut self) -> Result<u32, Truncated> {
        self.array().map(u32::from_be_bytes)
    }

    /// Takes a big-endian `u64`.
    #[inline]
    pub fn u64(&mut self) -> Result<u64, Truncated> {
        self.array().map(u64::from_be_bytes)
    }
}
