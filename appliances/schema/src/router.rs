//! What a router appliance is told, as Neutron's L3 agent knows a router: its interfaces
//! (the NICs of the boot configuration, each holding its subnet's `gateway_ip`), the
//! external gateway, extra routes and floating IPs. Floating IPs change live.

use crate::dhcp::Route;
use alloc::vec::Vec;
use core::net::Ipv4Addr;
use serde::{Deserialize, Serialize};

/// Default conntrack capacity (entries), as the issue and Linux's `nf_conntrack_max` on a
/// small host.
pub const DEFAULT_CONNTRACK_CAPACITY: u32 = 65_536;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RouterRole {
    /// Index into `BootConfig::nics` of the external NIC (holding the gateway address),
    /// if the router has an external gateway. Every other NIC is a tenant interface; a
    /// NIC's subnets are its addresses' prefixes.
    pub external_nic: Option<u8>,
    /// Next hop of the default route (the external subnet's gateway), on the external NIC.
    pub default_gateway: Option<Ipv4Addr>,
    /// Source NAT of tenant traffic leaving by the external NIC to its gateway address.
    pub enable_snat: bool,
    /// The router's extra routes (`routes` in the topology); each next hop is on a
    /// connected subnet.
    pub routes: Vec<Route>,
    /// Floating IPs on the external NIC and the fixed addresses they map to.
    pub floating_ips: Vec<FloatingIp>,
    /// Upper bound on tracked connections; new flows beyond it are dropped and counted.
    pub conntrack_capacity: u32,
}

/// One floating IP: 1:1 NAT between `floating` (external) and `fixed` (a tenant port).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloatingIp {
    pub floating: Ipv4Addr,
    pub fixed: Ipv4Addr,
}
