//! TURN ChannelData messages (RFC 8656 §12.4): a 4-byte header (channel
//! number, payload length) in front of the application data, relayed to
//! the peer bound to the channel.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         Channel Number        |            Length             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! /                       Application Data                        /
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Over UDP the padding to a multiple of four bytes is optional (§12.5):
//! [`Packet::check_len`] accepts up to three trailing bytes after the
//! payload, and [`Repr::emit`] writes none.

use crate::error::WireError;

/// Header length.
pub const HEADER_LEN: usize = 4;
/// Lowest channel number (RFC 8656 §12).
pub const MIN_CHANNEL: u16 = 0x4000;
/// Highest channel number (RFC 8656 §12).
pub const MAX_CHANNEL: u16 = 0x4fff;

mod field {
    use core::ops::{Range, RangeFrom};

    pub const CHANNEL: Range<usize> = 0..2;
    pub const LENGTH: Range<usize> = 2..4;
    pub const PAYLOAD: RangeFrom<usize> = 4..;
}

/// Whether `bytes` starts like a ChannelData message: first byte 64..=79
/// (RFC 7983 §7), which tells it apart from STUN (0..=3) on one socket.
pub fn is_channel_data(bytes: &[u8]) -> bool {
    matches!(bytes.first(), Some(0x40..=0x4f))
}

/// A read/write view of a ChannelData message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap a buffer without checks.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wrap a buffer and run [`Packet::check_len`].
    pub fn new_checked(buffer: T) -> Result<Packet<T>, WireError> {
        let packet = Packet::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Check the header fits, the channel number is in
    /// [`MIN_CHANNEL`]`..=`[`MAX_CHANNEL`], the length field fits the
    /// buffer and at most three padding bytes follow (§12.5). After this no
    /// accessor panics.
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let number = self.channel_number();
        if !(MIN_CHANNEL..=MAX_CHANNEL).contains(&number) {
            return Err(WireError::BadChannel { number });
        }
        let end = HEADER_LEN + usize::from(self.length());
        if end > len {
            return Err(WireError::Truncated);
        }
        if len - end > 3 {
            return Err(WireError::Malformed);
        }
        Ok(())
    }

    /// The buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The channel number.
    pub fn channel_number(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[field::CHANNEL.start], b[field::CHANNEL.start + 1]])
    }

    /// The length field: payload bytes, padding excluded.
    pub fn length(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[field::LENGTH.start], b[field::LENGTH.start + 1]])
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The application data, padding excluded.
    pub fn payload(&self) -> &'a [u8] {
        let end = HEADER_LEN + usize::from(self.length());
        &self.buffer.as_ref()[field::PAYLOAD][..end - HEADER_LEN]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set the channel number.
    ///
    /// # Panics
    /// If the buffer is shorter than [`HEADER_LEN`].
    pub fn set_channel_number(&mut self, number: u16) {
        self.buffer.as_mut()[field::CHANNEL].copy_from_slice(&number.to_be_bytes());
    }

    /// Set the length field.
    ///
    /// # Panics
    /// If the buffer is shorter than [`HEADER_LEN`].
    pub fn set_length(&mut self, length: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&length.to_be_bytes());
    }

    /// The bytes after the header, for writing the payload.
    ///
    /// # Panics
    /// If the buffer is shorter than [`HEADER_LEN`].
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

/// A parsed ChannelData message, borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr<'a> {
    /// The channel number, in [`MIN_CHANNEL`]`..=`[`MAX_CHANNEL`].
    pub channel_number: u16,
    /// The application data.
    pub payload: &'a [u8],
}

