//! Frame checks in front of smoltcp. smoltcp drops what it cannot parse without saying
//! why; we check the layers the ping appliance serves (Ethernet, ARP, IPv4, ICMP) first
//! and count each rejected frame under a named reason.

use crate::{Detour, Outbox};
use smoltcp::phy::{self, Device, DeviceCapabilities};
use smoltcp::time::Instant;
use smoltcp::wire::{
    ArpOperation, ArpPacket, EthernetAddress, EthernetFrame, EthernetProtocol, HardwareAddress,
    Icmpv4Packet, IpProtocol, Ipv4Packet,
};

/// Why a frame was dropped before reaching the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Shorter than an Ethernet header.
    TruncatedEthernet,
    /// Addressed to another unicast MAC.
    NotForUs,
    /// Neither ARP nor IPv4.
    UnknownEthertype,
    /// ARP shorter than its header says, or not Ethernet/IPv4, or an unknown operation.
    MalformedArp,
    /// IPv4 with a bad version, header length, total length or fragment.
    MalformedIpv4,
    BadIpv4Checksum,
    /// ICMP shorter than its header.
    MalformedIcmp,
    BadIcmpChecksum,
    /// Larger than the interface MTU allows.
    Oversized,
}

impl DropReason {
    pub const ALL: [DropReason; 9] = [
        DropReason::TruncatedEthernet,
        DropReason::NotForUs,
        DropReason::UnknownEthertype,
        DropReason::MalformedArp,
        DropReason::MalformedIpv4,
        DropReason::BadIpv4Checksum,
        DropReason::MalformedIcmp,
        DropReason::BadIcmpChecksum,
        DropReason::Oversized,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            DropReason::TruncatedEthernet => "truncated_ethernet",
            DropReason::NotForUs => "not_for_us",
            DropReason::UnknownEthertype => "unknown_ethertype",
            DropReason::MalformedArp => "malformed_arp",
            DropReason::MalformedIpv4 => "malformed_ipv4",
            DropReason::BadIpv4Checksum => "bad_ipv4_checksum",
            DropReason::MalformedIcmp => "malformed_icmp",
            DropReason::BadIcmpChecksum => "bad_icmp_checksum",
            DropReason::Oversized => "oversized",
        }
    }
}

/// Dropped frames per reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounters {
    counts: [u64; DropReason::ALL.len()],
}

impl DropCounters {
    pub fn count(&mut self, reason: DropReason) {
        self.counts[reason as usize] += 1;
    }

    pub fn get(&self, reason: DropReason) -> u64 {
        self.counts[reason as usize]
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// `(reason, count)` for every reason with a non-zero count.
    pub fn nonzero(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|&r| (r, self.get(r)))
            .filter(|&(_, n)| n > 0)
    }
}

/// Accepts the frame for the stack, or says why not.
pub fn check(frame: &[u8], own_mac: EthernetAddress, max_frame: usize) -> Result<(), DropReason> {
    let eth = EthernetFrame::new_checked(frame).map_err(|_| DropReason::TruncatedEthernet)?;
    if frame.len() > max_frame {
        return Err(DropReason::Oversized);
    }
    let dst = eth.dst_addr();
    if dst != own_mac && !dst.is_broadcast() && !dst.is_multicast() {
        return Err(DropReason::NotForUs);
    }
    match eth.ethertype() {
        EthernetProtocol::Arp => check_arp(eth.payload()),
        EthernetProtocol::Ipv4 => check_ipv4(eth.payload()),
        _ => Err(DropReason::UnknownEthertype),
    }
}

fn check_arp(payload: &[u8]) -> Result<(), DropReason> {
    let arp = ArpPacket::new_checked(payload).map_err(|_| DropReason::MalformedArp)?;
    let ethernet_ipv4 = arp.hardware_type() == smoltcp::wire::ArpHardware::Ethernet
        && arp.protocol_type() == EthernetProtocol::Ipv4
        && arp.hardware_len() == 6
        && arp.protocol_len() == 4;
    let known_op = matches!(arp.operation(), ArpOperation::Request | ArpOperation::Reply);
    if ethernet_ipv4 && known_op {
        Ok(())
    } else {
        Err(DropReason::MalformedArp)
    }
}

fn check_ipv4(payload: &[u8]) -> Result<(), DropReason> {
    let ip = Ipv4Packet::new_checked(payload).map_err(|_| DropReason::MalformedIpv4)?;
    if ip.version() != 4 {
        return Err(DropReason::MalformedIpv4);
    }
    if !ip.verify_checksum() {
        return Err(DropReason::BadIpv4Checksum);
    }
    if ip.next_header() != IpProtocol::Icmp || ip.more_frags() || ip.frag_offset() != 0 {
        // Not ours to judge beyond IPv4: smoltcp answers with what it supports.
        return Ok(());
    }
    let icmp = Icmpv4Packet::new_checked(ip.payload()).map_err(|_| DropReason::MalformedIcmp)?;
    if !icmp.verify_checksum() {
        return Err(DropReason::BadIcmpChecksum);
    }
    Ok(())
}

/// A device whose received frames pass [`check`] first, then the appliance's [`Detour`];
/// smoltcp sees only what both let through.
pub struct Filtered<'a, D: Device> {
    inner: &'a mut D,
    mac: EthernetAddress,
    drops: &'a mut DropCounters,
    detour: &'a mut dyn Detour,
    outbox: &'a mut Outbox,
}

impl<'a, D: Device> Filtered<'a, D> {
    pub fn new(
        inner: &'a mut D,
        hw: HardwareAddress,
        drops: &'a mut DropCounters,
        detour: &'a mut dyn Detour,
        outbox: &'a mut Outbox,
    ) -> Self {
        let HardwareAddress::Ethernet(mac) = hw;
        Self {
            inner,
            mac,
            drops,
            detour,
            outbox,
        }
    }
}

pub struct RxToken<'a, T> {
    inner: T,
    mac: EthernetAddress,
    max_frame: usize,
    drops: &'a mut DropCounters,
    detour: &'a mut dyn Detour,
    outbox: &'a mut Outbox,
}

impl<T: phy::RxToken> phy::RxToken for RxToken<'_, T> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let Self {
            inner,
            mac,
            max_frame,
            drops,
            detour,
            outbox,
        } = self;
        inner.consume(|frame| match check(frame, mac, max_frame) {
            // smoltcp still needs its closure run; an empty frame is dropped at once.
            Ok(()) if detour.take(frame, outbox) => f(&[]),
            Ok(()) => f(frame),
            Err(reason) => {
                drops.count(reason);
                f(&[])
            }
        })
    }
}

impl<D: Device> Device for Filtered<'_, D> {
    type RxToken<'b>
        = RxToken<'b, D::RxToken<'b>>
    where
        Self: 'b;
    type TxToken<'b>
        = D::TxToken<'b>
    where
        Self: 'b;

    fn receive(&mut self, now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let max_frame = self.inner.capabilities().max_transmission_unit;
        let (rx, tx) = self.inner.receive(now)?;
        let rx = RxToken {
            inner: rx,
            mac: self.mac,
            max_frame,
            drops: self.drops,
            detour: &mut *self.detour,
            outbox: &mut *self.outbox,
        };
        Some((rx, tx))
    }

    fn transmit(&mut self, now: Instant) -> Option<Self::TxToken<'_>> {
        self.inner.transmit(now)
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.inner.capabilities()
    }
}
