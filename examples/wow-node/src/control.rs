//! The control socket and `wow-node status`.

use std::path::Path;
use std::process::ExitCode;

/// `wow-node status`.
pub fn status_command(_state_dir: &Path, _json: bool) -> ExitCode {
    ExitCode::FAILURE
}
