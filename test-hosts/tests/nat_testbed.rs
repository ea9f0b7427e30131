//! The NAT testbed, checked with a real probe: each kind of NAT is built,
//! then `udp-probe` (a STUN-like echo) observes its mapping from two
//! servers and its filtering from three sockets, and the effects of input
//! drop, hairpin, nesting, the shared layout and the UDP timeout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use wow_test_hosts::nat::{Host, SERVER_A, SERVER_B};
use wow_test_hosts::{
    Filtering, Layout, Mapping, NatSpec, Netns, Process, SiteSpec, Testbed, require, wait_until,
};

const PROBE: &str = env!("CARGO_BIN_EXE_udp-probe");

/// `udp-probe serve` on SERVER_A:3478, SERVER_A:3479 and SERVER_B:3478.
fn servers(internet: &Netns) -> Process {
    let addrs = [
        format!("{SERVER_A}:3478"),
        format!("{SERVER_A}:3479"),
        format!("{SERVER_B}:3478"),
    ];
    let args: Vec<&str> = std::iter::once("serve")
        .chain(addrs.iter().map(String::as_str))
        .collect();
    let p = internet.spawn(PROBE, &args).unwrap();
    wait_listening(internet, &addrs);
    p
}

fn wait_listening(ns: &Netns, addrs: &[String]) {
    assert!(
        wait_until(Duration::from_secs(5), || {
            let out = ns.run_ok("ss", &["-Hlun"]).unwrap_or_default();
            addrs.iter().all(|a| out.contains(a.as_str()))
        }),
        "udp-probe does not listen on {addrs:?}"
    );
}

/// `udp-probe ask` from `host` port `port`; the answers as (via, seen).
fn ask(ns: &Netns, bind: &str, to: &[String], all: bool) -> Vec<(String, String)> {
    let mut args = vec!["ask", "--bind", bind, "--wait-ms", "300"];
    if all {
        args.push("--all");
    }
    for t in to {
        args.extend(["--to", t]);
    }
    ns.run_ok(PROBE, &args)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (via, seen) = l.split_once(' ')?;
            Some((
                via.strip_prefix("via=")?.to_string(),
                seen.strip_prefix("seen=")?.to_string(),
            ))
        })
        .collect()
}

/// The mapping `host` gets from port `port`: the addresses SERVER_A and
/// SERVER_B saw.
fn observe_mapping(host: &Host, port: u16) -> Mapping {
    let bind = format!("{}:{port}", host.addr);
    let to = [format!("{SERVER_A}:3478"), format!("{SERVER_B}:3478")];
    let answers = ask(&host.ns, &bind, &to, false);
    let seen: BTreeSet<&str> = answers.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(answers.len(), 2, "{answers:?}");
    if seen.len() == 1 {
        Mapping::EndpointIndependent
    } else {
        Mapping::EndpointDependent
    }
}

/// The filtering `host` gets from port `port`: which of the three server
/// sockets could answer a probe sent to SERVER_A:3478 only.
fn observe_filtering(host: &Host, port: u16) -> Filtering {
    let bind = format!("{}:{port}", host.addr);
    let answers = ask(&host.ns, &bind, &[format!("{SERVER_A}:3478")], true);
    let via: BTreeSet<String> = answers.into_iter().map(|(v, _)| v).collect();
    let a2 = format!("{SERVER_A}:3479");
    let b = format!("{SERVER_B}:3478");
    assert!(via.contains(&format!("{SERVER_A}:3478")), "{via:?}");
    match (via.contains(&a2), via.contains(&b)) {
        (true, true) => Filtering::EndpointIndependent,
        (true, false) => Filtering::AddressDependent,
        (false, false) => Filtering::AddressPortDependent,
        (false, true) => panic!("answered by the other address only: {via:?}"),
    }
}

fn seen_port(answers: &[(String, String)]) -> u16 {
    assert_eq!(answers.len(), 1, "{answers:?}");
    answers[0].1.rsplit_once(':').unwrap().1.parse().unwrap()
}

