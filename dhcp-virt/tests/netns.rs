//! Real DHCP clients nobody here wrote (ISC dhclient with its own
//! dhclient-script, busybox udhcpc) against the `dhcp-tap` example, each in
//! its own network namespace. The kernel side of the TAP is the guest's
//! interface; `dhcp-tap` is the wire.
//!
//! Every namespace gets its own `/etc/resolv.conf` (through `ip netns
//! exec`'s `/etc/netns/NAME/` bind mounts) before a client runs, so
//! dhclient-script never touches the host's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use dhcp_virt::wire::HardwareAddr;
use dhcp_virt::{ClientKey, Pool};
use support::{hook_applied, udhcpc_script};
use wow_test_hosts::{Netns, Process, TempDir, example_bin, require, unique_name, wait_until};

const NETWORK: &str = "10.77.0.0/24";
const GATEWAY: &str = "10.77.0.1";
const POOL: &str = "10.77.0.100-10.77.0.200";

struct Rig {
    ns: Netns,
    dir: TempDir,
    tap: String,
    server: Option<Process>,
}

impl Rig {
    fn new() -> Self {
        let ns = Netns::new("dh").unwrap();
        // Before any client runs: dhclient-script writes resolv.conf.
        ns.set_resolv_conf("# dhcp-virt test\n").unwrap();
        let tap = unique_name("tp");
        ns.add_tap(&tap).unwrap();
        Rig {
            ns,
            dir: TempDir::new("dh").unwrap(),
            tap,
            server: None,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn p(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }

    fn start_server(&mut self, lease_secs: u32, pool: &str, state: &str) {
        self.start_server_on(NETWORK, lease_secs, pool, state);
    }

    fn start_server_on(&mut self, network: &str, lease_secs: u32, pool: &str, state: &str) {
        let state = self.p(state);
        let lease = lease_secs.to_string();
        let bin = example_bin("dhcp-tap");
        let p = self
            .ns
            .spawn(
                &bin,
                &[
                    "--tap",
                    &self.tap,
                    "--network",
                    network,
                    "--gateway",
                    GATEWAY,
                    "--dns",
                    GATEWAY,
                    "--lease-secs",
                    &lease,
                    "--state",
                    &state,
                    "--pool",
                    pool,
                    "--mtu",
                    "1400",
                ],
            )
            .unwrap();
        assert!(
            wait_until(Duration::from_secs(10), || p.log().contains("serving")),
            "dhcp-tap did not start: {}",
            p.log()
        );
        self.server = Some(p);
    }

    fn stop_server(&mut self) {
        if let Some(mut p) = self.server.take() {
            p.kill();
        }
    }

    fn log(&self) -> String {
        self.server.as_ref().map(Process::log).unwrap_or_default()
    }

    fn wait_log(&self, needle: &str, secs: u64) {
        assert!(
            wait_until(Duration::from_secs(secs), || self.log().contains(needle)),
            "server log lacks {needle:?}:\n{}",
            self.log()
        );
    }

    /// The single IPv4 address on the TAP, if any.
    fn addr(&self) -> Option<Ipv4Addr> {
        let addrs = self.ns.ipv4_addrs(&self.tap).unwrap();
        assert!(addrs.len() <= 1, "several addresses: {addrs:?}");
        addrs
            .first()
            .map(|a| a.split('/').next().unwrap().parse().unwrap())
    }

    fn flush(&self) {
        self.ns
            .ip(&["-4", "addr", "flush", "dev", &self.tap])
            .unwrap();
    }

    fn mac(&self) -> [u8; 6] {
        let text = self
            .ns
            .run_ok("cat", &[&format!("/sys/class/net/{}/address", self.tap)])
            .unwrap();
        let v: Vec<u8> = text
            .trim()
            .split(':')
            .map(|p| u8::from_str_radix(p, 16).unwrap())
            .collect();
        v.try_into().unwrap()
    }

    /// The address a server without state would choose for this MAC.
    fn preferred(&self) -> Ipv4Addr {
        preferred(&ClientKey::Hardware(HardwareAddr::ethernet(self.mac())))
    }

    /// The same for a client that sends client identifier 01:MAC (udhcpc).
    fn preferred_by_id(&self) -> Ipv4Addr {
        let mut id = vec![1];
        id.extend_from_slice(&self.mac());
        preferred(&ClientKey::Id(id))
    }

    fn set_mac(&self, mac: &str) {
        self.ns
            .ip(&["link", "set", "dev", &self.tap, "address", mac])
            .unwrap();
    }

    // ---- dhclient ----

    fn dhclient(&self, args: &[&str]) -> String {
        let (pf, lf) = (self.p("dhclient.pid"), self.p("dhclient.leases"));
        let mut full = vec!["-v", "-pf", &pf, "-lf", &lf];
        full.extend_from_slice(args);
        full.push(&self.tap);
        let out = self
            .ns
            .run("timeout", &[&["30", "dhclient"][..], &full].concat())
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "dhclient {args:?} failed:\n{text}\nserver:\n{}",
            self.log()
        );
        text
    }

    /// A lease file from which dhclient starts in INIT-REBOOT for `addr`.
    fn write_client_lease(&self, addr: &str) {
        let text = format!(
            "lease {{\n  interface \"{}\";\n  fixed-address {addr};\n  \
             option subnet-mask 255.255.255.0;\n  option dhcp-server-identifier {GATEWAY};\n  \
             renew 4 2037/12/31 00:00:00;\n  rebind 4 2037/12/31 00:00:00;\n  \
             expire 4 2037/12/31 00:00:00;\n}}\n",
            self.tap
        );
        std::fs::write(self.path("dhclient.leases"), text).unwrap();
    }

    fn stop_dhclient(&self) {
        // -x: stop the daemon without releasing.
        self.dhclient(&["-x"]);
        self.flush();
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let pf = self.path("dhclient.pid");
        if let Ok(pid) = std::fs::read_to_string(&pf) {
            let _ = std::process::Command::new("kill").arg(pid.trim()).status();
        }
    }
}

fn preferred(key: &ClientKey) -> Ipv4Addr {
    let (a, b) = POOL.split_once('-').unwrap();
    let pool = Pool::range(a.parse().unwrap(), b.parse().unwrap());
    pool.candidates(key).next().unwrap()
}

fn in_pool(a: Ipv4Addr) -> bool {
    let o = a.octets();
    o[..3] == [10, 77, 0] && (100..=200).contains(&o[3])
}

#[test]
fn dhclient_lease_renew_release_restart_nak_and_exhaustion() {
    if !require(
        "dhclient_lease_renew_release_restart_and_nak",
        &["dhclient", "timeout"],
    ) {
        return;
    }
    let mut rig = Rig::new();
    rig.start_server(6, POOL, "state.json");

    // INIT-REBOOT for a foreign address: NAK, then DISCOVER gets a lease.
    rig.write_client_lease("192.168.99.5");
    let out = rig.dhclient(&["-1"]);
    assert!(out.contains("DHCPNAK"), "{out}");
    rig.wait_log("192.168.99.5 is not in our network", 5);
    let first = rig.addr().expect("address applied to the interface");
    assert!(in_pool(first), "{first}");
    assert_eq!(first, rig.preferred());
    // dhclient-script applied the options too: default route and MTU 1400.
    let routes = rig.ns.ip(&["route", "show", "default"]).unwrap();
    assert!(routes.contains(GATEWAY), "{routes}");
    let link = rig.ns.ip(&["link", "show", &rig.tap]).unwrap();
    assert!(link.contains("mtu 1400"), "{link}");
    rig.wait_log(&format!("leased {first}"), 5);

    // Renewed at T1 (3 s) by the running daemon.
    rig.wait_log(&format!("renewed {first}"), 15);

    // Released: the server hears it, the address leaves the interface.
    rig.dhclient(&["-r"]);
    rig.wait_log(&format!("released {first}"), 10);
    assert_eq!(rig.addr(), None);

    // Re-obtained from scratch (no client lease file): same address.
    std::fs::remove_file(rig.path("dhclient.leases")).unwrap();
    rig.dhclient(&["-1"]);
    assert_eq!(rig.addr(), Some(first));

    // Move to another pool address by INIT-REBOOT, so the stateless choice
    // would differ from what the state file says.
    rig.stop_dhclient();
    let other = if first == Ipv4Addr::new(10, 77, 0, 150) {
        "10.77.0.151"
    } else {
        "10.77.0.150"
    };
    rig.write_client_lease(other);
    rig.dhclient(&["-1"]);
    let moved = rig.addr().unwrap();
    assert_eq!(moved.to_string(), other);

    // Restart the server from its state file; a client with no memory of
    // its own gets the address back.
    rig.stop_dhclient();
    rig.stop_server();
    rig.start_server(6, POOL, "state.json");
    std::fs::remove_file(rig.path("dhclient.leases")).unwrap();
    rig.dhclient(&["-1"]);
    assert_eq!(rig.addr(), Some(moved));
    assert_ne!(moved, rig.preferred());
    rig.stop_dhclient();

    // Pool exhaustion: a one-address pool held by this MAC; dhclient on a
    // second MAC gets no offer (it gives up after 3 s) and the server logs
    // why.
    rig.stop_server();
    rig.start_server(60, "10.77.0.120-10.77.0.120", "small.json");
    std::fs::remove_file(rig.path("dhclient.leases")).unwrap();
    rig.dhclient(&["-1"]);
    assert_eq!(rig.addr(), Some(Ipv4Addr::new(10, 77, 0, 120)));
    rig.stop_dhclient();
    std::fs::remove_file(rig.path("dhclient.leases")).unwrap();
    rig.set_mac("02:00:00:77:00:98");
    std::fs::write(rig.path("dhclient.conf"), "timeout 3;\nretry 60;\n").unwrap();
    let (pf, lf, cf) = (
        rig.p("dhclient.pid"),
        rig.p("dhclient.leases"),
        rig.p("dhclient.conf"),
    );
    let out = rig
        .ns
        .run(
            "timeout",
            &[
                "30", "dhclient", "-1", "-v", "-cf", &cf, "-pf", &pf, "-lf", &lf, &rig.tap,
            ],
        )
        .unwrap();
    assert!(
        !out.status.success(),
        "dhclient got a lease from an exhausted pool"
    );
    assert_eq!(rig.addr(), None);
    rig.wait_log("address pool exhausted", 10);
}

#[test]
fn udhcpc_lease_renew_release_restart_nak_and_exhaustion() {
    if !require(
        "udhcpc_lease_renew_release_restart_and_exhaustion",
        &["busybox", "timeout"],
    ) {
        return;
    }
    let mut rig = Rig::new();
    let script = udhcpc_script(rig.dir.path());
    // udhcpc treats leases under 30 s as 30 s: T1 is then 15 s.
    rig.start_server(30, POOL, "state.json");

    // A daemon that keeps renewing; it asks for the MTU (not in its
    // default parameter request list).
    let mut daemon = rig
        .ns
        .spawn(
            "busybox",
            &[
                "udhcpc", "-f", "-i", &rig.tap, "-s", &script, "-t", "5", "-T", "1", "-O", "mtu",
            ],
        )
        .unwrap();
    // Not just the address on the TAP: udhcpc's hook applies the MTU after
    // it, so wait for the hook to say it has finished.
    assert!(
        wait_until(Duration::from_secs(10), || rig.addr().is_some_and(|a| {
            daemon
                .log()
                .contains(&hook_applied("bound", &a.to_string()))
        })),
        "no address: {}\n{}",
        daemon.log(),
        rig.log()
    );
    let first = rig.addr().unwrap();
    assert!(in_pool(first));
    let link = rig.ns.ip(&["link", "show", &rig.tap]).unwrap();
    assert!(link.contains("mtu 1400"), "{link}");
    rig.wait_log(&format!("renewed {first}"), 25);

    // SIGUSR2: release.
    rig.ns
        .run_ok("kill", &["-USR2", &daemon.id().to_string()])
        .unwrap();
    rig.wait_log(&format!("released {first}"), 10);
    assert!(wait_until(Duration::from_secs(5), || rig.addr().is_none()));
    daemon.kill();

    // Re-obtained: same address.
    let once = |rig: &Rig, extra: &[&str]| {
        let mut args = vec!["30", "busybox", "udhcpc", "-n", "-q", "-f", "-i", &rig.tap];
        args.extend_from_slice(&["-s", &script, "-t", "3", "-T", "1", "-O", "mtu"]);
        args.extend_from_slice(extra);
        let out = rig.ns.run("timeout", &args).unwrap();
        let text = format!(
            "udhcpc {extra:?} exited with {}:\n{}{}\nserver:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            rig.log()
        );
        (out.status.success(), text)
    };
    let (ok, text) = once(&rig, &[]);
    assert!(ok, "{text}");
    assert_eq!(rig.addr(), Some(first));

    assert_eq!(first, rig.preferred_by_id());

    // A new client (new MAC, so new client identifier) asks for a specific
    // address (option 50 in DISCOVER) and gets it; after a server restart
    // from its state file it gets it again without asking, although a
    // server without state would choose another. The address is neither
    // the one this client would get anyway nor the first client's (which
    // still holds it, and which the TAP's random MAC puts anywhere in the
    // pool).
    rig.flush();
    rig.set_mac("02:00:00:77:00:42");
    let other = [160, 161, 162]
        .map(|o| Ipv4Addr::new(10, 77, 0, o))
        .into_iter()
        .find(|a| *a != first && *a != rig.preferred_by_id())
        .unwrap()
        .to_string();
    let other = other.as_str();
    let (ok, text) = once(&rig, &["-r", other]);
    assert!(ok, "{text}");
    assert_eq!(rig.addr().unwrap().to_string(), other);
    rig.stop_server();
    rig.start_server(30, POOL, "state.json");
    rig.flush();
    let (ok, text) = once(&rig, &[]);
    assert!(ok, "{text}");
    assert_eq!(rig.addr().unwrap().to_string(), other);
    assert_ne!(rig.addr().unwrap(), rig.preferred_by_id());

    // NAK: a daemon holds `other` (10.77.0.16x); the network shrinks to
    // 10.77.0.0/25 (same gateway) and a forced renewal (SIGUSR1) REQUESTs an
    // address now outside it. The server NAKs, and the client starts over
    // and gets an address of the new pool.
    let mut daemon = rig
        .ns
        .spawn(
            "busybox",
            &[
                "udhcpc", "-f", "-i", &rig.tap, "-s", &script, "-t", "5", "-T", "1", "-r", other,
            ],
        )
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || daemon
            .log()
            .contains(&hook_applied("bound", other))),
        "{}",
        daemon.log()
    );
    rig.stop_server();
    rig.start_server_on("10.77.0.0/25", 30, "10.77.0.100-10.77.0.110", "nak.json");
    rig.ns
        .run_ok("kill", &["-USR1", &daemon.id().to_string()])
        .unwrap();
    rig.wait_log(&format!("{other} is not in our network"), 10);
    // Applied by the hook to the end before the daemon is killed, so that
    // no orphaned hook changes the TAP under the next steps.
    assert!(
        wait_until(Duration::from_secs(15), || rig.addr().is_some_and(|a| {
            (100..=110).contains(&a.octets()[3])
                && daemon
                    .log()
                    .contains(&hook_applied("bound", &a.to_string()))
        })),
        "no address from the new pool: {}\n{}",
        daemon.log(),
        rig.log()
    );
    daemon.kill();

    // Pool exhaustion: a one-address pool held by this MAC; a second MAC
    // gets no offer and the server logs why.
    rig.stop_server();
    rig.flush();
    rig.start_server(60, "10.77.0.120-10.77.0.120", "small.json");
    let (ok, text) = once(&rig, &[]);
    assert!(ok, "{text}");
    assert_eq!(rig.addr(), Some(Ipv4Addr::new(10, 77, 0, 120)));
    rig.flush();
    rig.set_mac("02:00:00:77:00:99");
    let (ok, text) = once(&rig, &[]);
    assert!(!ok, "got a lease from an exhausted pool: {text}");
    assert_eq!(rig.addr(), None);
    rig.wait_log("address pool exhausted", 10);
}
