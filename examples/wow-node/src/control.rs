//! The control socket (`STATE_DIR/control.sock`) and `wow-node status`.
//!
//! Protocol: the client writes one line and reads the answer until the
//! server closes the connection. `text` or `json`: the status; `ca
//! pending`, `ca approve ID`, `ca reject ID`, `ca token IP|- TTL_SECS`: the
//! CA commands of a node serving the CA ([`crate::enrol::CaRequest`]),
//! answered `error: …` when refused; `network [json] [LIMIT]`: a walk round
//! the ring ([`wow_core::walk`]) listing up to LIMIT nodes (default
//! [`DEFAULT_WALK_LIMIT`]); `health`: `ok VERSION` once the node joined
//! the ring (or has no bootstrap), else `starting` (the self-update's
//! watchdog asks it); `release publish`: publish the release staged by
//! `wow-node release publish` ([`crate::update`]); `service list`,
//! `service add JSON` (a [`ServiceEntry`]), `service remove NAME`: the
//! guest's services ([`ServiceRequest`]). The socket lives in the state
//! directory (mode 0700): whoever may open it administers the node.

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use wow_core::status::Status;

use crate::config::ServiceEntry;

/// Longest request line the node reads.
pub const MAX_REQUEST: usize = 2048;

/// A `service …` request: the guest's services at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceRequest {
    /// `service list`.
    List,
    /// `service add JSON`.
    Add(ServiceEntry),
    /// `service remove NAME`.
    Remove(String),
}

impl ServiceRequest {
    /// The request in `line`, if it is one; `Err` for a `service` line
    /// that is not understood.
    pub fn parse(line: &str) -> Option<Result<ServiceRequest, String>> {
        let rest = line.trim().strip_prefix("service")?;
        let (verb, arg) = rest.trim().split_once(' ').unwrap_or((rest.trim(), ""));
        Some(match (verb, arg.trim()) {
            ("list", "") => Ok(ServiceRequest::List),
            ("add", json) => serde_json::from_str(json)
                .map(ServiceRequest::Add)
                .map_err(|e| format!("service add: {e}")),
            ("remove", name) if !name.is_empty() => Ok(ServiceRequest::Remove(name.to_owned())),
            _ => Err("usage: service list | add JSON | remove NAME".to_owned()),
        })
    }

    /// The request as a line for the socket.
    pub fn to_line(&self) -> String {
        match self {
            ServiceRequest::List => "service list\n".into(),
            ServiceRequest::Add(e) => {
                format!(
                    "service add {}\n",
                    serde_json::to_string(e).unwrap_or_default()
                )
            }
            ServiceRequest::Remove(name) => format!("service remove {name}\n"),
        }
    }

    /// Carries the request out on `core`; the answer text (`error: …`
    /// when refused).
    pub fn execute<S: dhcp_virt::LeaseStore>(
        &self,
        now: std::time::Instant,
        core: &mut wow_core::core::Core<S>,
    ) -> String {
        match self {
            ServiceRequest::List => list_services(core),
            ServiceRequest::Add(entry) => match entry.registration() {
                Ok((name, service)) => match core.add_service(now, &name, service) {
                    Ok(()) => format!("added {name}\n"),
                    Err(e) => format!("error: {e}\n"),
                },
                Err(e) => format!("error: {e}\n"),
            },
            ServiceRequest::Remove(name) => {
                if core.remove_service(now, name) {
                    format!("removed {name}\n")
                } else {
                    format!("error: no service {name}\n")
                }
            }
        }
    }
}

/// One line per service: `NAME PORT priority=P weight=W [txt=…]…`, under
/// the guest's name.
fn list_services<S: dhcp_virt::LeaseStore>(core: &wow_core::core::Core<S>) -> String {
    let mut out = String::new();
    let host = core.guest_name().unwrap_or("(no name yet)");
    for (name, s) in core.services() {
        out.push_str(&format!(
            "{name}.{host} port={} priority={} weight={}",
            s.port, s.priority, s.weight
        ));
        for t in &s.txt {
            out.push_str(&format!(" txt={:?}", String::from_utf8_lossy(t)));
        }
        out.push('\n');
    }
    out
}

