//! smoltcp's `Device` over [`VirtioNet`]: thin, never panics, and owns the buffer
//! lifecycle (a receive buffer goes back to the device when its token is dropped, consumed
//! or not).

use crate::net::{ETHERNET_HEADER_LEN, RxRing, TxRing, VirtioNet};
use smoltcp::phy::{self, Checksum, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use virtio_drivers::transport::Transport;

pub struct RxToken<'a> {
    ring: &'a mut RxRing,
    id: u16,
    len: usize,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.ring.frame(self.id, self.len))
    }
}

impl Drop for RxToken<'_> {
    fn drop(&mut self) {
        self.ring.recycle(self.id);
    }
}

pub struct TxToken<'a> {
    ring: &'a mut TxRing,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        self.ring.send_from_stack(len, f)
    }
}

impl<T: Transport> phy::Device for VirtioNet<T> {
    type RxToken<'a>
        = RxToken<'a>
    where
        T: 'a;
    type TxToken<'a>
        = TxToken<'a>
    where
        T: 'a;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let (id, len) = self.rx.next_frame()?;
        Some((
            RxToken {
                ring: &mut self.rx,
                id,
                len,
            },
            TxToken { ring: &mut self.tx },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        self.tx.can_send().then_some(TxToken { ring: &mut self.tx })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = usize::from(self.mtu()) + ETHERNET_HEADER_LEN;
        if self.offloads().tx_csum {
            // Received segments are still checked; sent ones are finished by the device
            // (`TxRing::send_from_stack`).
            caps.checksum.tcp = Checksum::Rx;
        }
        caps
    }
}
