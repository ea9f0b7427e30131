//! DHCP messages and their Ethernet/IPv4/UDP framing.
//!
//! Decoding and encoding of the DHCP payload is done by `dhcproto`; this
//! module converts once at the edge into two small owned reprs the server
//! matches on: [`ClientMessage`] (what a client sent) and [`Reply`] (what the
//! server answers). Both have `parse` and `emit`, and `parse(emit(x)) == x`.
//!
//! Untrusted bytes are pre-checked before `dhcproto` sees them: `hlen` must
//! fit `chaddr`, and options whose decoders assume a minimum length (client
//! FQDN, RFC 4702) are length-checked, so no input can panic a decoder.
//!
//! The frame half (feature `frames`: `parse_frame`, `emit_frame`) reads a
//! frame from a TAP and builds the framed reply with `etherparse`.

use std::net::Ipv4Addr;

use dhcproto::v4::{self, DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder, Name};
#[cfg(feature = "frames")]
use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use ipnet::Ipv4Net;

#[cfg(feature = "frames")]
use crate::error::FrameError;
use crate::error::MessageError;

/// UDP port of DHCP servers (RFC 2131 §4.1).
pub const SERVER_PORT: u16 = 67;
/// UDP port of DHCP clients (RFC 2131 §4.1).
pub const CLIENT_PORT: u16 = 68;
/// Offset of the options field (after the 4-byte magic cookie).
const OPTIONS_OFFSET: usize = 240;
/// Offset of the magic cookie.
const COOKIE_OFFSET: usize = 236;
/// The E bit of the client FQDN flags (RFC 4702 §2.1).
const FQDN_E: u8 = 0x04;
/// Ethernet broadcast address.
pub const BROADCAST_MAC: [u8; 6] = [0xff; 6];

/// A client hardware address (`htype`, `chaddr` of at most 16 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HardwareAddr {
    htype: u8,
    len: u8,
    bytes: [u8; 16],
}

impl HardwareAddr {
    /// An Ethernet (htype 1) address.
    pub const fn ethernet(mac: [u8; 6]) -> Self {
        let mut bytes = [0; 16];
        let mut i = 0;
        while i < 6 {
            bytes[i] = mac[i];
            i += 1;
        }
        HardwareAddr {
            htype: 1,
            len: 6,
            bytes,
        }
    }

    /// An address of any type; `None` when longer than 16 bytes.
    pub fn new(htype: u8, addr: &[u8]) -> Option<Self> {
        let mut bytes = [0; 16];
        bytes.get_mut(..addr.len())?.copy_from_slice(addr);
        Some(HardwareAddr {
            htype,
            len: u8::try_from(addr.len()).ok()?,
            bytes,
        })
    }

    /// The hardware type (1 is Ethernet).
    pub fn htype(&self) -> u8 {
        self.htype
    }

    /// The address bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len).min(16)]
    }

    /// The address as a MAC when it is a 6-byte Ethernet address.
    pub fn mac(&self) -> Option<[u8; 6]> {
        if self.htype != 1 || self.len != 6 {
            return None;
        }
        let mut mac = [0; 6];
        mac.copy_from_slice(&self.bytes[..6]);
        Some(mac)
    }
}

/// The DHCP message types a client sends (RFC 2131 §3.1, Table 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientMessageKind {
    /// DHCPDISCOVER.
    Discover,
    /// DHCPREQUEST.
    Request,
    /// DHCPDECLINE.
    Decline,
    /// DHCPRELEASE.
    Release,
    /// DHCPINFORM.
    Inform,
}

impl ClientMessageKind {
    fn message_type(self) -> MessageType {
        match self {
            ClientMessageKind::Discover => MessageType::Discover,
            ClientMessageKind::Request => MessageType::Request,
            ClientMessageKind::Decline => MessageType::Decline,
            ClientMessageKind::Release => MessageType::Release,
            ClientMessageKind::Inform => MessageType::Inform,
        }
    }
}

/// A client's fully qualified domain name (option 81, RFC 4702).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientFqdn {
    /// The flags octet (S, O, E, N bits). The name is always written and
    /// read in the canonical wire encoding (the E bit is set on both ways);
    /// the deprecated ASCII form is ignored.
    pub flags: u8,
    /// The name, as sent.
    pub name: Name,
}

