//! Attacks on link set-up, driven through the node API in memory: each
//! test plays an attacker against nodes that use [`KeyIdentity`]. Also: a
//! node whose NAT rebinds gets its links back, through handshakes only.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use overlay_core::identity::{IdentityError, Transcript};
use overlay_core::wire::{LinkReply, LinkRequest, LinkStatus, Payload, Routed};
use overlay_core::{
    Address, Config, DynIdentity, Event, Identity, KeyIdentity, Message, Mode, Node, Roles,
};

fn ep(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8 + 1], 7000))
}

/// The attacker's own endpoint.
fn attacker_ep() -> SocketAddr {
    SocketAddr::from(([10, 9, 9, 9], 6666))
}

fn key(seed: u64) -> DynIdentity {
    Box::new(KeyIdentity::ed25519_with_insecure_seed(seed))
}

/// Nodes at ep(0), ep(1), ... (node `i` sends from `at[i]` and is reached
/// only there: a NAT that rebinds changes it) and a record of everything
/// they sent to endpoints that are not nodes.
struct Net {
    nodes: Vec<Node<DynIdentity>>,
    at: Vec<SocketAddr>,
    now: Instant,
    events: Vec<Vec<Event>>,
    /// (from, to, message) for destinations outside the net.
    outside: Vec<(SocketAddr, SocketAddr, Message)>,
    /// Every datagram delivered between nodes: (from, to, bytes).
    log: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    /// Nodes that receive nothing (their datagrams are lost).
    deaf: Vec<bool>,
    /// Nodes behind a filtering NAT: they receive only from endpoints
    /// they have sent to (`opened`).
    filtering: Vec<bool>,
    /// (node, endpoint) pairs: the node has sent to the endpoint.
    opened: Vec<(usize, SocketAddr)>,
}

impl Net {
    /// Nodes with rebind probes after `rebind_probe` (zero: none).
    fn new_with(identities: Vec<DynIdentity>, rebind_probe: Duration) -> Net {
        let now = Instant::now();
        let nodes: Vec<_> = identities
            .into_iter()
            .enumerate()
            .map(|(i, id)| {
                let config = Config {
                    endpoints: vec![ep(i)],
                    rebind_probe_duration: rebind_probe,
                    ..Config::default()
                };
                Node::with_identity_and_insecure_seed(now, config, id, i as u64 + 1)
            })
            .collect();
        let n = nodes.len();
        Net {
            nodes,
            at: (0..n).map(ep).collect(),
            now,
            events: vec![Vec::new(); n],
            outside: Vec::new(),
            log: Vec::new(),
            deaf: vec![false; n],
            filtering: vec![false; n],
            opened: Vec::new(),
        }
    }

    /// A ring: node 0 starts it, the others join through node 0.
    fn ring(identities: Vec<DynIdentity>) -> Net {
        Net::ring_with(identities, Duration::ZERO)
    }

    /// [`Net::ring`] with rebind probes after `rebind_probe`.
    fn ring_with(identities: Vec<DynIdentity>, rebind_probe: Duration) -> Net {
        let mut net = Net::new_with(identities, rebind_probe);
        let now = net.now;
        net.nodes[0].join(now, &[]).unwrap();
        for i in 1..net.nodes.len() {
            net.nodes[i].join(now, &[ep(0)]).unwrap();
        }
        net.run(Duration::from_secs(5));
        for n in &net.nodes {
            assert!(n.is_joined());
        }
        net
    }

    fn index_of(&self, e: SocketAddr) -> Option<usize> {
        self.at.iter().position(|&a| a == e)
    }

    fn run(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.now < end {
            self.step();
            self.now += Duration::from_millis(10);
            for n in self.nodes.iter_mut() {
                if n.poll_timeout().is_some_and(|t| t <= self.now) {
                    n.handle_timeout(self.now);
                }
            }
        }
        self.step();
    }

