//! `PortMapper` against a scripted gateway: PCP, the fall-back to NAT-PMP,
//! retransmission, renewal, deletion, and the replies it must not believe.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use nat_traversal::portmap::wire::{
    PcpMap, PcpOp, PcpRepr, PcpResponse, PcpResultCode, PmpProtocol, PmpRepr, PmpResultCode,
};
use nat_traversal::portmap::{PortMapConfig, PortMapEvent, PortMapProtocol, PortMapper};

const GATEWAY: &str = "192.168.1.1:5351";
const EXTERNAL: &str = "203.0.113.7:40000";

fn config() -> PortMapConfig {
    PortMapConfig::new(
        "192.168.1.1".parse().unwrap(),
        "192.168.1.2".parse().unwrap(),
        4000,
    )
}

fn gateway() -> SocketAddr {
    GATEWAY.parse().unwrap()
}

fn external() -> SocketAddr {
    EXTERNAL.parse().unwrap()
}

/// The MAP body and lifetime of a PCP request.
fn pcp_request(bytes: &[u8]) -> (PcpMap, u32) {
    let PcpRepr::Request(req) = PcpRepr::parse_bytes(bytes).unwrap() else {
        panic!("not a PCP request")
    };
    assert_eq!(req.client, "192.168.1.2".parse::<IpAddr>().unwrap());
    let PcpOp::Map(map) = req.op else {
        panic!("not MAP")
    };
    (map, req.lifetime)
}

/// The gateway's PCP answer to `request`.
fn pcp_reply(request: &[u8], result: PcpResultCode, lifetime: u32) -> Vec<u8> {
    let (mut map, _) = pcp_request(request);
    map.external_ip = external().ip();
    map.external_port = external().port();
    PcpRepr::Response(PcpResponse {
        result,
        lifetime,
        epoch: 100,
        op: PcpOp::Map(map),
        options: vec![],
    })
    .to_bytes()
    .unwrap()
}

fn mapped(m: &mut PortMapper, now: Instant, lifetime: u32) -> Vec<u8> {
    let request = m.poll_transmit().unwrap();
    assert_eq!(request.destination, gateway());
    let reply = pcp_reply(&request.payload, PcpResultCode::SUCCESS, lifetime);
    assert!(m.handle_datagram(now, gateway(), &reply));
    assert_eq!(
        m.poll_event(),
        Some(PortMapEvent::Mapped {
            external: external(),
            lifetime: Duration::from_secs(u64::from(lifetime)),
        })
    );
    reply
}

#[test]
fn pcp_maps_renews_at_half_lifetime_and_deletes_on_close() {
    let t0 = Instant::now();
    let mut m = PortMapper::new(t0, config()).unwrap();
    mapped(&mut m, t0, 600);
    assert_eq!(m.protocol(), Some(PortMapProtocol::Pcp));
    assert_eq!(m.external(), Some(external()));
    let renew = t0 + Duration::from_secs(300);
    assert_eq!(m.poll_timeout(), Some(renew));
    m.handle_timeout(renew - Duration::from_millis(1));
    assert!(m.poll_transmit().is_none());
    m.handle_timeout(renew);
    let renewal = m.poll_transmit().unwrap();
    let (map, lifetime) = pcp_request(&renewal.payload);
    assert_eq!(lifetime, 7200);
    // The renewal suggests the endpoint held.
    assert_eq!(
        (map.external_ip, map.external_port),
        (external().ip(), 40000)
    );
    assert!(m.handle_datagram(
        renew,
        gateway(),
        &pcp_reply(&renewal.payload, PcpResultCode::SUCCESS, 600)
    ));
    // Same endpoint: no new event; the next renewal is half a lifetime on.
    assert_eq!(m.poll_event(), None);
    assert_eq!(m.poll_timeout(), Some(renew + Duration::from_secs(300)));

    m.close(renew);
    let delete = m.poll_transmit().unwrap();
    let (_, lifetime) = pcp_request(&delete.payload);
    assert_eq!(lifetime, 0);
    let reply = pcp_reply(&delete.payload, PcpResultCode::SUCCESS, 0);
    assert!(m.handle_datagram(renew, gateway(), &reply));
    assert_eq!(m.poll_event(), Some(PortMapEvent::Closed));
    assert_eq!(m.poll_timeout(), None);
}

