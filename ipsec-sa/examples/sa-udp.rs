//! Protected traffic between virtual hosts over UDP: the sans-IO endpoint
//! driven by a blocking socket loop.
//!
//! ```text
//! sa-udp --ip 10.1.0.1 --cert a.pem --key a.key --ca ca.pem [--crl crl.pem] \
//!        --bind 0.0.0.0:4500 --peer 10.1.0.2=192.0.2.2:4500 \
//!        [--send 1000 --size 1400 --interval-us 100] [--expect 1000] [--duration 10]
//! ```
//!
//! Certificates and keys are PEM, as `wow-ca` (ipsec-ca) writes them. Each
//! `--peer` maps a virtual IP to the UDP address it is reached at; the
//! source of a datagram tells which virtual IP sent it. With `--send N` it
//! sends N packets to every peer (a handshake first); it exits once it has
//! received `--expect` packets or after `--duration` seconds, printing
//! `sent=.. received=.. rejected=.. elapsed_ms=..` and a non-zero status if
//! fewer than expected arrived.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::fs;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use ipsec_ca::{NodeKey, Verifier};
use ipsec_sa::{Config, Endpoint, LocalIdentity, OpenOutput, Policy, SealOutput};

#[derive(Parser)]
struct Args {
    /// This host's virtual IP.
    #[arg(long)]
    ip: IpAddr,
    /// This host's certificate (PEM).
    #[arg(long)]
    cert: PathBuf,
    /// This host's private key (PEM, PKCS#8).
    #[arg(long)]
    key: PathBuf,
    /// The CA certificate (PEM).
    #[arg(long)]
    ca: PathBuf,
    /// A CRL (PEM or DER).
    #[arg(long)]
    crl: Option<PathBuf>,
    /// The private prefix.
    #[arg(long, default_value = "10.0.0.0/8")]
    prefix: ipnet::IpNet,
    /// UDP address to bind.
    #[arg(long)]
    bind: SocketAddr,
    /// VIRTUAL_IP=UDP_ADDRESS of a peer (repeatable).
    #[arg(long = "peer", value_parser = parse_peer)]
    peers: Vec<(IpAddr, SocketAddr)>,
    /// Packets to send to each peer.
    #[arg(long, default_value_t = 0)]
    send: u64,
    /// Plaintext size of each packet (at least 8).
    #[arg(long, default_value_t = 1400)]
    size: usize,
    /// Microseconds between packets.
    #[arg(long, default_value_t = 100)]
    interval_us: u64,
    /// Exit after receiving this many packets.
    #[arg(long)]
    expect: Option<u64>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 10)]
    duration: u64,
}

fn parse_peer(s: &str) -> Result<(IpAddr, SocketAddr), String> {
    let (ip, addr) = s.split_once('=').ok_or("expected VIRTUAL_IP=UDP_ADDRESS")?;
    Ok((
        ip.parse().map_err(|e| format!("{e}"))?,
        addr.parse().map_err(|e| format!("{e}"))?,
    ))
}

fn pem_or_der(path: &PathBuf, tag: &str) -> Vec<u8> {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    match std::str::from_utf8(&bytes) {
        Ok(text) if text.contains("-----BEGIN") => ipsec_ca::key::from_pem(tag, text).unwrap(),
        _ => bytes,
    }
}