    fn step(&mut self) {
        loop {
            let mut in_flight = Vec::new();
            for (i, n) in self.nodes.iter_mut().enumerate() {
                while let Some(t) = n.poll_transmit() {
                    if !self.opened.contains(&(i, t.destination)) {
                        self.opened.push((i, t.destination));
                    }
                    in_flight.push((self.at[i], t));
                }
                while let Some(e) = n.poll_event() {
                    self.events[i].push(e);
                }
            }
            if in_flight.is_empty() {
                return;
            }
            for (from, t) in in_flight {
                match self.index_of(t.destination) {
                    Some(to)
                        if self.deaf.get(to) == Some(&true)
                            || (self.filtering.get(to) == Some(&true)
                                && !self.opened.contains(&(to, from))) => {}
                    Some(to) => {
                        let bytes = t.message.to_vec();
                        self.nodes[to].handle_input(self.now, from, &bytes).unwrap();
                        self.log.push((from, t.destination, bytes));
                    }
                    None => self.outside.push((from, t.destination, t.message)),
                }
            }
        }
    }

    /// Hands `message` to node `to` as if it came from `from`.
    fn inject(&mut self, to: usize, from: SocketAddr, message: &Message) {
        let now = self.now;
        self.nodes[to]
            .handle_input(now, from, &message.to_vec())
            .unwrap();
        self.step();
    }

    fn endpoint_of_link(&self, at: usize, peer: Address) -> Option<SocketAddr> {
        let t = self.nodes[at].connections();
        t.position(peer).and_then(|i| t.get(i)).map(|c| c.endpoint)
    }

    /// Sends `payload` from node `from` to node `to`; whether it arrived
    /// within 200 ms.
    fn delivers(&mut self, from: usize, to: usize, payload: &[u8]) -> bool {
        let (now, dest) = (self.now, self.nodes[to].address());
        self.events[to].clear();
        self.nodes[from].send(now, dest, payload.to_vec()).unwrap();
        self.run(Duration::from_millis(200));
        self.events[to]
            .iter()
            .any(|e| matches!(e, Event::Delivered { payload: p, .. } if p == payload))
    }
}

/// One node's link to another may not be moved by a request that does
/// not prove the peer's key, whatever it claims.
#[test]
fn attack_link_rebinding() {
    let mut net = Net::ring(vec![key(1), key(2)]);
    let a = net.nodes[0].address();
    let b = net.nodes[1].address();
    assert_eq!(net.endpoint_of_link(1, a), Some(ep(0)));
    let m = attacker_ep();
    // A link request naming A, signed with the attacker's own key.
    let mut own = KeyIdentity::ed25519_with_insecure_seed(666);
    let mut forged = |challenge: u64| {
        let transcript = Transcript {
            role: overlay_core::identity::Role::Request,
            requester: a,
            responder: b,
            nonce: 42,
            challenge,
            roles: Roles::NEAR.0,
            requester_endpoint: m,
        };
        Message::LinkRequest(LinkRequest {
            nonce: 42,
            challenge,
            sender: a,
            target: b,
            roles: Roles::NEAR,
            endpoints: vec![m],
            identity: own.prove(&transcript),
        })
    };
    // A probe, then "answers" with made-up challenges.
    for challenge in [0u64, 1, 0xdead_beef] {
        net.inject(1, m, &forged(challenge));
    }
    // Even with the challenge B handed out to the attacker's endpoint, a
    // request without A's signature is refused.
    let challenge = net
        .outside
        .iter()
        .rev()
        .find_map(|(_, to, msg)| match msg {
            Message::LinkReply(r) if *to == m && r.status == LinkStatus::Challenge => {
                Some(r.challenge)
            }
            _ => None,
        })
        .expect("B challenges a probe");
    let forged = forged(challenge);
    net.inject(1, m, &forged);
    net.run(Duration::from_secs(2));
    assert_eq!(net.endpoint_of_link(1, a), Some(ep(0)), "link moved");
    assert!(
        net.events[1]
            .iter()
            .any(|e| matches!(e, Event::PeerRejected { endpoint, .. } if *endpoint == m))
    );
    // B told the attacker nothing but challenges and refusals, none
    // larger than what it was sent.
    for (_, to, msg) in &net.outside {
        if *to == m {
            assert!(matches!(
                msg,
                Message::LinkReply(LinkReply { status: LinkStatus::Challenge | LinkStatus::IdentityRejected, identity, .. }) if identity.is_empty()
            ));
        }
    }
    // Data still flows over the link to A's real endpoint.
    let now = net.now;
    net.nodes[1].send(now, a, b"still here".to_vec()).unwrap();
    net.run(Duration::from_millis(200));
    assert!(
        net.events[0]
            .iter()
            .any(|e| matches!(e, Event::Delivered { payload, .. } if payload == b"still here"))
    );
}

