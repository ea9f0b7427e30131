//! Hole punching between two named peers through a tiny rendezvous.
//!
//! ```text
//! punch rendezvous --listen 0.0.0.0:3478 [--alternate-port 3479]
//! punch connect --bind 10.0.0.2:4000 --rendezvous 192.0.2.1:3478 \
//!       --id alice --peer bob [--stun 192.0.2.9:3478] [--timeout 10] \
//!       [--turn 192.0.2.3:3478 [--turn-user U --turn-password P]] \
//!       [--relay-first --punch-delay-ms 400] [--guess 8] [--opening-ttls auto|2,3|none]
//!       [--birthday [--birthday-both]] [--patience SECS]
//! ```
//!
//! `--birthday` (or `PUNCH_BIRTHDAY=1`, `PUNCH_BIRTHDAY=both` for
//! `--birthday-both`) turns on the library's birthday probing
//! ([`nat_traversal::punch::BirthdayConfig`]): the offer then holds every
//! observer's view of our address (two ports say "symmetric"), and a
//! session that opens ports gets its extra sockets here, bound to the
//! `--bind` address.
//!
//! The opening probes' TTLs default to `auto`: one step per NAT we are
//! behind, counted by a traceroute toward the rendezvous
//! ([`nat_traversal::depth`]; the I/O is wow-node's `traceroute.rs`,
//! included here).
//!
//! The rendezvous answers STUN Binding requests (so it is also an observer
//! and works with any STUN client), forwards offers (and `punch_agent`'s
//! punch requests) between registered names and relays data when asked.
//! `connect` discovers its reflexive address, exchanges offers with the
//! peer, punches, falls back to the relay when punching fails, exchanges a
//! few authenticated frames and prints as its last line `path=direct
//! time_ms=N` or `path=relay time_ms=N` (exit 0), or why it failed (exit
//! 1).
//!
//! With `--patience SECS` (or `PUNCH_PATIENCE=SECS`) a failed punch is
//! followed by the patient attempt ([`nat_traversal::punch::Patience`],
//! quiet periods of SECS): `connect` relays meanwhile, waits for that
//! attempt to end, and reports `path=direct` with the time from the
//! peer's offer to the patient path, if it found one. (Experiments:
//! `PUNCH_OPENING_HOLD_MS` overrides the opening hold.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

#[path = "../../examples/wow-node/src/traceroute.rs"]
mod traceroute;
use nat_traversal::discovery::{Discovery, DiscoveryConfig, DiscoveryEvent, NatReport};
use nat_traversal::link::{Link, LinkEvent, PathKind, Route, session_key};
use nat_traversal::punch::{
    BirthdayConfig, DEFAULT_PATIENCE, Patience, PunchConfig, PunchEvent, PunchSession,
};
use nat_traversal::server::{Server, ServerConfig};
use nat_traversal::turn::{TurnClient, TurnConfig, TurnCredentials, TurnEvent};
use nat_traversal::wire::{Candidate, CandidateKind, Offer, SignalRepr, signal, stun};
use nat_traversal::{Socket, Transmit};

