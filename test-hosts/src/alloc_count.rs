//! Allocation counting per thread, for `no_alloc` tests.
//!
//! [`CountingAlloc`] wraps the system allocator and counts, for the thread
//! that calls it, every allocation, reallocation and deallocation in
//! thread-local counters. A [`Region`] reads the counters of the thread that
//! made it, so what other threads of the test process allocate meanwhile
//! (other tests, the test harness) is never counted.
//!
//! ```rust,standalone_crate
//! use wow_test_hosts::alloc_count::{CountingAlloc, Region};
//!
//! #[global_allocator]
//! static GLOBAL: CountingAlloc = CountingAlloc;
//!
//! fn main() {
//!     let numbers = vec![3u64, 1, 2];
//!     let region = Region::new();
//!     let sum: u64 = numbers.iter().sum();
//!     let stats = region.change();
//!     assert_eq!(stats.allocations, 0, "{stats:?}");
//!
//!     let region = Region::new();
//!     let copy = std::hint::black_box(numbers.clone());
//!     assert_eq!(region.change().allocations, 1);
//!     assert_eq!((sum, copy.len()), (6, 3));
//! }
//! ```
// The one place of the workspace with unsafe code: a `GlobalAlloc` can only
// be written with it. Every method forwards to `System` unchanged.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::marker::PhantomData;

/// The counters of one thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Calls to `alloc` and `alloc_zeroed`.
    pub allocations: u64,
    /// Calls to `realloc`.
    pub reallocations: u64,
    /// Calls to `dealloc`.
    pub deallocations: u64,
    /// Bytes asked for by `alloc`, `alloc_zeroed` and growing `realloc`s.
    pub bytes_allocated: u64,
}

impl Stats {
    fn since(self, before: Stats) -> Stats {
        Stats {
            allocations: self.allocations - before.allocations,
            reallocations: self.reallocations - before.reallocations,
            deallocations: self.deallocations - before.deallocations,
            bytes_allocated: self.bytes_allocated - before.bytes_allocated,
        }
    }
}

thread_local! {
    // `const` initialised and without a destructor: reading or writing them
    // never allocates and works at any point of the thread's life.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    static REALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    static DEALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    static BYTES: Cell<u64> = const { Cell::new(0) };
}

fn bump(counter: &'static std::thread::LocalKey<Cell<u64>>, by: u64) {
    let _ = counter.try_with(|c| c.set(c.get().wrapping_add(by)));
}

fn read(counter: &'static std::thread::LocalKey<Cell<u64>>) -> u64 {
    counter.try_with(Cell::get).unwrap_or(0)
}

fn current() -> Stats {
    Stats {
        allocations: read(&ALLOCATIONS),
        reallocations: read(&REALLOCATIONS),
        deallocations: read(&DEALLOCATIONS),
        bytes_allocated: read(&BYTES),
    }
}

/// The system allocator, counting per thread. Install it in a test binary
/// with `#[global_allocator] static GLOBAL: CountingAlloc = CountingAlloc;`.
pub struct CountingAlloc;

// SAFETY: every method forwards its arguments unchanged to `System`, which
// upholds the `GlobalAlloc` contract; the counting only touches
// thread-local `Cell`s, which neither allocate nor unwind.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump(&ALLOCATIONS, 1);
        bump(&BYTES, layout.size() as u64);
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump(&ALLOCATIONS, 1);
        bump(&BYTES, layout.size() as u64);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        bump(&DEALLOCATIONS, 1);
        // SAFETY: the caller's contract for `dealloc` is passed on unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump(&REALLOCATIONS, 1);
        bump(&BYTES, new_size.saturating_sub(layout.size()) as u64);
        // SAFETY: the caller's contract for `realloc` is passed on unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// A measured region of the current thread: the counters' change between
/// [`Region::new`] and [`Region::change`], this thread's alone.
///
/// Not `Send`: it must be read on the thread that made it.
#[derive(Debug)]
pub struct Region {
    start: Stats,
    _this_thread: PhantomData<*const ()>,
}

impl Region {
    /// Starts a region on the current thread.
    ///
    /// # Panics
    ///
    /// When [`CountingAlloc`] is not the global allocator of this binary:
    /// the counters would never move, and a test reading them could not
    /// fail.
    pub fn new() -> Self {
        let before = read(&ALLOCATIONS);
        drop(std::hint::black_box(Box::new(0u64)));
        assert!(
            read(&ALLOCATIONS) > before,
            "wow_test_hosts::alloc_count::CountingAlloc is not the global allocator \
             (add `#[global_allocator] static GLOBAL: CountingAlloc = CountingAlloc;`)"
        );
        Region {
            start: current(),
            _this_thread: PhantomData,
        }
    }

    /// What this thread allocated since the region started.
    pub fn change(&self) -> Stats {
        current().since(self.start)
    }
}

impl Default for Region {
    fn default() -> Self {
        Self::new()
    }
}
