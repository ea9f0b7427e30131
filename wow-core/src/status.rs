//! A snapshot of a [`Core`] for operators: what `wow-node status` shows,
//! as human text ([`Status::to_text`]) and, through serde, as JSON.

use std::time::{Duration, Instant, SystemTime};

use dhcp_virt::LeaseStore;
use overlay_core::Roles;
use serde::Serialize;

use crate::core::{Core, Counters};

/// The guest as the node sees it.
#[derive(Debug, Clone, Serialize)]
pub struct GuestStatus {
    /// Leased address.
    pub address: Option<String>,
    /// Registered name.
    pub name: Option<String>,
    /// MAC address.
    pub mac: Option<String>,
    /// Its IPv6 /64, with IPv6 on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6_subnet: Option<String>,
    /// The addresses it took there (its duplicate address detection).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ipv6: Vec<String>,
}

/// The overlay node's counters ([`overlay_core::Stats`]).
#[derive(Debug, Clone, Default, Serialize)]
pub struct OverlayCounters {
    /// Maintenance messages sent.
    pub maintenance_sent: u64,
    /// Routed messages forwarded for others.
    pub forwarded: u64,
    /// Routed messages dropped.
    pub dropped: u64,
    /// DHT and echo replies that matched no request of ours (forged or
    /// late).
    pub unmatched_replies: u64,
    /// DHT requests refused: too many waiting.
    pub dht_requests_refused: u64,
    /// DHT gets and creates for a key this node lacked that waited for its
    /// near set to settle.
    pub dht_requests_held: u64,
    /// DHT gets for a key this node lacked, though responsible for it,
    /// checked with the near neighbours holding its replicas first.
    pub dht_misses_checked: u64,
    /// Waiting gets answered with records early (a replica had it, or it
    /// arrived while they waited).
    pub dht_held_gets_answered_early: u64,
    /// Gets sent to near neighbours on behalf of waiting gets.
    pub dht_fetches_sent: u64,
    /// Echo and DHT requests of this node sent again (no answer in time).
    pub requests_retried: u64,
    /// DHT records refused, by reason: bad signature, wrong key, policy,
    /// stale, full, quota.
    pub records_rejected: [(&'static str, u64); 6],
}

impl OverlayCounters {
    fn of(s: overlay_core::Stats) -> OverlayCounters {
        let r = s.records_rejected;
        OverlayCounters {
            maintenance_sent: s.maintenance_sent,
            forwarded: s.forwarded,
            dropped: s.dropped,
            unmatched_replies: s.unmatched_replies,
            dht_requests_refused: s.dht_requests_refused,
            dht_requests_held: s.dht_requests_held,
            dht_misses_checked: s.dht_misses_checked,
            dht_held_gets_answered_early: s.dht_held_gets_answered_early,
            dht_fetches_sent: s.dht_fetches_sent,
            requests_retried: s.requests_retried,
            records_rejected: [
                ("bad_signature", r.bad_signature),
                ("wrong_key", r.wrong_key),
                ("policy", r.policy),
                ("stale", r.stale),
                ("full", r.full),
                ("quota", r.quota),
            ],
        }
    }
}

/// The security associations' counters ([`ipsec_sa::Stats`]).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SaCounters {
    /// Key exchanges completed.
    pub handshakes_completed: u64,
    /// Key exchanges that failed.
    pub handshakes_failed: u64,
    /// Key exchanges refused by the rate limit (cookie replies sent instead).
    pub handshakes_rate_limited: u64,
    /// Packets dropped, by reason: unprotected (from a source that needs an
    /// SA), replayed, authentication failed, unknown SPI, malformed, queue
    /// full.
    pub dropped: [(&'static str, u64); 6],
}

impl SaCounters {
    fn of(s: ipsec_sa::Stats) -> SaCounters {
        SaCounters {
            handshakes_completed: s.handshakes_completed,
            handshakes_failed: s.handshakes_failed,
            handshakes_rate_limited: s.handshakes_rate_limited,
            dropped: [
                ("unprotected", s.unprotected_dropped),
                ("replayed", s.replayed),
                ("authentication_failed", s.authentication_failed),
                ("unknown_spi", s.unknown_spi),
                ("malformed", s.malformed),
                ("queue_full", s.queue_dropped),
            ],
        }
    }
}

/// One overlay link.
#[derive(Debug, Clone, Serialize)]
pub struct LinkStatus {
    /// The peer's ring address.
    pub peer: String,
    /// The UDP endpoint used.
    pub endpoint: String,
    /// Roles: near, shortcut, leaf, demand.
    pub roles: Vec<&'static str>,
    /// Seconds since it came up.
    pub age_secs: u64,
}

/// One virtual peer this node exchanged packets with.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    /// Its virtual IP.
    pub address: String,
    /// Its node's ring address, if known.
    pub node: Option<String>,
    /// `direct` (one overlay hop) or `relayed` (through other nodes).
    pub path: &'static str,
    /// Overlay hops of the last packet received.
    pub hops: u8,
    /// Packets received.
    pub packets_in: u64,
    /// Packets sent.
    pub packets_out: u64,
}

/// The CRL the node holds (certified nodes only).
#[derive(Debug, Clone, Serialize)]
pub struct CrlSummary {
    /// Its CRL number (0: none loaded).
    pub number: u64,
    /// Its nextUpdate, seconds since the Unix epoch.
    pub next_update_unix: Option<i64>,
    /// Seconds from now to nextUpdate (negative when past).
    pub next_update_in_secs: Option<i64>,
    /// No current CRL: new security associations are refused.
    pub stale: bool,
}

impl CrlSummary {
    fn of(s: crate::core::CrlStatus, wall: SystemTime) -> CrlSummary {
        let next = s.next_update.map(crate::enrol::unix_secs);
        CrlSummary {
            number: s.number,
            next_update_unix: next,
            next_update_in_secs: next.map(|t| t.saturating_sub(crate::enrol::unix_secs(wall))),
            stale: s.stale,
        }
    }

    fn to_text(&self) -> String {
        let next = match self.next_update_in_secs {
            Some(s) if s >= 0 => format!("next update in {} h", s / 3600),
            Some(s) => format!("next update {} h ago", -s / 3600),
            None => "no next update".into(),
        };
        let state = if self.stale {
            "STALE: new SAs refused"
        } else {
            "current"
        };
        if self.number == 0 {
            format!("crl       none ({state})\n")
        } else {
            format!("crl       #{} {next} ({state})\n", self.number)
        }
    }
}

/// The firewall, when it has rules.
#[derive(Debug, Clone, Serialize)]
pub struct FirewallStatus {
    /// Inbound rules.
    pub inbound_rules: usize,
    /// Outbound rules.
    pub outbound_rules: usize,
    /// Flows tracked.
    pub flows: usize,
    /// Decisions by direction and reason.
    pub counters: crate::firewall::FirewallCounters,
}

impl FirewallStatus {
    fn to_text(&self) -> String {
        let c = &self.counters;
        format!(
            "firewall  {} in/{} out rules, {} flows; in {} by rule, {} tracked, {} dropped; \
             out {} by rule, {} tracked, {} dropped; {} malformed, {} evicted\n",
            self.inbound_rules,
            self.outbound_rules,
            self.flows,
            c.in_rule,
            c.in_tracked,
            c.in_dropped,
            c.out_rule,
            c.out_tracked,
            c.out_dropped,
            c.malformed,
            c.evicted
        )
    }
}

/// Everything `wow-node status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// This node's ring address.
    pub overlay_address: String,
    /// Whether it found its place on the ring.
    pub joined: bool,
    /// The network-size estimate.
    pub size_estimate: f64,
    /// The guest.
    pub guest: GuestStatus,
    /// Whether private-prefix traffic is protected.
    pub secure: bool,
    /// No certificate yet (a CA configured): the private prefix is closed.
    pub closed_until_enrolled: bool,
    /// notAfter of the node's certificate, Unix seconds.
    pub certificate_expires: Option<i64>,
    /// Seconds until then (negative once expired).
    pub certificate_expires_in_secs: Option<i64>,
    /// Set when the certificate expires within three days.
    pub certificate_warning: Option<String>,
    /// Near neighbours on the ring.
    pub ring_neighbours: Vec<String>,
    /// Overlay links.
    pub links: Vec<LinkStatus>,
    /// Virtual peers.
    pub peers: Vec<PeerStatus>,
    /// DHT records held here.
    pub dht_records: usize,
    /// The overlay node's counters.
    pub overlay: OverlayCounters,
    /// The security associations' counters (none without a certificate).
    pub sa: Option<SaCounters>,
    /// DHCP leases this node holds for its guest side.
    pub leases: usize,
    /// Central allocation: the allocator's overlay address (this node's
    /// own when it is the allocator); `None` in DHT or local allocation.
    pub allocator: Option<String>,
    /// Central allocation, on the allocator: addresses granted network-wide.
    pub central_leases: Option<usize>,
    /// Peers with a security association.
    pub security_associations: usize,
    /// Traffic counters.
    pub counters: Counters,
    /// DNS queries answered.
    pub dns_queries: u64,
    /// DNS queries outside the zone sent upstream (split DNS).
    pub dns_forwards: u64,
    /// DNS queries outside the zone answered from the forward cache.
    pub dns_forward_cache_hits: u64,
    /// Upstream DNS replies dropped (wrong ID or question: forged or stale).
    pub dns_forward_rejected: u64,
    /// Key exchanges completed.
    pub sa_handshakes: u64,
    /// Packets that failed SA authentication or replay checks.
    pub sa_rejected: u64,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Our underlay endpoints as advertised to peers (reflexive and
    /// configured, then host candidates: our interfaces' addresses).
    pub endpoints: Vec<String>,
    /// NATs between us and the Internet, when measured (traceroute at
    /// start): the punch sessions' opening steps follow it.
    pub nat_depth: Option<u8>,
    /// The relayed address of our TURN allocation, if one is configured and
    /// granted.
    pub turn_relayed: Option<String>,
    /// Peer endpoints answered through the TURN relay.
    pub turn_peers: Vec<String>,
    /// The CRL held, when certified.
    pub crl: Option<CrlSummary>,
    /// The firewall, when it has rules.
    pub firewall: Option<FirewallStatus>,
    /// The self-update, when release keys are configured (set by the
    /// driver, see [`crate::update::UpdateStatus`]).
    pub update: Option<crate::update::UpdateStatus>,
}

fn roles(r: Roles) -> Vec<&'static str> {
    let mut v = Vec::new();
    for (flag, name) in [
        (Roles::NEAR, "near"),
        (Roles::SHORTCUT, "shortcut"),
        (Roles::LEAF, "leaf"),
        (Roles::DEMAND, "demand"),
    ] {
        if r.contains(flag) {
            v.push(name);
        }
    }
    v
}

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Status {
    /// A snapshot of `core` at `now` (wall time `wall`), for a node
    /// started at `started_at`.
    pub fn of<S: LeaseStore>(
        core: &Core<S>,
        now: Instant,
        wall: SystemTime,
        started_at: Instant,
    ) -> Status {
        let overlay = core.overlay();
        let links: Vec<LinkStatus> = overlay
            .connections()
            .iter()
            .map(|c| LinkStatus {
                peer: c.address.to_string(),
                endpoint: c.endpoint.to_string(),
                roles: roles(Roles(c.mine.0 | c.theirs.0)),
                age_secs: now.saturating_duration_since(c.established_at).as_secs(),
            })
            .collect();
        let ring_neighbours = overlay
            .connections()
            .iter()
            .filter(|c| c.mine.contains(Roles::NEAR))
            .map(|c| c.address.to_string())
            .collect();
        let peers = core
            .peers()
            .into_iter()
            .map(|(ip, node, hops, packets_in, packets_out)| PeerStatus {
                address: ip.to_string(),
                node: node.map(|a| a.to_string()),
                path: if hops <= 1 { "direct" } else { "relayed" },
                hops,
                packets_in,
                packets_out,
            })
            .collect();
        Status {
            overlay_address: overlay.address().to_string(),
            joined: overlay.is_joined(),
            size_estimate: overlay.size_estimate(),
            guest: GuestStatus {
                address: core.guest_addr().map(|a| a.to_string()),
                name: core
                    .guest_name()
                    .map(|n| format!("{n}.{}", core.settings().domain.trim_end_matches('.'))),
                mac: core.guest_mac().map(mac),
                ipv6_subnet: core.guest_ipv6_subnet().map(|n| n.to_string()),
                ipv6: core.guest_ipv6().iter().map(|a| a.to_string()).collect(),
            },
            secure: core.is_secure(),
            closed_until_enrolled: core.is_closed(),
            certificate_expires: None,
            certificate_expires_in_secs: None,
            certificate_warning: None,
            ring_neighbours,
            links,
            peers,
            dht_records: overlay.dht_store().len(),
            overlay: OverlayCounters::of(overlay.stats()),
            sa: core.sa_stats().map(SaCounters::of),
            leases: core.lease_count(),
            allocator: core.allocator().map(|a| match a {
                crate::core::Allocator::This => overlay.address().to_string(),
                crate::core::Allocator::Node(at) => at.to_string(),
            }),
            central_leases: core.central_leases(),
            security_associations: core.sa_count(),
            counters: core.counters(),
            dns_queries: core.dns_stats().queries,
            dns_forwards: core.dns_stats().forwards,
            dns_forward_cache_hits: core.dns_stats().forward_cache_hits,
            dns_forward_rejected: core.dns_stats().forward_rejected,
            sa_handshakes: core.sa_stats().map(|s| s.handshakes_completed).unwrap_or(0),
            sa_rejected: core
                .sa_stats()
                .map(|s| s.authentication_failed + s.replayed + s.unprotected_dropped)
                .unwrap_or(0),
            uptime_secs: now.saturating_duration_since(started_at).as_secs(),
            endpoints: core.endpoints().iter().map(ToString::to_string).collect(),
            nat_depth: core.nat_depth(),
            turn_relayed: core.turn_relayed().map(|a| a.to_string()),
            turn_peers: core.turn_peers().iter().map(ToString::to_string).collect(),
            crl: core.crl_status(wall).map(|c| CrlSummary::of(c, wall)),
            firewall: core.firewall().is_active().then(|| FirewallStatus {
                inbound_rules: core.firewall().rules().inbound.len(),
                outbound_rules: core.firewall().rules().outbound.len(),
                flows: core.firewall().flow_count(),
                counters: core.firewall().counters(),
            }),
            update: None,
        }
    }

    /// Fills in the certificate's expiry from its validity (Unix seconds)
    /// at `now`.
    pub fn set_certificate(&mut self, now: SystemTime, validity: Option<(i64, i64)>) {
        let lifetime = crate::enrol::Lifetime {
            validity,
            ..crate::enrol::Lifetime::default()
        };
        self.certificate_expires = validity.map(|(_, to)| to);
        let now_secs = crate::enrol::unix_secs(now);
        self.certificate_expires_in_secs = validity.map(|(_, to)| to - now_secs);
        self.certificate_warning = lifetime.warning(now);
    }

    /// The human-readable form.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let na = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
        s += &format!(
            "node      {} ({}, ~{:.0} nodes, up {} s)\n",
            self.overlay_address,
            if self.joined { "joined" } else { "joining" },
            self.size_estimate,
            self.uptime_secs
        );
        s += &format!(
            "guest     {} {} {}\n",
            na(&self.guest.address),
            na(&self.guest.name),
            na(&self.guest.mac)
        );
        if let Some(subnet) = &self.guest.ipv6_subnet {
            s += &format!("guest v6  {subnet} {}\n", self.guest.ipv6.join(" "));
        }
        s += &format!(
            "security  {} ({} SAs)\n",
            if self.secure {
                "protected (certificate loaded)"
            } else if self.closed_until_enrolled {
                "closed until enrolled (no certificate yet)"
            } else {
                "open (no certificate)"
            },
            self.security_associations
        );
        if let Some(allocator) = &self.allocator {
            s += &match self.central_leases {
                Some(n) => format!("allocator this node ({n} addresses granted network-wide)\n"),
                None => format!("allocator {allocator} (central allocation)\n"),
            };
        }
        if let Some(crl) = &self.crl {
            s += &crl.to_text();
        }
        if let Some(update) = &self.update {
            s += &update.to_text();
        }
        if let Some(firewall) = &self.firewall {
            s += &firewall.to_text();
        }
        if let (Some(at), Some(left)) = (self.certificate_expires, self.certificate_expires_in_secs)
        {
            let when = u64::try_from(at)
                .ok()
                .and_then(|s| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(s)))
                .map_or_else(|| at.to_string(), ipsec_ca::admin::format_time);
            s += &format!(
                "cert      expires {when} (in {} d {} h){}\n",
                left / 86_400,
                left % 86_400 / 3600,
                self.certificate_warning
                    .as_ref()
                    .map(|w| format!(" WARNING: {w}"))
                    .unwrap_or_default()
            );
        }
        s += &format!(
            "dht       {} records; dns {} queries ({} forwarded, {} from cache, {} upstream \
             replies dropped); sa {} handshakes, {} rejected\n",
            self.dht_records,
            self.dns_queries,
            self.dns_forwards,
            self.dns_forward_cache_hits,
            self.dns_forward_rejected,
            self.sa_handshakes,
            self.sa_rejected
        );
        s += &format!("ring      {}\n", self.ring_neighbours.join(" "));
        s += &format!(
            "underlay  {}{}{}\n",
            self.endpoints.join(" "),
            self.turn_relayed
                .as_ref()
                .map(|r| format!(" (TURN relayed {r})"))
                .unwrap_or_default(),
            self.nat_depth
                .map(|d| format!(" ({d} NAT{} deep)", if d == 1 { "" } else { "s" }))
                .unwrap_or_default()
        );
        s += "links:\n";
        for l in &self.links {
            s += &format!(
                "  {} {} {} {} s\n",
                l.peer,
                l.endpoint,
                l.roles.join(","),
                l.age_secs
            );
        }
        s += "peers:\n";
        for p in &self.peers {
            s += &format!(
                "  {} via {} {} ({} hops) in {} out {}\n",
                p.address,
                p.node.as_deref().unwrap_or("?"),
                p.path,
                p.hops,
                p.packets_in,
                p.packets_out
            );
        }
        let c = &self.counters;
        s += &format!(
            "traffic   tap in {} out {}, udp in {} ({} B) out {} ({} B), sealed {} opened {}, dropped: no route {} policy {} malformed {}, punched {}\n",
            c.tap_frames_in,
            c.tap_frames_out,
            c.udp_in,
            c.udp_bytes_in,
            c.udp_out,
            c.udp_bytes_out,
            c.sealed,
            c.opened,
            c.dropped_no_route,
            c.dropped_policy,
            c.malformed,
            c.punched
        );
        s
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::demo;
    use dhcp_virt::MemoryStore;
    use overlay_core::Address;

