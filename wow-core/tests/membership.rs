//! The node's membership driven as `wow-node up` and `demo` drive it:
//! enrolment on the first lease, an early renewal answer, the CRL file and
//! the CRL cache.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use dhcp_virt::MemoryStore;
use ipsec_ca::{Ca, CaIdentity, KeyType, MemStore, NodeKey, Policy};
use overlay_core::Address;
use wow_core::core::{Core, CoreEvent};
use wow_core::demo;
use wow_core::membership::{CrlFile, EnrolVia, Membership, MembershipConfig, Output};

const IP: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 7);

fn core(now: Instant) -> Core<MemoryStore> {
    let endpoint = SocketAddr::from(([127, 0, 0, 1], 10001));
    Core::new_with_insecure_seed(
        now,
        std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000),
        demo::settings(),
        demo::overlay_config(endpoint),
        Address::from_key(b"membership"),
        MemoryStore::new(),
        5,
    )
    .unwrap()
}

fn ca() -> (Ca<MemStore>, Vec<u8>) {
    let identity = CaIdentity::create_root(
        SystemTime::now(),
        KeyType::Ed25519,
        "membership test CA",
        std::time::Duration::from_secs(86_400),
    )
    .unwrap();
    let der = identity.cert_der().to_vec();
    let ca = Ca::open_with_insecure_seed(identity, Policy::default(), MemStore::default(), [3; 32])
        .unwrap();
    (ca, der)
}

fn membership(ca_der: &[u8], crl_file: bool, now: Instant) -> Membership {
    Membership::new(
        now,
        MembershipConfig {
            key: NodeKey::generate(KeyType::Ed25519).unwrap(),
            ca_certificate: Some(ca_der.to_vec()),
            certificate: None,
            enrol: Some(EnrolVia::Driver),
            domain: "wow.internal".into(),
            crl_refresh: Duration::from_secs(600),
            crl_file,
            overlay: None,
        },
    )
    .unwrap()
}

fn outputs(m: &mut Membership) -> Vec<Output> {
    std::iter::from_fn(|| m.poll_output()).collect()
}

fn leased(hostname: &str) -> CoreEvent {
    leased_at(IP, hostname)
}

fn leased_at(addr: Ipv4Addr, hostname: &str) -> CoreEvent {
    CoreEvent::Leased {
        addr,
        hostname: Some(hostname.into()),
        renewed: false,
    }
}

/// A node enrolled by `ca`: its core, its membership and its certificate.
fn enrolled_by(
    ca: &mut Ca<MemStore>,
    ca_der: &[u8],
    now: Instant,
    wall: SystemTime,
    crl_file: bool,
    ip: Ipv4Addr,
) -> (Core<MemoryStore>, Membership, Vec<u8>) {
    let mut core = core(now);
    let mut m = membership(ca_der, crl_file, now);
    m.start(&mut core, now, wall).unwrap();
    m.handle_event(
        &mut core,
        now,
        wall,
        &leased_at(ip, &format!("web-{}", ip.octets()[3])),
    );
    let Some(Output::Sign { csr, ip }) = m.poll_output() else {
        panic!("no request")
    };
    let cert = ca.sign(wall, &csr, ip, None).unwrap().certificate;
    m.issued(&mut core, now, wall, Ok(cert.clone()));
    outputs(&mut m);
    (core, m, cert)
}

#[test]
fn an_uncertified_node_enrols_once_on_its_first_lease_and_installs_its_certificate() {
    let (now, wall) = (Instant::now(), SystemTime::now());
    let (mut ca, ca_der) = ca();
    let mut core = core(now);
    let mut m = membership(&ca_der, false, now);
    m.start(&mut core, now, wall).unwrap();
    assert!(core.is_closed(), "fail closed until enrolled");
    assert!(m.enrols());

    m.handle_event(&mut core, now, wall, &leased("Web-1"));
    let out = outputs(&mut m);
    let [Output::Sign { csr, ip }] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(*ip, IP);
    // The guest's host name, as the DNS answers it, is certified too.
    let info = ipsec_ca::parse_csr(csr).unwrap();
    assert_eq!(info.dns_names, vec!["web-1.wow.internal".to_string()]);
    // A second lease does not ask again.
    m.handle_event(&mut core, now, wall, &leased("Web-1"));
    assert!(outputs(&mut m).is_empty());

    let cert = ca.sign(wall, csr, IP, None).unwrap().certificate;
    m.issued(&mut core, now, wall, Ok(cert.clone()));
    assert_eq!(
        outputs(&mut m),
        vec![
            Output::KeepCertificate(cert),
            Output::Certified {
                ip: IP,
                renewed: false
            }
        ]
    );
    assert!(core.is_secure());
    assert!(!core.is_closed());
    assert!(!m.enrols());
    assert_eq!(m.certified_ip(), Some(IP));
    assert!(m.validity().is_some());
}

