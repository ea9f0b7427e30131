//! Hole punching between two processes with [`Agent`], over a real UDP
//! socket, using only this crate's public API and `std`.
//!
//! ```text
//! punch rendezvous --listen 192.0.2.1:3478          # any rendezvous that forwards
//! punch_agent --bind 10.0.0.2:4000 --rendezvous 192.0.2.1:3478 --id alice --peer bob
//! punch_agent --bind 10.1.0.2:4000 --rendezvous 192.0.2.1:3478 --id bob --peer alice
//! ```
//!
//! Each side learns its reflexive address from the rendezvous (a STUN
//! server, with [`Discovery`]), then lets the agent do the rest: the
//! rendezvous carries the agent's signals ([`SignalRepr::Endpoints`] and
//! [`SignalRepr::Offer`], forwarded by name), the socket carries its
//! datagrams, the NAT-opening ones with the low IP TTL they ask for. Once
//! punched, each side sends a few `hello` datagrams on the direct path and
//! prints as its last line `path=direct remote=ADDR time_ms=N` (exit 0), or
//! why it failed (exit 1).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[path = "../../examples/wow-node/src/traceroute.rs"]
mod traceroute;

use nat_traversal::Transmit;
use nat_traversal::agent::{Agent, AgentConfig, AgentEvent, Input, Signal};
use nat_traversal::discovery::{Discovery, DiscoveryConfig, DiscoveryEvent};
use nat_traversal::wire::{SignalRepr, signal};

struct Args {
    bind: SocketAddr,
    rendezvous: SocketAddr,
    id: String,
    peer: String,
    timeout: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut bind = None;
    let mut rendezvous = None;
    let mut id = None;
    let mut peer = None;
    let mut timeout = Duration::from_secs(15);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--bind" => bind = Some(value.parse().map_err(|e| format!("--bind: {e}"))?),
            "--rendezvous" => {
                rendezvous = Some(value.parse().map_err(|e| format!("--rendezvous: {e}"))?)
            }
            "--id" => id = Some(value),
            "--peer" => peer = Some(value),
            "--timeout" => {
                timeout =
                    Duration::from_secs_f64(value.parse().map_err(|e| format!("--timeout: {e}"))?)
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(Args {
        bind: bind.ok_or("--bind is required")?,
        rendezvous: rendezvous.ok_or("--rendezvous is required")?,
        id: id.ok_or("--id is required")?,
        peer: peer.ok_or("--peer is required")?,
        timeout,
    })
}

fn main() -> ExitCode {
    let result = parse_args().and_then(|args| run(&args));
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            println!("failed: {reason}");
            ExitCode::FAILURE
        }
    }
}

/// Sends a transmit, with the IP TTL it asks for.
fn send(socket: &UdpSocket, t: &Transmit) {
    match t.ttl {
        Some(ttl) => {
            let old = socket.ttl().unwrap_or(64);
            let _ = socket.set_ttl(u32::from(ttl));
            let _ = socket.send_to(&t.payload, t.destination);
            let _ = socket.set_ttl(old);
        }
        None => {
            let _ = socket.send_to(&t.payload, t.destination);
        }
    }
}

/// Waits for a datagram until `until` (at least a millisecond).
fn recv(socket: &UdpSocket, until: Instant, buf: &mut [u8]) -> Option<(SocketAddr, usize)> {
    let wait = until
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    socket.set_read_timeout(Some(wait)).unwrap();
    socket.recv_from(buf).ok().map(|(n, from)| (from, n))
}

/// Our reflexive address, as the rendezvous sees us.
fn discover(args: &Args, socket: &UdpSocket) -> Option<SocketAddr> {
    let config = DiscoveryConfig {
        observers: vec![args.rendezvous],
        local: Some(args.bind),
        initial_rto: Duration::from_millis(200),
        max_transmits: 5,
        // The reflexive address is all we need: no filtering test (its
        // unanswered probes would only cost time).
        test_filtering: false,
    };
    let mut d = Discovery::new(Instant::now(), config).ok()?;
    let mut buf = [0u8; 2048];
    loop {
        while let Some(t) = d.poll_transmit() {
            send(socket, &t);
        }
        if let Some(DiscoveryEvent::Complete(report)) = d.poll_event() {
            return report.reflexive;
        }
        let at = d.poll_timeout()?;
        if let Some((from, n)) = recv(socket, at, &mut buf) {
            d.handle_input(Instant::now(), from, &buf[..n]);
        }
        d.handle_timeout(Instant::now());
    }
}