/// A complete, validly signed link request recorded on the wire and
/// replayed from another endpoint gets nowhere.
#[test]
fn attack_replayed_link_request() {
    let mut net = Net::ring(vec![key(1), key(2)]);
    let a = net.nodes[0].address();
    let b = net.nodes[1].address();
    // Every signed link request between the two, as an eavesdropper saw them.
    let recorded: Vec<Vec<u8>> = net
        .log
        .iter()
        .filter(|(_, _, bytes)| {
            matches!(
                Message::parse(bytes),
                Ok(Message::LinkRequest(r)) if r.challenge != 0 && !r.identity.is_empty()
            )
        })
        .map(|(_, _, bytes)| bytes.clone())
        .collect();
    assert!(!recorded.is_empty(), "no signed request was recorded");
    let m = attacker_ep();
    for bytes in &recorded {
        for to in 0..2 {
            let now = net.now;
            net.nodes[to].handle_input(now, m, bytes).unwrap();
            net.step();
        }
    }
    net.run(Duration::from_secs(2));
    assert_eq!(net.endpoint_of_link(1, a), Some(ep(0)), "B's link moved");
    assert_eq!(net.endpoint_of_link(0, b), Some(ep(1)), "A's link moved");
    for i in 0..2 {
        assert_eq!(net.nodes[i].connections().len(), 1);
        assert!(net.nodes[i].connections().position_by_endpoint(m).is_none());
    }
    // The replay only earned fresh challenges for the attacker's endpoint.
    for (_, to, msg) in &net.outside {
        if *to == m {
            assert!(
                matches!(msg, Message::LinkReply(r) if r.status == LinkStatus::Challenge),
                "{msg:?}"
            );
        }
    }
}

/// An identity that claims an address of its choosing (next to a victim)
/// while signing with its own key.
struct Liar {
    key: KeyIdentity,
    claimed: Address,
}

impl Identity for Liar {
    fn address(&self) -> Address {
        self.claimed
    }
    fn prove(&mut self, transcript: &Transcript) -> Vec<u8> {
        self.key.prove(transcript)
    }
    fn verify(&mut self, _: Address, _: &Transcript, _: &[u8]) -> Result<(), IdentityError> {
        Ok(())
    }
}

/// A node cannot take an address that is not the hash of its key (e.g.
/// one right next to a victim, to capture its DHT keys or eclipse it).
#[test]
fn attack_sybil_address() {
    let mut net = Net::ring(vec![key(1), key(2)]);
    let victim = net.nodes[1].address();
    let claimed = victim + overlay_core::Distance::from_fraction(1e-9);
    let sybil: DynIdentity = Box::new(Liar {
        key: KeyIdentity::ed25519_with_insecure_seed(99),
        claimed,
    });
    let config = Config {
        endpoints: vec![ep(2)],
        ..Config::default()
    };
    let now = net.now;
    let mut node = Node::with_identity_and_insecure_seed(now, config, sybil, 99);
    node.join(now, &[ep(0)]).unwrap();
    net.nodes.push(node);
    net.at.push(ep(2));
    net.events.push(Vec::new());
    net.run(Duration::from_secs(10));
    for i in 0..2 {
        assert!(
            net.nodes[i].connections().position(claimed).is_none(),
            "node {i} linked to the Sybil"
        );
    }
    // The bootstrap saw the lie and said why.
    assert!(net.events[0].iter().any(|e| matches!(
        e,
        Event::PeerRejected { peer, error: IdentityError::AddressMismatch { .. }, .. } if *peer == claimed
    )));
    assert!(!net.nodes[2].is_joined());
    assert!(net.events[2].iter().any(|e| matches!(
        e,
        Event::LinkRefused {
            status: LinkStatus::IdentityRejected,
            ..
        }
    )));
}

