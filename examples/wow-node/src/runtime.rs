//! `wow-node up`: the node on a real TAP device.
//!
//! One tokio task (a current-thread runtime) owns the [`Core`] and every
//! machine in it; it `select!`s over the underlay UDP socket, the TAP
//! device, the next deadline, the control socket, the CRL refresh tick and
//! SIGINT/SIGTERM. After each input it drains the core's outputs: frames to
//! the TAP, datagrams to the socket, events to the log.
//! On the CA node, the CA's state changes are written by a thread of their
//! own ([`crate::ca_writer`]). With `WOW_CRYPTO_WORKERS=N`, the AEAD of
//! data packets runs on a small pool of threads as well (`CryptoPool`):
//! the core leaves it as jobs ([`Core::set_deferred_crypto`]), and
//! everything else, replay checks included, stays on the task.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use ipsec_ca::NodeKey;
use overlay_core::Address;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UdpSocket, UnixListener};
use tokio::signal::unix::{SignalKind, signal};

use crate::ca_cmd;
use crate::config::{AllocationMode, Config};
use crate::control::SOCKET_FILE;
use wow_core::core::{Core, MAX_GUEST_MTU, Settings, guest_mtu};
use wow_core::membership::{CrlFile, EnrolVia, Membership, MembershipConfig, Output};
use wow_core::status::Status;

/// The gateway's virtual MAC: locally administered, spelling "wow".
pub const GATEWAY_MAC: [u8; 6] = [0x02, 0x77, 0x6f, 0x77, 0x00, 0x01];
/// Datagrams read per wake-up before the TAP gets a turn.
const UDP_BATCH: usize = 64;
/// Frames read per wake-up before the socket gets a turn.
const TAP_BATCH: usize = 64;
/// Guest frames (after segmentation) handled per wake-up before the
/// datagrams they became are sent.
const TAP_FRAME_BUDGET: usize = 192;
/// Frames for the guest at which the socket stops being read until they
/// are written.
const TAP_BACKLOG: usize = 512;
/// Crypto jobs below which a batch runs on the task alone: handing a few
/// packets to a thread costs more than sealing them.
const CRYPTO_SPLIT_MIN: usize = 8;
/// The environment variable that sets the crypto worker threads (0: the
/// task seals and opens inline, as a library user's core does).
const CRYPTO_WORKERS_ENV: &str = "WOW_CRYPTO_WORKERS";

/// Runs the node until SIGINT/SIGTERM.
pub fn up(config_path: &Path, confine: bool) -> ExitCode {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wow-node up: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wow-node up: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The node runs as a spawned task, not as `block_on`'s own future:
    // waking that one writes the driver's eventfd (one more system call
    // and one more `epoll_wait` per wake-up), a task's wake from the
    // I/O driver only queues it.
    let node = runtime.block_on(async {
        tokio::spawn(run(config, confine))
            .await
            .unwrap_or_else(|e| Err(format!("the node's task ended: {e}")))
    });
    match node {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("wow-node up: {e}");
            ExitCode::FAILURE
        }
    }
}