impl<'a> Repr<'a> {
    /// Parse a checked packet.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&'a T>) -> Result<Repr<'a>, WireError> {
        packet.check_len()?;
        Ok(Repr {
            channel_number: packet.channel_number(),
            payload: packet.payload(),
        })
    }

    /// Parse untrusted bytes.
    pub fn parse_bytes(bytes: &'a [u8]) -> Result<Repr<'a>, WireError> {
        Repr::parse(&Packet::new_checked(bytes)?)
    }

    /// Bytes [`Repr::emit`] writes: header and payload, no padding.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// Write the message into the front of `packet`'s buffer; returns the
    /// emitted length ([`Repr::buffer_len`]).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Packet<T>,
    ) -> Result<usize, WireError> {
        if !(MIN_CHANNEL..=MAX_CHANNEL).contains(&self.channel_number) {
            return Err(WireError::BadChannel {
                number: self.channel_number,
            });
        }
        let length = u16::try_from(self.payload.len()).map_err(|_| WireError::TooLong)?;
        let total = self.buffer_len();
        if packet.buffer.as_ref().len() < total {
            return Err(WireError::BufferTooSmall);
        }
        packet.set_channel_number(self.channel_number);
        packet.set_length(length);
        packet.payload_mut()[..self.payload.len()].copy_from_slice(self.payload);
        Ok(total)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    // Channel 0x4001, 5 bytes "hello", then three bytes of padding.
    static PADDED: [u8; 12] = [
        0x40, 0x01, 0x00, 0x05, b'h', b'e', b'l', b'l', b'o', 0x00, 0x00, 0x00,
    ];

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&PADDED[..]).unwrap();
        assert_eq!(p.channel_number(), 0x4001);
        assert_eq!(p.length(), 5);
        assert_eq!(p.payload(), b"hello");
        // Unpadded is as good over UDP (§12.5).
        let p = Packet::new_checked(&PADDED[..9]).unwrap();
        assert_eq!(p.payload(), b"hello");
    }

    #[test]
    fn construct() {
        let repr = Repr {
            channel_number: 0x4001,
            payload: b"hello",
        };
        let mut buf = [0xa5u8; 12];
        assert_eq!(repr.buffer_len(), 9);
        assert_eq!(repr.emit(&mut Packet::new_unchecked(&mut buf[..])), Ok(9));
        assert_eq!(buf[..9], PADDED[..9]);
        // Bytes after the message are left alone.
        assert_eq!(buf[9..], [0xa5; 3]);
        assert_eq!(Repr::parse_bytes(&buf[..9]), Ok(repr));
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(Repr::parse_bytes(&PADDED[..3]), Err(WireError::Truncated));
        // Length beyond the buffer.
        assert_eq!(Repr::parse_bytes(&PADDED[..8]), Err(WireError::Truncated));
        // More than three bytes after the payload.
        let mut long = PADDED.to_vec();
        long.push(0);
        assert_eq!(Repr::parse_bytes(&long), Err(WireError::Malformed));
        for number in [0x3fffu16, 0x5000, 0x0001] {
            let mut b = PADDED;
            b[..2].copy_from_slice(&number.to_be_bytes());
            assert_eq!(Repr::parse_bytes(&b), Err(WireError::BadChannel { number }));
        }
        assert!(is_channel_data(&PADDED));
        assert!(!is_channel_data(&[0x00, 0x01]));
        assert!(!is_channel_data(&[0x50]));
        assert!(!is_channel_data(&[]));
    }

    #[test]
    fn emit_checks() {
        let mut buf = [0u8; 8];
        let repr = Repr {
            channel_number: 0x4000,
            payload: b"hello",
        };
        assert_eq!(
            repr.emit(&mut Packet::new_unchecked(&mut buf[..])),
            Err(WireError::BufferTooSmall)
        );
        let bad = Repr {
            channel_number: 0x3fff,
            payload: b"",
        };
        assert_eq!(
            bad.emit(&mut Packet::new_unchecked(&mut buf[..])),
            Err(WireError::BadChannel { number: 0x3fff })
        );
        let big = vec![0u8; 70_000];
        let too_long = Repr {
            channel_number: 0x4000,
            payload: &big,
        };
        assert_eq!(
            too_long.emit(&mut Packet::new_unchecked(&mut vec![0u8; 70_004][..])),
            Err(WireError::TooLong)
        );
    }
}
