//! A bounded free list of data buffers, so that the data path reuses
//! memory instead of allocating per packet.
//!
//! Every buffer the pool hands out has room for [`MAX_DATA_LEN`] bytes, so
//! filling it with any valid data payload never reallocates. The pool keeps
//! at most [`limit`](BufferPool::limit) free buffers and drops the rest, so
//! it cannot grow without bound; a buffer smaller than [`MAX_DATA_LEN`] is
//! never kept.
//!
//! ```
//! use overlay_core::BufferPool;
//! use overlay_core::wire::MAX_DATA_LEN;
//!
//! let mut pool = BufferPool::new(2);
//! let buf = pool.copy_of(b"packet");
//! assert_eq!(buf, b"packet");
//! assert!(buf.capacity() >= MAX_DATA_LEN);
//! pool.give(buf);
//! assert_eq!(pool.len(), 1);
//! // The same memory comes back, cleared.
//! assert!(pool.take().is_empty());
//! assert_eq!(pool.len(), 0);
//! ```

use crate::wire::MAX_DATA_LEN;

/// A bounded free list of `Vec<u8>` buffers with capacity for
/// [`MAX_DATA_LEN`] bytes. Every buffer it hands out has room for
/// [`MAX_DATA_LEN`] bytes; it keeps at most [`limit`](BufferPool::limit)
/// free buffers and drops the rest.
///
/// ```
/// use overlay_core::BufferPool;
/// let mut pool = BufferPool::new(2);
/// let buf = pool.copy_of(b"packet");
/// pool.give(buf);
/// assert_eq!(pool.len(), 1);
/// ```
#[derive(Debug)]
pub struct BufferPool {
    free: Vec<Vec<u8>>,
    limit: usize,
}

impl BufferPool {
    /// An empty pool that keeps at most `limit` free buffers. Nothing is
    /// allocated until the first buffer is given back.
    pub const fn new(limit: usize) -> BufferPool {
        BufferPool {
            free: Vec::new(),
            limit,
        }
    }

    /// Most free buffers kept.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Free buffers held now.
    pub fn len(&self) -> usize {
        self.free.len()
    }

    /// Whether no free buffer is held.
    pub fn is_empty(&self) -> bool {
        self.free.is_empty()
    }

    /// Bytes of buffer memory held.
    pub fn heap_bytes(&self) -> usize {
        self.free.iter().map(Vec::capacity).sum::<usize>()
            + self.free.capacity() * core::mem::size_of::<Vec<u8>>()
    }

    /// An empty buffer with capacity for at least [`MAX_DATA_LEN`] bytes:
    /// a free one, or a new allocation when the pool is empty.
    pub fn take(&mut self) -> Vec<u8> {
        match self.free.pop() {
            Some(mut buf) => {
                buf.clear();
                buf
            }
            None => Vec::with_capacity(MAX_DATA_LEN),
        }
    }

    /// A buffer from [`take`](Self::take) holding a copy of `bytes`. It
    /// allocates only when the pool is empty (or `bytes` is longer than
    /// [`MAX_DATA_LEN`]).
    pub fn copy_of(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut buf = self.take();
        buf.extend_from_slice(bytes);
        buf
    }

    /// Returns a buffer for reuse. It is dropped instead when the pool
    /// already holds [`limit`](Self::limit) buffers or when its capacity is
    /// below [`MAX_DATA_LEN`] (so that a buffer taken from the pool never
    /// has to grow).
    pub fn give(&mut self, buf: Vec<u8>) {
        if buf.capacity() < MAX_DATA_LEN || self.free.len() >= self.limit {
            return;
        }
        if self.free.capacity() == 0 {
            // One allocation for the list itself, on first use.
            self.free.reserve_exact(self.limit);
        }
        self.free.push(buf);
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn bounded_and_reuses_memory() {
        let mut pool = BufferPool::new(2);
        let a = pool.copy_of(&[1; 100]);
        let a_ptr = a.as_ptr();
        pool.give(a);
        let b = pool.copy_of(&[2; 10]);
        assert_eq!(b.as_ptr(), a_ptr);
        assert_eq!(b, [2; 10]);
        pool.give(b);
        pool.give(Vec::with_capacity(MAX_DATA_LEN));
        pool.give(Vec::with_capacity(MAX_DATA_LEN));
        assert_eq!(pool.len(), 2);
        // Too small to hold any payload without growing: not kept.
        let mut small = BufferPool::new(4);
        small.give(vec![0; 16]);
        assert!(small.is_empty());
        assert_eq!(small.heap_bytes(), 0);
    }
}
