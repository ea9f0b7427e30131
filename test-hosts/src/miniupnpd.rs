//! A home router that grants port mappings: Debian's miniupnpd
//! (`miniupnpd-nftables`) serving NAT-PMP and PCP in a router namespace,
//! with a LAN host and a WAN peer.
//!
//! ```text
//!   host 192.168.77.2 ── lan0 router (miniupnpd) wan0 100.200.0.1 ── peer 100.200.0.2
//! ```
//!
//! The WAN network is a public-looking range: miniupnpd refuses to map
//! when its external address is private or reserved (TEST-NETs included).

use std::io;

use crate::{Netns, Process, TempDir, wait_until};

/// The router's LAN address (the host's default gateway).
pub const ROUTER_LAN: &str = "192.168.77.1";
/// The LAN host's address.
pub const HOST: &str = "192.168.77.2";
/// The router's WAN (external) address.
pub const ROUTER_WAN: &str = "100.200.0.1";
/// The WAN peer's address.
pub const PEER: &str = "100.200.0.2";
/// The table whose chain `prerouting_miniupnpd` holds miniupnpd's DNAT
/// rules.
pub const TABLE: &str = "wowpmp";

/// The tables and chains miniupnpd's nftables backend fills (the layout of
/// its `nft_init.sh`, named in [`CONFIG`]), plus the router's masquerade.
/// Forwarding is open; what reaches the host from the WAN side is only
/// what a DNAT rule sends there.
const RULESET: &str = r#"table inet wowpmp {
  chain forward {
    type filter hook forward priority 0; policy accept;
    jump miniupnpd
  }
  chain miniupnpd {
  }
  chain prerouting {
    type nat hook prerouting priority -100; policy accept;
    jump prerouting_miniupnpd
  }
  chain postrouting {
    type nat hook postrouting priority 100; policy accept;
    jump postrouting_miniupnpd
    oifname "wan0" masquerade
  }
  chain prerouting_miniupnpd {
  }
  chain postrouting_miniupnpd {
  }
}
"#;

/// miniupnpd with NAT-PMP and PCP (`enable_natpmp` serves both), without
/// UPnP IGD, mapping only for the LAN, in the tables above.
const CONFIG: &str = "ext_ifname=wan0
listening_ip=lan0
enable_natpmp=yes
enable_upnp=no
secure_mode=yes
min_lifetime=60
max_lifetime=86400
upnp_table_name=wowpmp
upnp_nat_table_name=wowpmp
upnp_forward_chain=miniupnpd
upnp_nat_chain=prerouting_miniupnpd
upnp_nat_postrouting_chain=postrouting_miniupnpd
allow 1024-65535 192.168.77.0/24 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
";

/// The router and WAN peer around a LAN host, with miniupnpd running;
/// everything goes when dropped.
#[derive(Debug)]
pub struct PortMapRouter {
    /// The router namespace.
    pub router: Netns,
    /// The WAN peer namespace.
    pub peer: Netns,
    _state: TempDir,
    _miniupnpd: Process,
}

impl PortMapRouter {
    /// Wire `host` (its `eth0` gets [`HOST`] and a default route) to a new
    /// router running miniupnpd, and a WAN peer behind it; returns once
    /// miniupnpd listens (error after 10 s).
    pub fn new(host: &Netns) -> io::Result<PortMapRouter> {
        let router = Netns::new("pr")?;
        let peer = Netns::new("pp")?;
        host.veth_to(&router, "eth0", "lan0")?;
        router.veth_to(&peer, "wan0", "eth0")?;
        host.addr_add("eth0", &format!("{HOST}/24"))?;
        host.default_route(ROUTER_LAN)?;
        router.addr_add("lan0", &format!("{ROUTER_LAN}/24"))?;
        router.addr_add("wan0", &format!("{ROUTER_WAN}/24"))?;
        router.enable_forwarding()?;
        router.nft(RULESET)?;
        peer.addr_add("eth0", &format!("{PEER}/24"))?;

        let state = TempDir::new("pmp")?;
        let conf = state.path().join("miniupnpd.conf");
        std::fs::write(&conf, CONFIG)?;
        let pid = state.path().join("miniupnpd.pid");
        let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
        let miniupnpd =
            router.spawn("miniupnpd", &["-f", &path(&conf), "-d", "-P", &path(&pid)])?;
        if !wait_until(std::time::Duration::from_secs(10), || {
            miniupnpd.log().contains("Listening for NAT-PMP/PCP")
        }) {
            return Err(io::Error::other(format!(
                "miniupnpd did not start:\n{}",
                miniupnpd.log()
            )));
        }
        Ok(PortMapRouter {
            router,
            peer,
            _state: state,
            _miniupnpd: miniupnpd,
        })
    }

    /// The DNAT rules miniupnpd holds (`nft list chain …`).
    pub fn dnat_rules(&self) -> io::Result<String> {
        self.router.run_ok(
            "nft",
            &["list", "chain", "inet", TABLE, "prerouting_miniupnpd"],
        )
    }
}