#[test]
fn retransmits_at_250_ms_doubling_then_falls_back_to_nat_pmp_on_silence() {
    let t0 = Instant::now();
    let mut m = PortMapper::new(t0, config()).unwrap();
    let first = m.poll_transmit().unwrap();
    let mut now = t0;
    for rto in [250, 500, 1000] {
        assert_eq!(m.poll_timeout(), Some(now + Duration::from_millis(rto)));
        now += Duration::from_millis(rto);
        m.handle_timeout(now);
        if rto < 1000 {
            // The same request, nonce included.
            assert_eq!(m.poll_transmit().unwrap().payload, first.payload);
        }
    }
    // Three PCP transmissions went unanswered: NAT-PMP.
    let ask = m.poll_transmit().unwrap();
    assert_eq!(
        PmpRepr::parse_bytes(&ask.payload).unwrap(),
        PmpRepr::ExternalAddressRequest
    );
    pmp_maps(&mut m, now, &ask.payload);
}

/// Drive the NAT-PMP exchange from the external address request on.
fn pmp_maps(m: &mut PortMapper, now: Instant, _ask: &[u8]) {
    let address = PmpRepr::ExternalAddressResponse {
        result: PmpResultCode::SUCCESS,
        epoch: 5,
        external: "203.0.113.7".parse().unwrap(),
    };
    assert!(m.handle_datagram(now, gateway(), &address.to_bytes()));
    let map = PmpRepr::parse_bytes(&m.poll_transmit().unwrap().payload).unwrap();
    assert_eq!(
        map,
        PmpRepr::MapRequest {
            protocol: PmpProtocol::Udp,
            internal_port: 4000,
            suggested_external_port: 0,
            lifetime: 7200,
        }
    );
    let reply = PmpRepr::MapResponse {
        protocol: PmpProtocol::Udp,
        result: PmpResultCode::SUCCESS,
        epoch: 5,
        internal_port: 4000,
        external_port: 40000,
        lifetime: 3600,
    };
    assert!(m.handle_datagram(now, gateway(), &reply.to_bytes()));
    assert_eq!(
        m.poll_event(),
        Some(PortMapEvent::Mapped {
            external: external(),
            lifetime: Duration::from_secs(3600),
        })
    );
    assert_eq!(m.protocol(), Some(PortMapProtocol::NatPmp));
}

#[test]
fn falls_back_to_nat_pmp_on_unsupported_version() {
    let t0 = Instant::now();
    // A PCP server that speaks another version.
    let mut m = PortMapper::new(t0, config()).unwrap();
    let request = m.poll_transmit().unwrap();
    let reply = pcp_reply(&request.payload, PcpResultCode::UNSUPP_VERSION, 0);
    assert!(m.handle_datagram(t0, gateway(), &reply));
    let ask = m.poll_transmit().unwrap();
    pmp_maps(&mut m, t0, &ask.payload);

    // A NAT-PMP-only server: a short version-0 error.
    let mut m = PortMapper::new(t0, config()).unwrap();
    m.poll_transmit().unwrap();
    let unsupported = PmpRepr::ErrorResponse {
        opcode: 129,
        result: PmpResultCode::UNSUPP_VERSION,
        epoch: 1,
    };
    assert!(m.handle_datagram(t0, gateway(), &unsupported.to_bytes()));
    let ask = m.poll_transmit().unwrap();
    pmp_maps(&mut m, t0, &ask.payload);

    // NAT-PMP renewal and deletion.
    let renew = t0 + Duration::from_secs(1800);
    m.handle_timeout(renew);
    let renewal = PmpRepr::parse_bytes(&m.poll_transmit().unwrap().payload).unwrap();
    assert!(matches!(
        renewal,
        PmpRepr::MapRequest {
            suggested_external_port: 40000,
            lifetime: 7200,
            ..
        }
    ));
    m.close(renew);
    let delete = PmpRepr::parse_bytes(&m.poll_transmit().unwrap().payload).unwrap();
    assert!(matches!(
        delete,
        PmpRepr::MapRequest {
            internal_port: 4000,
            lifetime: 0,
            ..
        }
    ));
}

