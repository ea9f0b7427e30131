//! Serve DHCP from an ordinary UDP socket on one interface, using only
//! dhcp-virt's message API (no TAP, no frames: it builds with
//! `--no-default-features`).
//!
//! The socket is bound to port 67 on `--interface` only (`SO_BINDTODEVICE`,
//! root or `CAP_NET_RAW`) and may broadcast. Each reply goes to
//! [`Destination::socket_addr`](dhcp_virt::Destination::socket_addr): a
//! client that holds its address is answered by unicast, one that is being
//! offered an address by broadcast, since nobody answers the kernel's ARP
//! for an address not yet taken (RFC 2131 §4.1).
//!
//! ```text
//! ip addr add 10.78.0.1/24 dev eth1
//! dhcp-socket --interface eth1 --network 10.78.0.0/24 --server-addr 10.78.0.1 \
//!     --dns 10.78.0.1 --lease-secs 3600
//! ```
//!
//! Every lease, renewal, release and refusal is printed on stdout, one line
//! each. Leases are kept in memory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime};

use clap::Parser;
use dhcp_virt::{Config, Event, Ipv4Net, MemoryStore, Pool, Server};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// Serve DHCP (dhcp-virt) on a UDP socket bound to one interface.
#[derive(Parser, Debug)]
struct Args {
    /// The clients' interface (the server's address must be on it).
    #[arg(long)]
    interface: String,
    /// The network, e.g. 10.78.0.0/24.
    #[arg(long)]
    network: Ipv4Net,
    /// This host's address on the interface: server identifier and router.
    #[arg(long)]
    server_addr: Ipv4Addr,
    /// DNS server to hand out (repeatable).
    #[arg(long)]
    dns: Vec<Ipv4Addr>,
    /// Lease time in seconds.
    #[arg(long, default_value_t = 3600)]
    lease_secs: u64,
    /// Dynamic pool as FIRST-LAST (default: every host address).
    #[arg(long)]
    pool: Option<String>,
}

/// Port 67 on `interface` only, allowed to broadcast.
fn bind(interface: &str) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_broadcast(true)?;
    socket.bind_device(Some(interface.as_bytes()))?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 67)).into())?;
    UdpSocket::from_std(socket.into())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let mut config = Config::new(args.network.trunc(), args.server_addr);
    config.routers = vec![args.server_addr];
    config.dns_servers = args.dns.clone();
    config.lease_duration = Duration::from_secs(args.lease_secs);
    if let Some(p) = &args.pool {
        let (a, b) = p.split_once('-').expect("pool is FIRST-LAST");
        config.pool = Pool::range(a.parse().expect("pool start"), b.parse().expect("pool end"));
    }
    let mut server = match Server::new(
        Instant::now().into_std(),
        SystemTime::now(),
        config,
        MemoryStore::new(),
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("dhcp-socket: {e}");
            std::process::exit(1);
        }
    };
    let socket = bind(&args.interface)?;
    println!(
        "dhcp-socket: serving {} on {} as {}",
        args.network, args.interface, args.server_addr
    );

    let mut buf = vec![0u8; 1500];
    loop {
        let deadline = server
            .poll_timeout()
            .map(Instant::from_std)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let (n, _from) = received?;
                if let Err(reason) = server.handle_message(Instant::now().into_std(), &buf[..n]) {
                    println!("refused: {reason} ({reason:?})");
                }
            }
            _ = tokio::time::sleep_until(deadline) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        server.handle_timeout(Instant::now().into_std());
        while let Some(t) = server.poll_transmit() {
            // Unicast to a client that holds its address, else broadcast.
            socket
                .send_to(&t.payload, t.destination.socket_addr())
                .await?;
        }
        while let Some(event) = server.poll_event() {
            match event {
                Event::Leased {
                    client,
                    addr,
                    renewed,
                    ..
                } => {
                    let verb = if renewed { "renewed" } else { "leased" };
                    println!("{verb} {addr} to {client}");
                }
                Event::Released { client, addr } => println!("released {addr} by {client}"),
                Event::Expired { client, addr } => println!("expired {addr} of {client}"),
                Event::Refused { client, reason } => {
                    println!("refused: {reason} ({reason:?}) for {client}")
                }
                other => println!("{other:?}"),
            }
        }
    }
}
