//! The WOW node as a library: the I/O shell behind the `wow-node`
//! binary. The protocol logic is the sans-IO [`wow_core`] crate;
//! [`runtime`] drives its [`wow_core::core::Core`] over a TAP device and a
//! UDP socket with tokio, [`demo`] drives the same core with in-process
//! smoltcp guests, and the other modules are the configuration, the
//! command line's CA commands, the control socket and the process
//! confinement.
// `deny`, not `forbid`: `fdpass` alone allows it, to adopt the TAP and
// UDP descriptors inherited across the self-update's exec.
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod appliance;
pub mod ca_cmd;
pub mod ca_writer;
pub mod config;
pub mod confine;
pub mod control;
pub mod demo;
pub mod enrol;
pub mod fdpass;
pub mod interfaces;
pub mod metrics;
pub mod portmap;
pub mod runtime;
pub mod traceroute;
pub mod udp;
pub mod update;
pub mod upstream;
