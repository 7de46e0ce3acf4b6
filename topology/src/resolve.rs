//! Turns a validated raw topology into the resolved `Topology`: applies defaults, places
//! the addresses `alloc` hands out, and picks stable MACs and link names (see `names`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;

use crate::alloc::{Allocation, allocate, is_dhcp};
use crate::model::{
    Appliance, ApplianceKind, DhcpConfig, Dns, ExternalGateway, FloatingIp, Instance, Network,
    Port, Reservation, Route, Router, RouterNic, Segment, Subnet, SubnetAddr, Topology, Underlay,
    VxlanGateway,
};
use crate::names::{LinkKind, link_name, stable_mac, stable_uuid};
use crate::problem::{Report, Res, ResourceKind};
use crate::raw::{RawRoute, RawSegment, RawTopology, SegmentType, val};
use crate::types::MacAddr;
use crate::validate::Plan;

/// Defaults from TOPOLOGY.md.
pub const DEFAULT_MTU: u16 = 1500;
pub const DEFAULT_VXLAN_MTU: u16 = 1450;
pub const DEFAULT_DNS_DOMAIN: &str = "openstacklocal";
pub const DEFAULT_LEASE_SECONDS: u32 = 86_400;
pub const DEFAULT_UDP_PORT: u16 = 4789;
pub const DEFAULT_AVAILABILITY_ZONE: &str = "nova";

/// MACs and link names handed out so far, so that a (rare) hash collision is resolved
/// deterministically by rehashing with a counter.
struct Namer<'s> {
    salt: &'s str,
    macs: HashSet<MacAddr>,
    links: HashSet<String>,
}

impl Namer<'_> {
    fn mac(&mut self, key: &str) -> MacAddr {
        let mut mac = stable_mac(key);
        let mut n = 0;
        while !self.macs.insert(mac) {
            n += 1;
            mac = stable_mac(&format!("{key}#{n}"));
        }
        mac
    }

    fn link(&mut self, kind: LinkKind, key: &str) -> String {
        let mut name = link_name(kind, self.salt, key);
        let mut n = 0;
        while !self.links.insert(name.clone()) {
            n += 1;
            name = link_name(kind, self.salt, &format!("{key}#{n}"));
        }
        name
    }
}

/// Builds the resolved topology. Call only when validation reported nothing; the only
/// problem found here is two ports of one network with the same (default) hostname.
pub(crate) fn resolve(raw: &RawTopology, plan: &Plan, salt: &str, report: &mut Report) -> Topology {
    let alloc = allocate(raw, plan);
    let mut namer = Namer {
        salt,
        macs: raw
            .ports
            .iter()
            .filter_map(|p| p.raw.mac_address.as_ref().map(val))
            .collect(),
        links: HashSet::new(),
    };
    let underlay = raw.underlay.as_ref().map(|u| Underlay {
        interface: u.raw.interface.get_ref().clone(),
        udp_port: udp_port(raw),
        bridge: namer.link(LinkKind::Bridge, "underlay"),
    });
    let networks: Vec<Network> = raw
        .networks
        .iter()
        .enumerate()
        .map(|(n, e)| network(raw, plan, &alloc, &mut namer, n, &e.raw))
        .collect();
    let routers = routers(raw, plan, &alloc, &mut namer);
    let ports = ports(raw, plan, &alloc, &mut namer, report);
    let subnets = raw
        .subnets
        .iter()
        .enumerate()
        .map(|(s, e)| subnet(raw, plan, &alloc, &networks, &ports, s, &e.raw))
        .collect();
    let floating_ips = raw
        .floating_ips
        .iter()
        .enumerate()
        .filter_map(|(f, e)| {
            let (n, s) = plan.fip_subnet[f]?;
            let binding = plan.fip_binding[f];
            Some(FloatingIp {
                ip: val(&e.raw.ip),
                network: raw.networks[n].raw.name.get_ref().clone(),
                subnet: s.map(|s| raw.subnets[s].raw.name.get_ref().clone()),
                port: e.raw.port.as_ref().map(|p| p.get_ref().clone()),
                fixed_ip: binding.and_then(|(p, _)| ports[p].ip.as_ref().map(|a| a.ip)),
                router: binding.map(|(_, r)| raw.routers[r].raw.name.get_ref().clone()),
            })
        })
        .collect();
    Topology {
        physical_networks: raw
            .physical_networks
            .iter()
            .map(|(k, v)| (k.clone(), v.get_ref().clone()))
            .collect(),
        underlay,
        dns: Dns {
            upstream_resolvers: raw
                .dns
                .as_ref()
                .and_then(|d| d.raw.upstream_resolvers.as_ref())
                .map(|l| l.get_ref().iter().map(val).collect())
                .unwrap_or_default(),
        },
        networks,
        subnets,
        ports,
        routers,
        floating_ips,
    }
}

