//! Who is on the other end of each HTTP connection, at the Ethernet layer. smoltcp hands
//! sockets only addresses and ports, so the tracker watches TCP segments to
//! 169.254.169.254:80 on their way in (a [`Detour`] that takes nothing but SYNs it
//! refuses) and remembers each flow's source MAC; a connection whose segments come from
//! two MACs is marked. On the way out ([`Pinned`]) it addresses each segment of a flow to
//! the MAC that opened it, whatever smoltcp's ARP cache says: an instance and a spoofer
//! sharing one address each get their own answers (the spoofer a 404).
//!
//! It also admits connections fairly: a SYN is dropped (not reset: the client retries)
//! when no listening socket is free, or when free sockets are down to the reserve (a
//! quarter of the pool) and its source already holds [`TIGHT_PER_SOURCE`] connections.

use crate::engine::SourceMac;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::net::Ipv4Addr;
use nanovnf_port::{Detour, Outbox};
use nanovnf_schema::metadata::METADATA_IP;
use smoltcp::phy::{self, Device, DeviceCapabilities};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, TcpPacket};

/// The metadata service's TCP port.
pub const HTTP_PORT: u16 = 80;

/// Connections a source may hold while free sockets are at or below the reserve.
pub const TIGHT_PER_SOURCE: usize = 4;

/// SYNs and segments the tracker dealt with, by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackEvent {
    /// A SYN dropped: every socket was busy.
    SynNoFreeSocket,
    /// A SYN dropped: sockets were scarce and its source held its share.
    SynSourceCap,
    /// A segment of a known flow came from another MAC than its SYN.
    MacChanged,
}

impl TrackEvent {
    pub const ALL: [TrackEvent; 3] = [
        TrackEvent::SynNoFreeSocket,
        TrackEvent::SynSourceCap,
        TrackEvent::MacChanged,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            TrackEvent::SynNoFreeSocket => "syn_dropped_no_free_socket",
            TrackEvent::SynSourceCap => "syn_dropped_source_cap",
            TrackEvent::MacChanged => "segment_mac_changed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Flow {
    ip: Ipv4Addr,
    port: u16,
    mac: [u8; 6],
    changed: bool,
}

/// The flow table: one entry per connection a socket holds (bounded by the sockets).
#[derive(Debug)]
pub struct Tracker {
    flows: Vec<Flow>,
    /// Listening sockets not yet promised to an admitted SYN during this poll.
    free: usize,
    /// Free sockets kept for sources holding fewer than [`TIGHT_PER_SOURCE`].
    reserve: usize,
    events: [u64; TrackEvent::ALL.len()],
}

/// The TCP segment to 169.254.169.254:80 in `frame`: (source MAC, source address,
/// source port, SYN without ACK).
fn inbound(frame: &[u8]) -> Option<([u8; 6], Ipv4Addr, u16, bool)> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    if ip.next_header() != IpProtocol::Tcp || ip.dst_addr() != METADATA_IP {
        return None;
    }
    if ip.frag_offset() != 0 || ip.more_frags() {
        return None;
    }
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    if tcp.dst_port() != HTTP_PORT {
        return None;
    }
    Some((
        eth.src_addr().0,
        ip.src_addr(),
        tcp.src_port(),
        tcp.syn() && !tcp.ack(),
    ))
}

impl Tracker {
    /// A tracker for a pool of `sockets` sockets (a quarter of them is the reserve).
    pub fn new(sockets: usize) -> Self {
        Tracker {
            flows: Vec::with_capacity(sockets),
            free: 0,
            reserve: sockets / 4,
            events: [0; TrackEvent::ALL.len()],
        }
    }

    pub fn reserve(&self) -> usize {
        self.reserve
    }

    /// Listening sockets no admitted SYN has taken yet.
    pub fn free(&self) -> usize {
        self.free
    }

    /// Before a poll: how many sockets listen.
    pub fn set_free(&mut self, listening: usize) {
        self.free = listening;
    }

