//! The authoritative zone: forward names and the reverse zone of the network.
//!
//! [`Zone::answer`] decides the response to one question (RFC 1034 §4.3.2,
//! negative answers as RFC 2308 §2–3: NXDOMAIN or NODATA with the SOA in the
//! authority section). [`Zone::respond`] is the whole path from query bytes
//! to response bytes for a purely local server; it takes `&self`, so many
//! threads may share one zone.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use hickory_proto::op::{OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use ipnet::{Ipv4Net, Ipv6Net};

use crate::error::{LoadError, QueryError, ServiceError, TableError};
use crate::fast::{FastQuery, write_a_answer};
use crate::rule::{AddressRule, parse_reverse_labels};
use crate::service::{Service, ServiceTable, is_service_label};
use crate::table::NameTable;
use crate::wire::{MIN_UDP_PAYLOAD, Request, Sections, Transport, emit_header_only, emit_response};

/// Configuration of the virtual zone.
#[derive(Clone, Debug)]
pub struct ZoneConfig {
    /// The forward zone (default `wow.internal.`).
    pub zone: Name,
    /// The virtual network; its `in-addr.arpa` zone is served too, and its
    /// addresses have rule names (default `10.128.0.0/9`).
    pub network: Ipv4Net,
    /// Relative name of the zone's name server (default `ns`); it answers A
    /// with [`ZoneConfig::ns_addr`] when that is set.
    pub ns_label: String,
    /// Address of the name server.
    pub ns_addr: Option<Ipv4Addr>,
    /// TTL of positive answers, seconds (default 60).
    pub ttl: u32,
    /// SOA MINIMUM, the TTL of negative answers (RFC 2308 §4; default 30).
    pub negative_ttl: u32,
    /// Largest UDP response we send, advertised in our OPT (default 1232,
    /// the DNS flag day 2020 value). Below 512 it truncates answers that
    /// would fit a classic 512-octet response (for tests).
    pub max_udp_payload: u16,
    /// Whether rule names ([`crate::rule`]) resolve (default true).
    pub rule_names: bool,
    /// The network's IPv6 prefix: its `ip6.arpa` zone is served (PTR for
    /// the addresses given to [`Zone::set_ipv6_addrs`]); none by default.
    pub ipv6_prefix: Option<Ipv6Net>,
}

/// Most IPv6 addresses kept per IPv4 host, and in all.
const IPV6_PER_HOST: usize = 8;
const IPV6_LIMIT: usize = 16_384;

impl Default for ZoneConfig {
    fn default() -> Self {
        ZoneConfig {
            zone: Name::from_ascii("wow.internal.").unwrap_or_else(|_| Name::root()),
            network: Ipv4Net::new(Ipv4Addr::new(10, 128, 0, 0), 9).unwrap_or_default(),
            ns_label: "ns".into(),
            ns_addr: None,
            ttl: 60,
            negative_ttl: 30,
            max_udp_payload: 1232,
            rule_names: true,
            ipv6_prefix: None,
        }
    }
}

/// A response decided by [`Zone::answer`], ready for [`emit_response`].
#[derive(Clone, Debug)]
pub struct Response {
    /// RCODE.
    pub rcode: ResponseCode,
    /// AA bit: set for everything inside our zones.
    pub authoritative: bool,
    /// Answer and authority records.
    pub sections: Sections,
}

/// What the zone says about a question.
#[derive(Clone, Debug)]
pub enum Answer {
    /// A complete response.
    Ready(Response),
    /// The name is in the forward zone but unknown here: NXDOMAIN for a local
    /// server; a decentralised server asks the store first.
    Missing,
    /// A reverse name of the network whose address has no registered name
    /// here: the rule name for a local server; a decentralised server asks
    /// the store first.
    MissingReverse(Ipv4Addr),
    /// The name is outside both zones: REFUSED, or forwarded upstream.
    Outside,
    /// A service name (`_service._proto[.<host>].<zone>`): answered by
    /// [`Zone::service_response`] from the registrations here, and a
    /// decentralised server's store.
    Service(ServiceQuery),
}

/// A question for a service: its name and, for `_service._proto.<host>`,
/// the host (both lowercase, the host relative to the zone).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceQuery {
    /// `_service._proto`.
    pub name: String,
    /// The registering host, or `None` for every registrant.
    pub host: Option<String>,
}