#[test]
fn silence_everywhere_is_unavailable() {
    let t0 = Instant::now();
    let mut config = config();
    config.pmp_max_transmits = 2;
    let mut m = PortMapper::new(t0, config).unwrap();
    let mut now = t0;
    let mut sent = 0;
    while let Some(deadline) = m.poll_timeout() {
        while m.poll_transmit().is_some() {
            sent += 1;
        }
        now = deadline;
        m.handle_timeout(now);
    }
    assert_eq!(sent, 3 + 2);
    // 250 + 500 + 1000 ms of PCP, 250 + 500 ms of NAT-PMP.
    assert_eq!(now - t0, Duration::from_millis(2500));
    assert_eq!(m.poll_event(), Some(PortMapEvent::Unavailable));
}

#[test]
fn a_refusal_is_unavailable() {
    let t0 = Instant::now();
    let mut m = PortMapper::new(t0, config()).unwrap();
    let request = m.poll_transmit().unwrap();
    let reply = pcp_reply(&request.payload, PcpResultCode::NOT_AUTHORIZED, 30);
    assert!(m.handle_datagram(t0, gateway(), &reply));
    assert_eq!(m.poll_event(), Some(PortMapEvent::Unavailable));
    assert_eq!(m.poll_timeout(), None);
}

#[test]
fn an_unanswered_renewal_loses_the_mapping_at_expiry() {
    let t0 = Instant::now();
    let mut m = PortMapper::new(t0, config()).unwrap();
    mapped(&mut m, t0, 20);
    let mut now = t0;
    let mut renewals = 0;
    while let Some(deadline) = m.poll_timeout() {
        now = deadline;
        m.handle_timeout(now);
        while m.poll_transmit().is_some() {
            renewals += 1;
        }
    }
    assert_eq!(now, t0 + Duration::from_secs(20));
    // At 10 s, then 10.25, 10.75, 11.75, 13.75, 17.75 s.
    assert_eq!(renewals, 6);
    assert_eq!(m.poll_event(), Some(PortMapEvent::Lost));
}

#[test]
fn a_refused_renewal_loses_the_mapping() {
    let t0 = Instant::now();
    let mut m = PortMapper::new(t0, config()).unwrap();
    mapped(&mut m, t0, 20);
    let now = t0 + Duration::from_secs(10);
    m.handle_timeout(now);
    let renewal = m.poll_transmit().unwrap();
    let reply = pcp_reply(&renewal.payload, PcpResultCode::NO_RESOURCES, 0);
    assert!(m.handle_datagram(now, gateway(), &reply));
    assert_eq!(m.poll_event(), Some(PortMapEvent::Lost));
    assert_eq!(m.external(), None);
}

#[test]
fn the_nonce_is_random_and_the_seed_reproducible() {
    let t0 = Instant::now();
    let nonce = |mut m: PortMapper| pcp_request(&m.poll_transmit().unwrap().payload).0.nonce;
    let a = nonce(PortMapper::new(t0, config()).unwrap());
    let b = nonce(PortMapper::new(t0, config()).unwrap());
    assert_ne!(a, b);
    let c = nonce(PortMapper::new_with_insecure_seed(t0, config(), 7).unwrap());
    let d = nonce(PortMapper::new_with_insecure_seed(t0, config(), 7).unwrap());
    assert_eq!(c, d);
}

#[test]
fn bad_configurations_are_refused() {
    let t0 = Instant::now();
    let mut c = config();
    c.internal_port = 0;
    assert!(PortMapper::new(t0, c).is_err());
    let mut c = config();
    c.client = "2001:db8::1".parse().unwrap();
    assert!(PortMapper::new(t0, c).is_err());
    let mut c = config();
    c.lifetime = Duration::ZERO;
    assert!(PortMapper::new(t0, c).is_err());
}

