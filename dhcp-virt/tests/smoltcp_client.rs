//! A real client implementation nobody here wrote: smoltcp's DHCPv4 socket,
//! in process, talking to the server through the frame API (with arp-virt
//! answering the client's ARP for the server, which renewals need). It gets
//! a lease, renews it at T1, and after a reset gets the same address again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dhcp_virt::{Config, Event, MemoryStore, Server};
use dns_virt::MemDevice;
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketSet};
use smoltcp::socket::dhcpv4;
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{EthernetAddress, IpCidr, Ipv4Cidr};

struct Rig {
    t0: Instant,
    ms: u64,
    wire: MemDevice,
    iface: Interface,
    sockets: SocketSet<'static>,
    dhcp: smoltcp::iface::SocketHandle,
    server: Server<MemoryStore>,
    arp: arp_virt::Responder,
    address: Option<Ipv4Cidr>,
    router: Option<Ipv4Addr>,
    dns: Vec<Ipv4Addr>,
    renewals: usize,
    arp_replies: usize,
    leases: Vec<Ipv4Addr>,
}

impl Rig {
    fn new() -> Self {
        let t0 = Instant::now();
        let mut config = Config::new("10.77.0.0/24".parse().unwrap(), Ipv4Addr::new(10, 77, 0, 1));
        config.lease_duration = Duration::from_secs(20);
        config.interface_mtu = Some(1400);
        let mut arp_config =
            arp_virt::Config::new(config.network, arp_virt::EthernetAddress(config.server_mac));
        arp_config.gateway_addr = config.server_addr;
        let arp = arp_virt::Responder::new(arp_config).unwrap();
        let server = Server::new(
            t0,
            std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
            config,
            MemoryStore::new(),
        )
        .unwrap();
        let mut wire = MemDevice::ethernet(1514);
        let mac = EthernetAddress([0x02, 0x00, 0x00, 0x12, 0x34, 0x56]);
        let mut cfg = IfaceConfig::new(mac.into());
        cfg.random_seed = 42;
        let iface = Interface::new(cfg, &mut wire, SmolInstant::from_millis(0));
        let mut sockets = SocketSet::new(vec![]);
        let dhcp = sockets.add(dhcpv4::Socket::new());
        Rig {
            t0,
            ms: 0,
            wire,
            iface,
            sockets,
            dhcp,
            server,
            arp,
            address: None,
            router: None,
            dns: Vec::new(),
            renewals: 0,
            arp_replies: 0,
            leases: Vec::new(),
        }
    }

    /// Run both sides until `ms` (simulated milliseconds).
    fn run_until(&mut self, end_ms: u64) {
        while self.ms <= end_ms {
            let smol_now = SmolInstant::from_millis(self.ms as i64);
            let now = self.t0 + Duration::from_millis(self.ms);
            self.iface.poll(smol_now, &mut self.wire, &mut self.sockets);
            match self.sockets.get_mut::<dhcpv4::Socket>(self.dhcp).poll() {
                Some(dhcpv4::Event::Configured(c)) => {
                    self.address = Some(c.address);
                    self.router = c.router;
                    self.dns = c.dns_servers.iter().copied().collect();
                    self.iface.update_ip_addrs(|a| {
                        a.clear();
                        a.push(IpCidr::Ipv4(c.address)).unwrap();
                    });
                }
                Some(dhcpv4::Event::Deconfigured) => {
                    self.address = None;
                    self.iface.update_ip_addrs(|a| a.clear());
                }
                None => {}
            }
            while let Some(t) = self.arp.poll_transmit() {
                self.wire.rx.push_back(t.as_bytes().to_vec());
            }
            while let Some(frame) = self.wire.tx.pop_front() {
                if let Ok(arp_virt::Outcome::Reply(t)) =
                    self.arp.handle_frame(&frame, &arp_virt::NoOtherHosts)
                {
                    self.wire.rx.push_back(t.as_bytes().to_vec());
                    self.arp_replies += 1;
                    continue;
                }
                // Anything that is neither ARP nor DHCP (none expected) is
                // refused.
                let _ = self.server.handle_frame(now, &frame);
            }
            self.server.handle_timeout(now);
            while let Some(frame) = self.server.poll_frame() {
                self.wire.rx.push_back(frame);
            }
            while let Some(e) = self.server.poll_event() {
                if let Event::Leased { addr, renewed, .. } = e {
                    self.arp.set_guest_addr(Some(addr)).unwrap();
                    self.leases.push(addr);
                    if renewed {
                        self.renewals += 1;
                    }
                }
            }
            // Next step: the earlier of both sides' deadlines, at least 1 ms.
            let busy = self.wire.is_busy();
            let client_next = self
                .iface
                .poll_at(smol_now, &self.sockets)
                .map(|t| t.total_millis().max(0) as u64);
            let server_next = self
                .server
                .poll_timeout()
                .map(|t| t.saturating_duration_since(self.t0).as_millis() as u64);
            let next = if busy {
                self.ms + 1
            } else {
                [client_next, server_next, Some(end_ms + 1)]
                    .into_iter()
                    .flatten()
                    .min()
                    .unwrap()
                    .max(self.ms + 1)
            };
            self.ms = next;
        }
    }
}

#[test]
fn smoltcp_gets_renews_and_regets_a_lease() {
    let mut rig = Rig::new();
    rig.run_until(2_000);
    let got = rig.address.expect("smoltcp configured an address");
    assert_eq!(got.prefix_len(), 24);
    assert!(Ipv4Cidr::new(Ipv4Addr::new(10, 77, 0, 0), 24).contains_addr(&got.address()));
    assert_eq!(rig.router, Some(Ipv4Addr::new(10, 77, 0, 1)));
    assert_eq!(rig.dns, vec![Ipv4Addr::new(10, 77, 0, 1)]);
    assert_eq!(rig.leases, vec![got.address()]);
    assert_eq!(rig.renewals, 0);

    // Lease 20 s: T1 at 10 s. By 15 s the client has renewed, and it still
    // holds the lease well past the original expiry.
    rig.run_until(15_000);
    assert!(rig.renewals >= 1, "no renewal by T1");
    assert!(rig.arp_replies >= 1, "renewal went out without ARP");
    rig.run_until(45_000);
    assert_eq!(rig.address, Some(got));
    assert!(rig.renewals >= 3);
    assert!(rig.leases.iter().all(|a| *a == got.address()));

    // A fresh start (reboot without state): DISCOVER again, same address.
    let renewals = rig.renewals;
    rig.sockets.get_mut::<dhcpv4::Socket>(rig.dhcp).reset();
    rig.address = None;
    rig.iface.update_ip_addrs(|a| a.clear());
    rig.run_until(48_000);
    assert_eq!(rig.address, Some(got));
    assert!(rig.leases.len() > renewals + 1);
    assert_eq!(*rig.leases.last().unwrap(), got.address());
}