    #[test]
    fn a_fresh_core_reads_as_joining_and_open() {
        let now = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let core: Core<MemoryStore> = Core::new_with_insecure_seed(
            now,
            wall,
            demo::settings(),
            demo::overlay_config("127.0.0.1:10001".parse().unwrap()),
            Address::from_key(b"status"),
            MemoryStore::new(),
            1,
        )
        .unwrap();
        let mut status = Status::of(&core, now + Duration::from_secs(7), wall, now);
        assert_eq!(
            status.overlay_address,
            Address::from_key(b"status").to_string()
        );
        assert!(!status.joined);
        assert_eq!(status.uptime_secs, 7);
        let text = status.to_text();
        assert!(
            text.starts_with(&format!("node      {} (joining", status.overlay_address)),
            "{text}"
        );
        assert!(
            text.contains("security  open (no certificate) (0 SAs)"),
            "{text}"
        );
        assert!(!text.contains("cert "), "{text}");
        // A certificate valid for another 2 days and 3 hours.
        let secs = 1_800_000_000i64;
        status.set_certificate(wall, Some((secs - 100, secs + 2 * 86_400 + 3 * 3600)));
        assert_eq!(
            status.certificate_expires_in_secs,
            Some(2 * 86_400 + 3 * 3600)
        );
        assert!(
            status.to_text().contains("(in 2 d 3 h)"),
            "{}",
            status.to_text()
        );
    }
}
