//! `--confine`: nftables rules that keep this host (the guest of its own
//! node) inside the virtual network, and keep them there while the node is
//! stopped.
//!
//! The rules live in one table of the `inet` family (IPv4 and IPv6 alike),
//! `wow_confine_<tap>`:
//!
//! - **output**: the host may send on loopback and on the TAP (the virtual
//!   network); the node's own sockets (matched by their owner's uid) may
//!   send underlay datagrams from the listen port, and LAN-discovery
//!   announcements when that is on; IPv6 neighbour discovery (link-local,
//!   hop limit 255, never routed) passes so that IPv6 on the underlay
//!   keeps working. For the
//!   listed host TCP ports (`allow_tcp_ports`, SSH by default) only *replies*
//!   pass: packets in the reply direction of connections that others opened
//!   to those ports. Everything else, including a connection the host opens
//!   to port 22 anywhere, is dropped.
//! - **forward**: nothing is forwarded from or to the TAP, so the host is no
//!   router between the virtual network and anything else.
//!
//! Installing replaces the table in one nftables transaction (no moment
//! without rules). The node never removes the table: it stays while the
//! node is stopped or restarting, so the confinement fails closed, until
//! `wow-node unconfine` deletes it. Rules do not survive a reboot:
//! `wow-node confine` installs them alone, which the packaged
//! `wow-node-confine.service` does at boot before the network is up.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::config::Config;

/// Why the rules could not be installed or removed.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    /// `nft` could not be run.
    #[error("cannot run nft: {0}")]
    Spawn(#[source] std::io::Error),
    /// `nft` rejected the rules.
    #[error("nft refused the confinement rules: {stderr}\n{ruleset}")]
    Refused {
        /// What nft said.
        stderr: String,
        /// The rules it was given.
        ruleset: String,
    },
    /// `nft` could not delete the table.
    #[error("nft could not delete table inet {table}: {stderr}")]
    Remove {
        /// The table.
        table: String,
        /// What nft said.
        stderr: String,
    },
}

/// The nftables table (family `inet`) that confines the host of TAP `tap`.
pub fn table_name(tap: &str) -> String {
    format!(
        "wow_confine_{}",
        tap.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    )
}

/// The effective uid of this process (the owner of the node's sockets),
/// read from `/proc/self/status`; `None` if that cannot be read.
pub fn own_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// The whole nftables script that (re)installs the table: an empty
/// declaration (creates it if missing), its deletion and its new contents,
/// applied by `nft -f` as one transaction. `uid` owns the node's sockets.
pub fn ruleset(config: &Config, uid: u32) -> String {
    let tap = quote(&config.tap.name);
    let table = table_name(&config.tap.name);
    let port = config.node.listen.port();
    let lan = if config.node.lan_discovery {
        format!(
            "    meta skuid {uid} ip daddr {} udp dport {} accept\n",
            overlay_core::lan::GROUP,
            overlay_core::lan::PORT
        )
    } else {
        String::new()
    };
    let services = if config.confine.allow_tcp_ports.is_empty() {
        String::new()
    } else {
        let ports = config
            .confine
            .allow_tcp_ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        format!("    tcp sport {{ {ports} }} ct direction reply accept\n")
    };
    format!(
        "table inet {table} {{\n}}\n\
         delete table inet {table}\n\
         table inet {table} {{\n\
         \x20 chain output {{\n\
         \x20   type filter hook output priority filter; policy drop;\n\
         \x20   oifname \"lo\" accept\n\
         \x20   oifname {tap} accept\n\
         \x20   meta skuid {uid} udp sport {port} accept\n\
         \x20   icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit }} ip6 hoplimit 255 accept\n\
         {lan}{services}\
         \x20   counter drop\n\
         \x20 }}\n\
         \x20 chain forward {{\n\
         \x20   type filter hook forward priority filter; policy accept;\n\
         \x20   iifname {tap} counter drop\n\
         \x20   oifname {tap} counter drop\n\
         \x20 }}\n\
         }}\n"
    )
}

/// An interface name as an nftables string literal.
fn quote(name: &str) -> String {
    format!(
        "\"{}\"",
        name.replace(|c: char| c == '"' || c == '\\' || c.is_control(), "_")
    )
}

/// Installs (or replaces) the confinement table for `config`, atomically.
/// Returns the table's name.
pub fn install(config: &Config) -> Result<String, ConfineError> {
    let ruleset = ruleset(config, own_uid().unwrap_or(0));
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(ConfineError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(ruleset.as_bytes())
            .map_err(ConfineError::Spawn)?;
    }
    let out = child.wait_with_output().map_err(ConfineError::Spawn)?;
    if !out.status.success() {
        return Err(ConfineError::Refused {
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            ruleset,
        });
    }
    Ok(table_name(&config.tap.name))
}

/// Whether the confinement table of TAP `tap` is installed.
pub fn present(tap: &str) -> bool {
    Command::new("nft")
        .args(["list", "table", "inet", &table_name(tap)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Deletes the confinement table of TAP `tap`. `Ok(false)`: there was none.
pub fn remove(tap: &str) -> Result<bool, ConfineError> {
    if !present(tap) {
        return Ok(false);
    }
    let table = table_name(tap);
    let out = Command::new("nft")
        .args(["delete", "table", "inet", &table])
        .stdin(Stdio::null())
        .output()
        .map_err(ConfineError::Spawn)?;
    if !out.status.success() {
        return Err(ConfineError::Remove {
            table,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(true)
}

/// What `wow-node up` does at start: installs the rules when confinement is
/// asked for (`--confine` or `[confine] enabled`); otherwise leaves rules of
/// an earlier run in place and says so.
pub fn at_start(config: &Config, confine: bool) -> Result<(), ConfineError> {
    if confine || config.confine.enabled {
        let table = install(config)?;
        tracing::info!(%table, "confinement rules installed; they stay after exit until `wow-node unconfine`");
    } else if present(&config.tap.name) {
        tracing::warn!(
            table = %table_name(&config.tap.name),
            "confinement rules of an earlier run are still in place: `wow-node unconfine` removes them"
        );
    }
    Ok(())
}

/// `wow-node confine`: installs the rules for `config` without a node
/// (the node, started later, replaces them with its own).
pub fn confine_command(config: &std::path::Path) -> std::process::ExitCode {
    let config = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wow-node confine: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match install(&config) {
        Ok(table) => {
            println!("installed nftables table inet {table}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wow-node confine: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `wow-node unconfine`: removes the rules for the TAP named in `config`
/// (or `tap`). Exit status 0 also when there were none.
pub fn unconfine_command(config: Option<&std::path::Path>, tap: &str) -> std::process::ExitCode {
    let tap = match config.map(Config::load) {
        Some(Ok(c)) => c.tap.name,
        Some(Err(e)) => {
            eprintln!("wow-node unconfine: {e}");
            return std::process::ExitCode::from(2);
        }
        None => tap.to_string(),
    };
    match remove(&tap) {
        Ok(removed) => {
            let table = table_name(&tap);
            if removed {
                println!("removed nftables table inet {table}");
            } else {
                println!("no nftables table inet {table}: nothing to remove");
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wow-node unconfine: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
