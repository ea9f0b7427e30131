//! The key exchange: Noise XX with certificate authentication.
//!
//! `Noise_XX_25519_ChaChaPoly_BLAKE2s` (Noise revision 34, §7.5): both
//! sides contribute an ephemeral and a per-handshake "static" X25519 key,
//! so the session keys have forward secrecy. The Noise static keys are not
//! identities; the certificates are. Messages 2 and 3 carry, encrypted, an
//! [`AuthPayloadRepr`]: the sender's certificate and its signature, with
//! the certificate's key, over
//!
//! ```text
//! "wow-ipsec-sa/1 auth" | role ('R' or 'I') | h | sender's Noise static key | suite | sender index
//! ```
//!
//! where `h` is the Noise handshake hash just before the message is
//! written. `h` already covers the prologue and every earlier message,
//! including the peer's fresh ephemeral key, so the signature cannot be
//! replayed into another session, and signing the static key binds the
//! Noise DH results (`es`, `se`) to the certificate holder, as in SIGMA.
//!
//! The prologue binds the protocol version, both virtual IPs, the offered
//! suites and the initiator's index: an attacker who edits the offer to
//! force a weaker suite (a downgrade) makes the two transcripts differ and
//! the next Noise message fails to decrypt ([`HandshakeError::Transcript`]).
//!
//! The SA keys come from Noise's `Split()` (one key per direction), expanded
//! with HKDF-SHA256 (RFC 5869) salted with the final handshake hash.
//!
//! A message that fails to decrypt or authenticate ends its exchange (a
//! Noise handshake state cannot be rolled back). An on-path attacker can
//! thus abort an exchange, as it could by dropping packets; the next packet
//! to the peer starts a new one. The responder does its DH and signature
//! work, and reveals its certificate, before the initiator is
//! authenticated; the endpoint first asks for a cookie when under load or
//! on first contact ([`crate::cookie`]), and caps pending exchanges in all
//! and per source ([`Config::max_pending_handshakes`]).
//!
//! Seeds, the X25519 private key handed to snow, `Split()` outputs and the
//! derived SA keys are wiped after use; snow 0.10 itself does not wipe its
//! handshake state.
//!
//! [`Config::max_pending_handshakes`]: crate::Config::max_pending_handshakes

use core::net::IpAddr;
use std::time::SystemTime;

use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit as _, StreamCipher as _};
use ring::hkdf;
use snow::resolvers::{BoxedCryptoResolver, CryptoResolver, DefaultResolver, FallbackResolver};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::auth::{LocalIdentity, PeerAuthenticator, VerifiedPeer, verify_signature};
use crate::error::{HandshakeError, WireError};
use crate::sa::SaKeys;
use crate::wire::{AuthPayloadRepr, HandshakeRepr, Suite, SuiteSet, VERSION};

/// The Noise protocol name.
pub const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";
const PROLOGUE_LABEL: &[u8] = b"wow-ipsec-sa/1 prologue";
const SIGNATURE_LABEL: &[u8] = b"wow-ipsec-sa/1 auth";
const KDF_LABEL: &[u8] = b"wow-ipsec-sa/1 sa keys";
const NOISE_MAX: usize = 65_535;

/// A ChaCha20 keystream from a handshake seed (snow draws one X25519 key
/// from it). The cipher state is wiped when snow drops it.
struct SeededRandom(ChaCha20);

impl snow::types::Random for SeededRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        dest.fill(0);
        self.0.apply_keystream(dest);
        Ok(())
    }
}

/// Gives snow a seeded RNG (for the ephemeral key) instead of the OS one.
/// The seed is wiped on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
struct SeededResolver([u8; 32]);

impl CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn snow::types::Random>> {
        Some(Box::new(SeededRandom(ChaCha20::new(
            (&self.0).into(),
            (&[0u8; 12]).into(),
        ))))
    }
    fn resolve_dh(&self, _: &snow::params::DHChoice) -> Option<Box<dyn snow::types::Dh>> {
        None
    }
    fn resolve_hash(&self, _: &snow::params::HashChoice) -> Option<Box<dyn snow::types::Hash>> {
        None
    }
    fn resolve_cipher(
        &self,
        _: &snow::params::CipherChoice,
    ) -> Option<Box<dyn snow::types::Cipher>> {
        None
    }
}

fn builder<'a>(seed: [u8; 32]) -> Result<snow::Builder<'a>, HandshakeError> {
    let params = NOISE_PARAMS
        .parse()
        .map_err(|_| HandshakeError::Transcript)?;
    let resolver: BoxedCryptoResolver = Box::new(FallbackResolver::new(
        Box::new(SeededResolver(seed)),
        Box::new(DefaultResolver),
    ));
    Ok(snow::Builder::with_resolver(params, resolver))
}

