//! Service records through real tools (root, network namespaces): a
//! guest's node registers `_slurmctld._tcp` from its `[[service]]` config,
//! another guest's node finds it through the DHT, and `dig` checks every
//! field of the SRV and TXT answers, under the host's name and at the
//! zone's name (also through the search domain DHCP gave the guest);
//! `wow-node service add|list|remove` change them at run time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use wow_test_hosts::{require, wait_until};

#[path = "support/host.rs"]
mod host;

use host::{BIN, Host};

const SERVICE: &str = "[[service]]\nname = \"_slurmctld._tcp\"\nport = 6817\npriority = 1\nweight = 5\ntxt = [\"cluster=wow\", \"v=22\"]\n";

/// `dig @10.128.0.1 ARGS… +noall +answer` (or the section in `section`)
/// from `h`: one line per record, fields split on whitespace.
fn dig(h: &Host, section: &str, args: &[&str]) -> Vec<Vec<String>> {
    let mut all = vec!["+time=3", "+tries=1", "@10.128.0.1", "+noall", section];
    all.extend_from_slice(args);
    let out =
        h.ns.run("dig", &all)
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
    out.lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

fn status_of(h: &Host, args: &[&str]) -> String {
    let mut all = vec!["+time=3", "+tries=1", "@10.128.0.1"];
    all.extend_from_slice(args);
    h.ns.run("dig", &all)
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn service_cmd(h: &Host, args: &[&str]) -> String {
    let mut all = vec!["service"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--state-dir", h.state.path().to_str().unwrap()]);
    h.ns.run_ok(BIN, &all).unwrap()
}

fn srv(owner: &str, p: u16, w: u16, port: u16, target: &str) -> Vec<String> {
    [owner, "60", "IN", "SRV"]
        .into_iter()
        .map(str::to_owned)
        .chain([p.to_string(), w.to_string(), port.to_string()])
        .chain([target.to_owned()])
        .collect()
}

#[test]
fn srv_and_txt_records_answer_dig_field_by_field() {
    if !require(
        "srv_and_txt_records_answer_dig_field_by_field",
        &["dhclient", "dig"],
    ) {
        return;
    }
    let mut ctl = Host::new("srv-ctl", "ctl");
    let mut worker = Host::new("srv-wk", "worker");
    ctl.ns.veth_to(&worker.ns, "eth0", "eth0").unwrap();
    ctl.ns.addr_add("eth0", "192.168.61.1/24").unwrap();
    worker.ns.addr_add("eth0", "192.168.61.2/24").unwrap();
    for h in [&ctl, &worker] {
        h.ns.link_up("lo").unwrap();
        h.ns.link_up("eth0").unwrap();
    }
    ctl.write_config(&[], "192.168.61.1:4000", &[], SERVICE);
    worker.write_config(&["192.168.61.1:4000"], "192.168.61.2:4000", &[], "");
    ctl.start(&[]);
    worker.start(&[]);
    let ctl_addr = ctl.dhcp();
    let _ = worker.dhcp();

    // From the other guest: found in the DHT, every field as registered.
    let all = "_slurmctld._tcp.wow.internal.";
    let want = srv(all, 1, 5, 6817, "ctl.wow.internal.");
    let mut got = Vec::new();
    assert!(
        wait_until(Duration::from_secs(20), || {
            got = dig(&worker, "+answer", &[all, "SRV"]);
            got == [want.clone()]
        }),
        "SRV at the zone's name: {got:?}\nctl:\n{}\nworker:\n{}",
        ctl.log(),
        worker.log()
    );
    let under = "_slurmctld._tcp.ctl.wow.internal.";
    assert_eq!(
        dig(&worker, "+answer", &[under, "SRV"]),
        [srv(under, 1, 5, 6817, "ctl.wow.internal.")]
    );
    assert_eq!(
        dig(&worker, "+answer", &[under, "TXT"]),
        [[under, "60", "IN", "TXT", "\"cluster=wow\"", "\"v=22\""]
            .map(str::to_owned)
            .to_vec()]
    );
    // The relative name with the search domain DHCP gave the guest (dig
    // tries a name with fewer dots than ndots with the search list first;
    // glibc's res_nsearch, as Slurm calls it, tries both).
    assert_eq!(
        dig(
            &worker,
            "+answer",
            &["+search", "+ndots=3", "_slurmctld._tcp", "SRV"]
        ),
        [want]
    );
    // On the registering node: the target's address as additional data.
    assert_eq!(
        dig(&ctl, "+additional", &[all, "SRV"]),
        [["ctl.wow.internal.", "60", "IN", "A", ctl_addr.as_str()]
            .map(str::to_owned)
            .to_vec()]
    );
    // NODATA for other types, NXDOMAIN for what nobody registered.
    let a = status_of(&worker, &[under, "A"]);
    assert!(
        a.contains("status: NOERROR") && a.contains("ANSWER: 0"),
        "{a}"
    );
    let none = status_of(&worker, &["_slurmctld._tcp.worker.wow.internal.", "SRV"]);
    assert!(none.contains("status: NXDOMAIN"), "{none}");

    // At run time: the worker adds a service, lists it, removes it.
    let added = service_cmd(
        &worker,
        &["add", "_http._tcp", "--port", "8080", "--txt", "path=/"],
    );
    assert!(added.contains("added _http._tcp"), "{added}");
    let list = service_cmd(&worker, &["list"]);
    assert_eq!(
        list.trim(),
        "_http._tcp.worker port=8080 priority=0 weight=0 txt=\"path=/\""
    );
    let http = "_http._tcp.wow.internal.";
    assert!(
        wait_until(Duration::from_secs(20), || dig(
            &ctl,
            "+answer",
            &[http, "SRV"]
        ) == [srv(
            http,
            0,
            0,
            8080,
            "worker.wow.internal."
        )]),
        "{:?}",
        dig(&ctl, "+answer", &[http, "SRV"])
    );
    let removed = service_cmd(&worker, &["remove", "_http._tcp"]);
    assert!(removed.contains("removed"), "{removed}");
    assert!(
        wait_until(Duration::from_secs(20), || status_of(&ctl, &[http, "SRV"])
            .contains("status: NXDOMAIN")),
        "{}",
        status_of(&ctl, &[http, "SRV"])
    );
    assert!(service_cmd(&worker, &["list"]).trim().is_empty());
    // A bad request is refused with a reason.
    let bad = worker
        .ns
        .run(
            BIN,
            &[
                "service",
                "add",
                "http",
                "--port",
                "1",
                "--state-dir",
                worker.state.path().to_str().unwrap(),
            ],
        )
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("error:"));

    worker.release_dhcp();
    ctl.release_dhcp();
    worker.stop();
    ctl.stop();
}
