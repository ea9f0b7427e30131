//! The node's membership of the CA's network, sans-IO: its certificate
//! from enrolment to renewal, and the CRL it keeps.
//!
//! A [`Membership`] sits beside a [`Core`] and is driven the same way:
//! [`Membership::handle_event`] with every [`CoreEvent`] the core emits,
//! [`Membership::handle_timeout`] at [`Membership::poll_timeout`], and
//! [`Membership::poll_output`] for what the driver must do with files or
//! with a CA of its own:
//!
//! - on the guest's first lease of an uncertified node it builds a
//!   certificate request (the address and the guest's host name) and sends
//!   it to the CA node over the overlay ([`EnrolVia::Overlay`]) or hands it
//!   to the driver ([`EnrolVia::Driver`], as the in-process demo's CA
//!   signs);
//! - an issued certificate is installed in the core (and in the overlay's
//!   [`CaIdentityHandle`]) and handed out to be kept
//!   ([`Output::KeepCertificate`]);
//! - every minute the CA node's announcement is put again and the
//!   certificate's lifetime checked: a warning within three days of
//!   expiry, a renewal at two thirds ([`crate::enrol::Lifetime`]);
//! - every CRL refresh period the configured CRL file is asked for
//!   ([`Output::ReadCrlFile`], answered with [`Membership::crl_file`]),
//!   the CA node re-issues its CRL, a newer one is fetched from the
//!   overlay, and the node warns while it holds no current CRL; each CRL
//!   the core accepts is handed out to be kept ([`Output::KeepCrl`]), so
//!   that a restart ([`Membership::load_crl_cache`]) never falls back to
//!   an older one.
//!
//! Time is a parameter throughout: `now` for deadlines, `wall` for
//! certificates and CRLs.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime};

use dhcp_virt::LeaseStore;
use ipsec_ca::{JoinToken, NodeKey, NodeRequest};

use crate::core::{Core, CoreError, CoreEvent, Credentials};
use crate::enrol::{Lifetime, LifetimeAction, RENEW_RETRY_SECS};
use crate::overlay_identity::CaIdentityHandle;

/// How often the certificate's lifetime is checked and the CA node's
/// announcement put again (its DHT TTL is an hour).
pub const LIFETIME_CHECK: Duration = Duration::from_secs(60);

/// Where certificate requests go.
#[derive(Debug, Clone)]
pub enum EnrolVia {
    /// To the CA node over the overlay ([`Core::start_enrolment`]); the
    /// first request carries the join token, if any.
    Overlay(Option<JoinToken>),
    /// To the driver as [`Output::Sign`], answered with
    /// [`Membership::issued`] (a CA in the driver's hands, as in the demo).
    Driver,
}

/// What a [`Membership`] starts from.
#[derive(Debug)]
pub struct MembershipConfig {
    /// The node key: its hash is the ring address, certificates bind it.
    pub key: NodeKey,
    /// The network's CA certificate (DER); `None`: no security at all.
    pub ca_certificate: Option<Vec<u8>>,
    /// The node's certificate (DER), if it has one.
    pub certificate: Option<Vec<u8>>,
    /// Enrol on the guest's first lease when uncertified, this way;
    /// `None`: never enrol (renewals still go to the CA node).
    pub enrol: Option<EnrolVia>,
    /// The network's DNS zone: host names are certified in it.
    pub domain: String,
    /// How often CRLs are refreshed.
    pub crl_refresh: Duration,
    /// Whether a CRL file is configured ([`Output::ReadCrlFile`] is asked
    /// for only then).
    pub crl_file: bool,
    /// The overlay identity's handle, kept up to date with the certificate
    /// and the CRL.
    pub overlay: Option<CaIdentityHandle>,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Read the configured CRL file and its signed manifest, and hand them
    /// to [`Membership::crl_file`].
    ReadCrlFile,
    /// Keep this CRL envelope (the newest accepted) for the next start.
    KeepCrl(Vec<u8>),
    /// Keep this certificate (DER): the node's from now on.
    KeepCertificate(Vec<u8>),
    /// Have this certificate request (DER) signed for `ip` and answer with
    /// [`Membership::issued`] ([`EnrolVia::Driver`] only).
    Sign {
        /// The request.
        csr: Vec<u8>,
        /// The address it asks for.
        ip: Ipv4Addr,
    },
    /// A certificate is installed: private traffic is protected.
    Certified {
        /// The certified address.
        ip: Ipv4Addr,
        /// Whether it replaced one (a renewal).
        renewed: bool,
    },
    /// Enrolment or installation failed (for display; the log has it too).
    Failed(String),
}

