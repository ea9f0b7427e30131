//! `wow-node demo`: N nodes and N guests in one process, no root.
//!
//! Each node is one tokio task owning its [`Core`] (overlay node, ARP,
//! DHCP, DNS, security associations) and its smoltcp [`Guest`], with a real
//! UDP socket on 127.0.0.1. Node 1 starts the ring; the others join
//! through it. A small in-process CA certifies each guest's address as soon
//! as it is leased (the administrator's part), so guest traffic crosses the
//! overlay sealed by ipsec-sa. Guest *i* resolves `guest-(i+1)` by DNS,
//! pings it and streams bytes to it over TCP.

use std::io::IsTerminal;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use dhcp_virt::MemoryStore;
use ipsec_ca::{Ca, CaIdentity, KeyType, MemStore, NodeKey, NodeRequest, Policy};
use overlay_core::Address;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use wow_core::core::{Core, CoreEvent, Counters, Credentials};
use wow_core::demo::{overlay_config, settings};
use wow_core::guest::{Guest, Phase, Report};

/// What `demo` runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Number of nodes.
    pub nodes: usize,
    /// Bytes per TCP stream.
    pub bytes: usize,
    /// Use security associations.
    pub secure: bool,
    /// Overall deadline.
    pub timeout: Duration,
}

struct DemoCa {
    ca: Ca<MemStore>,
    cert_der: Vec<u8>,
}

enum Progress {
    Line(usize, String),
    Finished(usize),
}

struct NodeResult {
    index: usize,
    address: Address,
    name: String,
    report: Report,
    phase: Phase,
    hops: Option<u8>,
    sa_count: usize,
    counters: Counters,
}