/// A client message, as the server sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMessage {
    /// Message type (option 53).
    pub kind: ClientMessageKind,
    /// Transaction id.
    pub xid: u32,
    /// Seconds since the client began.
    pub secs: u16,
    /// The broadcast flag (RFC 2131 §4.1).
    pub broadcast: bool,
    /// Client hardware address.
    pub hardware_addr: HardwareAddr,
    /// `ciaddr`: the client's current address (RENEWING, REBINDING, RELEASE,
    /// INFORM).
    pub client_addr: Ipv4Addr,
    /// `giaddr`: the relay agent, or unspecified.
    pub relay_addr: Ipv4Addr,
    /// Relay hop count.
    pub hops: u8,
    /// Client identifier (option 61). `dhcproto` emits nothing for an
    /// empty value.
    pub client_id: Option<Vec<u8>>,
    /// Requested IP address (option 50).
    pub requested_addr: Option<Ipv4Addr>,
    /// Server identifier (option 54).
    pub server_id: Option<Ipv4Addr>,
    /// Parameter request list (option 55), as option codes.
    pub parameter_request_list: Option<Vec<u8>>,
    /// Requested lease time in seconds (option 51).
    pub lease_secs: Option<u32>,
    /// Maximum DHCP message size (option 57).
    pub max_message_size: Option<u16>,
    /// Host name (option 12).
    pub hostname: Option<String>,
    /// Client FQDN (option 81).
    pub fqdn: Option<ClientFqdn>,
}

impl ClientMessage {
    /// A message of `kind` from `hardware_addr` with no options but the type.
    pub fn new(kind: ClientMessageKind, xid: u32, hardware_addr: HardwareAddr) -> Self {
        ClientMessage {
            kind,
            xid,
            secs: 0,
            broadcast: false,
            hardware_addr,
            client_addr: Ipv4Addr::UNSPECIFIED,
            relay_addr: Ipv4Addr::UNSPECIFIED,
            hops: 0,
            client_id: None,
            requested_addr: None,
            server_id: None,
            parameter_request_list: None,
            lease_secs: None,
            max_message_size: None,
            hostname: None,
            fqdn: None,
        }
    }

