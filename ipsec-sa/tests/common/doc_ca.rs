// A minimal CA over rcgen and x509-parser, for tests and the crate example.
// Included with `include!`, so it holds items only and uses full paths.

/// A throw-away CA that issues IP-bound certificates.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    der: Vec<u8>,
    serial: std::cell::Cell<u64>,
}

impl TestCa {
    /// A new Ed25519 CA.
    pub fn new() -> TestCa {
        TestCa::with_algorithm(&rcgen::PKCS_ED25519)
    }

    /// A new CA whose key uses `alg`.
    pub fn with_algorithm(alg: &'static rcgen::SignatureAlgorithm) -> TestCa {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "test CA");
        params.key_usages =
            vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let der = params.self_signed(&key).unwrap().der().to_vec();
        TestCa { issuer: rcgen::Issuer::new(params, key), der, serial: std::cell::Cell::new(1) }
    }

    /// Issues an Ed25519 certificate for `ip`, valid from an hour ago for a
    /// year; returns the certificate and the PKCS#8 key (both DER).
    pub fn issue(&self, ip: std::net::IpAddr) -> (Vec<u8>, Vec<u8>) {
        let now = std::time::SystemTime::now();
        let hour = std::time::Duration::from_secs(3600);
        let (cert, key, _) = self.issue_with(ip, &rcgen::PKCS_ED25519, now - hour, now + 8760 * hour);
        (cert, key)
    }

    /// Issues a certificate for `ip` with a key of `alg` and the given
    /// validity; returns certificate, key and serial.
    pub fn issue_with(
        &self,
        ip: std::net::IpAddr,
        alg: &'static rcgen::SignatureAlgorithm,
        not_before: std::time::SystemTime,
        not_after: std::time::SystemTime,
    ) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![rcgen::SanType::IpAddress(ip)];
        params.distinguished_name.push(rcgen::DnType::CommonName, ip.to_string());
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let serial = self.serial.get();
        self.serial.set(serial + 1);
        let serial = serial.to_be_bytes().to_vec();
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.der().to_vec(), key.serialize_der(), serial)
    }

    /// An authenticator trusting this CA, with an empty revocation list.
    pub fn authenticator(&self) -> TestAuthenticator {
        TestAuthenticator { ca: self.der.clone(), revoked: Vec::new() }
    }
}

/// Checks certificates against one CA certificate and a revoked-serial list.
#[derive(Clone)]
pub struct TestAuthenticator {
    ca: Vec<u8>,
    revoked: Vec<Vec<u8>>,
}

impl TestAuthenticator {
    /// Revokes a serial (as a newer CRL would).
    pub fn revoke(&mut self, serial: &[u8]) {
        self.revoked.push(serial.to_vec());
    }
}

impl ipsec_sa::PeerAuthenticator for TestAuthenticator {
    fn authenticate(
        &self,
        cert_der: &[u8],
        claimed_ip: std::net::IpAddr,
        now: std::time::SystemTime,
    ) -> Result<ipsec_sa::VerifiedPeer, ipsec_sa::AuthError> {
        use ipsec_sa::AuthError;
        use x509_parser::extensions::GeneralName;
        let (_, ca) = x509_parser::parse_x509_certificate(&self.ca).unwrap();
        let (rest, cert) =
            x509_parser::parse_x509_certificate(cert_der).map_err(|_| AuthError::Malformed)?;
        if !rest.is_empty() {
            return Err(AuthError::Malformed);
        }
        if cert.issuer() != ca.subject() || cert.verify_signature(Some(ca.public_key())).is_err() {
            return Err(AuthError::UntrustedIssuer);
        }
        let secs = now.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        if secs < cert.validity().not_before.timestamp() {
            return Err(AuthError::NotYetValid);
        }
        if secs > cert.validity().not_after.timestamp() {
            return Err(AuthError::Expired);
        }
        let serial = cert.raw_serial().to_vec();
        let trimmed: Vec<u8> = serial.iter().copied().skip_while(|b| *b == 0).collect();
        if self.revoked.iter().any(|r| {
            r.iter().copied().skip_while(|b| *b == 0).collect::<Vec<u8>>() == trimmed
        }) {
            return Err(AuthError::Revoked);
        }
        let certified = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .and_then(|san| {
                san.value.general_names.iter().find_map(|name| match name {
                    GeneralName::IPAddress(b) if b.len() == 4 => {
                        Some(std::net::IpAddr::from(<[u8; 4]>::try_from(*b).unwrap()))
                    }
                    GeneralName::IPAddress(b) if b.len() == 16 => {
                        Some(std::net::IpAddr::from(<[u8; 16]>::try_from(*b).unwrap()))
                    }
                    _ => None,
                })
            });
        if certified != Some(claimed_ip) {
            return Err(AuthError::IpMismatch { claimed: claimed_ip, certified });
        }
        let spki = cert.public_key();
        let algorithm = match spki.algorithm.algorithm.to_id_string().as_str() {
            "1.3.101.112" => ipsec_sa::SignatureAlgorithm::Ed25519,
            "1.2.840.10045.2.1" => ipsec_sa::SignatureAlgorithm::EcdsaP256Sha256,
            _ => return Err(AuthError::UnsupportedKey),
        };
        let not_after = std::time::UNIX_EPOCH
            + std::time::Duration::from_secs(cert.validity().not_after.timestamp() as u64);
        Ok(ipsec_sa::VerifiedPeer {
            ip: claimed_ip,
            serial,
            not_after,
            public_key: spki.subject_public_key.data.to_vec(),
            algorithm,
        })
    }
}