fn run(args: &Args) -> Result<String, String> {
    let t0 = Instant::now();
    let deadline = t0 + args.timeout;
    let socket = UdpSocket::bind(args.bind).map_err(|e| format!("bind {}: {e}", args.bind))?;
    let local = socket.local_addr().map_err(|e| e.to_string())?;
    let reflexive = discover(args, &socket);
    eprintln!(
        "[{} ms] reflexive={reflexive:?} local={local}",
        t0.elapsed().as_millis()
    );
    let mut config = AgentConfig::default();
    // The sessions' opening probes: one step per NAT we are behind
    // (traceroute toward the rendezvous), unless an experiment sets them.
    match std::env::var("PUNCH_OPENING_TTLS") {
        Ok(v) if v != "auto" => {
            config.punch.opening_ttls = v.split(',').filter_map(|t| t.parse().ok()).collect();
        }
        _ => {
            if let SocketAddr::V4(target) = args.rendezvous {
                let (depth, hops) = traceroute::nat_depth_blocking(target);
                eprintln!("NAT depth {depth:?} (traceroute {hops:?})");
                if let Some(depth) = depth {
                    config.punch.opening_ttls = nat_traversal::depth::opening_ttls(depth);
                }
            }
        }
    }
    if let Some(ms) = std::env::var("PUNCH_OPENING_HOLD_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.punch.opening_hold = Duration::from_millis(ms);
    }
    let mut agent: Agent<String> = Agent::new(args.id.clone(), config);
    agent.set_local_endpoints(reflexive.into_iter().chain([local]).collect());

    let to_rendezvous = |repr: SignalRepr| {
        let _ = socket.send_to(&repr.to_bytes().unwrap(), args.rendezvous);
    };
    let mut punched: Option<(SocketAddr, Instant)> = None;
    let mut hellos = 0u32;
    let mut done_at: Option<Instant> = None;
    let mut next_tick = t0;
    let mut buf = [0u8; 2048];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(match punched {
                None => format!(
                    "no direct path to {} (stats {:?})",
                    args.peer,
                    agent.stats()
                ),
                Some(_) => format!("punched, but only {hellos} hellos arrived"),
            });
        }
        if let Some(done) = done_at
            && now >= done
        {
            let (remote, at) = punched.unwrap();
            let ms = at.duration_since(t0).as_millis();
            return Ok(format!("path=direct remote={remote} time_ms={ms}"));
        }
        agent.handle_timeout(now);
        if now >= next_tick {
            next_tick = now + Duration::from_millis(200);
            match punched {
                // Until the peer is there: the agent rate-limits requests.
                None => agent.connect(now, args.peer.clone(), &[]),
                Some((remote, _)) => {
                    let hello = format!("hello from {}", args.id);
                    let _ = socket.send_to(hello.as_bytes(), remote);
                }
            }
        }
        while let Some(event) = agent.poll_event() {
            match event {
                AgentEvent::Signal { peer, signal } => to_rendezvous(match signal {
                    Signal::Endpoints(endpoints) => SignalRepr::Endpoints {
                        from: args.id.clone(),
                        to: peer,
                        endpoints,
                    },
                    Signal::Offer(offer) => SignalRepr::Offer(offer),
                }),
                AgentEvent::Punched { remote, .. } if punched.is_none() => {
                    eprintln!("[{} ms] punched: {remote}", t0.elapsed().as_millis());
                    punched = Some((remote, Instant::now()));
                    next_tick = now;
                }
                AgentEvent::PunchFailed { .. } => eprintln!("punch failed; trying again"),
                _ => {}
            }
        }
        while let Some(t) = agent.poll_transmit() {
            send(&socket, &t);
        }
        let wake = agent
            .poll_timeout()
            .unwrap_or(deadline)
            .min(next_tick)
            .min(done_at.unwrap_or(deadline));
        let Some((from, n)) = recv(&socket, wake, &mut buf) else {
            continue;
        };
        let now = Instant::now();
        let bytes = &buf[..n];
        if from == args.rendezvous && signal::is_signal(bytes) {
            match SignalRepr::parse_bytes(bytes) {
                Ok(SignalRepr::Offer(offer)) if offer.from == args.peer => {
                    agent.handle_offer(now, args.peer.clone(), &offer);
                }
                Ok(SignalRepr::Endpoints {
                    from,
                    to,
                    endpoints,
                }) if from == args.peer && to == args.id => {
                    agent.handle_endpoints(now, args.peer.clone(), &endpoints);
                }
                _ => {}
            }
            continue;
        }
        if let Input::Data { from, payload } = agent.handle_input(now, from, bytes)
            && punched.is_some_and(|(remote, _)| remote == from)
            && payload == format!("hello from {}", args.peer).as_bytes()
        {
            hellos += 1;
            if hellos >= 3 && done_at.is_none() {
                // Linger so the peer gets its hellos and answers too.
                done_at = Some(now + Duration::from_millis(600));
            }
        }
    }
}
