//! The punching state machine's message input: a sequence of datagrams
//! (and clock steps) from a few source addresses into a running session.
//! Forged input must never make it report a connection, in the first
//! attempt or the patient one after it (short quiet periods, so the clock
//! steps reach it).
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use nat_traversal::punch::{Patience, PunchConfig, PunchEvent, PunchSession};
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

fuzz_target!(|data: &[u8]| {
    let local = offer("a", "b", b"local password", "10.0.0.1:4000");
    let remote = offer("b", "a", b"remote password", "10.0.1.1:4000");
    let config = PunchConfig {
        port_guess_range: 4,
        patience: Some(Patience {
            quiet: Duration::from_secs(1),
            refresh_interval: Duration::from_millis(300),
            round: Duration::from_millis(500),
            rounds: 3,
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
        assert!(!session.handle_input(now, sources[usize::from(knobs & 3) % 3], datagram));
        while session.poll_transmit().is_some() {}
        while let Some(event) = session.poll_event() {
            assert!(!matches!(event, PunchEvent::Connected(_)));
        }
    }
});