/// `wow-node service …`: asks the node behind `state_dir`.
pub fn service_command(state_dir: &Path, request: &ServiceRequest) -> ExitCode {
    let path = state_dir.join(SOCKET_FILE);
    match ask(&path, &request.to_line(), 5) {
        Ok(text)
            if text.starts_with("error:")
                || (text.is_empty() && *request != ServiceRequest::List) =>
        {
            eprint!("wow-node service: {text}");
            ExitCode::FAILURE
        }
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "wow-node service: cannot reach {} ({e}); is `wow-node up` running?",
                path.display()
            );
            ExitCode::FAILURE
        }
    }
}

/// Writes `request` to the control socket at `path` and reads the answer.
fn ask(path: &Path, request: &str, wait_secs: u64) -> std::io::Result<String> {
    let mut stream = std::os::unix::net::UnixStream::connect(path)?;
    stream.set_read_timeout(Some(Duration::from_secs(wait_secs)))?;
    stream.write_all(request.as_bytes())?;
    let mut out = String::new();
    stream.read_to_string(&mut out)?;
    Ok(out)
}

/// File name of the control socket in the state directory.
pub const SOCKET_FILE: &str = "control.sock";

/// Nodes a `status --network` lists unless told otherwise.
pub const DEFAULT_WALK_LIMIT: usize = 100;

/// A `network [json] [LIMIT]` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkRequest {
    /// Most nodes to list.
    pub limit: usize,
    /// JSON instead of text.
    pub json: bool,
}

impl WalkRequest {
    /// The request in `line`, if it is one.
    pub fn parse(line: &str) -> Option<WalkRequest> {
        let mut words = line.split_whitespace();
        if words.next() != Some("network") {
            return None;
        }
        let mut request = WalkRequest {
            limit: DEFAULT_WALK_LIMIT,
            json: false,
        };
        for w in words {
            match w {
                "json" => request.json = true,
                n => request.limit = n.parse().ok()?,
            }
        }
        Some(request)
    }

    /// The walk's answer.
    pub fn answer(&self, result: &wow_core::walk::WalkResult) -> String {
        if self.json {
            serde_json::to_string_pretty(result).unwrap_or_default() + "\n"
        } else {
            result.to_text()
        }
    }
}

/// The answer to a control-socket status request: `json` or text.
pub fn answer(status: &Status, request: &str) -> String {
    if request.trim() == "json" {
        serde_json::to_string_pretty(status).unwrap_or_default() + "\n"
    } else {
        status.to_text()
    }
}

/// Sends `line` to the node behind `state_dir` and reads its answer
/// (waiting at most `wait_secs`).
pub fn request(state_dir: &Path, line: &str, wait_secs: u64) -> std::io::Result<String> {
    ask(&state_dir.join(SOCKET_FILE), line, wait_secs)
}

/// `wow-node status`: asks the node behind `state_dir`.
/// With `network`, the walk round the ring instead, listing up to that many
/// nodes.
pub fn status_command(state_dir: &Path, json: bool, network: Option<usize>) -> ExitCode {
    let path = state_dir.join(SOCKET_FILE);
    let (request, wait) = match network {
        None => (if json { "json\n" } else { "text\n" }.to_string(), 5),
        Some(limit) => {
            let limit = limit.clamp(1, wow_core::walk::MAX_LIMIT);
            let step = wow_core::walk::STEP_TIMEOUT.as_secs();
            (
                format!("network{} {limit}\n", if json { " json" } else { "" }),
                5 + step * limit as u64,
            )
        }
    };
    let result = self::request(state_dir, &request, wait);
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "wow-node status: cannot reach {} ({e}); is `wow-node up` running?",
                path.display()
            );
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn service_requests_round_trip_through_their_line() {
        let add = ServiceRequest::Add(ServiceEntry {
            name: "_slurmctld._tcp".into(),
            port: 6817,
            priority: 1,
            weight: 2,
            txt: vec!["a b".into(), "c=d".into()],
        });
        for r in [
            ServiceRequest::List,
            add,
            ServiceRequest::Remove("_x._udp".into()),
        ] {
            assert_eq!(ServiceRequest::parse(&r.to_line()), Some(Ok(r)));
        }
        assert_eq!(ServiceRequest::parse("status"), None);
        assert!(matches!(
            ServiceRequest::parse("service add {"),
            Some(Err(_))
        ));
        assert!(matches!(
            ServiceRequest::parse("service remove"),
            Some(Err(_))
        ));
    }
}
