//! The split path: seal and open jobs run on other threads
//! ([`Endpoint::prepare_seal`], [`Endpoint::prepare_open`],
//! [`Endpoint::complete_open`]), with the attacks that target it: a
//! replayed packet opened twice in parallel, a forged packet opened on a
//! worker, a packet whose SA was replaced or expired while it was being
//! opened.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use ipsec_sa::wire::HEADER_LEN;
use ipsec_sa::{OpenJob, OpenOutput, Opened, PreparedOpen, PreparedSeal, Rejection, SealJob};

/// A's packet for B with headroom, as the split path takes it.
fn headroom(data: &[u8]) -> Vec<u8> {
    let mut buffer = vec![0; HEADER_LEN];
    buffer.extend_from_slice(data);
    buffer
}

/// Prepares `data` on A for B; the job.
fn prepare_a(p: &mut Pair, data: &[u8]) -> SealJob {
    let now = p.clock.now();
    let mut buffer = headroom(data);
    match p.a.prepare_seal(now, p.b_ip, &mut buffer).unwrap() {
        PreparedSeal::Job(job) => {
            assert!(buffer.is_empty());
            job
        }
        other => panic!("{other:?}"),
    }
}

/// Prepares a datagram from A on B; the job.
fn prepare_b(p: &mut Pair, mut datagram: Vec<u8>) -> Result<OpenJob, Rejection> {
    let now = p.clock.now();
    p.b.prepare_open(now, p.a_ip, &mut datagram)
        .map(|prepared| match prepared {
            PreparedOpen::Job(job) => job,
            PreparedOpen::Handshake => panic!("handshake"),
        })
}

fn complete_b(p: &mut Pair, opened: &Opened) -> Result<Vec<u8>, Rejection> {
    let now = p.clock.now();
    p.b.complete_open(now, p.a_ip, opened).map(|o| match o {
        OpenOutput::Plaintext(x) => x.to_vec(),
        other => panic!("{other:?}"),
    })
}

/// Runs jobs on a thread, as a worker pool would.
fn on_worker<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(job).join().unwrap()
}

#[test]
fn split_path_carries_traffic_like_the_inline_one() {
    let (mut p, _ca) = Pair::new();
    p.establish();
    // A batch: all sealed on a worker, then all opened on another.
    let jobs: Vec<SealJob> = (0..64u8).map(|i| prepare_a(&mut p, &[i; 100])).collect();
    let packets = on_worker(move || {
        jobs.into_iter()
            .map(|j| j.seal().unwrap())
            .collect::<Vec<_>>()
    });
    let jobs: Vec<OpenJob> = packets
        .into_iter()
        .map(|d| prepare_b(&mut p, d).unwrap())
        .collect();
    let opened = on_worker(move || jobs.into_iter().map(OpenJob::open).collect::<Vec<_>>());
    for (i, o) in opened.iter().enumerate() {
        assert_eq!(complete_b(&mut p, o).unwrap(), [i as u8; 100]);
    }
    // Mixed with the inline path on the same SAs: one sequence, one window.
    p.send(true, b"inline");
    p.drive();
    assert_eq!(p.to_b, vec![b"inline".to_vec()]);
    assert!(p.rejections_b.is_empty());
    assert_eq!(p.b.stats().replayed + p.b.stats().authentication_failed, 0);
}

#[test]
fn split_seal_without_sa_queues_and_bypasses_like_seal() {
    let (mut p, _ca) = Pair::new();
    let now = p.clock.now();
    let mut buffer = headroom(b"first");
    let b_ip = p.b_ip;
    assert!(matches!(
        p.a.prepare_seal(now, b_ip, &mut buffer),
        Ok(PreparedSeal::HandshakeNeeded)
    ));
    assert_eq!(buffer, headroom(b"first"));
    let public = ip("10.1.0.254");
    assert!(matches!(
        p.a.prepare_seal(now, public, &mut buffer),
        Ok(PreparedSeal::Bypass)
    ));
    assert_eq!(buffer, headroom(b"first"));
    p.collect();
    p.drive();
    // The queued packet went out once the SA was up.
    assert_eq!(p.to_b, vec![b"first".to_vec()]);
}

/// The same packet twice: both copies pass the early check and are opened
/// (in parallel, on workers) before either is accepted. The second is a
/// replay.
#[test]
fn attack_replayed_packet_on_the_worker_path_is_delivered_once() {
    let (mut p, _ca) = Pair::new();
    p.establish();
    let packet = prepare_a(&mut p, b"once").seal().unwrap();
    let first = prepare_b(&mut p, packet.clone()).unwrap();
    let second = prepare_b(&mut p, packet.clone()).unwrap();
    let (first, second) = on_worker(move || (first.open(), second.open()));
    assert_eq!(complete_b(&mut p, &first).unwrap(), b"once");
    assert_eq!(complete_b(&mut p, &second), Err(Rejection::Replayed(2)));
    // And once accepted, the early check refuses it outright.
    assert_eq!(
        prepare_b(&mut p, packet).unwrap_err(),
        Rejection::Replayed(2)
    );
    assert_eq!(p.b.stats().replayed, 2);
}