/// What [`Zone::respond`] did with a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A response is in the output buffer.
    Answered {
        /// Its RCODE.
        rcode: ResponseCode,
        /// Whether it was truncated (TC).
        truncated: bool,
    },
    /// Nothing to send (too short, or a response).
    Dropped(QueryError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Apex {
    Forward,
    Reverse,
    /// The `ip6.arpa` zone of the IPv6 prefix.
    Reverse6,
}

/// The authoritative data: configuration, rule and name table.
#[derive(Clone, Debug)]
pub struct Zone {
    config: ZoneConfig,
    rule: AddressRule,
    table: NameTable,
    services: ServiceTable,
    reverse: Name,
    ns_name: Name,
    hostmaster: Name,
    serial: u32,
    zone_labels: usize,
    reverse_labels: usize,
    /// The zone in lowercase text without the root dot (`wow.internal`).
    zone_text: String,
    /// The `ip6.arpa` apex of the IPv6 prefix and its label count.
    reverse6: Option<(Name, usize)>,
    /// IPv6 addresses of IPv4 hosts (AAAA), and the way back (PTR).
    ipv6_of: HashMap<Ipv4Addr, Vec<Ipv6Addr>>,
    ipv4_of: HashMap<Ipv6Addr, Ipv4Addr>,
}

impl Zone {
    /// A zone with an empty name table; `seed` keys the table's hash.
    pub fn new(config: ZoneConfig, seed: u64) -> Self {
        Self::with_table(config, NameTable::new(seed))
    }

    /// A zone serving `table`.
    pub fn with_table(mut config: ZoneConfig, table: NameTable) -> Self {
        config.zone.set_fqdn(true);
        config.network = config.network.trunc();
        let reverse = reverse_apex(config.network);
        let ns_name = Name::from_ascii(&config.ns_label)
            .and_then(|n| n.append_domain(&config.zone))
            .unwrap_or_else(|_| config.zone.clone());
        let hostmaster = Name::from_ascii("hostmaster")
            .and_then(|n| n.append_domain(&config.zone))
            .unwrap_or_else(|_| config.zone.clone());
        let reverse6 = config.ipv6_prefix.map(|p| {
            let apex = reverse6_apex(p);
            let labels = apex.iter().len();
            (apex, labels)
        });
        Zone {
            reverse6,
            ipv6_of: HashMap::new(),
            ipv4_of: HashMap::new(),
            rule: AddressRule::new(config.network),
            zone_labels: config.zone.iter().len(),
            zone_text: config
                .zone
                .to_ascii()
                .trim_end_matches('.')
                .to_ascii_lowercase(),
            reverse_labels: reverse.iter().len(),
            reverse,
            ns_name,
            hostmaster,
            serial: 1,
            table,
            services: ServiceTable::new(),
            config,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ZoneConfig {
        &self.config
    }

    /// The reverse zone's apex, such as `128.10.in-addr.arpa.`.
    pub fn reverse_zone(&self) -> &Name {
        &self.reverse
    }

    /// The address rule.
    pub fn rule(&self) -> &AddressRule {
        &self.rule
    }

    /// The registered names.
    pub fn table(&self) -> &NameTable {
        &self.table
    }

    /// SOA serial; it grows with every change to the names.
    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// Registers `name` (relative to the zone) → `addr`; see
    /// [`NameTable::insert`].
    pub fn insert(
        &mut self,
        name: &str,
        addr: Ipv4Addr,
        expires_at: Option<Instant>,
    ) -> Result<Option<Ipv4Addr>, TableError> {
        let prev = self.table.insert(name, addr, expires_at)?;
        self.serial = self.serial.wrapping_add(1);
        Ok(prev)
    }

    /// Removes `name`; returns its address.
    pub fn remove(&mut self, name: &str) -> Option<Ipv4Addr> {
        let prev = self.table.remove(name);
        if prev.is_some() {
            self.serial = self.serial.wrapping_add(1);
        }
        prev
    }

    /// The registered services.
    pub fn services(&self) -> &ServiceTable {
        &self.services
    }

    /// Registers `service` under `name` (`_service._proto`) for `host`
    /// (relative to the zone); see [`ServiceTable::insert`].
    pub fn insert_service(
        &mut self,
        name: &str,
        host: &str,
        service: Service,
        expires_at: Option<Instant>,
    ) -> Result<Option<Service>, ServiceError> {
        let prev = self.services.insert(name, host, service, expires_at)?;
        self.serial = self.serial.wrapping_add(1);
        Ok(prev)
    }

    /// Removes the registration of `name` by `host`.
    pub fn remove_service(&mut self, name: &str, host: &str) -> Option<Service> {
        let prev = self.services.remove(name, host);
        if prev.is_some() {
            self.serial = self.serial.wrapping_add(1);
        }
        prev
    }

    /// Removes names and services whose lifetime is over; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let n = self.table.expire(now) + self.services.expire(now);
        if n > 0 {
            self.serial = self.serial.wrapping_add(1);
        }
        n
    }

    /// Relative form of `name` if it is in the forward zone: strips a
    /// trailing `.zone.` (or `.zone`), and requires absolute names
    /// (`…​.`) to be inside the zone.
    pub fn relative<'a>(&self, name: &'a str) -> Option<&'a str> {
        let rel = self.relative_bytes(name.as_bytes())?;
        name.get(..rel.len())
    }

    fn relative_bytes<'a>(&self, name: &'a [u8]) -> Option<&'a [u8]> {
        let zone = self.zone_text.as_bytes();
        if let Some(abs) = name.strip_suffix(b".") {
            let rel = strip_suffix_ignore_case(abs, zone)?;
            return rel.strip_suffix(b".");
        }
        Some(
            strip_suffix_ignore_case(name, zone)
                .and_then(|r| r.strip_suffix(b"."))
                .unwrap_or(name),
        )
    }

    /// Loads `name address` lines (hosts-style `address name` too; blank
    /// lines and `#` comments skipped). Names are relative to the zone unless
    /// they end in the zone. Returns how many names were loaded.
    pub fn load_names(&mut self, text: &str) -> Result<usize, LoadError> {
        let bytes = text.as_bytes();
        let lines = bytes.iter().filter(|&&b| b == b'\n').count() + 1;
        // Stage everything first: a bad line leaves the zone unchanged.
        let mut staged = self.table.builder(lines);
        for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
            let line_no = i + 1;
            let line = match line.iter().position(|&b| b == b'#') {
                Some(p) => &line[..p],
                None => line,
            };
            let mut words = line
                .split(|b| b.is_ascii_whitespace())
                .filter(|w| !w.is_empty());
            let (Some(a), Some(b)) = (words.next(), words.next()) else {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Err(LoadError::Syntax { line: line_no });
            };
            if words.next().is_some() {
                return Err(LoadError::Syntax { line: line_no });
            }
            let (name, addr) = match (parse_ipv4(b), parse_ipv4(a)) {
                (Some(addr), _) => (a, addr),
                (None, Some(addr)) => (b, addr),
                _ => return Err(LoadError::Syntax { line: line_no }),
            };
            let rel = self
                .relative_bytes(name)
                .ok_or(LoadError::OutsideZone { line: line_no })?;
            staged.push(rel, addr).map_err(|source| LoadError::Table {
                line: line_no,
                source,
            })?;
        }
        let loaded = staged.len();
        let staged = staged.finish();
        if self.table.is_empty() {
            self.table = staged;
        } else {
            for (name, addr) in staged.iter() {
                // Validated when staged.
                let _ = self.table.insert(name, addr, None);
            }
        }
        self.serial = self.serial.wrapping_add(1);
        Ok(loaded)
    }

    fn apex_name(&self, apex: Apex) -> &Name {
        match apex {
            Apex::Forward => &self.config.zone,
            Apex::Reverse => &self.reverse,
            Apex::Reverse6 => self.reverse6.as_ref().map_or(&self.reverse, |(n, _)| n),
        }
    }

    /// Sets the IPv6 addresses of the host at `addr` (AAAA answers for its
    /// names, PTR for `ip6.arpa` names); at most 8 are kept, and the zone
    /// keeps at most 16,384 in all (past that new ones are dropped). The
    /// caller vouches that they are `addr`'s.
    pub fn set_ipv6_addrs(&mut self, addr: Ipv4Addr, v6: &[Ipv6Addr]) {
        if let Some(old) = self.ipv6_of.remove(&addr) {
            for a in old {
                self.ipv4_of.remove(&a);
            }
        }
        let mut kept = Vec::new();
        for a in v6.iter().rev().take(IPV6_PER_HOST) {
            if self.ipv4_of.len() >= IPV6_LIMIT {
                break;
            }
            if let Some(other) = self.ipv4_of.insert(*a, addr)
                && let Some(list) = self.ipv6_of.get_mut(&other)
            {
                // An address moves to its newest holder.
                list.retain(|x| x != a);
            }
            kept.push(*a);
        }
        if !kept.is_empty() {
            kept.reverse();
            self.ipv6_of.insert(addr, kept);
        }
    }

    /// The IPv6 addresses of the host at `addr`.
    pub fn ipv6_addrs(&self, addr: Ipv4Addr) -> &[Ipv6Addr] {
        self.ipv6_of.get(&addr).map_or(&[], Vec::as_slice)
    }

    fn soa(&self, apex: Apex, ttl: u32) -> Record {
        let soa = SOA::new(
            self.ns_name.clone(),
            self.hostmaster.clone(),
            self.serial,
            3600,
            600,
            86400,
            self.config.negative_ttl,
        );
        Record::from_rdata(self.apex_name(apex).clone(), ttl, RData::SOA(soa))
    }

    fn ns(&self, owner: &Name) -> Record {
        Record::from_rdata(
            owner.clone(),
            self.config.ttl,
            RData::NS(NS(self.ns_name.clone())),
        )
    }

    fn negative(&self, apex: Apex, rcode: ResponseCode) -> Response {
        // RFC 2308 §3: the SOA's TTL is the lesser of its TTL and MINIMUM.
        let ttl = self.config.negative_ttl.min(self.config.ttl);
        Response {
            rcode,
            authoritative: true,
            sections: Sections {
                authorities: vec![self.soa(apex, ttl)],
                ..Sections::default()
            },
        }
    }

    fn positive(&self, answers: Vec<Record>) -> Response {
        Response {
            rcode: ResponseCode::NoError,
            authoritative: true,
            sections: Sections {
                answers,
                ..Sections::default()
            },
        }
    }

    /// An NXDOMAIN response for a name of the forward zone.
    pub fn nxdomain(&self) -> Response {
        self.negative(Apex::Forward, ResponseCode::NXDomain)
    }

    /// Decides the response to `req`'s question.
    pub fn answer(&self, req: &Request) -> Answer {
        let q = &req.query;
        if let Some(e) = req.edns
            && e.version > 0
        {
            // RFC 6891 §6.1.3.
            return Answer::Ready(Response {
                rcode: ResponseCode::BADVERS,
                authoritative: false,
                sections: Sections::default(),
            });
        }
        let qname = q.name();
        let qtype = q.query_type();
        let labels = qname.iter();
        let n = labels.len();
        let in_zone = |apex: &Name, apex_labels: usize| {
            n >= apex_labels
                && apex
                    .iter()
                    .rev()
                    .zip(qname.iter().rev())
                    .all(|(a, b)| a.eq_ignore_ascii_case(b))
        };
        let apex = if in_zone(&self.config.zone, self.zone_labels) {
            Apex::Forward
        } else if in_zone(&self.reverse, self.reverse_labels) {
            Apex::Reverse
        } else if let Some((apex, labels)) = &self.reverse6
            && in_zone(apex, *labels)
        {
            Apex::Reverse6
        } else {
            return Answer::Outside;
        };
        if !matches!(q.query_class(), DNSClass::IN | DNSClass::ANY) {
            return Answer::Ready(Response {
                rcode: ResponseCode::Refused,
                authoritative: false,
                sections: Sections::default(),
            });
        }
        let apex_labels = match apex {
            Apex::Forward => self.zone_labels,
            Apex::Reverse => self.reverse_labels,
            Apex::Reverse6 => self.reverse6.as_ref().map_or(0, |(_, n)| *n),
        };
        let rel = qname.iter().take(n - apex_labels);
        if n == apex_labels {
            let mut answers = Vec::new();
            if matches!(qtype, RecordType::SOA | RecordType::ANY) {
                answers.push(self.soa(apex, self.config.ttl));
            }
            if matches!(qtype, RecordType::NS | RecordType::ANY) {
                answers.push(self.ns(qname));
            }
            return Answer::Ready(if answers.is_empty() {
                self.negative(apex, ResponseCode::NoError)
            } else {
                self.positive(answers)
            });
        }
        match apex {
            Apex::Forward => {
                // Labels on the stack: a name has at most 127 (RFC 1035 §3.1).
                let mut labels: [&[u8]; 128] = [&[]; 128];
                let mut count = 0;
                for (slot, label) in labels.iter_mut().zip(rel) {
                    *slot = label;
                    count += 1;
                }
                // A wire label may hold a dot; no name here has one inside
                // a label, and joined with dots it would pose as two labels
                // (to the service table and a decentralised store).
                if labels[..count].iter().any(|l| l.contains(&b'.')) {
                    return Answer::Ready(self.nxdomain());
                }
                if let [service, proto, host @ ..] = &labels[..count]
                    && is_service_label(service)
                    && is_service_label(proto)
                {
                    return Answer::Service(service_query(service, proto, host));
                }
                let addr = self.lookup_forward(labels[..count].iter().copied());
                let Some(addr) = addr else {
                    return Answer::Missing;
                };
                Answer::Ready(self.address_response(req, addr))
            }
            Apex::Reverse => self.answer_reverse(qname, qtype, rel, apex),
            Apex::Reverse6 => self.answer_reverse6(qname, qtype, apex_labels),
        }
    }

    /// The response for a forward name known to have `addr`: the A record,
    /// the AAAA records of its IPv6 addresses ([`Zone::set_ipv6_addrs`]),
    /// or NODATA.
    pub fn address_response(&self, req: &Request, addr: Ipv4Addr) -> Response {
        let q = &req.query;
        let qtype = q.query_type();
        let mut answers = Vec::new();
        if matches!(qtype, RecordType::A | RecordType::ANY) {
            answers.push(Record::from_rdata(
                q.name().clone(),
                self.config.ttl,
                RData::A(A(addr)),
            ));
        }
        if matches!(qtype, RecordType::AAAA | RecordType::ANY) {
            for a in self.ipv6_addrs(addr) {
                answers.push(Record::from_rdata(
                    q.name().clone(),
                    self.config.ttl,
                    RData::AAAA(AAAA(*a)),
                ));
            }
        }
        if answers.is_empty() {
            self.negative(Apex::Forward, ResponseCode::NoError)
        } else {
            self.positive(answers)
        }
    }

    /// A name of the `ip6.arpa` zone (RFC 3596 section 2.5): 32 nibbles
    /// name an address, PTR to the name of its IPv4 host; fewer name an
    /// empty non-terminal.
    fn answer_reverse6(&self, qname: &Name, qtype: RecordType, apex_labels: usize) -> Answer {
        let nxdomain = || Answer::Ready(self.negative(Apex::Reverse6, ResponseCode::NXDomain));
        let count = qname.iter().len().saturating_sub(apex_labels);
        let apex_nibbles = apex_labels.saturating_sub(2);
        if apex_nibbles + count > 32 {
            return nxdomain();
        }
        // The first label is the least significant nibble.
        let mut low: u128 = 0;
        for (i, label) in qname.iter().take(count).enumerate() {
            let nibble = match label {
                [c] => char::from(*c).to_digit(16),
                _ => None,
            };
            let Some(nibble) = nibble else {
                return nxdomain();
            };
            low |= u128::from(nibble) << (4 * i);
        }
        if apex_nibbles + count < 32 {
            // An empty non-terminal of the prefix.
            return Answer::Ready(self.negative(Apex::Reverse6, ResponseCode::NoError));
        }
        let Some(prefix) = self.config.ipv6_prefix else {
            return nxdomain();
        };
        let mask = if count >= 32 {
            u128::MAX
        } else {
            (1u128 << (4 * count)) - 1
        };
        let addr = Ipv6Addr::from((u128::from(prefix.network()) & !mask) | low);
        match self
            .ipv4_of
            .get(&addr)
            .and_then(|v4| self.table.name_of(*v4))
        {
            Some(name) => Answer::Ready(self.ptr_response_in(Apex::Reverse6, qname, qtype, name)),
            None => nxdomain(),
        }
    }

    /// The response to a service question: the registrations here, then
    /// `remote` ones (a decentralised server's store, which answered the
    /// same question; those of a target already answered here are
    /// skipped). SRV records for SRV, TXT records
    /// (from registrations with TXT strings) for TXT, both for ANY, with
    /// the A records of targets known here in the additional section
    /// (RFC 2782 "Usage rules"). NXDOMAIN without registrations, NODATA
    /// for other types.
    pub fn service_response(
        &self,
        req: &Request,
        query: &ServiceQuery,
        remote: &[Service],
    ) -> Response {
        let local: Vec<&Service> = match &query.host {
            Some(host) => self.services.get(&query.name, host).into_iter().collect(),
            None => self
                .services
                .of_service(&query.name)
                .map(|(_, s)| s)
                .collect(),
        };
        let mut found = local;
        for s in remote {
            if !found.iter().any(|f| f.target == s.target) {
                found.push(s);
            }
        }
        if found.is_empty() {
            return self.nxdomain();
        }
        let qname = req.query.name();
        let qtype = req.query.query_type();
        let ttl = self.config.ttl;
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        if matches!(qtype, RecordType::SRV | RecordType::ANY) {
            for s in &found {
                let Ok(target) =
                    Name::from_ascii(&s.target).and_then(|n| n.append_domain(&self.config.zone))
                else {
                    continue;
                };
                let labels: Vec<&[u8]> = s.target.split('.').map(str::as_bytes).collect();
                if let Some(addr) = self.lookup_forward(labels.iter().copied()) {
                    additionals.push(Record::from_rdata(target.clone(), ttl, RData::A(A(addr))));
                }
                answers.push(Record::from_rdata(
                    qname.clone(),
                    ttl,
                    RData::SRV(SRV::new(s.priority, s.weight, s.port, target)),
                ));
            }
        }
        if matches!(qtype, RecordType::TXT | RecordType::ANY) {
            for s in found.iter().filter(|s| !s.txt.is_empty()) {
                answers.push(Record::from_rdata(
                    qname.clone(),
                    ttl,
                    RData::TXT(TXT::from_bytes(s.txt.iter().map(Vec::as_slice).collect())),
                ));
            }
        }
        if answers.is_empty() {
            return self.negative(Apex::Forward, ResponseCode::NoError);
        }
        let mut response = self.positive(answers);
        response.sections.additionals = additionals;
        response
    }

    /// Address of a relative forward name given as labels. Never allocates.
    pub fn lookup_forward<'a, I>(&self, rel: I) -> Option<Ipv4Addr>
    where
        I: Iterator<Item = &'a [u8]> + Clone + ExactSizeIterator,
    {
        if let Some(addr) = self.table.get_labels(rel.clone()) {
            return Some(addr);
        }
        let mut it = rel;
        let first = it.next()?;
        if it.len() != 0 {
            return None;
        }
        if self.config.rule_names
            && let Some(addr) = self.rule.addr_of(first)
        {
            return Some(addr);
        }
        if let Some(ns) = self.config.ns_addr
            && first.eq_ignore_ascii_case(self.config.ns_label.as_bytes())
        {
            return Some(ns);
        }
        None
    }

    fn answer_reverse<'a>(
        &self,
        qname: &Name,
        qtype: RecordType,
        rel: impl Iterator<Item = &'a [u8]>,
        apex: Apex,
    ) -> Answer {
        let apex_octets = (self.reverse_labels - 2) as u8;
        let Some((octets, count)) = parse_reverse_labels(rel) else {
            return Answer::Ready(self.negative(apex, ResponseCode::NXDomain));
        };
        // `count` counts labels below the apex; octets above it were fixed by
        // the apex match, so rebuild the full prefix.
        let total = usize::from(apex_octets) + count;
        if total > 4 {
            return Answer::Ready(self.negative(apex, ResponseCode::NXDomain));
        }
        let net = self.config.network.network().octets();
        let mut full = [0u8; 4];
        full[..usize::from(apex_octets)].copy_from_slice(&net[..usize::from(apex_octets)]);
        full[usize::from(apex_octets)..total].copy_from_slice(&octets[..count]);
        let addr = Ipv4Addr::from(full);
        if total < 4 {
            // An empty non-terminal if its block overlaps the network.
            let block = Ipv4Net::new(addr, (total * 8) as u8).unwrap_or_default();
            let overlaps = block.contains(&self.config.network.network())
                || self.config.network.contains(&addr);
            let rcode = if overlaps {
                ResponseCode::NoError
            } else {
                ResponseCode::NXDomain
            };
            return Answer::Ready(self.negative(apex, rcode));
        }
        match self.table.name_of(addr) {
            Some(name) => Answer::Ready(self.ptr_response(qname, qtype, name)),
            None if self.config.rule_names && self.rule.covers(addr) => {
                Answer::MissingReverse(addr)
            }
            None => Answer::Ready(self.negative(apex, ResponseCode::NXDomain)),
        }
    }

    /// The PTR response pointing `qname` at `name` (relative to the zone),
    /// or NODATA for other types.
    fn ptr_response(&self, qname: &Name, qtype: RecordType, name: &str) -> Response {
        self.ptr_response_in(Apex::Reverse, qname, qtype, name)
    }

    fn ptr_response_in(&self, apex: Apex, qname: &Name, qtype: RecordType, name: &str) -> Response {
        let target = Name::from_ascii(name).and_then(|n| n.append_domain(&self.config.zone));
        let Ok(target) = target else {
            return self.negative(apex, ResponseCode::NXDomain);
        };
        if matches!(qtype, RecordType::PTR | RecordType::ANY) {
            self.positive(vec![Record::from_rdata(
                qname.clone(),
                self.config.ttl,
                RData::PTR(PTR(target)),
            )])
        } else {
            self.negative(apex, ResponseCode::NoError)
        }
    }

    /// The response for a reverse name of the network: PTR to `name`
    /// (relative to the zone) if given, else to the address's rule name.
    pub fn reverse_response(&self, req: &Request, addr: Ipv4Addr, name: Option<&str>) -> Response {
        let q = &req.query;
        match (name, self.rule.name_of(addr)) {
            (Some(name), _) => self.ptr_response(q.name(), q.query_type(), name),
            (None, Some(rule)) => self.ptr_response(q.name(), q.query_type(), rule.as_str()),
            (None, None) => self.negative(Apex::Reverse, ResponseCode::NXDomain),
        }
    }

    /// The largest response allowed for `req` on `transport`.
    pub fn response_limit(&self, req: &Request, transport: Transport) -> usize {
        req.response_limit(transport, self.config.max_udp_payload)
    }

    /// Writes `response` to `req` into `out`; returns whether it was truncated.
    pub fn emit(
        &self,
        req: &Request,
        response: &Response,
        transport: Transport,
        out: &mut Vec<u8>,
    ) -> bool {
        emit_response(
            req,
            response.rcode,
            response.authoritative,
            &response.sections,
            self.config.max_udp_payload,
            self.response_limit(req, transport),
            out,
        )
    }

    /// Answers query bytes as a purely local server: unknown names get
    /// NXDOMAIN, names outside the zones REFUSED (RFC 1035 §4.1.1), a
    /// malformed query FORMERR and other opcodes NOTIMP. The response (bytes
    /// without TCP framing) goes into `out`.
    ///
    /// The common query (one question, class IN, type A, for a registered
    /// name, in a query with no EDNS option) is answered without decoding it: the
    /// query's header and question copied, a pre-encoded A record appended.
    /// Every other query takes [`Zone::respond_general`]; both give the same
    /// bytes for the common query.
    pub fn respond(&self, query: &[u8], transport: Transport, out: &mut Vec<u8>) -> Outcome {
        if self.respond_fast(query, transport, out) {
            return Outcome::Answered {
                rcode: ResponseCode::NoError,
                truncated: false,
            };
        }
        self.respond_general(query, transport, out)
    }

    /// Answers the common query (one question, class IN, type A, no EDNS
    /// option, for a name with an address here) from its bytes, without
    /// decoding it: the header and question copied, the A record appended.
    /// Returns false, leaving `out` untouched, for every other query; those
    /// need [`Zone::respond_general`] or, in a [`crate::Server`], the store.
    pub fn respond_fast(&self, query: &[u8], transport: Transport, out: &mut Vec<u8>) -> bool {
        let Some(q) = FastQuery::parse(query) else {
            return false;
        };
        let n = q.labels().len();
        let Some(rel) = n.checked_sub(self.zone_labels).filter(|r| *r > 0) else {
            return false;
        };
        let in_zone = self
            .config
            .zone
            .iter()
            .zip(q.labels().skip(rel))
            .all(|(a, b)| a.eq_ignore_ascii_case(b));
        if !in_zone {
            return false;
        }
        let mut first = q.labels();
        if let (Some(service), Some(proto)) = (first.next(), first.next())
            && rel >= 2
            && is_service_label(service)
            && is_service_label(proto)
        {
            return false;
        }
        let Some(addr) = self.lookup_forward(q.labels().take(rel)) else {
            return false;
        };
        let limit = match (transport, q.edns_payload) {
            (Transport::Tcp, _) => usize::from(u16::MAX),
            (Transport::Udp, payload) => usize::from(
                payload
                    .unwrap_or(MIN_UDP_PAYLOAD)
                    .max(MIN_UDP_PAYLOAD)
                    .min(self.config.max_udp_payload),
            ),
        };
        if q.answer_len() > limit {
            return false;
        }
        write_a_answer(&q, addr, self.config.ttl, self.config.max_udp_payload, out);
        true
    }

    /// [`Zone::respond`] without the fast path: every query decoded with
    /// `hickory-proto`, answered by [`Zone::answer`], encoded by
    /// [`emit_response`].
    pub fn respond_general(
        &self,
        query: &[u8],
        transport: Transport,
        out: &mut Vec<u8>,
    ) -> Outcome {
        out.clear();
        let req = match Request::parse(query) {
            Ok(req) => req,
            Err(e) => return self.respond_error(e, out),
        };
        let response = match self.answer(&req) {
            Answer::Ready(r) => r,
            Answer::Missing => self.nxdomain(),
            Answer::MissingReverse(addr) => self.reverse_response(&req, addr, None),
            Answer::Service(query) => self.service_response(&req, &query, &[]),
            Answer::Outside => refused(),
        };
        let truncated = self.emit(&req, &response, transport, out);
        Outcome::Answered {
            rcode: response.rcode,
            truncated,
        }
    }

    /// Writes the FORMERR or NOTIMP response for a query that failed to
    /// parse, or reports that it is to be dropped.
    pub fn respond_error(&self, error: QueryError, out: &mut Vec<u8>) -> Outcome {
        let (id, op, rcode) = match error {
            QueryError::Malformed { id } => (id, OpCode::Query, ResponseCode::FormErr),
            QueryError::NotImplemented { id, opcode } => (id, opcode, ResponseCode::NotImp),
            _ => {
                out.clear();
                return Outcome::Dropped(error);
            }
        };
        emit_header_only(id, op, rcode, out);
        Outcome::Answered {
            rcode,
            truncated: false,
        }
    }
}

