//! `wow-node ca …`: the CA administrator's commands (wraps ipsec-ca).
//!
//! The CA lives in a directory (ipsec-ca's `FileStore`: `ca.pem`, `ca.key`
//! mode 0600, and the index). Node credentials are issued for a virtual IP
//! into a directory the node's `[security]` section points at.
//!
//! `token`, `pending`, `approve` and `reject` act on the running CA node
//! through its control socket (the node holds the directory's lock), and
//! on the directory when no node answers.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Subcommand;
use ipsec_ca::admin::{CertState, IssueError, der_or_pem, issue_node_in_groups, parse_serial};
use ipsec_ca::file_store::write_atomic;
use ipsec_ca::state::hex_encode as hex;
use ipsec_ca::{Ca, CaIdentity, FileStore, Groups, KeyType, Policy, RevocationReason};

use crate::enrol::CaRequest;

/// File names of issued node credentials.
pub const NODE_CERT_FILE: &str = "node.pem";
/// The node's key file (PKCS#8 PEM, mode 0600).
pub const NODE_KEY_FILE: &str = "node.key";
/// The CA certificate copied beside them.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CRL envelope file.
pub const CRL_FILE: &str = "ca.crl";

/// CA subcommands.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a root CA in DIR.
    Init {
        /// CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// Subject common name.
        #[arg(long, default_value = "wow CA")]
        name: String,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: u64,
    },
    /// Issue a key and certificate for a virtual IP into OUT (node.key,
    /// node.pem, ca.pem): provisioning a node by hand.
    Issue {
        /// CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// The node's virtual IP.
        #[arg(long)]
        ip: Ipv4Addr,
        /// Output directory (the node's state directory).
        #[arg(long)]
        out: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 30)]
        days: u64,
        /// A host name to certify (repeatable): NAME becomes the DNS SAN
        /// `NAME.DOMAIN` (the name the node's DNS answers); a name with a
        /// dot is taken as it is. Only this certificate's key may then
        /// publish it.
        #[arg(long = "name")]
        names: Vec<String>,
        /// The DNS zone (`[network] domain`) bare names go in.
        #[arg(long, default_value = "wow.internal")]
        domain: String,
        /// Groups the certificate carries, comma-separated (`admin,web`):
        /// what `[[firewall.inbound]]` rules of other nodes match it by.
        /// Lowercase letters, digits, `-`, `_`; at most 16 of 32 characters.
        #[arg(long, default_value = "")]
        groups: String,
    },
    /// Sign a node's certificate request (DER or PEM) for IP.
    Sign {
        /// CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// The CSR file.
        #[arg(long)]
        csr: PathBuf,
        /// The virtual IP it must name.
        #[arg(long)]
        ip: Ipv4Addr,
        /// Where to write the certificate (PEM).
        #[arg(long)]
        out: PathBuf,
    },
    /// Revoke a certificate by serial (hex) and write a fresh CRL envelope.
    Revoke {
        /// CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// Serial number, hex.
        #[arg(long)]
        serial: String,
        /// Where to write the CRL envelope (default DIR/ca.crl).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write a fresh CRL envelope.
    Crl {
        /// CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// Where to write it (default DIR/ca.crl).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// List issued certificates.
    List {
        /// CA directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue a single-use join token (for `[security] join_token`).
    Token {
        /// Where it acts.
        #[command(flatten)]
        target: Target,
        /// The only address the token may enrol.
        #[arg(long)]
        ip: Option<Ipv4Addr>,
        /// Lifetime: seconds, or with a unit (90s, 30m, 1h, 7d).
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
    /// List enrolment requests waiting for approval.
    Pending {
        /// Where it acts.
        #[command(flatten)]
        target: Target,
    },
    /// Approve a waiting request: the certificate reaches its node over
    /// the overlay.
    Approve {
        /// Where it acts.
        #[command(flatten)]
        target: Target,
        /// Queue id (from `pending`).
        id: u64,
    },
    /// Reject a waiting request.
    Reject {
        /// Where it acts.
        #[command(flatten)]
        target: Target,
        /// Queue id (from `pending`).
        id: u64,
    },
}

/// Where a command acts: the running CA node (through its control socket)
/// or, when none answers, the CA directory.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// State directory of the node serving the CA (its control socket).
    #[arg(long, default_value = "/var/lib/wow-node")]
    state_dir: PathBuf,
    /// CA directory, used when no CA node runs.
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Runs `request` on the CA node behind `target`, else on its directory.
fn on_ca(target: &Target, request: &CaRequest) -> Result<(), String> {
    let socket = target.state_dir.join(crate::control::SOCKET_FILE);
    let answer = ask_node(&socket, request).and_then(|answer| {
        if answer == crate::enrol::NOT_THE_CA && target.dir.is_some() {
            // The node here is not the CA's: use the directory.
            Err(std::io::Error::other(
                "the node there does not serve the CA",
            ))
        } else {
            Ok(answer)
        }
    });
    match answer {
        Ok(answer) => {
            if let Some(e) = answer.strip_prefix("error: ") {
                return Err(e.trim_end().to_string());
            }
            if answer.is_empty() {
                return Err(format!("no answer from {}", socket.display()));
            }
            print!("{answer}");
            Ok(())
        }
        Err(e) => {
            let Some(dir) = &target.dir else {
                return Err(format!(
                    "cannot reach the CA node at {} ({e}), and no --dir given",
                    socket.display()
                ));
            };
            let mut ca = open(dir)?;
            print!("{}", request.execute(SystemTime::now(), &mut ca)?);
            Ok(())
        }
    }
}

fn ask_node(socket: &Path, request: &CaRequest) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(request.to_line().as_bytes())?;
    let mut out = String::new();
    stream.read_to_string(&mut out)?;
    Ok(out)
}

/// Runs a CA subcommand.
pub fn run(command: CaCommand) -> ExitCode {
    match execute(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wow-node ca: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `days` days.
fn days(days: u64) -> Duration {
    Duration::from_secs(days.saturating_mul(86_400))
}

fn open(dir: &Path) -> Result<Ca<FileStore>, String> {
    FileStore::new(dir)
        .map_err(|e| e.to_string())?
        .open_ca(Policy::default())
        .map_err(|e| match e {
            ipsec_ca::CaError::Store(e @ ipsec_ca::StoreError::NoCa(_)) => {
                format!("{e} (run `wow-node ca init`)")
            }
            e => e.to_string(),
        })
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    write_atomic(path, bytes, mode).map_err(|e| e.to_string())
}

/// Issues a CRL and writes its envelope to `out` and its signed manifest
/// (see [`crate::crl_dht`]) next to it, for a node to publish.
fn write_crl<S: ipsec_ca::Store>(ca: &mut ipsec_ca::Ca<S>, out: &Path) -> Result<u64, String> {
    let crl = ca.issue_crl(SystemTime::now()).map_err(|e| e.to_string())?;
    let published = wow_core::crl_dht::Published::new(ca.identity(), crl.number, crl.envelope())
        .map_err(|e| e.to_string())?;
    write(
        &wow_core::crl_dht::manifest_path(out),
        &published.signed,
        0o644,
    )?;
    write(out, &published.envelope, 0o644)?;
    Ok(crl.number)
}

/// The DNS name certified for a host name in a zone (kept here for the
/// node's `[security] names`; the rule is ipsec-ca's).
pub use ipsec_ca::admin::host_name_in;

fn execute(command: CaCommand) -> Result<(), String> {
    match command {
        CaCommand::Init { dir, name, days } => {
            let identity = CaIdentity::create_root(
                SystemTime::now(),
                KeyType::Ed25519,
                &name,
                self::days(days),
            )
            .map_err(|e| e.to_string())?;
            let store = FileStore::new(&dir).map_err(|e| e.to_string())?;
            store
                .init_ca(identity, Policy::default())
                .map_err(|e| e.to_string())?;
            println!("CA \"{name}\" created in {}", dir.display());
        }
        CaCommand::Issue {
            dir,
            ip,
            out,
            days,
            names,
            domain,
            groups,
        } => {
            let groups = Groups::parse_list(&groups).map_err(|e| format!("--groups: {e}"))?;
            let mut ca = open(&dir)?;
            let names = names.iter().map(|name| host_name_in(name, &domain));
            let node = issue_node_in_groups(
                &mut ca,
                SystemTime::now(),
                ip,
                names,
                &groups,
                KeyType::Ed25519,
                Some(self::days(days)),
            )
            .map_err(|e| match e {
                IssueError::Names(e) => format!("--name: {e}"),
                e => e.to_string(),
            })?;
            std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
            write(
                &out.join(NODE_KEY_FILE),
                node.key.to_pem().as_bytes(),
                0o600,
            )?;
            write(&out.join(NODE_CERT_FILE), node.cert_pem().as_bytes(), 0o644)?;
            write(
                &out.join(CA_CERT_FILE),
                ca.identity().cert_pem().as_bytes(),
                0o644,
            )?;
            println!(
                "issued {ip} serial {} into {}",
                hex(&node.issued.serial),
                out.display()
            );
        }
        CaCommand::Sign { dir, csr, ip, out } => {
            let mut ca = open(&dir)?;
            let bytes = std::fs::read(&csr).map_err(|e| e.to_string())?;
            let der = der_or_pem("CERTIFICATE REQUEST", bytes).map_err(|e| e.to_string())?;
            let issued = ca
                .sign(SystemTime::now(), &der, ip, None)
                .map_err(|e| e.to_string())?;
            let cert = ipsec_ca::key::to_pem("CERTIFICATE", &issued.certificate);
            write(&out, cert.as_bytes(), 0o644)?;
            println!("signed {ip} serial {}", hex(&issued.serial));
        }
        CaCommand::Revoke { dir, serial, out } => {
            let mut ca = open(&dir)?;
            let serial = parse_serial(&serial).ok_or("serial must be hex")?;
            ca.revoke(SystemTime::now(), &serial, RevocationReason::Unspecified)
                .map_err(|e| e.to_string())?;
            let out = out.unwrap_or_else(|| dir.join(CRL_FILE));
            let number = write_crl(&mut ca, &out)?;
            println!("revoked; CRL {number} written to {}", out.display());
        }
        CaCommand::Crl { dir, out } => {
            let mut ca = open(&dir)?;
            let out = out.unwrap_or_else(|| dir.join(CRL_FILE));
            let number = write_crl(&mut ca, &out)?;
            println!("CRL {number} written to {}", out.display());
        }
        CaCommand::Token { target, ip, ttl } => {
            let ttl = crate::enrol::parse_ttl(&ttl)
                .ok_or("--ttl: expected seconds or a number with s, m, h or d")?;
            on_ca(
                &target,
                &CaRequest::Token {
                    ip,
                    ttl_secs: ttl.as_secs(),
                },
            )?;
        }
        CaCommand::Pending { target } => on_ca(&target, &CaRequest::Pending)?,
        CaCommand::Approve { target, id } => on_ca(&target, &CaRequest::Approve(id))?,
        CaCommand::Reject { target, id } => on_ca(&target, &CaRequest::Reject(id))?,
        CaCommand::List { dir } => {
            let ca = open(&dir)?;
            let now = SystemTime::now();
            println!("{:<34} {:<15} {:<8}", "serial", "ip", "state");
            for r in ca.issued() {
                let state = CertState::of(now, r);
                println!("{:<34} {:<15} {state}", hex(&r.serial), r.virtual_ip);
            }
        }
    }
    Ok(())
}
