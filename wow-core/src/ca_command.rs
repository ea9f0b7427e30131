//! The CA administration commands a node serving the CA answers on its
//! control socket (`ca pending|approve|reject|token`): their one-line
//! wire form, and carrying them out on the CA. The node's `wow-node ca`
//! command sends them; its runtime runs them on the core's CA
//! ([`crate::core::Core::with_ca`]).

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use ipsec_ca::{Ca, Store};

/// Parses a duration such as `3600`, `90s`, `30m`, `1h` or `7d`.
pub fn parse_ttl(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&text[..i], c),
        _ => (text, 's'),
    };
    let n: u64 = number.parse().ok()?;
    let secs = n.checked_mul(match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    })?;
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// The control socket's answer to a CA command on a node that does not
/// serve the CA.
pub const NOT_THE_CA: &str = "error: this node does not serve the CA (no [ca] dir)\n";

/// One CA administration command, as sent over the control socket
/// (`ca pending`, `ca approve ID`, `ca reject ID`, `ca token IP|- TTL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaRequest {
    /// List the pending queue.
    Pending,
    /// Approve a queued request.
    Approve(u64),
    /// Reject a queued request.
    Reject(u64),
    /// Issue a join token.
    Token {
        /// The only address it may enrol.
        ip: Option<Ipv4Addr>,
        /// Lifetime, seconds.
        ttl_secs: u64,
    },
}

impl CaRequest {
    /// The control-socket line.
    pub fn to_line(&self) -> String {
        match self {
            CaRequest::Pending => "ca pending\n".into(),
            CaRequest::Approve(id) => format!("ca approve {id}\n"),
            CaRequest::Reject(id) => format!("ca reject {id}\n"),
            CaRequest::Token { ip, ttl_secs } => format!(
                "ca token {} {ttl_secs}\n",
                ip.map_or_else(|| "-".to_string(), |ip| ip.to_string())
            ),
        }
    }

    /// Parses a control-socket line; `None` if it is not a CA command.
    pub fn parse(line: &str) -> Option<CaRequest> {
        let mut words = line.split_whitespace();
        if words.next()? != "ca" {
            return None;
        }
        let request = match (words.next()?, words.next(), words.next()) {
            ("pending", None, None) => CaRequest::Pending,
            ("approve", Some(id), None) => CaRequest::Approve(id.parse().ok()?),
            ("reject", Some(id), None) => CaRequest::Reject(id.parse().ok()?),
            ("token", Some(ip), Some(ttl)) => CaRequest::Token {
                ip: if ip == "-" {
                    None
                } else {
                    Some(ip.parse().ok()?)
                },
                ttl_secs: ttl.parse().ok().filter(|s| *s > 0)?,
            },
            _ => return None,
        };
        words.next().is_none().then_some(request)
    }

    /// Carries the command out on `ca` at `now`; the answer is the text to
    /// print, `Err` for a refusal.
    pub fn execute<S: Store>(&self, now: SystemTime, ca: &mut Ca<S>) -> Result<String, String> {
        match self {
            CaRequest::Pending => Ok(pending_table(now, ca)),
            CaRequest::Approve(id) => {
                let issued = ca.approve(now, *id).map_err(|e| e.to_string())?;
                Ok(format!(
                    "approved {id}: serial {}\n",
                    ipsec_ca::state::hex_encode(&issued.serial)
                ))
            }
            CaRequest::Reject(id) => {
                let removed = ca.reject(*id).map_err(|e| e.to_string())?;
                Ok(format!("rejected {id} ({})\n", removed.source_ip))
            }
            CaRequest::Token { ip, ttl_secs } => {
                let token = ca
                    .issue_token(now, *ip, Duration::from_secs(*ttl_secs))
                    .map_err(|e| e.to_string())?;
                Ok(format!("{}\n", token.to_text()))
            }
        }
    }
}

/// The pending queue as a table, with each request's age at `now`.
pub fn pending_table<S: Store>(now: SystemTime, ca: &Ca<S>) -> String {
    let now = crate::enrol::unix_secs(now);
    let mut s = format!("{:<6} {:<15} {:>8}  key\n", "id", "ip", "age");
    for p in ca.pending() {
        let key = ipsec_ca::parse_csr(&p.csr)
            .map(|i| ipsec_ca::state::hex_encode(&i.public_key_raw))
            .unwrap_or_else(|_| "?".into());
        let key = key.get(..16).unwrap_or(&key).to_string();
        s += &format!(
            "{:<6} {:<15} {:>7}s  {key}…\n",
            p.id,
            p.source_ip,
            now.saturating_sub(p.received_at)
        );
    }
    s
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn control_lines_round_trip() {
        for r in [
            CaRequest::Pending,
            CaRequest::Approve(7),
            CaRequest::Reject(9),
            CaRequest::Token {
                ip: Some(Ipv4Addr::new(10, 128, 0, 5)),
                ttl_secs: 3600,
            },
            CaRequest::Token {
                ip: None,
                ttl_secs: 60,
            },
        ] {
            assert_eq!(CaRequest::parse(&r.to_line()), Some(r));
        }
        assert_eq!(CaRequest::parse("json"), None);
        assert_eq!(CaRequest::parse("ca approve x"), None);
        assert_eq!(CaRequest::parse("ca pending extra"), None);
        assert_eq!(CaRequest::parse("ca token - 0"), None);
    }

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_ttl("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("7d"), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_ttl("0"), None);
        assert_eq!(parse_ttl("1y"), None);
        assert_eq!(parse_ttl(""), None);
    }
}
