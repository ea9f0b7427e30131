//! The demo's settings: a small, fast ring on loopback, as the node's
//! `demo` command, the tests and the fuzz targets use it.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::core::{Settings, guest_mtu};

/// The demo's network settings: `10.128.0.0/16`, gateway `10.128.0.1`,
/// DHT allocation, guest MTU for a 1500-byte underlay.
pub fn settings() -> Settings {
    Settings {
        network: ipnet::Ipv4Net::new(Ipv4Addr::new(10, 128, 0, 0), 16).unwrap_or_default(),
        gateway_addr: Ipv4Addr::new(10, 128, 0, 1),
        gateway_mac: [0x02, 0x77, 0x6f, 0x77, 0x00, 0x01],
        domain: "wow.internal".into(),
        guest_mtu: guest_mtu(1500),
        lease_duration: Duration::from_secs(3600),
        dht_allocation: true,
        fixed_addr: None,
        public_hosts: Vec::new(),
    }
}

/// The demo's overlay configuration for a node at `endpoint`: fast timers
/// for a small ring on loopback.
pub fn overlay_config(endpoint: SocketAddr) -> overlay_core::Config {
    overlay_core::Config {
        endpoints: vec![endpoint],
        // A small, fast ring: tick often so joins settle in well under a second.
        tick_duration: Duration::from_millis(100),
        link_retry_duration: Duration::from_millis(300),
        request_timeout: Duration::from_millis(700),
        shortcut_check_duration: Duration::from_millis(500),
        ..overlay_core::Config::default()
    }
}