fn read_text(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// What the node starts with: its key, its certificate if certified, the
/// CA certificate (for enrolment), all DER, and where the certificate is
/// kept.
struct Identity {
    key: NodeKey,
    certificate: Option<Vec<u8>>,
    ca_der: Option<Vec<u8>>,
    cert_path: PathBuf,
}

fn read_der(path: &Path) -> Result<Vec<u8>, String> {
    ipsec_ca::key::from_pem("CERTIFICATE", &read_text(path)?)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Loads the node key (generating it on first start) and the certificates.
fn load_identity(config: &Config) -> Result<Identity, String> {
    let sec = &config.security;
    let key_path = sec
        .key
        .as_ref()
        .map(|p| config.state_path(p))
        .unwrap_or_else(|| config.node.state_dir.join(ca_cmd::NODE_KEY_FILE));
    let key = if key_path.exists() {
        NodeKey::from_pem(&read_text(&key_path)?)
            .map_err(|e| format!("{}: {e}", key_path.display()))?
    } else {
        let key = NodeKey::generate(ipsec_ca::KeyType::Ed25519).map_err(|e| e.to_string())?;
        ipsec_ca::file_store::write_atomic(&key_path, key.to_pem().as_bytes(), 0o600)
            .map_err(|e| e.to_string())?;
        tracing::info!(path = %key_path.display(), "generated the node key");
        key
    };
    let cert_path = config.state_path(
        sec.cert
            .as_deref()
            .unwrap_or_else(|| Path::new(ca_cmd::NODE_CERT_FILE)),
    );
    let ca_der = match &sec.ca_cert {
        Some(ca) => Some(read_der(&config.state_path(ca))?),
        None => None,
    };
    // Enrolling (or uncertified): no certificate yet.
    let uncertified = (sec.cert.is_none() || sec.enrol) && !cert_path.exists();
    let certificate = match &ca_der {
        Some(_) if !uncertified => Some(read_der(&cert_path)?),
        _ => None,
    };
    Ok(Identity {
        key,
        certificate,
        ca_der,
        cert_path,
    })
}

/// Removes the control socket file when dropped.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn run(config: Config, confine: bool) -> Result<(), String> {
    // Before any socket or device: the rules stay after exit (fail-closed).
    crate::confine::at_start(&config, confine).map_err(|e| e.to_string())?;
    let state_dir = config.node.state_dir.clone();
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(&state_dir)
        .map_err(|e| format!("cannot create {}: {e}", state_dir.display()))?;
    // Descriptors kept open across a self-update's exec: adopted before
    // this process opens anything else.
    let (mut inherited_udp, mut inherited_tap, inherited_sas) = crate::update::inherited();
    // Before anything slow (traceroute, TAP): a SIGTERM that arrives while
    // the node starts ends it cleanly instead of killing it.
    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let Identity {
        key,
        certificate,
        ca_der,
        cert_path,
    } = load_identity(&config)?;
    let join_token = match &config.security.join_token {
        Some(text) => {
            Some(ipsec_ca::JoinToken::parse(text).map_err(|e| format!("join_token: {e}"))?)
        }
        None => None,
    };
    let enrol = config
        .security
        .enrol
        .then_some(EnrolVia::Overlay(join_token));
    // The ring address is the hash of the node key: the overlay address
    // the certificate carries. In a closed network only certified peers
    // are admitted at link set-up.
    let overlay_identity = wow_core::overlay_identity::CaIdentity::new(
        &key,
        ca_der.as_deref(),
        config.security.closed,
    )
    .map_err(|e| e.to_string())?;
    let crl_path = config.security.crl.as_ref().map(|p| config.state_path(p));
    let mut membership = Membership::new(
        Instant::now(),
        MembershipConfig {
            key,
            ca_certificate: ca_der.clone(),
            certificate,
            enrol,
            domain: config.network.domain.clone(),
            crl_refresh: Duration::from_secs(config.security.crl_refresh_secs),
            crl_file: crl_path.is_some(),
            overlay: Some(overlay_identity.handle()),
        },
    )
    .map_err(|e| e.to_string())?;
    let address = overlay_core::Identity::address(&overlay_identity);

    let mtu = config
        .tap
        .mtu
        .map(|m| m.clamp(576, MAX_GUEST_MTU))
        .unwrap_or_else(|| guest_mtu(config.tap.underlay_mtu));
    let settings = Settings {
        network: config.network.cidr.trunc(),
        gateway_addr: config.network.gateway_addr(),
        gateway_mac: GATEWAY_MAC,
        domain: config.network.domain.clone(),
        guest_mtu: mtu,
        lease_duration: Duration::from_secs(config.network.lease_secs.max(60)),
        dht_allocation: config.network.allocation == AllocationMode::Dht,
        allocator: allocator(&config.network)?,
        fixed_addr: membership.certified_ip(),
        public_hosts: config.security.public_hosts.clone(),
        pool: config.network.pool.map(|[first, last]| (first, last)),
        dns_forward: false,
        ipv6: config.network.ipv6_prefix(),
    };
    let mut settings = settings;
    let mut upstream = dns_upstream(&config, confine);
    let metrics = crate::metrics::bind(config.metrics.listen).await;
    settings.dns_forward = upstream.is_some();

    let socket = match inherited_udp.take() {
        Some(fd) => {
            let std_socket = std::net::UdpSocket::from(fd);
            std_socket
                .set_nonblocking(true)
                .and_then(|()| UdpSocket::from_std(std_socket))
                .map_err(|e| format!("inherited UDP socket: {e}"))?
        }
        None => UdpSocket::bind(config.node.listen)
            .await
            .map_err(|e| format!("cannot bind {}: {e}", config.node.listen))?,
    };
    // Room for bursts: a TCP window's worth of datagrams arrives at once.
    // The forced options need CAP_NET_ADMIN; without it the kernel's
    // rmem_max/wmem_max cap the plain ones.
    const SOCKET_BUFFER: usize = 4 << 20;
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(&socket, sockopt::RcvBufForce, &SOCKET_BUFFER).is_err() {
        let _ = setsockopt(&socket, sockopt::RcvBuf, &SOCKET_BUFFER);
    }
    if setsockopt(&socket, sockopt::SndBufForce, &SOCKET_BUFFER).is_err() {
        let _ = setsockopt(&socket, sockopt::SndBuf, &SOCKET_BUFFER);
    }
    let mut endpoints = config.node.advertise.clone();
    if let Ok(local) = socket.local_addr()
        && !local.ip().is_unspecified()
        && !endpoints.contains(&local)
    {
        endpoints.push(local);
    }
    // A mapping of our port that the router grants (PCP or NAT-PMP), asked
    // while STUN runs; advertised first when granted.
    let port_mapping = match socket.local_addr() {
        Ok(local) if config.node.port_mapping && !local.ip().is_loopback() => {
            Some(tokio::spawn(crate::portmap::map_port(local.port())))
        }
        _ => None,
    };
    // Our reflexive endpoint (the NAT's mapping of our socket), learned by
    // STUN from the bootstrap nodes (every node serves STUN Binding): the
    // overlay advertises it in its ConnectToMe and link requests, so that
    // peers behind other NATs can punch to it.
    // Meanwhile, how many NATs we are behind (a traceroute toward the
    // first bootstrap node): the punch sessions' opening steps follow it.
    // After an update the previous binary's measure stands (the host's
    // NATs did not move in the exec): no traceroute in the update's gap.
    let inherited_depth = crate::update::inherited_nat_depth();
    let depth_probe = config
        .node
        .bootstrap
        .iter()
        .filter(|_| inherited_depth.is_none())
        .find_map(|e| match e {
            std::net::SocketAddr::V4(v4) if !v4.ip().is_loopback() => Some(*v4),
            _ => None,
        })
        .map(|target| {
            let probes =
                crate::traceroute::Probes::send(target, nat_traversal::depth::MAX_DEPTH + 1);
            tokio::spawn(async move {
                tokio::time::sleep(crate::traceroute::WAIT).await;
                probes.hops()
            })
        });
    if let Some(reflexive) = discover_reflexive(&socket, &config.node.bootstrap).await
        && !endpoints.contains(&reflexive)
    {
        tracing::info!(%reflexive, "reflexive endpoint (STUN)");
        endpoints.insert(0, reflexive);
    }
    if let Some(task) = port_mapping
        && let Ok(Some(mapped)) = task.await
        && !endpoints.contains(&mapped)
    {
        tracing::info!(%mapped, "endpoint mapped by the gateway (PCP/NAT-PMP)");
        endpoints.insert(0, mapped);
    }
    let overlay_config = overlay_core::Config {
        endpoints,
        tick_duration: Duration::from_millis(250),
        // Our punch datagrams open our NAT before any link request leaves
        // (see `nat_traversal::agent`).
        defer_links_to_punch: true,
        // A send unanswered for half a second pings every link: a NAT
        // rebinding or a new underlay address is found (and the links made
        // again) long before the 2 s suspect timeout.
        rebind_probe_duration: Duration::from_millis(500),
        // Room for every datagram one batch of guest frames queues (see
        // `TAP_FRAME_BUDGET`): sending reuses buffers instead of
        // allocating them.
        pool_buffers: 2 * TAP_FRAME_BUDGET,
        ..overlay_core::Config::default()
    };
    let leases = dhcp_virt::FileStore::open(state_dir.join("leases.json"))
        .map_err(|e| format!("lease store: {e}"))?;
    let now = Instant::now();
    let mut core = Core::with_overlay_identity(
        now,
        SystemTime::now(),
        settings,
        overlay_config,
        Box::new(overlay_identity),
        leases,
    )
    .map_err(|e| e.to_string())?;
    core.set_crl_grace(Duration::from_secs(config.security.crl_grace_secs));
    if let Some(task) = depth_probe
        && let Ok(hops) = task.await
    {
        match nat_traversal::depth::nat_depth(&hops) {
            Some(depth) => {
                tracing::info!(depth, ?hops, "NAT depth (traceroute)");
                core.set_nat_depth(depth);
            }
            None => tracing::info!(?hops, "NAT depth unknown: default opening steps"),
        }
    }
    if let Some(Some(depth)) = inherited_depth {
        tracing::info!(depth, "NAT depth kept across the update");
        core.set_nat_depth(depth);
    }
    if core.central_leases().is_some() {
        // The allocator's table of the network's leases: every grant is on
        // disk before it is answered.
        let path = state_dir.join("allocator.json");
        let store = dhcp_virt::FileStore::open(&path)
            .map_err(|e| format!("allocator store {}: {e}", path.display()))?;
        core.set_allocator_store(now, SystemTime::now(), Box::new(store))
            .map_err(|e| format!("allocator store {}: {e}", path.display()))?;
        tracing::info!(
            leases = core.central_leases().unwrap_or(0),
            path = %path.display(),
            "central allocator: lease table loaded"
        );
    }
    let release_keys = crate::update::parse_keys(&config.update.keys)?;
    let with_update = !release_keys.is_empty();
    core.set_release_keys(now, release_keys.clone());
    let mut updater = crate::update::Updater::new(
        now,
        release_keys,
        &config.update.channel,
        Duration::from_secs(config.update.check_secs),
        &state_dir,
    );
    membership
        .start(&mut core, now, SystemTime::now())
        .map_err(|e| e.to_string())?;
    // The previous process's SAs: the guest's peers need no new key
    // exchange. A refused state (stale, forged) leaves fresh exchanges.
    if let Some(state) = inherited_sas {
        match core.import_sa_state(now, &state) {
            Ok(peers) => tracing::info!(peers, "security associations kept across the update"),
            Err(e) => tracing::warn!(error = %e, "SA state refused: fresh key exchanges"),
        }
    }

    // A stable MAC for the guest's side of the TAP, so that its DHCP client
    // (keyed by hardware address) keeps its lease across restarts.
    let a = address.to_bytes();
    let tap_mac = [0x02, 0x57, a[0], a[1], a[2], a[3]];
    // After an update with offloads the device outlived the exec
    // (persistent): attach to it as it is, without setting its MAC again
    // (that flushes the guest's neighbours).
    let persisted = crate::update::tap_left_persistent(&state_dir, &config.tap.name)
        && Path::new("/sys/class/net").join(&config.tap.name).exists();
    let open_tap = |offload: bool| {
        let builder = tun_rs::DeviceBuilder::new()
            .name(&config.tap.name)
            .layer(tun_rs::Layer::L2)
            .offload(offload)
            .enable(true);
        if persisted {
            builder.build_async()
        } else {
            builder.mac_addr(tap_mac).mtu(mtu).build_async()
        }
    };
    // With offloads the guest's kernel hands over TCP super-frames (one
    // read for up to 64 KiB) and takes merged ones back (see `offload`).
    let adopted = inherited_tap.take().and_then(|fd| {
        crate::fdpass::tap_from_fd(fd)
            .map_err(|e| tracing::warn!(error = %e, "inherited TAP not adopted: opened again"))
            .ok()
    });
    // An adopted TAP has no offloads (only such a TAP is handed over).
    let (tap, offload) = match adopted {
        Some(tap) => (tap, false),
        None => match open_tap_after_exec(&open_tap, config.tap.offload, persisted).await {
            Ok(tap) => (tap, config.tap.offload),
            Err(e) if config.tap.offload => {
                tracing::warn!(error = %e, "TAP offloads refused: frames go one by one");
                let tap = open_tap(false)
                    .map_err(|e| format!("cannot open TAP {}: {e}", config.tap.name))?;
                (tap, false)
            }
            Err(e) => return Err(format!("cannot open TAP {}: {e}", config.tap.name)),
        },
    };
    if persisted || crate::update::tap_left_persistent(&state_dir, &config.tap.name) {
        crate::update::unpersist_tap(&state_dir, &tap);
        tracing::info!(tap = %config.tap.name, "TAP kept across the update attached again");
    }
    tracing::info!(
        tap = %config.tap.name,
        mtu,
        offload,
        overlay = %address,
        listen = %config.node.listen,
        "node up"
    );

    let socket_path = state_dir.join(SOCKET_FILE);
    let _ = std::fs::remove_file(&socket_path);
    let control = UnixListener::bind(&socket_path)
        .map_err(|e| format!("cannot bind {}: {e}", socket_path.display()))?;
    let _socket_file = SocketFile(socket_path);

    let disk = Disk {
        crl: crl_path,
        crl_cache: state_dir.join(CRL_CACHE_FILE),
        cert: cert_path,
    };
    if let Ok(bytes) = std::fs::read(&disk.crl_cache) {
        membership.load_crl_cache(&mut core, now, SystemTime::now(), &bytes);
    }

    if let Some(server) = config.turn.server {
        let mut turn = nat_traversal::turn::TurnConfig::new(server);
        if let (Some(username), Some(password)) = (&config.turn.username, &config.turn.password) {
            turn.credentials = Some(nat_traversal::turn::TurnCredentials {
                username: username.clone(),
                password: password.clone(),
            });
        }
        core.set_turn(now, turn).map_err(|e| format!("TURN: {e}"))?;
        tracing::info!(%server, "TURN server configured as the relay of last resort");
    }
    core.set_firewall(config.firewall.rules()?, config.firewall.limits());
    for entry in &config.service {
        let (name, service) = entry.registration()?;
        core.add_service(now, &name, service)
            .map_err(|e| format!("service {name}: {e}"))?;
        tracing::info!(%name, port = entry.port, "service registered for the guest");
    }
    // Our interfaces' addresses as host candidates, for peers behind our
    // own NAT (bound to all addresses only); read again every 30 s.
    let mut host_candidates = crate::interfaces::HostCandidates::new(socket.local_addr().ok(), now);
    host_candidates.refresh(&mut core, &config.tap.name, now);
    core.join(now, &config.node.bootstrap);
    if let Some(text) = &config.security.ca_node {
        let ca_node: Address = text.parse().map_err(|e| format!("ca_node: {e:?}"))?;
        core.set_ca_node(ca_node);
    }
    let mut ca_writer = None;
    if let Some(dir) = &config.ca.dir {
        let net = config.network.cidr.trunc();
        let policy = ipsec_ca::Policy {
            auto_approve: config.ca.insecure_auto_approve,
            network: Some((net.network(), net.prefix_len())),
            // Host names are certified as `<name>.<zone>`, one per key.
            dns_zone: Some(config.network.domain.to_ascii_lowercase()),
            groups: config.ca.policy_groups()?,
            ..ipsec_ca::Policy::default()
        };
        // The CA's changes are written by a thread of their own; its
        // replies wait in the core until they are durable.
        let (ca, writer) = crate::ca_writer::open(dir, policy).map_err(|e| format!("CA: {e}"))?;
        core.set_ca(now, ca);
        core.set_ca_queue(writer.queue());
        ca_writer = Some(writer);
        if config.ca.insecure_auto_approve {
            tracing::warn!(
                "insecure_auto_approve: any node that reaches the CA gets a certificate for any free address"
            );
        }
        tracing::info!(dir = %dir.display(), "serving as the CA (join tokens, or `wow-node ca approve`)");
    }
    let lan_secret = config.node.lan_secret.as_deref();
    let lan_key = membership.lan_key(lan_secret, config.network.cidr.trunc());
    let mut lan = match (config.node.lan_discovery, lan_key) {
        (false, _) => None,
        (true, None) => {
            tracing::warn!(
                "LAN discovery off: no CA certificate ([security] ca_cert) and no \
                 [node] lan_secret to authenticate announcements with"
            );
            None
        }
        (true, Some(key)) => match Lan::open(&config, key, address, now) {
            Ok(lan) => Some(lan),
            Err(e) => {
                tracing::warn!(error = %e, "LAN discovery off: cannot open its multicast socket");
                None
            }
        },
    };
    // Room for one byte more than an announcement: longer datagrams are
    // seen as such and dropped.
    let mut lan_buf = [0u8; overlay_core::lan::ANNOUNCE_LEN + 1];
    let (ca_tx, mut ca_rx) = tokio::sync::mpsc::channel::<(
        crate::enrol::CaRequest,
        tokio::sync::oneshot::Sender<String>,
    )>(8);
    let (release_tx, mut release_rx) =
        tokio::sync::mpsc::channel::<tokio::sync::oneshot::Sender<String>>(4);
    let (service_tx, mut service_rx) = tokio::sync::mpsc::channel::<(
        crate::control::ServiceRequest,
        tokio::sync::oneshot::Sender<String>,
    )>(8);
    let (walk_tx, mut walk_rx) = tokio::sync::mpsc::channel::<(
        crate::control::WalkRequest,
        tokio::sync::oneshot::Sender<String>,
    )>(8);
    let mut walk_waiting: Option<(
        crate::control::WalkRequest,
        tokio::sync::oneshot::Sender<String>,
    )> = None;
    let started_at = now;
    let mut installing: Option<Installing> = None;
    let mut udp_buf = vec![0u8; 65536];
    let mut cmsg_buf = crate::udp::cmsg_buffer();
    let mut tap_buf = vec![0u8; tap_offload::MAX_READ];
    let mut coalescer = tap_offload::Coalescer::new();
    // UDP datagrams of one flow (a guest's DNS client, QUIC, iperf3 -u)
    // go to the guest merged only where the kernel took USO (Linux 6.2+).
    let udp_gso = offload && tap.udp_gso();
    coalescer.merge_udp(udp_gso);
    tracing::debug!(offload, udp_gso, "TAP offloads");
    let mut tap_io = TapIo {
        offload,
        segmenter: tap_offload::Segmenter::new(),
        coalescer,
    };
    let mut crypto = CryptoPool::start(CryptoPool::workers_wanted());
    if crypto.workers > 0 {
        core.set_deferred_crypto(true);
        tracing::info!(workers = crypto.workers, "AEAD on worker threads");
    }
    let mut out = Outbox {
        buf: vec![0u8; crate::udp::MAX_BATCH_BYTES + OUT_ROOM],
        // Datagrams larger than the underlay MTU are IP-fragmented, which
        // UDP_SEGMENT refuses: those go one by one.
        max_segment: usize::from(config.tap.underlay_mtu).saturating_sub(28),
        gso: true,
    };
    if !crate::udp::enable_gro(&socket) {
        tracing::debug!("UDP GRO not available");
    }
    // The two timers live across iterations and move only when their
    // deadline does: a new timer per wake-up costs a timer-wheel insert
    // and removal each.
    let far = tokio::time::Instant::now() + Duration::from_secs(3600);
    let core_timer = tokio::time::sleep_until(far);
    let lan_timer = tokio::time::sleep_until(far);
    tokio::pin!(core_timer, lan_timer);
    loop {
        crypto.run(&mut core, Instant::now());
        flush(&mut core, &socket, &tap, &mut tap_io, &mut out).await;
        if let Some(w) = &ca_writer {
            w.flush();
        }
        let now = Instant::now();
        let deadline = core
            .poll_timeout()
            .unwrap_or(now + Duration::from_secs(1))
            .min(now + Duration::from_secs(1))
            .min(membership.poll_timeout())
            .min(updater.poll_timeout());
        let deadline = tokio::time::Instant::from_std(deadline);
        if core_timer.deadline() != deadline {
            core_timer.as_mut().reset(deadline);
        }
        if let Some(l) = &lan {
            let lan_deadline = tokio::time::Instant::from_std(l.discovery.poll_timeout());
            if lan_timer.deadline() != lan_deadline {
                lan_timer.as_mut().reset(lan_deadline);
            }
        }
        tokio::select! {
            r = socket.readable() => {
                if r.is_ok() {
                    let now = Instant::now();
                    for _ in 0..UDP_BATCH {
                        if core.tap_backlog() + core.crypto_backlog() >= TAP_BACKLOG {
                            // Let the guest drain first: frames are
                            // buffers held.
                            break;
                        }
                        match crate::udp::try_recv(&socket, &mut udp_buf, &mut cmsg_buf) {
                            // A GRO run of datagrams, or one.
                            Ok((len, from, segment)) => {
                                if len == 0 {
                                    core.handle_udp(now, from, &[]);
                                }
                                for datagram in udp_buf[..len].chunks(segment.max(1)) {
                                    core.handle_udp(now, from, datagram);
                                }
                            }
                            Err(_) => break,
                        }
                    }
                }
            }
            r = tap.recv(&mut tap_buf) => {
                match r {
                    Ok(len) => {
                        let now = Instant::now();
                        let mut frames = tap_io.input(&mut core, now, &mut tap_buf[..len]);
                        for _ in 1..TAP_BATCH {
                            if frames >= TAP_FRAME_BUDGET {
                                break;
                            }
                            match tap.try_recv(&mut tap_buf) {
                                Ok(len) => frames += tap_io.input(&mut core, now, &mut tap_buf[..len]),
                                Err(_) => break,
                            }
                        }
                    }
                    Err(e) => return Err(format!("TAP read: {e}")),
                }
            }
            () = &mut core_timer => {}
            r = Lan::recv(lan.as_ref(), &mut lan_buf) => {
                if let (Ok((n, from)), Some(l)) = (r, lan.as_mut()) {
                    l.discovery.set_alone(core.overlay().connections().is_empty());
                    let now = Instant::now();
                    if let Err(e) =
                        l.discovery.handle_announce(now, SystemTime::now(), from.ip(), &lan_buf[..n])
                    {
                        tracing::debug!(%from, error = %e, "LAN announcement dropped");
                    }
                    while let Some(event) = l.discovery.poll_event() {
                        if let overlay_core::lan::LanEvent::Candidate(endpoint) = event {
                            tracing::info!(%endpoint, "joining the ring through a node found on the LAN");
                            core.join(now, &[endpoint]);
                        }
                    }
                }
            }
            () = &mut lan_timer, if lan.is_some() => {
                if let Some(l) = lan.as_mut() {
                    let alone = core.overlay().connections().is_empty();
                    l.announce(Instant::now(), alone, &config.tap.name).await;
                }
            }
            conn = control.accept() => {
                if let Ok((mut stream, _)) = conn {
                    let wall = SystemTime::now();
                    let mut status = Status::of(&core, Instant::now(), wall, started_at);
                    status.set_certificate(wall, membership.validity());
                    if with_update || updater.status.publishing.is_some() {
                        status.update = Some(updater.status.clone());
                    }
                    let health = if status.joined || config.node.bootstrap.is_empty() {
                        format!("ok {}\n", updater.running())
                    } else {
                        "starting\n".to_string()
                    };
                    let ca_tx = ca_tx.clone();
                    let walk_tx = walk_tx.clone();
                    let release_tx = release_tx.clone();
                    let service_tx = service_tx.clone();
                    tokio::spawn(async move {
                        let mut line = [0u8; crate::control::MAX_REQUEST];
                        let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut line))
                            .await
                            .ok()
                            .and_then(Result::ok)
                            .unwrap_or(0);
                        let request = String::from_utf8_lossy(&line[..n]).into_owned();
                        let walk = crate::control::WalkRequest::parse(&request);
                        let service = crate::control::ServiceRequest::parse(&request);
                        let answer = match crate::enrol::CaRequest::parse(&request) {
                            None if request.trim() == "health" => health,
                            None if request.trim() == "release publish" => {
                                let (tx, rx) = tokio::sync::oneshot::channel();
                                if release_tx.send(tx).await.is_ok() {
                                    rx.await.unwrap_or_default()
                                } else {
                                    String::new()
                                }
                            }
                            // Services change the core, in the main loop.
                            None if service.is_some() => match service {
                                Some(Ok(s)) => {
                                    let (tx, rx) = tokio::sync::oneshot::channel();
                                    if service_tx.send((s, tx)).await.is_ok() {
                                        rx.await.unwrap_or_default()
                                    } else {
                                        String::new()
                                    }
                                }
                                Some(Err(e)) => format!("error: {e}\n"),
                                None => String::new(),
                            },
                            // The walk runs on the core too.
                            None if walk.is_some() => {
                                let (tx, rx) = tokio::sync::oneshot::channel();
                                match walk {
                                    Some(w) if walk_tx.send((w, tx)).await.is_ok() => {
                                        rx.await.unwrap_or_default()
                                    }
                                    _ => String::new(),
                                }
                            }
                            // CA commands run on the core, in the main loop.
                            Some(ca) => {
                                let (tx, rx) = tokio::sync::oneshot::channel();
                                if ca_tx.send((ca, tx)).await.is_ok() {
                                    rx.await.unwrap_or_default()
                                } else {
                                    String::new()
                                }
                            }
                            None => crate::control::answer(&status, &request),
                        };
                        let _ = stream.write_all(answer.as_bytes()).await;
                    });
                }
            }
            Some(reply) = release_rx.recv() => {
                let answer = match updater.publish_staged(Instant::now()) {
                    Ok(text) => text,
                    Err(e) => format!("error: {e}\n"),
                };
                tracing::info!(answer = answer.trim(), "release publish");
                let _ = reply.send(answer);
            }
            r = crate::update::Updater::http_done(Some(&mut updater)) => {
                if let Some(ready) = updater.handle_http(r) {
                    installing = Some(install(ready, &config));
                }
            }
            r = installed(&mut installing) => {
                installing = None;
                match r {
                    Ok(done) => {
                        // Frames and datagrams already queued go out first.
                        flush(&mut core, &socket, &tap, &mut tap_io, &mut out).await;
                        exec(&mut updater, &done, &config, &core, &socket, &tap, offload);
                    }
                    Err(e) => updater.install_failed(&e),
                }
            }
            Some((request, reply)) = service_rx.recv() => {
                let answer = request.execute(Instant::now(), &mut core);
                tracing::info!(command = ?request, %answer, "service command");
                let _ = reply.send(answer);
            }
            Some((request, reply)) = walk_rx.recv() => {
                match core.start_walk(Instant::now(), request.limit) {
                    Ok(()) => walk_waiting = Some((request, reply)),
                    Err(e) => {
                        let _ = reply.send(format!("error: {e}\n"));
                    }
                }
            }
            Some((request, reply)) = ca_rx.recv() => {
                let wall = SystemTime::now();
                let answer = match core.with_ca(Instant::now(), |ca| request.execute(wall, ca)) {
                    Some(Ok(text)) => {
                        tracing::info!(command = ?request, "CA command");
                        text
                    }
                    Some(Err(e)) => format!("error: {e}\n"),
                    None => crate::enrol::NOT_THE_CA.to_string(),
                };
                match ca_writer.as_mut() {
                    Some(w) => w.answer(reply, answer),
                    None => {
                        let _ = reply.send(answer);
                    }
                }
            }
            stream = crate::metrics::accept(metrics.as_ref()) => {
                let wall = SystemTime::now();
                let mut status = Status::of(&core, Instant::now(), wall, started_at);
                status.set_certificate(wall, membership.validity());
                match wow_core::metrics::encode(&status) {
                    Ok(body) => {
                        tokio::spawn(crate::metrics::answer(stream, body));
                    }
                    Err(e) => tracing::warn!(error = %e, "metrics not encoded"),
                }
            }
            (id, reply) = crate::upstream::Upstream::recv(upstream.as_mut()) => {
                core.handle_dns_forward_response(Instant::now(), id, &reply);
            }
            () = crate::ca_writer::CaWriter::durable(ca_writer.as_mut()) => {
                core.handle_ca_durable(Instant::now());
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
        let now = Instant::now();
        if core.poll_timeout().is_some_and(|t| t <= now) {
            core.handle_timeout(now, SystemTime::now());
        }
        host_candidates.refresh(&mut core, &config.tap.name, now);
        let wall = SystemTime::now();
        if membership.poll_timeout() <= now {
            membership.handle_timeout(&mut core, now, wall);
        }
        if updater.poll_timeout() <= now {
            updater.handle_timeout(&mut core, now);
        }
        while let Some(event) = core.poll_event() {
            if matches!(event, wow_core::core::CoreEvent::MappingChanged { .. }) {
                // The host's address may have changed: rescan at once.
                host_candidates.rescan_now(now);
            }
            if let wow_core::core::CoreEvent::DhtValues { id, values } = &event {
                if let Some(ready) = updater.handle_values(&mut core, now, *id, values) {
                    installing = Some(install(ready, &config));
                }
                continue;
            }
            membership.handle_event(&mut core, now, wall, &event);
        }
        disk.serve(&mut membership, &mut core);
        if walk_waiting.is_some()
            && let Some(result) = core.poll_walk()
            && let Some((request, reply)) = walk_waiting.take()
        {
            let _ = reply.send(request.answer(&result));
        }
        if let Some(u) = &upstream {
            while let Some(forward) = core.poll_dns_forward() {
                u.send(forward);
            }
        }
    }
    tracing::info!("shutting down: leaving the ring");
    core.leave(Instant::now());
    flush(&mut core, &socket, &tap, &mut tap_io, &mut out).await;
    // Waits for the CA's last writes.
    drop(ca_writer);
    Ok(())
}

/// Opens the TAP; on a device left persistent by the previous process,
/// waits out `EBUSY` (up to a second): its queue may detach a moment
/// after the exec, when the kernel releases a file that an exiting thread
/// still held from a work queue.
async fn open_tap_after_exec(
    open: &impl Fn(bool) -> std::io::Result<tun_rs::AsyncDevice>,
    offload: bool,
    persisted: bool,
) -> std::io::Result<tun_rs::AsyncDevice> {
    let mut result = open(offload);
    for _ in 0..200 {
        match &result {
            Err(e) if persisted && e.raw_os_error() == Some(nix::libc::EBUSY) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                result = open(offload);
            }
            _ => break,
        }
    }
    result
}