/// Routed ConnectToMe messages from a linked attacker, with made-up
/// sources and the given endpoints.
fn connect_to_me_flood(
    net: &mut Net,
    to: usize,
    first: usize,
    count: usize,
    endpoints: &[SocketAddr],
) {
    let target = net.nodes[to].address();
    for i in first..first + count {
        let source = Address::from_key(format!("fake source {i}").as_bytes());
        let msg = Message::Routed(Routed {
            source,
            destination: target,
            mode: Mode::Exact,
            hops: 1,
            hop_limit: 64,
            payload: Payload::ConnectToMe {
                roles: Roles::SHORTCUT.with(Roles::DEMAND),
                nonce: i as u64 + 1,
                endpoints: endpoints.to_vec(),
            },
        });
        net.inject(to, ep(1), &msg);
    }
}

/// One peer cannot grow a node's state without bound: not with probes
/// from one endpoint, not with many keys completing the handshake from
/// one endpoint, not with ConnectToMe requests that each start a link
/// attempt.
#[test]
fn attack_memory_growth_from_one_peer() {
    // Node 1 is the attacker's foothold: a legitimately linked node.
    let mut net = Net::ring(vec![key(1), key(2)]);
    let victim = 0;
    let base = net.nodes[victim].memory_estimate();
    let m = attacker_ep();
    let v = net.nodes[victim].address();

    // 1. Probes under a thousand claimed addresses: challenged, not stored.
    for i in 0..1000u64 {
        let probe = Message::LinkRequest(LinkRequest {
            nonce: i,
            challenge: 0,
            sender: Address::from_key(&i.to_be_bytes()),
            target: Address::ZERO,
            roles: Roles::LEAF,
            endpoints: Vec::new(),
            identity: Vec::new(),
        });
        net.inject(victim, m, &probe);
    }
    assert_eq!(net.nodes[victim].connections().len(), 1);

    // 2. Fifty fresh keys, each completing the handshake from the same
    // endpoint and asking for a leaf link (exempt from trimming).
    for k in 0..50u64 {
        let mut id = KeyIdentity::ed25519_with_insecure_seed(1000 + k);
        let nonce = 7000 + k;
        let probe = LinkRequest {
            nonce,
            challenge: 0,
            sender: id.address(),
            target: v,
            roles: Roles::LEAF,
            endpoints: vec![m],
            identity: Vec::new(),
        };
        net.outside.clear();
        net.inject(victim, m, &Message::LinkRequest(probe.clone()));
        let challenge = net
            .outside
            .iter()
            .find_map(|(_, _, msg)| match msg {
                Message::LinkReply(r) if r.nonce == nonce => Some(r.challenge),
                _ => None,
            })
            .unwrap();
        let transcript = Transcript {
            role: overlay_core::identity::Role::Request,
            requester: id.address(),
            responder: v,
            nonce,
            challenge,
            roles: Roles::LEAF.0,
            requester_endpoint: m,
        };
        let answer = LinkRequest {
            challenge,
            identity: id.prove(&transcript),
            ..probe
        };
        net.inject(victim, m, &Message::LinkRequest(answer));
    }
    // One endpoint holds at most one link.
    let from_m = net.nodes[victim]
        .connections()
        .iter()
        .filter(|c| c.endpoint == m)
        .count();
    assert!(from_m <= 1, "{from_m} links from one endpoint");

    // 3. A thousand ConnectToMe requests through the linked peer, each
    // naming a different endpoint.
    for i in 0..1000u16 {
        let e = SocketAddr::from(([192, 0, 2, (i % 250) as u8], 1000 + i));
        connect_to_me_flood(&mut net, victim, usize::from(i), 1, &[e]);
    }
    let grown = net.nodes[victim].memory_estimate();
    assert!(
        grown < base + 64 * 1024,
        "memory grew from {base} to {grown} bytes"
    );
    assert!(net.nodes[victim].connections().len() <= 2 + 1);
    assert!(net.nodes[victim].pending_links() <= Config::default().max_pending_links);
}

