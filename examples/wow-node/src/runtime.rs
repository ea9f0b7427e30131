//! `wow-node up`: the node on a real TAP device.

use std::path::Path;
use std::process::ExitCode;

/// Runs the node until SIGINT/SIGTERM.
pub fn up(_config: &Path, _confine: bool) -> ExitCode {
    ExitCode::FAILURE
}
