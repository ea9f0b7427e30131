//! Port mapping at start-up: the node asks its default gateway (read from
//! `/proc/net/route`) for a public mapping of its UDP port with PCP or
//! NAT-PMP ([`nat_traversal::portmap`]), advertises the mapped endpoint,
//! and keeps the mapping renewed in a background task. A router that
//! answers neither costs at most [`WAIT`] of start-up, in parallel with the
//! STUN discovery.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use nat_traversal::portmap::wire::SERVER_PORT;
use nat_traversal::portmap::{PortMapConfig, PortMapEvent, PortMapper};
use tokio::net::UdpSocket;

/// How long start-up waits for a mapping.
pub const WAIT: Duration = Duration::from_millis(1500);

/// The IPv4 default gateway in the text of `/proc/net/route`: the first
/// up route (flag 0x1) with destination and mask 0 and a gateway (0x2).
pub fn default_gateway_in(route_table: &str) -> Option<Ipv4Addr> {
    route_table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let hex = |i: usize| f.get(i).and_then(|s| u32::from_str_radix(s, 16).ok());
        let flags = hex(3)?;
        if hex(1)? != 0 || hex(7)? != 0 || flags & 0x3 != 0x3 {
            return None;
        }
        // The kernel prints the network-order address as a host-order
        // number: its bytes in memory are the address.
        Some(Ipv4Addr::from(hex(2)?.to_ne_bytes()))
    })
}

/// Ask the default gateway to map UDP `port`. Returns the public endpoint
/// if the gateway granted one within [`WAIT`]; the mapping is then renewed
/// by a background task for as long as the node runs (it lapses by itself
/// after the node exits).
pub async fn map_port(port: u16) -> Option<SocketAddr> {
    let table = std::fs::read_to_string("/proc/net/route").ok()?;
    let gateway = default_gateway_in(&table)?;
    let socket = UdpSocket::bind("0.0.0.0:0").await.ok()?;
    socket.connect((gateway, SERVER_PORT)).await.ok()?;
    let client = socket.local_addr().ok()?.ip();
    let mut config = PortMapConfig::new(IpAddr::V4(gateway), client, port);
    config.pcp_max_transmits = 2;
    config.pmp_max_transmits = 2;
    let mut mapper = PortMapper::new(Instant::now(), config).ok()?;
    let deadline = Instant::now() + WAIT;
    let external = drive(&mut mapper, &socket, Some(deadline)).await?;
    tokio::spawn(async move {
        let event = drive(&mut mapper, &socket, None).await;
        tracing::warn!(?event, "port mapping ended");
    });
    Some(external)
}

/// Run `mapper` on `socket` until it maps (returns the endpoint), stops
/// (`None`), or `deadline` passes (`None`). Without a deadline it runs
/// until the mapping is lost, logging changes of the endpoint.
async fn drive(
    mapper: &mut PortMapper,
    socket: &UdpSocket,
    deadline: Option<Instant>,
) -> Option<SocketAddr> {
    let mut buf = [0u8; 1100];
    loop {
        while let Some(t) = mapper.poll_transmit() {
            let _ = socket.send_to(&t.payload, t.destination).await;
        }
        while let Some(event) = mapper.poll_event() {
            match event {
                PortMapEvent::Mapped { external, .. } if deadline.is_some() => {
                    return Some(external);
                }
                PortMapEvent::Mapped { external, .. } => {
                    tracing::warn!(%external, "the gateway moved our port mapping (not re-advertised)");
                }
                _ => return None,
            }
        }
        let now = Instant::now();
        let until = match (mapper.poll_timeout(), deadline) {
            (Some(t), Some(d)) => t.min(d),
            (t, d) => t.or(d)?,
        };
        if deadline.is_some_and(|d| now >= d) {
            return None;
        }
        let wait = until.saturating_duration_since(now);
        match tokio::time::timeout(wait, socket.recv_from(&mut buf)).await {
            Ok(Ok((n, from))) => {
                mapper.handle_datagram(Instant::now(), from, &buf[..n]);
            }
            // Nothing listens on the gateway's port (ICMP port unreachable):
            // no need to wait out the schedule at start-up.
            Ok(Err(e))
                if deadline.is_some() && e.kind() == std::io::ErrorKind::ConnectionRefused =>
            {
                return None;
            }
            // Another ICMP error on the connected socket, or the deadline:
            // the mapper retransmits when due and ignores the call before.
            Ok(Err(_)) | Err(_) => mapper.handle_timeout(Instant::now()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn reads_the_default_gateway() {
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
";
        assert_eq!(
            default_gateway_in(table),
            Some(Ipv4Addr::new(192, 168, 1, 1))
        );
        // No default route, or garbage: none.
        let lan_only = table.lines().take(2).collect::<Vec<_>>().join("\n");
        assert_eq!(default_gateway_in(&lan_only), None);
        assert_eq!(default_gateway_in("x\ny z"), None);
    }
}
