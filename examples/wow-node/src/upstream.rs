//! Split DNS's I/O: the queries outside the zone that the core's DNS server
//! forwards ([`wow_core::core::Core::poll_dns_forward`]) go to the upstream
//! resolvers, each from a fresh socket (a random source port, which with
//! the server's random message ID is what an off-path forger must guess);
//! the replies go back to the core, which checks them
//! ([`wow_core::core::Core::handle_dns_forward_response`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use dns_virt::{Forward, RequestId, Transport};
use ipnet::Ipv4Net;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;

/// How long one upstream gets before the next is asked (the DNS server
/// answers SERVFAIL after its own 2 s).
pub const PER_SERVER: Duration = Duration::from_millis(900);

/// The upstream resolvers and the replies on their way back.
pub struct Upstream {
    servers: Vec<SocketAddr>,
    tx: mpsc::Sender<(RequestId, Vec<u8>)>,
    rx: mpsc::Receiver<(RequestId, Vec<u8>)>,
}

/// The `nameserver`s of a resolv.conf text, port 53, less those in
/// `virtual_net` (the node's own DNS server: forwarding there would loop)
/// and unspecified ones.
pub fn resolv_conf_servers(text: &str, virtual_net: Ipv4Net) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next())?
        })
        // A scoped IPv6 address (fe80::1%eth0) is not worth the trouble.
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .filter(|ip| match ip {
            IpAddr::V4(v4) => !virtual_net.contains(v4) && !v4.is_unspecified(),
            IpAddr::V6(v6) => !v6.is_unspecified(),
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

impl Upstream {
    /// Forwarding to `servers`; `None` if there are none.
    pub fn new(servers: Vec<SocketAddr>) -> Option<Upstream> {
        if servers.is_empty() {
            return None;
        }
        let (tx, rx) = mpsc::channel(256);
        Some(Upstream { servers, tx, rx })
    }

    /// The resolvers asked, in order.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// Sends `forward` upstream on a task of its own; its reply, if one
    /// comes, arrives through [`Upstream::recv`].
    pub fn send(&self, forward: Forward) {
        let servers = self.servers.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            for server in servers {
                let reply = tokio::time::timeout(
                    PER_SERVER,
                    ask(server, &forward.query, forward.transport),
                )
                .await;
                match reply {
                    Ok(Ok(reply)) => {
                        let _ = tx.send((forward.id, reply)).await;
                        return;
                    }
                    Ok(Err(e)) => tracing::debug!(%server, error = %e, "upstream DNS"),
                    Err(_) => tracing::debug!(%server, "upstream DNS: no answer in time"),
                }
            }
        });
    }

    /// The next reply. Never returns without an upstream.
    pub async fn recv(upstream: Option<&mut Upstream>) -> (RequestId, Vec<u8>) {
        match upstream {
            Some(u) => match u.rx.recv().await {
                Some(reply) => reply,
                None => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }
}

/// One exchange with `server`. Over UDP, datagrams with another message ID
/// than the query's are skipped (the core checks the rest).
async fn ask(server: SocketAddr, query: &[u8], transport: Transport) -> std::io::Result<Vec<u8>> {
    let id = query.get(..2).unwrap_or_default();
    match transport {
        Transport::Udp => {
            let any = match server {
                SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
                SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
            };
            let socket = UdpSocket::bind(any).await?;
            socket.connect(server).await?;
            socket.send(query).await?;
            let mut buf = vec![0; 65_535];
            loop {
                let n = socket.recv(&mut buf).await?;
                if buf.get(..2) == Some(id) {
                    buf.truncate(n);
                    return Ok(buf);
                }
            }
        }
        Transport::Tcp => {
            let mut stream = TcpStream::connect(server).await?;
            let mut framed = Vec::with_capacity(query.len() + 2);
            dns_virt::wire::frame_tcp(query, &mut framed)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            stream.write_all(&framed).await?;
            let len = usize::from(stream.read_u16().await?);
            let mut reply = vec![0; len];
            stream.read_exact(&mut reply).await?;
            Ok(reply)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers_less_the_virtual_network() {
        let text = "# generated\nsearch example\nnameserver 192.0.2.53\n\
                    nameserver 10.128.0.1\nnameserver   2001:db8::53 \nnameserver fe80::1%eth0\n\
                    nameserver 0.0.0.0\noptions edns0\n";
        let net: Ipv4Net = "10.128.0.0/16".parse().unwrap_or_default();
        assert_eq!(
            resolv_conf_servers(text, net),
            [
                "192.0.2.53:53"
                    .parse::<SocketAddr>()
                    .unwrap_or(SocketAddr::from(([0; 4], 0))),
                "[2001:db8::53]:53"
                    .parse()
                    .unwrap_or(SocketAddr::from(([0; 4], 0))),
            ]
        );
    }
}
