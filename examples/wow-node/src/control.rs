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
//! `wow-node release publish` ([`crate::update`]). The socket lives in the state
//! directory (mode 0700): whoever may open it administers the node.

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use wow_core::status::Status;

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
    let path = state_dir.join(SOCKET_FILE);
    let mut stream = std::os::unix::net::UnixStream::connect(&path)?;
    stream.set_read_timeout(Some(Duration::from_secs(wait_secs)))?;
    stream.write_all(line.as_bytes())?;
    let mut out = String::new();
    stream.read_to_string(&mut out)?;
    Ok(out)
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