/// The configured CRL file as the driver read it.
#[derive(Debug, Clone)]
pub struct CrlFile {
    /// The CRL envelope.
    pub envelope: Vec<u8>,
    /// The signed manifest beside it (`wow-node ca crl` writes both), or
    /// why it could not be read.
    pub manifest: Result<Vec<u8>, String>,
}

/// Why a membership cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MembershipError {
    /// The certificate binds no IPv4 address.
    #[error("the certificate names no IPv4 address")]
    NoAddress,
    /// A certificate without the CA certificate to check it.
    #[error("a certificate needs the CA certificate")]
    NoCa,
    /// The node key cannot sign DHT records.
    #[error("node key: {0}")]
    Key(String),
    /// The core refused the identity.
    #[error(transparent)]
    Core(#[from] CoreError),
}

/// The node's certificate and CRL, from enrolment to renewal (see the
/// [module docs](self)).
#[derive(Debug)]
pub struct Membership {
    key: NodeKey,
    ca_certificate: Option<Vec<u8>>,
    certificate: Option<Vec<u8>>,
    enrol: Option<EnrolVia>,
    enrolment_started: bool,
    domain: String,
    lifetime: Lifetime,
    crl_refresh: Duration,
    crl_file: bool,
    /// The configured CRL file's bytes, last applied.
    crl_file_loaded: Option<Vec<u8>>,
    /// Whether the node was last seen without a current CRL.
    crl_stale: bool,
    crl_at: Instant,
    lifetime_at: Instant,
    overlay: Option<CaIdentityHandle>,
    outputs: VecDeque<Output>,
}

/// The overlay's DHT record signer over `key`. Its versions count up from
/// `wall` in microseconds, so that they increase across restarts.
pub fn record_signer(
    key: &NodeKey,
    wall: SystemTime,
) -> Result<Box<dyn overlay_core::RecordSigner>, MembershipError> {
    let key_type = match key.key_type() {
        ipsec_ca::KeyType::Ed25519 => overlay_core::KeyType::Ed25519,
        ipsec_ca::KeyType::EcdsaP256 => overlay_core::KeyType::EcdsaP256,
        other => {
            return Err(MembershipError::Key(format!(
                "type {other:?} cannot sign DHT records"
            )));
        }
    };
    let micros = wall
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    let signer = overlay_core::KeySigner::from_pkcs8(key_type, key.pkcs8_der(), micros)
        .map_err(|e| MembershipError::Key(e.to_string()))?;
    Ok(Box::new(signer))
}

pub use ipsec_ca::admin::host_name_in;

/// Logs a core event for the operator.
pub fn log_event(event: &CoreEvent) {
    match event {
        CoreEvent::Joined => tracing::info!("joined the ring"),
        CoreEvent::Leased {
            addr,
            hostname,
            renewed,
        } => tracing::info!(%addr, ?hostname, renewed, "guest leased"),
        CoreEvent::SaEstablished { peer } => tracing::info!(%peer, "security association up"),
        CoreEvent::SaFailed { peer, reason } => {
            tracing::warn!(%peer, %reason, "security association failed")
        }
        CoreEvent::Link { peer, up } => tracing::debug!(%peer, up, "overlay link"),
        CoreEvent::EnrolmentStatus(status) if status.starts_with("Pending") => tracing::info!(
            %status,
            "enrolment queued: approve it with `wow-node ca pending` and `wow-node ca approve ID` on the CA node's host"
        ),
        CoreEvent::EnrolmentStatus(status) => tracing::info!(%status, "enrolment"),
        CoreEvent::CrlFetched(_)
        | CoreEvent::Enrolled(_)
        | CoreEvent::MappingChanged { .. }
        | CoreEvent::DhtValues { .. } => {}
    }
}

