//! LAN discovery announcements (overlay-core feature `lan`): arbitrary
//! bytes opened under a fixed network key, and fed to a lone node's
//! `Discovery` from the address they name. What opens must re-seal to the
//! same bytes; nothing may panic; a candidate is only ever the announced
//! endpoint.
#![no_main]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use libfuzzer_sys::fuzz_target;
use overlay_core::Address;
use overlay_core::lan::{Announce, Discovery, LanEvent, NetworkKey};

fuzz_target!(|data: &[u8]| {
    let key = NetworkKey::from_secret(b"fuzz", "10.128.0.0/16", "wow.internal");
    let announced = Announce::open(&key, data);
    if let Ok(a) = &announced {
        assert_eq!(&a.seal(&key)[..], data);
    }
    let now = Instant::now();
    let mut d = Discovery::new_with_insecure_seed(now, key, Address::from_key(b"fuzz"), 4000, 0);
    let from = match &announced {
        Ok(a) => IpAddr::V4(a.ip),
        Err(_) => IpAddr::from([192, 0, 2, 1]),
    };
    let wall = match &announced {
        Ok(a) => SystemTime::UNIX_EPOCH + Duration::from_secs(a.unix_secs.min(1 << 40)),
        Err(_) => SystemTime::now(),
    };
    let _ = d.handle_announce(now, wall, from, data);
    let _ = d.handle_announce(now, wall, from, data);
    while let Some(event) = d.poll_event() {
        if let (LanEvent::Candidate(endpoint), Ok(a)) = (event, &announced) {
            assert_eq!(endpoint, SocketAddr::new(from, a.port));
        } else {
            panic!("a candidate from bytes that do not open");
        }
    }
});