/// The lowercase service query of labels `service`, `proto`, `host…`.
fn service_query(service: &[u8], proto: &[u8], host: &[&[u8]]) -> ServiceQuery {
    let lower = |b: &[u8]| String::from_utf8_lossy(b).to_ascii_lowercase();
    let host =
        (!host.is_empty()).then(|| host.iter().map(|l| lower(l)).collect::<Vec<_>>().join("."));
    ServiceQuery {
        name: format!("{}.{}", lower(service), lower(proto)),
        host,
    }
}

/// Dotted-quad IPv4 address, strictly `d.d.d.d` with octets 0–255.
fn parse_ipv4(text: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = text.split(|&b| b == b'.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 {
            return None;
        }
        let mut v: u16 = 0;
        for &d in part {
            if !d.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u16::from(d - b'0');
        }
        *octet = u8::try_from(v).ok()?;
    }
    parts.next().is_none().then_some(Ipv4Addr::from(octets))
}

/// A REFUSED response (not authoritative, no records).
pub fn refused() -> Response {
    Response {
        rcode: ResponseCode::Refused,
        authoritative: false,
        sections: Sections::default(),
    }
}

fn strip_suffix_ignore_case<'a>(s: &'a [u8], suffix: &[u8]) -> Option<&'a [u8]> {
    let cut = s.len().checked_sub(suffix.len())?;
    let tail = s.get(cut..)?;
    tail.eq_ignore_ascii_case(suffix)
        .then(|| s.get(..cut))
        .flatten()
}