impl Membership {
    /// A membership from `config` at `now`; its first lifetime check and
    /// CRL refresh are due at once.
    pub fn new(now: Instant, config: MembershipConfig) -> Result<Membership, MembershipError> {
        if let Some(cert) = &config.certificate {
            if config.ca_certificate.is_none() {
                return Err(MembershipError::NoCa);
            }
            crate::records::certified_ip(cert).ok_or(MembershipError::NoAddress)?;
        }
        Ok(Membership {
            lifetime: config
                .certificate
                .as_deref()
                .map(Lifetime::of)
                .unwrap_or_default(),
            key: config.key,
            ca_certificate: config.ca_certificate,
            certificate: config.certificate,
            enrol: config.enrol,
            enrolment_started: false,
            domain: config.domain,
            crl_refresh: config.crl_refresh.max(Duration::from_secs(1)),
            crl_file: config.crl_file,
            crl_file_loaded: None,
            crl_stale: false,
            crl_at: now,
            lifetime_at: now,
            overlay: config.overlay,
            outputs: VecDeque::new(),
        })
    }

    /// The address the node's certificate binds, if it has one.
    pub fn certified_ip(&self) -> Option<Ipv4Addr> {
        self.certificate
            .as_deref()
            .and_then(crate::records::certified_ip)
    }

    /// notBefore and notAfter of the certificate in use, Unix seconds.
    pub fn validity(&self) -> Option<(i64, i64)> {
        self.lifetime.validity
    }

    /// The key LAN announcements in `network` are authenticated with
    /// (see [`overlay_core::lan`]): from the shared `secret` if set, else
    /// from the CA certificate; none without either.
    pub fn lan_key(
        &self,
        secret: Option<&str>,
        network: ipnet::Ipv4Net,
    ) -> Option<overlay_core::lan::NetworkKey> {
        let cidr = network.to_string();
        match (secret, &self.ca_certificate) {
            (Some(secret), _) => Some(overlay_core::lan::NetworkKey::from_secret(
                secret.as_bytes(),
                &cidr,
                &self.domain,
            )),
            (None, Some(ca)) => Some(overlay_core::lan::NetworkKey::from_ca_certificate(
                ca,
                &cidr,
                &self.domain,
            )),
            (None, None) => None,
        }
    }

    /// Whether the node has no certificate and enrols on the guest's first
    /// lease.
    pub fn enrols(&self) -> bool {
        self.enrol.is_some() && self.certificate.is_none() && self.ca_certificate.is_some()
    }

    fn credentials(&self, certificate: &[u8]) -> Option<Credentials> {
        Some(Credentials {
            certificate: certificate.to_vec(),
            key: self.key.pkcs8_der().to_vec(),
            ca_certificate: self.ca_certificate.clone()?,
            virtual_ip: crate::records::certified_ip(certificate)?,
        })
    }

    /// Sets `core` up: DHT records signed with the node key, the
    /// certificate installed, or without one but with a CA the private
    /// prefix closed until enrolment (fail closed).
    pub fn start<S: LeaseStore>(
        &mut self,
        core: &mut Core<S>,
        now: Instant,
        wall: SystemTime,
    ) -> Result<(), MembershipError> {
        core.set_record_signer(record_signer(&self.key, wall)?);
        if let Some(c) = self
            .certificate
            .as_deref()
            .and_then(|c| self.credentials(c))
        {
            if let Some(h) = &self.overlay {
                h.set_certificate(c.certificate.clone());
            }
            core.install_identity(now, wall, &c)?;
            tracing::info!(ip = %c.virtual_ip, "certificate loaded: private traffic is protected");
        } else if self.ca_certificate.is_some() {
            core.set_closed_until_enrolled(true);
            tracing::warn!("no certificate yet: the private prefix is closed until enrolment");
        } else {
            tracing::warn!(
                "no certificate: peers that require security associations will drop our traffic"
            );
        }
        Ok(())
    }

    /// The CRL kept at the last run ([`Output::KeepCrl`]), loaded at start.
    pub fn load_crl_cache<S: LeaseStore>(
        &mut self,
        core: &mut Core<S>,
        now: Instant,
        wall: SystemTime,
        envelope: &[u8],
    ) {
        if core.handle_crl(now, wall, envelope) {
            tracing::info!("CRL loaded from the cache");
        }
    }

