//! DHCP payloads: the parser (parse, emit, parse again gives the same repr)
//! and the server state machine (a sequence of payloads, time advancing
//! between them, in central and directory mode, renewal re-claims answered
//! by input bytes; never panics, a refused malformed payload changes
//! nothing, and a lost re-claim unbinds the address).
#![no_main]

use std::time::{Duration, Instant};

use dhcp_virt::wire::ClientMessage;
use dhcp_virt::{Allocation, Config, MemoryStore, Pool, RequestId, Server};
use libfuzzer_sys::fuzz_target;

fn server(directory: bool, t0: Instant) -> Server<MemoryStore> {
    let mut c = Config::new(
        "10.8.0.0/24".parse().expect("network"),
        "10.8.0.1".parse().expect("server"),
    );
    c.pool = Pool::range(
        "10.8.0.100".parse().expect("a"),
        "10.8.0.103".parse().expect("b"),
    );
    c.lease_duration = Duration::from_secs(30);
    if directory {
        c.allocation = Allocation::Directory {
            claim_timeout: Duration::from_secs(2),
            max_attempts: 3,
        };
    }
    Server::new(
        t0,
        std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
        c,
        MemoryStore::new(),
    )
    .expect("server")
}

fuzz_target!(|data: &[u8]| {
    // Input: [mode][len][payload][delay]... repeated.
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let t0 = Instant::now();
    let mut now = t0;
    let mut s = server(mode & 1 == 1, t0);
    while let [len, tail @ ..] = rest {
        let len = (usize::from(*len) * 4).min(tail.len());
        let (payload, tail) = tail.split_at(len);
        if let Ok(m) = ClientMessage::parse(payload) {
            let again = ClientMessage::parse(&m.emit()).expect("emitted message parses");
            assert_eq!(again, m);
        }
        let before = s.leases().count();
        if let Err(dhcp_virt::Refusal::Malformed(_)) = s.handle_message(now, payload) {
            assert_eq!(s.leases().count(), before);
        }
        while s.poll_transmit().is_some() {}
        while s.poll_event().is_some() {}
        // Directory answers: grant, refuse or fail by a byte of input.
        let mut k = 0usize;
        while let Some(req) = s.poll_directory_request() {
            let pick = tail.get(k).copied().unwrap_or(0);
            k += 1;
            let result = match pick % 3 {
                0 => dhcp_virt::ClaimResult::Granted,
                1 => dhcp_virt::ClaimResult::Taken,
                _ => dhcp_virt::ClaimResult::Failed,
            };
            s.handle_directory_completion(
                now,
                dhcp_virt::DirectoryCompletion { id: req.id, result },
            );
        }
        s.handle_directory_completion(
            now,
            dhcp_virt::DirectoryCompletion {
                id: RequestId(u64::MAX),
                result: dhcp_virt::ClaimResult::Granted,
            },
        );
        // A lost re-claim leaves the client without that address.
        while let Some(e) = s.poll_event() {
            if let dhcp_virt::Event::ClaimLost { client, addr } = e {
                assert_ne!(s.lease_of(&client), Some(addr));
                assert!(s.leases().all(|(a, _, _)| a != addr));
            }
        }
        let Some((&delay, tail)) = tail.split_first() else {
            break;
        };
        now += Duration::from_millis(u64::from(delay) * 250);
        s.handle_timeout(now);
        // Everything due was handled.
        assert!(s.poll_timeout().is_none_or(|at| at > now));
        rest = tail;
    }
});
