//! Our own wire formats, in the smoltcp `wire` style: a zero-copy `Packet<T>`
//! view with one accessor per field (`new_checked` for untrusted bytes) and an
//! owned-or-borrowed `Repr` with `parse`, `buffer_len` and `emit`.
//!
//! All integers are big-endian. Both formats start with a version octet so they
//! can evolve; a receiver refuses versions it does not know.

pub mod enrol;
pub mod envelope;
pub mod statement;

pub use enrol::{
    Message as EnrolmentMessage, MessageType, Packet as EnrolmentPacket, RejectReason,
};
pub use envelope::{Envelope as CrlEnvelope, Packet as CrlEnvelopePacket};
pub use statement::Statement;

use crate::error::WireError;

/// The length rule both formats share: a `header_len`-octet header whose
/// length field (`declared`, at most `max`) covers exactly the rest of a
/// `buffer_len`-octet buffer.
fn check_framed_len(
    buffer_len: usize,
    header_len: usize,
    declared: usize,
    max: usize,
) -> Result<(), WireError> {
    let Some(body_len) = buffer_len.checked_sub(header_len) else {
        return Err(WireError::Truncated);
    };
    if declared > max {
        return Err(WireError::TooLarge);
    }
    match body_len.cmp(&declared) {
        core::cmp::Ordering::Less => Err(WireError::Truncated),
        core::cmp::Ordering::Greater => Err(WireError::Trailing),
        core::cmp::Ordering::Equal => Ok(()),
    }
}