type Installing =
    tokio::task::JoinHandle<Result<crate::update::Installed, crate::update::InstallError>>;

/// Writes a verified release in place of the executable, off the event
/// loop (megabytes written and fsynced while the guest's traffic flows).
fn install(ready: crate::update::Ready, config: &Config) -> Installing {
    let state_dir = config.node.state_dir.clone();
    tokio::task::spawn_blocking(move || crate::update::install(ready, &state_dir))
}

/// The release written by [`install`] (pending while none is).
async fn installed(
    installing: &mut Option<Installing>,
) -> Result<crate::update::Installed, crate::update::InstallError> {
    match installing {
        Some(task) => task
            .await
            .unwrap_or_else(|e| Err(crate::update::InstallError::Io(e.to_string()))),
        None => std::future::pending().await,
    }
}

/// Execs an installed release, keeping the UDP socket and (without
/// offloads) the TAP open; returns only if that failed.
fn exec<S: dhcp_virt::LeaseStore>(
    updater: &mut crate::update::Updater,
    installed: &crate::update::Installed,
    config: &Config,
    core: &Core<S>,
    socket: &UdpSocket,
    tap: &tun_rs::AsyncDevice,
    offload: bool,
) {
    // tun-rs adopts no descriptor opened with offloads (vnet header): the
    // device is left persistent instead and the new binary attaches to it
    // by name, so the guest keeps its link, addresses and routes.
    if offload
        && let Err(e) = crate::update::persist_tap(&config.node.state_dir, &config.tap.name, tap)
    {
        tracing::warn!(error = %e, "TAP not made persistent: the new binary creates it again");
    }
    // Exported last: nothing is sealed after it (the exec follows).
    let state = match core.export_sa_state(Instant::now()) {
        Some(Ok(bytes)) => Some(zeroize::Zeroizing::new(bytes)),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "SA state not exported: fresh key exchanges");
            None
        }
        None => None,
    };
    let error = crate::update::exec(
        installed,
        updater.running(),
        &config.node.state_dir,
        Duration::from_secs(config.update.health_secs),
        crate::update::Handover {
            udp: socket,
            // With offloads: persistent, attached again by name.
            tap: (!offload).then_some(tap),
            state: state.as_deref().map(|s| &s[..]),
            nat_depth: core.nat_depth(),
        },
    );
    if offload {
        crate::update::unpersist_tap(&config.node.state_dir, tap);
    }
    updater.install_failed(&crate::update::InstallError::Io(error));
}

