//! The resolved topology the manager consumes: every default applied, every address
//! allocated, every MAC and link name chosen. Plain data; all names are the file's names and
//! every vector is in file order.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::types::{InterfaceAddr, Ipv4Cidr, MacAddr};

/// The address every metadata appliance answers on (and the route DHCP hands out for it).
pub const METADATA_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// A validated, resolved topology file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// `[physical_networks]`: physical network name → existing host interface.
    pub physical_networks: BTreeMap<String, String>,
    pub underlay: Option<Underlay>,
    /// `[dns]`: host-wide DNS settings of the DHCP appliances.
    pub dns: Dns,
    pub networks: Vec<Network>,
    pub subnets: Vec<Subnet>,
    pub ports: Vec<Port>,
    pub routers: Vec<Router>,
    pub floating_ips: Vec<FloatingIp>,
}

impl Topology {
    pub fn network(&self, name: &str) -> Option<&Network> {
        self.networks.iter().find(|n| n.name == name)
    }

    pub fn subnet(&self, name: &str) -> Option<&Subnet> {
        self.subnets.iter().find(|s| s.name == name)
    }

    pub fn port(&self, name: &str) -> Option<&Port> {
        self.ports.iter().find(|p| p.name == name)
    }

    pub fn router(&self, name: &str) -> Option<&Router> {
        self.routers.iter().find(|r| r.name == name)
    }

    /// The subnets of one network, in file order.
    pub fn subnets_of<'a>(&'a self, network: &'a str) -> impl Iterator<Item = &'a Subnet> + 'a {
        self.subnets.iter().filter(move |s| s.network == network)
    }

    /// How many appliances (VMs) the topology needs: per network its DHCP, metadata and
    /// VXLAN gateway appliances, plus one per router.
    pub fn appliance_count(&self) -> usize {
        self.networks
            .iter()
            .map(|n| {
                usize::from(n.dhcp.is_some())
                    + usize::from(n.metadata.is_some())
                    + usize::from(n.vxlan_gateway.is_some())
            })
            .sum::<usize>()
            + self.routers.len()
    }
}

/// `[underlay]`: where VXLAN traffic leaves the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Underlay {
    /// Existing host interface, enslaved to `bridge`.
    pub interface: String,
    /// Default 4789.
    pub udp_port: u16,
    /// The bridge joining `interface` to the VXLAN gateways' underlay NICs.
    pub bridge: String,
}

/// `[dns]`, as Neutron's `dnsmasq_dns_servers` in dhcp_agent.ini.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dns {
    /// Where every DHCP appliance forwards names outside its network's domains, tried in
    /// order; empty (the default) = such names are REFUSED (dnsmasq's `--no-resolv`).
    pub upstream_resolvers: Vec<Ipv4Addr>,
}

/// A network: one Linux bridge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    pub name: String,
    pub external: bool,
    /// Default 1500, or 1450 for vxlan.
    pub mtu: u16,
    pub segment: Segment,
    /// The bridge's link name (`nvb-…`).
    pub bridge: String,
    /// Present when one of the network's subnets has `enable_dhcp`.
    pub dhcp: Option<Appliance>,
    /// Present exactly when `dhcp` is.
    pub metadata: Option<Appliance>,
    /// Present for a vxlan segment.
    pub vxlan_gateway: Option<VxlanGateway>,
}

/// What joins a network's bridge besides the appliances and ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// Host-only bridge.
    Local,
    /// The physical network's interface is enslaved to the bridge.
    Flat {
        physical_network: String,
        interface: String,
    },
    /// A VLAN sub-interface of the physical network's interface is enslaved to the bridge.
    Vlan {
        physical_network: String,
        interface: String,
        vlan_id: u16,
        /// Link name for the sub-interface (`nvv-…`); parent's name + ".100" may not fit.
        link: String,
    },
    /// A VXLAN gateway appliance joins the bridge (see `Network::vxlan_gateway`).
    Vxlan {
        vni: u32,
        local_vtep: InterfaceAddr,
        remote_vteps: Vec<Ipv4Addr>,
        udp_port: u16,
        /// The gateway answers ARP for ports on other hosts (`remote_vtep` ports) from the
        /// tenant side, as Neutron's l2population ARP responder.
        arp_responder: bool,
    },
}

