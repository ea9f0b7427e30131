//! Round trips `parse(emit(x)) == x` for NAT-PMP and PCP messages, and the
//! parsers and the `PortMapper` never panic on arbitrary bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv6Addr};
use std::time::Instant;

use nat_traversal::portmap::wire::{
    PcpMap, PcpOp, PcpOption, PcpRepr, PcpRequest, PcpResponse, PcpResultCode, PmpProtocol,
    PmpRepr, PmpResultCode,
};
use nat_traversal::portmap::{PortMapConfig, PortMapper};
use proptest::prelude::*;

/// Addresses as PCP carries them: IPv4, or IPv6 that is not IPv4-mapped
/// (those decode as IPv4).
fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(|b| {
            let v6 = Ipv6Addr::from(b);
            match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            }
        }),
    ]
}

fn pmp_protocol() -> impl Strategy<Value = PmpProtocol> {
    prop_oneof![Just(PmpProtocol::Udp), Just(PmpProtocol::Tcp)]
}

fn pmp_repr() -> impl Strategy<Value = PmpRepr> {
    prop_oneof![
        Just(PmpRepr::ExternalAddressRequest),
        (pmp_protocol(), any::<u16>(), any::<u16>(), any::<u32>()).prop_map(
            |(protocol, internal_port, suggested_external_port, lifetime)| PmpRepr::MapRequest {
                protocol,
                internal_port,
                suggested_external_port,
                lifetime,
            }
        ),
        (any::<u16>(), any::<u32>(), any::<[u8; 4]>()).prop_map(|(r, epoch, ip)| {
            PmpRepr::ExternalAddressResponse {
                result: PmpResultCode(r),
                epoch,
                external: ip.into(),
            }
        }),
        (
            pmp_protocol(),
            any::<u16>(),
            any::<u32>(),
            any::<u16>(),
            any::<u16>(),
            any::<u32>()
        )
            .prop_map(
                |(protocol, r, epoch, internal_port, external_port, lifetime)| {
                    PmpRepr::MapResponse {
                        protocol,
                        result: PmpResultCode(r),
                        epoch,
                        internal_port,
                        external_port,
                        lifetime,
                    }
                }
            ),
        (128u8..=255, 1u16.., any::<u32>()).prop_map(|(opcode, r, epoch)| {
            PmpRepr::ErrorResponse {
                opcode,
                result: PmpResultCode(r),
                epoch,
            }
        }),
    ]
}

fn pcp_op() -> impl Strategy<Value = PcpOp> {
    prop_oneof![
        Just(PcpOp::Announce),
        (
            any::<[u8; 12]>(),
            any::<u8>(),
            any::<u16>(),
            any::<u16>(),
            ip()
        )
            .prop_map(
                |(nonce, protocol, internal_port, external_port, external_ip)| PcpOp::Map(PcpMap {
                    nonce,
                    protocol,
                    internal_port,
                    external_port,
                    external_ip,
                })
            ),
        (2u8..128, proptest::collection::vec(any::<[u8; 4]>(), 0..10)).prop_map(
            |(opcode, words)| PcpOp::Other {
                opcode,
                body: words.concat(),
            }
        ),
    ]
}

fn options(op: &PcpOp) -> BoxedStrategy<Vec<PcpOption>> {
    if matches!(op, PcpOp::Other { .. }) {
        return Just(Vec::new()).boxed();
    }
    proptest::collection::vec(
        (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..40))
            .prop_map(|(code, data)| PcpOption { code, data }),
        0..4,
    )
    .boxed()
}

fn pcp_repr() -> impl Strategy<Value = PcpRepr> {
    let request = (any::<u32>(), ip(), pcp_op())
        .prop_flat_map(|(lifetime, client, op)| {
            let opts = options(&op);
            (Just((lifetime, client, op)), opts)
        })
        .prop_map(|((lifetime, client, op), options)| {
            PcpRepr::Request(PcpRequest {
                lifetime,
                client,
                op,
                options,
            })
        });
    let response = (any::<u8>(), any::<u32>(), any::<u32>(), pcp_op())
        .prop_flat_map(|(r, lifetime, epoch, op)| {
            let opts = options(&op);
            (Just((r, lifetime, epoch, op)), opts)
        })
        .prop_map(|((r, lifetime, epoch, op), options)| {
            PcpRepr::Response(PcpResponse {
                result: PcpResultCode(r),
                lifetime,
                epoch,
                op,
                options,
            })
        });
    prop_oneof![request, response]
}

proptest! {
    #[test]
    fn pmp_round_trip(repr in pmp_repr()) {
        prop_assert_eq!(PmpRepr::parse_bytes(&repr.to_bytes()), Ok(repr));
    }

    #[test]
    fn pcp_round_trip(repr in pcp_repr()) {
        let bytes = repr.to_bytes().unwrap();
        prop_assert!(bytes.len().is_multiple_of(4));
        prop_assert_eq!(PcpRepr::parse_bytes(&bytes), Ok(repr));
    }

    #[test]
    fn parsers_and_mapper_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(repr) = PmpRepr::parse_bytes(&bytes) {
            // Reserved bytes are ignored on reception, zero on emission.
            let again = repr.to_bytes();
            prop_assert_eq!(again.len(), bytes.len());
            prop_assert_eq!(PmpRepr::parse_bytes(&again), Ok(repr));
        }
        if let Ok(repr) = PcpRepr::parse_bytes(&bytes) {
            // Option padding may differ; what re-emits parses the same.
            let again = repr.to_bytes().unwrap();
            prop_assert_eq!(PcpRepr::parse_bytes(&again), Ok(repr));
        }
        let now = Instant::now();
        let config = PortMapConfig::new(
            "192.168.1.1".parse().unwrap(),
            "192.168.1.2".parse().unwrap(),
            4000,
        );
        let gateway = config.gateway;
        let mut m = PortMapper::new_with_insecure_seed(now, config, 1).unwrap();
        m.handle_datagram(now, gateway, &bytes);
        m.handle_timeout(now);
    }
}