/// LAN discovery's multicast socket (see [`overlay_core::lan`]).
struct Lan {
    socket: UdpSocket,
    discovery: overlay_core::lan::Discovery,
    /// Interfaces whose group membership is set up.
    joined: Vec<Ipv4Addr>,
}

impl Lan {
    fn open(
        config: &Config,
        key: overlay_core::lan::NetworkKey,
        address: Address,
        now: Instant,
    ) -> std::io::Result<Lan> {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_reuse_address(true)?;
        s.bind(&SocketAddr::from(([0, 0, 0, 0], overlay_core::lan::PORT)).into())?;
        // Link-local scope: announcements never leave the LAN.
        s.set_multicast_ttl_v4(1)?;
        s.set_multicast_loop_v4(false)?;
        s.set_nonblocking(true)?;
        let discovery =
            overlay_core::lan::Discovery::new(now, key, address, config.node.listen.port())
                .map_err(std::io::Error::other)?;
        Ok(Lan {
            socket: UdpSocket::from_std(s.into())?,
            discovery,
            joined: Vec::new(),
        })
    }

    async fn recv(lan: Option<&Lan>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        match lan {
            Some(l) => l.socket.recv_from(buf).await,
            None => std::future::pending().await,
        }
    }

    /// Sends the announcement, if due, on every multicast-capable IPv4
    /// interface but the TAP (joining the group on new ones).
    async fn announce(&mut self, now: Instant, alone: bool, tap: &str) {
        let sources = crate::interfaces::lan_interfaces(tap);
        let due = self
            .discovery
            .poll_announce(now, SystemTime::now(), alone, &sources);
        let sock = socket2::SockRef::from(&self.socket);
        for (addr, bytes) in due {
            if !self.joined.contains(&addr) {
                match sock.join_multicast_v4(&overlay_core::lan::GROUP, &addr) {
                    Ok(()) => self.joined.push(addr),
                    Err(e) => tracing::debug!(%addr, error = %e, "cannot join the LAN group"),
                }
            }
            if sock.set_multicast_if_v4(&addr).is_ok() {
                let to = SocketAddr::from((overlay_core::lan::GROUP, overlay_core::lan::PORT));
                if let Err(e) = self.socket.send_to(&bytes, to).await {
                    tracing::debug!(%addr, error = %e, "LAN announcement not sent");
                }
            }
        }
    }
}

