//! Serves a virtual zone over UDP and TCP.
//!
//! ```text
//! dns-serve --listen 10.95.1.1:53 --zone wow.internal --network 10.128.0.0/9 \
//!           [--names FILE] [--threads N] [--ns-addr IP] [--max-udp OCTETS] [--readers N]
//!           [--no-gso]
//! ```
//!
//! FILE holds `name address` lines (hosts-style `address name` works too).
//! Names are loaded into one [`Zone`] shared read-only by `N` UDP sockets
//! (default: one per CPU) bound with `SO_REUSEPORT`, each read by
//! `--readers` threads (default 1) that take up to 128 queries per `recvmmsg`
//! and answer them with `sendmmsg`, equal-size answers to one client
//! concatenated into one UDP GSO send (`UDP_SEGMENT`; `--no-gso` sends each
//! datagram on its own); and a TCP acceptor with one thread per connection.
//! The kernel spreads clients over the sockets by address and port, so one
//! busy client keeps one socket's threads busy: a second reader per socket
//! puts it on two cores, at some CPU per answer (the readers wake and
//! contend for the same socket). `--max-udp` caps UDP responses (below 512
//! it forces TC, for tests). Prints
//! `loaded N names in T ms, B bytes/name` and `listening on ADDR` to stderr.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dns_virt::{TcpFramer, Transport, Zone, ZoneConfig, wire::frame_tcp};
use hickory_proto::rr::Name;
use nix::sys::socket::{
    ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg,
};
use socket2::{Domain, Protocol, Socket, Type};

struct Args {
    listen: SocketAddr,
    zone: String,
    network: String,
    names: Option<String>,
    threads: usize,
    ns_addr: Option<String>,
    max_udp: u16,
    readers: usize,
    gso: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: dns-serve --listen IP:PORT --zone NAME --network CIDR [--names FILE] [--threads N] [--ns-addr IP] [--max-udp OCTETS] [--readers N] [--no-gso]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        listen: "127.0.0.1:5353".parse().unwrap(),
        zone: "wow.internal.".into(),
        network: "10.128.0.0/9".into(),
        names: None,
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        ns_addr: None,
        max_udp: 1232,
        readers: 1,
        gso: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--listen" => args.listen = value().parse().unwrap_or_else(|_| usage()),
            "--zone" => args.zone = value(),
            "--network" => args.network = value(),
            "--names" => args.names = Some(value()),
            "--threads" => args.threads = value().parse().unwrap_or_else(|_| usage()),
            "--ns-addr" => args.ns_addr = Some(value()),
            "--max-udp" => args.max_udp = value().parse().unwrap_or_else(|_| usage()),
            "--readers" => args.readers = value().parse().unwrap_or_else(|_| usage()),
            "--no-gso" => args.gso = false,

            _ => usage(),
        }
    }
    args
}

fn udp_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_port(true)?;
    s.set_recv_buffer_size(4 << 20)?;
    s.set_send_buffer_size(4 << 20)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Datagrams handled per system call.
const BATCH: usize = 128;
/// Most datagrams one UDP GSO send may carry (`UDP_MAX_SEGMENTS`).
const GSO_SEGMENTS: usize = 64;

/// Sends a batch of answers. With GSO, answers of one length to one address
/// are concatenated into one message that the kernel splits into datagrams
/// (`UDP_SEGMENT`), so a busy client's answers cost one send each run
/// rather than one each; one `sendmmsg` per distinct length. Without GSO (or
/// when the kernel refuses it), one `sendmmsg` of single datagrams.
struct Sender {
    gso: bool,
    plain: MultiHeaders<SockaddrStorage>,
    segmented: MultiHeaders<SockaddrStorage>,
    /// (index into the batch's answers, address), sorted by length.
    order: Vec<(usize, SockaddrStorage)>,
    /// Concatenated runs and their addresses.
    runs: Vec<(Vec<u8>, SockaddrStorage)>,
    used: Vec<bool>,
}

