//! A tiny UDP probe for the NAT testbed (std only): a STUN-like echo server
//! that tells a client the address it saw, optionally answering from every
//! socket it has (for filtering tests), and its client.
//!
//! ```text
//! udp-probe serve [--hello ADDR] ADDR...
//! udp-probe ask --bind ADDR [--all] [--wait-ms N] --to ADDR [--to ADDR]...
//! ```
//!
//! `serve` listens on every ADDR. A datagram `probe` is answered from the
//! socket it reached with `via=LOCAL seen=SENDER`; `probe all` is answered
//! that way from every socket. With `--hello ADDR` each socket also sends
//! `hello` to ADDR every second (to open and keep a NAT mapping).
//!
//! `ask` sends `probe` (or `probe all`) to each `--to` in turn (three times,
//! 100 ms apart), listens until `--wait-ms` (default 500) after the last,
//! and prints each distinct answer on its own line, sorted. No answer:
//! no output. Exit 0 unless the arguments or the socket are bad.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn usage() -> ExitCode {
    eprintln!(
        "usage: udp-probe serve [--hello ADDR] ADDR...\n       udp-probe ask --bind ADDR [--all] [--wait-ms N] --to ADDR..."
    );
    ExitCode::from(2)
}

fn parse(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|e| format!("{s}: {e}"))
}

fn serve(args: &[String]) -> Result<(), String> {
    let mut hello = None;
    let mut addrs = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--hello" {
            hello = Some(parse(it.next().ok_or("--hello needs a value")?)?);
        } else {
            addrs.push(parse(a)?);
        }
    }
    if addrs.is_empty() {
        return Err("no address to serve".into());
    }
    let sockets: Arc<Vec<UdpSocket>> = Arc::new(
        addrs
            .iter()
            .map(|a| UdpSocket::bind(a).map_err(|e| format!("bind {a}: {e}")))
            .collect::<Result<_, _>>()?,
    );
    for i in 0..sockets.len() {
        let sockets = Arc::clone(&sockets);
        std::thread::spawn(move || {
            let own = &sockets[i];
            let mut buf = [0u8; 512];
            loop {
                let Ok((n, from)) = own.recv_from(&mut buf) else {
                    continue;
                };
                let answer = |s: &UdpSocket| {
                    let via = s.local_addr().map(|a| a.to_string()).unwrap_or_default();
                    let _ = s.send_to(format!("via={via} seen={from}").as_bytes(), from);
                };
                match &buf[..n] {
                    b"probe" => answer(own),
                    b"probe all" => sockets.iter().for_each(answer),
                    _ => {}
                }
            }
        });
    }
    loop {
        if let Some(to) = hello {
            for s in sockets.iter() {
                let _ = s.send_to(b"hello", to);
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn ask(args: &[String]) -> Result<(), String> {
    let mut bind = None;
    let mut all = false;
    let mut wait = Duration::from_millis(500);
    let mut to = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--bind" => bind = Some(parse(value()?)?),
            "--all" => all = true,
            "--wait-ms" => {
                wait = Duration::from_millis(value()?.parse().map_err(|e| format!("{e}"))?)
            }
            "--to" => to.push(parse(value()?)?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let bind = bind.ok_or("--bind is required")?;
    let socket = UdpSocket::bind(bind).map_err(|e| format!("bind {bind}: {e}"))?;
    let request: &[u8] = if all { b"probe all" } else { b"probe" };
    let mut answers = BTreeSet::new();
    let mut buf = [0u8; 512];
    let mut collect = |until: Instant| {
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            let _ = socket.set_read_timeout(Some(left.max(Duration::from_millis(1))));
            if let Ok((n, _)) = socket.recv_from(&mut buf) {
                answers.insert(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    };
    for dest in &to {
        for _ in 0..3 {
            socket
                .send_to(request, dest)
                .map_err(|e| format!("send to {dest}: {e}"))?;
            collect(Instant::now() + Duration::from_millis(100));
        }
    }
    collect(Instant::now() + wait);
    for a in answers {
        println!("{a}");
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("ask") => ask(&args[1..]),
        _ => return usage(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udp-probe: {e}");
            ExitCode::FAILURE
        }
    }
}