fn udp_port(raw: &RawTopology) -> u16 {
    raw.underlay
        .as_ref()
        .and_then(|u| u.raw.udp_port.as_ref())
        .and_then(|p| u16::try_from(*p.get_ref()).ok())
        .unwrap_or(DEFAULT_UDP_PORT)
}

fn network(
    raw: &RawTopology,
    plan: &Plan,
    alloc: &Allocation,
    namer: &mut Namer<'_>,
    n: usize,
    net: &crate::raw::RawNetwork,
) -> Network {
    let name = net.name.get_ref();
    let segment = segment(raw, net.segment.as_ref(), namer);
    let default_mtu = match segment {
        Segment::Vxlan { .. } => DEFAULT_VXLAN_MTU,
        _ => DEFAULT_MTU,
    };
    let mtu = net
        .mtu
        .as_ref()
        .and_then(|m| u16::try_from(*m.get_ref()).ok())
        .unwrap_or(default_mtu);
    let bridge = namer.link(LinkKind::Bridge, &format!("network/{name}"));
    let dhcp_subnets: Vec<(usize, Ipv4Addr, Ipv4Addr)> = (0..raw.subnets.len())
        .filter(|&s| plan.subnet_network[s] == Some(n))
        .filter_map(|s| alloc.dhcp.get(&s).map(|&(d, m)| (s, d, m)))
        .collect();
    let mut appliance =
        |kind: ApplianceKind, pick: fn(&(usize, Ipv4Addr, Ipv4Addr)) -> Ipv4Addr| {
            let key = format!("{}/{name}", kind.as_str());
            Appliance {
                kind,
                mac: namer.mac(&key),
                tap: namer.link(LinkKind::Tap, &key),
                ips: dhcp_subnets
                    .iter()
                    .map(|entry| subnet_addr(raw, entry.0, pick(entry)))
                    .collect(),
            }
        };
    let (dhcp, metadata) = if dhcp_subnets.is_empty() {
        (None, None)
    } else {
        (
            Some(appliance(ApplianceKind::Dhcp, |e| e.1)),
            Some(appliance(ApplianceKind::Metadata, |e| e.2)),
        )
    };
    let vxlan_gateway = match &segment {
        Segment::Vxlan { local_vtep, .. } => {
            let key = format!("vxlan/{name}");
            let underlay_key = format!("vxlan-underlay/{name}");
            // Every host of the network runs a gateway for it, and their underlay NICs
            // share one L2 segment: their MACs must differ from host to host, so they are
            // keyed by this host's VTEP address too (links are salted per state dir).
            let vtep = local_vtep.addr;
            Some(VxlanGateway {
                mac: namer.mac(&format!("{key}/{vtep}")),
                tap: namer.link(LinkKind::Tap, &key),
                underlay_mac: namer.mac(&format!("{underlay_key}/{vtep}")),
                underlay_tap: namer.link(LinkKind::Tap, &underlay_key),
            })
        }
        _ => None,
    };
    Network {
        name: name.clone(),
        external: net.external.as_ref().is_some_and(|e| *e.get_ref()),
        mtu,
        segment,
        bridge,
        dhcp,
        metadata,
        vxlan_gateway,
    }
}

fn segment(raw: &RawTopology, seg: Option<&RawSegment>, namer: &mut Namer<'_>) -> Segment {
    let Some(seg) = seg else {
        return Segment::Local;
    };
    let physnet = seg
        .physical_network
        .as_ref()
        .map(|p| p.get_ref().clone())
        .unwrap_or_default();
    let interface = raw
        .physical_networks
        .get(&physnet)
        .map(|i| i.get_ref().clone())
        .unwrap_or_default();
    match seg.kind.get_ref() {
        SegmentType::Local => Segment::Local,
        SegmentType::Flat => Segment::Flat {
            physical_network: physnet,
            interface,
        },
        SegmentType::Vlan => {
            let vlan_id = seg
                .vlan_id
                .as_ref()
                .and_then(|v| u16::try_from(*v.get_ref()).ok())
                .unwrap_or_default();
            let link = namer.link(LinkKind::Vlan, &format!("vlan/{physnet}/{vlan_id}"));
            Segment::Vlan {
                physical_network: physnet,
                interface,
                vlan_id,
                link,
            }
        }
        SegmentType::Vxlan => {
            Segment::Vxlan {
                vni: seg
                    .vni
                    .as_ref()
                    .and_then(|v| u32::try_from(*v.get_ref()).ok())
                    .unwrap_or_default(),
                local_vtep: seg.local_vtep.as_ref().map(val).unwrap_or(
                    crate::types::InterfaceAddr {
                        addr: Ipv4Addr::UNSPECIFIED,
                        prefix_len: 0,
                    },
                ),
                remote_vteps: seg
                    .remote_vteps
                    .iter()
                    .flat_map(|r| r.get_ref())
                    .map(val)
                    .collect(),
                udp_port: udp_port(raw),
                arp_responder: seg.arp_responder.as_ref().is_some_and(|a| *a.get_ref()),
            }
        }
    }
}