/// What an appliance does (as `status --json` names it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApplianceKind {
    Dhcp,
    Metadata,
    Router,
    Vxlan,
}

impl ApplianceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ApplianceKind::Dhcp => "dhcp",
            ApplianceKind::Metadata => "metadata",
            ApplianceKind::Router => "router",
            ApplianceKind::Vxlan => "vxlan",
        }
    }

    /// The kind [`ApplianceKind::as_str`] names.
    pub fn parse(name: &str) -> Option<ApplianceKind> {
        [Self::Dhcp, Self::Metadata, Self::Router, Self::Vxlan]
            .into_iter()
            .find(|k| k.as_str() == name)
    }
}

/// A network's DHCP or metadata appliance: one NIC on the network's bridge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appliance {
    pub kind: ApplianceKind,
    pub mac: MacAddr,
    /// Tap link name (`nvt-…`).
    pub tap: String,
    /// One address per DHCP-enabled subnet of the network, in file order.
    pub ips: Vec<SubnetAddr>,
}

/// An address in a subnet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubnetAddr {
    pub subnet: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
}

impl SubnetAddr {
    pub fn interface_addr(&self) -> InterfaceAddr {
        InterfaceAddr {
            addr: self.ip,
            prefix_len: self.prefix_len,
        }
    }
}

/// The VXLAN gateway appliance of a vxlan network: bridges the tenant bridge (via
/// `tap`) to the underlay bridge (via `underlay_tap`, holding `local_vtep`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanGateway {
    pub mac: MacAddr,
    pub tap: String,
    pub underlay_mac: MacAddr,
    pub underlay_tap: String,
}

/// A subnet with its defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subnet {
    pub name: String,
    pub network: String,
    pub cidr: Ipv4Cidr,
    pub gateway_ip: Option<Ipv4Addr>,
    pub enable_dhcp: bool,
    /// As written; empty when the key is omitted. See `DhcpConfig::dns_servers` for what
    /// clients are told.
    pub dns_nameservers: Vec<Ipv4Addr>,
    pub dns_domain: String,
    /// `u32::MAX` is an infinite lease (written `-1`, as Neutron's dhcp_lease_duration).
    pub lease_seconds: u32,
    pub host_routes: Vec<Route>,
    /// Explicit, or the whole CIDR minus network, broadcast and gateway addresses.
    pub allocation_pools: Vec<Pool>,
    /// What the DHCP appliance serves on this subnet; `Some` iff `enable_dhcp`.
    pub dhcp: Option<DhcpConfig>,
}

/// A static route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Route {
    pub destination: Ipv4Cidr,
    /// `0.0.0.0` means on-link.
    pub nexthop: Ipv4Addr,
}

/// An inclusive address range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
}

impl Pool {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.start <= ip && ip <= self.end
    }

    /// Number of addresses.
    pub fn len(&self) -> u64 {
        (u64::from(u32::from(self.end)) + 1).saturating_sub(u64::from(u32::from(self.start)))
    }

    pub fn is_empty(&self) -> bool {
        self.start > self.end
    }
}

/// Everything the DHCP (and DNS) appliance needs to serve one subnet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DhcpConfig {
    /// The DHCP appliance's own address here (DHCP server identifier, DNS listener).
    pub server_ip: Ipv4Addr,
    /// The metadata appliance's address here: nexthop of the route to `METADATA_IP`.
    pub metadata_ip: Ipv4Addr,
    pub cidr: Ipv4Cidr,
    /// Option 3; `None` for a subnet without `gateway_ip`.
    pub router: Option<Ipv4Addr>,
    /// Option 6: `dns_nameservers` if given, `[]` for `["0.0.0.0"]`, else `[server_ip]`.
    pub dns_servers: Vec<Ipv4Addr>,
    pub domain: String,
    pub lease_seconds: u32,
    /// Option 26.
    pub mtu: u16,
    /// The subnet's `host_routes`.
    pub host_routes: Vec<Route>,
    /// The other subnets of the same network (on-link routes, as Neutron adds them).
    pub other_subnets: Vec<Ipv4Cidr>,
    /// The ports with an address in this subnet.
    pub reservations: Vec<Reservation>,
}