#[test]
fn each_nat_kind_shows_its_mapping_and_filtering() {
    if !require(
        "each_nat_kind_shows_its_mapping_and_filtering",
        &["nft", "ss"],
    ) {
        return;
    }
    use Filtering as F;
    use Mapping as M;
    let specs = [
        NatSpec::new(M::EndpointIndependent, F::EndpointIndependent),
        NatSpec::new(M::EndpointIndependent, F::AddressDependent),
        NatSpec::new(M::EndpointIndependent, F::AddressPortDependent).with_input_drop(true),
        NatSpec::new(M::EndpointDependent, F::AddressPortDependent),
        NatSpec::new(M::EndpointDependent, F::EndpointIndependent),
    ];
    let mut builder = Testbed::builder();
    for s in specs {
        builder = builder.site(SiteSpec::behind(s));
    }
    let t = builder.build().unwrap();
    let _servers = servers(&t.internet);
    for (site, spec) in t.sites.iter().zip(specs) {
        let mapping = observe_mapping(site.host(), 5000);
        let filtering = observe_filtering(site.host(), 5001);
        println!("{spec}: observed {mapping:?} / {filtering:?}");
        assert_eq!(mapping, spec.mapping, "{spec}");
        assert_eq!(filtering, spec.filtering, "{spec}");
        // The servers see the site's public address.
        let answers = ask(
            &site.host().ns,
            &format!("{}:5002", site.host().addr),
            &[format!("{SERVER_A}:3478")],
            false,
        );
        assert!(
            answers[0]
                .1
                .starts_with(&format!("{}:", site.public_addr())),
            "{spec}: {answers:?}"
        );
    }
}

/// An unsolicited datagram to the router leaves a conntrack entry that
/// makes an endpoint-independent NAT remap the host's port towards its
/// sender — unless the router drops it (input drop).
#[test]
fn input_drop_keeps_a_port_that_an_early_probe_would_steal() {
    if !require(
        "input_drop_keeps_a_port_that_an_early_probe_would_steal",
        &["nft", "ss"],
    ) {
        return;
    }
    let t = Testbed::builder()
        .site(SiteSpec::behind(NatSpec::cone()))
        .site(SiteSpec::behind(NatSpec::cone().with_input_drop(true)))
        .build()
        .unwrap();
    let poker = format!("{SERVER_A}:4444");
    for site in &t.sites {
        // The early probe: from SERVER_A:4444 to the router's port 6000.
        let to = format!("{}:6000", site.public_addr());
        ask(&t.internet, &poker, &[to], false);
    }
    let _server = t.internet.spawn(PROBE, &["serve", &poker]).unwrap();
    wait_listening(&t.internet, std::slice::from_ref(&poker));
    let ports: Vec<u16> = t
        .sites
        .iter()
        .map(|s| {
            seen_port(&ask(
                &s.host().ns,
                &format!("{}:6000", s.host().addr),
                std::slice::from_ref(&poker),
                false,
            ))
        })
        .collect();
    println!("mapped ports without / with input drop: {ports:?}");
    assert_ne!(ports[0], 6000, "no remap without input drop");
    assert_eq!(ports[1], 6000, "remapped despite input drop");
}

/// Two hosts behind one NAT reach each other through its public address
/// only with hairpin on.
#[test]
fn hairpin_reaches_a_neighbour_through_the_public_address() {
    if !require(
        "hairpin_reaches_a_neighbour_through_the_public_address",
        &["nft", "ss"],
    ) {
        return;
    }
    let t = Testbed::builder()
        .site(SiteSpec::behind(NatSpec::cone().with_hairpin(true)).hosts(2))
        .site(SiteSpec::behind(NatSpec::cone()).hosts(2))
        .build()
        .unwrap();
    let mut results = vec![];
    for site in &t.sites {
        let (a, b) = (&site.hosts[0], &site.hosts[1]);
        // A serves on 7000 and keeps a mapping open towards SERVER_A.
        let listen = format!("{}:7000", a.addr);
        let _serve =
            a.ns.spawn(
                PROBE,
                &["serve", "--hello", &format!("{SERVER_A}:9"), &listen],
            )
            .unwrap();
        wait_listening(&a.ns, std::slice::from_ref(&listen));
        let public = site.public_addr();
        let ok = wait_until(Duration::from_secs(3), || {
            !ask(
                &b.ns,
                &format!("{}:7001", b.addr),
                &[format!("{public}:7000")],
                false,
            )
            .is_empty()
        });
        let answers = ask(
            &b.ns,
            &format!("{}:7001", b.addr),
            &[format!("{public}:7000")],
            false,
        );
        if site.router.spec.hairpin {
            assert!(ok, "no answer through the hairpin");
            // A saw B at the NAT's public address (B's own mapping).
            assert_eq!(answers[0].1, format!("{public}:7001"), "{answers:?}");
        }
        results.push(answers);
    }
    println!("hairpin on: {:?}; off: {:?}", results[0], results[1]);
    assert!(results[1].is_empty(), "hairpin off, yet {:?}", results[1]);
}

