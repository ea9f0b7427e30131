//! NAT-PMP and PCP input: both parsers, and a `PortMapper` waiting for a
//! PCP answer, a NAT-PMP external address or a NAT-PMP mapping.
//!
//! What parses must re-emit to bytes that parse to the same message (the
//! same length for NAT-PMP; reserved fields and PCP option padding are not
//! kept). The first byte
//! chooses the mapper's phase and whether the rest gets the mapper's PCP
//! nonce spliced in, so MAP responses are reached.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use nat_traversal::portmap::wire::{PcpRepr, PmpRepr, PmpResultCode};
use nat_traversal::portmap::{PortMapConfig, PortMapEvent, PortMapper};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if let Ok(repr) = PmpRepr::parse_bytes(rest) {
        let again = repr.to_bytes();
        assert_eq!(again.len(), rest.len());
        assert_eq!(PmpRepr::parse_bytes(&again), Ok(repr));
    }
    if let Ok(repr) = PcpRepr::parse_bytes(rest) {
        let again = repr.to_bytes().expect("parsed message re-emits");
        assert_eq!(PcpRepr::parse_bytes(&again), Ok(repr));
    }

    let now = Instant::now();
    let config = PortMapConfig::new(
        "192.168.1.1".parse().unwrap(),
        "192.168.1.2".parse().unwrap(),
        4000,
    );
    let gateway = config.gateway;
    let mut mapper = PortMapper::new_with_insecure_seed(now, config, 1).unwrap();
    let request = mapper.poll_transmit().unwrap();
    let mut input = rest.to_vec();
    if mode & 1 == 1 && input.len() >= 36 {
        input[24..36].copy_from_slice(&request.payload[24..36]);
    }
    // Phase: 0 PCP, 1 NAT-PMP external address, 2 NAT-PMP mapping.
    let phase = (mode >> 1) % 3;
    if phase >= 1 {
        let unsupported = PmpRepr::ErrorResponse {
            opcode: 129,
            result: PmpResultCode::UNSUPP_VERSION,
            epoch: 0,
        };
        assert!(mapper.handle_datagram(now, gateway, &unsupported.to_bytes()));
        mapper.poll_transmit().unwrap();
    }
    if phase == 2 {
        let address = PmpRepr::ExternalAddressResponse {
            result: PmpResultCode::SUCCESS,
            epoch: 0,
            external: "203.0.113.7".parse().unwrap(),
        };
        assert!(mapper.handle_datagram(now, gateway, &address.to_bytes()));
        mapper.poll_transmit().unwrap();
    }
    let stranger: SocketAddr = "192.168.1.66:5351".parse().unwrap();
    assert!(!mapper.handle_datagram(now, stranger, &input));
    assert_eq!(mapper.poll_event(), None);
    mapper.handle_datagram(now, gateway, &input);
    while let Some(event) = mapper.poll_event() {
        if let PortMapEvent::Mapped { external, .. } = event {
            assert_eq!(mapper.external(), Some(external));
        }
    }
    mapper.handle_timeout(now + Duration::from_secs(1));
    mapper.close(now + Duration::from_secs(1));
    while mapper.poll_transmit().is_some() {}
});
