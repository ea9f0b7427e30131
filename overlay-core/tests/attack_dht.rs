//! Attacks on the DHT by a linked peer (or any member): overwriting,
//! evicting or replaying another writer's value, forging replies, and
//! growing a node's store or queue of pending requests. Each test fails
//! without the defence it names. Nodes are driven by hand in memory.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use overlay_core::dht::Quotas;
use overlay_core::record::{KeySigner, sign};
use overlay_core::wire::{
    DhtRequest, DhtStatus, MAX_VALUES_PER_KEY, Payload, Record, Replica, Routed,
};
use overlay_core::{Address, Config, Message, Mode, Node, RecordSigner};
use overlay_core::{DhtOutcome, Event};

const TTL: Duration = Duration::from_secs(600);

fn ep(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8 + 1], 7000))
}

fn index_of(e: SocketAddr) -> usize {
    match e.ip() {
        std::net::IpAddr::V4(ip) => usize::from(ip.octets()[3]) - 1,
        std::net::IpAddr::V6(_) => usize::MAX,
    }
}

fn config(i: usize) -> Config {
    Config {
        endpoints: vec![ep(i)],
        ..Config::default()
    }
}

/// Delivers everything in flight (through the encoding) and runs timers
/// for `duration` in 10 ms steps; returns each node's events.
fn pump(nodes: &mut [Node], now: &mut Instant, duration: Duration) -> Vec<Vec<Event>> {
    pump_filtered(nodes, now, duration, |_, _, _| true)
}

/// [`pump`], delivering only the datagrams `keep(from, to, message)`
/// passes (node indices).
fn pump_filtered(
    nodes: &mut [Node],
    now: &mut Instant,
    duration: Duration,
    mut keep: impl FnMut(usize, usize, &Message) -> bool,
) -> Vec<Vec<Event>> {
    let mut events = vec![Vec::new(); nodes.len()];
    let end = *now + duration;
    while *now < end {
        let mut in_flight = Vec::new();
        for (i, n) in nodes.iter_mut().enumerate() {
            while let Some(t) = n.poll_transmit() {
                in_flight.push((i, t));
            }
            while let Some(e) = n.poll_event() {
                events[i].push(e);
            }
        }
        for (from, t) in in_flight {
            let to = index_of(t.destination);
            if !keep(from, to, &t.message) {
                continue;
            }
            if let Some(n) = nodes.get_mut(to) {
                n.handle_input(*now, ep(from), &t.message.to_vec()).unwrap();
            }
        }
        *now += Duration::from_millis(10);
        for n in nodes.iter_mut() {
            if n.poll_timeout().is_some_and(|t| t <= *now) {
                n.handle_timeout(*now);
            }
        }
    }
    events
}

/// A ring of `configs.len()` nodes, joined and settled.
fn ring(configs: Vec<Config>, now: &mut Instant) -> Vec<Node> {
    let mut nodes: Vec<Node> = configs
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let name = format!("node-{i}");
            Node::new_with_insecure_seed(*now, c, Address::from_key(name.as_bytes()), i as u64)
        })
        .collect();
    nodes[0].join(*now, &[]).unwrap();
    for i in 1..nodes.len() {
        nodes[i].join(*now, &[ep(0)]).unwrap();
        pump(&mut nodes, now, Duration::from_secs(2));
    }
    pump(&mut nodes, now, Duration::from_secs(5));
    for n in &nodes {
        assert!(n.is_joined());
        assert_eq!(n.connections().len(), nodes.len() - 1);
    }
    nodes
}

/// A key whose responsible node is `nodes[target]`.
fn key_at(nodes: &[Node], target: usize, prefix: &str) -> Vec<u8> {
    (0..)
        .map(|i| format!("{prefix}-{i}").into_bytes())
        .find(|k| {
            let ka = Address::from_key(k);
            let d = |n: &Node| n.address().distance_to(ka);
            nodes.iter().all(|n| d(&nodes[target]) <= d(n))
        })
        .unwrap()
}

fn routed(source: Address, destination: Address, mode: Mode, payload: Payload) -> Message {
    Message::Routed(Routed {
        source,
        destination,
        mode,
        hops: 0,
        hop_limit: 64,
        payload,
    })
}

fn put(source: Address, id: u64, record: Record) -> Message {
    let destination = Address::from_key(&record.key);
    routed(
        source,
        destination,
        Mode::Closest,
        Payload::DhtRequest {
            id,
            request: Box::new(DhtRequest::Put(record)),
        },
    )
}

