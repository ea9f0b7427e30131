//! A TURN client that relays to one peer through a TURN server, first with
//! Send/Data indications, then through a channel (ChannelBind +
//! ChannelData), and a UDP echo peer to relay to.
//!
//! ```text
//! turn relay --bind 0.0.0.0:5000 --server 192.0.2.1:3478 \
//!     [--user U --password P] --peer 198.51.100.2:6000 [--count 100]
//! turn echo --bind 198.51.100.2:6000
//! ```
//!
//! `relay` prints `relayed=ADDR`, `indication sent=1 received=1`,
//! `channel=0xNNNN` and `channel sent=N received=M via_indication=K
//! resent=R`, and exits 1 unless every message came back (the channel
//! answers as ChannelData, `via_indication=0`). Channel messages go 16 at a
//! time; one unanswered after 300 ms is sent again. `echo` sends every datagram back to its
//! source and prints `from=ADDR len=N` for each.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use nat_traversal::turn::{TurnClient, TurnConfig, TurnCredentials, TurnEvent};

#[derive(Parser)]
#[command(about = "TURN relay client (indications and channels) and echo peer")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Allocate on a TURN server and exchange data with a peer through it.
    Relay {
        /// Local UDP address.
        #[arg(long, default_value = "0.0.0.0:0")]
        bind: SocketAddr,
        /// The TURN server.
        #[arg(long)]
        server: SocketAddr,
        /// Long-term credential username, with --password.
        #[arg(long, requires = "password")]
        user: Option<String>,
        /// Long-term credential password.
        #[arg(long)]
        password: Option<String>,
        /// The peer to relay to.
        #[arg(long)]
        peer: SocketAddr,
        /// Messages to send through the channel.
        #[arg(long, default_value_t = 100)]
        count: u32,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 15)]
        timeout_secs: u64,
    },
    /// Echo every datagram back to its source.
    Echo {
        /// Local UDP address.
        #[arg(long)]
        bind: SocketAddr,
    },
}

/// What a datagram from the server was, for the caller's phase.
enum Input<'a> {
    Channel(SocketAddr, &'a [u8]),
    Event(TurnEvent),
}

