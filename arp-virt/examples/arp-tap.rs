//! Serve proxy ARP for the virtual gateway on a TAP device.
//!
//! ```text
//! arp-tap --tap NAME --network CIDR --gateway-mac MAC
//!         [--gateway IP] [--guest IP] [--held IP]... [--verbose]
//! ```
//!
//! Attaches to (or creates) the Layer-2 TAP device NAME, brings it up, writes
//! a gratuitous ARP for the gateway, then answers every who-has the guest
//! sends for an address of CIDR (except `--guest`) with the gateway MAC.
//! `--held` addresses count as held by other virtual hosts: probes and
//! announcements of them are refused and reported. Prints `ready` on stdout
//! once the device is open.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::Ipv4Addr;

use arp_virt::{Config, EthernetAddress, Event, Ipv4Net, Outcome, Responder};
use clap::Parser;
use tun_rs::{DeviceBuilder, Layer};

/// Serve proxy ARP for the virtual gateway on a TAP device.
#[derive(Debug, Parser)]
struct Args {
    /// TAP device name.
    #[arg(long)]
    tap: String,
    /// The virtual network, such as 10.10.0.0/16.
    #[arg(long)]
    network: Ipv4Net,
    /// The gateway's virtual MAC, such as 02:77:6f:77:00:01.
    #[arg(long, value_parser = parse_mac)]
    gateway_mac: EthernetAddress,
    /// The gateway's address (default: the network's first host address).
    #[arg(long)]
    gateway: Option<Ipv4Addr>,
    /// The guest's own address, never answered for.
    #[arg(long)]
    guest: Option<Ipv4Addr>,
    /// An address another virtual host holds (repeatable).
    #[arg(long)]
    held: Vec<Ipv4Addr>,
    /// Log every frame handled.
    #[arg(long)]
    verbose: bool,
}

fn parse_mac(s: &str) -> Result<EthernetAddress, String> {
    s.parse().map_err(|_| format!("not a MAC address: {s}"))
}

fn main() {
    let args = Args::parse();
    let mut config = Config::new(args.network, args.gateway_mac);
    if let Some(gateway) = args.gateway {
        config.gateway_addr = gateway;
    }
    config.guest_addr = args.guest;
    let mut responder = match Responder::new(config) {
        Ok(responder) => responder,
        Err(error) => {
            eprintln!("arp-tap: {error}");
            std::process::exit(2);
        }
    };
    let held = args.held;
    let others = |addr: Ipv4Addr| held.contains(&addr);

    let device = DeviceBuilder::new()
        .name(&args.tap)
        .layer(Layer::L2)
        .enable(true)
        .build_sync()
        .unwrap_or_else(|error| {
            eprintln!("arp-tap: cannot open TAP {}: {error}", args.tap);
            std::process::exit(1);
        });
    let config = responder.config();
    eprintln!(
        "arp-tap: serving {} on {} as {} at {}",
        config.network, args.tap, config.gateway_addr, config.gateway_hardware_addr
    );
    while let Some(transmit) = responder.poll_transmit() {
        device.send(transmit.as_bytes()).expect("send announcement");
    }
    println!("ready");
    std::io::stdout().flush().ok();

    let mut buf = vec![0u8; 65_536];
    loop {
        let len = match device.recv(&mut buf) {
            Ok(len) => len,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => {
                eprintln!("arp-tap: read from {}: {error}", args.tap);
                std::process::exit(1);
            }
        };
        let frame = &buf[..len];
        match responder.handle_frame(frame, &others) {
            Ok(Outcome::Reply(reply)) => {
                if args.verbose {
                    eprintln!("arp-tap: {}", reply.repr());
                }
                if let Err(error) = device.send(reply.as_bytes()) {
                    eprintln!("arp-tap: write to {}: {error}", args.tap);
                }
            }
            Ok(Outcome::Ignored(reason)) => {
                if args.verbose && arp_virt::wire::is_arp(frame) {
                    eprintln!("arp-tap: ignored {reason:?}");
                }
            }
            Err(error) => eprintln!("arp-tap: malformed frame: {error}"),
        }
        while let Some(event) = responder.poll_event() {
            match event {
                Event::Conflict(conflict) => eprintln!(
                    "arp-tap: conflict: guest {} claims {} ({:?})",
                    conflict.guest_hardware_addr, conflict.addr, conflict.kind
                ),
                other => eprintln!("arp-tap: {other:?}"),
            }
        }
    }
}
