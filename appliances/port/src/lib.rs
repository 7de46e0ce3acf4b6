//! An appliance's own presence on a NIC: one smoltcp interface answering ARP and ICMP echo
//! for the NIC's addresses. Every frame is checked before smoltcp sees it, so a malformed
//! one is counted under a named reason instead of vanishing silently, and an appliance may
//! [`Detour`] frames smoltcp cannot serve (a DHCP server's broadcasts, say) to its engine.
//! Pure: it takes a `Device` and the time, and never touches hardware.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod filter;

use alloc::vec::Vec;
use filter::{DropCounters, Filtered};
use nanovnf_schema::NicConfig;
use smoltcp::iface::{
    Config, Interface, PollIngressSingleResult, PollResult, SocketSet, SocketStorage,
};
use smoltcp::phy::{Device, TxToken};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};

/// Frames an appliance takes out of the stack's path: smoltcp answers only for its own
/// addresses and sockets, so a DHCP server (broadcasts from `0.0.0.0`, replies to an
/// address the client does not hold yet) works on the raw frame instead.
pub trait Detour {
    /// Sees every frame that passed the filter. Returns true when it took the frame, which
    /// smoltcp then never sees; replies go into `out`.
    fn take(&mut self, frame: &[u8], out: &mut Outbox) -> bool;
}

/// The detour of an appliance that takes nothing.
pub struct NoDetour;

impl Detour for NoDetour {
    fn take(&mut self, _frame: &[u8], _out: &mut Outbox) -> bool {
        false
    }
}

/// Frames a detour wants sent, queued until the device has room. Bounded: beyond
/// [`Outbox::LIMIT`] frames a new one is refused and counted. Buffers are reused.
#[derive(Default)]
pub struct Outbox {
    queued: Vec<Vec<u8>>,
    spare: Vec<Vec<u8>>,
    /// Frames refused because the outbox was full.
    pub overflows: u64,
}

impl Outbox {
    /// Twice the RX ring (128): one poll may take a reply's worth of frames from every RX
    /// buffer (a burst of DNS queries) while the 64-entry TX ring drains.
    pub const LIMIT: usize = 256;

    /// A zeroed buffer of `len` bytes that will be sent, or `None` when full.
    pub fn push(&mut self, len: usize) -> Option<&mut [u8]> {
        if self.queued.len() >= Self::LIMIT {
            self.overflows += 1;
            return None;
        }
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.resize(len, 0);
        self.queued.push(buf);
        self.queued.last_mut().map(|b| &mut b[..])
    }