    /// Parse a DHCP payload (the UDP payload sent to port 67).
    pub fn parse(bytes: &[u8]) -> Result<Self, MessageError> {
        precheck(bytes)?;
        let msg = Message::decode(&mut Decoder::new(bytes)).map_err(|_| MessageError::Options)?;
        let opts = msg.opts();
        let kind = match opts.msg_type() {
            None => return Err(MessageError::NoMessageType),
            Some(MessageType::Discover) => ClientMessageKind::Discover,
            Some(MessageType::Request) => ClientMessageKind::Request,
            Some(MessageType::Decline) => ClientMessageKind::Decline,
            Some(MessageType::Release) => ClientMessageKind::Release,
            Some(MessageType::Inform) => ClientMessageKind::Inform,
            Some(other) => {
                return Err(MessageError::UnexpectedType {
                    kind: u8::from(other),
                });
            }
        };
        let hardware_addr = HardwareAddr::new(u8::from(msg.htype()), msg.chaddr())
            .ok_or(MessageError::HardwareLength { hlen: msg.hlen() })?;
        let mut out = ClientMessage::new(kind, msg.xid(), hardware_addr);
        out.secs = msg.secs();
        out.broadcast = msg.flags().broadcast();
        out.client_addr = msg.ciaddr();
        out.relay_addr = msg.giaddr();
        out.hops = msg.hops();
        // Empty values are treated as absent: RFC 2132 gives each of these
        // a minimum length of 1, and `dhcproto` cannot emit them.
        for (_, opt) in opts.iter() {
            match opt {
                DhcpOption::ClientIdentifier(id) if !id.is_empty() => {
                    out.client_id = Some(id.clone())
                }
                DhcpOption::RequestedIpAddress(a) => out.requested_addr = Some(*a),
                DhcpOption::ServerIdentifier(a) => out.server_id = Some(*a),
                DhcpOption::ParameterRequestList(list) if !list.is_empty() => {
                    out.parameter_request_list = Some(list.iter().map(|c| u8::from(*c)).collect())
                }
                DhcpOption::AddressLeaseTime(s) => out.lease_secs = Some(*s),
                DhcpOption::MaxMessageSize(s) => out.max_message_size = Some(*s),
                DhcpOption::Hostname(h) if !h.is_empty() => out.hostname = Some(h.clone()),
                DhcpOption::ClientFQDN(f) => {
                    // The name was read in the canonical wire format
                    // (RFC 4702 §2.1, E bit), whatever the flag said.
                    out.fqdn = Some(ClientFqdn {
                        flags: u8::from(f.flags()) | FQDN_E,
                        name: f.domain().clone(),
                    })
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Encode as a DHCP payload.
    pub fn emit(&self) -> Vec<u8> {
        let mut msg = Message::default();
        msg.set_opcode(Opcode::BootRequest)
            .set_htype(HType::from(self.hardware_addr.htype()))
            .set_chaddr(self.hardware_addr.as_bytes())
            .set_xid(self.xid)
            .set_secs(self.secs)
            .set_hops(self.hops)
            .set_ciaddr(self.client_addr)
            .set_giaddr(self.relay_addr);
        if self.broadcast {
            msg.set_flags(Flags::default().set_broadcast());
        }
        let opts = msg.opts_mut();
        opts.insert(DhcpOption::MessageType(self.kind.message_type()));
        if let Some(id) = &self.client_id {
            opts.insert(DhcpOption::ClientIdentifier(id.clone()));
        }
        if let Some(a) = self.requested_addr {
            opts.insert(DhcpOption::RequestedIpAddress(a));
        }
        if let Some(a) = self.server_id {
            opts.insert(DhcpOption::ServerIdentifier(a));
        }
        if let Some(list) = &self.parameter_request_list {
            opts.insert(DhcpOption::ParameterRequestList(
                list.iter().map(|c| OptionCode::from(*c)).collect(),
            ));
        }
        if let Some(s) = self.lease_secs {
            opts.insert(DhcpOption::AddressLeaseTime(s));
        }
        if let Some(s) = self.max_message_size {
            opts.insert(DhcpOption::MaxMessageSize(s));
        }
        if let Some(h) = &self.hostname {
            opts.insert(DhcpOption::Hostname(h.clone()));
        }
        if let Some(f) = &self.fqdn {
            opts.insert(DhcpOption::ClientFQDN(v4::fqdn::ClientFQDN::new(
                v4::fqdn::FqdnFlags::new(f.flags | FQDN_E),
                f.name.clone(),
            )));
        }
        encode(&msg)
    }
}

/// The server's reply types (RFC 2131 §3.1, Table 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyKind {
    /// DHCPOFFER.
    Offer,
    /// DHCPACK.
    Ack,
    /// DHCPNAK.
    Nak,
}

/// Lease timers carried in a reply (options 51, 58, 59).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseTimes {
    /// Lease time in seconds.
    pub lease_secs: u32,
    /// Renewal time T1 in seconds.
    pub renewal_secs: u32,
    /// Rebinding time T2 in seconds.
    pub rebinding_secs: u32,
}

/// A server reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Message type.
    pub kind: ReplyKind,
    /// Transaction id (copied from the request).
    pub xid: u32,
    /// Broadcast flag (copied from the request).
    pub broadcast: bool,
    /// Client hardware address (copied from the request).
    pub hardware_addr: HardwareAddr,
    /// `ciaddr` (copied for INFORM's ACK, else unspecified).
    pub client_addr: Ipv4Addr,
    /// `yiaddr`: the address leased.
    pub your_addr: Ipv4Addr,
    /// `giaddr` (copied from the request).
    pub relay_addr: Ipv4Addr,
    /// Server identifier (option 54).
    pub server_id: Ipv4Addr,
    /// Client identifier echoed back (option 61, RFC 6842).
    pub client_id: Option<Vec<u8>>,
    /// Lease timers; absent in NAKs and in ACKs to INFORM.
    pub lease: Option<LeaseTimes>,
    /// Subnet mask (option 1).
    pub subnet_mask: Option<Ipv4Addr>,
    /// Broadcast address (option 28).
    pub broadcast_addr: Option<Ipv4Addr>,
    /// Routers (option 3).
    pub routers: Vec<Ipv4Addr>,
    /// DNS servers (option 6).
    pub dns_servers: Vec<Ipv4Addr>,
    /// Domain name (option 15).
    pub domain_name: Option<String>,
    /// Domain search list (option 119, RFC 3397).
    pub domain_search: Vec<Name>,
    /// Interface MTU (option 26).
    pub interface_mtu: Option<u16>,
    /// Classless static routes (option 121, RFC 3442).
    pub classless_routes: Vec<(Ipv4Net, Ipv4Addr)>,
    /// Human-readable text (option 56), used in NAKs.
    pub message: Option<String>,
    /// Client FQDN answer (option 81, RFC 4702 §4).
    pub fqdn: Option<ClientFqdn>,
}

impl Reply {
    /// An empty reply of `kind` to `request`, copying the fields RFC 2131
    /// Table 3 says to copy.
    pub fn to_request(kind: ReplyKind, request: &ClientMessage, server_id: Ipv4Addr) -> Self {
        Reply {
            kind,
            xid: request.xid,
            broadcast: request.broadcast,
            hardware_addr: request.hardware_addr,
            client_addr: Ipv4Addr::UNSPECIFIED,
            your_addr: Ipv4Addr::UNSPECIFIED,
            relay_addr: request.relay_addr,
            server_id,
            client_id: request.client_id.clone(),
            lease: None,
            subnet_mask: None,
            broadcast_addr: None,
            routers: Vec::new(),
            dns_servers: Vec::new(),
            domain_name: None,
            domain_search: Vec::new(),
            interface_mtu: None,
            classless_routes: Vec::new(),
            message: None,
            fqdn: None,
        }
    }

