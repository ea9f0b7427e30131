//! A closed network admits only certified nodes to the overlay ring: an
//! uncertified node, or one whose certificate was revoked, is refused at
//! link set-up (in memory, overlay nodes with the CA-backed identity).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use ipsec_ca::{Ca, CaIdentity as CaRoot, KeyType, MemStore, NodeKey, NodeRequest, Policy};
use overlay_core::identity::IdentityError;
use overlay_core::wire::LinkStatus;
use overlay_core::{Address, Config, DynIdentity, Event, Identity, Node};
use wow_core::overlay_identity::{CaIdentity, CaIdentityHandle};

fn ep(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8 + 1], 4000))
}

fn wall() -> std::time::SystemTime {
    SystemTime::now()
}

struct Lab {
    ca: Ca<MemStore>,
    ca_der: Vec<u8>,
}

impl Lab {
    fn new() -> Lab {
        let root = CaRoot::create_root(
            wall(),
            KeyType::Ed25519,
            "closed ring CA",
            std::time::Duration::from_secs(86_400),
        )
        .unwrap();
        let ca_der = root.cert_der().to_vec();
        let ca = Ca::open(root, Policy::default(), MemStore::default()).unwrap();
        Lab { ca, ca_der }
    }

    /// A node key, certified for `ip` when `ip` is given.
    fn member(&mut self, key_type: KeyType, ip: Option<Ipv4Addr>) -> (NodeKey, Option<Vec<u8>>) {
        let key = NodeKey::generate(key_type).unwrap();
        let cert = ip.map(|ip| {
            let csr = key.certificate_request(&NodeRequest::new(ip)).unwrap();
            self.ca.sign(wall(), &csr, ip, None).unwrap().certificate
        });
        (key, cert)
    }

    fn identity(
        &self,
        key: &NodeKey,
        cert: Option<Vec<u8>>,
        closed: bool,
    ) -> (DynIdentity, CaIdentityHandle) {
        let id = CaIdentity::new(key, Some(&self.ca_der), closed).unwrap();
        let handle = id.handle();
        if let Some(c) = cert {
            handle.set_certificate(c);
        }
        (Box::new(id), handle)
    }
}

struct Net {
    nodes: Vec<Node<DynIdentity>>,
    events: Vec<Vec<Event>>,
    now: Instant,
}

impl Net {
    fn new(ids: Vec<DynIdentity>) -> Net {
        let now = Instant::now();
        let nodes: Vec<_> = ids
            .into_iter()
            .enumerate()
            .map(|(i, id)| {
                let config = Config {
                    endpoints: vec![ep(i)],
                    ..Config::default()
                };
                Node::with_identity_and_insecure_seed(now, config, id, i as u64 + 1)
            })
            .collect();
        let events = vec![Vec::new(); nodes.len()];
        Net { nodes, events, now }
    }

    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            loop {
                let mut flight = Vec::new();
                for (i, n) in self.nodes.iter_mut().enumerate() {
                    while let Some(t) = n.poll_transmit() {
                        flight.push((ep(i), t));
                    }
                    while let Some(e) = n.poll_event() {
                        self.events[i].push(e);
                    }
                }
                if flight.is_empty() {
                    break;
                }
                for (from, t) in flight {
                    if let Some(j) = (0..self.nodes.len()).find(|&j| ep(j) == t.destination) {
                        self.nodes[j]
                            .handle_input(self.now, from, &t.message.to_vec())
                            .unwrap();
                    }
                }
            }
            self.now += Duration::from_millis(10);
            for n in &mut self.nodes {
                if n.poll_timeout().is_some_and(|t| t <= self.now) {
                    n.handle_timeout(self.now);
                }
            }
        }
    }

    fn linked(&self, i: usize, peer: Address) -> bool {
        self.nodes[i].connections().position(peer).is_some()
    }
}

