//! The punch agent's input path: datagrams from a few sources (the TURN
//! server among them), signals from the peer (parsed from the fuzzer's
//! bytes) and clock steps, into an agent that is punching to one peer and
//! allocating on a TURN server. Nothing forged may make it report a
//! punched path, and its queues stay bounded.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use nat_traversal::agent::{Agent, AgentConfig, AgentEvent};
use nat_traversal::turn::TurnConfig;
use nat_traversal::wire::{Candidate, CandidateKind, Offer, SignalRepr};

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let server: SocketAddr = "192.0.2.100:3478".parse().unwrap();
    let mut agent: Agent<String> =
        Agent::new_with_insecure_seed("a".into(), AgentConfig::default(), 1);
    agent.set_local_endpoints(vec!["10.0.0.1:4000".parse().unwrap()]);
    agent.set_turn(now, TurnConfig::new(server)).unwrap();
    agent.connect(now, "b".into(), &["10.0.1.1:4000".parse().unwrap()]);
    let peer_offer = Offer {
        from: "b".into(),
        to: "a".into(),
        ufrag: "buf".into(),
        password: b"remote password".to_vec(),
        candidates: vec![Candidate::new(
            CandidateKind::Host,
            "10.0.1.1:4000".parse().unwrap(),
            65535,
        )],
    };
    agent.handle_offer(now, "b".into(), &peer_offer);
    let sources: [SocketAddr; 4] = [
        server,
        "10.0.1.1:4000".parse().unwrap(),
        "203.0.113.9:4000".parse().unwrap(),
        "198.51.100.7:9".parse().unwrap(),
    ];
    let mut buf = [0u8; 512];
    // Records: [knobs, len, bytes...]; knobs pick the source, whether the
    // bytes are a datagram or a signal, and a clock step.
    let mut rest = data;
    while let [knobs, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (bytes, next) = tail.split_at(n);
        rest = next;
        now += Duration::from_millis(u64::from(knobs >> 3) * 50);
        agent.handle_timeout(now);
        let from = sources[usize::from(knobs & 3)];
        if knobs & 4 == 0 {
            let _ = agent.handle_input(now, from, bytes);
        } else {
            match SignalRepr::parse_bytes(bytes) {
                Ok(SignalRepr::Offer(offer)) => agent.handle_offer(now, "b".into(), &offer),
                Ok(SignalRepr::Endpoints { endpoints, .. }) => {
                    agent.handle_endpoints(now, "b".into(), &endpoints)
                }
                _ => {}
            }
        }
        let copy = bytes.len().min(buf.len());
        buf[..copy].copy_from_slice(&bytes[..copy]);
        let _ = agent.relay_in_place(from, &mut buf, copy);
        let mut transmits = 0;
        while agent.poll_transmit().is_some() {
            transmits += 1;
            assert!(transmits < 10_000, "unbounded transmits");
        }
        while let Some(event) = agent.poll_event() {
            // Nothing the fuzzer writes carries a valid MAC for the
            // session's keys.
            assert!(!matches!(event, AgentEvent::Punched { .. }));
        }
    }
});