fn subnet_addr(raw: &RawTopology, s: usize, ip: Ipv4Addr) -> SubnetAddr {
    let sub = &raw.subnets[s].raw;
    SubnetAddr {
        subnet: sub.name.get_ref().clone(),
        ip,
        prefix_len: val(&sub.cidr).prefix_len(),
    }
}

fn routes(raw: Option<&Vec<RawRoute>>) -> Vec<Route> {
    raw.into_iter()
        .flatten()
        .map(|r| Route {
            destination: val(&r.destination),
            nexthop: val(&r.nexthop),
        })
        .collect()
}

fn routers(
    raw: &RawTopology,
    plan: &Plan,
    alloc: &Allocation,
    namer: &mut Namer<'_>,
) -> Vec<Router> {
    let mut out = Vec::new();
    for (r, e) in raw.routers.iter().enumerate() {
        let name = e.raw.name.get_ref();
        let interfaces = plan.router_interfaces[r]
            .iter()
            .filter_map(|&s| {
                let gw = val(raw.subnets[s].raw.gateway_ip.as_ref()?);
                let network = raw.networks[plan.subnet_network[s]?].raw.name.get_ref();
                let key = format!("router/{name}/{network}");
                Some(RouterNic {
                    network: network.clone(),
                    addr: subnet_addr(raw, s, gw),
                    mac: namer.mac(&key),
                    tap: namer.link(LinkKind::Tap, &key),
                })
            })
            .collect();
        let external_gateway = e.raw.external_gateway.as_ref().and_then(|gw| {
            let (n, s) = plan.router_gateway[r]?;
            let ip = gw
                .ip
                .as_ref()
                .map(val)
                .or_else(|| alloc.routers.get(&r).copied())?;
            let subnet = s.map(|s| &raw.subnets[s].raw);
            let key = format!("router/{name}/external");
            Some(ExternalGateway {
                network: raw.networks[n].raw.name.get_ref().clone(),
                subnet: subnet.map(|s| s.name.get_ref().clone()),
                ip,
                prefix_len: subnet.map_or(32, |s| val(&s.cidr).prefix_len()),
                mac: namer.mac(&key),
                tap: namer.link(LinkKind::Tap, &key),
                enable_snat: gw.enable_snat.as_ref().is_none_or(|v| *v.get_ref()),
                default_route: subnet.and_then(|s| s.gateway_ip.as_ref()).map(val),
            })
        });
        out.push(Router {
            name: name.clone(),
            interfaces,
            external_gateway,
            routes: routes(e.raw.routes.as_ref()),
            floating_ips: (0..raw.floating_ips.len())
                .filter(|&f| plan.fip_binding[f].is_some_and(|(_, router)| router == r))
                .collect(),
        });
    }
    out
}

/// `host-192-168-1-11`, Neutron's default DNS name for a port without `dns_name`.
pub fn default_hostname(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("host-{a}-{b}-{c}-{d}")
}

