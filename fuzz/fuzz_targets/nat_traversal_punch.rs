//! The punching state machine's message input: a sequence of datagrams
//! (and clock steps) from a few source addresses into a running session.
//! Forged input must never make it report a connection, in the first
//! attempt or the patient one after it (short quiet periods, so the clock
//! steps reach it). The first byte
//! picks plain punching or a birthday role (`PunchConfig::birthday`: we
//! open extra sockets, or scan the peer's ports), and then datagrams may
//! arrive on the extra sockets too.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use nat_traversal::Socket;
use nat_traversal::punch::{BirthdayConfig, Patience, PunchConfig, PunchEvent, PunchSession};
use nat_traversal::wire::{Candidate, CandidateKind, Offer};

fn offer(from: &str, to: &str, password: &[u8], addr: &str) -> Offer {
    Offer {
        from: from.into(),
        to: to.into(),
        ufrag: format!("{from}uf"),
        password: password.to_vec(),
        candidates: vec![
            Candidate::new(CandidateKind::Host, addr.parse().unwrap(), 65535),
            Candidate::new(
                CandidateKind::ServerReflexive,
                "203.0.113.9:4000".parse().unwrap(),
                1,
            ),
        ],
    }
}

/// `offer` with a second reflexive port: a symmetric NAT.
fn symmetric(mut offer: Offer) -> Offer {
    offer.candidates.push(Candidate::new(
        CandidateKind::ServerReflexive,
        "203.0.113.9:4001".parse().unwrap(),
        1,
    ));
    offer
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let mut local = offer("a", "b", b"local password", "10.0.0.1:4000");
    let mut remote = offer("b", "a", b"remote password", "10.0.1.1:4000");
    match mode % 3 {
        1 => local = symmetric(local),
        2 => remote = symmetric(remote),
        _ => {}
    }
    let config = PunchConfig {
        port_guess_range: 4,
        patience: Some(Patience {
            quiet: Duration::from_secs(1),
            refresh_interval: Duration::from_millis(300),
            round: Duration::from_millis(500),
            rounds: 3,
        }),
        birthday: (mode % 3 != 0).then(|| BirthdayConfig {
            sockets: 8,
            probes: 64,
            ..BirthdayConfig::default()
        }),
        ..PunchConfig::default()
    };
    let mut now = Instant::now();
    let mut session =
        PunchSession::new_with_insecure_seed(now, config, &local, &remote, 1).unwrap();
    let sources: [SocketAddr; 3] = [
        "10.0.1.1:4000".parse().unwrap(),
        "203.0.113.9:4000".parse().unwrap(),
        "198.51.100.7:9".parse().unwrap(),
    ];
    // Records: [knobs, len, bytes...]; knobs pick the source and a clock step.
    let mut rest = data;
    while let [knobs, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (datagram, next) = tail.split_at(n);
        rest = next;
        now += Duration::from_millis(u64::from(knobs >> 2) * 10);
        session.handle_timeout(now);
        // Nothing the fuzzer writes carries a valid HMAC for our key, so
        // the input never counts as authenticated.
        // Bit 7 of the length byte: to one of the extra sockets.
        let socket = if len & 0x80 == 0 {
            Socket::Primary
        } else {
            Socket::Extra(u16::from(*len % 8))
        };
        let from = sources[usize::from(knobs & 3) % 3];
        assert!(!session.handle_input_on(now, socket, from, datagram));
        while session.poll_transmit().is_some() {}
        while let Some(event) = session.poll_event() {
            assert!(!matches!(event, PunchEvent::Connected(_)));
        }
    }
});