    /// Encode as a DHCP payload into `buf` (cleared first).
    pub fn emit_into(&self, buf: &mut Vec<u8>) {
        buf.clear();
        let mut msg = Message::default();
        msg.set_opcode(Opcode::BootReply)
            .set_htype(HType::from(self.hardware_addr.htype()))
            .set_chaddr(self.hardware_addr.as_bytes())
            .set_xid(self.xid)
            .set_ciaddr(self.client_addr)
            .set_yiaddr(self.your_addr)
            .set_giaddr(self.relay_addr);
        if self.broadcast {
            msg.set_flags(Flags::default().set_broadcast());
        }
        let opts = msg.opts_mut();
        opts.insert(DhcpOption::MessageType(match self.kind {
            ReplyKind::Offer => MessageType::Offer,
            ReplyKind::Ack => MessageType::Ack,
            ReplyKind::Nak => MessageType::Nak,
        }));
        opts.insert(DhcpOption::ServerIdentifier(self.server_id));
        if let Some(id) = &self.client_id {
            opts.insert(DhcpOption::ClientIdentifier(id.clone()));
        }
        if let Some(l) = self.lease {
            opts.insert(DhcpOption::AddressLeaseTime(l.lease_secs));
            opts.insert(DhcpOption::Renewal(l.renewal_secs));
            opts.insert(DhcpOption::Rebinding(l.rebinding_secs));
        }
        if let Some(m) = self.subnet_mask {
            opts.insert(DhcpOption::SubnetMask(m));
        }
        if let Some(b) = self.broadcast_addr {
            opts.insert(DhcpOption::BroadcastAddr(b));
        }
        if !self.routers.is_empty() {
            opts.insert(DhcpOption::Router(self.routers.clone()));
        }
        if !self.dns_servers.is_empty() {
            opts.insert(DhcpOption::DomainNameServer(self.dns_servers.clone()));
        }
        if let Some(d) = &self.domain_name {
            opts.insert(DhcpOption::DomainName(d.clone()));
        }
        if !self.domain_search.is_empty() {
            opts.insert(DhcpOption::DomainSearch(self.domain_search.clone()));
        }
        if let Some(m) = self.interface_mtu {
            opts.insert(DhcpOption::InterfaceMtu(m));
        }
        if !self.classless_routes.is_empty() {
            opts.insert(DhcpOption::ClasslessStaticRoute(
                self.classless_routes.clone(),
            ));
        }
        if let Some(m) = &self.message {
            opts.insert(DhcpOption::Message(m.clone()));
        }
        if let Some(f) = &self.fqdn {
            opts.insert(DhcpOption::ClientFQDN(v4::fqdn::ClientFQDN::new(
                v4::fqdn::FqdnFlags::new(f.flags | FQDN_E),
                f.name.clone(),
            )));
        }
        let mut e = Encoder::new(buf);
        // Encoding into a Vec only fails on values we never build (a string
        // longer than 255 bytes is split per RFC 3396, not refused).
        let res = msg.encode(&mut e);
        debug_assert!(res.is_ok(), "reply encoding failed: {res:?}");
        // BOOTP minimum of 300 bytes keeps old relays and clients happy
        // (RFC 1542 §2.1).
        if buf.len() < 300 {
            buf.resize(300, 0);
        }
    }

