//! A node's [`Status`] in the Prometheus exposition format (OpenMetrics
//! text, encoded by the `prometheus-client` crate): what an operator scrapes
//! from every node of the network.
//!
//! ```
//! use std::time::{Duration, Instant, SystemTime};
//! use dhcp_virt::MemoryStore;
//! use overlay_core::Address;
//! use wow_core::core::Core;
//! use wow_core::{demo, status::Status};
//!
//! let now = Instant::now();
//! let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
//! let mut core: Core<MemoryStore> = Core::new_with_insecure_seed(
//!     now,
//!     wall,
//!     demo::settings(),
//!     demo::overlay_config("127.0.0.1:10001".parse()?),
//!     Address::from_key(b"metrics example"),
//!     MemoryStore::new(),
//!     1,
//! )?;
//! core.join(now, &[]); // a new ring: joined at once
//! let text = wow_core::metrics::encode(&Status::of(&core, now, wall, now))?;
//! assert!(text.contains("# TYPE wow_udp_datagrams counter"));
//! assert!(text.contains("wow_joined 1"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use prometheus_client::encoding::text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::status::Status;

/// Label sets: `(name, value)` pairs.
type Labels = Vec<(&'static str, &'static str)>;

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c: Counter = Counter::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g: Gauge = Gauge::default();
    g.set(value);
    registry.register(name, help, g);
}

