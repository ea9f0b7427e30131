//! Cookies: proof that an initiator receives traffic for the address it
//! claims, before a responder keeps state or sends its certificate.
//!
//! Modelled on WireGuard (whitepaper §5.4.4 and §5.4.7), with the
//! responder's virtual IP standing in for its static public key (the only
//! identity an initiator knows before the exchange; certificates come
//! later):
//!
//! ```text
//! mac1   = MAC(HASH(LABEL_MAC1 | responder IP), init up to mac1)
//! cookie = MAC(secret, initiator IP)        secret: 32 random bytes, replaced every 2 min
//! mac2   = MAC(cookie, init up to mac2)     all zero when the initiator holds no cookie
//! reply  = XChaCha20-Poly1305(key = HASH(LABEL_COOKIE | responder IP),
//!                             nonce = 24 random bytes, plaintext = cookie, AD = mac1)
//! ```
//!
//! `HASH` is BLAKE2s-256, `MAC` keyed BLAKE2s-128, IPs are written as in
//! the prologue (a family byte, then 16 bytes). Every init carries `mac1`;
//! a responder drops inits whose `mac1` is wrong before any other work.
//! When it wants proof of reachability (under load, for an initiator it has
//! no SA with, see [`Config`](crate::Config)), an init without a valid
//! `mac2` gets a cookie reply ([`HandshakeRepr::CookieReply`]) and leaves
//! no state behind. The reply goes to the claimed source IP, so only
//! whoever really receives that IP's traffic learns the cookie; a cookie is
//! bound to that IP and dies with the secret. The reply's associated data
//! is the init's `mac1`, so a reply cannot be made for an init one has not
//! seen.
//!
//! [`HandshakeRepr::CookieReply`]: crate::wire::HandshakeRepr::CookieReply
//!
//! The reply's encryption key is public knowledge (derived from the
//! responder's IP), as WireGuard's is for anyone who knows the responder's
//! public key: it hides the cookie from observers who do not know whom the
//! init was for, and binds the reply to the init; what makes a cookie worth
//! something is that the reply is routed to the claimed source.

use core::net::IpAddr;
use std::time::{Duration, Instant};

use blake2::digest::consts::U16;
use blake2::digest::{Digest as _, Mac as _};
use blake2::{Blake2s256, Blake2sMac};
use chacha20poly1305::aead::{AeadInPlace as _, KeyInit as _};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::entropy::Entropy;
use crate::handshake::ip_bytes;
use crate::wire::INIT_MACS_LEN;

/// Length of `mac1`, `mac2` and a cookie.
pub const MAC_LEN: usize = 16;
/// Length of a cookie reply's nonce.
pub const COOKIE_NONCE_LEN: usize = 24;
/// Length of the encrypted cookie with its tag.
pub const ENCRYPTED_COOKIE_LEN: usize = MAC_LEN + 16;
/// How long a responder's cookie secret lives, and how long an initiator
/// uses a cookie (two minutes, as in WireGuard).
pub const COOKIE_SECRET_LIFETIME: Duration = Duration::from_secs(120);

const LABEL_MAC1: &[u8] = b"wow-ipsec-sa/2 mac1";
const LABEL_COOKIE: &[u8] = b"wow-ipsec-sa/2 cookie";

type Mac128 = Blake2sMac<U16>;

fn hash(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Blake2s256::new();
    for part in parts {
        h.update(part);
    }
    h.finalize().into()
}

fn mac_state(key: &[u8], message: &[u8]) -> Mac128 {
    // Keys are 16 or 32 bytes, within BLAKE2s's 32-byte limit.
    let mut state = match <Mac128 as blake2::digest::KeyInit>::new_from_slice(key) {
        Ok(state) => state,
        Err(_) => unreachable!("BLAKE2s MAC keys up to 32 bytes"),
    };
    state.update(message);
    state
}

fn mac(key: &[u8], message: &[u8]) -> [u8; MAC_LEN] {
    mac_state(key, message).finalize().into_bytes().into()
}

fn mac_matches(key: &[u8], message: &[u8], expected: &[u8]) -> bool {
    // Constant time.
    mac_state(key, message).verify_slice(expected).is_ok()
}

fn mac1_key(responder: IpAddr) -> [u8; 32] {
    hash(&[LABEL_MAC1, &ip_bytes(responder)])
}

fn reply_key(responder: IpAddr) -> [u8; 32] {
    hash(&[LABEL_COOKIE, &ip_bytes(responder)])
}

/// `mac1` over `message` (an init up to its `mac1` field) for `responder`.
pub fn mac1(responder: IpAddr, message: &[u8]) -> [u8; MAC_LEN] {
    mac(&mac1_key(responder), message)
}

/// Whether `expected` is the right `mac1`.
pub fn mac1_matches(responder: IpAddr, message: &[u8], expected: &[u8]) -> bool {
    mac_matches(&mac1_key(responder), message, expected)
}

/// Writes `mac1` (for `responder`) and `mac2` (from `cookie`, or zeros)
/// into the last [`INIT_MACS_LEN`] bytes of an emitted init.
///
/// # Panics
/// If `init` is shorter than [`INIT_MACS_LEN`] (inits this crate emits are not).
pub(crate) fn stamp_init(init: &mut [u8], responder: IpAddr, cookie: Option<&Cookie>) {
    let mac1_at = init.len() - INIT_MACS_LEN;
    let mac2_at = mac1_at + MAC_LEN;
    let mac1 = mac1(responder, &init[..mac1_at]);
    init[mac1_at..mac2_at].copy_from_slice(&mac1);
    let mac2 = cookie.map_or([0; MAC_LEN], |c| c.mac2(&init[..mac2_at]));
    init[mac2_at..].copy_from_slice(&mac2);
}