    /// Encode as a DHCP payload.
    pub fn emit(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(320);
        self.emit_into(&mut buf);
        buf
    }

    /// Parse a server reply (used by tests and simulated clients).
    pub fn parse(bytes: &[u8]) -> Result<Self, MessageError> {
        precheck_header(bytes, 2)?;
        precheck_options(bytes)?;
        let msg = Message::decode(&mut Decoder::new(bytes)).map_err(|_| MessageError::Options)?;
        let opts = msg.opts();
        let kind = match opts.msg_type() {
            None => return Err(MessageError::NoMessageType),
            Some(MessageType::Offer) => ReplyKind::Offer,
            Some(MessageType::Ack) => ReplyKind::Ack,
            Some(MessageType::Nak) => ReplyKind::Nak,
            Some(other) => {
                return Err(MessageError::UnexpectedType {
                    kind: u8::from(other),
                });
            }
        };
        let hardware_addr = HardwareAddr::new(u8::from(msg.htype()), msg.chaddr())
            .ok_or(MessageError::HardwareLength { hlen: msg.hlen() })?;
        let mut r = Reply {
            kind,
            xid: msg.xid(),
            broadcast: msg.flags().broadcast(),
            hardware_addr,
            client_addr: msg.ciaddr(),
            your_addr: msg.yiaddr(),
            relay_addr: msg.giaddr(),
            server_id: Ipv4Addr::UNSPECIFIED,
            client_id: None,
            lease: None,
            subnet_mask: None,
            broadcast_addr: None,
            routers: Vec::new(),
            dns_servers: Vec::new(),
            domain_name: None,
            domain_search: Vec::new(),
            interface_mtu: None,
            classless_routes: Vec::new(),
            message: None,
            fqdn: None,
        };
        let (mut lease, mut t1, mut t2) = (None, None, None);
        for (_, opt) in opts.iter() {
            match opt {
                DhcpOption::ServerIdentifier(a) => r.server_id = *a,
                DhcpOption::ClientIdentifier(id) => r.client_id = Some(id.clone()),
                DhcpOption::AddressLeaseTime(s) => lease = Some(*s),
                DhcpOption::Renewal(s) => t1 = Some(*s),
                DhcpOption::Rebinding(s) => t2 = Some(*s),
                DhcpOption::SubnetMask(m) => r.subnet_mask = Some(*m),
                DhcpOption::BroadcastAddr(b) => r.broadcast_addr = Some(*b),
                DhcpOption::Router(v) => r.routers = v.clone(),
                DhcpOption::DomainNameServer(v) => r.dns_servers = v.clone(),
                DhcpOption::DomainName(d) => r.domain_name = Some(d.clone()),
                DhcpOption::DomainSearch(v) => r.domain_search = v.clone(),
                DhcpOption::InterfaceMtu(m) => r.interface_mtu = Some(*m),
                DhcpOption::ClasslessStaticRoute(v) => r.classless_routes = v.clone(),
                DhcpOption::Message(m) => r.message = Some(m.clone()),
                DhcpOption::ClientFQDN(f) => {
                    r.fqdn = Some(ClientFqdn {
                        flags: u8::from(f.flags()) | FQDN_E,
                        name: f.domain().clone(),
                    })
                }
                _ => {}
            }
        }
        if let (Some(lease_secs), Some(renewal_secs), Some(rebinding_secs)) = (lease, t1, t2) {
            r.lease = Some(LeaseTimes {
                lease_secs,
                renewal_secs,
                rebinding_secs,
            });
        }
        Ok(r)
    }
}

fn encode(msg: &Message) -> Vec<u8> {
    let mut buf = Vec::with_capacity(320);
    let res = msg.encode(&mut Encoder::new(&mut buf));
    debug_assert!(res.is_ok(), "encoding failed: {res:?}");
    buf
}

/// Header checks on raw bytes: length, op, hlen, magic cookie.
fn precheck_header(bytes: &[u8], op: u8) -> Result<(), MessageError> {
    if bytes.len() < OPTIONS_OFFSET {
        return Err(MessageError::Truncated { len: bytes.len() });
    }
    if bytes[0] != op {
        return Err(MessageError::NotRequest { op: bytes[0] });
    }
    if bytes[2] > 16 {
        return Err(MessageError::HardwareLength { hlen: bytes[2] });
    }
    if bytes[COOKIE_OFFSET..OPTIONS_OFFSET] != v4::MAGIC {
        return Err(MessageError::MagicCookie);
    }
    Ok(())
}

fn precheck(bytes: &[u8]) -> Result<(), MessageError> {
    precheck_header(bytes, 1)?;
    precheck_options(bytes)
}

/// Walk the option TLVs: every length must stay inside the message, and the
/// options whose `dhcproto` decoders assume a size get it (RFC 3396
/// concatenation of repeated codes included).
fn precheck_options(bytes: &[u8]) -> Result<(), MessageError> {
    let mut rest = bytes.get(OPTIONS_OFFSET..).unwrap_or_default();
    // (code, total length) of the current run of one option code.
    let mut run: Option<(u8, usize)> = None;
    while let Some((&code, tail)) = rest.split_first() {
        if code == 0 {
            rest = tail;
            check_run(run)?;
            run = None;
            continue;
        }
        if code == 255 {
            break;
        }
        let Some((&len, tail)) = tail.split_first() else {
            return Err(MessageError::OptionOverrun { code });
        };
        let len = usize::from(len);
        if tail.len() < len {
            return Err(MessageError::OptionOverrun { code });
        }
        rest = &tail[len..];
        run = match run {
            Some((c, total)) if c == code => Some((c, total + len)),
            other => {
                check_run(other)?;
                Some((code, len))
            }
        };
    }
    check_run(run)?;
    Ok(())
}

fn check_run(run: Option<(u8, usize)>) -> Result<(), MessageError> {
    let Some((code, len)) = run else {
        return Ok(());
    };
    let ok = match code {
        // Client FQDN: flags, rcode1, rcode2, then the name.
        81 => len >= 3,
        // Rapid commit carries nothing.
        80 => len == 0,
        // Client network interface identifier: type, major, minor.
        94 => len == 3,
        // Bulk leasequery: status code then text; four-byte times.
        151 => len >= 1,
        152..=155 => len == 4,
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(MessageError::OptionLength { code, len })
    }
}

/// A DHCP datagram read from a TAP frame.
#[cfg(feature = "frames")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundFrame<'a> {
    /// Ethernet source address.
    pub source_mac: [u8; 6],
    /// IPv4 source address.
    pub source_addr: Ipv4Addr,
    /// IPv4 destination address.
    pub destination_addr: Ipv4Addr,
    /// The DHCP payload.
    pub payload: &'a [u8],
}