    /// Acts on (and logs) an event of `core`: the first lease starts
    /// enrolment, an issued certificate is installed, fetched CRLs are
    /// loaded.
    pub fn handle_event<S: LeaseStore>(
        &mut self,
        core: &mut Core<S>,
        now: Instant,
        wall: SystemTime,
        event: &CoreEvent,
    ) {
        match event {
            CoreEvent::Leased { addr, hostname, .. } => {
                if self.enrols() && !self.enrolment_started {
                    self.enrolment_started = true;
                    // The guest's host name, as the DNS will answer it, is
                    // certified with the address.
                    let name = hostname
                        .as_deref()
                        .map(crate::core::sanitize_hostname)
                        .filter(|n| !n.is_empty())
                        .map(|n| host_name_in(&n, &self.domain));
                    self.request(core, now, *addr, name.into_iter().collect(), false);
                }
                log_event(event);
            }
            CoreEvent::Enrolled(certificate) => self.install(core, now, wall, certificate),
            CoreEvent::CrlFetched(envelopes) => {
                for e in envelopes {
                    if core.handle_crl(now, wall, e) {
                        tracing::info!("newer CRL loaded from the overlay");
                        self.outputs.push_back(Output::KeepCrl(e.clone()));
                    }
                }
            }
            other => log_event(other),
        }
    }

    /// The driver's answer to [`Output::Sign`]: the certificate, or why
    /// its CA refused.
    pub fn issued<S: LeaseStore>(
        &mut self,
        core: &mut Core<S>,
        now: Instant,
        wall: SystemTime,
        certificate: Result<Vec<u8>, String>,
    ) {
        match certificate {
            Ok(c) => self.install(core, now, wall, &c),
            Err(e) => {
                tracing::warn!(error = %e, "enrolment failed");
                self.outputs
                    .push_back(Output::Failed(format!("enrolment failed: {e}")));
            }
        }
    }

    /// Sends a request for `ip` and `names`: enrolment, or a `renewal`.
    fn request<S: LeaseStore>(
        &mut self,
        core: &mut Core<S>,
        now: Instant,
        ip: Ipv4Addr,
        names: Vec<String>,
        renewal: bool,
    ) {
        let Some(ca) = self.ca_certificate.as_deref() else {
            return;
        };
        let request = names
            .into_iter()
            .fold(NodeRequest::new(ip), |r, n| r.with_dns_name(n));
        let csr = match self.key.certificate_request(&request) {
            Ok(csr) => csr,
            Err(e) => {
                tracing::warn!(error = %e, renewal, "cannot build the certificate request");
                self.outputs
                    .push_back(Output::Failed(format!("enrolment failed: {e}")));
                return;
            }
        };
        let token = match &self.enrol {
            Some(EnrolVia::Driver) => {
                self.outputs.push_back(Output::Sign { csr, ip });
                return;
            }
            Some(EnrolVia::Overlay(token)) if !renewal => token.as_ref(),
            _ => None,
        };
        let id = crate::core::os_random_u64();
        match core.start_enrolment(now, &csr, self.key.spki_der(), ca, ip, id, token) {
            Ok(()) if renewal => tracing::info!(%ip, "renewing the certificate"),
            Ok(()) => {
                let raw = ipsec_ca::state::hex_encode(self.key.public_key_raw());
                let key = raw.get(..16).unwrap_or(&raw);
                tracing::info!(
                    addr = %ip,
                    %key,
                    "enrolling with the CA (the key `wow-node ca pending` shows)"
                );
            }
            Err(e) => tracing::warn!(error = %e, renewal, "cannot enrol"),
        }
    }

    /// An issued certificate: kept and installed, unless it is the current
    /// one again (the CA answered a renewal early).
    fn install<S: LeaseStore>(
        &mut self,
        core: &mut Core<S>,
        now: Instant,
        wall: SystemTime,
        certificate: &[u8],
    ) {
        if self.lifetime.renewing && Lifetime::of(certificate).validity == self.lifetime.validity {
            // The CA's clock sees less than two thirds of the lifetime
            // gone: ask again later, keep the security associations.
            self.lifetime.renewing = false;
            self.lifetime.not_before_retry =
                crate::enrol::unix_secs(wall).saturating_add(RENEW_RETRY_SECS);
            tracing::info!("the CA kept the current certificate; renewal retried later");
            return;
        }
        let Some(credentials) = self.credentials(certificate) else {
            return;
        };
        self.outputs
            .push_back(Output::KeepCertificate(certificate.to_vec()));
        let ip = credentials.virtual_ip;
        match core.install_identity(now, wall, &credentials) {
            Ok(()) => {
                if let Some(h) = &self.overlay {
                    h.set_certificate(certificate.to_vec());
                }
                let renewed = self.lifetime.renewing;
                self.lifetime = Lifetime::of(certificate);
                self.certificate = Some(certificate.to_vec());
                // The core re-applies the last CRL to the new verifier;
                // the configured file is read again too.
                self.crl_file_loaded = None;
                if renewed {
                    tracing::info!(%ip, "certificate renewed");
                } else {
                    tracing::info!(%ip, "enrolled: private traffic is protected");
                }
                self.outputs.push_back(Output::Certified { ip, renewed });
            }
            Err(e) => {
                tracing::warn!(error = %e, "issued certificate refused");
                self.outputs
                    .push_back(Output::Failed(format!("identity refused: {e}")));
            }
        }
    }

