//! A STUN Binding server (RFC 8489 §6.3, RFC 5780 §6): answers Binding
//! requests with the source address it observed, so any node can be an
//! observer for its peers' reflexive address discovery.
//!
//! RFC 3489 clients (no magic cookie, §12) get `MAPPED-ADDRESS`,
//! `SOURCE-ADDRESS` and `CHANGED-ADDRESS`; RFC 8489 clients get
//! `XOR-MAPPED-ADDRESS`, `RESPONSE-ORIGIN`, `OTHER-ADDRESS` (when an
//! alternate socket exists) and `FINGERPRINT`. `CHANGE-REQUEST` with the
//! port flag is honoured when the server has an alternate socket (a second
//! port on the same address); a change of IP address is refused with 420.

use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::wire::stun::{self, Attribute, Class, Method, Repr};
use crate::{Socket, Transmit};

/// Server configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Address of the primary socket, as clients reach it.
    pub primary: SocketAddr,
    /// Address of the alternate socket (another port, same IP), if any.
    pub alternate: Option<SocketAddr>,
    /// Value of the `SOFTWARE` attribute, if any (RFC 8489 §14.14).
    pub software: Option<String>,
}

/// Counters kept by the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerMetrics {
    /// Binding requests answered with a success response.
    pub answered: u64,
    /// Requests answered with an error response.
    pub errors: u64,
    /// Inputs dropped as malformed or not requests.
    pub dropped: u64,
}

/// The STUN Binding server. Feed it every datagram that [`stun::is_stun`]
/// or a classic header matches; drain [`Server::poll_transmit`].
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    transmits: VecDeque<Transmit>,
    metrics: ServerMetrics,
}

