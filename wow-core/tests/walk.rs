//! The ring walk (`status --network`) over cores wired in memory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use dhcp_virt::MemoryStore;
use overlay_core::Address;
use wow_core::core::Core;
use wow_core::demo;

struct Net {
    now: Instant,
    cores: Vec<Core<MemoryStore>>,
    endpoints: Vec<SocketAddr>,
    buf: Vec<u8>,
}

impl Net {
    fn new(n: usize) -> Net {
        let now = Instant::now();
        let endpoints: Vec<SocketAddr> = (0..n)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 11001 + i as u16)))
            .collect();
        let mut cores: Vec<Core<MemoryStore>> = (0..n)
            .map(|i| {
                Core::new_with_insecure_seed(
                    now,
                    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
                    demo::settings(),
                    demo::overlay_config(endpoints[i]),
                    Address::from_key(format!("walk-{i}").as_bytes()),
                    MemoryStore::new(),
                    i as u64,
                )
                .unwrap()
            })
            .collect();
        cores[0].join(now, &[]);
        for c in &mut cores[1..] {
            c.join(now, &endpoints[..1]);
        }
        Net {
            now,
            cores,
            endpoints,
            buf: vec![0; 65536],
        }
    }

    /// Carries every datagram, then advances `step` of simulated time.
    fn run(&mut self, step: Duration) {
        let mut moved = true;
        while moved {
            moved = false;
            for i in 0..self.cores.len() {
                while let Some((to, len)) = self.cores[i].poll_udp(&mut self.buf) {
                    moved = true;
                    if let Some(j) = self.endpoints.iter().position(|e| *e == to) {
                        let data = self.buf[..len].to_vec();
                        self.cores[j].handle_udp(self.now, self.endpoints[i], &data);
                    }
                }
            }
        }
        self.now += step;
        for c in &mut self.cores {
            if c.poll_timeout().is_some_and(|t| t <= self.now) {
                c.handle_timeout(
                    self.now,
                    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
                );
            }
        }
    }
}

impl Net {
    /// Runs until core 0's walk finishes (10 simulated seconds at most).
    fn finish_walk(&mut self) -> wow_core::walk::WalkResult {
        for _ in 0..100 {
            self.run(Duration::from_millis(100));
            if let Some(r) = self.cores[0].poll_walk() {
                return r;
            }
        }
        panic!("the walk never finished");
    }
}

#[test]
fn a_walk_lists_every_node_in_ring_order() {
    let mut net = Net::new(6);
    for _ in 0..600 {
        net.run(Duration::from_millis(100));
    }
    assert!(net.cores.iter().all(|c| c.overlay().is_joined()));
    net.cores[0].start_walk(net.now, 100).unwrap();
    assert!(
        net.cores[0].start_walk(net.now, 100).is_err(),
        "two walks at once"
    );
    let r = net.finish_walk();
    assert!(r.complete, "{r:?}");
    // Every node once, clockwise from the walker.
    let me = net.cores[0].overlay().address();
    let mut expected: Vec<Address> = net.cores.iter().map(|c| c.overlay().address()).collect();
    expected.sort_by_key(|a| me.right_distance_to(*a));
    let listed: Vec<String> = r.nodes.iter().map(|n| n.overlay_address.clone()).collect();
    let expected: Vec<String> = expected.iter().map(ToString::to_string).collect();
    assert_eq!(listed, expected);
    assert_eq!(r.nodes[0].hops, 0);
    assert!(
        r.nodes[1..]
            .iter()
            .all(|n| n.hops >= 1 && !n.version.is_empty())
    );

    // A limit stops it short, and says so.
    net.cores[0].start_walk(net.now, 3).unwrap();
    let r = net.finish_walk();
    assert_eq!((r.nodes.len(), r.complete), (3, false));
    assert!(r.to_text().contains("limit of 3"));
}

mod round_trip {
    use proptest::prelude::*;
    use wow_core::walk::Message;

    proptest! {
        /// Every message encodes and decodes to itself (texts within the
        /// 253-byte limit).
        #[test]
        fn walk_messages_round_trip(
            nonce: u64,
            reply: bool,
            right: Option<[u8; 20]>,
            ip: Option<[u8; 4]>,
            name in "[a-z0-9.-]{0,253}",
            version in "\\PC{0,40}",
        ) {
            let m = if reply {
                Message::Reply {
                    nonce,
                    right: right
                        .map(overlay_core::Address::from_bytes)
                        .filter(|a| *a != overlay_core::Address::ZERO),
                    ip: ip.map(std::net::Ipv4Addr::from).filter(|a| !a.is_unspecified()),
                    name,
                    version: version.chars().take(60).collect::<String>()
                        .chars().scan(0, |n, c| { *n += c.len_utf8(); (*n <= 253).then_some(c) })
                        .collect(),
                }
            } else {
                Message::Request { nonce }
            };
            prop_assert_eq!(Message::parse(&m.to_bytes()), Ok(m));
        }
    }
}
