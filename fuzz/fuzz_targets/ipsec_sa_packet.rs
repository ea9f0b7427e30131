//! Sealed data packets: arbitrary bytes into an inbound SA and an endpoint,
//! and genuine packets with arbitrary bit flips, which must be refused.
#![no_main]

use std::net::IpAddr;
use std::time::{Instant, SystemTime};

use ipsec_sa::{InboundSa, OutboundSa, SaKeys, Suite};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let suite = if mode & 1 == 0 {
        Suite::Aes256Gcm
    } else {
        Suite::ChaCha20Poly1305
    };
    let keys = SaKeys {
        key: [0x42; 32],
        salt: [1, 2, 3, 4],
    };
    let mut inbound = InboundSa::new(0x1000, suite, &keys);
    match (mode >> 1) % 3 {
        0 => {
            // Forgeries: nothing is ever sealed with this key (mode 1 seals
            // with another), so nothing may authenticate.
            let never_used = SaKeys {
                key: [0x17; 32],
                salt: [9, 9, 9, 9],
            };
            let mut forgery_target = InboundSa::new(0x1000, suite, &never_used);
            let mut packet = rest.to_vec();
            assert!(forgery_target.open(&mut packet).is_err());
            let _ = inbound.open(&mut rest.to_vec());
            if let Ok(p) = ipsec_sa::wire::Packet::new_checked(rest) {
                let _ = ipsec_sa::wire::PacketRepr::parse(&p);
            }
        }
        1 => {
            // A genuine packet, then the same packet with a mask applied.
            let (plaintext, mask) = rest.split_at(rest.len() / 2);
            let mut outbound = OutboundSa::new(0x1000, suite, &keys);
            let mut sealed = Vec::new();
            outbound.seal(plaintext, &mut sealed).unwrap();
            let mut tampered = sealed.clone();
            for (b, m) in tampered.iter_mut().zip(mask) {
                *b ^= m;
            }
            let changed = tampered != sealed;
            let result = inbound.open(&mut tampered).map(<[u8]>::to_vec);
            if changed {
                assert!(result.is_err());
                assert_eq!(inbound.open(&mut sealed).unwrap(), plaintext);
            } else {
                assert_eq!(result.unwrap(), plaintext);
            }
        }
        _ => {
            // An endpoint without SAs: typed rejections, never a panic.
            let mut packet = rest.to_vec();
            let source: IpAddr = "10.1.0.1".parse().unwrap();
            let _ = endpoint().open(Instant::now(), source, &mut packet);
        }
    }
});

struct Nobody;

impl ipsec_sa::PeerAuthenticator for Nobody {
    fn authenticate(
        &self,
        _: &[u8],
        _: IpAddr,
        _: SystemTime,
    ) -> Result<ipsec_sa::VerifiedPeer, ipsec_sa::AuthError> {
        Err(ipsec_sa::AuthError::UntrustedIssuer)
    }
}

fn endpoint() -> ipsec_sa::Endpoint<Nobody> {
    use std::sync::OnceLock;
    // A throw-away Ed25519 PKCS#8 key and a placeholder certificate: the
    // endpoint only sends them in handshakes, which Nobody refuses anyway.
    static KEY: OnceLock<Vec<u8>> = OnceLock::new();
    let key = KEY.get_or_init(|| {
        ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
            .unwrap()
            .as_ref()
            .to_vec()
    });
    let identity = ipsec_sa::LocalIdentity::from_pkcs8(&[0x30, 0x00], key).unwrap();
    let config = ipsec_sa::Config {
        local_ip: "10.1.0.2".parse().unwrap(),
        policy: ipsec_sa::Policy::protect("10.1.0.0/16".parse().unwrap()),
        ..ipsec_sa::Config::default()
    };
    ipsec_sa::Endpoint::new_with_insecure_seed(
        Instant::now(),
        SystemTime::now(),
        config,
        identity,
        Nobody,
        [3; 32],
    )
}