/// A forged success from any address but the gateway's (another host on
/// the LAN, or the gateway's address from another port) changes nothing;
/// the real reply still works afterwards.
#[test]
fn attack_reply_from_another_address_moves_nothing() {
    let t0 = Instant::now();
    let mut m = PortMapper::new(t0, config()).unwrap();
    let request = m.poll_transmit().unwrap();
    let forged = pcp_reply(&request.payload, PcpResultCode::SUCCESS, 600);
    for from in ["192.168.1.66:5351", "192.168.1.1:5352"] {
        assert!(!m.handle_datagram(t0, from.parse().unwrap(), &forged));
        assert_eq!(m.poll_event(), None);
        assert_eq!(m.external(), None);
    }
    // Nor does a forged "unsupported version" force NAT-PMP.
    let downgrade = pcp_reply(&request.payload, PcpResultCode::UNSUPP_VERSION, 0);
    assert!(!m.handle_datagram(t0, "192.168.1.66:5351".parse().unwrap(), &downgrade));
    assert!(m.poll_transmit().is_none());
    mapped_with(&mut m, t0, &request.payload);
}

fn mapped_with(m: &mut PortMapper, now: Instant, request: &[u8]) {
    let reply = pcp_reply(request, PcpResultCode::SUCCESS, 600);
    assert!(m.handle_datagram(now, gateway(), &reply));
    assert!(matches!(m.poll_event(), Some(PortMapEvent::Mapped { .. })));
}

/// A PCP response from the gateway's address that does not echo our nonce
/// (an off-path guess, or a reply meant for another client) changes
/// nothing: neither a forged success, nor a refusal, nor a forged renewal.
#[test]
fn attack_reply_with_a_wrong_nonce_moves_nothing() {
    let t0 = Instant::now();
    let mut m = PortMapper::new(t0, config()).unwrap();
    let request = m.poll_transmit().unwrap();
    let forge = |result, lifetime| {
        let mut reply = pcp_reply(&request.payload, result, lifetime);
        reply[24] ^= 1; // the first nonce byte
        reply
    };
    assert!(m.handle_datagram(t0, gateway(), &forge(PcpResultCode::SUCCESS, 600)));
    assert!(m.handle_datagram(t0, gateway(), &forge(PcpResultCode::NOT_AUTHORIZED, 600)));
    assert_eq!(m.poll_event(), None);
    assert_eq!(m.external(), None);
    mapped_with(&mut m, t0, &request.payload);
    // A renewal answered with a foreign nonce does not lose the mapping.
    let now = t0 + Duration::from_secs(300);
    m.handle_timeout(now);
    m.poll_transmit().unwrap();
    assert!(m.handle_datagram(now, gateway(), &forge(PcpResultCode::NO_RESOURCES, 0)));
    assert_eq!(m.poll_event(), None);
    assert_eq!(m.external(), Some(external()));
}

#[test]
fn nat_pmp_only_skips_pcp() {
    let t0 = Instant::now();
    let mut c = config();
    c.try_pcp = false;
    let mut m = PortMapper::new(t0, c).unwrap();
    let ask = m.poll_transmit().unwrap();
    assert_eq!(
        PmpRepr::parse_bytes(&ask.payload).unwrap(),
        PmpRepr::ExternalAddressRequest
    );
    pmp_maps(&mut m, t0, &ask.payload);
}

#[test]
fn a_late_renewal_answer_does_not_pass_for_the_deletion() {
    let t0 = Instant::now();
    let mut m = PortMapper::new(t0, config()).unwrap();
    mapped(&mut m, t0, 600);
    let now = t0 + Duration::from_secs(300);
    m.handle_timeout(now);
    let renewal = m.poll_transmit().unwrap();
    m.close(now);
    let delete = m.poll_transmit().unwrap();
    // The renewal's answer arrives after close(): still closing.
    let late = pcp_reply(&renewal.payload, PcpResultCode::SUCCESS, 600);
    assert!(m.handle_datagram(now, gateway(), &late));
    assert_eq!(m.poll_event(), None);
    let reply = pcp_reply(&delete.payload, PcpResultCode::SUCCESS, 0);
    assert!(m.handle_datagram(now, gateway(), &reply));
    assert_eq!(m.poll_event(), Some(PortMapEvent::Closed));
}
