//! The ping appliance's engine: one smoltcp interface per NIC, answering ARP and ICMP echo
//! for the NIC's configured addresses. Every frame is checked before smoltcp sees it, so a
//! malformed one is counted under a named reason instead of vanishing silently.
//! Pure: it takes a `Device` and the time, and never touches hardware.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod filter;

use filter::{DropCounters, Filtered};
use nanovnf_schema::NicConfig;
use smoltcp::iface::{Config, Interface, SocketSet, SocketStorage};
use smoltcp::phy::Device;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};

/// One served NIC: its smoltcp interface and its drop counters.
pub struct Port {
    iface: Interface,
    pub drops: DropCounters,
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
            }),
        }
    }

    /// Processes every frame `device` holds; returns the next time smoltcp wants to be
    /// polled.
    pub fn poll<D: Device>(&mut self, device: &mut D, now: Instant) -> Option<Instant> {
        let mut storage: [SocketStorage<'_>; 0] = [];
        let mut sockets = SocketSet::new(&mut storage[..]);
        let mut filtered = Filtered::new(device, self.iface.hardware_addr(), &mut self.drops);
        self.iface.poll(now, &mut filtered, &mut sockets);
        self.iface.poll_at(now, &sockets)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortError {
    TooManyAddresses(nanovnf_schema::Ipv4Cidr),
}

#[cfg(test)]
mod tests;
