//! `wow-node ca …`: the CA administrator's commands (wraps ipsec-ca).

use std::process::ExitCode;

use clap::Subcommand;

/// CA subcommands.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Placeholder.
    List,
}

/// Runs a CA subcommand.
pub fn run(_command: CaCommand) -> ExitCode {
    ExitCode::FAILURE
}
