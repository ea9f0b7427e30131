//! A STUN client: ask one or more servers for our reflexive address and
//! classify the NAT in front of us.
//!
//! ```text
//! stun --bind 0.0.0.0:5000 192.0.2.1:3478 [198.51.100.1:3478 ...]
//! ```
//!
//! Prints one `observer=ADDR mapped=ADDR rtt_us=N` line per server, then
//! `mapping=... filtering=... reflexive=ADDR`. Exits 1 when no server
//! answered. (A STUN server is `punch rendezvous --listen ADDR`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use nat_traversal::discovery::{Discovery, DiscoveryConfig, DiscoveryEvent};

#[derive(Parser)]
#[command(about = "STUN Binding client with NAT classification")]
struct Cli {
    /// Local UDP address.
    #[arg(long, default_value = "0.0.0.0:0")]
    bind: SocketAddr,
    /// STUN servers.
    #[arg(required = true)]
    servers: Vec<SocketAddr>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let socket = UdpSocket::bind(cli.bind).expect("bind");
    let local = socket.local_addr().unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut d = Discovery::new(
        DiscoveryConfig {
            observers: cli.servers,
            local: Some(local),
            ..DiscoveryConfig::default()
        },
        Instant::now(),
        seed,
    )
    .expect("config");
    let mut buf = [0u8; 2048];
    loop {
        while let Some(t) = d.poll_transmit() {
            let _ = socket.send_to(&t.payload, t.destination);
        }
        if let Some(DiscoveryEvent::Complete(report)) = d.poll_event() {
            for o in &report.observations {
                println!(
                    "observer={} mapped={} rtt_us={}",
                    o.observer,
                    o.mapped.map_or("none".into(), |m| m.to_string()),
                    o.rtt.map_or(0, |r| r.as_micros())
                );
            }
            println!(
                "mapping={:?} filtering={:?} reflexive={}",
                report.mapping,
                report.filtering,
                report.reflexive.map_or("none".into(), |m| m.to_string())
            );
            return if report.reflexive.is_some() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
        let Some(at) = d.poll_timeout() else {
            return ExitCode::FAILURE;
        };
        let wait = at
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        socket.set_read_timeout(Some(wait)).unwrap();
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            d.handle_input(Instant::now(), from, &buf[..n]);
        }
        d.handle_timeout(Instant::now());
    }
}
