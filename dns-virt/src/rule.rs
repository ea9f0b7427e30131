//! Names derived from addresses, needing no storage.
//!
//! Every usable address of the virtual network has a name by rule, in the
//! style of IPOP's `C` names: the letter `c` followed by the four octets of
//! the address, each written as three decimal digits.
//!
//! | address | rule name (relative to the zone) |
//! |---|---|
//! | `10.128.0.5` | `c010128000005` |
//! | `172.16.254.1` | `c172016254001` |
//!
//! The rule covers the network's addresses except, for prefixes up to /30,
//! the network and broadcast addresses. Lookups accept any case (`C010…`).
//! The reverse name of an address is its `in-addr.arpa` name (RFC 1035
//! §3.5).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Length of a rule label: `c` and twelve digits.
pub const RULE_LABEL_LEN: usize = 13;

/// A rule name held on the stack (`c` and twelve digits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RuleName([u8; RULE_LABEL_LEN]);

impl RuleName {
    /// The name as text, for example `c010128000005`.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits and `c` are ever written.
        std::str::from_utf8(&self.0).unwrap_or("c")
    }

    /// The name as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// The address rule of one virtual network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressRule {
    network: Ipv4Net,
}

impl AddressRule {
    /// The rule for `network`.
    pub fn new(network: Ipv4Net) -> Self {
        AddressRule {
            network: network.trunc(),
        }
    }

    /// The network the rule covers.
    pub fn network(&self) -> Ipv4Net {
        self.network
    }

    /// Whether `addr` has a rule name.
    pub fn covers(&self, addr: Ipv4Addr) -> bool {
        if !self.network.contains(&addr) {
            return false;
        }
        self.network.prefix_len() > 30
            || (addr != self.network.network() && addr != self.network.broadcast())
    }

    /// The rule name of `addr`, if the rule covers it.
    pub fn name_of(&self, addr: Ipv4Addr) -> Option<RuleName> {
        if !self.covers(addr) {
            return None;
        }
        let mut out = [b'0'; RULE_LABEL_LEN];
        out[0] = b'c';
        for (i, octet) in addr.octets().into_iter().enumerate() {
            let base = 1 + 3 * i;
            out[base] = b'0' + octet / 100;
            out[base + 1] = b'0' + octet / 10 % 10;
            out[base + 2] = b'0' + octet % 10;
        }
        Some(RuleName(out))
    }

    /// The address whose rule name is `label` (any case), if it is one.
    pub fn addr_of(&self, label: &[u8]) -> Option<Ipv4Addr> {
        let (first, digits) = label.split_first()?;
        if !first.eq_ignore_ascii_case(&b'c') || digits.len() != 12 {
            return None;
        }
        let mut octets = [0u8; 4];
        for (octet, chunk) in octets.iter_mut().zip(digits.chunks_exact(3)) {
            let mut v: u16 = 0;
            for d in chunk {
                if !d.is_ascii_digit() {
                    return None;
                }
                v = v * 10 + u16::from(d - b'0');
            }
            *octet = u8::try_from(v).ok()?;
        }
        let addr = Ipv4Addr::from(octets);
        self.covers(addr).then_some(addr)
    }
}

/// Reads the octets of a reverse name's labels below `in-addr.arpa`, most
/// specific first (`5.0.128.10` → `[10, 128, 0, 5]` with `count = 4`).
///
/// Octets must be canonical decimal (no leading zeros). Returns `None` for
/// anything else, or for more than four labels.
pub fn parse_reverse_labels<'a>(
    labels: impl Iterator<Item = &'a [u8]>,
) -> Option<([u8; 4], usize)> {
    let mut rev = [0u8; 4];
    let mut count = 0;
    for label in labels {
        if count == 4 || label.is_empty() || label.len() > 3 {
            return None;
        }
        if label.len() > 1 && label[0] == b'0' {
            return None;
        }
        let mut v: u16 = 0;
        for d in label {
            if !d.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u16::from(d - b'0');
        }
        rev[count] = u8::try_from(v).ok()?;
        count += 1;
    }
    let mut octets = [0u8; 4];
    for i in 0..count {
        octets[i] = rev[count - 1 - i];
    }
    Some((octets, count))
}

#[cfg(test)]
mod test {
    use super::*;

    fn rule() -> AddressRule {
        AddressRule::new("10.128.0.0/9".parse().unwrap())
    }

    #[test]
    fn names_follow_the_documented_rule() {
        let r = rule();
        let n = r.name_of(Ipv4Addr::new(10, 128, 0, 5)).unwrap();
        assert_eq!(n.as_str(), "c010128000005");
        assert_eq!(
            r.addr_of(b"C010128000005"),
            Some(Ipv4Addr::new(10, 128, 0, 5))
        );
        assert_eq!(
            r.name_of(Ipv4Addr::new(10, 255, 254, 253))
                .unwrap()
                .as_str(),
            "c010255254253"
        );
    }

    #[test]
    fn outside_network_edges_and_junk_have_no_name() {
        let r = rule();
        assert_eq!(r.name_of(Ipv4Addr::new(10, 127, 0, 5)), None);
        assert_eq!(r.name_of(Ipv4Addr::new(10, 128, 0, 0)), None);
        assert_eq!(r.name_of(Ipv4Addr::new(10, 255, 255, 255)), None);
        for bad in [
            &b"c010127000005"[..],
            b"c01012800000",
            b"c0101280000050",
            b"d010128000005",
            b"c010128000x05",
            b"c010128000256",
            b"c",
            b"",
        ] {
            assert_eq!(r.addr_of(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn every_covered_address_round_trips() {
        let r = AddressRule::new("192.168.7.0/24".parse().unwrap());
        for last in 1..=254u8 {
            let addr = Ipv4Addr::new(192, 168, 7, last);
            let name = r.name_of(addr).unwrap();
            assert_eq!(r.addr_of(name.as_bytes()), Some(addr));
        }
    }

    #[test]
    fn reverse_labels() {
        let labels: [&[u8]; 4] = [b"5", b"0", b"128", b"10"];
        assert_eq!(
            parse_reverse_labels(labels.into_iter()),
            Some(([10, 128, 0, 5], 4))
        );
        let labels: [&[u8]; 2] = [b"128", b"10"];
        assert_eq!(
            parse_reverse_labels(labels.into_iter()),
            Some(([10, 128, 0, 0], 2))
        );
        for bad in [
            &[&b"05"[..]][..],
            &[b"256"],
            &[b"a"],
            &[b"1", b"2", b"3", b"4", b"5"],
        ] {
            assert_eq!(parse_reverse_labels(bad.iter().copied()), None);
        }
    }
}