#[derive(Parser)]
#[command(about = "NAT hole punching with a rendezvous and relay fallback")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)]
enum Mode {
    /// Run the rendezvous (STUN server, offer forwarding, relay).
    Rendezvous {
        /// UDP address to listen on.
        #[arg(long)]
        listen: SocketAddr,
        /// Second port for RFC 5780 CHANGE-REQUEST (filtering tests).
        #[arg(long)]
        alternate_port: Option<u16>,
    },
    /// Connect to a named peer.
    Connect {
        /// Local UDP address.
        #[arg(long)]
        bind: SocketAddr,
        /// The rendezvous.
        #[arg(long)]
        rendezvous: SocketAddr,
        /// Our name.
        #[arg(long)]
        id: String,
        /// The peer's name.
        #[arg(long)]
        peer: String,
        /// Overall time limit, seconds.
        #[arg(long, default_value_t = 15.0)]
        timeout: f64,
        /// More STUN observers for NAT classification.
        #[arg(long)]
        stun: Vec<SocketAddr>,
        /// Time allowed for punching before falling back to the relay, seconds.
        #[arg(long, default_value_t = 3.0)]
        punch_timeout: f64,
        /// Ports to guess on each side of the peer's reflexive port.
        #[arg(long, default_value_t = 0)]
        guess: u16,
        /// IP TTLs of the opening probes (comma-separated, `none` for
        /// none, `auto` (default, or `$PUNCH_OPENING_TTLS`): one per NAT
        /// counted by a traceroute toward the rendezvous).
        #[arg(long)]
        opening_ttls: Option<String>,
        /// Authenticated frames to receive from the peer.
        #[arg(long, default_value_t = 3)]
        packets: u32,
        /// Send through the relay while punching, then upgrade to direct.
        #[arg(long)]
        relay_first: bool,
        /// Wait this long after the offer before punching, milliseconds.
        #[arg(long, default_value_t = 0)]
        punch_delay_ms: u64,
        /// Birthday probing between a symmetric NAT and a cone.
        #[arg(long)]
        birthday: bool,
        /// Birthday probing also between two symmetric NATs (measurements).
        #[arg(long)]
        birthday_both: bool,
        /// After a failed punch, the patient attempt with quiet periods of
        /// this many seconds (or `$PUNCH_PATIENCE`): relays meanwhile and
        /// waits for that attempt's outcome.
        #[arg(long)]
        patience: Option<u64>,
        /// A TURN server to relay through instead of the rendezvous.
        #[arg(long)]
        turn: Option<SocketAddr>,
        /// TURN username (long-term credentials), with --turn-password.
        #[arg(long, requires = "turn_password")]
        turn_user: Option<String>,
        /// TURN password.
        #[arg(long)]
        turn_password: Option<String>,
    },
}

static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// `eprintln!` with milliseconds since start.
macro_rules! log {
    ($($arg:tt)*) => {
        eprintln!("[{:>6} ms] {}", START.get_or_init(Instant::now).elapsed().as_millis(), format!($($arg)*))
    };
}

