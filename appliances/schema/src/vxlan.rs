//! What a VXLAN gateway appliance is told: its VNI, UDP port and VTEPs (RFC 7348), and the
//! ports known to live behind other VTEPs (l2population). NIC 0 of the boot configuration
//! is on the tenant bridge (no address); NIC 1 is on the underlay and holds `local_vtep`.

use alloc::vec::Vec;
use core::net::Ipv4Addr;
use serde::{Deserialize, Serialize};

/// Default ageing of learnt forwarding entries, in seconds (Linux's and Open vSwitch's).
pub const DEFAULT_AGEING_SECS: u32 = 300;
/// Default capacity of the forwarding table.
pub const DEFAULT_FDB_CAPACITY: u32 = 4096;
/// IANA's VXLAN port.
pub const DEFAULT_UDP_PORT: u16 = 4789;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct VxlanRole {
    /// The 24-bit VXLAN network identifier.
    pub vni: u32,
    /// Outer UDP destination port (4789; Linux's own default is 8472).
    pub udp_port: u16,
    /// Every VTEP that gets a copy of broadcast, multicast and unknown unicast frames.
    pub remote_vteps: Vec<Ipv4Addr>,
    /// Next hop for VTEPs outside the underlay subnet, if any.
    pub underlay_gateway: Option<Ipv4Addr>,
    /// Ports on other hosts (l2population): never aged, never evicted.
    pub static_entries: Vec<FdbEntry>,
    /// Answer ARP requests for static entries' addresses on the tenant side.
    pub arp_responder: bool,
    pub ageing_secs: u32,
    pub fdb_capacity: u32,
    /// Outer IPv4 TTL (Linux's vxlan default: 64).
    pub ttl: u8,
    /// Set DF on outer packets.
    pub df: bool,
}

/// A port on another host: its MAC lives behind `vtep`; `ip`, when known, lets the ARP
/// responder answer for it.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbEntry {
    pub mac: [u8; 6],
    pub vtep: Ipv4Addr,
    pub ip: Option<Ipv4Addr>,
}