/// Read an Ethernet frame; `Ok` when it is IPv4/UDP to port 67.
#[cfg(feature = "frames")]
///
/// Returns [`FrameError::NotDhcp`] for any other well-formed traffic, so
/// the caller can hand the frame to the next protocol (ARP, the overlay).
pub fn parse_frame(frame: &[u8]) -> Result<InboundFrame<'_>, FrameError> {
    let sliced = SlicedPacket::from_ethernet(frame).map_err(|_| FrameError::Headers)?;
    let Some(etherparse::LinkSlice::Ethernet2(eth)) = &sliced.link else {
        return Err(FrameError::NotDhcp);
    };
    let Some(NetSlice::Ipv4(ip)) = &sliced.net else {
        return Err(FrameError::NotDhcp);
    };
    let Some(TransportSlice::Udp(udp)) = &sliced.transport else {
        return Err(FrameError::NotDhcp);
    };
    if udp.destination_port() != SERVER_PORT {
        return Err(FrameError::NotDhcp);
    }
    // A fragment would need reassembly; DHCP requests are far smaller.
    if ip.header().is_fragmenting_payload() {
        return Err(FrameError::NotDhcp);
    }
    Ok(InboundFrame {
        source_mac: eth.source(),
        source_addr: ip.header().source_addr(),
        destination_addr: ip.header().destination_addr(),
        payload: udp.payload(),
    })
}

