//! One overlay node on a UDP socket, using only overlay-core's public API
//! and std: it joins a ring and puts and gets DHT values.
//!
//! ```sh
//! cargo run -p overlay-core --example ring -- --listen 127.0.0.1:4000
//! cargo run -p overlay-core --example ring -- --listen 127.0.0.1:4001 \
//!     --bootstrap 127.0.0.1:4000 --put greeting=hello
//! cargo run -p overlay-core --example ring -- --listen 127.0.0.1:4002 \
//!     --bootstrap 127.0.0.1:4000 --get greeting
//! ```
//!
//! `--put` and `--get` run once the node has joined (and the ring around it
//! has had a moment to settle); lines `put KEY VALUE` and `get KEY` on
//! standard input run at once. It prints one line per result
//! (`listening`, `joined`, `links N`, `put KEY ok`, `get KEY = VALUE`,
//! `get KEY: none`, ...) and runs until killed or standard input closes.

use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use overlay_core::wire::MAX_MESSAGE_LEN;
use overlay_core::{Config, DhtOp, DhtOutcome, Event, KeyIdentity, Node};

/// How long values live in the DHT.
const TTL: Duration = Duration::from_secs(3600);
/// Pause between joining and the `--put` / `--get` of the command line.
const SETTLE: Duration = Duration::from_secs(2);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut listen: SocketAddr = "127.0.0.1:0".parse()?;
    let (mut bootstrap, mut ops) = (Vec::new(), Vec::new());
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = value.parse()?,
            "--bootstrap" => bootstrap.push(value.parse()?),
            "--put" => ops.push(format!("put {}", value.replacen('=', " ", 1))),
            "--get" => ops.push(format!("get {value}")),
            _ => return Err(format!("unknown option {flag}").into()),
        }
    }
    let socket = UdpSocket::bind(listen)?;
    let endpoint = socket.local_addr()?;
    if endpoint.ip().is_unspecified() {
        return Err("--listen needs an address peers can reach, not 0.0.0.0".into());
    }
    let now = Instant::now();
    let config = Config {
        endpoints: vec![endpoint],
        ..Config::default()
    };
    let mut node = Node::new(now, config, KeyIdentity::generate_ed25519());
    println!("listening {endpoint} address {}", node.address());
    node.join(now, &bootstrap)?;

    // Standard input on its own thread; `None` once it closes.
    let (tx, commands) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.send(Some(line)).is_err() {
                return;
            }
        }
        let _ = tx.send(None);
    });

    let mut ops_at = None; // when the command-line operations run
    let mut pending: Vec<(u64, String)> = Vec::new(); // request id, key
    let mut buf = vec![0u8; MAX_MESSAGE_LEN];
    loop {
        // Send what the node has to send, then report its events.
        while let Some((to, len)) = node.poll_transmit_into(&mut buf) {
            let _ = socket.send_to(&buf[..len], to);
        }
        while let Some(event) = node.poll_event() {
            match event {
                Event::Joined => {
                    println!("joined");
                    ops_at = Some(Instant::now() + SETTLE);
                }
                Event::Connected { .. } | Event::Disconnected { .. } => {
                    println!("links {}", node.connections().len());
                }
                Event::ObservedEndpoint { endpoint } if !node.endpoints().contains(&endpoint) => {
                    // Seen from outside a NAT: advertise it too.
                    let mut endpoints = node.endpoints().to_vec();
                    endpoints.push(endpoint);
                    node.set_endpoints(endpoints);
                }
                Event::Dht {
                    id, op, outcome, ..
                } => {
                    let Some(at) = pending.iter().position(|(i, _)| *i == id) else {
                        continue;
                    };
                    let (_, key) = pending.swap_remove(at);
                    report(op, &key, outcome);
                }
                _ => {}
            }
        }
        // Commands from the command line (once joined) and standard input.
        let mut lines = Vec::new();
        if ops_at.is_some_and(|t| Instant::now() >= t) {
            ops_at = None;
            lines.append(&mut ops);
        }
        while let Ok(line) = commands.try_recv() {
            match line {
                Some(line) => lines.push(line),
                None => return Ok(()),
            }
        }
        for line in lines {
            let now = Instant::now();
            let words: Vec<&str> = line.splitn(3, ' ').collect();
            let id = match words[..] {
                ["put", key, value] => node.dht_put(now, key.as_bytes(), value.as_bytes(), TTL),
                ["get", key] => node.dht_get(now, key.as_bytes()),
                _ => {
                    println!("? usage: put KEY VALUE | get KEY");
                    continue;
                }
            };
            match id {
                Ok(id) => pending.push((id, words[1].to_string())),
                Err(e) => println!("{} {}: {e}", words[0], words[1]),
            }
        }
        // Wait for a datagram until the node's next deadline (at most 50 ms,
        // to look at standard input).
        let now = Instant::now();
        let wait = node.poll_timeout().map_or(Duration::from_millis(50), |t| {
            t.saturating_duration_since(now)
        });
        socket.set_read_timeout(Some(
            wait.clamp(Duration::from_millis(1), Duration::from_millis(50)),
        ))?;
        if let Ok((len, from)) = socket.recv_from(&mut buf) {
            // Malformed datagrams are dropped; the node is unchanged.
            let _ = node.handle_input(Instant::now(), from, &buf[..len]);
        }
        let now = Instant::now();
        if node.poll_timeout().is_some_and(|t| t <= now) {
            node.handle_timeout(now);
        }
    }
}

/// Prints the outcome of a DHT request.
fn report(op: DhtOp, key: &str, outcome: DhtOutcome) {
    match (op, outcome) {
        (DhtOp::Get, DhtOutcome::Ok(values)) if values.is_empty() => println!("get {key}: none"),
        (DhtOp::Get, DhtOutcome::Ok(values)) => {
            for v in values {
                println!("get {key} = {}", String::from_utf8_lossy(&v));
            }
        }
        (DhtOp::Put, DhtOutcome::Ok(_)) => println!("put {key} ok"),
        (op, outcome) => println!("{op:?} {key} failed: {outcome:?}"),
    }
}