fn counters(registry: &mut Registry, name: &str, help: &str, values: &[(Labels, u64)]) {
    let family = Family::<Labels, Counter>::default();
    for (labels, v) in values {
        family.get_or_create(labels).inc_by(*v);
    }
    registry.register(name, help, family);
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `status` as OpenMetrics text (counters get their `_total` suffix).
pub fn encode(status: &Status) -> Result<String, std::fmt::Error> {
    let mut r = Registry::with_prefix("wow");
    let c = &status.counters;
    gauge(
        &mut r,
        "joined",
        "1 once the node found its place on the ring",
        i64::from(status.joined),
    );
    gauge(
        &mut r,
        "uptime_seconds",
        "Seconds since the node started",
        count(status.uptime_secs as usize),
    );
    gauge(
        &mut r,
        "secure",
        "1 when private-prefix traffic needs a security association",
        i64::from(status.secure),
    );
    counters(
        &mut r,
        "tap_frames",
        "Frames on the TAP, by direction",
        &[
            (vec![("direction", "in")], c.tap_frames_in),
            (vec![("direction", "out")], c.tap_frames_out),
        ],
    );
    counters(
        &mut r,
        "udp_datagrams",
        "Underlay datagrams, by direction",
        &[
            (vec![("direction", "in")], c.udp_in),
            (vec![("direction", "out")], c.udp_out),
        ],
    );
    counters(
        &mut r,
        "udp_bytes",
        "Underlay bytes, by direction",
        &[
            (vec![("direction", "in")], c.udp_bytes_in),
            (vec![("direction", "out")], c.udp_bytes_out),
        ],
    );
    counter(
        &mut r,
        "packets_routed",
        "Guest packets sent into the overlay",
        c.packets_routed,
    );
    counter(
        &mut r,
        "packets_delivered",
        "Packets delivered to the guest",
        c.packets_delivered,
    );
    counters(
        &mut r,
        "sa_packets",
        "Packets sealed and opened by security associations",
        &[
            (vec![("op", "sealed")], c.sealed),
            (vec![("op", "opened")], c.opened),
        ],
    );
    counters(
        &mut r,
        "dropped_packets",
        "Packets dropped by the node, by reason",
        &[
            (vec![("reason", "no_route")], c.dropped_no_route),
            (vec![("reason", "policy")], c.dropped_policy),
            (vec![("reason", "malformed")], c.malformed),
            (vec![("reason", "quiet")], c.dropped_quiet),
        ],
    );
    counter(
        &mut r,
        "punched",
        "Direct paths found by hole punching",
        c.punched,
    );

    gauge(&mut r, "links", "Overlay links", count(status.links.len()));
    let roles = ["near", "shortcut", "leaf", "demand"].map(|role| {
        let n = status
            .links
            .iter()
            .filter(|l| l.roles.contains(&role))
            .count();
        (vec![("role", role)], n)
    });
    let family = Family::<Labels, Gauge>::default();
    for (labels, n) in &roles {
        family.get_or_create(labels).set(count(*n));
    }
    r.register(
        "links_by_role",
        "Overlay links by role (a link may have several)",
        family,
    );
    gauge(
        &mut r,
        "peers",
        "Virtual peers exchanged packets with",
        count(status.peers.len()),
    );
    gauge(
        &mut r,
        "security_associations",
        "Peers with a security association",
        count(status.security_associations),
    );
    gauge(
        &mut r,
        "dht_records",
        "DHT records held here",
        count(status.dht_records),
    );
    gauge(
        &mut r,
        "dhcp_leases",
        "DHCP leases held",
        count(status.leases),
    );
    if let Some(n) = status.central_leases {
        gauge(
            &mut r,
            "central_leases",
            "Addresses granted network-wide (central allocator only)",
            count(n),
        );
    }

    let o = &status.overlay;
    counter(
        &mut r,
        "overlay_maintenance_sent",
        "Overlay maintenance messages sent",
        o.maintenance_sent,
    );
    counter(
        &mut r,
        "overlay_forwarded",
        "Routed messages forwarded for others",
        o.forwarded,
    );
    counter(
        &mut r,
        "overlay_dropped",
        "Routed messages dropped",
        o.dropped,
    );
    counter(
        &mut r,
        "overlay_unmatched_replies",
        "Replies matching no request (forged or late)",
        o.unmatched_replies,
    );
    counter(
        &mut r,
        "dht_requests_refused",
        "DHT requests refused: too many waiting",
        o.dht_requests_refused,
    );
    counter(
        &mut r,
        "dht_requests_held",
        "DHT requests for a key not held that waited for the near set to settle",
        o.dht_requests_held,
    );
    counter(
        &mut r,
        "dht_misses_checked",
        "DHT gets for a key not held, though responsible, checked with the replicas first",
        o.dht_misses_checked,
    );
    counter(
        &mut r,
        "dht_held_gets_answered_early",
        "Waiting DHT gets answered with records before their time",
        o.dht_held_gets_answered_early,
    );
    counter(
        &mut r,
        "dht_fetches_sent",
        "DHT gets sent to near neighbours for waiting gets",
        o.dht_fetches_sent,
    );
    counter(
        &mut r,
        "overlay_requests_retried",
        "Echo and DHT requests sent again (no answer in time)",
        o.requests_retried,
    );
    let rejected: Vec<(Labels, u64)> = o
        .records_rejected
        .iter()
        .map(|(reason, n)| (vec![("reason", *reason)], *n))
        .collect();
    counters(
        &mut r,
        "dht_records_rejected",
        "DHT records refused, by reason",
        &rejected,
    );

    counter(
        &mut r,
        "dns_queries",
        "DNS queries received",
        status.dns_queries,
    );
    counter(
        &mut r,
        "dns_forwards",
        "DNS queries sent upstream (split DNS)",
        status.dns_forwards,
    );
    counter(
        &mut r,
        "dns_forward_cache_hits",
        "DNS queries answered from the forward cache",
        status.dns_forward_cache_hits,
    );
    counter(
        &mut r,
        "dns_forward_rejected",
        "Upstream DNS replies dropped",
        status.dns_forward_rejected,
    );

    if let Some(sa) = &status.sa {
        counters(
            &mut r,
            "sa_handshakes",
            "Security-association key exchanges, by result",
            &[
                (vec![("result", "completed")], sa.handshakes_completed),
                (vec![("result", "failed")], sa.handshakes_failed),
                (vec![("result", "rate_limited")], sa.handshakes_rate_limited),
            ],
        );
        let dropped: Vec<(Labels, u64)> = sa
            .dropped
            .iter()
            .map(|(reason, n)| (vec![("reason", *reason)], *n))
            .collect();
        counters(
            &mut r,
            "sa_dropped",
            "Packets the security associations dropped, by reason",
            &dropped,
        );
    }
    if let Some(fw) = &status.firewall {
        let f = &fw.counters;
        let by = |direction, verdict| vec![("direction", direction), ("verdict", verdict)];
        counters(
            &mut r,
            "firewall_packets",
            "Packets the firewall decided, by direction and verdict",
            &[
                (by("in", "rule"), f.in_rule),
                (by("in", "tracked"), f.in_tracked),
                (by("in", "dropped"), f.in_dropped),
                (by("out", "rule"), f.out_rule),
                (by("out", "tracked"), f.out_tracked),
                (by("out", "dropped"), f.out_dropped),
            ],
        );
        counter(
            &mut r,
            "firewall_malformed",
            "Packets the firewall dropped as malformed",
            f.malformed,
        );
        counter(
            &mut r,
            "firewall_flows_evicted",
            "Flows evicted from a full table",
            f.evicted,
        );
        gauge(&mut r, "firewall_flows", "Flows tracked", count(fw.flows));
        gauge(
            &mut r,
            "firewall_rules",
            "Firewall rules, both directions",
            count(fw.inbound_rules + fw.outbound_rules),
        );
    }
    if let Some(crl) = &status.crl {
        gauge(
            &mut r,
            "crl_number",
            "Number of the CRL held",
            i64::try_from(crl.number).unwrap_or(i64::MAX),
        );
        gauge(
            &mut r,
            "crl_stale",
            "1 when no current CRL: new associations refused",
            i64::from(crl.stale),
        );
    }
    if let Some(left) = status.certificate_expires_in_secs {
        gauge(
            &mut r,
            "certificate_expires_in_seconds",
            "Seconds until the node's certificate expires",
            left,
        );
    }
    let mut out = String::new();
    text::encode(&mut out, &r)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Core;
    use dhcp_virt::MemoryStore;
    use std::time::{Duration, Instant, SystemTime};

    fn status() -> Status {
        let now = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let core: Core<MemoryStore> = Core::new_with_insecure_seed(
            now,
            wall,
            crate::demo::settings(),
            crate::demo::overlay_config(std::net::SocketAddr::from(([127, 0, 0, 1], 10001))),
            overlay_core::Address::from_key(b"metrics"),
            MemoryStore::new(),
            1,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        Status::of(&core, now, wall, now)
    }

    /// Each figure lands in its metric, with its labels; families without
    /// a source (no SA, no CRL) are left out rather than shown as zero.
    #[test]
    fn figures_land_in_their_metrics() {
        let mut s = status();
        s.counters.udp_in = 5;
        s.counters.dropped_policy = 3;
        s.overlay.records_rejected[0].1 = 7;
        s.leases = 1;
        let text = encode(&s).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !text.contains("wow_central_leases"),
            "not the allocator: {text}"
        );
        s.central_leases = Some(4);
        let text = encode(&s).unwrap_or_else(|e| panic!("{e}"));
        assert!(text.lines().any(|l| l == "wow_central_leases 4"), "{text}");
        for line in [
            "wow_udp_datagrams_total{direction=\"in\"} 5",
            "wow_dropped_packets_total{reason=\"policy\"} 3",
            "wow_dht_records_rejected_total{reason=\"bad_signature\"} 7",
            "wow_dhcp_leases 1",
            "wow_joined 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert!(!text.contains("wow_sa_handshakes"), "{text}");
        assert!(
            !text.contains("wow_firewall"),
            "no rules, no firewall family: {text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