#[test]
fn attack_uncertified_node_refused_in_closed_network() {
    let mut lab = Lab::new();
    let (ka, ca) = lab.member(KeyType::Ed25519, Some(Ipv4Addr::new(10, 77, 0, 1)));
    let (kb, cb) = lab.member(KeyType::EcdsaP256, Some(Ipv4Addr::new(10, 77, 0, 2)));
    let (km, _) = lab.member(KeyType::Ed25519, None);
    let (a, _) = lab.identity(&ka, ca, true);
    let (b, _) = lab.identity(&kb, cb, true);
    let (m, _) = lab.identity(&km, None, true);
    // The ring address is the certificate's overlay address.
    assert_eq!(a.address().to_bytes(), ka.overlay_address().0);
    let addr_m = m.address();
    let mut net = Net::new(vec![a, b, m]);
    let now = net.now;
    net.nodes[0].join(now, &[]).unwrap();
    net.nodes[1].join(now, &[ep(0)]).unwrap();
    net.run(Duration::from_secs(3));
    assert!(net.nodes[1].is_joined(), "certified B did not join");
    let addr_b = net.nodes[1].address();
    assert!(net.linked(0, addr_b));

    let now = net.now;
    net.nodes[2].join(now, &[ep(0), ep(1)]).unwrap();
    net.run(Duration::from_secs(10));
    assert!(
        !net.nodes[2].is_joined(),
        "uncertified M joined a closed ring"
    );
    assert!(!net.linked(0, addr_m) && !net.linked(1, addr_m));
    assert!(net.nodes[2].connections().is_empty());
    // Typed on both sides: the refusal (logged by the core) and its cause.
    assert!(net.events[0].iter().any(|e| matches!(
        e,
        Event::PeerRejected { peer, error: IdentityError::Uncertified, .. } if *peer == addr_m
    )));
    assert!(net.events[2].iter().any(|e| matches!(
        e,
        Event::LinkRefused {
            status: LinkStatus::IdentityRejected,
            ..
        }
    )));
}

#[test]
fn attack_revoked_node_refused_in_closed_network() {
    let mut lab = Lab::new();
    let (ka, ca) = lab.member(KeyType::Ed25519, Some(Ipv4Addr::new(10, 77, 0, 1)));
    let (kr, cr) = lab.member(KeyType::Ed25519, Some(Ipv4Addr::new(10, 77, 0, 9)));
    lab.ca
        .revoke_certificate(
            wall(),
            cr.as_ref().unwrap(),
            ipsec_ca::RevocationReason::KeyCompromise,
        )
        .unwrap();
    let crl = lab.ca.issue_crl(wall()).unwrap().envelope();
    let (a, ha) = lab.identity(&ka, ca, true);
    assert!(ha.load_crl(Some(&crl), SystemTime::now()));
    let (r, _) = lab.identity(&kr, cr, true);
    let mut net = Net::new(vec![a, r]);
    let now = net.now;
    net.nodes[0].join(now, &[]).unwrap();
    net.nodes[1].join(now, &[ep(0)]).unwrap();
    net.run(Duration::from_secs(5));
    assert!(!net.nodes[1].is_joined(), "a revoked node joined");
    assert!(net.events[0].iter().any(|e| matches!(
        e,
        Event::PeerRejected {
            error: IdentityError::Certificate(_),
            ..
        }
    )));
}

#[test]
fn open_network_with_a_ca_admits_uncertified_nodes() {
    let mut lab = Lab::new();
    let (ka, ca) = lab.member(KeyType::Ed25519, Some(Ipv4Addr::new(10, 77, 0, 1)));
    let (km, _) = lab.member(KeyType::Ed25519, None);
    let (a, _) = lab.identity(&ka, ca, false);
    let (m, _) = lab.identity(&km, None, false);
    let mut net = Net::new(vec![a, m]);
    let now = net.now;
    net.nodes[0].join(now, &[]).unwrap();
    net.nodes[1].join(now, &[ep(0)]).unwrap();
    net.run(Duration::from_secs(3));
    assert!(net.nodes[1].is_joined());
}