    pub fn len(&self) -> usize {
        self.queued.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    /// Sends queued frames in order while the device has room; the rest wait.
    pub fn send<D: Device>(&mut self, device: &mut D, now: Instant) {
        let mut sent = 0;
        for frame in &self.queued {
            let Some(token) = device.transmit(now) else {
                break;
            };
            token.consume(frame.len(), |buf| buf.copy_from_slice(frame));
            sent += 1;
        }
        for buf in self.queued.drain(..sent) {
            self.spare.push(buf);
        }
    }
}

/// One served NIC: its smoltcp interface, its drop counters and the detour's outbox.
pub struct Port {
    iface: Interface,
    pub drops: DropCounters,
    outbox: Outbox,
}

impl Port {
    /// Builds the interface for `nic` on `device`. Addresses beyond smoltcp's per-interface
    /// limit are returned as an error naming the first that did not fit.
    pub fn new<D: Device>(
        nic: &NicConfig,
        device: &mut D,
        now: Instant,
        seed: u64,
    ) -> Result<Self, PortError> {
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(nic.mac)));
        config.random_seed = seed;
        let mut iface = Interface::new(config, device, now);
        let mut overflow = None;
        iface.update_ip_addrs(|addrs| {
            for cidr in &nic.addresses {
                let ip = IpCidr::new(IpAddress::Ipv4(cidr.addr), cidr.prefix_len);
                if addrs.push(ip).is_err() && overflow.is_none() {
                    overflow = Some(*cidr);
                }
            }
        });
        match overflow {
            Some(cidr) => Err(PortError::TooManyAddresses(cidr)),
            None => Ok(Self {
                iface,
                drops: DropCounters::default(),
                outbox: Outbox::default(),
            }),
        }
    }

    /// Processes every frame `device` holds; returns the next time smoltcp wants to be
    /// polled.
    pub fn poll<D: Device>(&mut self, device: &mut D, now: Instant) -> Option<Instant> {
        self.poll_with(device, now, &mut NoDetour)
    }

    /// Like [`Port::poll`], offering every accepted frame to `detour` first and sending
    /// what it queued.
    pub fn poll_with<D: Device>(
        &mut self,
        device: &mut D,
        now: Instant,
        detour: &mut dyn Detour,
    ) -> Option<Instant> {
        let mut storage: [SocketStorage<'_>; 0] = [];
        let mut sockets = SocketSet::new(&mut storage[..]);
        self.poll_sockets(device, now, detour, &mut sockets)
    }

    /// Like [`Port::poll_with`], serving the appliance's own smoltcp `sockets` too (a
    /// metadata service's TCP listeners).
    pub fn poll_sockets<D: Device>(
        &mut self,
        device: &mut D,
        now: Instant,
        detour: &mut dyn Detour,
        sockets: &mut SocketSet<'_>,
    ) -> Option<Instant> {
        self.ingress(device, now, detour, sockets);
        self.egress(device, now, detour, sockets)
    }

    /// The first half of [`Port::poll_sockets`]: every frame `device` holds goes to the
    /// detour or into `sockets`, and only what a frame answers at once (ARP, echo, a
    /// reset) is sent. An appliance serves its sockets between this and [`Port::egress`],
    /// so that answers leave in the pass that received their requests, and every socket
    /// is visited once per pass rather than once per step of smoltcp's loop.
    pub fn ingress<D: Device>(
        &mut self,
        device: &mut D,
        now: Instant,
        detour: &mut dyn Detour,
        sockets: &mut SocketSet<'_>,
    ) {
        let hw = self.iface.hardware_addr();
        let mut filtered = Filtered::new(device, hw, &mut self.drops, detour, &mut self.outbox);
        self.iface.poll_maintenance(now);
        while self.iface.poll_ingress_single(now, &mut filtered, sockets)
            != PollIngressSingleResult::None
        {}
    }

    /// The second half: what `sockets` have to send, then the detour's frames; returns the
    /// next time smoltcp wants to be polled.
    pub fn egress<D: Device>(
        &mut self,
        device: &mut D,
        now: Instant,
        detour: &mut dyn Detour,
        sockets: &mut SocketSet<'_>,
    ) -> Option<Instant> {
        let hw = self.iface.hardware_addr();
        let mut filtered = Filtered::new(device, hw, &mut self.drops, detour, &mut self.outbox);
        while self.iface.poll_egress(now, &mut filtered, sockets) == PollResult::SocketStateChanged
        {
        }
        self.outbox.send(device, now);
        if !self.outbox.is_empty() {
            // Frames wait for TX room: poll again as soon as possible.
            return Some(now);
        }
        self.iface.poll_at(now, sockets)
    }

    /// The MAC address this port answers for.
    pub fn mac(&self) -> [u8; 6] {
        let HardwareAddress::Ethernet(mac) = self.iface.hardware_addr();
        mac.0
    }

    /// Frames the detour could not queue because the outbox was full.
    pub fn outbox_overflows(&self) -> u64 {
        self.outbox.overflows
    }

    /// The detour's outbox, for frames an engine produces outside [`Detour::take`] (a
    /// forwarded DNS answer, say); they leave at the next poll.
    pub fn outbox_mut(&mut self) -> &mut Outbox {
        &mut self.outbox
    }

    /// Routes everything off-link via `gateway` (how a DNS forwarder reaches upstream
    /// resolvers). False if the route table is full.
    pub fn set_default_gateway(&mut self, gateway: core::net::Ipv4Addr) -> bool {
        self.iface
            .routes_mut()
            .add_default_ipv4_route(gateway)
            .is_ok()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortError {
    TooManyAddresses(nanovnf_schema::Ipv4Cidr),
}

#[cfg(test)]
mod tests;
