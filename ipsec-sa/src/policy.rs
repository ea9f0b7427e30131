//! Which traffic must be protected (RFC 4301 §4.4.1, the SPD, reduced to
//! the seed's netmask rule): everything to and from the private prefix
//! needs an SA, except a configurable list of public hosts.

use core::net::IpAddr;

use ipnet::IpNet;

/// What to do with a packet (RFC 4301 §4.4.1: PROTECT, BYPASS, DISCARD).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send or accept only through an SA.
    Protect,
    /// Send or accept in the clear.
    Bypass,
}

/// The security policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Prefixes whose hosts must be reached through SAs.
    pub private_prefixes: Vec<IpNet>,
    /// Hosts inside the private prefixes reachable without an SA (public
    /// services such as the DHCP or DNS proxy of the virtual network).
    pub public_hosts: Vec<IpAddr>,
}

impl Policy {
    /// A policy protecting one prefix.
    pub fn protect(prefix: IpNet) -> Policy {
        Policy {
            private_prefixes: vec![prefix],
            public_hosts: Vec::new(),
        }
    }

    /// Adds a host reachable without an SA.
    pub fn with_public_host(mut self, host: IpAddr) -> Policy {
        self.public_hosts.push(host);
        self
    }

    /// The action for traffic exchanged with `remote`.
    pub fn action(&self, remote: IpAddr) -> Action {
        if self.public_hosts.contains(&remote) {
            return Action::Bypass;
        }
        if self
            .private_prefixes
            .iter()
            .any(|net| net.contains(&remote))
        {
            Action::Protect
        } else {
            Action::Bypass
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn prefix_and_public_hosts() {
        let policy = Policy::protect("10.128.0.0/9".parse().unwrap())
            .with_public_host("10.128.0.1".parse().unwrap());
        assert_eq!(
            policy.action("10.128.0.7".parse().unwrap()),
            Action::Protect
        );
        assert_eq!(
            policy.action("10.255.255.255".parse().unwrap()),
            Action::Protect
        );
        assert_eq!(policy.action("10.128.0.1".parse().unwrap()), Action::Bypass);
        assert_eq!(policy.action("10.0.0.1".parse().unwrap()), Action::Bypass);
        assert_eq!(policy.action("fd00::1".parse().unwrap()), Action::Bypass);
    }
}
