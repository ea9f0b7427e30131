//! Ask a gateway for a UDP port mapping with PCP or NAT-PMP.
//!
//! ```text
//! portmap --gateway 192.168.1.1 [--bind 0.0.0.0:4000] [--lifetime-secs 7200] [--hold-secs 30] [--nat-pmp]
//! ```
//!
//! Prints `mapped external=ADDR lifetime_secs=N internal_port=N` and
//! `protocol=Pcp|NatPmp` (or `unavailable` and exit 1), then holds the mapping for `--hold-secs`,
//! printing `received from=ADDR text=...` for every datagram that arrives
//! on the mapped socket, and finally deletes the mapping and prints
//! `closed`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use nat_traversal::portmap::wire::SERVER_PORT;
use nat_traversal::portmap::{PortMapConfig, PortMapEvent, PortMapper};

#[derive(Parser)]
#[command(about = "PCP / NAT-PMP port mapping client")]
struct Cli {
    /// The gateway (router) address.
    #[arg(long)]
    gateway: IpAddr,
    /// Local UDP address whose port to map.
    #[arg(long, default_value = "0.0.0.0:0")]
    bind: SocketAddr,
    /// Requested lifetime, seconds.
    #[arg(long, default_value_t = 7200)]
    lifetime_secs: u64,
    /// How long to hold the mapping before deleting it, seconds.
    #[arg(long, default_value_t = 0)]
    hold_secs: u64,
    /// Ask with NAT-PMP only (no PCP first).
    #[arg(long)]
    nat_pmp: bool,
    /// First retransmission interval, milliseconds.
    #[arg(long, default_value_t = 250)]
    initial_rto_ms: u64,
}

/// Our address towards `gateway`, as the routing table chooses it.
fn local_ip_towards(gateway: IpAddr) -> IpAddr {
    let any: SocketAddr = match gateway {
        IpAddr::V4(_) => "0.0.0.0:0".parse().unwrap(),
        IpAddr::V6(_) => "[::]:0".parse().unwrap(),
    };
    let probe = UdpSocket::bind(any).expect("bind probe socket");
    probe
        .connect((gateway, SERVER_PORT))
        .expect("route to gateway");
    probe.local_addr().expect("local address").ip()
}

/// Run `mapper` on `socket` until `until`, or until `stop` says so for an
/// event. Prints datagrams that are not the mapper's.
fn drive(
    mapper: &mut PortMapper,
    socket: &UdpSocket,
    until: Instant,
    mut stop: impl FnMut(&PortMapEvent) -> bool,
) -> bool {
    let mut buf = [0u8; 1500];
    loop {
        while let Some(t) = mapper.poll_transmit() {
            let _ = socket.send_to(&t.payload, t.destination);
        }
        while let Some(event) = mapper.poll_event() {
            if stop(&event) {
                return true;
            }
        }
        let now = Instant::now();
        if now >= until {
            return false;
        }
        let at = mapper.poll_timeout().unwrap_or(until).min(until);
        socket
            .set_read_timeout(Some(
                at.saturating_duration_since(now)
                    .max(Duration::from_millis(1)),
            ))
            .unwrap();
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                if !mapper.handle_datagram(Instant::now(), from, &buf[..n]) {
                    println!(
                        "received from={from} text={}",
                        String::from_utf8_lossy(&buf[..n]).trim_end()
                    );
                }
            }
            Err(_) => mapper.handle_timeout(Instant::now()),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let socket = UdpSocket::bind(cli.bind).expect("bind");
    let port = socket.local_addr().expect("local address").port();
    let mut config = PortMapConfig::new(cli.gateway, local_ip_towards(cli.gateway), port);
    config.lifetime = Duration::from_secs(cli.lifetime_secs);
    config.initial_rto = Duration::from_millis(cli.initial_rto_ms);
    config.try_pcp = !cli.nat_pmp;
    let mut mapper = PortMapper::new(Instant::now(), config).expect("config");

    let far = Instant::now() + Duration::from_secs(600);
    let mut mapped = false;
    drive(&mut mapper, &socket, far, |event| {
        match event {
            PortMapEvent::Mapped { external, lifetime } => {
                mapped = true;
                println!(
                    "mapped external={external} lifetime_secs={} internal_port={port}",
                    lifetime.as_secs()
                );
            }
            other => println!("{other:?}"),
        }
        true
    });
    if !mapped {
        println!("unavailable");
        return ExitCode::FAILURE;
    }
    println!("protocol={:?}", mapper.protocol().expect("mapped"));
    let hold = Instant::now() + Duration::from_secs(cli.hold_secs);
    drive(&mut mapper, &socket, hold, |event| {
        println!("{event:?}");
        matches!(event, PortMapEvent::Lost)
    });
    mapper.close(Instant::now());
    let closed = drive(&mut mapper, &socket, far, |event| {
        matches!(event, PortMapEvent::Closed)
    });
    if closed {
        println!("closed");
    }
    ExitCode::SUCCESS
}