fn main() -> ExitCode {
    START.get_or_init(Instant::now);
    match Cli::parse().mode {
        Mode::Rendezvous {
            listen,
            alternate_port,
        } => {
            rendezvous(listen, alternate_port);
            ExitCode::SUCCESS
        }
        Mode::Connect {
            bind,
            rendezvous,
            id,
            peer,
            timeout,
            stun,
            punch_timeout,
            guess,
            opening_ttls,
            packets,
            relay_first,
            punch_delay_ms,
            turn,
            turn_user,
            turn_password,
            birthday,
            birthday_both,
            patience,
        } => {
            let env = std::env::var("PUNCH_BIRTHDAY").unwrap_or_default();
            let birthday_both = birthday_both || env == "both";
            let birthday = birthday || birthday_both || env == "1";
            let opening_ttls = match opening_ttls
                .or_else(|| std::env::var("PUNCH_OPENING_TTLS").ok())
                .filter(|v| v != "auto")
                .map(|v| parse_ttls(&v).map(Some))
                .unwrap_or_else(|| Ok(auto_opening_ttls(rendezvous)))
            {
                Ok(t) => t,
                Err(e) => {
                    println!("failed: --opening-ttls: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let args = ConnectArgs {
                bind,
                rendezvous,
                id,
                peer,
                timeout: Duration::from_secs_f64(timeout),
                stun,
                punch_timeout: Duration::from_secs_f64(punch_timeout),
                guess,
                opening_ttls,
                packets,
                relay_first,
                punch_delay: Duration::from_millis(punch_delay_ms),
                birthday: birthday.then(|| BirthdayConfig {
                    both_symmetric: birthday_both,
                    ..BirthdayConfig::default()
                }),
                patience: patience
                    .or_else(|| std::env::var("PUNCH_PATIENCE").ok()?.parse().ok())
                    .map(|secs| Patience {
                        quiet: Duration::from_secs(secs),
                        // Well inside a UDP timeout a little under the quiet.
                        refresh_interval: (Duration::from_secs(secs) / 4)
                            .min(DEFAULT_PATIENCE.refresh_interval),
                        ..DEFAULT_PATIENCE
                    }),
                turn,
                turn_credentials: turn_user
                    .zip(turn_password)
                    .map(|(username, password)| TurnCredentials { username, password }),
            };
            match connect(&args) {
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
    }
}

fn rendezvous(listen: SocketAddr, alternate_port: Option<u16>) {
    let primary = UdpSocket::bind(listen).expect("bind listen address");
    let alternate = alternate_port.map(|p| {
        let s = UdpSocket::bind(SocketAddr::new(listen.ip(), p)).expect("bind alternate port");
        s.set_nonblocking(true).unwrap();
        s
    });
    primary
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut server = Server::new(ServerConfig {
        primary: listen,
        alternate: alternate.as_ref().map(|s| s.local_addr().unwrap()),
        software: Some("wow punch rendezvous".into()),
    });
    let mut names: HashMap<String, SocketAddr> = HashMap::new();
    log!("rendezvous listening on {listen}");
    let mut buf = [0u8; 2048];
    loop {
        let mut inputs = vec![];
        match primary.recv_from(&mut buf) {
            Ok((n, from)) => inputs.push((Socket::Primary, from, buf[..n].to_vec())),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => log!("recv: {e}"),
        }
        if let Some(alt) = &alternate
            && let Ok((n, from)) = alt.recv_from(&mut buf)
        {
            inputs.push((Socket::Alternate, from, buf[..n].to_vec()));
        }
        for (socket, from, bytes) in inputs {
            if signal::is_signal(&bytes) {
                let Ok(msg) = SignalRepr::parse_bytes(&bytes) else {
                    continue;
                };
                let reply = |to: SocketAddr, msg: SignalRepr| {
                    let _ = primary.send_to(&msg.to_bytes().unwrap(), to);
                };
                match msg {
                    SignalRepr::Register { name } => {
                        names.insert(name, from);
                    }
                    SignalRepr::Offer(offer) => {
                        names.insert(offer.from.clone(), from);
                        match names.get(&offer.to) {
                            Some(&to) => reply(to, SignalRepr::Offer(offer)),
                            None => reply(from, SignalRepr::UnknownPeer { peer: offer.to }),
                        }
                    }
                    // A punch request of `punch_agent`, forwarded the same way.
                    SignalRepr::Endpoints {
                        from: sender,
                        to,
                        endpoints,
                    } => {
                        names.insert(sender.clone(), from);
                        match names.get(&to) {
                            Some(&dest) => reply(
                                dest,
                                SignalRepr::Endpoints {
                                    from: sender,
                                    to,
                                    endpoints,
                                },
                            ),
                            None => reply(from, SignalRepr::UnknownPeer { peer: to }),
                        }
                    }
                    SignalRepr::Relay { peer, payload } => {
                        let sender = names.iter().find(|(_, a)| **a == from).map(|(n, _)| n);
                        match (sender, names.get(&peer)) {
                            (Some(sender), Some(&to)) => reply(
                                to,
                                SignalRepr::Relay {
                                    peer: sender.clone(),
                                    payload,
                                },
                            ),
                            _ => reply(from, SignalRepr::UnknownPeer { peer }),
                        }
                    }
                    _ => {}
                }
            } else {
                server.handle_input(socket, from, &bytes);
                while let Some(t) = server.poll_transmit() {
                    let sock = match t.source {
                        Socket::Alternate => alternate.as_ref().unwrap_or(&primary),
                        _ => &primary,
                    };
                    let _ = sock.send_to(&t.payload, t.destination);
                }
            }
        }
    }
}

struct ConnectArgs {
    bind: SocketAddr,
    rendezvous: SocketAddr,
    id: String,
    peer: String,
    timeout: Duration,
    stun: Vec<SocketAddr>,
    punch_timeout: Duration,
    guess: u16,
    opening_ttls: Option<Vec<u8>>,
    packets: u32,
    relay_first: bool,
    punch_delay: Duration,
    birthday: Option<BirthdayConfig>,
    patience: Option<Patience>,
    turn: Option<SocketAddr>,
    turn_credentials: Option<TurnCredentials>,
}

/// The opening TTLs for our NAT depth, from a traceroute toward the
/// rendezvous (a public host); `None` (the library's default) when the
/// depth is unknown.
fn auto_opening_ttls(rendezvous: SocketAddr) -> Option<Vec<u8>> {
    let SocketAddr::V4(target) = rendezvous else {
        return None;
    };
    let (depth, hops) = traceroute::nat_depth_blocking(target);
    eprintln!("NAT depth {depth:?} (traceroute {hops:?})");
    depth.map(nat_traversal::depth::opening_ttls)
}

/// `2,3` or `none`.
fn parse_ttls(text: &str) -> Result<Vec<u8>, String> {
    if text == "none" {
        return Ok(vec![]);
    }
    text.split(',')
        .map(|t| t.trim().parse::<u8>().map_err(|e| format!("{t:?}: {e}")))
        .collect()
}

/// Sends a transmit from the socket it names (the primary `socket` or
/// one of the punch session's `extras`).
fn send_via(socket: &UdpSocket, extras: &[UdpSocket], t: Transmit) {
    match t.source {
        Socket::Extra(i) => {
            if let Some(s) = extras.get(usize::from(i)) {
                send(s, t);
            }
        }
        _ => send(socket, t),
    }
}

/// Sends a transmit, with the IP TTL it asks for.
fn send(socket: &UdpSocket, t: Transmit) {
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

fn recv(socket: &UdpSocket, until: Instant, buf: &mut [u8]) -> Option<(SocketAddr, Vec<u8>)> {
    let wait = until
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    socket.set_read_timeout(Some(wait)).unwrap();
    match socket.recv_from(buf) {
        Ok((n, from)) => Some((from, buf[..n].to_vec())),
        Err(_) => None,
    }
}

fn discover(
    args: &ConnectArgs,
    socket: &UdpSocket,
    server: &mut Server,
) -> Result<NatReport, String> {
    let mut observers = vec![args.rendezvous];
    observers.extend(&args.stun);
    let mut d = Discovery::new(
        Instant::now(),
        DiscoveryConfig {
            observers,
            local: Some(args.bind),
            initial_rto: Duration::from_millis(200),
            max_transmits: 3,
            ..DiscoveryConfig::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 2048];
    loop {
        while let Some(t) = d.poll_transmit() {
            send(socket, t);
        }
        if let Some(DiscoveryEvent::Complete(report)) = d.poll_event() {
            return Ok(report);
        }
        let Some(at) = d.poll_timeout() else {
            return Err("discovery stalled".into());
        };
        if let Some((from, bytes)) = recv(socket, at, &mut buf)
            && !d.handle_input(Instant::now(), from, &bytes)
            && server.handle_input(Socket::Primary, from, &bytes)
        {
            while let Some(t) = server.poll_transmit() {
                send(socket, t);
            }
        }
        d.handle_timeout(Instant::now());
    }
}

/// Allocate a relayed address on a TURN server (blocking, up to ~4 s).
fn allocate(config: TurnConfig, socket: &UdpSocket) -> Result<(TurnClient, SocketAddr), String> {
    let mut client = TurnClient::new(Instant::now(), config).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 2048];
    loop {
        while let Some(t) = client.poll_transmit() {
            send(socket, t);
        }
        match client.poll_event() {
            Some(TurnEvent::Allocated { relayed, .. }) => return Ok((client, relayed)),
            Some(TurnEvent::Failed(f)) => return Err(format!("TURN allocation failed: {f:?}")),
            _ => {}
        }
        let at = client
            .poll_timeout()
            .ok_or_else(|| "TURN client stalled".to_string())?;
        if let Some((from, bytes)) = recv(socket, at, &mut buf) {
            client.handle_input(Instant::now(), from, &bytes);
        }
        client.handle_timeout(Instant::now());
    }
}

fn connect(args: &ConnectArgs) -> Result<String, String> {
    let t0 = Instant::now();
    let deadline = t0 + args.timeout;
    let socket = UdpSocket::bind(args.bind).map_err(|e| format!("bind {}: {e}", args.bind))?;
    let local = socket.local_addr().map_err(|e| e.to_string())?;
    let mut server = Server::new(ServerConfig {
        primary: local,
        alternate: None,
        software: None,
    });
    let report = discover(args, &socket, &mut server)?;
    log!(
        "reflexive={:?} mapping={:?} filtering={:?} observations={:?}",
        report.reflexive,
        report.mapping,
        report.filtering,
        report.observations
    );
    println!(
        "nat mapping={:?} filtering={:?} reflexive={}",
        report.mapping,
        report.filtering,
        report
            .reflexive
            .map_or("none".to_string(), |a| a.to_string())
    );
    let mut candidates = vec![Candidate::new(CandidateKind::Host, local, 65535)];
    if let Some(srflx) = report.reflexive.filter(|r| *r != local) {
        candidates.push(Candidate::new(CandidateKind::ServerReflexive, srflx, 65535));
    }
    if args.birthday.is_some() {
        // Every observer's view: two ports tell the peer we map per
        // destination (`punch::maps_per_destination`).
        for mapped in report.observations.iter().filter_map(|o| o.mapped) {
            if mapped != local && candidates.iter().all(|c| c.address != mapped) {
                candidates.push(Candidate::new(
                    CandidateKind::ServerReflexive,
                    mapped,
                    65535,
                ));
            }
        }
    }
    let mut turn = match args.turn {
        Some(server) => {
            let mut config = TurnConfig::new(server);
            config.credentials = args.turn_credentials.clone();
            let (client, relayed) = allocate(config, &socket)?;
            println!("turn relayed={relayed}");
            candidates.push(Candidate::new(CandidateKind::Relayed, relayed, 65535));
            Some(client)
        }
        None => None,
    };
    let mut turn_peer: Option<SocketAddr> = None;
    let our_offer = Offer::with_fresh_credentials(args.id.clone(), args.peer.clone(), candidates);
    let offer_bytes = SignalRepr::Offer(our_offer.clone()).to_bytes().unwrap();
    let relay_send = |link_payload: Vec<u8>| {
        let msg = SignalRepr::Relay {
            peer: args.peer.clone(),
            payload: link_payload,
        };
        let _ = socket.send_to(&msg.to_bytes().unwrap(), args.rendezvous);
    };
    let relay_kind = if turn.is_some() { "turn" } else { "rendezvous" };

    let mut punch: Option<PunchSession> = None;
    // The punch session's extra sockets (birthday probing), and the one
    // the direct path uses (`None`: the primary).
    let mut extras: Vec<UdpSocket> = Vec::new();
    let mut path_socket: Option<usize> = None;
    let mut pending_punch: Option<(Offer, Instant)> = None;
    let mut punch_started_at = t0;
    let mut link: Option<Link> = None;
    let mut next_offer_at = t0;
    let mut next_frame_at = t0;
    let mut received = 0u32;
    let mut sequences = std::collections::BTreeSet::new();
    let mut first_frame_at: Option<Instant> = None;
    let mut done_at: Option<Instant> = None;
    let mut patient_direct_at: Option<Instant> = None;
    let mut was_waiting = false;
    let mut buf = [0u8; 2048];
    let mut peer_unknown = false;
    loop {
        let now = Instant::now();
        if now >= deadline {
            if let Some(p) = punch.as_ref() {
                log!("punch metrics: {:?}", p.metrics());
            }
            return Err(match (&link, &punch) {
                (None, _) if peer_unknown => format!("peer {} never registered", args.peer),
                (None, _) => format!("no offer from peer {}", args.peer),
                _ => format!("received {received} of {} frames", args.packets),
            });
        }
        // Offers until the peer is clearly talking to us.
        if now >= next_offer_at && first_frame_at.is_none() {
            let _ = socket.send_to(&offer_bytes, args.rendezvous);
            next_offer_at = now + Duration::from_millis(300);
        }
        // Punching starts once the offer is in (after --punch-delay-ms).
        if let Some((offer, at)) = pending_punch.take_if(|(_, at)| now >= *at) {
            let _ = at;
            let config = PunchConfig {
                deadline: args.punch_timeout,
                port_guess_range: args.guess,
                birthday: args.birthday.clone(),
                ..PunchConfig::default()
            };
            let config = match &args.opening_ttls {
                Some(ttls) => PunchConfig {
                    opening_ttls: ttls.clone(),
                    ..config
                },
                None => config,
            };
            // Experiments: PUNCH_OPENING_HOLD_MS overrides the hold.
            let config = match std::env::var("PUNCH_OPENING_HOLD_MS")
                .ok()
                .and_then(|v| v.parse().ok())
            {
                Some(ms) => PunchConfig {
                    opening_hold: Duration::from_millis(ms),
                    ..config
                },
                None => config,
            };
            let config = PunchConfig {
                patience: args.patience,
                ..config
            };
            // Relayed candidates are the TURN path, not punch targets.
            let mut direct = offer.clone();
            direct
                .candidates
                .retain(|c| c.kind != CandidateKind::Relayed);
            punch = Some(
                PunchSession::new(now, config, &our_offer, &direct).map_err(|e| e.to_string())?,
            );
            let p = punch.as_ref().unwrap();
            log!(
                "birthday role {:?}, {} extra sockets",
                p.birthday_role(),
                p.extra_sockets()
            );
            for _ in 0..p.extra_sockets() {
                let s = UdpSocket::bind(SocketAddr::new(local.ip(), 0))
                    .map_err(|e| format!("extra socket: {e}"))?;
                s.set_nonblocking(true).map_err(|e| e.to_string())?;
                extras.push(s);
            }
        }
        // TURN timers (retransmissions, permission refresh).
        if let Some(client) = turn.as_mut() {
            client.handle_timeout(now);
            while let Some(t) = client.poll_transmit() {
                send(&socket, t);
            }
        }
        // Punch progress.
        if let Some(p) = punch.as_mut() {
            p.handle_timeout(now);
            while let Some(t) = p.poll_transmit() {
                send_via(&socket, &extras, t);
            }
            while let Some(ev) = p.poll_event() {
                let l = link.as_mut().unwrap();
                match ev {
                    PunchEvent::Connected(o) => {
                        log!("punched: {o:?}");
                        if let Socket::Extra(i) = o.local_socket {
                            path_socket = Some(usize::from(i));
                        }
                        l.use_route(Route::Direct(o.remote));
                        if o.patient {
                            patient_direct_at = Some(now);
                            if done_at.is_some() {
                                done_at = Some(now + Duration::from_millis(600));
                            }
                        }
                        // With --relay-first, keep going a little on the
                        // direct path so the upgrade is exercised.
                        if args.relay_first && done_at.is_some() {
                            done_at = Some(now + Duration::from_millis(600));
                        }
                    }
                    PunchEvent::Failed(f) => {
                        log!("punch failed: {f:?}; relaying");
                        if l.route().is_none() {
                            l.use_route(Route::Relay);
                        }
                    }
                    _ => {}
                }
            }
        }
        // The patient attempt, if any, decides the path: wait for it.
        let waiting = punch.as_ref().is_some_and(PunchSession::is_patient);
        if waiting != was_waiting {
            was_waiting = waiting;
            let m = punch.as_ref().map(PunchSession::metrics);
            log!(
                "patient attempt {}: {m:?}",
                if waiting { "starts" } else { "ends" }
            );
        }
        if let Some(done) = done_at
            && now >= done
            && !waiting
        {
            let link = link.as_ref().unwrap();
            let m = link.metrics();
            let path = match link.route() {
                Some(Route::Direct(_)) => "direct",
                _ => "relay",
            };
            log!("link metrics: {m:?}");
            let p = punch.as_ref().map(|p| p.metrics()).unwrap_or_default();
            // Sequence numbers missing below the highest one received.
            let gaps = sequences
                .last()
                .map_or(0, |max| max + 1 - sequences.len() as u64);
            println!(
                "probes_sent={} birthday_probes_sent={} frames_direct={} frames_relay={} relay={relay_kind} gaps={gaps} total_ms={}",
                p.probes_sent,
                p.birthday_probes_sent,
                m.received_direct,
                m.received_relay,
                now.duration_since(t0).as_millis()
            );
            // Time to first packet: from the peer's offer to its first frame
            // (or, for the patient attempt's path, to that path).
            let ms = patient_direct_at
                .or(first_frame_at)
                .unwrap()
                .duration_since(punch_started_at)
                .as_millis();
            return Ok(format!("path={path} time_ms={ms}"));
        }
        // Data frames, resent until the peer has had enough.
        if let Some(l) = link.as_mut()
            && l.route().is_some()
            && now >= next_frame_at
        {
            let _ = l.send(format!("hello from {}", args.id).as_bytes());
            next_frame_at = now + Duration::from_millis(100);
            while let Some(t) = l.poll_transmit() {
                match t.route {
                    Route::Direct(to) => {
                        let from = path_socket.and_then(|i| extras.get(i)).unwrap_or(&socket);
                        let _ = from.send_to(&t.payload, to);
                    }
                    Route::Relay => match (turn.as_mut(), turn_peer) {
                        (Some(client), Some(peer)) => {
                            let _ = client.send(peer, &t.payload);
                            while let Some(t) = client.poll_transmit() {
                                send(&socket, t);
                            }
                        }
                        _ => relay_send(t.payload),
                    },
                }
            }
        }
        let mut wake = next_offer_at.min(next_frame_at).min(deadline);
        if let Some(at) = turn.as_ref().and_then(|c| c.poll_timeout()) {
            wake = wake.min(at);
        }
        if let Some((_, at)) = &pending_punch {
            wake = wake.min(*at);
        }
        if let Some(at) = punch.as_ref().and_then(|p| p.poll_timeout()) {
            wake = wake.min(at);
        }
        if let Some(d) = done_at.filter(|_| !waiting) {
            wake = wake.min(d);
        }
        if !extras.is_empty() {
            // The extra sockets are polled, not waited on.
            wake = wake.min(Instant::now() + Duration::from_millis(2));
        }
        let mut inputs = vec![];
        if let Some((from, bytes)) = recv(&socket, wake, &mut buf) {
            inputs.push((Socket::Primary, from, bytes));
        }
        for (i, s) in extras.iter().enumerate() {
            while let Ok((n, from)) = s.recv_from(&mut buf) {
                inputs.push((Socket::Extra(i as u16), from, buf[..n].to_vec()));
            }
        }
        for (on, from, bytes) in inputs {
            let now = Instant::now();
            let mut data: Option<(PathKind, Vec<u8>)> = None;
            if on != Socket::Primary {
                // An extra socket: punch checks and the direct path's frames.
                if signal::is_signal(&bytes) {
                    if let Ok(SignalRepr::Data { .. }) = SignalRepr::parse_bytes(&bytes) {
                        data = Some((PathKind::Direct, bytes));
                    }
                } else if let Some(p) = punch.as_mut()
                    && p.handle_input_on(now, on, from, &bytes)
                {
                    while let Some(t) = p.poll_transmit() {
                        send_via(&socket, &extras, t);
                    }
                }
            } else if signal::is_signal(&bytes) {
                match SignalRepr::parse_bytes(&bytes) {
                    Ok(SignalRepr::Offer(offer))
                        if from == args.rendezvous && offer.from == args.peer && link.is_none() =>
                    {
                        log!("offer from {}: {:?}", offer.from, offer.candidates);
                        // Answer at once so the peer need not wait a period.
                        let _ = socket.send_to(&offer_bytes, args.rendezvous);
                        pending_punch = Some((offer.clone(), now + args.punch_delay));
                        if let Some(client) = turn.as_mut() {
                            turn_peer = offer
                                .candidates
                                .iter()
                                .find(|c| c.kind == CandidateKind::Relayed)
                                .map(|c| c.address);
                            if let Some(peer) = turn_peer {
                                client.create_permission(now, peer.ip());
                            }
                        }
                        let mut l = Link::new(now, &session_key(&our_offer, &offer));
                        if args.relay_first {
                            // Talk through the relay at once; upgrade when punched.
                            l.use_route(Route::Relay);
                        }
                        link = Some(l);
                        punch_started_at = now;
                    }
                    Ok(SignalRepr::UnknownPeer { .. }) => peer_unknown = true,
                    Ok(SignalRepr::Relay { peer, payload })
                        if from == args.rendezvous && peer == args.peer =>
                    {
                        data = Some((PathKind::Relay, payload));
                    }
                    Ok(SignalRepr::Data { .. }) => data = Some((PathKind::Direct, bytes)),
                    _ => {}
                }
            } else if let Some(client) = turn.as_mut()
                && client.handle_input(now, from, &bytes)
            {
                while let Some(ev) = client.poll_event() {
                    match ev {
                        TurnEvent::Data { peer, data: frame } if Some(peer) == turn_peer => {
                            data = Some((PathKind::Relay, frame));
                        }
                        other => log!("turn: {other:?}"),
                    }
                }
            } else if stun::is_stun(&bytes) || bytes.first().is_some_and(|b| *b < 4) {
                let claimed = punch
                    .as_mut()
                    .is_some_and(|p| p.handle_input(now, from, &bytes));
                if !claimed {
                    server.handle_input(Socket::Primary, from, &bytes);
                }
                for t in punch
                    .as_mut()
                    .map(|p| std::iter::from_fn(|| p.poll_transmit()).collect::<Vec<_>>())
                    .unwrap_or_default()
                    .into_iter()
                    .chain(std::iter::from_fn(|| server.poll_transmit()))
                {
                    send_via(&socket, &extras, t);
                }
            }
            if let (Some((path, frame)), Some(l)) = (data, link.as_mut())
                && l.handle_input(now, path, &frame)
            {
                while let Some(ev) = l.poll_event() {
                    if let LinkEvent::Received { path, sequence, .. } = ev {
                        received += 1;
                        sequences.insert(sequence);
                        first_frame_at.get_or_insert(now);
                        log!("frame {received} via {path:?}");
                    }
                }
                if received >= args.packets && done_at.is_none() {
                    // Linger so the peer gets its frames and punch answers too.
                    done_at = Some(now + Duration::from_millis(600));
                }
            }
        }
    }
}