/// Fresh randomness for one handshake, drawn from the endpoint's source;
/// wiped on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct HandshakeSeeds {
    pub static_key: [u8; 32],
    pub ephemeral: [u8; 32],
}

impl HandshakeSeeds {
    pub(crate) fn draw(rng: &mut crate::entropy::Entropy) -> HandshakeSeeds {
        let mut seeds = HandshakeSeeds {
            static_key: [0; 32],
            ephemeral: [0; 32],
        };
        rng.fill(&mut seeds.static_key);
        rng.fill(&mut seeds.ephemeral);
        seeds
    }
}

pub(crate) fn ip_bytes(ip: IpAddr) -> [u8; 17] {
    let mut out = [0u8; 17];
    match ip {
        IpAddr::V4(v4) => {
            out[0] = 4;
            out[1..5].copy_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out[0] = 6;
            out[1..].copy_from_slice(&v6.octets());
        }
    }
    out
}

fn prologue(
    initiator_ip: IpAddr,
    responder_ip: IpAddr,
    offered: SuiteSet,
    initiator_index: u32,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(PROLOGUE_LABEL.len() + 40);
    out.extend_from_slice(PROLOGUE_LABEL);
    out.push(VERSION);
    out.extend_from_slice(&ip_bytes(initiator_ip));
    out.extend_from_slice(&ip_bytes(responder_ip));
    out.push(offered.bits());
    out.extend_from_slice(&initiator_index.to_be_bytes());
    out
}

fn signed_message(role: u8, h: &[u8], static_key: &[u8], suite: Suite, index: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(SIGNATURE_LABEL.len() + 1 + h.len() + static_key.len() + 5);
    out.extend_from_slice(SIGNATURE_LABEL);
    out.push(role);
    out.extend_from_slice(h);
    out.extend_from_slice(static_key);
    out.push(suite as u8);
    out.extend_from_slice(&index.to_be_bytes());
    out
}

fn new_state(
    seeds: &HandshakeSeeds,
    prologue: &[u8],
    initiator: bool,
) -> Result<(snow::HandshakeState, Vec<u8>), HandshakeError> {
    let keypair = builder(seeds.static_key)?
        .generate_keypair()
        .map_err(|_| HandshakeError::Transcript)?;
    let snow::Keypair { private, public } = keypair;
    let private = Zeroizing::new(private);
    let builder = builder(seeds.ephemeral)?
        .local_private_key(&private)
        .and_then(|b| b.prologue(prologue))
        .map_err(|_| HandshakeError::Transcript)?;
    let state = if initiator {
        builder.build_initiator()
    } else {
        builder.build_responder()
    };
    Ok((state.map_err(|_| HandshakeError::Transcript)?, public))
}

/// Which end of the exchange this side was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sent the init message.
    Initiator,
    /// Answered it.
    Responder,
}

/// The outcome of a completed handshake: an authenticated peer and the keys
/// of an SA pair.
pub(crate) struct Established {
    pub role: Role,
    pub peer: VerifiedPeer,
    pub certificate: Vec<u8>,
    pub suite: Suite,
    /// Our index: the SPI of our inbound SA.
    pub local_index: u32,
    /// The peer's index: the SPI of our outbound SA.
    pub remote_index: u32,
    pub inbound: SaKeys,
    pub outbound: SaKeys,
}

fn derive(hash: &[u8], key: &[u8], direction: u8, suite: Suite, spi: u32) -> SaKeys {
    struct Len;
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            36
        }
    }
    let mut info = Vec::with_capacity(KDF_LABEL.len() + 6);
    info.extend_from_slice(KDF_LABEL);
    info.push(direction);
    info.push(suite as u8);
    info.extend_from_slice(&spi.to_be_bytes());
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, hash).extract(key);
    let mut out = Zeroizing::new([0u8; 36]);
    let filled = prk
        .expand(&[&info], Len)
        .and_then(|okm| okm.fill(&mut out[..]));
    // 36 bytes is far below HKDF-SHA256's 255 * 32 limit.
    debug_assert!(filled.is_ok());
    let mut keys = SaKeys {
        key: [0; 32],
        salt: [0; 4],
    };
    keys.key.copy_from_slice(&out[..32]);
    keys.salt.copy_from_slice(&out[32..]);
    keys
}

