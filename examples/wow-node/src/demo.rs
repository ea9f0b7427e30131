//! `wow-node demo`: N nodes and N guests in one process, no root.
//!
//! Each node is one tokio task driving a [`DemoNode`] (its core, its
//! membership and its smoltcp guest) over a real UDP socket on 127.0.0.1.
//! Node 1 starts the ring; the others join through it. A small in-process
//! CA ([`DemoCa`]) certifies each guest's address as soon as it is leased
//! (the administrator's part), so guest traffic crosses the overlay sealed
//! by ipsec-sa. Guest *i* resolves `guest-(i+1)` by DNS, pings it and
//! streams bytes to it over TCP.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use wow_core::demo::{DemoCa, DemoNode, NodeResult, human_bytes, table};

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

enum Progress {
    Line(usize, String),
    Finished(usize),
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
        let ca = DemoCa::new(SystemTime::now()).map_err(std::io::Error::other)?;
        Some(Arc::new(Mutex::new(ca)))
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
        let ca_der = ca
            .as_ref()
            .and_then(|ca| ca.lock().ok().map(|c| c.certificate().to_vec()));
        let node = DemoNode::new(
            Instant::now(),
            SystemTime::now(),
            index,
            n,
            options.bytes,
            endpoints[index],
            (index > 0).then_some(endpoints[0]),
            ca_der,
            base,
        )
        .map_err(std::io::Error::other)?;
        let task = node_task(
            node,
            socket,
            ca.clone(),
            progress_tx.clone(),
            stop_rx.clone(),
        );
        handles.push(tokio::spawn(task));
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
            Ok(r) => results.push(r),
            Err(e) => eprintln!("node task failed: {e}"),
        }
    }
    results.sort_by_key(|r| r.index);
    let color = std::io::stdout().is_terminal();
    let elapsed = started.elapsed();
    let (text, ok) = table(&results, n, options.bytes, options.secure, color, elapsed);
    println!("{text}");
    Ok(ok)
}

/// Drives `node` over `socket` until told to stop.
async fn node_task(
    mut node: DemoNode,
    socket: UdpSocket,
    ca: Option<Arc<Mutex<DemoCa>>>,
    progress: mpsc::UnboundedSender<Progress>,
    mut stop: watch::Receiver<bool>,
) -> NodeResult {
    let index = node.result().index;
    let mut buf = vec![0u8; 65536];
    let mut out = vec![0u8; overlay_core::wire::MAX_MESSAGE_LEN];
    let mut reported_finished = false;
    loop {
        let now = Instant::now();
        node.step(now, SystemTime::now());
        while let Some((csr, ip)) = node.poll_sign() {
            let issued = match ca.as_ref().map(|ca| ca.lock()) {
                Some(Ok(mut ca)) => ca.sign(SystemTime::now(), &csr, ip),
                _ => Err("no CA".to_string()),
            };
            node.issued(now, SystemTime::now(), issued);
        }
        while let Some((to, len)) = node.poll_udp(&mut out) {
            let _ = socket.send_to(&out[..len], to).await;
        }
        while let Some(line) = node.poll_line() {
            let _ = progress.send(Progress::Line(index, line));
        }
        if !reported_finished && node.finished() {
            reported_finished = true;
            let _ = progress.send(Progress::Finished(index));
        }
        let deadline = node.poll_timeout(now);
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                if let Ok((len, from)) = r {
                    let now = Instant::now();
                    node.handle_udp(now, from, &buf[..len]);
                    // Drain what else is queued before running the guest.
                    for _ in 0..64 {
                        match socket.try_recv_from(&mut buf) {
                            Ok((len, from)) => node.handle_udp(now, from, &buf[..len]),
                            Err(_) => break,
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {}
            _ = stop.changed() => break,
        }
    }
    node.result()
}
