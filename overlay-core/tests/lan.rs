//! LAN discovery (feature `lan`): a neighbour without the network's key
//! cannot pull a lone node into its ring, and replayed announcements are
//! dropped. In memory: datagrams are byte arrays handed over by hand.
#![cfg(feature = "lan")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use overlay_core::Address;
use overlay_core::lan::{
    ANNOUNCE_LEN, Announce, AnnounceError, Discovery, LanEvent, NetworkKey, REPLAY_WINDOW,
};
use proptest::prelude::*;

const CIDR: &str = "10.128.0.0/16";
const ZONE: &str = "wow.internal";
const MEMBER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const MALLORY_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 66);

fn ca_key() -> NetworkKey {
    NetworkKey::from_ca_certificate(b"stand-in for the CA certificate DER", CIDR, ZONE)
}

fn wall() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// A ring member's announcement, as multicast on the LAN (everyone there,
/// Mallory included, receives it).
fn member_announcement(now: Instant) -> [u8; ANNOUNCE_LEN] {
    let mut member =
        Discovery::new_with_insecure_seed(now, ca_key(), Address::from_key(b"member"), 4000, 9);
    member.poll_announce(now, wall(), false, &[MEMBER_IP])[0].1
}

fn candidates(d: &mut Discovery) -> Vec<SocketAddr> {
    std::iter::from_fn(|| d.poll_event())
        .filter_map(|e| match e {
            LanEvent::Candidate(e) => Some(e),
            _ => None,
        })
        .collect()
}

/// Mallory is on the LAN, knows the network's CIDR and zone (they are no
/// secret) and hears the members' announcements, but holds neither the CA
/// certificate's key nor the network secret. Every announcement she can
/// make that names her own endpoint is dropped; the member's is taken.
#[test]
fn attack_lan_pull_in() {
    let now = Instant::now();
    let mut victim =
        Discovery::new_with_insecure_seed(now, ca_key(), Address::from_key(b"victim"), 4000, 1);
    let heard = member_announcement(now);
    let mallory_endpoint = SocketAddr::new(MALLORY_IP.into(), 4666);

    // 1. The member's announcement with her own endpoint and ring address
    //    written over it (network tag and MAC kept: she cannot recompute it).
    let mut forged = heard;
    forged[32..36].copy_from_slice(&MALLORY_IP.octets());
    forged[36..38].copy_from_slice(&4666u16.to_be_bytes());
    forged[38..58].copy_from_slice(&Address::from_key(b"mallory").to_bytes());
    forged[58] = 1;
    assert_eq!(
        victim.handle_announce(now, wall(), MALLORY_IP.into(), &forged),
        Err(AnnounceError::BadMac)
    );
    // 2. Sealed under a key of her own (a guessed secret), with the
    //    network's tag copied in.
    let guess = NetworkKey::from_secret(b"wow", CIDR, ZONE);
    let mallory = Announce {
        unix_secs: 1_700_000_000,
        nonce: 1,
        ip: MALLORY_IP,
        port: 4666,
        address: Address::from_key(b"mallory"),
        alone: false,
    };
    let mut sealed = mallory.seal(&guess);
    assert_eq!(
        victim.handle_announce(now, wall(), MALLORY_IP.into(), &sealed),
        Err(AnnounceError::OtherNetwork)
    );
    sealed[8..16].copy_from_slice(&heard[8..16]);
    assert_eq!(
        victim.handle_announce(now, wall(), MALLORY_IP.into(), &sealed),
        Err(AnnounceError::BadMac)
    );
    // 3. A key derived from a CA certificate of her own.
    let own_ca = NetworkKey::from_ca_certificate(b"mallory's CA", CIDR, ZONE);
    assert!(
        victim
            .handle_announce(now, wall(), MALLORY_IP.into(), &mallory.seal(&own_ca))
            .is_err()
    );
    assert!(
        candidates(&mut victim).is_empty(),
        "pulled into Mallory's ring"
    );

    // The genuine member's announcement still gets the lone node in.
    victim
        .handle_announce(now, wall(), MEMBER_IP.into(), &heard)
        .unwrap();
    assert_eq!(
        candidates(&mut victim),
        vec![SocketAddr::new(MEMBER_IP.into(), 4000)]
    );
    assert!(!candidates(&mut victim).contains(&mallory_endpoint));
}

