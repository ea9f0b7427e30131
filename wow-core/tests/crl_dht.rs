//! CRLs through the overlay ([`wow_core::crl_dht`]): the CA-signed
//! manifest in its wire format, which manifests a fetcher believes and
//! which CRL wins, chunk retries, and the CA node's answers. The chunk
//! format itself is overlay-core's `chunked` (tested there).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use overlay_core::chunked;
use overlay_core::wire::MAX_VALUE_LEN;
use proptest::prelude::*;
use wow_core::crl_dht::{
    CHUNK_RETRIES, ChunkOutcome, Fetcher, MANIFEST_LABEL, MAX_CRL_LEN, Manifest, ManifestError,
    Message, Published, sign_manifest, verify_manifest,
};

fn ca() -> ipsec_ca::CaIdentity {
    let now = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
    ipsec_ca::CaIdentity::create_root(
        now,
        ipsec_ca::KeyType::EcdsaP256,
        "crl_dht test CA",
        std::time::Duration::from_secs(30 * 86_400),
    )
    .unwrap()
}

fn hex(bytes: &[u8]) -> String {
    ipsec_ca::state::hex_encode(bytes)
}

/// The manifest body and chunk keys as nodes already exchange them
/// (taken from wow-core's own implementation before it moved to
/// overlay-core's `chunked`): a change here splits the network.
#[test]
fn the_wire_format_is_unchanged() {
    let envelope: Vec<u8> = (0..2500u32).map(|i| (i * 7 % 251) as u8).collect();
    let (m, chunks) = Manifest::split(0x0102_0304_0506_0708, &envelope).unwrap();
    assert_eq!(chunks.len(), 3);
    assert_eq!(
        hex(&m.to_body()),
        "020102030405060708000009c4646db9abafe4f1ece93f8bc80f98968cc8fa443df7d4de5457ad3b73c85\
         eb3373f452edf0d94e4148fa0298e8116fc6fd69df6f4bfac2cbfa023e1ecedaa26f1256b5dbc47037626\
         ea39c187a3e15d70"
    );
    assert_eq!(
        hex(&m.chunk_suffix(2)),
        "646db9abafe4f1ece93f8bc80f98968c0002"
    );
    assert_eq!(MANIFEST_LABEL, b"wow/crl-manifest");
    assert_eq!(MAX_CRL_LEN, 48 * 1024);
}

