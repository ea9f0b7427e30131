//! `wow-node`: the WOW virtual-network node.
//!
//! ```text
//! wow-node demo [--nodes N]          # no root, no config: N in-process nodes and guests
//! wow-node up --config FILE [--confine]
//! wow-node confine --config FILE      # the --confine rules alone (at boot, before the network)
//! wow-node unconfine [--config FILE | --tap NAME]
//! wow-node status [--json] [--network [--limit N]] [--state-dir DIR]
//! wow-node ca init|issue|revoke|crl|list --dir DIR ...
//! wow-node ca token|pending|approve|reject [--state-dir DIR] [--dir CA_DIR] ...
//! wow-node release keygen --out KEY
//! wow-node release publish --key KEY --binary PATH --version V [--channel C] [--url URL]
//! wow-node service list|add|remove [--state-dir DIR] ...
//! wow-node appliance init|develop|clean|publish|release|reset-home|... --dir STATE ...
//! ```
//!
//! See `README.md` beside this crate for the operator guide.

use wow_node::{appliance, ca_cmd, config, confine, control, demo, runtime, update};

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The WOW node: makes this host (or VM, or container) a member of a
/// self-configuring virtual network through a TAP device.
#[derive(Debug, Parser)]
#[command(name = "wow-node", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run N nodes with N smoltcp guests in this process over loopback UDP:
    /// DHCP, DNS, ping and a TCP stream across the overlay. No root needed.
    Demo {
        /// Number of nodes (at least 2).
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Bytes each guest sends to the next over TCP.
        #[arg(long, default_value_t = 4 * 1024 * 1024)]
        bytes: usize,
        /// Run without security associations (plaintext overlay).
        #[arg(long)]
        insecure: bool,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 25)]
        timeout: u64,
    },
    /// Open the TAP device, join the overlay and serve the guest.
    Up {
        /// Configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Confine the guest to the virtual network with nftables rules;
        /// they stay after the node exits, until `wow-node unconfine`.
        #[arg(long)]
        confine: bool,
    },
    /// Install the `--confine` nftables rules without starting the node
    /// (at boot, before the network comes up: `wow-node-confine.service`).
    Confine {
        /// The node's configuration file (TAP, listen port, allowed ports).
        #[arg(long)]
        config: PathBuf,
    },
    /// Remove the `--confine` nftables rules (they outlive the node).
    Unconfine {
        /// The node's configuration file: its TAP's rules are removed.
        #[arg(long, conflicts_with = "tap")]
        config: Option<PathBuf>,
        /// The TAP whose rules are removed (without `--config`).
        #[arg(long, default_value = "wow0")]
        tap: String,
    },
    /// Print a running node's status through its control socket.
    Status {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Every node of the ring instead (a walk from this node
        /// rightwards): name, virtual address, version, path.
        #[arg(long)]
        network: bool,
        /// With --network: list at most this many nodes.
        #[arg(long, default_value_t = control::DEFAULT_WALK_LIMIT)]
        limit: usize,
        /// The node's state directory.
        #[arg(long, default_value = "/var/lib/wow-node")]
        state_dir: PathBuf,
    },
    /// Certificate authority administration (wraps ipsec-ca).
    Ca {
        #[command(subcommand)]
        command: ca_cmd::CaCommand,
    },
    /// Signed releases of this binary (self-update).
    Release {
        #[command(subcommand)]
        command: update::ReleaseCommand,
    },
    /// Started by a node that execs a new release: rolls it back unless
    /// it reports healthy in time.
    #[command(hide = true)]
    UpdateWatchdog {
        /// The node's process.
        #[arg(long)]
        pid: u32,
        /// Its state directory.
        #[arg(long)]
        state_dir: PathBuf,
        /// The version installed.
        #[arg(long)]
        version: String,
        /// Seconds it has to report healthy.
        #[arg(long)]
        health_secs: u64,
        /// The executable (the previous one is NAME.prev).
        #[arg(long)]
        exe: PathBuf,
        /// The node's arguments.
        #[arg(last = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// The guest's services (SRV/TXT records under its name) on a running
    /// node.
    Service {
        #[command(subcommand)]
        command: ServiceCommand,
        /// The node's state directory.
        #[arg(long, default_value = "/var/lib/wow-node", global = true)]
        state_dir: PathBuf,
    },
    /// The appliance's stacked file systems (base, module, home) on
    /// overlayfs: develop, clean, publish, release.
    Appliance {
        #[command(subcommand)]
        command: appliance::ApplianceCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ServiceCommand {
    /// List the registered services.
    List,
    /// Register (or replace) a service of the guest.
    Add {
        /// `_service._proto`, as `_slurmctld._tcp`.
        name: String,
        /// The port it listens on.
        #[arg(long)]
        port: u16,
        /// SRV priority (lower first).
        #[arg(long, default_value_t = 0)]
        priority: u16,
        /// SRV weight among equal priorities.
        #[arg(long, default_value_t = 0)]
        weight: u16,
        /// A TXT string (repeat for more).
        #[arg(long)]
        txt: Vec<String>,
    },
    /// Withdraw a service.
    Remove {
        /// `_service._proto`.
        name: String,
    },
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: logs kept by a supervisor stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo {
            nodes,
            bytes,
            insecure,
            timeout,
        } => {
            if std::env::var_os("RUST_LOG").is_some() {
                init_tracing();
            }
            demo::run(demo::DemoOptions {
                nodes,
                bytes,
                secure: !insecure,
                timeout: std::time::Duration::from_secs(timeout),
            })
        }
        Command::Up { config, confine } => {
            init_tracing();
            // A file others may change, or read while it holds secrets,
            // stops the node before it does anything.
            if let Err(e) = config::Config::load_private(&config) {
                eprintln!("wow-node up: {e}");
                return ExitCode::from(2);
            }
            runtime::up(&config, confine)
        }
        Command::Confine { config } => confine::confine_command(&config),
        Command::Unconfine { config, tap } => confine::unconfine_command(config.as_deref(), &tap),
        Command::Status {
            json,
            network,
            limit,
            state_dir,
        } => control::status_command(&state_dir, json, network.then_some(limit)),
        Command::Ca { command } => ca_cmd::run(command),
        Command::Release { command } => update::run(command),
        Command::UpdateWatchdog {
            pid,
            state_dir,
            version,
            health_secs,
            exe,
            args,
        } => update::watchdog(pid, &state_dir, &version, health_secs, &exe, &args),
        Command::Service { command, state_dir } => {
            let request = match command {
                ServiceCommand::List => control::ServiceRequest::List,
                ServiceCommand::Add {
                    name,
                    port,
                    priority,
                    weight,
                    txt,
                } => control::ServiceRequest::Add(config::ServiceEntry {
                    name,
                    port,
                    priority,
                    weight,
                    txt,
                }),
                ServiceCommand::Remove { name } => control::ServiceRequest::Remove(name),
            };
            control::service_command(&state_dir, &request)
        }
        Command::Appliance { command } => appliance::run(command),
    }
}