/// Mallory replays a member's genuine announcement: from her own address
/// (the victim would join her), again from the member's (spoofed), and
/// after the replay window.
#[test]
fn attack_lan_replay() {
    let now = Instant::now();
    let new_victim =
        || Discovery::new_with_insecure_seed(now, ca_key(), Address::from_key(b"victim"), 4000, 1);
    let heard = member_announcement(now);

    // From elsewhere: the sender address inside is the member's.
    let mut victim = new_victim();
    assert_eq!(
        victim.handle_announce(now, wall(), MALLORY_IP.into(), &heard),
        Err(AnnounceError::SourceMismatch {
            announced: MEMBER_IP,
            from: IpAddr::V4(MALLORY_IP),
        })
    );
    assert!(candidates(&mut victim).is_empty());

    // The same bytes twice within the window: once only.
    victim
        .handle_announce(now, wall(), MEMBER_IP.into(), &heard)
        .unwrap();
    assert_eq!(candidates(&mut victim).len(), 1);
    let later = now + Duration::from_secs(10);
    assert_eq!(
        victim.handle_announce(
            later,
            wall() + Duration::from_secs(10),
            MEMBER_IP.into(),
            &heard
        ),
        Err(AnnounceError::Replayed)
    );

    // Recorded and played to a node that never heard it, after the window.
    let mut fresh = new_victim();
    let skew = REPLAY_WINDOW + Duration::from_secs(1);
    assert_eq!(
        fresh.handle_announce(now + skew, wall() + skew, MEMBER_IP.into(), &heard),
        Err(AnnounceError::Stale {
            skew_secs: skew.as_secs()
        })
    );
    // Nor from the future.
    assert_eq!(
        fresh.handle_announce(now, wall() - skew, MEMBER_IP.into(), &heard),
        Err(AnnounceError::Stale {
            skew_secs: skew.as_secs()
        })
    );
    assert!(candidates(&mut fresh).is_empty());
    // Within the window it is taken (the checks above can fail).
    fresh
        .handle_announce(now, wall() + REPLAY_WINDOW, MEMBER_IP.into(), &heard)
        .unwrap();
    assert_eq!(candidates(&mut fresh).len(), 1);
}

#[test]
fn a_secret_and_a_ca_key_do_not_interoperate() {
    let now = Instant::now();
    let secret = NetworkKey::from_secret(b"network secret", CIDR, ZONE);
    let mut d = Discovery::new_with_insecure_seed(now, secret, Address::from_key(b"v"), 4000, 0);
    assert_eq!(
        d.handle_announce(now, wall(), MEMBER_IP.into(), &member_announcement(now)),
        Err(AnnounceError::OtherNetwork)
    );
}

proptest! {
    #[test]
    fn announcements_round_trip(
        unix_secs in any::<u64>(),
        nonce in any::<u64>(),
        ip in any::<[u8; 4]>(),
        port in 1u16..,
        a in any::<[u8; 20]>(),
        alone in any::<bool>(),
        secret in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let key = NetworkKey::from_secret(&secret, CIDR, ZONE);
        let x = Announce {
            unix_secs, nonce, ip: Ipv4Addr::from(ip), port,
            address: Address::from_bytes(a), alone,
        };
        prop_assert_eq!(Announce::open(&key, &x.seal(&key)), Ok(x));
    }

    #[test]
    fn any_flipped_bit_is_refused(bit in 0..ANNOUNCE_LEN * 8, nonce in any::<u64>()) {
        let key = ca_key();
        let x = Announce {
            unix_secs: 5, nonce, ip: MEMBER_IP, port: 4000,
            address: Address::from_key(b"m"), alone: true,
        };
        let mut b = x.seal(&key);
        b[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(Announce::open(&key, &b).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        let key = ca_key();
        let mut d = Discovery::new_with_insecure_seed(Instant::now(), key.clone(), Address::from_key(b"v"), 4000, 0);
        if let Ok(a) = Announce::open(&key, &bytes) {
            prop_assert_eq!(&a.seal(&key)[..], &bytes[..]);
        }
        let _ = d.handle_announce(Instant::now(), wall(), MEMBER_IP.into(), &bytes);
    }
}
