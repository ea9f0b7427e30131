//! Round trips `parse(emit(x)) == x` for every wire repr, and parsers never
//! panic on arbitrary bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};

use nat_traversal::wire::channel_data;
use nat_traversal::wire::stun::{self, Attribute, Class, Method, Repr, TransactionId};
use nat_traversal::wire::{Candidate, CandidateKind, ChannelDataRepr, Offer, SignalRepr};
use proptest::prelude::*;

fn addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::new(IpAddr::from(ip), p)),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::new(IpAddr::from(ip), p)),
    ]
}

fn attribute() -> impl Strategy<Value = Attribute> {
    prop_oneof![
        addr().prop_map(Attribute::MappedAddress),
        addr().prop_map(Attribute::XorMappedAddress),
        addr().prop_map(Attribute::ResponseOrigin),
        addr().prop_map(Attribute::OtherAddress),
        addr().prop_map(Attribute::SourceAddress),
        addr().prop_map(Attribute::ChangedAddress),
        "[a-zA-Z0-9:+/]{0,40}".prop_map(Attribute::Username),
        "\\PC{0,20}".prop_map(Attribute::Software),
        (300u16..700, "[ -~]{0,30}")
            .prop_map(|(code, reason)| Attribute::ErrorCode { code, reason }),
        proptest::collection::vec(any::<u16>(), 0..6).prop_map(Attribute::UnknownAttributes),
        (any::<bool>(), any::<bool>()).prop_map(|(change_ip, change_port)| {
            Attribute::ChangeRequest {
                change_ip,
                change_port,
            }
        }),
        any::<u32>().prop_map(Attribute::Priority),
        Just(Attribute::UseCandidate),
        addr().prop_map(Attribute::XorPeerAddress),
        addr().prop_map(Attribute::XorRelayedAddress),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Attribute::Data),
        any::<u32>().prop_map(Attribute::Lifetime),
        any::<u16>().prop_map(Attribute::ChannelNumber),
        any::<u8>().prop_map(Attribute::RequestedTransport),
        "[a-z.]{0,20}".prop_map(Attribute::Realm),
        "[a-zA-Z0-9]{0,30}".prop_map(Attribute::Nonce),
        // Unknown types: avoid the codes we decode.
        (
            0xc000u16..0xffff,
            proptest::collection::vec(any::<u8>(), 0..24)
        )
            .prop_map(|(kind, value)| Attribute::Unknown { kind, value }),
    ]
}

fn stun_repr() -> impl Strategy<Value = Repr> {
    (
        prop_oneof![
            Just(Class::Request),
            Just(Class::Indication),
            Just(Class::Success),
            Just(Class::Error)
        ],
        0u16..0x1000,
        any::<[u8; 12]>(),
        prop_oneof![Just(stun::MAGIC_COOKIE), any::<u32>()],
        proptest::collection::vec(attribute(), 0..8),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(class, method, id, magic_cookie, attributes, message_integrity, fingerprint)| Repr {
                class,
                method: Method(method),
                transaction_id: TransactionId(id),
                magic_cookie,
                attributes,
                message_integrity,
                fingerprint,
            },
        )
}

fn candidate() -> impl Strategy<Value = Candidate> {
    (
        prop_oneof![
            Just(CandidateKind::Host),
            Just(CandidateKind::PeerReflexive),
            Just(CandidateKind::ServerReflexive),
            Just(CandidateKind::Relayed)
        ],
        addr(),
        any::<u32>(),
    )
        .prop_map(|(kind, address, priority)| Candidate {
            kind,
            address,
            priority,
        })
}

fn signal_repr() -> impl Strategy<Value = SignalRepr> {
    let name = "[a-z0-9-]{0,20}";
    prop_oneof![
        name.prop_map(|name| SignalRepr::Register { name }),
        name.prop_map(|peer| SignalRepr::UnknownPeer { peer }),
        (
            name,
            name,
            name,
            proptest::collection::vec(any::<u8>(), 0..40),
            proptest::collection::vec(candidate(), 0..8)
        )
            .prop_map(|(from, to, ufrag, password, candidates)| {
                SignalRepr::Offer(Offer {
                    from,
                    to,
                    ufrag,
                    password,
                    candidates,
                })
            }),
        (name, proptest::collection::vec(any::<u8>(), 0..100))
            .prop_map(|(peer, payload)| SignalRepr::Relay { peer, payload }),
        (
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..100),
            any::<[u8; 16]>()
        )
            .prop_map(|(sequence, payload, tag)| SignalRepr::Data {
                sequence,
                payload,
                tag
            }),
    ]
}

proptest! {
    #[test]
    fn stun_round_trip(repr in stun_repr(), key in proptest::collection::vec(any::<u8>(), 0..32)) {
        let bytes = repr.to_bytes(&key).unwrap();
        prop_assert_eq!(bytes.len(), repr.buffer_len());
        let packet = stun::Packet::new_checked(&bytes[..]).unwrap();
        prop_assert_eq!(&Repr::parse(&packet).unwrap(), &repr);
        if repr.message_integrity {
            packet.verify_integrity(&key).unwrap();
        }
    }

    #[test]
    fn stun_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(repr) = Repr::parse_bytes(&bytes) {
            // What parses re-emits and parses to the same value.
            let again = repr.to_bytes(b"k").unwrap();
            prop_assert_eq!(Repr::parse_bytes(&again).unwrap(), repr);
        }
        if let Ok(p) = stun::Packet::new_checked(&bytes[..]) {
            let _ = p.verify_integrity(b"k");
        }
    }

    #[test]
    fn signal_round_trip(repr in signal_repr()) {
        let bytes = repr.to_bytes().unwrap();
        prop_assert_eq!(bytes.len(), repr.buffer_len());
        prop_assert_eq!(SignalRepr::parse_bytes(&bytes).unwrap(), repr);
    }

    #[test]
    fn signal_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(repr) = SignalRepr::parse_bytes(&bytes) {
            let again = repr.to_bytes().unwrap();
            prop_assert_eq!(SignalRepr::parse_bytes(&again).unwrap(), repr);
        }
    }

    #[test]
    fn channel_data_round_trip(
        channel_number in channel_data::MIN_CHANNEL..=channel_data::MAX_CHANNEL,
        payload in proptest::collection::vec(any::<u8>(), 0..300),
        padding in 0usize..4,
    ) {
        let repr = ChannelDataRepr { channel_number, payload: &payload };
        let mut buf = vec![0xa5; repr.buffer_len() + padding];
        let n = repr.emit(&mut channel_data::Packet::new_unchecked(&mut buf[..])).unwrap();
        prop_assert_eq!(n, repr.buffer_len());
        // Padding after the message is accepted (RFC 8656 §12.5).
        prop_assert_eq!(ChannelDataRepr::parse_bytes(&buf).unwrap(), repr);
        prop_assert_eq!(ChannelDataRepr::parse_bytes(&buf[..n]).unwrap(), repr);
    }

    #[test]
    fn channel_data_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(repr) = ChannelDataRepr::parse_bytes(&bytes) {
            let mut again = vec![0; repr.buffer_len()];
            repr.emit(&mut channel_data::Packet::new_unchecked(&mut again[..])).unwrap();
            prop_assert_eq!(&again[..], &bytes[..repr.buffer_len()]);
        }
    }
}
