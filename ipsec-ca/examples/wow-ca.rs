//! `wow-ca`: the command-line front end of the `ipsec-ca` crate.
//!
//! ```text
//! wow-ca init --dir CADIR [--key-type ed25519|p256] [--name NAME] [--days N] [--parent PARENTDIR]
//! wow-ca request --ip IP --key-out node.key --csr-out node.csr [--name NAME] [--key-type T]
//! wow-ca sign --dir CADIR --csr node.csr --source-ip IP --out node.pem [--days N] [--queue]
//! wow-ca list --dir CADIR [--issued]
//! wow-ca approve ID --dir CADIR [--out node.pem]
//! wow-ca reject ID --dir CADIR
//! wow-ca revoke --dir CADIR --cert node.pem
//! wow-ca crl --dir CADIR --out crl.pem [--envelope-out crl.env]
//! wow-ca verify --ca ca.pem [--chain chain.pem] [--crl crl.pem] --cert node.pem --ip IP
//! wow-ca sign-loop --dir CADIR --count N [--first-ip IP] [--compact-every N]   (crash-test driver)
//! ```
//!
//! Every refusal exits non-zero with one line `wow-ca: <reason>` on stderr.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ipsec_ca::file_store::write_atomic;
use ipsec_ca::key::{from_pem, to_pem};
use ipsec_ca::{
    Ca, CaIdentity, FileStore, KeyType, NodeKey, NodeRequest, Policy, RevocationReason, Verifier,
};
use std::time::{Duration, SystemTime};

#[derive(Parser)]
#[command(name = "wow-ca", about = "WOW virtual-network certificate authority")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a CA in DIR (root, or intermediate with --parent).
    Init {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "ed25519")]
        key_type: KeyType,
        #[arg(long, default_value = "wow CA")]
        name: String,
        #[arg(long, default_value_t = 3650)]
        days: u64,
        /// Directory of the parent CA: create an intermediate signed by it.
        #[arg(long)]
        parent: Option<PathBuf>,
    },
    /// Node side: generate a key and a CSR for a virtual IP.
    Request {
        #[arg(long)]
        ip: Ipv4Addr,
        #[arg(long)]
        key_out: PathBuf,
        #[arg(long)]
        csr_out: PathBuf,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value = "ed25519")]
        key_type: KeyType,
    },
    /// Sign a CSR (automatic approval), or queue it with --queue.
    Sign {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        csr: PathBuf,
        /// The authenticated virtual IP the request came from.
        #[arg(long)]
        source_ip: Ipv4Addr,
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        days: Option<u64>,
        #[arg(long)]
        queue: bool,
    },
    /// List the pending queue (or the issued index with --issued).
    List {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        issued: bool,
    },
    /// Approve a queued request.
    Approve {
        id: u64,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Reject a queued request.
    Reject {
        id: u64,
        #[arg(long)]
        dir: PathBuf,
    },
    /// Revoke an issued certificate.
    Revoke {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        cert: PathBuf,
    },
    /// Write a new CRL.
    Crl {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        envelope_out: Option<PathBuf>,
    },
    /// Verify a node certificate for a virtual IP.
    Verify {
        #[arg(long)]
        ca: PathBuf,
        #[arg(long)]
        chain: Option<PathBuf>,
        #[arg(long)]
        crl: Option<PathBuf>,
        #[arg(long)]
        cert: PathBuf,
        #[arg(long)]
        ip: Ipv4Addr,
    },
    /// Crash-test driver: generate and sign COUNT requests, printing
    /// `SERIAL_HEX IP` after each certificate is durably recorded.
    SignLoop {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        count: u32,
        #[arg(long, default_value = "10.128.0.1")]
        first_ip: Ipv4Addr,
        /// Journal lines between snapshots (small values exercise compaction).
        #[arg(long)]
        compact_every: Option<usize>,
    },
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()).into())
}

fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    Ok(write_atomic(path, text.as_bytes(), mode)?)
}

fn open(dir: &Path) -> Result<Ca<FileStore>> {
    open_with(dir, None)
}

fn open_with(dir: &Path, compact_every: Option<usize>) -> Result<Ca<FileStore>> {
    let mut store = FileStore::new(dir)?;
    if let Some(lines) = compact_every {
        store.set_compact_every(lines);
    }
    store.open_ca(Policy::default()).map_err(|e| match e {
        ipsec_ca::CaError::Store(e @ ipsec_ca::StoreError::NoCa(_)) => {
            format!("{e} (run init)").into()
        }
        e => e.into(),
    })
}

fn hex(bytes: &[u8]) -> String {
    ipsec_ca::state::hex_encode(bytes)
}

