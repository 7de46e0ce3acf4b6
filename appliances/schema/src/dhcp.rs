//! What a DHCP appliance is told: the subnets it serves on its one NIC and the static
//! reservations (Neutron's hosts file). The NIC's MTU is the network's MTU (option 26).

use crate::Ipv4Cidr;
use alloc::string::String;
use alloc::vec::Vec;
use core::net::Ipv4Addr;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DhcpRole {
    /// One entry per DHCP-enabled subnet of the network; the appliance holds an address
    /// in each (listed in the NIC's addresses too).
    pub subnets: Vec<DhcpSubnet>,
    /// Reservations of every subnet; each belongs to the subnet containing its address.
    pub hosts: Vec<DhcpHost>,
    /// Where the appliance's DNS server forwards names outside the network's domains,
    /// tried in order (the host's `[dns] upstream_resolvers`, as Neutron's
    /// `dnsmasq_dns_servers`); empty = such names are REFUSED.
    pub upstream_resolvers: Vec<Ipv4Addr>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DhcpSubnet {
    /// The subnet, e.g. 192.168.1.0/24.
    pub cidr: Ipv4Cidr,
    /// The appliance's own address in it (server identifier, option 54).
    pub server_ip: Ipv4Addr,
    /// Option 3; `None` for a subnet without a gateway.
    pub gateway: Option<Ipv4Addr>,
    /// Option 6, as Neutron writes `dns_nameservers`: empty = the appliance's own address
    /// (it answers DNS for the network's names), `[0.0.0.0]` = announce none.
    pub dns_servers: Vec<Ipv4Addr>,
    /// Option 15.
    pub domain: String,
    /// Option 51.
    pub lease_secs: u32,
    /// The subnet's `host_routes`.
    pub host_routes: Vec<Route>,
    /// The network's other subnets, handed out as on-link routes.
    pub other_subnets: Vec<Ipv4Cidr>,
    /// Where 169.254.169.254/32 is routed (the metadata appliance's address).
    pub metadata_ip: Option<Ipv4Addr>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub destination: Ipv4Cidr,
    pub nexthop: Ipv4Addr,
}

/// One reservation: this MAC gets this address and hostname.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DhcpHost {
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub hostname: String,
}
