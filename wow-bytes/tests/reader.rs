//! The reader against the big-endian encodings it reads, and its errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use wow_bytes::{Reader, Truncated};

proptest! {
    /// Integers written big-endian read back, in order, and the reader
    /// ends exactly at the end.
    #[test]
    fn integers_round_trip(a: u8, b: u16, c: u32, d: u64, tail in proptest::collection::vec(any::<u8>(), 0..8)) {
        let mut buf = vec![a];
        buf.extend(b.to_be_bytes());
        buf.extend(c.to_be_bytes());
        buf.extend(d.to_be_bytes());
        buf.extend(&tail);
        let mut r = Reader::new(&buf);
        prop_assert_eq!(r.u8().unwrap(), a);
        prop_assert_eq!(r.u16().unwrap(), b);
        prop_assert_eq!(r.u32().unwrap(), c);
        prop_assert_eq!(r.u64().unwrap(), d);
        prop_assert_eq!(r.position(), 15);
        prop_assert_eq!(r.rest(), &tail[..]);
        prop_assert_eq!(r.take(tail.len()).unwrap(), &tail[..]);
        prop_assert!(r.is_empty());
    }

    /// Any read past the end is Truncated, says where and how short, and
    /// consumes nothing, whatever the buffer and the request.
    #[test]
    fn short_reads_are_typed_and_consume_nothing(
        buf in proptest::collection::vec(any::<u8>(), 0..32),
        skip in 0usize..32,
        extra in 1usize..usize::MAX / 2,
    ) {
        let mut r = Reader::new(&buf);
        let skip = skip.min(buf.len());
        r.take(skip).unwrap();
        let left = buf.len() - skip;
        let err = r.take(left + extra).unwrap_err();
        prop_assert_eq!(err, Truncated { offset: skip, needed: left + extra, available: left });
        prop_assert_eq!(r.position(), skip);
        prop_assert_eq!(r.remaining(), left);
    }
}

#[test]
fn a_request_that_overflows_usize_is_truncated_not_a_panic() {
    let mut r = Reader::new(&[1, 2, 3]);
    r.u8().unwrap();
    assert_eq!(
        r.take(usize::MAX),
        Err(Truncated {
            offset: 1,
            needed: usize::MAX,
            available: 2
        })
    );
    assert_eq!(r.array::<8>().unwrap_err().needed, 8);
    assert_eq!(r.rest(), &[2, 3]);
}
