//! Handshake messages: raw bytes to a responder, raw cookie replies to an
//! initiator, and real key exchanges (init, cookie reply, init with the
//! cookie, response, finish) with one message mutated (bit flips,
//! truncation, replacement, extension). Nothing may panic; a mutated
//! exchange either fails or yields working SAs.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use ipsec_ca::{Ca, CaIdentity, KeyType, MemStore, NodeKey, NodeRequest, Policy, Verifier};
use ipsec_sa::{Config, Endpoint, LocalIdentity, OpenOutput, SealOutput};
use libfuzzer_sys::fuzz_target;

const A: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);

struct Fixture {
    nodes: Vec<(Vec<u8>, Vec<u8>)>,
    verifier: Verifier,
    base: Instant,
    wall: SystemTime,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let wall = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let identity = CaIdentity::create_root(
            wall,
            KeyType::Ed25519,
            "fuzz CA",
            Duration::from_secs(365 * 86_400),
        )
        .unwrap();
        let mut ca =
            Ca::open_with_insecure_seed(identity, Policy::default(), MemStore::default(), [9; 32])
                .unwrap();
        let nodes = [(A, KeyType::Ed25519), (B, KeyType::EcdsaP256)]
            .into_iter()
            .map(|(ip, kt)| {
                let key = NodeKey::generate(kt).unwrap();
                let csr = key.certificate_request(&NodeRequest::new(ip)).unwrap();
                let issued = ca.sign(wall, &csr, ip, None).unwrap();
                (issued.certificate, key.pkcs8_der().to_vec())
            })
            .collect();
        let verifier = Verifier::new(ca.identity().cert_der()).unwrap();
        Fixture {
            nodes,
            verifier,
            base: Instant::now(),
            wall,
        }
    })
}

fn endpoint(f: &'static Fixture, index: usize, ip: Ipv4Addr) -> Endpoint<&'static Verifier> {
    let (cert, key) = &f.nodes[index];
    let config = Config {
        local_ip: IpAddr::V4(ip),
        policy: ipsec_sa::Policy::protect("10.1.0.0/16".parse().unwrap()),
        ..Config::default()
    };
    let identity = LocalIdentity::from_pkcs8(cert, key).unwrap();
    Endpoint::new_with_insecure_seed(
        f.base,
        f.wall,
        config,
        identity,
        &f.verifier,
        [index as u8 + 1; 32],
    )
}

fn mutate(message: &mut Vec<u8>, how: &[u8]) {
    let Some((&op, arg)) = how.split_first() else {
        return;
    };
    match op % 4 {
        0 => {
            let start = arg.first().map_or(0, |&s| usize::from(s));
            for (i, b) in arg.iter().skip(1).enumerate() {
                if let Some(x) = message.get_mut(start + i) {
                    *x ^= b;
                }
            }
        }
        1 => message.truncate(arg.first().map_or(0, |&n| usize::from(n) * 2)),
        2 => *message = arg.to_vec(),
        _ => message.extend_from_slice(arg),
    }
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (a_ip, b_ip) = (IpAddr::V4(A), IpAddr::V4(B));
    let mut a = endpoint(f, 0, A);
    let mut b = endpoint(f, 1, B);
    let now = f.base;
    if mode % 7 == 0 {
        let mut raw = rest.to_vec();
        let _ = b.open(now, a_ip, &mut raw);
        let mut marked = vec![0, 0, 0, 0];
        marked.extend_from_slice(rest);
        let _ = b.open(now, a_ip, &mut marked);
        while b.poll_transmit().is_some() {}
        return;
    }
    let mut out = Vec::new();
    assert_eq!(
        a.seal(now, b_ip, b"x", &mut out),
        Ok(SealOutput::HandshakeNeeded)
    );
    if mode % 7 == 6 {
        // A cookie reply (kind 4) for A's pending init, with fuzzed body.
        let init = a.poll_transmit().unwrap().payload;
        let mut reply = vec![0, 0, 0, 0, 4, ipsec_sa::wire::VERSION];
        reply.extend_from_slice(&init[6..10]);
        reply.extend_from_slice(rest);
        let _ = a.open(now, b_ip, &mut reply);
        while a.poll_transmit().is_some() {}
        return;
    }
    // A real exchange; message number `target` (1: init, 2: cookie reply,
    // 3: init with the cookie, 4: response, 5: finish) is mutated.
    let target = mode % 7;
    let mut count = 0u8;
    for _ in 0..8 {
        let mut moved = false;
        while let Some(mut t) = a.poll_transmit() {
            moved = true;
            if ipsec_sa::wire::is_handshake(&t.payload) {
                count += 1;
                if count == target {
                    mutate(&mut t.payload, rest);
                }
            }
            let _ = b.open(now, a_ip, &mut t.payload);
        }
        while let Some(mut t) = b.poll_transmit() {
            moved = true;
            if ipsec_sa::wire::is_handshake(&t.payload) {
                count += 1;
                if count == target {
                    mutate(&mut t.payload, rest);
                }
            }
            let _ = a.open(now, b_ip, &mut t.payload);
        }
        if !moved {
            break;
        }
    }
    if a.has_sa(b_ip) && b.has_sa(a_ip) {
        out.clear();
        assert_eq!(
            a.seal(now, b_ip, b"after", &mut out),
            Ok(SealOutput::Sealed)
        );
        assert_eq!(
            b.open(now, a_ip, &mut out),
            Ok(OpenOutput::Plaintext(&b"after"[..]))
        );
    }
    // Timers run without panicking.
    let later = now + std::time::Duration::from_secs(30);
    a.handle_timeout(later);
    b.handle_timeout(later);
});
