//! The control socket's CA commands, from [`wow_core::ca_command`]; the
//! protocol side of enrolment is in [`wow_core::enrol`] and
//! [`wow_core::membership`].

pub use wow_core::ca_command::{CaRequest, NOT_THE_CA, parse_ttl};