fn ports(
    raw: &RawTopology,
    plan: &Plan,
    alloc: &Allocation,
    namer: &mut Namer<'_>,
    report: &mut Report,
) -> Vec<Port> {
    let mut hostnames: HashMap<(usize, String), usize> = HashMap::new();
    let mut out = Vec::new();
    for (p, e) in raw.ports.iter().enumerate() {
        let port = &e.raw;
        let name = port.name.get_ref();
        let ip = plan.port_subnet[p].and_then(|s| {
            let ip = port
                .fixed_ip
                .as_ref()
                .map(val)
                .or_else(|| alloc.ports.get(&p).copied())?;
            Some(subnet_addr(raw, s, ip))
        });
        let hostname = match &port.hostname {
            Some(h) => Some(h.get_ref().clone()),
            None => ip.as_ref().map(|a| default_hostname(a.ip)),
        };
        if let (Some(h), Some(n)) = (&hostname, plan.port_network[p]) {
            let span = port
                .hostname
                .as_ref()
                .map_or_else(|| port.network.span(), |h| h.span());
            let at = report.line_of(span.start);
            if let Some(first) = hostnames.insert((n, h.to_ascii_lowercase()), at) {
                report.at(
                    &span,
                    Some(&Res::new(ResourceKind::Port, name)),
                    format!(
                        "hostname {h:?} is already used on this network by the port on line {first}"
                    ),
                );
            }
        }
        let instance = port.instance.as_ref().map(|inst| {
            let text = |v: &Option<crate::raw::S<String>>| v.as_ref().map(|v| v.get_ref().clone());
            let strings = |m: &Option<BTreeMap<String, crate::raw::S<String>>>| {
                m.iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.get_ref().clone()))
                    .collect()
            };
            Instance {
                uuid: text(&inst.uuid).unwrap_or_else(|| stable_uuid(&format!("port/{name}"))),
                name: text(&inst.name)
                    .or_else(|| hostname.clone())
                    .unwrap_or_else(|| name.clone()),
                availability_zone: text(&inst.availability_zone)
                    .unwrap_or_else(|| DEFAULT_AVAILABILITY_ZONE.to_owned()),
                project_id: text(&inst.project_id).unwrap_or_default(),
                public_keys: strings(&inst.public_keys),
                user_data: plan.user_data[p].clone(),
                meta: strings(&inst.meta),
            }
        });
        out.push(Port {
            name: name.clone(),
            network: port.network.get_ref().clone(),
            mac: port
                .mac_address
                .as_ref()
                .map(val)
                .unwrap_or_else(|| namer.mac(&format!("port/{name}"))),
            ip,
            hostname,
            tap: port.tap.as_ref().map(|t| t.get_ref().clone()),
            remote_vtep: port.remote_vtep.as_ref().map(val),
            instance,
        });
    }
    out
}

fn subnet(
    raw: &RawTopology,
    plan: &Plan,
    alloc: &Allocation,
    networks: &[Network],
    ports: &[Port],
    s: usize,
    sub: &crate::raw::RawSubnet,
) -> Subnet {
    let name = sub.name.get_ref();
    let cidr = val(&sub.cidr);
    let network = plan.subnet_network[s];
    let dns_nameservers: Vec<Ipv4Addr> = sub
        .dns_nameservers
        .iter()
        .flat_map(|d| d.get_ref())
        .map(val)
        .collect();
    let dns_domain = sub
        .dns_domain
        .as_ref()
        .map_or_else(|| DEFAULT_DNS_DOMAIN.to_owned(), |d| d.get_ref().clone());
    let lease_seconds = match sub.lease_seconds.as_ref().map(|l| *l.get_ref()) {
        None => DEFAULT_LEASE_SECONDS,
        Some(-1) => u32::MAX,
        Some(l) => u32::try_from(l).unwrap_or(DEFAULT_LEASE_SECONDS),
    };
    let host_routes = routes(sub.host_routes.as_ref());
    let dhcp = alloc
        .dhcp
        .get(&s)
        .map(|&(server_ip, metadata_ip)| DhcpConfig {
            server_ip,
            metadata_ip,
            cidr,
            router: sub.gateway_ip.as_ref().map(val),
            dns_servers: match sub.dns_nameservers.as_ref() {
                None => vec![server_ip],
                Some(_) if dns_nameservers == [Ipv4Addr::UNSPECIFIED] => Vec::new(),
                Some(_) => dns_nameservers.clone(),
            },
            domain: dns_domain.clone(),
            lease_seconds,
            mtu: network.map_or(DEFAULT_MTU, |n| networks[n].mtu),
            host_routes: host_routes.clone(),
            other_subnets: (0..raw.subnets.len())
                .filter(|&o| o != s && network.is_some() && plan.subnet_network[o] == network)
                .map(|o| val(&raw.subnets[o].raw.cidr))
                .collect(),
            reservations: ports
                .iter()
                .filter_map(|p| {
                    let addr = p.ip.as_ref().filter(|a| a.subnet == *name)?;
                    Some(Reservation {
                        port: p.name.clone(),
                        mac: p.mac,
                        ip: addr.ip,
                        hostname: p
                            .hostname
                            .clone()
                            .unwrap_or_else(|| default_hostname(addr.ip)),
                    })
                })
                .collect(),
        });
    Subnet {
        name: name.clone(),
        network: sub.network.get_ref().clone(),
        cidr,
        gateway_ip: sub.gateway_ip.as_ref().map(val),
        enable_dhcp: is_dhcp(sub),
        dns_nameservers,
        dns_domain,
        lease_seconds,
        host_routes,
        allocation_pools: plan.pools[s].clone(),
        dhcp,
    }
}