/// Jobs per share of a batch: a worker takes one share at a time.
const CRYPTO_SHARE: usize = 32;

/// The shares of the current batch, between the task and the workers.
#[derive(Default)]
struct Shares {
    /// Shares nobody took yet, numbered in batch order.
    todo: std::collections::VecDeque<(usize, Vec<wow_core::CryptoJob>)>,
    /// Shares run, by number.
    done: Vec<(usize, Vec<wow_core::CryptoDone>)>,
    /// Shares a worker is running.
    running: usize,
    /// The pool is gone: workers end.
    closed: bool,
}

#[derive(Default)]
struct PoolState {
    shares: std::sync::Mutex<Shares>,
    /// Signalled when shares are queued (workers wait on it).
    work: std::sync::Condvar,
    /// Signalled when a worker finished a share (the task waits on it).
    finished: std::sync::Condvar,
}

/// Runs the core's crypto jobs ([`Core::set_deferred_crypto`]) on the task
/// and a few threads. Each batch (what one wake-up read: it runs as soon as
/// the reads would block or hit their budget, never waiting for a timer or
/// a fuller batch) is cut into shares of [`CRYPTO_SHARE`] jobs; the task
/// runs shares itself until none is left, so it waits only for shares a
/// worker already started (never for a worker the scheduler has not run,
/// on a loaded machine), then completes them all in batch order.
struct CryptoPool {
    state: std::sync::Arc<PoolState>,
    workers: usize,
    jobs: Vec<wow_core::CryptoJob>,
}

