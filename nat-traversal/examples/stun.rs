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
//!
//! With `--keepalive-secs N` it then keeps the binding to the first server
//! alive for N seconds with the adaptive keep-alive, printing every event
//! and finally `keepalive proven_ms=.. interval_ms=.. changes=..`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use nat_traversal::discovery::{Discovery, DiscoveryConfig, DiscoveryEvent};
use nat_traversal::keepalive::{KeepAlive, KeepAliveConfig, KeepAliveEvent};

#[derive(Parser)]
#[command(about = "STUN Binding client with NAT classification")]
struct Cli {
    /// Local UDP address.
    #[arg(long, default_value = "0.0.0.0:0")]
    bind: SocketAddr,
    /// STUN servers.
    #[arg(required = true)]
    servers: Vec<SocketAddr>,
    /// Run the adaptive keep-alive for this many seconds after discovery.
    #[arg(long)]
    keepalive_secs: Option<u64>,
    /// First keep-alive interval, milliseconds.
    #[arg(long, default_value_t = 15_000)]
    keepalive_initial_ms: u64,
    /// Smallest keep-alive interval, milliseconds.
    #[arg(long, default_value_t = 5_000)]
    keepalive_min_ms: u64,
    /// Bisection resolution, milliseconds.
    #[arg(long, default_value_t = 2_000)]
    keepalive_resolution_ms: u64,
}

fn keepalive(cli: &Cli, socket: &UdpSocket) {
    let Some(secs) = cli.keepalive_secs else {
        return;
    };
    let config = KeepAliveConfig {
        initial_interval: Duration::from_millis(cli.keepalive_initial_ms),
        min_interval: Duration::from_millis(cli.keepalive_min_ms),
        resolution: Duration::from_millis(cli.keepalive_resolution_ms),
        response_timeout: Duration::from_millis(500),
        ..KeepAliveConfig::default()
    };
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut k = KeepAlive::new(start, config, cli.servers[0]).expect("config");
    let mut changes = 0;
    let mut buf = [0u8; 2048];
    while Instant::now() < end {
        while let Some(t) = k.poll_transmit() {
            let _ = socket.send_to(&t.payload, t.destination);
        }
        let at = k.poll_timeout().unwrap_or(end).min(end);
        let wait = at
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        socket.set_read_timeout(Some(wait)).unwrap();
        if let Ok((n, from)) = socket.recv_from(&mut buf)
            && k.handle_input(Instant::now(), from, &buf[..n])
        {
            println!(
                "t_ms={} mapped={} interval_ms={}",
                start.elapsed().as_millis(),
                k.mapped().map_or("none".into(), |m| m.to_string()),
                k.interval().as_millis()
            );
        }
        k.handle_timeout(Instant::now());
        while let Some(e) = k.poll_event() {
            if matches!(e, KeepAliveEvent::MappingChanged { .. }) {
                changes += 1;
            }
            println!("event {e:?}");
        }
    }
    println!(
        "keepalive proven_ms={} interval_ms={} changes={changes}",
        k.proven_lifetime().map_or(0, |p| p.as_millis()),
        k.interval().as_millis()
    );
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let socket = UdpSocket::bind(cli.bind).expect("bind");
    let local = socket.local_addr().unwrap();
    let mut d = Discovery::new(
        Instant::now(),
        DiscoveryConfig {
            observers: cli.servers.clone(),
            local: Some(local),
            ..DiscoveryConfig::default()
        },
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
            keepalive(&cli, &socket);
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