proptest! {
    /// Any envelope the CA publishes comes back whole through a fetcher,
    /// whatever order its chunks arrive in.
    #[test]
    fn envelopes_come_back_in_any_order(
        envelope in proptest::collection::vec(any::<u8>(), 1..9000),
        seed in any::<u64>(),
    ) {
        let ca = ca();
        let verifier = ipsec_ca::Verifier::new(ca.cert_der()).unwrap();
        let p = Published::new(&ca, 1, envelope.clone()).unwrap();
        let mut f = Fetcher::default();
        let n = f.offer_manifests(&verifier, 0, [&p.signed[..]]).unwrap().chunks();
        for k in 0..n {
            let i = ((u64::from(k) + seed) % u64::from(n)) as u16;
            let outcome = f.offer_chunk(1, i, [p.chunk(i).unwrap()]);
            if k + 1 < n {
                prop_assert_eq!(outcome, ChunkOutcome::Stored);
            } else {
                prop_assert_eq!(&outcome, &ChunkOutcome::Complete(envelope.clone()));
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let verifier = ipsec_ca::Verifier::new(ca().cert_der()).unwrap();
        prop_assert!(verify_manifest(&verifier, &bytes).is_err());
        if let Some(m) = Message::parse(&bytes) {
            prop_assert_eq!(&m.to_bytes()[..], &bytes[..]);
        }
    }
}

#[test]
fn the_largest_signed_manifest_fits_one_dht_value() {
    let envelope = vec![1u8; MAX_CRL_LEN];
    let p = Published::new(&ca(), u64::MAX, envelope).unwrap();
    assert!(p.signed.len() <= MAX_VALUE_LEN, "{} bytes", p.signed.len());
    assert_eq!(
        Published::new(&ca(), 1, vec![0; MAX_CRL_LEN + 1]).map(|_| ()),
        Err(ManifestError::Chunks(chunked::ManifestError::Size(
            MAX_CRL_LEN + 1
        )))
    );
}

/// Only the CA's signature over a well-formed body makes a manifest.
#[test]
fn manifests_need_the_ca_signature_and_a_good_body() {
    let ca = ca();
    let verifier = ipsec_ca::Verifier::new(ca.cert_der()).unwrap();
    let (m, _) = Manifest::split(3, &[7u8; 2500]).unwrap();
    let signed = sign_manifest(&m, &ca).unwrap();
    assert_eq!(verify_manifest(&verifier, &signed), Ok(m.clone()));
    // Unsigned, signed by another CA, or the CA's statement of another kind.
    let other = ipsec_ca::CaIdentity::create_root(
        std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000),
        ipsec_ca::KeyType::Ed25519,
        "crl_dht test CA",
        std::time::Duration::from_secs(30 * 86_400),
    )
    .unwrap();
    for bad in [
        m.to_body(),
        sign_manifest(&m, &other).unwrap(),
        ca.sign_statement(b"wow/other", &m.to_body()).unwrap(),
    ] {
        assert_eq!(
            verify_manifest(&verifier, &bad),
            Err(ManifestError::Signature)
        );
    }
    // Signed, but four chunk digests for 2500 bytes.
    let mut body = m.to_body();
    body.extend_from_slice(&[0; chunked::CHUNK_DIGEST_LEN]);
    let signed = ca.sign_statement(MANIFEST_LABEL, &body).unwrap();
    assert!(matches!(
        verify_manifest(&verifier, &signed),
        Err(ManifestError::Chunks(
            chunked::ManifestError::Inconsistent { .. }
        ))
    ));
}

#[test]
fn the_fetcher_takes_the_highest_signed_number_and_skips_bad_chunks() {
    let ca = ca();
    let verifier = ipsec_ca::Verifier::new(ca.cert_der()).unwrap();
    let envelope = |n: u8| -> Vec<u8> { (0..2500u32).map(|i| (i as u8) ^ n).collect() };
    let p3 = Published::new(&ca, 3, envelope(3)).unwrap();
    let p5 = Published::new(&ca, 5, envelope(5)).unwrap();
    let p4 = Published::new(&ca, 4, envelope(4)).unwrap();
    let mut unsigned = p5.clone();
    unsigned.manifest.number = 9;
    unsigned.signed = unsigned.manifest.to_body();

    let mut f = Fetcher::default();
    // Nothing above the loaded number.
    assert!(f.offer_manifests(&verifier, 5, [&p3.signed[..]]).is_none());
    // The highest signed one wins, in any order; unsigned ones are ignored.
    let values = [&unsigned.signed[..], &p3.signed, &p5.signed, &p4.signed];
    assert_eq!(
        f.offer_manifests(&verifier, 2, values).map(|m| m.number),
        Some(5)
    );
    assert!(f.offer_manifests(&verifier, 2, [&p4.signed[..]]).is_none());
    assert_eq!(f.missing(), vec![0, 1, 2]);

    // Chunks of another CRL, or bad ones: skipped; retried a few times.
    let good = |i: u16| p5.chunk(i).unwrap();
    assert_eq!(
        f.offer_chunk(4, 0, [p4.chunk(0).unwrap()]),
        ChunkOutcome::Ignored
    );
    let wrong = p3.chunk(1).unwrap();
    for _ in 0..CHUNK_RETRIES {
        assert_eq!(f.offer_chunk(5, 1, [wrong]), ChunkOutcome::Bad(true));
    }
    assert_eq!(f.offer_chunk(5, 1, [wrong]), ChunkOutcome::Bad(false));
    assert_eq!(f.offer_chunk(5, 0, [good(0)]), ChunkOutcome::Stored);
    assert_eq!(f.offer_chunk(5, 0, [good(0)]), ChunkOutcome::Ignored);
    // Past the last chunk: nothing to take.
    assert_eq!(f.offer_chunk(5, 3, [good(2)]), ChunkOutcome::Ignored);
    // A bad copy next to a good one does not matter.
    assert_eq!(f.offer_chunk(5, 1, [wrong, good(1)]), ChunkOutcome::Stored);
    assert_eq!(f.missing(), vec![2]);
    assert_eq!(
        f.offer_chunk(5, 2, [good(2)]),
        ChunkOutcome::Complete(envelope(5))
    );
    // Assembled once: not again, nor anything older.
    assert!(
        f.offer_manifests(&verifier, 0, [&p5.signed[..], &p4.signed])
            .is_none()
    );
    assert!(f.current().is_none());
}

#[test]
fn messages_answer_requests() {
    let envelope: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
    let p = Published::new(&ca(), 9, envelope.clone()).unwrap();
    // The same, signed elsewhere; not for another envelope.
    let q = Published::from_signed(p.signed.clone(), envelope.clone()).unwrap();
    assert_eq!(q.manifest, p.manifest);
    assert!(Published::from_signed(p.signed.clone(), envelope[1..].to_vec()).is_err());
    assert!(Published::from_signed(p.manifest.to_body(), envelope.clone()).is_err());
    let answer = p.answer(&Message::ManifestRequest).unwrap();
    assert_eq!(Message::parse(&answer), Some(Message::Manifest(&p.signed)));
    let answer = p
        .answer(&Message::ChunkRequest {
            number: 9,
            index: 2,
        })
        .unwrap();
    assert_eq!(
        Message::parse(&answer),
        Some(Message::Chunk {
            number: 9,
            index: 2,
            bytes: &envelope[2048..]
        })
    );
    assert_eq!(
        p.answer(&Message::ChunkRequest {
            number: 8,
            index: 0
        }),
        None
    );
    assert_eq!(
        p.answer(&Message::ChunkRequest {
            number: 9,
            index: 3
        }),
        None
    );
    assert_eq!(Message::parse(&[1, 0]), None);
    assert_eq!(Message::parse(&[2, 0, 0]), None);
    assert_eq!(Message::parse(&[3]), None);
}