impl Server {
    /// A server with `config`.
    pub fn new(config: ServerConfig) -> Server {
        Server {
            config,
            transmits: VecDeque::new(),
            metrics: ServerMetrics::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Counters so far.
    pub fn metrics(&self) -> ServerMetrics {
        self.metrics
    }

    /// Handle a datagram received on `socket` from `from`. Returns whether
    /// it was a STUN request this server answered (with success or error).
    pub fn handle_input(&mut self, socket: Socket, from: SocketAddr, bytes: &[u8]) -> bool {
        let request = match Repr::parse_bytes(bytes) {
            Ok(r) if r.class == Class::Request => r,
            _ => {
                self.metrics.dropped += 1;
                return false;
            }
        };
        let mut response = Repr {
            class: Class::Success,
            method: request.method,
            transaction_id: request.transaction_id,
            magic_cookie: request.magic_cookie,
            attributes: Vec::new(),
            message_integrity: false,
            fingerprint: request.is_modern(),
        };
        let mut reply_from = socket;
        let unknown: Vec<u16> = request
            .attributes
            .iter()
            .filter_map(|a| match a {
                Attribute::Unknown { kind, .. } if Attribute::is_comprehension_required(*kind) => {
                    Some(*kind)
                }
                _ => None,
            })
            .collect();
        let change = request.attributes.iter().find_map(|a| match a {
            Attribute::ChangeRequest {
                change_ip,
                change_port,
            } => Some((*change_ip, *change_port)),
            _ => None,
        });
        if request.method != Method::BINDING {
            response.class = Class::Error;
            response.attributes.push(Attribute::ErrorCode {
                code: 400,
                reason: "Bad Request".into(),
            });
        } else if !unknown.is_empty() {
            response.class = Class::Error;
            response.attributes.push(Attribute::ErrorCode {
                code: 420,
                reason: "Unknown Attribute".into(),
            });
            response
                .attributes
                .push(unknown_attributes(unknown, request.is_modern()));
        } else if let Some((change_ip, change_port)) = change.filter(|(ip, port)| *ip || *port) {
            if change_ip || self.config.alternate.is_none() {
                response.class = Class::Error;
                response.attributes.push(Attribute::ErrorCode {
                    code: 420,
                    reason: "Unknown Attribute".into(),
                });
                response.attributes.push(unknown_attributes(
                    vec![stun::kind::CHANGE_REQUEST],
                    request.is_modern(),
                ));
            } else if change_port {
                reply_from = match socket {
                    Socket::Alternate => Socket::Primary,
                    _ => Socket::Alternate,
                };
            }
        }
        if response.class == Class::Success {
            let origin = match reply_from {
                Socket::Primary => Some(self.config.primary),
                Socket::Alternate => self.config.alternate,
                Socket::Extra(_) => None,
            };
            if request.is_modern() {
                response.attributes.push(Attribute::XorMappedAddress(from));
                if let Some(origin) = origin {
                    response.attributes.push(Attribute::ResponseOrigin(origin));
                }
                if let Some(other) = self.config.alternate {
                    response.attributes.push(Attribute::OtherAddress(other));
                }
            } else {
                response.attributes.push(Attribute::MappedAddress(from));
                if let Some(origin) = origin {
                    response.attributes.push(Attribute::SourceAddress(origin));
                }
                let changed = self.config.alternate.unwrap_or(self.config.primary);
                response.attributes.push(Attribute::ChangedAddress(changed));
            }
            self.metrics.answered += 1;
        } else {
            self.metrics.errors += 1;
        }
        if let Some(software) = &self.config.software {
            response
                .attributes
                .push(Attribute::Software(software.clone()));
        }
        match response.to_bytes(&[]) {
            Ok(payload) => {
                self.transmits.push_back(Transmit {
                    source: reply_from,
                    destination: from,
                    payload,
                    ttl: None,
                });
                true
            }
            Err(_) => {
                debug_assert!(false, "server built an unencodable response");
                false
            }
        }
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }
}

/// UNKNOWN-ATTRIBUTES; RFC 3489 §11.2.4 pads an odd list by repeating an
/// entry, RFC 8489 §14.13 with zero bytes.
fn unknown_attributes(mut kinds: Vec<u16>, modern: bool) -> Attribute {
    if !modern && !kinds.len().is_multiple_of(2) {
        kinds.push(kinds[0]);
    }
    Attribute::UnknownAttributes(kinds)
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::stun::TransactionId;

    fn server(alternate: bool) -> Server {
        Server::new(ServerConfig {
            primary: "192.0.2.1:3478".parse().unwrap(),
            alternate: alternate.then(|| "192.0.2.1:3479".parse().unwrap()),
            software: Some("wow".into()),
        })
    }

    const CLIENT: &str = "198.51.100.7:40000";

    #[test]
    fn answers_binding_with_xor_mapped_address() {
        let mut s = server(true);
        let req = Repr::binding_request(TransactionId([7; 12]))
            .to_bytes(&[])
            .unwrap();
        assert!(s.handle_input(Socket::Primary, CLIENT.parse().unwrap(), &req));
        let t = s.poll_transmit().unwrap();
        assert_eq!(t.destination, CLIENT.parse().unwrap());
        assert_eq!(t.source, Socket::Primary);
        let resp = Repr::parse_bytes(&t.payload).unwrap();
        assert_eq!(resp.class, Class::Success);
        assert_eq!(resp.transaction_id, TransactionId([7; 12]));
        assert!(resp.fingerprint);
        assert_eq!(resp.mapped_address(), Some(CLIENT.parse().unwrap()));
        assert!(
            resp.attributes
                .contains(&Attribute::OtherAddress("192.0.2.1:3479".parse().unwrap()))
        );
        assert!(s.poll_transmit().is_none());
        assert_eq!(s.metrics().answered, 1);
    }

    #[test]
    fn classic_request_gets_mapped_address() {
        let mut s = server(false);
        let mut req = Repr::binding_request(TransactionId([1; 12]));
        req.magic_cookie = 0x0102_0304;
        assert!(s.handle_input(
            Socket::Primary,
            CLIENT.parse().unwrap(),
            &req.to_bytes(&[]).unwrap()
        ));
        let resp = Repr::parse_bytes(&s.poll_transmit().unwrap().payload).unwrap();
        assert_eq!(resp.magic_cookie, 0x0102_0304);
        assert!(!resp.fingerprint);
        assert_eq!(
            resp.attribute(stun::kind::MAPPED_ADDRESS),
            Some(&Attribute::MappedAddress(CLIENT.parse().unwrap()))
        );
        assert!(resp.attribute(stun::kind::XOR_MAPPED_ADDRESS).is_none());
    }

    #[test]
    fn change_port_uses_alternate_socket_or_is_refused() {
        let mut req = Repr::binding_request(TransactionId([2; 12]));
        req.attributes.push(Attribute::ChangeRequest {
            change_ip: false,
            change_port: true,
        });
        let bytes = req.to_bytes(&[]).unwrap();
        let mut s = server(true);
        s.handle_input(Socket::Primary, CLIENT.parse().unwrap(), &bytes);
        let t = s.poll_transmit().unwrap();
        assert_eq!(t.source, Socket::Alternate);
        let resp = Repr::parse_bytes(&t.payload).unwrap();
        assert_eq!(
            resp.attribute(stun::kind::RESPONSE_ORIGIN),
            Some(&Attribute::ResponseOrigin(
                "192.0.2.1:3479".parse().unwrap()
            ))
        );
        let mut s = server(false);
        s.handle_input(Socket::Primary, CLIENT.parse().unwrap(), &bytes);
        let resp = Repr::parse_bytes(&s.poll_transmit().unwrap().payload).unwrap();
        assert_eq!(resp.class, Class::Error);
        assert!(matches!(
            resp.attribute(stun::kind::ERROR_CODE),
            Some(Attribute::ErrorCode { code: 420, .. })
        ));
    }

    #[test]
    fn unknown_required_attribute_is_420_and_junk_is_dropped() {
        let mut s = server(false);
        let mut req = Repr::binding_request(TransactionId([3; 12]));
        req.attributes.push(Attribute::Unknown {
            kind: 0x7777,
            value: vec![1],
        });
        s.handle_input(
            Socket::Primary,
            CLIENT.parse().unwrap(),
            &req.to_bytes(&[]).unwrap(),
        );
        let resp = Repr::parse_bytes(&s.poll_transmit().unwrap().payload).unwrap();
        assert_eq!(
            resp.attribute(stun::kind::UNKNOWN_ATTRIBUTES),
            Some(&Attribute::UnknownAttributes(vec![0x7777]))
        );
        assert!(!s.handle_input(Socket::Primary, CLIENT.parse().unwrap(), b"junk"));
        // A response is never answered.
        let mut resp = Repr::binding_request(TransactionId([4; 12]));
        resp.class = Class::Success;
        assert!(!s.handle_input(
            Socket::Primary,
            CLIENT.parse().unwrap(),
            &resp.to_bytes(&[]).unwrap()
        ));
        assert!(s.poll_transmit().is_none());
        assert_eq!(s.metrics().dropped, 2);
    }
}