/// A forged packet with a sequence number far ahead, opened on a worker:
/// refused, and the window did not move (else every genuine packet behind
/// it would now be refused as outside the window).
#[test]
fn attack_forged_packet_on_the_worker_path_moves_nothing() {
    let (mut p, _ca) = Pair::new();
    p.establish();
    let genuine: Vec<Vec<u8>> = (0..3u8)
        .map(|i| prepare_a(&mut p, &[i; 40]).seal().unwrap())
        .collect();
    let mut forged = genuine[0].clone();
    forged[4..HEADER_LEN].copy_from_slice(&1_000_000u64.to_be_bytes());
    let job = prepare_b(&mut p, forged).unwrap();
    let opened = on_worker(move || job.open());
    assert_eq!(opened.plaintext(), None);
    assert_eq!(complete_b(&mut p, &opened), Err(Rejection::Authentication));
    assert_eq!(p.b.stats().authentication_failed, 1);
    // Flipped bits in the ciphertext: refused the same way.
    let mut tampered = genuine[1].clone();
    tampered[HEADER_LEN] ^= 1;
    let job = prepare_b(&mut p, tampered).unwrap();
    assert_eq!(
        complete_b(&mut p, &job.open()),
        Err(Rejection::Authentication)
    );
    for (i, packet) in genuine.into_iter().enumerate() {
        let job = prepare_b(&mut p, packet).unwrap();
        assert_eq!(complete_b(&mut p, &job.open()).unwrap(), [i as u8; 40]);
    }
}

/// A packet being opened while its SA reaches its hard lifetime, or is
/// deleted: refused when it comes back, though it authenticated.
#[test]
fn attack_packet_for_an_expired_sa_on_the_worker_path_is_refused() {
    let (mut p, _ca) = Pair::new();
    p.establish();
    let packet = prepare_a(&mut p, b"late").seal().unwrap();
    let job = prepare_b(&mut p, packet.clone()).unwrap();
    let spi = job.spi();
    let opened = on_worker(move || job.open());
    assert!(opened.plaintext().is_some());
    // The inbound SA's hard lifetime: the outbound one's plus the drain.
    let lifetime = p.b.config().reject_after + p.b.config().drain_timeout;
    p.clock.advance(lifetime);
    assert_eq!(complete_b(&mut p, &opened), Err(Rejection::UnknownSpi(spi)));
    // Once the endpoint deleted the SA, the same.
    let now = p.clock.now();
    p.b.handle_timeout(now);
    assert!(!p.b.inbound_spis(p.a_ip).contains(&spi));
    assert_eq!(complete_b(&mut p, &opened), Err(Rejection::UnknownSpi(spi)));
    assert_eq!(
        prepare_b(&mut p, packet).unwrap_err(),
        Rejection::UnknownSpi(spi)
    );
}

/// A packet prepared under A's first SA, opened while A and B rekey and
/// the old SA is drained and deleted: refused, and the new SA's window is
/// untouched (its first packet is still accepted).
#[test]
fn attack_packet_for_a_rekeyed_sa_on_the_worker_path_is_refused() {
    let (mut p, _ca) = Pair::new();
    p.establish();
    let old_packet = prepare_a(&mut p, b"old").seal().unwrap();
    let job = prepare_b(&mut p, old_packet).unwrap();
    let old_spi = job.spi();
    let opened = on_worker(move || job.open());
    // Rekey by time, then let the old inbound SA drain and go.
    let rekey_after = p.a.config().rekey_after;
    p.clock.advance(rekey_after + Duration::from_secs(1));
    p.send(true, b"after rekey");
    p.drive();
    p.send(true, b"on the new SA");
    p.drive();
    let drain = p.b.config().drain_timeout;
    let until = p.clock.now() + drain + Duration::from_secs(1);
    p.run_until(until);
    assert!(!p.b.inbound_spis(p.a_ip).contains(&old_spi));
    assert_eq!(
        complete_b(&mut p, &opened),
        Err(Rejection::UnknownSpi(old_spi))
    );
    let packet = prepare_a(&mut p, b"new").seal().unwrap();
    let job = prepare_b(&mut p, packet).unwrap();
    assert_ne!(job.spi(), old_spi);
    assert_eq!(complete_b(&mut p, &job.open()).unwrap(), b"new");
}

/// A packet from B's peer A, completed as if it came from another host:
/// refused (the SA is A's).
#[test]
fn attack_opened_packet_claimed_by_another_source_is_refused() {
    let (mut p, _ca) = Pair::new();
    p.establish();
    let packet = prepare_a(&mut p, b"x").seal().unwrap();
    let opened = prepare_b(&mut p, packet).unwrap().open();
    let now = p.clock.now();
    assert!(matches!(
        p.b.complete_open(now, ip("10.1.0.9"), &opened),
        Err(Rejection::WrongPeer { .. })
    ));
    assert_eq!(complete_b(&mut p, &opened).unwrap(), b"x");
}