/// A ConnectToMe naming a victim's endpoint does not make the node a
/// reflector: at most three small probes per named endpoint (one per link
/// retry, however many requests name it), and fewer bytes out than in.
#[test]
fn attack_reflection_via_connect_to_me() {
    let mut net = Net::ring(vec![key(1), key(2)]);
    let victims: Vec<SocketAddr> = (0..8)
        .map(|i| SocketAddr::from(([203, 0, 113, 7], 4000 + i)))
        .collect();
    connect_to_me_flood(&mut net, 0, 0, 20, &victims);
    net.run(Duration::from_secs(10));
    let mut bytes_in = 0;
    for _ in 0..20 {
        bytes_in += Message::Routed(Routed {
            source: Address::ZERO,
            destination: Address::ZERO,
            mode: Mode::Exact,
            hops: 1,
            hop_limit: 64,
            payload: Payload::ConnectToMe {
                roles: Roles::SHORTCUT,
                nonce: 1,
                endpoints: victims.clone(),
            },
        })
        .to_vec()
        .len();
    }
    let mut bytes_out = 0;
    for v in &victims {
        let sent: Vec<&Message> = net
            .outside
            .iter()
            .filter(|(_, to, _)| to == v)
            .map(|(_, _, m)| m)
            .collect();
        assert!(sent.len() <= 3, "{} packets to {v}", sent.len());
        for m in sent {
            assert!(
                matches!(m, Message::LinkRequest(r) if r.identity.is_empty() && r.endpoints.is_empty())
            );
            bytes_out += m.to_vec().len();
        }
    }
    assert!(
        bytes_out <= bytes_in,
        "{bytes_out} bytes out for {bytes_in} in"
    );
    // (The NAT-traversal hook still hears of the named endpoints in
    // `Event::LinkAttempt`: bounding what it sends is the hook's job.)
}

/// One authenticated peer cannot make a node advertise an endpoint of the
/// attacker's choosing as its own; two distinct ones that agree can.
#[test]
fn attack_observed_endpoint_needs_confirmation() {
    // Node 0 starts the ring; node 2 joins through it (its bootstrap may
    // tell it its endpoint), then links to node 1 at node 1's request.
    let mut net = Net::ring(vec![key(1), key(2), key(3)]);
    let victim = SocketAddr::from(([203, 0, 113, 9], 53));
    let n = 1;
    let m = attacker_ep();
    // The attacker, with a key of its own, asks node 1 for a link and in
    // its signed reply says node 1 is at the victim's endpoint. Node 1
    // starts the link because the attacker's ConnectToMe asked for it.
    let mut id = KeyIdentity::ed25519_with_insecure_seed(4242);
    let before = net.events[n].len();
    let nonce = 99;
    let ctm = Message::Routed(Routed {
        source: id.address(),
        destination: net.nodes[n].address(),
        mode: Mode::Exact,
        hops: 1,
        hop_limit: 64,
        payload: Payload::ConnectToMe {
            roles: Roles::SHORTCUT,
            nonce,
            endpoints: vec![m],
        },
    });
    net.inject(n, ep(0), &ctm);
    // Node 1 probes m; the attacker challenges, then accepts with a lie.
    let probe = net
        .outside
        .iter()
        .rev()
        .find_map(|(_, to, msg)| match msg {
            Message::LinkRequest(r) if *to == m => Some(r.clone()),
            _ => None,
        })
        .expect("probe");
    let challenge = 5;
    net.inject(
        n,
        m,
        &Message::LinkReply(LinkReply {
            nonce: probe.nonce,
            challenge,
            sender: id.address(),
            status: LinkStatus::Challenge,
            roles: probe.roles,
            observed: victim,
            endpoints: Vec::new(),
            identity: Vec::new(),
        }),
    );
    let transcript = Transcript {
        role: overlay_core::identity::Role::Reply,
        requester: net.nodes[n].address(),
        responder: id.address(),
        nonce: probe.nonce,
        challenge,
        roles: probe.roles.0,
        requester_endpoint: victim,
    };
    let proof = id.prove(&transcript);
    net.inject(
        n,
        m,
        &Message::LinkReply(LinkReply {
            nonce: probe.nonce,
            challenge,
            sender: id.address(),
            status: LinkStatus::Accepted,
            roles: probe.roles,
            observed: victim,
            endpoints: vec![m],
            identity: proof,
        }),
    );
    // The link is up (the attacker is a member like any other) ...
    assert!(net.nodes[n].connections().position(id.address()).is_some());
    // ... but its word alone does not make the victim "our" endpoint.
    assert!(
        !net.events[n][before..]
            .iter()
            .any(|e| matches!(e, Event::ObservedEndpoint { endpoint } if *endpoint == victim)),
        "an endpoint one peer named was advertised"
    );
}

