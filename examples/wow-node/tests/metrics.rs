//! `[metrics] listen` (root, a network namespace): the node serves its
//! figures over HTTP, and the Prometheus project's own Python client
//! (Debian's python3-prometheus-client, its strict OpenMetrics parser)
//! reads them: the families a dashboard needs are there with the values the
//! node's status shows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use wow_test_hosts::require;

#[path = "support/host.rs"]
mod host;

use host::Host;

/// Fetches `path` from the node's metrics listener in `h`'s namespace and
/// parses it with the OpenMetrics parser: one `name{labels} value` line per
/// sample, or `HTTP <code>` for an error.
const SCRAPE: &str = r#"
import sys, urllib.request, urllib.error
from prometheus_client.openmetrics.parser import text_string_to_metric_families
try:
    with urllib.request.urlopen("http://127.0.0.1:9770" + sys.argv[1], timeout=5) as r:
        ctype = r.headers["Content-Type"]
        text = r.read().decode()
except urllib.error.HTTPError as e:
    print("HTTP", e.code)
    sys.exit(0)
assert ctype.startswith("application/openmetrics-text"), ctype
for family in text_string_to_metric_families(text):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        print(f"{s.name}{{{labels}}} {s.value:g}")
"#;

fn scrape(h: &Host, path: &str) -> String {
    let out = h.ns.run("/usr/bin/python3", &["-c", SCRAPE, path]).unwrap();
    assert!(
        out.status.success(),
        "scrape failed: {}\nnode log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        h.log()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn value(samples: &str, name: &str) -> f64 {
    samples
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing:\n{samples}"))
}

#[test]
fn prometheus_reads_the_nodes_metrics() {
    if !require(
        "prometheus_reads_the_nodes_metrics",
        &["dhclient", "getent", "/usr/bin/python3"],
    ) {
        return;
    }
    let parser = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import prometheus_client.openmetrics.parser"])
        .status();
    if !parser.is_ok_and(|s| s.success()) {
        wow_test_hosts::skip(
            "prometheus_reads_the_nodes_metrics",
            "python3-prometheus-client is not installed",
        );
        return;
    }
    let mut h = Host::new("metrics", "alpha");
    h.ns.link_up("lo").unwrap();
    h.write_config(
        &[],
        "127.0.0.1:4000",
        &[],
        "[metrics]\nlisten = \"127.0.0.1:9770\"\n",
    );
    h.start(&[]);
    let addr = h.dhcp();
    assert_eq!(
        h.resolve("alpha.wow.internal").as_deref(),
        Some(addr.as_str())
    );

    let m = scrape(&h, "/metrics");
    assert_eq!(value(&m, "wow_joined{}"), 1.0);
    assert_eq!(value(&m, "wow_dhcp_leases{}"), 1.0);
    assert!(
        value(&m, "wow_tap_frames_total{direction=\"in\"}") >= 2.0,
        "{m}"
    );
    assert!(value(&m, "wow_dns_queries_total{}") >= 1.0, "{m}");
    for reason in ["no_route", "policy", "malformed"] {
        value(
            &m,
            &format!("wow_dropped_packets_total{{reason=\"{reason}\"}}"),
        );
    }
    // The same figures as the status's (ones that stay put meanwhile).
    let status = h.status_json();
    assert_eq!(
        value(&m, "wow_dhcp_leases{}"),
        status["leases"].as_f64().unwrap()
    );
    assert_eq!(
        value(&m, "wow_links{}"),
        status["links"].as_array().unwrap().len() as f64
    );
    assert_eq!(scrape(&h, "/other").trim(), "HTTP 404");

    // `status --network` of a node alone: itself, the whole ring.
    let out =
        h.ns.run_ok(
            host::BIN,
            &[
                "status",
                "--network",
                "--json",
                "--state-dir",
                h.state.path().to_str().unwrap(),
            ],
        )
        .unwrap();
    let walk: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(walk["complete"], true, "{walk}");
    assert_eq!(walk["nodes"][0]["name"], "alpha.wow.internal", "{walk}");
    assert_eq!(walk["nodes"][0]["address"], addr.as_str(), "{walk}");
    h.release_dhcp();
    h.stop();
}