#[allow(clippy::too_many_arguments)]
fn finish(
    mut noise: snow::HandshakeState,
    role: Role,
    peer: VerifiedPeer,
    certificate: Vec<u8>,
    suite: Suite,
    initiator_index: u32,
    responder_index: u32,
) -> Established {
    let hash = noise.get_handshake_hash().to_vec();
    let (i2r, r2i) = noise.dangerously_get_raw_split();
    let (i2r, r2i) = (Zeroizing::new(i2r), Zeroizing::new(r2i));
    let to_responder = derive(&hash, &i2r[..], b'i', suite, responder_index);
    let to_initiator = derive(&hash, &r2i[..], b'r', suite, initiator_index);
    let (local_index, remote_index, inbound, outbound) = match role {
        Role::Initiator => (initiator_index, responder_index, to_initiator, to_responder),
        Role::Responder => (responder_index, initiator_index, to_responder, to_initiator),
    };
    Established {
        role,
        peer,
        certificate,
        suite,
        local_index,
        remote_index,
        inbound,
        outbound,
    }
}

fn authenticate_payload<A: PeerAuthenticator + ?Sized>(
    payload: &AuthPayloadRepr<'_>,
    authenticator: &A,
    peer_ip: IpAddr,
    wall_now: SystemTime,
    role: u8,
    h_before: &[u8],
    remote_static: Option<&[u8]>,
) -> Result<VerifiedPeer, HandshakeError> {
    let peer = authenticator.authenticate(payload.certificate, peer_ip, wall_now)?;
    let static_key = remote_static.ok_or(HandshakeError::Transcript)?;
    let message = signed_message(role, h_before, static_key, payload.suite, payload.index);
    if !verify_signature(&peer, &message, payload.signature) {
        return Err(HandshakeError::BadSignature);
    }
    Ok(peer)
}

fn auth_payload(
    identity: &LocalIdentity,
    role: u8,
    h: &[u8],
    static_key: &[u8],
    suite: Suite,
    index: u32,
) -> Result<Vec<u8>, HandshakeError> {
    let signature = identity
        .sign(&signed_message(role, h, static_key, suite, index))
        .ok_or(HandshakeError::BadSignature)?;
    let mut out = Vec::new();
    AuthPayloadRepr {
        suite,
        index,
        certificate: identity.certificate(),
        signature: &signature,
    }
    .emit(&mut out);
    Ok(out)
}

/// An initiator waiting for the response.
pub(crate) struct Initiator {
    noise: snow::HandshakeState,
    static_key: Vec<u8>,
    pub local_index: u32,
    pub offered: SuiteSet,
}

impl Initiator {
    /// Starts a handshake; returns the state and the init message.
    pub(crate) fn start(
        local_ip: IpAddr,
        peer_ip: IpAddr,
        offered: SuiteSet,
        local_index: u32,
        seeds: HandshakeSeeds,
    ) -> Result<(Initiator, Vec<u8>), HandshakeError> {
        let prologue = prologue(local_ip, peer_ip, offered, local_index);
        let (mut noise, static_key) = new_state(&seeds, &prologue, true)?;
        let mut buf = vec![0u8; NOISE_MAX];
        let len = noise
            .write_message(&[], &mut buf)
            .map_err(|_| HandshakeError::Transcript)?;
        let mut out = Vec::new();
        // The endpoint stamps mac1 and mac2 (crate::cookie).
        HandshakeRepr::Init {
            initiator_index: local_index,
            offered,
            noise: buf.get(..len).ok_or(HandshakeError::Transcript)?,
            mac1: [0; 16],
            mac2: [0; 16],
        }
        .emit(&mut out);
        Ok((
            Initiator {
                noise,
                static_key,
                local_index,
                offered,
            },
            out,
        ))
    }