    /// When [`Membership::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Instant {
        self.crl_at.min(self.lifetime_at)
    }

    /// Runs what is due at `now`: the lifetime check (and the CA node's
    /// announcement), the CRL refresh.
    pub fn handle_timeout<S: LeaseStore>(
        &mut self,
        core: &mut Core<S>,
        now: Instant,
        wall: SystemTime,
    ) {
        if now >= self.lifetime_at {
            self.lifetime_at = now + LIFETIME_CHECK;
            self.check_lifetime(core, now, wall);
        }
        if now >= self.crl_at {
            self.crl_at = now + self.crl_refresh;
            if self.crl_file {
                self.outputs.push_back(Output::ReadCrlFile);
            } else {
                self.refresh_crl(core, now, wall, None);
            }
        }
    }

    fn check_lifetime<S: LeaseStore>(
        &mut self,
        core: &mut Core<S>,
        now: Instant,
        wall: SystemTime,
    ) {
        core.announce_ca(now);
        if let Some(warning) = self.lifetime.warning(wall) {
            tracing::warn!(%warning, "renew the certificate");
        }
        if self.lifetime.action(wall) == LifetimeAction::Renew
            && let Some(ip) = core.identity_ip()
            && self.ca_certificate.is_some()
        {
            self.lifetime.renewing = true;
            // A renewal keeps the certified host names.
            let names = self
                .certificate
                .as_deref()
                .and_then(|der| ipsec_ca::verify::certificate_dns_names(der).ok())
                .unwrap_or_default();
            self.request(core, now, ip, names, true);
        }
    }

    /// The driver's answer to [`Output::ReadCrlFile`]: the file's CRL (if
    /// it could be read) is loaded and served when it changed, then the
    /// refresh goes on.
    pub fn crl_file<S: LeaseStore>(
        &mut self,
        core: &mut Core<S>,
        now: Instant,
        wall: SystemTime,
        file: Option<CrlFile>,
    ) {
        self.refresh_crl(core, now, wall, file);
    }

    fn refresh_crl<S: LeaseStore>(
        &mut self,
        core: &mut Core<S>,
        now: Instant,
        wall: SystemTime,
        file: Option<CrlFile>,
    ) {
        if let Some(file) = file
            && self.crl_file_loaded.as_ref() != Some(&file.envelope)
        {
            let ok = core.handle_crl(now, wall, &file.envelope);
            tracing::info!(accepted = ok, "CRL loaded from file");
            if ok {
                self.outputs
                    .push_back(Output::KeepCrl(file.envelope.clone()));
            }
            match file.manifest {
                Ok(signed) => {
                    match crate::crl_dht::Published::from_signed(signed, file.envelope.clone()) {
                        Ok(p) => core.serve_crl(now, p),
                        Err(e) => {
                            tracing::warn!(error = %e, "CRL not published: its manifest does not match")
                        }
                    }
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    "CRL not published: no signed manifest (`wow-node ca crl` writes it)"
                ),
            }
            self.crl_file_loaded = Some(file.envelope);
        }
        if let Some(number) = core.refresh_crl(now, wall) {
            tracing::info!(number, "CRL issued and published");
        }
        core.fetch_crl(now);
        let status = core.crl_status(wall);
        let stale = status.is_some_and(|s| s.stale);
        if stale && !self.crl_stale {
            tracing::warn!(
                number = status.map_or(0, |s| s.number),
                "no current CRL (past nextUpdate and the grace, or none received): \
                 new security associations are refused until one arrives"
            );
        } else if self.crl_stale && !stale {
            tracing::info!("a current CRL is loaded again");
        }
        self.crl_stale = stale;
        // The overlay admits by the same CRL the security associations use.
        if let Some(h) = &self.overlay {
            h.load_crl(core.crl_envelope(), wall);
        }
    }

    /// The next thing the driver must do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }
}