/// A host behind a home NAT behind a carrier NAT: the servers see the
/// carrier's address, the home router sits on 100.64.0.0/10, and both
/// endpoint-independent NATs together still map endpoint-independently.
#[test]
fn nested_nats_map_through_the_carrier() {
    if !require("nested_nats_map_through_the_carrier", &["nft", "ss"]) {
        return;
    }
    let t = Testbed::builder()
        .site(SiteSpec::behind(NatSpec::cone()).carrier(NatSpec::cone()))
        .site(SiteSpec::behind(NatSpec::cone()).carrier(NatSpec::symmetric()))
        .build()
        .unwrap();
    let _servers = servers(&t.internet);
    let expect = [Mapping::EndpointIndependent, Mapping::EndpointDependent];
    for (site, mapping) in t.sites.iter().zip(expect) {
        let carrier = site.carrier.as_ref().unwrap();
        assert_eq!(site.router.wan_addr.octets()[..2], [100, 64]);
        assert_eq!(site.public_addr(), carrier.wan_addr);
        assert_eq!(observe_mapping(site.host(), 5000), mapping);
        assert_eq!(
            observe_filtering(site.host(), 5001),
            Filtering::AddressPortDependent
        );
    }
}

/// With the shared layout the outermost routers are neighbours: a datagram
/// with TTL 1 from one reaches the other (the case in which a host's
/// low-TTL "open my NAT" datagram reaches the peer's NAT); in the routed
/// layout it does not.
#[test]
fn shared_layout_puts_the_nats_one_hop_apart() {
    if !require(
        "shared_layout_puts_the_nats_one_hop_apart",
        &["nft", "ping"],
    ) {
        return;
    }
    for (layout, reaches) in [(Layout::Shared, true), (Layout::Routed, false)] {
        let t = Testbed::builder()
            .layout(layout)
            .site(SiteSpec::behind(NatSpec::cone()))
            .site(SiteSpec::behind(NatSpec::cone()))
            .build()
            .unwrap();
        let other = t.site(1).router.wan_addr.to_string();
        let ping = t
            .site(0)
            .router
            .ns
            .run("ping", &["-c1", "-W1", "-t1", &other])
            .unwrap();
        assert_eq!(ping.status.success(), reaches, "{layout:?}");
        // Either way the routers reach each other with a normal TTL.
        t.site(0)
            .router
            .ns
            .run_ok("ping", &["-c1", "-W1", &other])
            .unwrap();
    }
}

/// A short UDP timeout reaches the router's conntrack.
#[test]
fn udp_timeout_is_set_in_the_router_namespace() {
    if !require("udp_timeout_is_set_in_the_router_namespace", &["nft"]) {
        return;
    }
    let t = Testbed::builder()
        .site(SiteSpec::behind(NatSpec::cone().with_udp_timeout(5)))
        .site(SiteSpec::behind(NatSpec::cone()))
        .build()
        .unwrap();
    let read = |ns: &Netns| -> u32 {
        ns.run_ok("sysctl", &["-n", "net.netfilter.nf_conntrack_udp_timeout"])
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(read(&t.site(0).router.ns), 5);
    assert_ne!(read(&t.site(1).router.ns), 5);
}