impl DhcpConfig {
    /// Option 121 as Neutron's dnsmasq builds it: host routes, on-link routes to the
    /// network's other subnets, the metadata route, and (because RFC 3442 clients ignore
    /// option 3 when 121 is present) the default route via the gateway.
    pub fn classless_routes(&self) -> Vec<Route> {
        let mut routes = self.host_routes.clone();
        routes.extend(self.other_subnets.iter().map(|&destination| Route {
            destination,
            nexthop: Ipv4Addr::UNSPECIFIED,
        }));
        if let Some(metadata) = Ipv4Cidr::new(METADATA_IP, 32) {
            routes.push(Route {
                destination: metadata,
                nexthop: self.metadata_ip,
            });
        }
        if let (Some(router), Some(default)) =
            (self.router, Ipv4Cidr::new(Ipv4Addr::UNSPECIFIED, 0))
            && !routes.iter().any(|r| r.destination == default)
        {
            routes.push(Route {
                destination: default,
                nexthop: router,
            });
        }
        routes
    }
}

/// A static DHCP lease and DNS record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    pub port: String,
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    pub hostname: String,
}

/// A port: an address (and optionally a tap) for a VM on a network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Port {
    pub name: String,
    pub network: String,
    /// As written, or a stable `fa:16:3e:…` derived from the port's name.
    pub mac: MacAddr,
    /// `None` only on a network without subnets.
    pub ip: Option<SubnetAddr>,
    /// As written, or `host-A-B-C-D` from the address; `None` without an address.
    pub hostname: Option<String>,
    /// The tap the manager creates on the network's bridge, as written.
    pub tap: Option<String>,
    /// The VTEP of the host this port lives on, for a port of a vxlan network that is not
    /// on this host (l2population: its MAC is a static forwarding entry of the gateway).
    pub remote_vtep: Option<Ipv4Addr>,
    pub instance: Option<Instance>,
}

/// `[port.instance]`: what the metadata service answers to the port's address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    /// As written, or a stable UUID derived from the port's name.
    pub uuid: String,
    /// Default: the port's hostname, else its name.
    pub name: String,
    /// Default "nova".
    pub availability_zone: String,
    /// Default "".
    pub project_id: String,
    pub public_keys: BTreeMap<String, String>,
    /// `user_data`, or the contents of `user_data_file`; at most 64 KiB.
    pub user_data: Option<Vec<u8>>,
    pub meta: BTreeMap<String, String>,
}

/// A router appliance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Router {
    pub name: String,
    /// One NIC per interface subnet, holding its `gateway_ip`, in the order written.
    pub interfaces: Vec<RouterNic>,
    pub external_gateway: Option<ExternalGateway>,
    pub routes: Vec<Route>,
    /// The floating IPs this router serves (indices into `Topology::floating_ips`).
    pub floating_ips: Vec<usize>,
}

/// One router NIC on a network's bridge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterNic {
    pub network: String,
    pub addr: SubnetAddr,
    pub mac: MacAddr,
    /// Tap link name (`nvt-…`).
    pub tap: String,
}

/// A router's NIC on an external network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalGateway {
    pub network: String,
    /// The external subnet holding `ip`; `None` when the external network declares no
    /// subnet (as in TOPOLOGY.md's example): then `prefix_len` is 32, the router has no
    /// default route and treats the external network as on-link.
    pub subnet: Option<String>,
    /// As written, or allocated from the subnet's pools after the ports.
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub mac: MacAddr,
    /// Tap link name (`nvt-…`).
    pub tap: String,
    /// Default true.
    pub enable_snat: bool,
    /// The external subnet's `gateway_ip`: the router's default route.
    pub default_route: Option<Ipv4Addr>,
}

/// A floating IP: 1:1 NAT on the router between `network` and the port's subnet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FloatingIp {
    pub ip: Ipv4Addr,
    pub network: String,
    /// The external subnet holding `ip`; `None` if the network declares no subnet.
    pub subnet: Option<String>,
    pub port: Option<String>,
    /// The port's address.
    pub fixed_ip: Option<Ipv4Addr>,
    /// The router serving it; `Some` iff `port` is.
    pub router: Option<String>,
}