/// Build an Ethernet/IPv4/UDP frame from port 67 to `dst_port`.
#[cfg(feature = "frames")]
#[allow(clippy::too_many_arguments)]
pub fn emit_frame(
    source_mac: [u8; 6],
    destination_mac: [u8; 6],
    source_addr: Ipv4Addr,
    destination_addr: Ipv4Addr,
    dst_port: u16,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    out.clear();
    let builder = PacketBuilder::ethernet2(source_mac, destination_mac)
        .ipv4(source_addr.octets(), destination_addr.octets(), 64)
        .udp(SERVER_PORT, dst_port);
    out.reserve(builder.size(payload.len()));
    // Writing into a Vec fails only when the payload overflows the IPv4
    // length, and replies are a few hundred bytes.
    let res = builder.write(out, payload);
    debug_assert!(res.is_ok(), "frame build failed: {res:?}");
}

#[cfg(test)]
mod test {
    use super::*;

    fn discover() -> ClientMessage {
        let mut m = ClientMessage::new(
            ClientMessageKind::Discover,
            0x1234_5678,
            HardwareAddr::ethernet([2, 0, 0, 0, 0, 1]),
        );
        m.client_id = Some(vec![1, 2, 0, 0, 0, 0, 1]);
        m.parameter_request_list = Some(vec![1, 3, 6, 26, 121]);
        m.hostname = Some("guest".into());
        m
    }

    #[test]
    fn discover_round_trips() {
        let m = discover();
        let bytes = m.emit();
        assert_eq!(ClientMessage::parse(&bytes).unwrap(), m);
    }

    #[test]
    fn rejects_long_hlen_without_panicking() {
        let mut bytes = discover().emit();
        bytes[2] = 17;
        assert_eq!(
            ClientMessage::parse(&bytes),
            Err(MessageError::HardwareLength { hlen: 17 })
        );
    }

    #[test]
    fn rejects_short_fqdn_option() {
        let mut bytes = discover().emit();
        let end = bytes.len() - 1;
        assert_eq!(bytes[end], 255);
        bytes.truncate(end);
        bytes.extend_from_slice(&[81, 1, 0, 255]);
        assert_eq!(
            ClientMessage::parse(&bytes),
            Err(MessageError::OptionLength { code: 81, len: 1 })
        );
    }

    #[test]
    fn rejects_overrunning_option() {
        let mut bytes = discover().emit();
        let end = bytes.len() - 1;
        bytes.truncate(end);
        bytes.extend_from_slice(&[12, 40, b'x']);
        assert_eq!(
            ClientMessage::parse(&bytes),
            Err(MessageError::OptionOverrun { code: 12 })
        );
    }

    #[test]
    fn rejects_replies_and_bootp() {
        let mut bytes = discover().emit();
        bytes[0] = 2;
        assert_eq!(
            ClientMessage::parse(&bytes),
            Err(MessageError::NotRequest { op: 2 })
        );
        let m = ClientMessage::new(
            ClientMessageKind::Discover,
            1,
            HardwareAddr::ethernet([2; 6]),
        );
        let mut bytes = m.emit();
        // Replace the message-type option (53, 1, 1) with a pad run.
        let pos = bytes[240..].iter().position(|&b| b == 53).unwrap() + 240;
        bytes[pos..pos + 3].fill(0);
        assert_eq!(
            ClientMessage::parse(&bytes),
            Err(MessageError::NoMessageType)
        );
    }

    #[cfg(feature = "frames")]
    #[test]
    fn frame_round_trip() {
        let payload = discover().emit();
        let mut frame = Vec::new();
        emit_frame(
            [2, 0, 0, 0, 0, 9],
            BROADCAST_MAC,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            SERVER_PORT,
            &payload,
            &mut frame,
        );
        let inbound = parse_frame(&frame).unwrap();
        assert_eq!(inbound.source_mac, [2, 0, 0, 0, 0, 9]);
        assert_eq!(inbound.destination_addr, Ipv4Addr::BROADCAST);
        assert_eq!(inbound.payload, &payload[..]);
        // To port 68 it is not for the server.
        emit_frame(
            [2; 6],
            BROADCAST_MAC,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            CLIENT_PORT,
            &payload,
            &mut frame,
        );
        assert_eq!(parse_frame(&frame), Err(FrameError::NotDhcp));
        assert_eq!(parse_frame(&frame[..20]), Err(FrameError::Headers));
    }
}
