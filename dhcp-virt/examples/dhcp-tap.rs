//! Serve DHCP and ARP on a TAP device, as a WOW node does for its guest.
//!
//! The kernel side of the TAP is the guest's interface: run an ordinary DHCP
//! client on it (`dhclient TAP`, `udhcpc -i TAP`) and it gets its address
//! from this program, which answers DHCP with `dhcp-virt` and ARP for the
//! gateway (and every other virtual address) with `arp-virt`.
//!
//! ```text
//! ip tuntap add dev tap0 mode tap
//! dhcp-tap --tap tap0 --network 10.77.0.0/24 --gateway 10.77.0.1 \
//!     --dns 10.77.0.1 --lease-secs 3600 --state /var/lib/wow/leases.json
//! dhclient -v tap0
//! ```
//!
//! Every lease, release, expiry and refusal is printed on stdout, one line
//! each.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::Parser;
use dhcp_virt::{Config, Event, FileStore, FrameError, LeaseStore, Pool, Refusal, Server};
use ipnet::Ipv4Net;
use tokio::time::Instant;
use tun_rs::{DeviceBuilder, Layer};

/// Serve DHCP (dhcp-virt) and ARP (arp-virt) on a TAP device.
#[derive(Parser, Debug)]
struct Args {
    /// TAP device to attach to (created if missing).
    #[arg(long)]
    tap: String,
    /// The virtual network, e.g. 10.77.0.0/24.
    #[arg(long)]
    network: Ipv4Net,
    /// The virtual gateway: router, server identifier, ARP target.
    #[arg(long)]
    gateway: Ipv4Addr,
    /// DNS server to hand out (repeatable).
    #[arg(long)]
    dns: Vec<Ipv4Addr>,
    /// Lease time in seconds.
    #[arg(long, default_value_t = 3600)]
    lease_secs: u64,
    /// Lease state file: a JSON snapshot, with the changes since appended to
    /// FILE.journal (one fdatasync per change) and folded into the snapshot
    /// every 256 changes and on SIGTERM/SIGINT.
    #[arg(long)]
    state: PathBuf,
    /// Dynamic pool as FIRST-LAST (default: every host address).
    #[arg(long)]
    pool: Option<String>,
    /// Interface MTU to hand out (option 26): the overlay's MTU.
    #[arg(long, default_value_t = 1400)]
    mtu: u16,
    /// Domain name (option 15) and search list (option 119).
    #[arg(long)]
    domain: Option<String>,
    /// Answer first and append to the journal just after, as dnsmasq does
    /// (a crash between answer and write loses the newest leases).
    /// Default: each lease is durable on disk before the answer leaves.
    #[arg(long)]
    deferred_write: bool,
    /// Gateway MAC address.
    #[arg(long, default_value = "02:77:6f:77:00:01")]
    gateway_mac: String,
}

fn parse_mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).expect("MAC octet"))
        .collect();
    v.try_into().expect("six MAC octets")
}

fn parse_pool(s: &str) -> Pool {
    let (a, b) = s.split_once('-').expect("pool is FIRST-LAST");
    Pool::range(a.parse().expect("pool start"), b.parse().expect("pool end"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let mac = parse_mac(&args.gateway_mac);

    let mut config = Config::new(args.network.trunc(), args.gateway);
    config.server_mac = mac;
    config.dns_servers = args.dns.clone();
    config.lease_duration = Duration::from_secs(args.lease_secs);
    config.interface_mtu = Some(args.mtu);
    if let Some(d) = &args.domain {
        config.domain_name = Some(d.clone());
        config.domain_search = vec![d.clone()];
    }
    if let Some(p) = &args.pool {
        config.pool = parse_pool(p);
    }
    let store = match FileStore::open(&args.state) {
        Ok(s) if args.deferred_write => s.deferred(),
        Ok(s) => s,
        Err(e) => {
            eprintln!("dhcp-tap: {e}");
            std::process::exit(1);
        }
    };
    let start = Instant::now();
    let mut server = match Server::new(start.into_std(), SystemTime::now(), config, store) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("dhcp-tap: {e}");
            std::process::exit(1);
        }
    };

    let mut arp_config = arp_virt::Config::new(args.network, arp_virt::EthernetAddress(mac));
    arp_config.gateway_addr = args.gateway;
    let mut arp = arp_virt::Responder::new(arp_config).expect("ARP configuration");

    let dev = DeviceBuilder::new()
        .name(&args.tap)
        .layer(Layer::L2)
        .build_async()?;
    println!(
        "dhcp-tap: serving {} on {} (gateway {} at {})",
        args.network, args.tap, args.gateway, args.gateway_mac
    );

    // SIGTERM or SIGINT: stop, fold the journal into a fresh snapshot.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut buf = vec![0u8; 65536];
    loop {
        // The gateway announcement (and any later one).
        while let Some(t) = arp.poll_transmit() {
            dev.send(t.as_bytes()).await?;
        }
        let deadline = server
            .poll_timeout()
            .map(Instant::from_std)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            n = dev.recv(&mut buf) => {
                let frame = &buf[..n?];
                let now = Instant::now().into_std();
                // Addresses held by other clients count as other hosts for
                // ARP conflict detection.
                let guest = arp.guest_addr();
                let leased: Vec<Ipv4Addr> = server.leases().map(|(a, _, _)| a).collect();
                let others = |addr: Ipv4Addr| Some(addr) != guest && leased.contains(&addr);
                match arp.handle_frame(frame, &others) {
                    Ok(arp_virt::Outcome::Reply(t)) => {
                        dev.send(t.as_bytes()).await?;
                    }
                    Ok(arp_virt::Outcome::Ignored(arp_virt::Ignored::NotArp { .. })) | Err(_) => {
                        match server.handle_frame(now, frame) {
                            Ok(()) | Err(Refusal::Malformed(FrameError::NotDhcp)) => {}
                            Err(reason) => println!("refused: {reason} ({reason:?})"),
                        }
                    }
                    Ok(arp_virt::Outcome::Ignored(_)) => {}
                }
            }
            _ = tokio::time::sleep_until(deadline) => {}
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
        server.handle_timeout(Instant::now().into_std());
        while let Some(frame) = server.poll_frame() {
            dev.send(&frame).await?;
        }
        // Replies are out; now make the leases durable.
        if let Err(e) = server.flush_store() {
            println!("state file: {e}");
        }
        while let Some(e) = arp.poll_event() {
            println!("arp: {e:?}");
        }
        while let Some(event) = server.poll_event() {
            match event {
                Event::Leased {
                    client,
                    addr,
                    hostname,
                    renewed,
                    ..
                } => {
                    let _ = arp.set_guest_addr(Some(addr));
                    let verb = if renewed { "renewed" } else { "leased" };
                    println!(
                        "{verb} {addr} to {client} hostname={}",
                        hostname.as_deref().unwrap_or("-")
                    );
                }
                Event::Released { client, addr } => println!("released {addr} by {client}"),
                Event::Expired { client, addr } => println!("expired {addr} of {client}"),
                Event::Declined { client, addr } => println!("declined {addr} by {client}"),
                Event::Refused { client, reason } => {
                    println!("refused: {reason} ({reason:?}) for {client}")
                }
                other => println!("{other:?}"),
            }
        }
    }
    let mut store = server.into_store();
    match store.flush().and_then(|()| store.compact()) {
        Ok(()) => println!("dhcp-tap: state compacted into {}", store.path().display()),
        Err(e) => println!("state file: {e}"),
    }
    Ok(())
}