impl Sender {
    fn new(gso: bool) -> Self {
        Sender {
            gso,
            plain: MultiHeaders::preallocate(BATCH, None),
            segmented: MultiHeaders::preallocate(BATCH, Some(nix::cmsg_space!(u16))),
            order: Vec::with_capacity(BATCH),
            runs: (0..BATCH)
                .map(|_| {
                    (
                        Vec::with_capacity(GSO_SEGMENTS * 64),
                        SockaddrStorage::from(std::net::SocketAddr::from(([0, 0, 0, 0], 0))),
                    )
                })
                .collect(),
            used: Vec::with_capacity(BATCH),
        }
    }

    fn send(&mut self, fd: i32, outs: &[Vec<u8>], answered: &[(usize, SockaddrStorage)]) {
        if !self.gso || answered.len() < 2 || !self.send_segmented(fd, outs, answered) {
            let replies: Vec<[IoSlice<'_>; 1]> = answered
                .iter()
                .map(|(i, _)| [IoSlice::new(&outs[*i])])
                .collect();
            let addrs: Vec<Option<SockaddrStorage>> =
                answered.iter().map(|(_, a)| Some(*a)).collect();
            let _ = sendmmsg(fd, &mut self.plain, &replies, &addrs, [], MsgFlags::empty());
        }
    }

    /// False if the kernel refused the first GSO send (nothing was sent);
    /// GSO is then off for this socket.
    fn send_segmented(
        &mut self,
        fd: i32,
        outs: &[Vec<u8>],
        answered: &[(usize, SockaddrStorage)],
    ) -> bool {
        self.order.clear();
        self.order.extend_from_slice(answered);
        self.order.sort_unstable_by_key(|(i, _)| outs[*i].len());
        let mut start = 0;
        while start < self.order.len() {
            let len = outs[self.order[start].0].len();
            let end = start
                + self.order[start..]
                    .iter()
                    .take_while(|(i, _)| outs[*i].len() == len)
                    .count();
            // Runs of this length, one per address (at most GSO_SEGMENTS each).
            let same = &self.order[start..end];
            self.used.clear();
            self.used.resize(same.len(), false);
            let mut runs = 0;
            for a in 0..same.len() {
                if self.used[a] {
                    continue;
                }
                let addr = same[a].1;
                let mut segments = GSO_SEGMENTS;
                for b in a..same.len() {
                    if self.used[b] || same[b].1 != addr {
                        continue;
                    }
                    if segments == GSO_SEGMENTS {
                        self.runs[runs].0.clear();
                        self.runs[runs].1 = addr;
                        runs += 1;
                        segments = 0;
                    }
                    self.runs[runs - 1].0.extend_from_slice(&outs[same[b].0]);
                    self.used[b] = true;
                    segments += 1;
                }
            }
            let replies: Vec<[IoSlice<'_>; 1]> = self.runs[..runs]
                .iter()
                .map(|(buf, _)| [IoSlice::new(buf)])
                .collect();
            let addrs: Vec<Option<SockaddrStorage>> =
                self.runs[..runs].iter().map(|(_, a)| Some(*a)).collect();
            let size = len as u16;
            let sent = sendmmsg(
                fd,
                &mut self.segmented,
                &replies,
                &addrs,
                [ControlMessage::UdpGsoSegments(&size)],
                MsgFlags::empty(),
            );
            if sent.is_err() && start == 0 {
                self.gso = false;
                return false;
            }
            start = end;
        }
        true
    }
}

/// Receives up to `BATCH` queries per `recvmmsg`, answers them, and sends
/// the answers with [`Sender`]. Buffers and headers are allocated once.
fn serve_udp(zone: Arc<Zone>, socket: UdpSocket, gso: bool) {
    let fd = socket.as_raw_fd();
    let mut bufs: Box<[[u8; 1500]; BATCH]> = Box::new([[0u8; 1500]; BATCH]);
    let mut outs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(1232)).collect();
    let mut recv_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut sender = Sender::new(gso);
    let mut received: Vec<(usize, Option<SockaddrStorage>)> = Vec::with_capacity(BATCH);
    let mut answered: Vec<(usize, SockaddrStorage)> = Vec::with_capacity(BATCH);
    loop {
        received.clear();
        {
            let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] =
                bufs.each_mut().map(|b| [IoSliceMut::new(&mut b[..])]);
            let Ok(msgs) = recvmmsg(
                fd,
                &mut recv_headers,
                iovs.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            ) else {
                continue;
            };
            received.extend(msgs.map(|m| (m.bytes, m.address)));
        }
        answered.clear();
        for (i, ((&(len, addr), buf), out)) in received
            .iter()
            .zip(bufs.iter())
            .zip(outs.iter_mut())
            .enumerate()
        {
            let Some(query) = buf.get(..len) else {
                continue;
            };
            if let dns_virt::Outcome::Answered { .. } = zone.respond(query, Transport::Udp, out)
                && let Some(addr) = addr
            {
                answered.push((i, addr));
            }
        }
        if !answered.is_empty() {
            sender.send(fd, &outs, &answered);
        }
    }
}

