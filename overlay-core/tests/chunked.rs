//! Chunked large values (feature `chunked`): round trips, and chunks that
//! do not match the manifest are refused.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use overlay_core::chunked::{Assembly, CHUNK_LEN, MAX_LEN, Manifest, ManifestError};
use proptest::prelude::*;

/// A replica (or another writer) answers a chunk key with wrong bytes: a
/// flipped bit, another chunk of the same value, a chunk of another value,
/// a truncated or extended chunk. None is taken, the assembly goes on, and
/// the value comes out intact once the right chunks arrive.
#[test]
fn attack_chunk_substitution() {
    let value: Vec<u8> = (0..3 * CHUNK_LEN + 100)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let (manifest, chunks) = Manifest::split(5, &value).unwrap();
    let other: Vec<u8> = value.iter().map(|b| b ^ 1).collect();
    let (_, other_chunks) = Manifest::split(5, &other).unwrap();
    let mut assembly = Assembly::new(Manifest::parse_body(&manifest.to_body()).unwrap());
    for (i, good) in chunks.iter().enumerate() {
        let mut flipped = good.to_vec();
        flipped[good.len() / 2] ^= 0x10;
        let neighbour = chunks[(i + 1) % chunks.len()];
        let forgeries: Vec<Vec<u8>> = vec![
            flipped,
            neighbour.to_vec(),
            other_chunks[i].to_vec(),
            good[..good.len() - 1].to_vec(),
            [*good, &[0u8][..]].concat(),
            Vec::new(),
        ];
        for forged in forgeries {
            assert!(!assembly.insert(i, &forged), "chunk {i}: forgery taken");
        }
        assert!(!assembly.insert(chunks.len() + i, good), "out of range");
        assert_eq!(assembly.finish(), None);
    }
    assert_eq!(assembly.missing().len(), chunks.len());
    for (i, good) in chunks.iter().enumerate() {
        assert!(assembly.insert(i, good));
    }
    assert_eq!(assembly.finish().unwrap(), value);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Split, encode, parse and reassemble in any order: the same value.
    #[test]
    fn round_trip(
        value in proptest::collection::vec(any::<u8>(), 1..=MAX_LEN),
        number in any::<u64>(),
        seed in any::<u64>(),
    ) {
        let (manifest, chunks) = Manifest::split(number, &value).unwrap();
        prop_assert_eq!(chunks.concat(), value.clone());
        let parsed = Manifest::parse_body(&manifest.to_body()).unwrap();
        prop_assert_eq!(&parsed, &manifest);
        let mut order: Vec<usize> = (0..chunks.len()).collect();
        // A cheap shuffle driven by the seed.
        let mut s = seed | 1;
        for i in (1..order.len()).rev() {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            order.swap(i, (s % (i as u64 + 1)) as usize);
        }
        let mut assembly = Assembly::new(parsed);
        for i in order {
            prop_assert!(assembly.insert(i, chunks[i]));
        }
        prop_assert_eq!(assembly.finish(), Some(value));
    }

    /// Parsing arbitrary bytes never panics, and what parses re-encodes to
    /// the same bytes.
    #[test]
    fn parse_arbitrary(bytes in proptest::collection::vec(any::<u8>(), 0..1200)) {
        match Manifest::parse_body(&bytes) {
            Ok(m) => prop_assert_eq!(m.to_body(), bytes),
            Err(e) => {
                let known = matches!(
                    e,
                    ManifestError::NotManifest
                        | ManifestError::Version(_)
                        | ManifestError::Inconsistent { .. }
                );
                prop_assert!(known);
            }
        }
    }
}
