//! An in-memory smoltcp device: the stand-in for a TAP (Ethernet medium) or
//! a TUN (IP medium) when a real client implementation (smoltcp's DHCP, DNS
//! or TCP sockets) talks to a sans-IO server inside the test process.
//!
//! The test moves frames between [`QueueDevice::from_guest`] (what the guest
//! sent) and the server, and pushes the server's answers onto
//! [`QueueDevice::to_guest`].
//!
//! ```
//! use smoltcp::phy::Medium;
//! use wow_test_hosts::smoltcp_device::QueueDevice;
//!
//! let mut dev = QueueDevice::new(Medium::Ethernet, 1514);
//! dev.to_guest.push_back(vec![0; 60]);
//! assert_eq!(dev.to_guest.len(), 1);
//! ```

use std::collections::VecDeque;

use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

/// A smoltcp [`Device`] backed by two queues of whole frames (or packets).
#[derive(Debug)]
pub struct QueueDevice {
    /// Frames waiting to be received by the guest.
    pub to_guest: VecDeque<Vec<u8>>,
    /// Frames the guest transmitted, oldest first.
    pub from_guest: VecDeque<Vec<u8>>,
    medium: Medium,
    mtu: usize,
}

impl QueueDevice {
    /// A device with the given medium and MTU (for Ethernet, the whole frame
    /// size, e.g. 1514).
    pub fn new(medium: Medium, mtu: usize) -> Self {
        QueueDevice {
            to_guest: VecDeque::new(),
            from_guest: VecDeque::new(),
            medium,
            mtu,
        }
    }

    /// Whether frames are waiting in either direction.
    pub fn is_busy(&self) -> bool {
        !self.to_guest.is_empty() || !self.from_guest.is_empty()
    }
}

/// Receive token: one queued frame.
#[derive(Debug)]
pub struct RxToken(Vec<u8>);

/// Transmit token: appends the frame to [`QueueDevice::from_guest`].
#[derive(Debug)]
pub struct TxToken<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0; len];
        let r = f(&mut buf);
        self.0.push_back(buf);
        r
    }
}

impl Device for QueueDevice {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _: Instant) -> Option<(RxToken, TxToken<'_>)> {
        let frame = self.to_guest.pop_front()?;
        Some((RxToken(frame), TxToken(&mut self.from_guest)))
    }

    fn transmit(&mut self, _: Instant) -> Option<TxToken<'_>> {
        Some(TxToken(&mut self.from_guest))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = self.medium;
        caps.max_transmission_unit = self.mtu;
        caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::{RxToken as _, TxToken as _};

    #[test]
    fn frames_flow_through_both_queues_in_order() {
        let mut dev = QueueDevice::new(Medium::Ip, 1500);
        assert!(!dev.is_busy());
        assert!(dev.receive(Instant::ZERO).is_none());
        dev.to_guest.push_back(vec![1, 2, 3]);
        dev.to_guest.push_back(vec![4]);
        let (rx, _) = dev.receive(Instant::ZERO).unwrap();
        assert_eq!(rx.consume(|b| b.to_vec()), vec![1, 2, 3]);
        let tx = dev.transmit(Instant::ZERO).unwrap();
        tx.consume(2, |b| b.copy_from_slice(&[7, 8]));
        assert_eq!(dev.from_guest.pop_front(), Some(vec![7, 8]));
        assert_eq!(dev.to_guest.len(), 1);
        assert_eq!(dev.capabilities().medium, Medium::Ip);
        assert_eq!(dev.capabilities().max_transmission_unit, 1500);
    }
}