fn run(cli: Cli) -> Result<()> {
    let now = SystemTime::now();
    match cli.command {
        Command::Init {
            dir,
            key_type,
            name,
            days,
            parent,
        } => {
            let store = FileStore::new(&dir)?;
            if store.has_identity() {
                return Err(format!("{} already holds a CA", dir.display()).into());
            }
            let validity = Duration::from_secs(days.saturating_mul(86_400));
            let identity = match parent {
                None => CaIdentity::create_root(now, key_type, &name, validity)?,
                Some(parent) => {
                    let parent = FileStore::new(parent)?.load_identity()?;
                    CaIdentity::create_intermediate(now, &parent, key_type, &name, validity)?
                }
            };
            let ca = store.init_ca(identity, Policy::default())?;
            println!(
                "initialised {} CA in {}",
                ca.identity().key_type(),
                dir.display()
            );
        }
        Command::Request {
            ip,
            key_out,
            csr_out,
            name,
            key_type,
        } => {
            let key = NodeKey::generate(key_type)?;
            let mut request = NodeRequest::new(ip);
            request.common_name = name;
            let csr = key.certificate_request(&request)?;
            write(&key_out, &key.to_pem(), 0o600)?;
            write(&csr_out, &to_pem("CERTIFICATE REQUEST", &csr), 0o644)?;
            println!("{}", key.overlay_address());
        }
        Command::Sign {
            dir,
            csr,
            source_ip,
            out,
            days,
            queue,
        } => {
            let mut ca = open(&dir)?;
            let csr = from_pem("CERTIFICATE REQUEST", &read(&csr)?)?;
            let validity = days.map(|d| Duration::from_secs(d.saturating_mul(86_400)));
            if queue {
                let id = ca.enqueue(now, &csr, source_ip, validity, 0)?;
                println!("queued as {id}");
            } else {
                let out = out.ok_or("--out is required unless --queue")?;
                let issued = ca.sign(now, &csr, source_ip, validity)?;
                write(&out, &to_pem("CERTIFICATE", &issued.certificate), 0o644)?;
                println!("issued serial {}", hex(&issued.serial));
            }
        }
        Command::List { dir, issued } => {
            let ca = open(&dir)?;
            if issued {
                for rec in ca.issued() {
                    let state = ipsec_ca::admin::CertState::of(now, rec);
                    println!("{} {} {state}", hex(&rec.serial), rec.virtual_ip);
                }
            } else {
                for p in ca.pending() {
                    let name = ipsec_ca::parse_csr(&p.csr)
                        .ok()
                        .and_then(|i| i.common_name)
                        .unwrap_or_default();
                    println!("{} {} {name}", p.id, p.source_ip);
                }
            }
        }
        Command::Approve { id, dir, out } => {
            let mut ca = open(&dir)?;
            let issued = ca.approve(now, id)?;
            if let Some(out) = out {
                write(&out, &to_pem("CERTIFICATE", &issued.certificate), 0o644)?;
            }
            println!("issued serial {}", hex(&issued.serial));
        }
        Command::Reject { id, dir } => {
            let mut ca = open(&dir)?;
            let rejected = ca.reject(id)?;
            println!("rejected {} from {}", rejected.id, rejected.source_ip);
        }
        Command::Revoke { dir, cert } => {
            let mut ca = open(&dir)?;
            let der = from_pem("CERTIFICATE", &read(&cert)?)?;
            ca.revoke_certificate(now, &der, RevocationReason::Unspecified)?;
            println!("revoked");
        }
        Command::Crl {
            dir,
            out,
            envelope_out,
        } => {
            let mut ca = open(&dir)?;
            let crl = ca.issue_crl(now)?;
            write(&out, &to_pem("X509 CRL", &crl.der), 0o644)?;
            if let Some(path) = envelope_out {
                write_atomic(&path, &crl.envelope(), 0o644)?;
            }
            println!("CRL number {}", crl.number);
        }
        Command::Verify {
            ca,
            chain,
            crl,
            cert,
            ip,
        } => {
            let anchor = from_pem("CERTIFICATE", &read(&ca)?)?;
            let mut verifier = Verifier::new(&anchor)?;
            if let Some(chain) = chain {
                // Nearest first: add from the root side down.
                let mut certs = ipsec_ca::key::all_from_pem("CERTIFICATE", &read(&chain)?)?;
                certs.reverse();
                for der in certs.iter().filter(|d| **d != anchor) {
                    verifier.add_intermediate(now, der)?;
                }
            }
            if let Some(crl) = crl {
                verifier.set_crl(now, &from_pem("X509 CRL", &read(&crl)?)?)?;
            }
            let peer = verifier.verify(now, &from_pem("CERTIFICATE", &read(&cert)?)?, ip)?;
            println!(
                "OK {} serial {} {} until {}",
                peer.virtual_ip,
                hex(&peer.serial),
                peer.key_type,
                ipsec_ca::admin::format_time(peer.not_after)
            );
        }
        Command::SignLoop {
            dir,
            count,
            first_ip,
            compact_every,
        } => {
            let mut ca = open_with(&dir, compact_every)?;
            let key = NodeKey::generate(KeyType::Ed25519)?;
            let stdout = std::io::stdout();
            let base = u32::from(first_ip);
            for i in 0..count {
                // A fresh key per IP would dominate the loop; distinct IPs with
                // one key are distinct certificates all the same.
                let ip = Ipv4Addr::from(base.wrapping_add(i));
                let csr = key.certificate_request(&NodeRequest::new(ip))?;
                let issued = ca.sign(now, &csr, ip, None)?;
                let mut out = stdout.lock();
                writeln!(out, "{} {ip}", hex(&issued.serial))?;
                out.flush()?;
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wow-ca: {e}");
            ExitCode::FAILURE
        }
    }
}