/// The smallest octet-aligned `in-addr.arpa` zone holding `network`.
/// The `ip6.arpa` name of `prefix`'s whole nibbles (RFC 3596 section 2.5).
fn reverse6_apex(prefix: Ipv6Net) -> Name {
    let value = u128::from(prefix.network());
    let whole = usize::from(prefix.prefix_len() / 4);
    let mut text = String::new();
    for i in (0..whole).rev() {
        let nibble = (value >> (124 - 4 * i)) & 0xf;
        text.push_str(&format!("{nibble:x}."));
    }
    text.push_str("ip6.arpa.");
    Name::from_ascii(&text).unwrap_or_else(|_| Name::root())
}

fn reverse_apex(network: Ipv4Net) -> Name {
    let octets = network.network().octets();
    let whole = usize::from(network.prefix_len() / 8);
    let mut text = String::new();
    for o in octets[..whole].iter().rev() {
        text.push_str(&o.to_string());
        text.push('.');
    }
    text.push_str("in-addr.arpa.");
    Name::from_ascii(&text).unwrap_or_else(|_| Name::root())
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn aaaa_and_ip6_arpa_answers() {
        use hickory_proto::op::{Message, MessageType, Query};
        let config = ZoneConfig {
            network: "10.128.0.0/16".parse().unwrap(),
            ipv6_prefix: Some("fd12:3456:789a::/48".parse().unwrap()),
            ..ZoneConfig::default()
        };
        let mut z = Zone::new(config, 0);
        let v4 = Ipv4Addr::new(10, 128, 0, 20);
        z.insert("bravo", v4, None).unwrap();
        let v6: Ipv6Addr = "fd12:3456:789a:14:57:98ff:fea1:7374".parse().unwrap();
        z.set_ipv6_addrs(v4, &[v6]);
        let ask = |z: &Zone, name: &str, qtype: RecordType| {
            let mut m = Message::new(7, MessageType::Query, OpCode::Query);
            m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
            let mut out = Vec::new();
            let bytes = m.to_vec().unwrap();
            z.respond(&bytes, Transport::Udp, &mut out);
            Message::from_vec(&out).unwrap()
        };
        let r = ask(&z, "bravo.wow.internal.", RecordType::AAAA);
        assert_eq!(r.answers.len(), 1);
        assert_eq!(r.answers[0].data, RData::AAAA(AAAA(v6)));
        // A and AAAA do not mix.
        let r = ask(&z, "bravo.wow.internal.", RecordType::A);
        assert_eq!(r.answers[0].data, RData::A(A(v4)));
        assert_eq!(r.answers.len(), 1);
        // A host without IPv6: NODATA.
        z.insert("alpha", Ipv4Addr::new(10, 128, 0, 10), None)
            .unwrap();
        let r = ask(&z, "alpha.wow.internal.", RecordType::AAAA);
        assert_eq!(
            (r.metadata.response_code, r.answers.len()),
            (ResponseCode::NoError, 0)
        );
        // PTR of the address.
        let ptr = "4.7.3.7.1.a.e.f.f.f.8.9.7.5.0.0.4.1.0.0.a.9.8.7.6.5.4.3.2.1.d.f.ip6.arpa.";
        let r = ask(&z, ptr, RecordType::PTR);
        assert_eq!(
            r.answers[0].data,
            RData::PTR(PTR(Name::from_ascii("bravo.wow.internal.").unwrap()))
        );
        // Another address of the prefix: nobody's; a prefix of it: NODATA;
        // a bad label: NXDOMAIN.
        let r = ask(&z, &ptr.replacen('4', "5", 1), RecordType::PTR);
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        let r = ask(
            &z,
            "4.1.0.0.a.9.8.7.6.5.4.3.2.1.d.f.ip6.arpa.",
            RecordType::PTR,
        );
        assert_eq!(
            (r.metadata.response_code, r.answers.len()),
            (ResponseCode::NoError, 0)
        );
        let r = ask(&z, &ptr.replacen('4', "x4", 1), RecordType::PTR);
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        // Replaced addresses no longer answer.
        z.set_ipv6_addrs(v4, &[]);
        assert_eq!(
            ask(&z, ptr, RecordType::PTR).metadata.response_code,
            ResponseCode::NXDomain
        );
        assert_eq!(
            ask(&z, "bravo.wow.internal.", RecordType::AAAA)
                .answers
                .len(),
            0
        );
    }

    #[test]
    fn reverse6_apex_is_nibble_aligned() {
        let n = |s: &str| reverse6_apex(s.parse().unwrap()).to_ascii();
        assert_eq!(
            n("fd12:3456:789a::/48"),
            "a.9.8.7.6.5.4.3.2.1.d.f.ip6.arpa."
        );
        assert_eq!(n("fd00::/10"), "d.f.ip6.arpa.");
    }

    #[test]
    fn reverse_apex_is_octet_aligned() {
        let n = |s: &str| reverse_apex(s.parse().unwrap()).to_ascii();
        assert_eq!(n("10.128.0.0/9"), "10.in-addr.arpa.");
        assert_eq!(n("10.128.0.0/16"), "128.10.in-addr.arpa.");
        assert_eq!(n("192.168.7.0/24"), "7.168.192.in-addr.arpa.");
        assert_eq!(n("192.168.7.0/25"), "7.168.192.in-addr.arpa.");
    }

    #[test]
    fn relative_names() {
        let z = Zone::new(ZoneConfig::default(), 0);
        assert_eq!(z.relative("h1"), Some("h1"));
        assert_eq!(z.relative("h1.WOW.internal"), Some("h1"));
        assert_eq!(z.relative("a.b.wow.internal."), Some("a.b"));
        assert_eq!(z.relative("h1.example."), None);
        assert_eq!(z.relative("wow.internal."), None);
    }

    #[test]
    fn later_lines_and_later_loads_win() {
        let mut z = Zone::new(ZoneConfig::default(), 0);
        assert_eq!(
            z.load_names("a 10.128.0.1\nb 10.128.0.2\nA 10.128.0.3\n"),
            Ok(3)
        );
        assert_eq!(z.table().len(), 2);
        assert_eq!(z.table().get("a"), Some(Ipv4Addr::new(10, 128, 0, 3)));
        let serial = z.serial();
        // Loading into a non-empty zone merges.
        assert_eq!(z.load_names("b 10.128.0.9\nc 10.128.0.4\n"), Ok(2));
        assert_eq!(z.table().len(), 3);
        assert_eq!(z.table().get("b"), Some(Ipv4Addr::new(10, 128, 0, 9)));
        assert_eq!(z.table().name_of(Ipv4Addr::new(10, 128, 0, 9)), Some("b"));
        assert!(z.serial() > serial);
        // A bad line anywhere leaves the zone as it was.
        assert!(z.load_names("d 10.128.0.5\ne\n").is_err());
        assert_eq!(z.table().get("d"), None);
        assert_eq!(z.table().len(), 3);
    }

    #[test]
    fn loads_both_line_orders() {
        let mut z = Zone::new(ZoneConfig::default(), 0);
        let n = z
            .load_names("# comment\nweb 10.128.0.9\n\n10.128.0.10 db.wow.internal\n")
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(z.table().get("web"), Some(Ipv4Addr::new(10, 128, 0, 9)));
        assert_eq!(z.table().get("db"), Some(Ipv4Addr::new(10, 128, 0, 10)));
        assert_eq!(z.load_names("x y\n"), Err(LoadError::Syntax { line: 1 }));
        assert_eq!(
            z.load_names("ok 10.0.0.1\nbad..name 10.0.0.1\n"),
            Err(LoadError::Table {
                line: 2,
                source: TableError::InvalidName { len: 9 }
            })
        );
        assert_eq!(
            z.load_names("x.example. 10.0.0.1\n"),
            Err(LoadError::OutsideZone { line: 1 })
        );
    }
}