/// Node 1's endpoint after its NAT rebound.
fn rebound() -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 2], 23456))
}

/// Node 1's NAT forgets its mapping and gives it a new one while node 1
/// talks to node 2: node 1 hears "unneeded" from peers that no longer know
/// it at its endpoint and makes its links again with handshakes; the peers
/// move their end of the link to the new endpoint, and traffic flows again
/// within a few seconds (simulated time), no restart.
#[test]
fn a_rebound_node_gets_its_links_back() {
    let mut net = Net::ring(vec![key(1), key(2), key(3)]);
    let one = net.nodes[1].address();
    assert!(net.delivers(1, 2, b"before"));
    assert_eq!(net.endpoint_of_link(0, one), Some(ep(1)));
    net.at[1] = rebound();
    let rebound_at = net.now;
    // A stream between nodes 1 and 2, each way every 200 ms, until both
    // directions deliver again.
    let mut resumed_after = None;
    for _ in 0..100 {
        if net.delivers(1, 2, b"stream") && net.delivers(2, 1, b"back") {
            resumed_after = Some(net.now - rebound_at);
            break;
        }
    }
    let resumed_after = resumed_after.expect("traffic never resumed");
    eprintln!("simulated rebinding: both ways again after {resumed_after:?}");
    assert!(
        resumed_after <= Duration::from_secs(10),
        "{resumed_after:?}"
    );
    // The peers that hold a link to node 1 hold it at its new endpoint.
    net.run(Duration::from_secs(15));
    let mut linked = 0;
    for i in [0, 2] {
        if let Some(e) = net.endpoint_of_link(i, one) {
            assert_eq!(e, rebound(), "node {i}");
            linked += 1;
        }
    }
    assert!(linked > 0, "nobody linked to node 1");
    assert!(net.delivers(2, 1, b"after"));
}

/// Node 1's NAT rebinds while it streams to node 2, which sits behind a
/// filtering NAT (it hears only endpoints it has sent to), and node 1's
/// next datagram to node 0 (public) brings node 0's report of the new
/// endpoint *before* node 1's own rebind probe (500 ms) fires — and that
/// probe last fired long ago, for an unrelated silence. The link to
/// node 2, silent since the change, must be dropped at the report (its
/// traffic goes through node 0 while it is made again), not kept until
/// the suspect timeout (2 s): the report alone says our datagrams now
/// come from elsewhere.
#[test]
fn a_rebinding_reported_before_the_probe_still_drops_the_links_it_broke() {
    let mut net = Net::ring_with(vec![key(1), key(2), key(3)], Duration::from_millis(500));
    let two = net.nodes[2].address();
    // Long ago: node 2 is unreachable for 800 ms while node 1 sends to
    // it, so node 1's rebind probe fires; then all is well for 10 s.
    net.deaf[2] = true;
    let now = net.now;
    net.nodes[1].send(now, two, b"unheard".to_vec()).unwrap();
    net.run(Duration::from_millis(800));
    net.deaf[2] = false;
    net.run(Duration::from_secs(10));
    assert!(net.delivers(1, 2, b"before"));
    assert!(net.delivers(2, 1, b"before"));
    // The rebinding. Node 1 streams to node 2 (lost at node 2's NAT) and
    // talks to node 0, which answers "unneeded" and, after the handshake,
    // reports the new endpoint.
    net.filtering[2] = true;
    net.at[1] = rebound();
    net.events[1].clear();
    let rebound_at = net.now;
    let now = net.now;
    net.nodes[1].send(now, two, b"stream".to_vec()).unwrap();
    let zero = net.nodes[0].address();
    net.nodes[1].send(now, zero, b"hello".to_vec()).unwrap();
    net.run(Duration::from_millis(300));
    assert!(
        net.events[1]
            .iter()
            .any(|e| matches!(e, Event::MappingChanged { endpoint } if *endpoint == rebound())),
        "node 0 reported the new endpoint"
    );
    let dropped_at = net.events[1]
        .iter()
        .any(|e| matches!(e, Event::Disconnected { peer, .. } if *peer == two));
    assert!(
        dropped_at,
        "the link to node 2 was kept {:?} after the report",
        net.now - rebound_at
    );
    // Node 1's traffic reaches node 2 again at once (through node 0).
    assert!(net.delivers(1, 2, b"after"));
}