fn replica(record: Record, remaining_secs: u32) -> Message {
    Message::DhtStore(vec![Replica {
        record,
        remaining_secs,
    }])
}

/// The attacker's own key.
fn mallory() -> KeySigner {
    KeySigner::ed25519_from_seed(&[0x66; 32], 0)
}

fn dht_events(events: &[Event], want: u64) -> Vec<(DhtOutcome, Vec<Record>)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Dht {
                id,
                outcome,
                records,
                ..
            } if *id == want => Some((outcome.clone(), records.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn attack_overwrite_another_writers_value() {
    let mut now = Instant::now();
    let mut nodes = ring(vec![config(0), config(1)], &mut now);
    let (v, m) = (0, 1);
    let key = key_at(&nodes, v, "name");
    nodes[v].dht_put(now, &key, b"owner", TTL).unwrap();
    pump(&mut nodes, &mut now, Duration::from_secs(1));
    let owner = nodes[v].record_writer();
    let original = nodes[v].dht_store().get(now, &key)[0].clone();

    // Mallory rewrites the owner's record (newer version, her value) and
    // signs it with her own key; sends it as a put and as a replica.
    let mut evil = original.clone();
    evil.value = b"evil".to_vec();
    evil.version += 1;
    evil.signature = mallory().sign(&evil.signed_bytes()).unwrap();
    let m_addr = nodes[m].address();
    nodes[v]
        .handle_input(now, ep(m), &put(m_addr, 1, evil.clone()).to_vec())
        .unwrap();
    nodes[v]
        .handle_input(now, ep(m), &replica(evil, 600).to_vec())
        .unwrap();
    // And puts her own, correctly signed value under the same key.
    let own = sign(&mut mallory(), &key, b"evil", 600, b"").unwrap();
    nodes[v]
        .handle_input(now, ep(m), &put(m_addr, 2, own.clone()).to_vec())
        .unwrap();
    pump(&mut nodes, &mut now, Duration::from_secs(1));

    let stored = nodes[v].dht_store().get(now, &key);
    assert!(stored.contains(&original), "the owner's value stands");
    assert!(
        !stored
            .iter()
            .any(|r| r.writer == owner && r.value == b"evil"),
        "nothing under the owner's name but the owner's value"
    );
    assert!(nodes[v].stats().records_rejected.bad_signature >= 2);
    // A reader sees both values, each with its writer.
    let id = nodes[m].dht_get(now, &key).unwrap();
    let events = pump(&mut nodes, &mut now, Duration::from_secs(1));
    let (outcome, records) = dht_events(&events[m], id).remove(0);
    assert!(matches!(outcome, DhtOutcome::Ok(_)));
    let by = |w: &overlay_core::WriterKey| {
        records
            .iter()
            .find(|r| r.writer == *w)
            .map(|r| r.value.clone())
    };
    assert_eq!(by(&owner), Some(b"owner".to_vec()));
    assert_eq!(by(&own.writer), Some(b"evil".to_vec()));
}

#[test]
fn attack_evict_another_writers_value() {
    let mut now = Instant::now();
    let mut nodes = ring(vec![config(0), config(1)], &mut now);
    let (v, m) = (0, 1);
    let key = key_at(&nodes, v, "lease");
    let m_addr = nodes[m].address();
    // Mallory fills the key before the owner writes: as many values as a
    // key holds, all hers.
    let mut signer = mallory();
    for i in 0..MAX_VALUES_PER_KEY {
        let r = sign(&mut signer, &key, &[0, i as u8], 600, b"").unwrap();
        nodes[v]
            .handle_input(now, ep(m), &put(m_addr, 100 + i as u64, r).to_vec())
            .unwrap();
    }
    let id = nodes[v].dht_put(now, &key, b"owner", TTL).unwrap();
    let events = pump(&mut nodes, &mut now, Duration::from_secs(1));
    assert_eq!(
        dht_events(&events[v], id)[0].0,
        DhtOutcome::Ok(vec![]),
        "one writer holds one slot: the owner still gets in"
    );
    let original = nodes[v]
        .dht_store()
        .get(now, &key)
        .into_iter()
        .find(|r| r.value == b"owner")
        .unwrap();

    // She tries to cut the owner's value short: the genuine record
    // replayed with one second left, and a copy re-signed with a
    // one-second lifetime.
    nodes[v]
        .handle_input(now, ep(m), &replica(original.clone(), 1).to_vec())
        .unwrap();
    let mut short = original.clone();
    short.lifetime_secs = 1;
    short.version += 1;
    short.signature = mallory().sign(&short.signed_bytes()).unwrap();
    nodes[v]
        .handle_input(now, ep(m), &put(m_addr, 200, short).to_vec())
        .unwrap();
    pump(&mut nodes, &mut now, Duration::from_secs(10));
    assert!(
        nodes[v].dht_store().get(now, &key).contains(&original),
        "the owner's value outlives the attempts to expire it"
    );
}

#[test]
fn attack_replay_an_old_signed_value() {
    let mut now = Instant::now();
    let mut nodes = ring(vec![config(0), config(1)], &mut now);
    let (v, m) = (0, 1);
    let key = key_at(&nodes, v, "ip");
    nodes[v].dht_put(now, &key, b"old address", TTL).unwrap();
    pump(&mut nodes, &mut now, Duration::from_secs(1));
    // Mallory, a replica, kept the old signed record.
    let old = nodes[m].dht_store().get(now, &key)[0].clone();
    assert_eq!(old.value, b"old address");
    nodes[v].dht_put(now, &key, b"new address", TTL).unwrap();
    pump(&mut nodes, &mut now, Duration::from_secs(1));

    let m_addr = nodes[m].address();
    nodes[v]
        .handle_input(now, ep(m), &put(m_addr, 7, old.clone()).to_vec())
        .unwrap();
    nodes[v]
        .handle_input(now, ep(m), &replica(old, 600).to_vec())
        .unwrap();
    pump(&mut nodes, &mut now, Duration::from_secs(1));
    let values: Vec<Vec<u8>> = nodes[v]
        .dht_store()
        .get(now, &key)
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(values, vec![b"new address".to_vec()]);
    assert!(nodes[v].stats().records_rejected.stale >= 2);
}

#[test]
fn attack_forged_dht_reply() {
    let mut now = Instant::now();
    let mut nodes = ring(vec![config(0), config(1), config(2)], &mut now);
    let (v, m, c) = (0, 1, 2);
    let theirs = key_at(&nodes, m, "seen");
    let key = key_at(&nodes, c, "ca");
    nodes[c].dht_put(now, &key, b"real", TTL).unwrap();
    pump(&mut nodes, &mut now, Duration::from_secs(1));

    // Mallory sees one of the victim's request ids (she answers it).
    let seen = nodes[v].dht_get(now, &theirs).unwrap();
    pump(&mut nodes, &mut now, Duration::from_secs(1));
    // The victim asks another node; before the answer arrives Mallory
    // sends a reply "from" that node with ids near the one she saw, a
    // correctly signed (by her) value, and one claiming the real writer.
    let id = nodes[v].dht_get(now, &key).unwrap();
    let real_writer = nodes[c].record_writer();
    let mut claimed = sign(&mut mallory(), &key, b"forged", 600, b"").unwrap();
    claimed.writer = real_writer.clone();
    let hers = sign(&mut mallory(), &key, b"forged", 600, b"").unwrap();
    let (v_addr, c_addr) = (nodes[v].address(), nodes[c].address());
    for guess in seen.wrapping_sub(4)..=seen.wrapping_add(4) {
        let reply = routed(
            c_addr,
            v_addr,
            Mode::Exact,
            Payload::DhtReply {
                id: guess,
                status: DhtStatus::Ok,
                records: vec![hers.clone()],
            },
        );
        nodes[v].handle_input(now, ep(m), &reply.to_vec()).unwrap();
    }
    // Even knowing the id, a value cannot be put in the real writer's name.
    let reply = routed(
        c_addr,
        v_addr,
        Mode::Exact,
        Payload::DhtReply {
            id,
            status: DhtStatus::Ok,
            records: vec![claimed],
        },
    );
    nodes[v].handle_input(now, ep(m), &reply.to_vec()).unwrap();
    let events = pump(&mut nodes, &mut now, Duration::from_secs(1));
    let answers = dht_events(&events[v], id);
    assert_eq!(answers.len(), 1, "one answer per request");
    let (outcome, records) = &answers[0];
    assert!(
        !records.iter().any(|r| r.value == b"forged"),
        "no forged value believed: {outcome:?}"
    );
    assert!(nodes[v].stats().unmatched_replies >= 8);
    assert!(nodes[v].stats().records_rejected.bad_signature >= 1);
}

#[test]
fn attack_store_growth_from_one_writer() {
    let mut now = Instant::now();
    let mut small = config(0);
    small.dht_quotas = Quotas {
        keys_per_writer: 50,
        records: 100,
        ..Quotas::default()
    };
    let mut nodes = ring(vec![small, config(1)], &mut now);
    let (v, m) = (0, 1);
    // One writer pushes replicas under ever more keys.
    let mut signer = mallory();
    let records: Vec<Replica> = (0..90)
        .map(|i| Replica {
            record: sign(
                &mut signer,
                format!("junk-{i}").as_bytes(),
                &[0; 64],
                600,
                b"",
            )
            .unwrap(),
            remaining_secs: 600,
        })
        .collect();
    let before = nodes[v].dht_store().record_count();
    for chunk in records.chunks(32) {
        nodes[v]
            .handle_input(now, ep(m), &Message::DhtStore(chunk.to_vec()).to_vec())
            .unwrap();
    }
    let writer = records[0].record.writer.clone();
    assert_eq!(nodes[v].dht_store().writer_usage(&writer).0, 50);
    assert!(nodes[v].dht_store().record_count() <= 100);
    assert!(nodes[v].dht_store().record_count() > before);
    assert!(nodes[v].stats().records_rejected.quota >= 40);

    // Many writers (free keys) stop at the store's total; a routed put
    // over it gets a typed answer and changes nothing.
    let key = key_at(&nodes, v, "over");
    for s in 0..4u8 {
        let mut w = KeySigner::ed25519_from_seed(&[s; 32], 0);
        let batch: Vec<Replica> = (0..32)
            .map(|i| Replica {
                record: sign(&mut w, format!("sybil-{s}-{i}").as_bytes(), b"x", 600, b"").unwrap(),
                remaining_secs: 600,
            })
            .collect();
        nodes[v]
            .handle_input(now, ep(m), &Message::DhtStore(batch).to_vec())
            .unwrap();
    }
    assert!(nodes[v].dht_store().record_count() <= 100);
    let id = nodes[m].dht_put(now, &key, b"one more", TTL).unwrap();
    let count = nodes[v].dht_store().record_count();
    let events = pump(&mut nodes, &mut now, Duration::from_secs(1));
    assert_eq!(dht_events(&events[m], id)[0].0, DhtOutcome::QuotaExceeded);
    assert!(nodes[v].dht_store().record_count() <= count);
}

#[test]
fn attack_pending_request_growth_from_one_peer() {
    let mut now = Instant::now();
    let mut capped = config(0);
    capped.dht_max_pending_per_peer = 8;
    capped.dht_max_pending = 40;
    let mut nodes = ring(vec![capped, config(1)], &mut now);
    let (v, m) = (0, 1);
    let key = key_at(&nodes, v, "claim");
    let record = sign(&mut mallory(), &key, b"me", 600, b"").unwrap();
    let m_addr = nodes[m].address();
    let create = |source: Address, id: u64| {
        routed(
            source,
            Address::from_key(&key),
            Mode::Closest,
            Payload::DhtRequest {
                id,
                request: Box::new(DhtRequest::Create(record.clone())),
            },
        )
    };
    // Creates wait to be decided; one peer sends many.
    for id in 0..100 {
        nodes[v]
            .handle_input(now, ep(m), &create(m_addr, id).to_vec())
            .unwrap();
    }
    assert!(nodes[v].dht_pending() <= 8, "{}", nodes[v].dht_pending());
    // And under many claimed source addresses.
    for id in 0..100u64 {
        let source = Address::from_key(&id.to_be_bytes());
        nodes[v]
            .handle_input(now, ep(m), &create(source, 1000 + id).to_vec())
            .unwrap();
    }
    assert!(nodes[v].dht_pending() <= 40, "{}", nodes[v].dht_pending());
    assert!(nodes[v].stats().dht_requests_refused >= 150);
}

/// A node responsible for a key it lacks (its handoff was lost) asks the
/// near neighbours holding replicas before it answers "absent". Mallory,
/// one of them, learns the fetch's id and tries to hide the record: she
/// answers empty many times, "from" every other neighbour too (a routed
/// message's source is only a claim), and with a forged record in the
/// real writer's name and one for another key. Only one answer per
/// neighbour asked, over that neighbour's own link, counts toward
/// "nobody has it", and records are believed only if they are for the
/// key and correctly signed: the reader gets the real value from the
/// honest replicas.
#[test]
fn attack_fetch_replies_hide_a_record() {
    let mut now = Instant::now();
    let mut nodes = ring((0..4).map(config).collect(), &mut now);
    let r = 4;
    let late = Node::new_with_insecure_seed(now, config(r), Address::from_key(b"node-4"), 4);
    // A key the late node will be responsible for, written before it joins.
    let key = (0..)
        .map(|i| format!("hidden-{i}").into_bytes())
        .find(|k| {
            let ka = Address::from_key(k);
            let mine = late.address().distance_to(ka);
            nodes.iter().all(|n| mine < n.address().distance_to(ka))
        })
        .unwrap();
    nodes[0].dht_put(now, &key, b"real", TTL).unwrap();
    pump(&mut nodes, &mut now, Duration::from_secs(1));
    let mut nodes: Vec<Node> = nodes.into_iter().chain([late]).collect();
    nodes[r].join(now, &[ep(0)]).unwrap();
    // Its handoffs (and republishes) are lost.
    let no_store_to_r =
        |_: usize, to: usize, m: &Message| !(to == r && matches!(m, Message::DhtStore(_)));
    pump_filtered(&mut nodes, &mut now, Duration::from_secs(8), no_store_to_r);
    assert!(nodes[r].is_joined());
    assert!(
        !nodes[r].dht_store().contains(now, &key),
        "the handoff was lost"
    );

    let v = 1;
    let id = nodes[v].dht_get(now, &key).unwrap();
    let r_addr = nodes[r].address();
    // Step until the fetch reaches the replicas; note who was asked.
    let mut fetch: Option<u64> = None;
    let mut asked = Vec::new();
    let mut events = vec![Vec::new(); nodes.len()];
    for _ in 0..100 {
        let step = pump_filtered(
            &mut nodes,
            &mut now,
            Duration::from_millis(10),
            |_, to, m| {
                if let Message::Routed(Routed {
                    source,
                    mode: Mode::Exact,
                    payload: Payload::DhtRequest { id, request },
                    ..
                }) = m
                    && *source == r_addr
                    && matches!(**request, DhtRequest::Get { .. })
                {
                    fetch = Some(*id);
                    asked.push(to);
                }
                true
            },
        );
        for (all, new) in events.iter_mut().zip(step) {
            all.extend(new);
        }
        if fetch.is_some() {
            break;
        }
    }
    let fetch = fetch.expect("the responsible node asked its replicas");
    assert!(asked.len() >= 2, "asked {asked:?}");
    let m = asked[0];
    // Mallory's replies, before any honest one arrives.
    let real_writer = nodes[0].record_writer();
    let mut claimed = sign(&mut mallory(), &key, b"forged", 600, b"").unwrap();
    claimed.writer = real_writer;
    let other = sign(&mut mallory(), b"another key", b"forged", 600, b"").unwrap();
    for &a in &asked {
        let claim = nodes[a].address();
        for records in [vec![], vec![claimed.clone()], vec![other.clone()], vec![]] {
            let reply = routed(
                claim,
                r_addr,
                Mode::Exact,
                Payload::DhtReply {
                    id: fetch,
                    status: DhtStatus::Ok,
                    records,
                },
            );
            nodes[r].handle_input(now, ep(m), &reply.to_vec()).unwrap();
        }
    }
    // Mallory's own store would give the record away: drop her real reply.
    let step = pump_filtered(
        &mut nodes,
        &mut now,
        Duration::from_secs(2),
        |from, to, msg| {
            !(from == m
                && to == r
                && matches!(msg, Message::Routed(Routed { payload: Payload::DhtReply { id, .. }, .. }) if *id == fetch))
        },
    );
    for (all, new) in events.iter_mut().zip(step) {
        all.extend(new);
    }
    let answers = dht_events(&events[v], id);
    assert_eq!(answers.len(), 1, "one answer per request");
    let (outcome, records) = &answers[0];
    assert_eq!(
        *outcome,
        DhtOutcome::Ok(vec![b"real".to_vec()]),
        "the honest replicas' record reached the reader: {records:?}"
    );
    let stats = nodes[r].stats();
    assert!(stats.records_rejected.bad_signature >= 1);
    assert!(stats.dht_fetches_sent >= 1);
}