    /// Handles the response; on success returns the SA keys and the finish
    /// message. On error the handshake is dead.
    pub(crate) fn handle_response<A: PeerAuthenticator + ?Sized>(
        mut self,
        responder_index: u32,
        noise_message: &[u8],
        identity: &LocalIdentity,
        authenticator: &A,
        peer_ip: IpAddr,
        wall_now: SystemTime,
    ) -> Result<(Established, Vec<u8>), HandshakeError> {
        let h_before = self.noise.get_handshake_hash().to_vec();
        let mut buf = vec![0u8; NOISE_MAX];
        let len = self
            .noise
            .read_message(noise_message, &mut buf)
            .map_err(|_| HandshakeError::Transcript)?;
        let payload = AuthPayloadRepr::parse(buf.get(..len).ok_or(WireError::Truncated)?)?;
        if payload.index != responder_index {
            return Err(HandshakeError::IndexMismatch);
        }
        if !self.offered.contains(payload.suite) {
            return Err(HandshakeError::SuiteNotOffered(payload.suite));
        }
        let peer = authenticate_payload(
            &payload,
            authenticator,
            peer_ip,
            wall_now,
            b'R',
            &h_before,
            self.noise.get_remote_static(),
        )?;
        let suite = payload.suite;
        let certificate = payload.certificate.to_vec();
        let h = self.noise.get_handshake_hash().to_vec();
        let mine = auth_payload(
            identity,
            b'I',
            &h,
            &self.static_key,
            suite,
            self.local_index,
        )?;
        let len = self
            .noise
            .write_message(&mine, &mut buf)
            .map_err(|_| HandshakeError::Transcript)?;
        let mut out = Vec::new();
        HandshakeRepr::Finish {
            initiator_index: self.local_index,
            responder_index,
            noise: buf.get(..len).ok_or(HandshakeError::Transcript)?,
        }
        .emit(&mut out);
        let established = finish(
            self.noise,
            Role::Initiator,
            peer,
            certificate,
            suite,
            self.local_index,
            responder_index,
        );
        Ok((established, out))
    }
}

/// A responder waiting for the finish message.
pub(crate) struct Responder {
    noise: snow::HandshakeState,
    h_before: Vec<u8>,
    pub initiator_index: u32,
    pub local_index: u32,
    pub suite: Suite,
}

impl Responder {
    /// Answers an init message; returns the state and the response.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn respond(
        local_ip: IpAddr,
        peer_ip: IpAddr,
        initiator_index: u32,
        offered: SuiteSet,
        noise_message: &[u8],
        preference: &[Suite],
        local_index: u32,
        identity: &LocalIdentity,
        seeds: HandshakeSeeds,
    ) -> Result<(Responder, Vec<u8>), HandshakeError> {
        let suite = preference
            .iter()
            .copied()
            .find(|s| offered.contains(*s))
            .ok_or(HandshakeError::NoCommonSuite)?;
        let prologue = prologue(peer_ip, local_ip, offered, initiator_index);
        let (mut noise, static_key) = new_state(&seeds, &prologue, false)?;
        let mut buf = vec![0u8; NOISE_MAX];
        let len = noise
            .read_message(noise_message, &mut buf)
            .map_err(|_| HandshakeError::Transcript)?;
        if len != 0 {
            // Message 1 carries no payload in this protocol.
            return Err(HandshakeError::Wire(WireError::TrailingBytes));
        }
        let h = noise.get_handshake_hash().to_vec();
        let mine = auth_payload(identity, b'R', &h, &static_key, suite, local_index)?;
        let len = noise
            .write_message(&mine, &mut buf)
            .map_err(|_| HandshakeError::Transcript)?;
        let mut out = Vec::new();
        HandshakeRepr::Response {
            initiator_index,
            responder_index: local_index,
            noise: buf.get(..len).ok_or(HandshakeError::Transcript)?,
        }
        .emit(&mut out);
        let h_before = noise.get_handshake_hash().to_vec();
        Ok((
            Responder {
                noise,
                h_before,
                initiator_index,
                local_index,
                suite,
            },
            out,
        ))
    }

    /// Handles the finish message; on success returns the SA keys.
    pub(crate) fn handle_finish<A: PeerAuthenticator + ?Sized>(
        mut self,
        noise_message: &[u8],
        authenticator: &A,
        peer_ip: IpAddr,
        wall_now: SystemTime,
    ) -> Result<Established, HandshakeError> {
        let mut buf = vec![0u8; NOISE_MAX];
        let len = self
            .noise
            .read_message(noise_message, &mut buf)
            .map_err(|_| HandshakeError::Transcript)?;
        let payload = AuthPayloadRepr::parse(buf.get(..len).ok_or(WireError::Truncated)?)?;
        if payload.index != self.initiator_index {
            return Err(HandshakeError::IndexMismatch);
        }
        if payload.suite != self.suite {
            return Err(HandshakeError::SuiteNotOffered(payload.suite));
        }
        let peer = authenticate_payload(
            &payload,
            authenticator,
            peer_ip,
            wall_now,
            b'I',
            &self.h_before,
            self.noise.get_remote_static(),
        )?;
        let certificate = payload.certificate.to_vec();
        Ok(finish(
            self.noise,
            Role::Responder,
            peer,
            certificate,
            self.suite,
            self.initiator_index,
            self.local_index,
        ))
    }
}
