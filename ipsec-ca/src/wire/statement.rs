//! Statements signed by a CA key: anything a node must believe only when
//! the CA says it (the CA's location in the overlay, enrolment replies, CRL
//! manifests).
//!
//! ```text
//!  0      1      2           2+L     6+L         6+L+B   8+L+B
//! +------+------+-----------+-------+-----------+-------+-----------+
//! | ver  | L    | label     | B     | body      | S     | signature |
//! | 1    | u8   | L octets  | u32   | B octets  | u16   | S octets  |
//! +------+------+-----------+-------+-----------+-------+-----------+
//! ```
//!
//! The signature covers [`SIGNING_CONTEXT`] followed by every octet before
//! the signature length (version, label and body with their lengths). The
//! label separates the kinds of statement: a signed CRL manifest can never
//! be replayed as a CA announcement. A statement carries no time of its
//! own; put one in the body where freshness matters.

use crate::error::WireError;

/// The statement format's version.
pub const VERSION: u8 = 1;

/// Prepended to the signed octets so that no other signature made with a
/// CA key (certificates, CRLs) is a valid statement.
pub const SIGNING_CONTEXT: &[u8] = b"wow-ipsec-ca/1 signed statement\0";

/// The largest body accepted.
pub const MAX_BODY_LEN: usize = 256 * 1024;

/// A parsed statement: its label, body and the signature over them. Parsing
/// checks only the framing; [`crate::Verifier::verify_statement`] checks
/// the signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statement<'a> {
    /// What kind of statement this is.
    pub label: &'a [u8],
    /// The statement itself.
    pub body: &'a [u8],
    /// The CA's signature over [`Statement::signed_bytes`].
    pub signature: &'a [u8],
    signed_len: usize,
    bytes: &'a [u8],
}

impl<'a> Statement<'a> {
    /// Parses the framing of `bytes`.
    pub fn parse(bytes: &'a [u8]) -> Result<Statement<'a>, WireError> {
        let (&version, rest) = bytes.split_first().ok_or(WireError::Truncated)?;
        if version != VERSION {
            return Err(WireError::Version(version));
        }
        let (&label_len, rest) = rest.split_first().ok_or(WireError::Truncated)?;
        let (label, rest) = split(rest, usize::from(label_len))?;
        let (body_len, rest) = split(rest, 4)?;
        let body_len = u32::from_be_bytes([body_len[0], body_len[1], body_len[2], body_len[3]]);
        let body_len = usize::try_from(body_len).map_err(|_| WireError::TooLarge)?;
        if body_len > MAX_BODY_LEN {
            return Err(WireError::TooLarge);
        }
        let (body, rest) = split(rest, body_len)?;
        let signed_len = bytes.len() - rest.len();
        let (sig_len, rest) = split(rest, 2)?;
        let sig_len = usize::from(u16::from_be_bytes([sig_len[0], sig_len[1]]));
        let (signature, rest) = split(rest, sig_len)?;
        if !rest.is_empty() {
            return Err(WireError::Trailing);
        }
        Ok(Statement {
            label,
            body,
            signature,
            signed_len,
            bytes,
        })
    }

    /// The octets the signature covers, after [`SIGNING_CONTEXT`].
    pub fn signed_bytes(&self) -> &'a [u8] {
        &self.bytes[..self.signed_len]
    }
}

fn split(bytes: &[u8], n: usize) -> Result<(&[u8], &[u8]), WireError> {
    if bytes.len() < n {
        return Err(WireError::Truncated);
    }
    Ok(bytes.split_at(n))
}

/// The unsigned part of a statement (version, label, body), ready to sign.
pub(crate) fn signed_part(label: &[u8], body: &[u8]) -> Result<Vec<u8>, WireError> {
    let label_len = u8::try_from(label.len()).map_err(|_| WireError::TooLarge)?;
    if body.len() > MAX_BODY_LEN {
        return Err(WireError::TooLarge);
    }
    let mut out = Vec::with_capacity(2 + label.len() + 4 + body.len() + 2 + 72);
    out.push(VERSION);
    out.push(label_len);
    out.extend_from_slice(label);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

/// Appends the signature to a [`signed_part`].
pub(crate) fn finish(mut signed: Vec<u8>, signature: &[u8]) -> Result<Vec<u8>, WireError> {
    let sig_len = u16::try_from(signature.len()).map_err(|_| WireError::TooLarge)?;
    signed.extend_from_slice(&sig_len.to_be_bytes());
    signed.extend_from_slice(signature);
    Ok(signed)
}

/// [`SIGNING_CONTEXT`] followed by `signed`: the message the key signs.
pub(crate) fn to_be_signed(signed: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNING_CONTEXT.len() + signed.len());
    m.extend_from_slice(SIGNING_CONTEXT);
    m.extend_from_slice(signed);
    m
}