fn flush(
    endpoint: &mut Endpoint<Verifier>,
    socket: &UdpSocket,
    by_ip: &HashMap<IpAddr, SocketAddr>,
) {
    while let Some(t) = endpoint.poll_transmit() {
        if let Some(addr) = by_ip.get(&t.destination) {
            let _ = socket.send_to(&t.payload, addr);
        }
    }
    while let Some(event) = endpoint.poll_event() {
        eprintln!("{event:?}");
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let cert = pem_or_der(&args.cert, "CERTIFICATE");
    let key = NodeKey::from_pem(&fs::read_to_string(&args.key).unwrap()).unwrap();
    let (start, wall) = (Instant::now(), SystemTime::now());
    let mut verifier = Verifier::new(&pem_or_der(&args.ca, "CERTIFICATE")).unwrap();
    if let Some(crl) = &args.crl {
        verifier
            .set_crl(wall, &pem_or_der(crl, "X509 CRL"))
            .unwrap();
    }
    let config = Config {
        local_ip: args.ip,
        policy: Policy::protect(args.prefix),
        ..Config::default()
    };
    let identity = LocalIdentity::from_pkcs8(&cert, key.pkcs8_der()).unwrap();
    let mut endpoint = Endpoint::new(start, wall, config, identity, verifier);

    let socket = UdpSocket::bind(args.bind).unwrap();
    let by_ip: HashMap<IpAddr, SocketAddr> = args.peers.iter().copied().collect();
    let by_addr: HashMap<SocketAddr, IpAddr> = args.peers.iter().map(|(i, a)| (*a, *i)).collect();
    let total = args.send * by_ip.len() as u64;
    let interval = Duration::from_micros(args.interval_us);
    let (mut sent, mut received, mut rejected) = (0u64, 0u64, 0u64);
    let mut out = Vec::with_capacity(2048);
    let mut buf = vec![0u8; 65_536];
    let deadline = start + Duration::from_secs(args.duration);
    let mut payload = vec![0x5au8; args.size.max(8)];
    let mut next_send = start;

    loop {
        let now = Instant::now();
        // Paced sending, one packet to each peer per interval. Without an
        // SA the packet waits in the endpoint's queue while it negotiates.
        if sent < total && now >= next_send {
            for (&peer_ip, &addr) in &by_ip {
                payload[..8].copy_from_slice(&sent.to_be_bytes());
                match endpoint.seal(now, peer_ip, &payload, &mut out).unwrap() {
                    SealOutput::Sealed => drop(socket.send_to(&out, addr)),
                    SealOutput::Bypass => drop(socket.send_to(&payload, addr)),
                    SealOutput::HandshakeNeeded => {}
                }
                sent += 1;
            }
            // While negotiating, queue only one packet per peer.
            let negotiating = by_ip.keys().any(|ip| !endpoint.has_sa(*ip));
            next_send = if negotiating {
                now + Duration::from_millis(500)
            } else {
                now + interval
            };
        }
        flush(&mut endpoint, &socket, &by_ip);
        if args.expect.is_some_and(|n| received >= n) && sent >= total {
            break;
        }
        if now >= deadline {
            break;
        }
        // Wait for a datagram, the next timer or the next send.
        let mut wake = deadline;
        if let Some(at) = endpoint.poll_timeout() {
            wake = wake.min(at);
        }
        if sent < total {
            wake = wake.min(next_send);
        }
        let wait = wake
            .saturating_duration_since(now)
            .max(Duration::from_micros(1));
        socket.set_read_timeout(Some(wait)).unwrap();
        if let Ok((len, from)) = socket.recv_from(&mut buf)
            && let Some(&peer_ip) = by_addr.get(&from)
        {
            match endpoint.open(Instant::now(), peer_ip, &mut buf[..len]) {
                Ok(OpenOutput::Plaintext(_)) => received += 1,
                Ok(_) => {}
                Err(e) => {
                    rejected += 1;
                    if rejected <= 5 {
                        eprintln!("rejected from {peer_ip}: {e}");
                    }
                }
            }
        }
        let now = Instant::now();
        if endpoint.poll_timeout().is_some_and(|at| at <= now) {
            endpoint.handle_timeout(now);
        }
        // New SAs: send the queued packets at once.
        if sent < total && by_ip.keys().all(|ip| endpoint.has_sa(*ip)) {
            next_send = next_send.min(now);
        }
    }
    let elapsed = start.elapsed().as_millis();
    println!("sent={sent} received={received} rejected={rejected} elapsed_ms={elapsed}");
    if args.expect.is_some_and(|n| received < n) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