impl Drop for CryptoPool {
    fn drop(&mut self) {
        if let Ok(mut shares) = self.state.shares.lock() {
            shares.closed = true;
        }
        self.state.work.notify_all();
    }
}

impl CryptoPool {
    /// The workers to start: [`CRYPTO_WORKERS_ENV`], else none. On the
    /// shared 2-core machine this was measured on, the pool cost half as
    /// much CPU again per Gbit/s and brought no throughput (the README's
    /// figures), so it is opt-in until it pays.
    fn workers_wanted() -> usize {
        std::env::var(CRYPTO_WORKERS_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    fn start(count: usize) -> CryptoPool {
        let state = std::sync::Arc::new(PoolState::default());
        let workers = (0..count)
            .filter(|i| {
                let state = std::sync::Arc::clone(&state);
                std::thread::Builder::new()
                    .name(format!("wow-crypto-{i}"))
                    .spawn(move || crypto_worker(&state))
                    .map_err(|e| tracing::warn!(error = %e, "no crypto worker"))
                    .is_ok()
            })
            .count();
        CryptoPool {
            state,
            workers,
            jobs: Vec::new(),
        }
    }

    /// Runs the jobs the core left and completes them.
    fn run<S: dhcp_virt::LeaseStore>(&mut self, core: &mut Core<S>, now: Instant) {
        core.take_crypto_jobs(&mut self.jobs);
        if self.jobs.is_empty() {
            return;
        }
        if self.workers == 0 || self.jobs.len() < CRYPTO_SPLIT_MIN {
            let done: Vec<_> = self.jobs.drain(..).map(wow_core::CryptoJob::run).collect();
            core.complete_crypto(now, done);
            return;
        }
        let Ok(mut shares) = self.state.shares.lock() else {
            // A worker panicked holding the lock: jobs dropped.
            self.jobs.clear();
            return;
        };
        let mut number = 0;
        while !self.jobs.is_empty() {
            let rest = self.jobs.split_off(CRYPTO_SHARE.min(self.jobs.len()));
            shares
                .todo
                .push_back((number, std::mem::replace(&mut self.jobs, rest)));
            number += 1;
        }
        self.state.work.notify_all();
        // Take shares until none is left, then wait for the running ones.
        loop {
            if let Some((n, jobs)) = shares.todo.pop_front() {
                drop(shares);
                let done: Vec<_> = jobs.into_iter().map(wow_core::CryptoJob::run).collect();
                let Ok(mut again) = self.state.shares.lock() else {
                    return;
                };
                again.done.push((n, done));
                shares = again;
            } else if shares.running > 0 {
                let Ok(waited) = self.state.finished.wait(shares) else {
                    return;
                };
                shares = waited;
            } else {
                break;
            }
        }
        let mut done = std::mem::take(&mut shares.done);
        drop(shares);
        done.sort_unstable_by_key(|(n, _)| *n);
        for (_, share) in done {
            core.complete_crypto(now, share);
        }
    }
}

/// A crypto worker: runs shares until the pool is dropped.
fn crypto_worker(state: &PoolState) {
    let Ok(mut shares) = state.shares.lock() else {
        return;
    };
    loop {
        if shares.closed {
            return;
        }
        let Some((n, jobs)) = shares.todo.pop_front() else {
            let Ok(waited) = state.work.wait(shares) else {
                return;
            };
            shares = waited;
            continue;
        };
        shares.running += 1;
        drop(shares);
        let done: Vec<_> = jobs.into_iter().map(wow_core::CryptoJob::run).collect();
        let Ok(mut again) = state.shares.lock() else {
            return;
        };
        again.done.push((n, done));
        again.running -= 1;
        state.finished.notify_all();
        shares = again;
    }
}

/// Room [`Core::poll_udp`] needs for one datagram.
const OUT_ROOM: usize = overlay_core::wire::MAX_MESSAGE_LEN;

/// The underlay send buffer: datagrams to one peer of one size are
/// gathered and sent with UDP GSO in one system call.
struct Outbox {
    buf: Vec<u8>,
    max_segment: usize,
    gso: bool,
}

impl Outbox {
    /// Sends `buf[..total]`, datagrams of `segment` bytes (the last one
    /// possibly shorter), to `to`.
    async fn send(&mut self, socket: &UdpSocket, to: SocketAddr, segment: usize, total: usize) {
        let data = &self.buf[..total];
        if total == 0 {
            if let Err(e) = socket.send_to(&[], to).await {
                tracing::debug!(%to, error = %e, "send failed");
            }
            return;
        }
        if total > segment && self.gso {
            match crate::udp::send_segments(socket, data, segment as u16, to).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "UDP GSO refused: sending datagrams one by one");
                    self.gso = false;
                }
            }
        }
        for datagram in data.chunks(segment.max(1)) {
            if let Err(e) = socket.send_to(datagram, to).await {
                tracing::debug!(%to, error = %e, "send failed");
            }
        }
    }

    /// Sends `buf[..len]` alone to `to` with IP TTL `ttl`, then restores
    /// the socket's TTL: the punch agent's datagrams that open our NAT
    /// toward a peer and die before the peer's
    /// ([`nat_traversal::agent`]).
    async fn send_with_ttl(&mut self, socket: &UdpSocket, to: SocketAddr, len: usize, ttl: u8) {
        let old = socket.ttl().ok();
        if let Err(e) = socket.set_ttl(u32::from(ttl)) {
            tracing::debug!(error = %e, "cannot set the TTL");
        }
        if let Err(e) = socket.send_to(&self.buf[..len], to).await {
            tracing::debug!(%to, error = %e, "send failed");
        }
        if let Some(old) = old
            && let Err(e) = socket.set_ttl(old)
        {
            tracing::debug!(error = %e, "cannot restore the TTL");
        }
    }
}