    /// After a poll: forgets every flow no socket holds.
    pub fn retain(&mut self, mut live: impl FnMut(Ipv4Addr, u16) -> bool) {
        self.flows.retain(|f| live(f.ip, f.port));
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    pub fn events(&self, e: TrackEvent) -> u64 {
        self.events[e as usize]
    }

    /// The source MAC of the flow from `ip:port`.
    pub fn source_mac(&self, ip: Ipv4Addr, port: u16) -> SourceMac {
        match self.flows.iter().find(|f| f.ip == ip && f.port == port) {
            Some(f) if f.changed => SourceMac::Changed,
            Some(f) => SourceMac::Seen(f.mac),
            None => SourceMac::Unseen,
        }
    }

    /// Looks at an incoming frame; true when it must be dropped (a refused SYN).
    pub fn inspect(&mut self, frame: &[u8]) -> bool {
        let Some((mac, ip, port, syn)) = inbound(frame) else {
            return false;
        };
        if let Some(f) = self.flows.iter_mut().find(|f| f.ip == ip && f.port == port) {
            if f.mac != mac && !f.changed {
                f.changed = true;
                self.events[TrackEvent::MacChanged as usize] += 1;
            }
            return false;
        }
        if !syn {
            return false; // smoltcp answers a stray segment with a reset
        }
        if self.free == 0 {
            self.events[TrackEvent::SynNoFreeSocket as usize] += 1;
            return true;
        }
        let held = self.flows.iter().filter(|f| f.ip == ip).count();
        if self.free <= self.reserve && held >= TIGHT_PER_SOURCE {
            self.events[TrackEvent::SynSourceCap as usize] += 1;
            return true;
        }
        self.free -= 1;
        self.flows.push(Flow {
            ip,
            port,
            mac,
            changed: false,
        });
        false
    }

    /// Addresses an outgoing segment from 169.254.169.254:80 to its flow's MAC.
    pub fn pin(&self, frame: &mut [u8]) {
        let Some((ip, port)) = outbound(frame) else {
            return;
        };
        if let Some(f) = self.flows.iter().find(|f| f.ip == ip && f.port == port) {
            frame[..6].copy_from_slice(&f.mac);
        }
    }
}

/// The destination of a TCP segment from 169.254.169.254:80 in `frame`.
fn outbound(frame: &[u8]) -> Option<(Ipv4Addr, u16)> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    if ip.next_header() != IpProtocol::Tcp || ip.src_addr() != METADATA_IP {
        return None;
    }
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    (tcp.src_port() == HTTP_PORT).then(|| (ip.dst_addr(), tcp.dst_port()))
}

/// The tracker as the port's detour: sees every accepted frame, takes refused SYNs.
pub struct Inspect<'a>(pub &'a RefCell<Tracker>);

impl Detour for Inspect<'_> {
    fn take(&mut self, frame: &[u8], _out: &mut Outbox) -> bool {
        self.0.borrow_mut().inspect(frame)
    }
}

/// A device whose outgoing frames are pinned to their flow's MAC.
pub struct Pinned<'a, D> {
    pub inner: &'a mut D,
    pub tracker: &'a RefCell<Tracker>,
}

pub struct PinnedTx<'a, T> {
    inner: T,
    tracker: &'a RefCell<Tracker>,
}

impl<T: phy::TxToken> phy::TxToken for PinnedTx<'_, T> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let tracker = self.tracker;
        self.inner.consume(len, |buf| {
            let r = f(buf);
            tracker.borrow().pin(buf);
            r
        })
    }
}

impl<D: Device> Device for Pinned<'_, D> {
    type RxToken<'b>
        = D::RxToken<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = PinnedTx<'b, D::TxToken<'b>>
    where
        Self: 'b;

    fn receive(&mut self, now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let tracker = self.tracker;
        let (rx, tx) = self.inner.receive(now)?;
        Some((rx, PinnedTx { inner: tx, tracker }))
    }

    fn transmit(&mut self, now: Instant) -> Option<Self::TxToken<'_>> {
        let tracker = self.tracker;
        self.inner
            .transmit(now)
            .map(|inner| PinnedTx { inner, tracker })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.inner.capabilities()
    }
}