/// Runs the demo; prints progress and the final table.
pub fn run(options: DemoOptions) -> ExitCode {
    if options.nodes < 2 {
        eprintln!("wow-node demo: --nodes must be at least 2");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wow-node demo: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_async(options)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("wow-node demo: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_async(options: DemoOptions) -> std::io::Result<bool> {
    let n = options.nodes;
    let started = Instant::now();
    let color = std::io::stdout().is_terminal();
    println!(
        "wow-node demo: {n} nodes over loopback UDP, {} guests, {} per TCP stream, {}",
        n,
        human_bytes(options.bytes),
        if options.secure {
            "ipsec-sa encrypted"
        } else {
            "plaintext (--insecure)"
        }
    );
    let ca = if options.secure {
        let now = ipsec_ca::time::OffsetDateTime::from(SystemTime::now());
        let identity = CaIdentity::create_root(
            KeyType::Ed25519,
            "wow demo CA",
            now,
            ipsec_ca::time::Duration::days(1),
        )
        .map_err(std::io::Error::other)?;
        let cert_der = identity.cert_der().to_vec();
        let ca = Ca::open(identity, Policy::default(), MemStore::default())
            .map_err(std::io::Error::other)?;
        Some(Arc::new(Mutex::new(DemoCa { ca, cert_der })))
    } else {
        None
    };

    let mut sockets = Vec::new();
    for _ in 0..n {
        sockets.push(UdpSocket::bind("127.0.0.1:0").await?);
    }
    let endpoints: Vec<SocketAddr> = sockets
        .iter()
        .map(|s| s.local_addr())
        .collect::<Result<_, _>>()?;
    let (progress_tx, mut progress_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let base = Instant::now();
    let mut handles = Vec::new();
    for (index, socket) in sockets.into_iter().enumerate() {
        let spec = NodeSpec {
            index,
            nodes: n,
            bytes: options.bytes,
            bootstrap: if index == 0 { None } else { Some(endpoints[0]) },
            endpoint: endpoints[index],
            ca: ca.clone(),
            base,
            progress: progress_tx.clone(),
            stop: stop_rx.clone(),
        };
        handles.push(tokio::spawn(node_task(spec, socket)));
    }
    drop(progress_tx);

    let deadline = tokio::time::Instant::now() + options.timeout;
    let mut finished = vec![false; n];
    loop {
        tokio::select! {
            msg = progress_rx.recv() => match msg {
                Some(Progress::Line(i, line)) => {
                    println!("[{:>6.2}s] node {}: {line}", started.elapsed().as_secs_f64(), i + 1);
                }
                Some(Progress::Finished(i)) => {
                    finished[i] = true;
                    if finished.iter().all(|f| *f) {
                        break;
                    }
                }
                None => break,
            },
            _ = tokio::time::sleep_until(deadline) => {
                println!("[{:>6.2}s] timeout after {} s", started.elapsed().as_secs_f64(), options.timeout.as_secs());
                break;
            }
        }
    }
    let _ = stop_tx.send(true);
    let mut results = Vec::new();
    for h in handles {
        match h.await {
            Ok(Ok(r)) => results.push(r),
            Ok(Err(e)) => eprintln!("node failed: {e}"),
            Err(e) => eprintln!("node task failed: {e}"),
        }
    }
    results.sort_by_key(|r| r.index);
    Ok(print_table(
        &results,
        n,
        options.bytes,
        options.secure,
        color,
        started.elapsed(),
    ))
}

struct NodeSpec {
    index: usize,
    nodes: usize,
    bytes: usize,
    bootstrap: Option<SocketAddr>,
    endpoint: SocketAddr,
    ca: Option<Arc<Mutex<DemoCa>>>,
    base: Instant,
    progress: mpsc::UnboundedSender<Progress>,
    stop: watch::Receiver<bool>,
}

fn guest_name(index: usize) -> String {
    format!("guest-{}", index + 1)
}

fn smol(base: Instant, now: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(now.saturating_duration_since(base).as_micros() as i64)
}

fn std_at(base: Instant, at: smoltcp::time::Instant) -> Instant {
    base + Duration::from_micros(at.total_micros().max(0) as u64)
}

async fn node_task(mut spec: NodeSpec, socket: UdpSocket) -> std::io::Result<NodeResult> {
    let index = spec.index;
    let now = Instant::now();
    // Seeds only the demo guest's own smoltcp stack (its TCP sequence
    // numbers); the node's keys come from the operating system.
    let guest_seed = 0x5eed_0000 + index as u64;
    // The node key: its hash is the ring address, link set-up proves it,
    // and the demo CA certifies it (so the certificate's overlay address is
    // the ring address).
    let node_key = NodeKey::generate(KeyType::Ed25519).map_err(std::io::Error::other)?;
    let identity = overlay_core::KeyIdentity::from_pkcs8(
        overlay_core::KeyAlgorithm::Ed25519,
        node_key.pkcs8_der(),
    )
    .map_err(std::io::Error::other)?;
    let address = overlay_core::Identity::address(&identity);
    let mut core = Core::with_overlay_identity(
        settings(),
        overlay_config(spec.endpoint),
        Box::new(identity),
        MemoryStore::new(),
        now,
        unix_now(),
    )
    .map_err(std::io::Error::other)?;
    let bootstrap: Vec<SocketAddr> = spec.bootstrap.into_iter().collect();
    core.join(now, &bootstrap);
    let say = |line: String| {
        let _ = spec.progress.send(Progress::Line(index, line));
    };
    say(format!(
        "overlay address {} on udp {}",
        short(address),
        spec.endpoint
    ));

    let mut guest: Option<Guest> = None;
    let mut lines = Vec::new();
    let mut buf = vec![0u8; 65536];
    let mut out = vec![0u8; overlay_core::wire::MAX_MESSAGE_LEN];
    let mut reported_finished = false;
    let mut enrolled = false;
    loop {
        let now = Instant::now();
        if core.poll_timeout().is_some_and(|t| t <= now) {
            core.handle_timeout(now, SystemTime::now());
        }
        // Guest ⇄ node frames until both are quiet.
        if let Some(g) = guest.as_mut() {
            g.exchange(&mut core, now, smol(spec.base, now), &mut lines);
        }
        while let Some(event) = core.poll_event() {
            match event {
                CoreEvent::Joined => {
                    lines.push("joined the ring".into());
                }
                CoreEvent::Leased { addr, hostname, .. } => {
                    if !enrolled && let Some(ca) = spec.ca.as_ref() {
                        // The certificate binds the guest's host name too:
                        // peers believe its name record only then.
                        let name = hostname.as_deref().map(wow_core::core::sanitize_hostname);
                        match enrol(ca, addr, &node_key, name.as_deref()) {
                            Ok(credentials) => {
                                match core.install_identity(now, SystemTime::now(), &credentials) {
                                    Ok(()) => {
                                        enrolled = true;
                                        lines.push(format!("certified for {addr} by the demo CA"));
                                    }
                                    Err(e) => lines.push(format!("identity refused: {e}")),
                                }
                            }
                            Err(e) => lines.push(format!("enrolment failed: {e}")),
                        }
                    }
                }
                CoreEvent::SaEstablished { peer } => {
                    lines.push(format!("security association with {peer}"));
                }
                CoreEvent::SaFailed { peer, reason } => {
                    tracing::debug!(%peer, %reason, "sa failed");
                }
                CoreEvent::Link { .. }
                | CoreEvent::CrlFetched(_)
                | CoreEvent::Enrolled(_)
                | CoreEvent::EnrolmentStatus(_) => {}
            }
        }
        if guest.is_none() && core.overlay().is_joined() {
            let mac = [0x52, 0x54, 0x00, 0x77, 0x00, index as u8 + 1];
            let peer = format!("{}.wow.internal", guest_name((index + 1) % spec.nodes));
            guest = Some(Guest::new(
                mac,
                &guest_name(index),
                &peer,
                spec.bytes,
                core.settings().guest_mtu,
                smol(spec.base, now),
                guest_seed,
            ));
            continue;
        }
        while let Some((to, len)) = core.poll_udp(&mut out) {
            let _ = socket.send_to(&out[..len], to).await;
        }
        for line in lines.drain(..) {
            say(line);
        }
        if !reported_finished && guest.as_ref().is_some_and(|g| g.finished()) {
            reported_finished = true;
            let _ = spec.progress.send(Progress::Finished(index));
        }

        let mut deadline = now + Duration::from_millis(200);
        if let Some(t) = core.poll_timeout() {
            deadline = deadline.min(t);
        }
        if let Some(g) = guest.as_mut() {
            deadline = deadline.min(std_at(spec.base, g.poll_at(smol(spec.base, now))));
        }
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                if let Ok((len, from)) = r {
                    let now = Instant::now();
                    core.handle_udp(now, from, &buf[..len]);
                    // Drain what else is queued before running the guest.
                    for _ in 0..64 {
                        match socket.try_recv_from(&mut buf) {
                            Ok((len, from)) => core.handle_udp(now, from, &buf[..len]),
                            Err(_) => break,
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {}
            _ = spec.stop.changed() => break,
        }
    }
    let (report, phase) = match guest {
        Some(g) => (g.report.clone(), g.phase().clone()),
        None => (Report::default(), Phase::Failed("never joined".into())),
    };
    let hops = report.peer_addr.and_then(|a| core.hops_from(a));
    Ok(NodeResult {
        index,
        address,
        name: guest_name(index),
        report,
        phase,
        hops,
        sa_count: core.sa_count(),
        counters: core.counters(),
    })
}

fn enrol(
    ca: &Mutex<DemoCa>,
    addr: Ipv4Addr,
    key: &NodeKey,
    name: Option<&str>,
) -> Result<Credentials, String> {
    let mut request = NodeRequest::new(addr);
    if let Some(name) = name.filter(|n| !n.is_empty()) {
        request = request.with_dns_name(format!(
            "{name}.{}",
            settings().domain.trim_end_matches('.')
        ));
    }
    let csr = key
        .certificate_request(&request)
        .map_err(|e| e.to_string())?;
    let mut ca = ca.lock().map_err(|_| "CA lock poisoned".to_string())?;
    let now = ipsec_ca::time::OffsetDateTime::from(SystemTime::now());
    let issued = ca
        .ca
        .sign(&csr, addr, None, now)
        .map_err(|e| e.to_string())?;
    Ok(Credentials {
        certificate: issued.certificate,
        key: key.pkcs8_der().to_vec(),
        ca_certificate: ca.cert_der.clone(),
        virtual_ip: addr,
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn short(a: Address) -> String {
    a.to_string().chars().take(8).collect()
}

fn human_bytes(b: usize) -> String {
    if b >= 1 << 20 {
        format!("{:.1} MiB", b as f64 / f64::from(1 << 20))
    } else {
        format!("{:.1} KiB", b as f64 / 1024.0)
    }
}

fn print_table(
    results: &[NodeResult],
    n: usize,
    bytes: usize,
    secure: bool,
    color: bool,
    elapsed: Duration,
) -> bool {
    let (green, red, reset) = if color {
        ("\x1b[32m", "\x1b[31m", "\x1b[0m")
    } else {
        ("", "", "")
    };
    println!();
    println!(
        "{:<5} {:<9} {:<13} {:<26} {:<13} {:>4} {:>9} {:>12} {:>3}  result",
        "node", "ring", "guest", "name", "-> peer", "hops", "rtt ms", "tcp Mbit/s", "sa"
    );
    let mut all_ok = results.len() == n;
    for r in results {
        let next = (r.index + 1) % n;
        let peer = results.iter().find(|p| p.index == next);
        let peer_addr = peer.and_then(|p| p.report.addr);
        let received = peer.map(|p| p.report.received).unwrap_or(0);
        let rtt = if r.report.rtts_ms.is_empty() {
            None
        } else {
            Some(r.report.rtts_ms.iter().sum::<f64>() / r.report.rtts_ms.len() as f64)
        };
        let mbps = r.report.send_duration.and_then(|d| {
            let s = d.as_secs_f64();
            (s > 0.0).then(|| r.report.sent as f64 * 8.0 / s / 1e6)
        });
        let resolved_right = r.report.peer_addr.is_some() && r.report.peer_addr == peer_addr;
        let ok = matches!(r.phase, Phase::Done)
            && r.report.addr.is_some()
            && resolved_right
            && r.report.replies > 0
            && r.report.sent == bytes
            && received == bytes
            && (!secure || r.sa_count > 0);
        all_ok &= ok;
        let why = match &r.phase {
            Phase::Failed(w) => w.clone(),
            p if !ok => format!("stopped at {p:?}"),
            _ => String::new(),
        };
        println!(
            "{:<5} {:<9} {:<13} {:<26} {:<13} {:>4} {:>9} {:>12} {:>3}  {}",
            r.index + 1,
            short(r.address),
            r.report.addr.map(|a| a.to_string()).unwrap_or("-".into()),
            format!("{}.wow.internal", r.name),
            r.report
                .peer_addr
                .map(|a| a.to_string())
                .unwrap_or("-".into()),
            r.hops.map(|h| h.to_string()).unwrap_or("-".into()),
            rtt.map(|v| format!("{v:.2}")).unwrap_or("-".into()),
            mbps.map(|v| format!("{v:.1}")).unwrap_or("-".into()),
            r.sa_count,
            if ok {
                format!("{green}ok{reset}")
            } else {
                format!("{red}FAILED{reset} {why}")
            }
        );
        tracing::debug!(node = r.index + 1, counters = ?r.counters, "counters");
    }
    println!();
    if all_ok {
        println!(
            "{green}all {n} guests: DHCP, DNS, ping and TCP across the overlay ok{reset} ({:.1} s)",
            elapsed.as_secs_f64()
        );
    } else {
        println!("{red}demo FAILED{reset} ({:.1} s)", elapsed.as_secs_f64());
    }
    all_ok
}
