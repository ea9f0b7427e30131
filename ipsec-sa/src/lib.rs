//! Host-to-host security associations for the virtual network, sans-IO.
//!
//! The original WOW design ran IPsec transport mode between every pair of
//! virtual hosts in the private address range, authenticated by CA-signed
//! certificates bound to virtual IPs. This crate carries that model without
//! kernel IPsec (RFC 4301's architecture, reduced):
//!
//! - a mutually authenticated key exchange ([`handshake`]): Noise XX
//!   (`snow`) whose encrypted payloads carry each side's certificate and a
//!   signature over the handshake hash, checked by a [`PeerAuthenticator`]
//!   (chain, validity, revocation, and the certificate's IP equal to the
//!   peer's virtual IP); forward secrecy from the ephemeral keys;
//! - SA pairs with SPIs, ESP-like framing with a 64-bit sequence number and
//!   an AEAD from `ring` (AES-256-GCM or ChaCha20-Poly1305) ([`sa`],
//!   [`wire`]), and an anti-replay window of [`REPLAY_WINDOW`] packets;
//! - rekeying by time and volume without loss (the old inbound SA drains),
//!   and teardown when a peer's certificate is revoked or expires;
//! - policy by netmask with a list of public hosts ([`Policy`]);
//! - handshake denial-of-service defences ([`cookie`], and
//!   [the endpoint docs](endpoint#handshake-denial-of-service)): WireGuard's
//!   mac1/mac2 and cookie reply, used under load and, by default, for every
//!   first contact, so that a responder keeps no state for, and sends its
//!   certificate to no one but, whoever receives the claimed address's
//!   traffic; per-source caps and rate limits;
//! - a handover of the established SAs to the next process of a
//!   self-update ([`resume`]): signed, dated, refused all or nothing;
//! - key erasure: SA keys, Noise split outputs, handshake seeds and cookie
//!   secrets are wiped (`zeroize`) when dropped. Keys inside `ring` and
//!   `snow` are theirs to manage: `ring` holds only expanded AEAD keys, and
//!   snow 0.10 does not wipe its handshake state.
//!
//! The crate does no I/O and reads no clock: bytes and `Instant`s go in;
//! datagrams, events and deadlines come out of an [`Endpoint`]. SPIs, Noise
//! keys, cookie secrets and nonces come from the operating system
//! ([`Endpoint::new`]), or from a seed in tests and simulators
//! ([`Endpoint::new_with_insecure_seed`]).
//!
//! # Example
//!
//! Two hosts, `10.1.0.1` and `10.1.0.2`, with certificates from one CA.
//! `TestCa` is a few lines of rcgen standing in for the CA; in the node,
//! `ipsec_ca::Verifier` is the [`PeerAuthenticator`] ([`ca`]), and
//! `tests/ipsec_ca.rs` runs the same exchange with it.
//!
//! ```
//! # include!("../tests/common/doc_ca.rs");
//! use std::time::{Instant, SystemTime};
//! use ipsec_sa::{Config, Endpoint, LocalIdentity, OpenOutput, Policy, SealOutput};
//!
//! # fn main() {
//! let ca = TestCa::new();
//! let (a_ip, b_ip) = ("10.1.0.1".parse().unwrap(), "10.1.0.2".parse().unwrap());
//! let (now, wall) = (Instant::now(), SystemTime::now());
//! let endpoint = |ip| {
//!     let (cert, key) = ca.issue(ip);
//!     let config = Config {
//!         local_ip: ip,
//!         policy: Policy::protect("10.1.0.0/16".parse().unwrap()),
//!         ..Config::default()
//!     };
//!     let identity = LocalIdentity::from_pkcs8(&cert, &key).unwrap();
//!     // SPIs and Noise keys come from the operating system's random source.
//!     Endpoint::new(now, wall, config, identity, ca.authenticator())
//! };
//! let (mut a, mut b) = (endpoint(a_ip), endpoint(b_ip));
//!
//! // No SA yet: the packet waits while a handshake runs.
//! let mut sealed = Vec::new();
//! assert_eq!(a.seal(now, b_ip, b"ping", &mut sealed), Ok(SealOutput::HandshakeNeeded));
//!
//! // Shuttle datagrams until both sides are quiet (the network's job). On
//! // this first contact B answers A's init with a cookie reply, then A's
//! // repeated init with the real response.
//! let mut delivered = Vec::new();
//! let mut shuttle = |from: &mut Endpoint<_>, from_ip, to: &mut Endpoint<_>| {
//!     let mut moved = false;
//!     while let Some(mut t) = from.poll_transmit() {
//!         moved = true;
//!         if let Ok(OpenOutput::Plaintext(p)) = to.open(now, from_ip, &mut t.payload) {
//!             delivered.push(p.to_vec());
//!         }
//!     }
//!     moved
//! };
//! while shuttle(&mut a, a_ip, &mut b) | shuttle(&mut b, b_ip, &mut a) {}
//! assert_eq!(delivered, [b"ping".to_vec()]);
//!
//! // Now packets are sealed directly.
//! assert_eq!(a.seal(now, b_ip, b"pong", &mut sealed), Ok(SealOutput::Sealed));
//! assert_eq!(b.open(now, a_ip, &mut sealed), Ok(OpenOutput::Plaintext(&b"pong"[..])));
//! # }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod auth;
pub mod ca;
pub mod cookie;
pub mod endpoint;
mod entropy;
pub mod error;
pub mod handshake;
pub mod policy;
pub mod replay;
pub mod resume;
pub mod sa;
pub mod wire;

pub use auth::{LocalIdentity, PeerAuthenticator, SignatureAlgorithm, VerifiedPeer};
pub use endpoint::{
    Config, Endpoint, Event, OpenOutput, PreparedOpen, PreparedSeal, SealOutput, Stats, Transmit,
    Verdict,
};
pub use error::{AuthError, HandshakeError, IdentityError, Rejection, SealError, WireError};
pub use handshake::Role;
pub use policy::{Action, Policy};
pub use replay::REPLAY_WINDOW;
pub use sa::{InboundSa, OpenJob, Opened, OutboundSa, SaKeys, SealJob};
pub use wire::{Suite, SuiteSet};

#[cfg(test)]
mod zeroize_test {
    use zeroize::ZeroizeOnDrop;

    fn wiped_on_drop<T: ZeroizeOnDrop>() {}

    /// Every type that holds key material wipes it on drop (a compile-time
    /// check: removing the derive breaks this test).
    #[test]
    fn key_material_is_zeroize_on_drop() {
        wiped_on_drop::<crate::SaKeys>();
        wiped_on_drop::<crate::cookie::Cookie>();
        wiped_on_drop::<crate::cookie::CookieChecker>();
        wiped_on_drop::<crate::handshake::HandshakeSeeds>();
    }
}