/// The TAP side of the data path: with offloads, reads are cut into
/// frames and frames for the guest are merged before they are written.
struct TapIo {
    offload: bool,
    segmenter: tap_offload::Segmenter,
    coalescer: tap_offload::Coalescer,
}

impl TapIo {
    /// One read from the TAP; returns the number of frames it held.
    fn input<S: dhcp_virt::LeaseStore>(
        &mut self,
        core: &mut Core<S>,
        now: Instant,
        read: &mut [u8],
    ) -> usize {
        if !self.offload {
            core.handle_tap_frame(now, read);
            return 1;
        }
        match self
            .segmenter
            .split(read, |frame| core.handle_tap_frame(now, frame))
        {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, "TAP read dropped");
                0
            }
        }
    }

    /// Writes every frame the core has for the guest.
    async fn output<S: dhcp_virt::LeaseStore>(
        &mut self,
        core: &mut Core<S>,
        tap: &tun_rs::AsyncDevice,
    ) {
        if !self.offload {
            while let Some(frame) = core.poll_tap_frame() {
                if let Err(e) = tap.send(frame).await {
                    tracing::debug!(error = %e, "TAP write failed");
                }
            }
            return;
        }
        while let Some(frame) = core.poll_tap_frame() {
            if self.coalescer.push(frame) {
                continue;
            }
            if let Err(e) = tap.send(self.coalescer.finish()).await {
                tracing::debug!(error = %e, "TAP write failed");
            }
            // An empty coalescer takes any frame.
            let _ = self.coalescer.push(frame);
        }
        if !self.coalescer.is_empty()
            && let Err(e) = tap.send(self.coalescer.finish()).await
        {
            tracing::debug!(error = %e, "TAP write failed");
        }
    }
}