/// A cookie an initiator holds, as decrypted from a reply.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Cookie([u8; MAC_LEN]);

impl core::fmt::Debug for Cookie {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Cookie(..)")
    }
}

impl PartialEq for Cookie {
    fn eq(&self, other: &Cookie) -> bool {
        // Only compares cookies we hold; not a secret comparison.
        self.0 == other.0
    }
}

impl Cookie {
    /// `mac2` over `message` (an init up to its `mac2` field).
    pub fn mac2(&self, message: &[u8]) -> [u8; MAC_LEN] {
        mac(&self.0, message)
    }
}

/// Encrypts `cookie` into a reply for an init whose `mac1` was `mac1`.
fn seal_reply(
    responder: IpAddr,
    mac1: &[u8],
    nonce: &[u8; COOKIE_NONCE_LEN],
    cookie: &Cookie,
) -> [u8; ENCRYPTED_COOKIE_LEN] {
    let mut key = reply_key(responder);
    let cipher = XChaCha20Poly1305::new((&key).into());
    key.zeroize();
    let mut out = [0u8; ENCRYPTED_COOKIE_LEN];
    out[..MAC_LEN].copy_from_slice(&cookie.0);
    let (body, tag_out) = out.split_at_mut(MAC_LEN);
    // XChaCha20-Poly1305 seals any 16 bytes; it cannot fail.
    if let Ok(tag) = cipher.encrypt_in_place_detached(XNonce::from_slice(nonce), mac1, body) {
        tag_out.copy_from_slice(&tag);
    }
    out
}

/// Decrypts a cookie reply for an init whose `mac1` was `mac1`; `None` if
/// it was not made for that init by someone who knows `responder`.
pub fn open_reply(
    responder: IpAddr,
    mac1: &[u8],
    nonce: &[u8; COOKIE_NONCE_LEN],
    encrypted: &[u8; ENCRYPTED_COOKIE_LEN],
) -> Option<Cookie> {
    let mut key = reply_key(responder);
    let cipher = XChaCha20Poly1305::new((&key).into());
    key.zeroize();
    let mut cookie = Cookie([0; MAC_LEN]);
    cookie.0.copy_from_slice(&encrypted[..MAC_LEN]);
    let tag = Tag::from_slice(&encrypted[MAC_LEN..]);
    cipher
        .decrypt_in_place_detached(XNonce::from_slice(nonce), mac1, &mut cookie.0, tag)
        .ok()?;
    Some(cookie)
}

/// The responder's side: the rotating secret that cookies are made from.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct CookieChecker {
    secret: [u8; 32],
    #[zeroize(skip)]
    born: Option<Instant>,
}

impl CookieChecker {
    pub(crate) fn new() -> CookieChecker {
        CookieChecker {
            secret: [0; 32],
            born: None,
        }
    }

    /// Replaces the secret, with one from `rng`, if it is missing or older
    /// than [`COOKIE_SECRET_LIFETIME`]: cookies made before stop working.
    fn refresh(&mut self, now: Instant, rng: &mut Entropy) {
        let stale = self
            .born
            .is_none_or(|born| now.saturating_duration_since(born) >= COOKIE_SECRET_LIFETIME);
        if stale {
            rng.fill(&mut self.secret);
            self.born = Some(now);
        }
    }

    fn cookie(&self, source: IpAddr) -> Cookie {
        Cookie(mac(&self.secret, &ip_bytes(source)))
    }

    /// Whether `mac2` over `message` is right for `source`'s current cookie.
    pub(crate) fn mac2_matches(
        &mut self,
        now: Instant,
        rng: &mut Entropy,
        source: IpAddr,
        message: &[u8],
        mac2: &[u8],
    ) -> bool {
        self.refresh(now, rng);
        let cookie = self.cookie(source);
        mac_matches(&cookie.0, message, mac2)
    }

    /// A cookie reply's nonce and encrypted cookie for `source`'s init.
    pub(crate) fn reply(
        &mut self,
        now: Instant,
        rng: &mut Entropy,
        responder: IpAddr,
        source: IpAddr,
        mac1: &[u8],
    ) -> ([u8; COOKIE_NONCE_LEN], [u8; ENCRYPTED_COOKIE_LEN]) {
        self.refresh(now, rng);
        let mut nonce = [0u8; COOKIE_NONCE_LEN];
        rng.fill(&mut nonce);
        let cookie = self.cookie(source);
        (nonce, seal_reply(responder, mac1, &nonce, &cookie))
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn reply_round_trip_and_binding() {
        let mut rng = Entropy::insecure_seed([7; 32]);
        let mut checker = CookieChecker::new();
        let now = Instant::now();
        let (b, a) = (ip("10.1.0.2"), ip("10.1.0.1"));
        let mac1 = mac1(b, b"init");
        let (nonce, sealed) = checker.reply(now, &mut rng, b, a, &mac1);
        let cookie = open_reply(b, &mac1, &nonce, &sealed).unwrap();
        let mac2 = cookie.mac2(b"init+mac1");
        assert!(checker.mac2_matches(now, &mut rng, a, b"init+mac1", &mac2));
        // Another source, another message, another init, another responder.
        assert!(!checker.mac2_matches(now, &mut rng, ip("10.1.0.3"), b"init+mac1", &mac2));
        assert!(!checker.mac2_matches(now, &mut rng, a, b"init+mac2", &mac2));
        assert!(open_reply(b, &[0; 16], &nonce, &sealed).is_none());
        assert!(open_reply(a, &mac1, &nonce, &sealed).is_none());
        // After rotation the cookie is stale.
        let later = now + COOKIE_SECRET_LIFETIME;
        assert!(!checker.mac2_matches(later, &mut rng, a, b"init+mac1", &mac2));
    }
}
