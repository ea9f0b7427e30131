//! Property tests: wire round trips, SA seal/open, the replay window
//! against a model, and random operation sequences on an endpoint pair.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use ipsec_sa::replay::ReplayWindow;
use ipsec_sa::wire::{AuthPayloadRepr, HandshakeRepr, Packet, PacketRepr};
use ipsec_sa::{InboundSa, OutboundSa, REPLAY_WINDOW, Rejection, SaKeys, Suite, SuiteSet};
use proptest::prelude::*;

fn suite() -> impl Strategy<Value = Suite> {
    prop_oneof![Just(Suite::Aes256Gcm), Just(Suite::ChaCha20Poly1305)]
}

fn index() -> impl Strategy<Value = u32> {
    256u32..
}

proptest! {
    #[test]
    fn packet_repr_round_trip(spi in index(), seq in any::<u64>(), body in 16usize..2000) {
        let repr = PacketRepr { spi, sequence_number: seq, payload_len: body };
        let mut bytes = vec![0xa5; repr.buffer_len()];
        repr.emit(&mut Packet::new_unchecked(&mut bytes[..]));
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        prop_assert_eq!(PacketRepr::parse(&packet).unwrap(), repr);
    }

    #[test]
    fn handshake_repr_round_trip(
        kind in 0u8..3,
        i in index(),
        r in index(),
        bits in 1u8..4,
        noise in proptest::collection::vec(any::<u8>(), 1..300),
        mac1 in any::<[u8; 16]>(),
        mac2 in any::<[u8; 16]>(),
    ) {
        let offered = SuiteSet::from_bits(bits).unwrap();
        let repr = match kind {
            0 => HandshakeRepr::Init { initiator_index: i, offered, noise: &noise, mac1, mac2 },
            1 => HandshakeRepr::Response { initiator_index: i, responder_index: r, noise: &noise },
            _ => HandshakeRepr::Finish { initiator_index: i, responder_index: r, noise: &noise },
        };
        let mut bytes = Vec::new();
        repr.emit(&mut bytes);
        prop_assert_eq!(bytes.len(), repr.buffer_len());
        prop_assert_eq!(HandshakeRepr::parse(&bytes).unwrap(), repr);
    }

    /// The cookie reply (kind 4): a fixed 66 bytes that round-trip, and
    /// any other length is refused.
    #[test]
    fn cookie_reply_round_trip(
        i in index(),
        nonce in any::<[u8; 24]>(),
        cookie in any::<[u8; 32]>(),
        cut in 0usize..66,
        extra in proptest::collection::vec(any::<u8>(), 1..8),
    ) {
        let repr = HandshakeRepr::CookieReply { initiator_index: i, nonce, cookie };
        let mut bytes = Vec::new();
        repr.emit(&mut bytes);
        prop_assert_eq!(bytes.len(), repr.buffer_len());
        prop_assert_eq!(bytes.len(), ipsec_sa::wire::COOKIE_REPLY_LEN);
        prop_assert_eq!(HandshakeRepr::parse(&bytes).unwrap(), repr);
        prop_assert!(HandshakeRepr::parse(&bytes[..cut]).is_err());
        let mut long = bytes.clone();
        long.extend_from_slice(&extra);
        prop_assert!(HandshakeRepr::parse(&long).is_err());
    }

    #[test]
    fn auth_payload_round_trip(
        suite in suite(),
        index in index(),
        cert in proptest::collection::vec(any::<u8>(), 1..3000),
        sig in proptest::collection::vec(any::<u8>(), 1..128),
    ) {
        let repr = AuthPayloadRepr { suite, index, certificate: &cert, signature: &sig };
        let mut bytes = Vec::new();
        repr.emit(&mut bytes);
        prop_assert_eq!(bytes.len(), repr.buffer_len());
        prop_assert_eq!(AuthPayloadRepr::parse(&bytes).unwrap(), repr);
    }

    #[test]
    fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = HandshakeRepr::parse(&bytes);
        let _ = AuthPayloadRepr::parse(&bytes);
        if let Ok(p) = Packet::new_checked(&bytes[..]) {
            let _ = PacketRepr::parse(&p);
        }
    }

    #[test]
    fn seal_open_round_trip_and_any_flip_fails(
        suite in suite(),
        key in any::<[u8; 32]>(),
        salt in any::<[u8; 4]>(),
        plaintext in proptest::collection::vec(any::<u8>(), 0..1500),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let keys = SaKeys { key, salt };
        let mut out_sa = OutboundSa::new(0x4242, suite, &keys);
        let mut in_sa = InboundSa::new(0x4242, suite, &keys);
        let mut sealed = Vec::new();
        out_sa.seal(&plaintext, &mut sealed).unwrap();
        let mut tampered = sealed.clone();
        let at = flip.index(tampered.len());
        tampered[at] ^= 1 << bit;
        prop_assert!(in_sa.open(&mut tampered).is_err());
        prop_assert_eq!(in_sa.open(&mut sealed).unwrap(), &plaintext[..]);
    }

    /// The split path: prepare_seal + SealJob::seal gives the packet
    /// seal_in_place gives; a tampered packet opened as a job is refused
    /// and moves nothing; deliveries of copies, some inline and some as jobs
    /// accepted in a shuffled order after all were opened, accept each
    /// packet exactly once.
    #[test]
    fn split_path_matches_inline_and_accepts_each_packet_once(
        suite in suite(),
        key in any::<[u8; 32]>(),
        plaintext in proptest::collection::vec(any::<u8>(), 0..1500),
        flip in any::<prop::sample::Index>(),
        deliveries in proptest::collection::vec((0usize..40, any::<bool>()), 1..120),
        order in any::<u64>(),
    ) {
        let keys = SaKeys { key, salt: [9, 8, 7, 6] };
        let mut inline = OutboundSa::new(0x4242, suite, &keys);
        let mut split = OutboundSa::new(0x4242, suite, &keys);
        let mut in_sa = InboundSa::new(0x4242, suite, &keys);
        let mut packets = Vec::new();
        for _ in 0..40 {
            let mut a = vec![0; ipsec_sa::wire::HEADER_LEN];
            a.extend_from_slice(&plaintext);
            let mut b = a.clone();
            inline.seal_in_place(&mut a).unwrap();
            let sealed = split.prepare_seal(&mut b).unwrap().seal().unwrap();
            prop_assert_eq!(&sealed, &a);
            packets.push(sealed);
        }
        let mut tampered = packets[0].clone();
        let at = flip.index(tampered.len());
        tampered[at] ^= 1;
        if let Ok(job) = in_sa.prepare_open(&mut tampered) {
            prop_assert!(in_sa.accept(&job.open()).is_err());
        }
        prop_assert_eq!(in_sa.packets(), 0);
        let delivered: HashSet<usize> = deliveries.iter().map(|(i, _)| *i).collect();
        let mut accepted = vec![0u32; packets.len()];
        let mut opened = Vec::new();
        for (i, as_job) in deliveries {
            let mut copy = packets[i].clone();
            if as_job {
                if let Ok(job) = in_sa.prepare_open(&mut copy) {
                    opened.push((i, job.open()));
                }
            } else if in_sa.open(&mut copy).is_ok() {
                accepted[i] += 1;
            }
        }
        // Accept the jobs' results in a scrambled order.
        let len = opened.len().max(1) as u64;
        opened.rotate_left((order % len) as usize);
        if order % 2 == 1 {
            opened.reverse();
        }
        for (i, o) in &opened {
            if in_sa.accept(o).is_ok() {
                accepted[*i] += 1;
            }
        }
        // All 40 are inside the window: each delivered one once, no other.
        for (i, n) in accepted.iter().enumerate() {
            prop_assert_eq!(*n, u32::from(delivered.contains(&i)), "{:?}", accepted);
        }
        prop_assert_eq!(in_sa.packets(), accepted.iter().map(|n| u64::from(*n)).sum::<u64>());
    }

    #[test]
    fn replay_window_matches_model(seqs in proptest::collection::vec(1u64..6000, 1..400)) {
        let mut window = ReplayWindow::new();
        let mut seen = HashSet::new();
        let mut top = 0u64;
        for seq in seqs {
            let expect = if seq + REPLAY_WINDOW <= top {
                Err(Rejection::OutsideWindow(seq))
            } else if seen.contains(&seq) {
                Err(Rejection::Replayed(seq))
            } else {
                Ok(())
            };
            let got = window.check(seq);
            prop_assert_eq!(got, expect);
            if got.is_ok() {
                window.accept(seq);
                seen.insert(seq);
                top = top.max(seq);
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Send {
        a_to_b: bool,
        len: usize,
    },
    Advance(u64),
    /// Drop the oldest datagram in flight.
    Drop,
    /// Deliver the newest datagram in flight now, out of order.
    Reorder,
    /// Re-deliver a copy of the oldest datagram in flight.
    Duplicate,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<bool>(), 0usize..200).prop_map(|(a_to_b, len)| Op::Send { a_to_b, len }),
        3 => (0u64..3000).prop_map(Op::Advance),
        1 => Just(Op::Drop),
        1 => Just(Op::Reorder),
        1 => Just(Op::Duplicate),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever the network does, each side delivers only packets the other
    /// sent, at most once each.
    #[test]
    fn random_network_delivers_only_sent_packets_once(ops in proptest::collection::vec(op(), 1..80)) {
        let (mut p, _ca) = common::Pair::new();
        let mut counter = 0u32;
        for op in ops {
            match op {
                Op::Send { a_to_b, len } => {
                    counter += 1;
                    let mut data = counter.to_be_bytes().to_vec();
                    data.push(u8::from(a_to_b));
                    data.resize(4 + 1 + len, 0x5a);
                    p.send(a_to_b, &data);
                }
                Op::Advance(ms) => {
                    let until = p.clock.now() + Duration::from_millis(ms);
                    p.run_until(until);
                }
                Op::Drop => {
                    p.in_flight.pop_front();
                }
                Op::Reorder => {
                    if let Some(f) = p.in_flight.pop_back() {
                        p.deliver(f.a_to_b, f.payload);
                    }
                }
                Op::Duplicate => {
                    if let Some(f) = p.in_flight.front() {
                        let (a_to_b, payload) = (f.a_to_b, f.payload.clone());
                        p.deliver(a_to_b, payload);
                    }
                }
            }
        }
        let until = p.clock.now() + Duration::from_secs(30);
        p.run_until(until);
        for (received, from_a) in [(&p.to_b, true), (&p.to_a, false)] {
            let mut ids = HashSet::new();
            for data in received {
                prop_assert_eq!(data[4], u8::from(from_a));
                let id = u32::from_be_bytes(data[..4].try_into().unwrap());
                prop_assert!(id >= 1 && id <= counter);
                prop_assert!(ids.insert(id), "duplicate delivery of {}", id);
            }
        }
    }
}

/// A random SA state blob (see `ipsec_sa::resume`).
fn resume_state() -> impl Strategy<Value = ipsec_sa::resume::State> {
    use ipsec_sa::resume::{InboundState, OutboundState, PeerState, State};
    let keys = (any::<[u8; 32]>(), any::<[u8; 4]>()).prop_map(|(key, salt)| SaKeys { key, salt });
    let outbound = (
        index(),
        suite(),
        keys.clone(),
        any::<u64>(),
        any::<bool>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(spi, suite, keys, seq, used, rekey, expires)| OutboundState {
                spi,
                suite,
                keys,
                sequence_number: seq,
                used,
                rekey_in: Duration::from_millis(rekey.into()),
                expires_in: Duration::from_millis(expires.into()),
            },
        );
    let inbound = (
        index(),
        suite(),
        keys,
        any::<bool>(),
        any::<u32>(),
        any::<bool>(),
        any::<u64>(),
        any::<[u64; 32]>(),
    )
        .prop_map(
            |(spi, suite, keys, initiator, expires, superseded, top, bitmap)| InboundState {
                spi,
                suite,
                keys,
                role: if initiator {
                    ipsec_sa::Role::Initiator
                } else {
                    ipsec_sa::Role::Responder
                },
                expires_in: Duration::from_millis(expires.into()),
                superseded,
                top,
                bitmap,
            },
        );
    let ip = prop_oneof![
        any::<[u8; 4]>().prop_map(std::net::IpAddr::from),
        any::<[u8; 16]>().prop_map(std::net::IpAddr::from),
    ];
    let peer = (
        ip,
        proptest::collection::vec(any::<u8>(), 0..600),
        proptest::option::of(outbound),
        proptest::collection::vec(inbound, 0..=8),
    )
        .prop_map(|(ip, certificate, outbound, inbound)| PeerState {
            ip,
            certificate,
            outbound,
            inbound,
        });
    (any::<u64>(), proptest::collection::vec(peer, 0..5)).prop_map(|(exported_at_ms, peers)| {
        State {
            exported_at_ms,
            peers,
        }
    })
}

proptest! {
    #[test]
    fn resume_state_round_trip(state in resume_state(), sig in proptest::collection::vec(any::<u8>(), 0..100)) {
        use ipsec_sa::resume::State;
        let bytes = state.emit(|_| Some(sig.clone())).unwrap();
        let (parsed, signed, signature) = State::parse(&bytes).unwrap();
        prop_assert_eq!(signature, &sig[..]);
        prop_assert_eq!(signed, &state.emit_unsigned().unwrap()[..]);
        prop_assert_eq!(parsed.emit(|_| Some(sig.clone())).unwrap(), bytes.clone());
        // Any shorter prefix is refused.
        for len in [0, bytes.len() / 2, bytes.len() - 1] {
            prop_assert!(State::parse(&bytes[..len]).is_err());
        }
    }
}
