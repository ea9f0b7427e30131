//! The host's network interfaces: the IPv4 addresses LAN discovery
//! announces from, and the node's host candidates (its interfaces'
//! addresses with its socket's port), which peers behind the same NAT
//! reach directly when the NAT does not hairpin. Which addresses may be
//! candidates and how they rank is the sans-IO policy of
//! [`wow_core::core::Core::set_host_candidates`]; this module only reads
//! the interfaces.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use nix::net::if_::InterfaceFlags as F;
use wow_core::core::Core;

/// How often the interfaces are read again for host candidates (an
/// interface comes up, DHCP hands out another address).
pub const RESCAN: Duration = Duration::from_secs(30);

/// IPv4 addresses of the interfaces that are up, not loopback, not `tap`
/// (the guest's side: virtual addresses), and have every flag in `flags`.
fn up_ipv4(tap: &str, flags: F) -> Vec<Ipv4Addr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter(|i| {
            i.interface_name != tap
                && i.flags.contains(F::IFF_UP | flags)
                && !i.flags.contains(F::IFF_LOOPBACK)
        })
        .filter_map(|i| i.address?.as_sockaddr_in().map(|a| a.ip()))
        .collect()
}

/// IPv4 addresses of the interfaces that are up, not loopback, capable of
/// multicast, and not the TAP: where LAN discovery announces.
pub fn lan_interfaces(tap: &str) -> Vec<Ipv4Addr> {
    up_ipv4(tap, F::IFF_MULTICAST)
}

/// Host candidates: the address of each interface that is up, not
/// loopback and not the TAP, with `port`.
pub fn host_candidates(tap: &str, port: u16) -> Vec<SocketAddr> {
    up_ipv4(tap, F::empty())
        .into_iter()
        .map(|ip| SocketAddr::from((ip, port)))
        .collect()
}

/// Keeps the core's host candidates in step with the interfaces: read at
/// start and every [`RESCAN`], handed over only when they changed.
#[derive(Debug)]
pub struct HostCandidates {
    /// Our socket's port; `None` for a socket bound to one address (that
    /// address is a configured endpoint already).
    port: Option<u16>,
    next: Instant,
}

impl HostCandidates {
    /// For the socket bound to `local`; the first scan is due at `now`.
    pub fn new(local: Option<SocketAddr>, now: Instant) -> HostCandidates {
        HostCandidates {
            port: local
                .filter(|a| a.is_ipv4() && a.ip().is_unspecified())
                .map(|a| a.port()),
            next: now,
        }
    }

    /// Makes the next [`refresh`](Self::refresh) read the interfaces
    /// (after an underlay mapping change: the host may have a new address).
    pub fn rescan_now(&mut self, now: Instant) {
        self.next = now;
    }

    /// Reads the interfaces if a scan is due, and gives `core` the host
    /// candidates when they changed.
    pub fn refresh<S: dhcp_virt::LeaseStore>(
        &mut self,
        core: &mut Core<S>,
        tap: &str,
        now: Instant,
    ) {
        let Some(port) = self.port else {
            return;
        };
        if now < self.next {
            return;
        }
        self.next = now + RESCAN;
        if core.set_host_candidates(host_candidates(tap, port)) {
            tracing::info!(candidates = ?core.host_candidates(), "host candidates (interface addresses)");
        }
    }
}