async fn flush<S: dhcp_virt::LeaseStore>(
    core: &mut Core<S>,
    socket: &UdpSocket,
    tap: &tun_rs::AsyncDevice,
    tap_io: &mut TapIo,
    out: &mut Outbox,
) {
    tap_io.output(core, tap).await;
    // The batch so far: destination, segment size, bytes, datagrams.
    let mut batch: Option<(SocketAddr, usize, usize, usize)> = None;
    loop {
        let start = batch.map_or(0, |b| b.2);
        if out.buf.len() - start < OUT_ROOM {
            if let Some((to, segment, total, _)) = batch.take() {
                out.send(socket, to, segment, total).await;
            }
            continue;
        }
        let Some((to, len, ttl)) = core.poll_udp_with_ttl(&mut out.buf[start..]) else {
            break;
        };
        if let Some(ttl) = ttl {
            // Alone, with its own TTL, after the batch so far.
            if let Some((dest, segment, total, _)) = batch.take() {
                out.send(socket, dest, segment, total).await;
                out.buf.copy_within(start..start + len, 0);
            }
            out.send_with_ttl(socket, to, len, ttl).await;
            continue;
        }
        match batch {
            Some((dest, segment, total, count))
                if dest == to
                    && len > 0
                    && len <= segment
                    && count < crate::udp::MAX_SEGMENTS
                    && total + len <= crate::udp::MAX_BATCH_BYTES =>
            {
                if len < segment {
                    // A shorter datagram ends the run.
                    batch = None;
                    out.send(socket, dest, segment, total + len).await;
                } else {
                    batch = Some((dest, segment, total + len, count + 1));
                }
            }
            Some((dest, segment, total, _)) => {
                out.send(socket, dest, segment, total).await;
                out.buf.copy_within(start..start + len, 0);
                batch = Some((to, len, len, 1));
            }
            None => batch = Some((to, len, len, 1)),
        }
        if let Some((dest, segment, total, _)) = batch
            && (segment == 0 || segment > out.max_segment || !out.gso)
        {
            batch = None;
            out.send(socket, dest, segment, total).await;
        }
    }
    if let Some((to, segment, total, _)) = batch {
        out.send(socket, to, segment, total).await;
    }
}

/// Where the node keeps the newest CRL it accepted, so that a restart
/// never falls back to an older one.
const CRL_CACHE_FILE: &str = "crl-cache";

/// The files the membership reads and keeps: the configured CRL (`[security]
/// crl`, with the signed manifest `wow-node ca` writes next to it), the CRL
/// cache and the node certificate.
struct Disk {
    crl: Option<PathBuf>,
    crl_cache: PathBuf,
    cert: PathBuf,
}

impl Disk {
    /// Does what `membership` asks of the disk.
    fn serve<S: dhcp_virt::LeaseStore>(&self, membership: &mut Membership, core: &mut Core<S>) {
        while let Some(output) = membership.poll_output() {
            match output {
                Output::ReadCrlFile => {
                    let file = self.crl.as_ref().and_then(|path| {
                        let envelope = std::fs::read(path).ok()?;
                        let manifest = wow_core::crl_dht::manifest_path(path);
                        tracing::debug!(path = %path.display(), "CRL file read");
                        Some(CrlFile {
                            envelope,
                            manifest: std::fs::read(&manifest)
                                .map_err(|e| format!("{}: {e}", manifest.display())),
                        })
                    });
                    membership.crl_file(core, Instant::now(), SystemTime::now(), file);
                }
                Output::KeepCrl(envelope) => {
                    let path = &self.crl_cache;
                    if let Err(error) = ipsec_ca::file_store::write_atomic(path, &envelope, 0o644) {
                        tracing::warn!(%error, "cannot keep the CRL");
                    }
                }
                Output::KeepCertificate(der) => {
                    let pem = ipsec_ca::key::to_pem("CERTIFICATE", &der);
                    if let Err(e) =
                        ipsec_ca::file_store::write_atomic(&self.cert, pem.as_bytes(), 0o644)
                    {
                        tracing::warn!(error = %e, "cannot keep the certificate");
                    }
                }
                Output::Sign { .. } | Output::Certified { .. } | Output::Failed(_) => {}
            }
        }
    }
}

/// Split DNS's upstream resolvers (`[dns]`), or `None`: forwarding off,
/// names outside the zone answered REFUSED.
/// `[network] allocation` and `allocator`: who grants addresses in central
/// allocation.
fn allocator(
    network: &crate::config::NetworkSection,
) -> Result<Option<wow_core::core::Allocator>, String> {
    use wow_core::core::Allocator;
    match (network.allocation, network.allocator.as_deref()) {
        (AllocationMode::Central, Some("self")) => Ok(Some(Allocator::This)),
        (AllocationMode::Central, Some(text)) => text
            .parse::<Address>()
            .map(|a| Some(Allocator::Node(a)))
            .map_err(|e| format!("[network] allocator = {text:?}: not \"self\" nor an overlay address ({e:?})")),
        (AllocationMode::Central, None) => Err(
            "[network] allocation = \"central\" needs allocator = \"self\" (on the allocating node) or its overlay address".into(),
        ),
        (_, Some(_)) => Err("[network] allocator is set but allocation is not \"central\"".into()),
        (_, None) => Ok(None),
    }
}

fn dns_upstream(config: &Config, confine: bool) -> Option<crate::upstream::Upstream> {
    if !config.dns.forward {
        return None;
    }
    if confine || config.confine.enabled || crate::confine::present(&config.tap.name) {
        tracing::info!("split DNS off: the host is confined to the virtual network");
        return None;
    }
    let servers = if config.dns.upstream.is_empty() {
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        crate::upstream::resolv_conf_servers(&text, config.network.cidr.trunc())
    } else {
        config.dns.upstream.clone()
    };
    let upstream = crate::upstream::Upstream::new(servers);
    match &upstream {
        Some(u) => {
            tracing::info!(servers = ?u.servers(), "split DNS: names outside the zone go upstream")
        }
        None => {
            tracing::info!("split DNS off: no upstream resolver ([dns] upstream, /etc/resolv.conf)")
        }
    }
    upstream
}

/// Asks the bootstrap endpoints (STUN Binding, nat-traversal's discovery
/// machine) for our reflexive endpoint; `None` if none answers within a
/// couple of seconds or the address is our own (no NAT).
async fn discover_reflexive(
    socket: &UdpSocket,
    bootstrap: &[std::net::SocketAddr],
) -> Option<std::net::SocketAddr> {
    use nat_traversal::discovery::{Discovery, DiscoveryConfig, DiscoveryEvent};
    let observers: Vec<_> = bootstrap.iter().copied().filter(|e| e.is_ipv4()).collect();
    if observers.is_empty() {
        return None;
    }
    let config = DiscoveryConfig {
        observers,
        local: socket.local_addr().ok(),
        initial_rto: Duration::from_millis(200),
        max_transmits: 4,
        test_filtering: false,
    };
    let mut discovery = Discovery::new(Instant::now(), config).ok()?;
    let mut buf = vec![0u8; 2048];
    loop {
        while let Some(t) = discovery.poll_transmit() {
            let _ = socket.send_to(&t.payload, t.destination).await;
        }
        if let Some(DiscoveryEvent::Complete(report)) = discovery.poll_event() {
            let local = socket.local_addr().ok();
            return report.reflexive.filter(|r| Some(*r) != local);
        }
        let deadline = discovery
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_millis(100));
        let wait = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(wait, socket.recv_from(&mut buf)).await {
            Ok(Ok((n, from))) => {
                discovery.handle_input(Instant::now(), from, &buf[..n]);
            }
            Ok(Err(_)) | Err(_) => discovery.handle_timeout(Instant::now()),
        }
    }
}