fn serve_tcp(zone: Arc<Zone>, mut stream: TcpStream) {
    // RFC 7766 §6.2.3: close idle connections.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_nodelay(true);
    let mut framer = TcpFramer::new();
    let mut buf = [0u8; 16384];
    let mut out = Vec::new();
    let mut framed = Vec::new();
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        framer.push(&buf[..n]);
        loop {
            let message = match framer.next_message() {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(_) => return,
            };
            if let dns_virt::Outcome::Answered { .. } =
                zone.respond(message, Transport::Tcp, &mut out)
                && frame_tcp(&out, &mut framed).is_ok()
                && stream.write_all(&framed).is_err()
            {
                return;
            }
        }
    }
}

fn main() {
    let args = parse_args();
    let mut zone_name = Name::from_ascii(&args.zone).unwrap_or_else(|_| usage());
    zone_name.set_fqdn(true);
    let config = ZoneConfig {
        zone: zone_name,
        network: args.network.parse().unwrap_or_else(|_| usage()),
        ns_addr: args
            .ns_addr
            .as_deref()
            .map(|a| a.parse().unwrap_or_else(|_| usage())),
        max_udp_payload: args.max_udp,
        ..ZoneConfig::default()
    };
    let mut zone = Zone::new(config, 0x5eed);
    if let Some(path) = &args.names {
        let started = Instant::now();
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
            eprintln!("dns-serve: {path}: {e}");
            std::process::exit(1)
        });
        let n = zone.load_names(&text).unwrap_or_else(|e| {
            eprintln!("dns-serve: {path}: {e}");
            std::process::exit(1)
        });
        drop(text);
        let bytes = zone.table().heap_bytes();
        eprintln!(
            "loaded {n} names in {} ms, table {} bytes ({} bytes/name)",
            started.elapsed().as_millis(),
            bytes,
            bytes / n.max(1)
        );
    }
    let zone = Arc::new(zone);

    let listener = TcpListener::bind(args.listen).unwrap_or_else(|e| {
        eprintln!("dns-serve: tcp {}: {e}", args.listen);
        std::process::exit(1)
    });
    let mut threads = Vec::new();
    for _ in 0..args.threads.max(1) {
        let socket = udp_socket(args.listen).unwrap_or_else(|e| {
            eprintln!("dns-serve: udp {}: {e}", args.listen);
            std::process::exit(1)
        });
        // SO_REUSEPORT spreads clients over sockets by 4-tuple; a second
        // reader per socket puts a single busy client on two cores.
        for _ in 0..args.readers.max(1) {
            let zone = Arc::clone(&zone);
            let s = socket.try_clone().unwrap();
            let gso = args.gso;
            threads.push(std::thread::spawn(move || serve_udp(zone, s, gso)));
        }
    }
    eprintln!("listening on {} (udp, tcp)", args.listen);
    for stream in listener.incoming().flatten() {
        let zone = Arc::clone(&zone);
        std::thread::spawn(move || serve_tcp(zone, stream));
    }
}
