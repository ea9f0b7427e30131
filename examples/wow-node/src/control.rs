//! The control socket (`STATE_DIR/control.sock`) and `wow-node status`.
//!
//! Protocol: the client writes one line and reads the answer until the
//! server closes the connection. `text` or `json`: the status; `ca
//! pending`, `ca approve ID`, `ca reject ID`, `ca token IP|- TTL_SECS`: the
//! CA commands of a node serving the CA ([`crate::enrol::CaRequest`]),
//! answered `error: …` when refused. The socket lives in the state
//! directory (mode 0700): whoever may open it administers the node.

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use wow_core::status::Status;

/// File name of the control socket in the state directory.
pub const SOCKET_FILE: &str = "control.sock";

/// The answer to a control-socket status request: `json` or text.
pub fn answer(status: &Status, request: &str) -> String {
    if request.trim() == "json" {
        serde_json::to_string_pretty(status).unwrap_or_default() + "\n"
    } else {
        status.to_text()
    }
}

/// `wow-node status`: asks the node behind `state_dir`.
pub fn status_command(state_dir: &Path, json: bool) -> ExitCode {
    let path = state_dir.join(SOCKET_FILE);
    let result = (|| -> std::io::Result<String> {
        let mut stream = std::os::unix::net::UnixStream::connect(&path)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(if json { b"json\n" } else { b"text\n" })?;
        let mut out = String::new();
        stream.read_to_string(&mut out)?;
        Ok(out)
    })();
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