/// A ping and a data message claiming to be node 1, sent from a new
/// endpoint, move no link: a peer only answers with a two-byte "unneeded"
/// and waits for a handshake that proves node 1's key, which the attacker
/// cannot give.
#[test]
fn attack_unauthenticated_message_from_a_new_endpoint_moves_no_link() {
    let mut net = Net::ring(vec![key(1), key(2), key(3)]);
    let one = net.nodes[1].address();
    let two = net.nodes[2].address();
    let m = attacker_ep();
    let ping = Message::Ping {
        sender: one,
        nonce: 7,
    };
    let data = Message::Routed(Routed {
        source: one,
        destination: two,
        mode: Mode::Exact,
        hops: 0,
        hop_limit: 8,
        payload: Payload::Data(b"forged".to_vec()),
    });
    for _ in 0..5 {
        for msg in [&ping, &data] {
            let now = net.now;
            net.nodes[2].handle_input(now, m, &msg.to_vec()).unwrap();
            net.step();
        }
        net.run(Duration::from_secs(1));
    }
    assert_eq!(net.endpoint_of_link(2, one), Some(ep(1)), "link moved");
    assert!(net.nodes[2].connections().position_by_endpoint(m).is_none());
    assert!(
        !net.events[2]
            .iter()
            .any(|e| matches!(e, Event::Delivered { payload, .. } if payload == b"forged"))
    );
    // Nothing larger than what the attacker sent came back to it.
    for (_, to, msg) in &net.outside {
        if *to == m {
            assert!(
                matches!(msg, Message::Close { .. }),
                "{msg:?} sent to the attacker"
            );
        }
    }
    // Node 1, at its real endpoint, still reaches node 2 and back.
    assert!(net.delivers(1, 2, b"still here"));
    assert!(net.delivers(2, 1, b"and back"));
}

/// A forged `Close(Unneeded)` (source spoofed as node 0) makes node 1 link
/// to node 0 again by handshake, but node 0's signed report names node 1's
/// unchanged endpoint: no `MappingChanged`, and node 1's other links, even
/// those waiting for an answer, stay where they are.
#[test]
fn attack_forged_close_is_no_mapping_change() {
    let mut net = Net::ring_with(vec![key(1), key(2), key(3)], Duration::from_millis(500));
    let two = net.nodes[2].address();
    assert!(net.delivers(1, 2, b"before"));
    // Node 1 sends to node 2, and before any answer the forged close lands.
    let now = net.now;
    net.nodes[1].send(now, two, b"waiting".to_vec()).unwrap();
    let forged = Message::Close {
        reason: overlay_core::wire::CloseReason::Unneeded,
    };
    net.nodes[1]
        .handle_input(now, ep(0), &forged.to_vec())
        .unwrap();
    net.run(Duration::from_secs(3));
    assert!(
        !net.events[1]
            .iter()
            .any(|e| matches!(e, Event::MappingChanged { .. })),
        "a forged close raised MappingChanged"
    );
    assert!(
        !net.events[1].iter().any(|e| matches!(
            e,
            Event::Disconnected { peer, .. } if *peer == two
        )),
        "node 1 dropped its link to node 2"
    );
    assert_eq!(net.endpoint_of_link(1, two), Some(ep(2)));
    assert!(net.delivers(1, 2, b"after"));
}