/// Drive `client` until `done` says so or `deadline` passes; `done` sees
/// every ChannelData payload and event. Returns whether `done` finished.
fn drive(
    client: &mut TurnClient,
    socket: &UdpSocket,
    deadline: Instant,
    mut done: impl FnMut(&mut TurnClient, Input<'_>) -> bool,
) -> bool {
    let mut buf = [0u8; 65536];
    loop {
        while let Some(t) = client.poll_transmit() {
            let _ = socket.send_to(&t.payload, t.destination);
        }
        while let Some(event) = client.poll_event() {
            if done(client, Input::Event(event)) {
                return true;
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let until = client.poll_timeout().unwrap_or(deadline).min(deadline);
        let wait = until
            .saturating_duration_since(now)
            .max(Duration::from_millis(1));
        socket.set_read_timeout(Some(wait)).unwrap();
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            let bytes = &buf[..n];
            if let Some((peer, payload)) = client.handle_channel_data(from, bytes) {
                if done(client, Input::Channel(peer, payload)) {
                    return true;
                }
            } else {
                client.handle_input(Instant::now(), from, bytes);
            }
        }
        client.handle_timeout(Instant::now());
    }
}

fn relay(
    bind: SocketAddr,
    server: SocketAddr,
    credentials: Option<TurnCredentials>,
    peer: SocketAddr,
    count: u32,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let socket = UdpSocket::bind(bind).map_err(|e| format!("bind {bind}: {e}"))?;
    let mut config = TurnConfig::new(server);
    config.credentials = credentials;
    let mut client = TurnClient::new(Instant::now(), config).map_err(|e| e.to_string())?;
    let mut failure = None;
    let allocated = drive(&mut client, &socket, deadline, |_, input| match input {
        Input::Event(TurnEvent::Allocated { .. }) => true,
        Input::Event(TurnEvent::Failed(f)) => {
            failure = Some(f);
            true
        }
        _ => false,
    });
    if let Some(f) = failure {
        return Err(format!("allocation failed: {f:?}"));
    }
    let relayed = client
        .relayed()
        .filter(|_| allocated)
        .ok_or("allocation timed out")?;
    println!("relayed={relayed}");

    // Send and Data indications, after a permission.
    client.create_permission(Instant::now(), peer.ip());
    let permitted = drive(
        &mut client,
        &socket,
        deadline,
        |_, input| matches!(input, Input::Event(TurnEvent::PermissionCreated(ip)) if ip == peer.ip()),
    );
    if !permitted {
        return Err("no permission".into());
    }
    let probe = b"indication probe";
    let mut echoed = false;
    // Re-send now and then in case the peer's socket is not up yet.
    while !echoed && Instant::now() < deadline {
        client.send(peer, probe).map_err(|e| e.to_string())?;
        let round = (Instant::now() + Duration::from_millis(500)).min(deadline);
        echoed = drive(
            &mut client,
            &socket,
            round,
            |_, input| matches!(input, Input::Event(TurnEvent::Data { peer: p, ref data }) if p == peer && data == probe),
        );
    }
    println!("indication sent=1 received={}", u8::from(echoed));
    if !echoed {
        return Err("no Data indication back".into());
    }

    // A channel, then ChannelData both ways.
    let number = client
        .bind_channel(Instant::now(), peer)
        .map_err(|e| e.to_string())?;
    let mut failure = None;
    let bound = drive(&mut client, &socket, deadline, |_, input| match input {
        Input::Event(TurnEvent::ChannelBound { peer: p, .. }) if p == peer => true,
        Input::Event(TurnEvent::ChannelFailed { failure: f, .. }) => {
            failure = Some(f);
            true
        }
        _ => false,
    });
    if let Some(f) = failure {
        return Err(format!("channel bind failed: {f:?}"));
    }
    if !bound {
        return Err("channel bind timed out".into());
    }
    println!("channel=0x{number:04x}");
    // At most WINDOW messages in flight; one unanswered for RESEND is sent
    // again (UDP bursts into busy namespaces do lose datagrams).
    const WINDOW: usize = 16;
    const RESEND: Duration = Duration::from_millis(300);
    let mut out = [0u8; 2048];
    let mut sent_at: Vec<Option<Instant>> = vec![None; count as usize];
    let mut received = vec![false; count as usize];
    let mut via_indication = 0u32;
    let mut resent = 0u32;
    let mut left = count;
    while left > 0 && Instant::now() < deadline {
        let now = Instant::now();
        let mut in_flight = (0..sent_at.len())
            .filter(|&i| sent_at[i].is_some() && !received[i])
            .count();
        for seq in 0..sent_at.len() {
            let due = match sent_at[seq] {
                None => in_flight < WINDOW,
                Some(at) => !received[seq] && now >= at + RESEND,
            };
            if !due {
                continue;
            }
            if sent_at[seq].is_some() {
                resent += 1;
            } else {
                in_flight += 1;
            }
            sent_at[seq] = Some(now);
            let message = format!("channel message {seq}");
            let (to, n) = client
                .send_into(peer, message.as_bytes(), &mut out)
                .map_err(|e| e.to_string())?;
            let _ = socket.send_to(&out[..n], to);
        }
        let round = (now + Duration::from_millis(20)).min(deadline);
        drive(&mut client, &socket, round, |_, input| {
            match input {
                Input::Channel(p, payload) if p == peer => {
                    let seq = std::str::from_utf8(payload)
                        .ok()
                        .and_then(|s| s.strip_prefix("channel message "))
                        .and_then(|s| s.parse::<usize>().ok());
                    if let Some(slot) = seq.and_then(|s| received.get_mut(s))
                        && !*slot
                    {
                        *slot = true;
                        left -= 1;
                    }
                }
                Input::Event(TurnEvent::Data { .. }) => via_indication += 1,
                _ => {}
            }
            left == 0
        });
    }
    println!(
        "channel sent={count} received={} via_indication={via_indication} resent={resent}",
        count - left
    );
    if left > 0 || via_indication > 0 {
        return Err("channel data lost or not answered as ChannelData".into());
    }
    Ok(())
}

fn echo(bind: SocketAddr) -> Result<(), String> {
    let socket = UdpSocket::bind(bind).map_err(|e| format!("bind {bind}: {e}"))?;
    let mut buf = [0u8; 65536];
    loop {
        let (n, from) = socket.recv_from(&mut buf).map_err(|e| e.to_string())?;
        println!("from={from} len={n}");
        let _ = socket.send_to(&buf[..n], from);
    }
}

fn main() -> ExitCode {
    let result = match Cli::parse().mode {
        Mode::Relay {
            bind,
            server,
            user,
            password,
            peer,
            count,
            timeout_secs,
        } => relay(
            bind,
            server,
            user.zip(password)
                .map(|(username, password)| TurnCredentials { username, password }),
            peer,
            count,
            Duration::from_secs(timeout_secs),
        ),
        Mode::Echo { bind } => echo(bind),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