#[test]
fn a_refused_request_is_reported_and_leaves_the_node_closed() {
    let (now, wall) = (Instant::now(), SystemTime::now());
    let (_, ca_der) = ca();
    let mut core = core(now);
    let mut m = membership(&ca_der, false, now);
    m.start(&mut core, now, wall).unwrap();
    m.handle_event(&mut core, now, wall, &leased("web"));
    outputs(&mut m);
    m.issued(&mut core, now, wall, Err("refused".into()));
    assert_eq!(
        outputs(&mut m),
        vec![Output::Failed("enrolment failed: refused".into())]
    );
    assert!(core.is_closed());
}

#[test]
fn a_renewal_answered_with_the_current_certificate_is_retried_an_hour_later() {
    let (now, wall) = (Instant::now(), SystemTime::now());
    let (mut ca, ca_der) = ca();
    let (mut core, mut m, cert) = enrolled_by(&mut ca, &ca_der, now, wall, false, IP);
    let (from, to) = m.validity().unwrap();
    let at = |unix: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(unix as u64);
    let two_thirds = from + (to - from) * 2 / 3;

    // Before two thirds: no renewal.
    let mut t = now + Duration::from_secs(1);
    m.handle_timeout(&mut core, t, at(two_thirds - 10));
    assert!(outputs(&mut m).is_empty());

    // At two thirds: a renewal request, keeping the certified name.
    t += wow_core::membership::LIFETIME_CHECK;
    m.handle_timeout(&mut core, t, at(two_thirds));
    let out = outputs(&mut m);
    let [Output::Sign { csr, ip }] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(*ip, IP);
    let info = ipsec_ca::parse_csr(csr).unwrap();
    assert_eq!(info.dns_names, vec!["web-7.wow.internal".to_string()]);

    // The CA answers with the current certificate: nothing is installed
    // and no request follows before an hour has passed.
    m.issued(&mut core, t, at(two_thirds), Ok(cert));
    assert!(outputs(&mut m).is_empty());
    t += wow_core::membership::LIFETIME_CHECK;
    m.handle_timeout(&mut core, t, at(two_thirds + 60));
    assert!(outputs(&mut m).is_empty());
    t += wow_core::membership::LIFETIME_CHECK;
    m.handle_timeout(&mut core, t, at(two_thirds + 3600));
    assert!(matches!(outputs(&mut m).as_slice(), [Output::Sign { .. }]));
}

#[test]
fn the_crl_file_is_asked_for_each_refresh_applied_once_and_kept() {
    let (now, wall) = (Instant::now(), SystemTime::now());
    let (mut ca, ca_der) = ca();
    let (mut core, mut m, _) = enrolled_by(&mut ca, &ca_der, now, wall, true, IP);
    let crl = ca.issue_crl(wall).unwrap();
    let envelope = crl.envelope().to_vec();
    let file = || {
        Some(CrlFile {
            envelope: envelope.clone(),
            manifest: Err("no manifest".into()),
        })
    };

    m.handle_timeout(&mut core, now, wall);
    assert_eq!(outputs(&mut m), vec![Output::ReadCrlFile]);
    m.crl_file(&mut core, now, wall, file());
    assert_eq!(outputs(&mut m), vec![Output::KeepCrl(envelope.clone())]);
    assert_eq!(core.crl_envelope(), Some(envelope.as_slice()));

    // The next refresh reads the file again; unchanged, it is not kept
    // again.
    let later = now + Duration::from_secs(600);
    assert!(m.poll_timeout() <= later);
    m.handle_timeout(&mut core, later, wall);
    assert_eq!(outputs(&mut m), vec![Output::ReadCrlFile]);
    m.crl_file(&mut core, later, wall, file());
    assert!(outputs(&mut m).is_empty());

    // After a restart the cache brings it back; another CA's does not load.
    let ip2 = Ipv4Addr::new(10, 128, 0, 8);
    let (mut core2, mut m2, _) = enrolled_by(&mut ca, &ca_der, now, wall, false, ip2);
    let (mut other, other_der) = self::ca();
    let (mut core3, mut m3, _) = enrolled_by(&mut other, &other_der, now, wall, false, IP);
    m2.load_crl_cache(&mut core2, now, wall, &envelope);
    assert_eq!(core2.crl_envelope(), Some(envelope.as_slice()));
    m3.load_crl_cache(&mut core3, now, wall, &envelope);
    assert_eq!(core3.crl_envelope(), None);
}
