//! Join tokens: single-use credentials an administrator hands to a new node
//! so that its enrolment request is signed at once.
//!
//! A token is an id (8 octets, sent in clear) and a secret (32 octets, never
//! sent): the request carries the id and HMAC-SHA256(secret, context ‖
//! request id ‖ CSR) ([`JoinToken::mac`]), so an observer of the request
//! learns nothing it could use for another CSR. The CA keeps each token's
//! secret, expiry, optional fixed address and use in its state
//! ([`crate::state::TokenRecord`]); a token is consumed by the issue it
//! authorised, atomically with it.
//!
//! Text form: `wowjoin1.<16 hex id>.<64 hex secret>`.

use ring::hmac;

use crate::state::{hex_decode, hex_encode};

/// Prefix of a token's text form.
pub const TEXT_PREFIX: &str = "wowjoin1.";

/// Domain separation for the request MAC.
const MAC_CONTEXT: &[u8] = b"wow-ipsec-ca/1 join request\0";

/// A join token as the administrator hands it out.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Public id: names the token in requests and in the CA state.
    pub id: u64,
    /// The secret the request MAC is keyed with.
    pub secret: [u8; 32],
}

impl core::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("JoinToken")
            .field("id", &format_args!("{:016x}", self.id))
            .finish_non_exhaustive()
    }
}

/// The token text is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed join token (expected wowjoin1.<16 hex>.<64 hex>)")]
pub struct TokenParseError;

impl JoinToken {
    /// The text form.
    pub fn to_text(&self) -> String {
        format!("{TEXT_PREFIX}{:016x}.{}", self.id, hex_encode(&self.secret))
    }

    /// Parses the text form (surrounding white space ignored).
    pub fn parse(text: &str) -> Result<JoinToken, TokenParseError> {
        let rest = text
            .trim()
            .strip_prefix(TEXT_PREFIX)
            .ok_or(TokenParseError)?;
        let (id, secret) = rest.split_once('.').ok_or(TokenParseError)?;
        let id: [u8; 8] = hex_decode(id)
            .and_then(|b| b.try_into().ok())
            .ok_or(TokenParseError)?;
        let secret: [u8; 32] = hex_decode(secret)
            .and_then(|b| b.try_into().ok())
            .ok_or(TokenParseError)?;
        Ok(JoinToken {
            id: u64::from_be_bytes(id),
            secret,
        })
    }

    /// The MAC a request for `csr` with `request_id` carries.
    pub fn mac(&self, request_id: u64, csr: &[u8]) -> [u8; 32] {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.secret);
        let tag = hmac::sign(&key, &mac_input(request_id, csr));
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }
}

fn mac_input(request_id: u64, csr: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(MAC_CONTEXT.len() + 8 + csr.len());
    m.extend_from_slice(MAC_CONTEXT);
    m.extend_from_slice(&request_id.to_be_bytes());
    m.extend_from_slice(csr);
    m
}

/// Checks `mac` in constant time against the MAC `secret` gives.
pub(crate) fn verify_mac(secret: &[u8], request_id: u64, csr: &[u8], mac: &[u8]) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::verify(&key, &mac_input(request_id, csr), mac).is_ok()
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn text_round_trips_and_refuses_garbage() {
        let t = JoinToken {
            id: 0x0102_0304_0506_0708,
            secret: [7; 32],
        };
        assert_eq!(JoinToken::parse(&t.to_text()), Ok(t.clone()));
        assert_eq!(JoinToken::parse("wowjoin1.0102"), Err(TokenParseError));
        assert_eq!(JoinToken::parse(&t.to_text()[1..]), Err(TokenParseError));
        assert!(!format!("{t:?}").contains("0707"), "Debug hides the secret");
    }

    #[test]
    fn mac_binds_request_and_csr() {
        let t = JoinToken {
            id: 1,
            secret: [3; 32],
        };
        let mac = t.mac(5, b"csr");
        assert!(verify_mac(&t.secret, 5, b"csr", &mac));
        assert!(!verify_mac(&t.secret, 6, b"csr", &mac));
        assert!(!verify_mac(&t.secret, 5, b"csx", &mac));
        assert!(!verify_mac(&[4; 32], 5, b"csr", &mac));
    }
}
