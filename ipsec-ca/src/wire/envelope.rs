//! The CRL distribution envelope.
//!
//! CRLs spread over the overlay wrapped in an envelope that names the CRL
//! number up front, so a node refuses a stale CRL (number not above the one it
//! holds) before parsing or verifying it:
//!
//! ```text
//!  0               4       5                               13              17
//! +---------------+-------+-------------------------------+---------------+--------
//! | magic "WCRL"  | ver=1 | CRL number (u64)              | length (u32)  | CRL DER
//! +---------------+-------+-------------------------------+---------------+--------
//! ```
//!
//! The verifier also checks that the number equals the CRL's own CRL number
//! extension (RFC 5280 §5.2.3), which the CA signature covers.

use crate::error::WireError;

/// Envelope magic.
pub const MAGIC: [u8; 4] = *b"WCRL";
/// Envelope version.
pub const VERSION: u8 = 1;
/// Largest CRL accepted (a 100,000-entry CRL is about 4 MB).
pub const MAX_CRL_LEN: usize = 64 << 20;

mod field {
    use core::ops::Range;
    pub const MAGIC: Range<usize> = 0..4;
    pub const VERSION: usize = 4;
    pub const NUMBER: Range<usize> = 5..13;
    pub const LENGTH: Range<usize> = 13..17;
    pub const PAYLOAD: usize = 17;
}

/// Header length.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// A read/write view of an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checks.
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps a buffer and runs [`Packet::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the header fits and the declared length matches the buffer exactly.
    /// After this, no accessor panics.
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        super::check_framed_len(len, HEADER_LEN, self.crl_len() as usize, MAX_CRL_LEN)
    }

    /// Consumes the view.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The magic bytes.
    pub fn magic(&self) -> [u8; 4] {
        let mut m = [0u8; 4];
        m.copy_from_slice(&self.buffer.as_ref()[field::MAGIC]);
        m
    }

    /// The version octet.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }

    /// The CRL number.
    pub fn crl_number(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.buffer.as_ref()[field::NUMBER]);
        u64::from_be_bytes(b)
    }

    /// The declared CRL length.
    pub fn crl_len(&self) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.buffer.as_ref()[field::LENGTH]);
        u32::from_be_bytes(b)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The CRL DER.
    pub fn crl(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Writes magic and version.
    pub fn set_header(&mut self) {
        let data = self.buffer.as_mut();
        data[field::MAGIC].copy_from_slice(&MAGIC);
        data[field::VERSION] = VERSION;
    }

    /// Sets the CRL number.
    pub fn set_crl_number(&mut self, value: u64) {
        self.buffer.as_mut()[field::NUMBER].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the declared CRL length.
    pub fn set_crl_len(&mut self, value: u32) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&value.to_be_bytes());
    }

    /// The CRL area, mutable.
    pub fn crl_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

/// A parsed envelope (borrows the CRL bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The CRL number the envelope announces.
    pub crl_number: u64,
    /// The CRL, DER.
    pub crl: &'a [u8],
}

impl<'a> Envelope<'a> {
    /// Parses an envelope. Never panics.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, WireError> {
        let packet = Packet::new_checked(bytes)?;
        if packet.magic() != MAGIC {
            return Err(WireError::Magic);
        }
        if packet.version() != VERSION {
            return Err(WireError::Version(packet.version()));
        }
        Ok(Envelope {
            crl_number: packet.crl_number(),
            crl: packet.crl(),
        })
    }

    /// Encoded length.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.crl.len()
    }

    /// Emits into `packet`, whose buffer must be exactly [`Envelope::buffer_len`] long.
    ///
    /// # Panics
    /// If the buffer length is wrong or the CRL exceeds [`MAX_CRL_LEN`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        assert!(self.crl.len() <= MAX_CRL_LEN);
        packet.set_header();
        packet.set_crl_number(self.crl_number);
        packet.set_crl_len(self.crl.len() as u32);
        packet.crl_mut().copy_from_slice(self.crl);
    }

    /// Emits into a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut buf = vec![0u8; self.buffer_len()];
        self.emit(&mut Packet::new_unchecked(&mut buf[..]));
        buf
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn emit_into_prefilled_and_parse() {
        let env = Envelope {
            crl_number: 0x0102_0304_0506_0708,
            crl: &[0x30, 0x03, 1, 2, 3],
        };
        let mut buf = vec![0xa5u8; env.buffer_len()];
        env.emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(
            buf,
            [
                b'W', b'C', b'R', b'L', 1, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 5, 0x30, 3, 1, 2, 3
            ]
        );
        assert_eq!(Envelope::parse(&buf), Ok(env));
    }

    #[test]
    fn refuses_malformed() {
        let good = Envelope {
            crl_number: 9,
            crl: &[1, 2, 3],
        }
        .to_bytes();
        assert_eq!(Envelope::parse(&good[..5]), Err(WireError::Truncated));
        assert_eq!(
            Envelope::parse(&good[..good.len() - 1]),
            Err(WireError::Truncated)
        );
        let mut long = good.clone();
        long.push(0);
        assert_eq!(Envelope::parse(&long), Err(WireError::Trailing));
        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(Envelope::parse(&bad), Err(WireError::Magic));
        let mut bad = good.clone();
        bad[4] = 2;
        assert_eq!(Envelope::parse(&bad), Err(WireError::Version(2)));
        let mut bad = good;
        bad[13] = 0xff;
        assert_eq!(Envelope::parse(&bad), Err(WireError::TooLarge));
    }
}
