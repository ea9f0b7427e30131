//! Our own wire formats, in the smoltcp `wire` style: a zero-copy `Packet<T>`
//! view with one accessor per field (`new_checked` for untrusted bytes) and an
//! owned-or-borrowed `Repr` with `parse`, `buffer_len` and `emit`.
//!
//! All integers are big-endian. Both formats start with a version octet so they
//! can evolve; a receiver refuses versions it does not know.

pub mod enrol;
pub mod envelope;

pub use enrol::{
    Message as EnrolmentMessage, MessageType, Packet as EnrolmentPacket, RejectReason,
};
pub use envelope::{Envelope as CrlEnvelope, Packet as CrlEnvelopePacket};
