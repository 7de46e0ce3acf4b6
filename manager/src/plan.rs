//! What the host should look like for one topology: the links to create, the appliances to
//! run with their boot configurations, and what `status` reports. A plan is plain data
//! (recorded as JSON in the state database); `up` compares the recorded plan and appliances
//! with a new one and applies the difference.

use nanovnf_schema::control::Op;
use nanovnf_schema::dhcp::{DhcpHost, DhcpRole, DhcpSubnet, Route as SchemaRoute};
use nanovnf_schema::metadata::{MetadataInstance, MetadataRole, MetadataSubnet};
use nanovnf_schema::router::{DEFAULT_CONNTRACK_CAPACITY, FloatingIp, RouterRole};
use nanovnf_schema::vxlan::{DEFAULT_AGEING_SECS, DEFAULT_FDB_CAPACITY, FdbEntry, VxlanRole};
use nanovnf_schema::{BootConfig, Ipv4Cidr as SchemaCidr, LogLevel, NicConfig, Role};
use nanovnf_topology::{self as topo, Segment, Topology, default_hostname, stable_uuid};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

pub use nanovnf_topology::ApplianceKind;

/// MTU of the underlay bridge and the VXLAN gateways' underlay NICs.
pub const UNDERLAY_MTU: u16 = 1500;

/// The image that implements `kind`.
pub fn image(kind: ApplianceKind) -> &'static str {
    kind.as_str()
}

/// True when this build has an image for `kind`.
pub fn available(kind: ApplianceKind) -> bool {
    nanovnf_build_images::IMAGES.contains(&image(kind))
}

/// Guest RAM in MiB. The metadata appliance holds every instance's user data: 16 MiB
/// plus twice its encoded configuration (decoded copy and answers), which fits a full
/// network (250 instances × 64 KiB) in 48 MiB. Forwarders (router, VXLAN gateway) keep
/// superframe-sized rings, about 8.5 MiB per NIC, plus their tables (a full conntrack
/// of 65,536 entries is about 8 MiB); DHCP needs 4.
pub fn memory_mib(kind: ApplianceKind, config_len: usize, nics: usize) -> u32 {
    let nics = u32::try_from(nics).unwrap_or(u32::MAX);
    match kind {
        ApplianceKind::Metadata => {
            let extra = config_len.saturating_mul(2).div_ceil(1 << 20);
            16u32.saturating_add(u32::try_from(extra).unwrap_or(u32::MAX))
        }
        ApplianceKind::Router => 24u32.saturating_add(nics.saturating_mul(10)),
        ApplianceKind::Vxlan => 16u32.saturating_add(nics.saturating_mul(10)),
        ApplianceKind::Dhcp => 4,
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub networks: Vec<NetworkPlan>,
    /// In creation order: bridges, then what joins them.
    pub links: Vec<LinkPlan>,
    pub appliances: Vec<AppliancePlan>,
    pub routers: Vec<RouterPlan>,
    pub ports: Vec<PortPlan>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NetworkPlan {
    pub name: String,
    pub bridge: String,
    pub mtu: u16,
    pub segment: String,
    pub external: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LinkPlan {
    pub name: String,
    pub kind: LinkKind,
    /// The network (or `underlay`) it belongs to.
    pub network: String,
    pub mtu: u16,
    /// The bridge it joins; `None` for a bridge.
    pub master: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    Bridge,
    Tap,
    Vlan {
        parent: String,
        vlan_id: u16,
    },
    /// An existing host interface (a physical network's mapping): enslaved, never created
    /// or deleted.
    Physical,
}

impl LinkKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            LinkKind::Bridge => "bridge",
            LinkKind::Tap => "tap",
            LinkKind::Vlan { .. } => "vlan",
            LinkKind::Physical => "physical",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AppliancePlan {
    /// `kind/owner`, e.g. `dhcp/demo-net`.
    pub id: String,
    pub kind: ApplianceKind,
    /// The network (dhcp, metadata, vxlan) or router it serves.
    pub owner: String,
    /// QEMU's name for it (files in the run directory): its first tap's name, unique.
    pub vm_name: String,
    pub nics: Vec<NicPlan>,
    /// `None` while this build has no image for the kind.
    pub config: Option<BootConfig>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NicPlan {
    pub network: String,
    pub tap: String,
    pub mac: [u8; 6],
    /// `a.b.c.d/len`
    pub ips: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RouterPlan {
    pub name: String,
    pub appliance: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PortPlan {
    pub name: String,
    pub network: String,
    pub mac: String,
    pub ip: Option<String>,
    pub tap: Option<String>,
}

impl Plan {
    pub fn from_topology(t: &Topology) -> Plan {
        let mut plan = Plan::default();
        if let Some(underlay) = &t.underlay {
            plan.links.push(LinkPlan {
                name: underlay.bridge.clone(),
                kind: LinkKind::Bridge,
                network: "underlay".into(),
                mtu: UNDERLAY_MTU,
                master: None,
            });
            plan.links.push(LinkPlan {
                name: underlay.interface.clone(),
                kind: LinkKind::Physical,
                network: "underlay".into(),
                mtu: UNDERLAY_MTU,
                master: Some(underlay.bridge.clone()),
            });
        }
        for n in &t.networks {
            plan.networks.push(NetworkPlan {
                name: n.name.clone(),
                bridge: n.bridge.clone(),
                mtu: n.mtu,
                segment: segment_name(&n.segment).into(),
                external: n.external,
            });
            plan.links.push(LinkPlan {
                name: n.bridge.clone(),
                kind: LinkKind::Bridge,
                network: n.name.clone(),
                mtu: n.mtu,
                master: None,
            });
            match &n.segment {
                Segment::Local | Segment::Vxlan { .. } => {}
                Segment::Flat { interface, .. } => plan.links.push(LinkPlan {
                    name: interface.clone(),
                    kind: LinkKind::Physical,
                    network: n.name.clone(),
                    mtu: n.mtu,
                    master: Some(n.bridge.clone()),
                }),
                Segment::Vlan {
                    interface,
                    vlan_id,
                    link,
                    ..
                } => plan.links.push(LinkPlan {
                    name: link.clone(),
                    kind: LinkKind::Vlan {
                        parent: interface.clone(),
                        vlan_id: *vlan_id,
                    },
                    network: n.name.clone(),
                    mtu: n.mtu,
                    master: Some(n.bridge.clone()),
                }),
            }
            for (kind, appliance) in [
                (ApplianceKind::Dhcp, &n.dhcp),
                (ApplianceKind::Metadata, &n.metadata),
            ] {
                let Some(a) = appliance else { continue };
                let nic = NicPlan {
                    network: n.name.clone(),
                    tap: a.tap.clone(),
                    mac: a.mac.octets(),
                    ips: a
                        .ips
                        .iter()
                        .map(|ip| format!("{}/{}", ip.ip, ip.prefix_len))
                        .collect(),
                };
                let config = available(kind).then(|| match kind {
                    ApplianceKind::Dhcp => dhcp_config(t, n, a),
                    _ => metadata_config(t, n, a),
                });
                plan.add_appliance(kind, &n.name, vec![nic], config, &[n]);
            }
            if let (Some(gw), Segment::Vxlan { .. }) = (&n.vxlan_gateway, &n.segment) {
                let nics = vec![
                    NicPlan {
                        network: n.name.clone(),
                        tap: gw.tap.clone(),
                        mac: gw.mac.octets(),
                        ips: Vec::new(),
                    },
                    NicPlan {
                        network: "underlay".into(),
                        tap: gw.underlay_tap.clone(),
                        mac: gw.underlay_mac.octets(),
                        ips: Vec::new(),
                    },
                ];
                let config = available(ApplianceKind::Vxlan).then(|| vxlan_config(t, n, gw));
                plan.add_appliance(ApplianceKind::Vxlan, &n.name, nics, config, &[n]);
            }
        }
        for r in &t.routers {
            let mut nics: Vec<NicPlan> = r
                .interfaces
                .iter()
                .map(|i| NicPlan {
                    network: i.network.clone(),
                    tap: i.tap.clone(),
                    mac: i.mac.octets(),
                    ips: vec![format!("{}/{}", i.addr.ip, i.addr.prefix_len)],
                })
                .collect();
            if let Some(gw) = &r.external_gateway {
                nics.push(NicPlan {
                    network: gw.network.clone(),
                    tap: gw.tap.clone(),
                    mac: gw.mac.octets(),
                    ips: vec![format!("{}/{}", gw.ip, gw.prefix_len)],
                });
            }
            let networks: Vec<&topo::Network> = nics
                .iter()
                .filter_map(|nic| t.network(&nic.network))
                .collect();
            let config = available(ApplianceKind::Router).then(|| router_config(t, r));
            let id = plan.add_appliance(ApplianceKind::Router, &r.name, nics, config, &networks);
            plan.routers.push(RouterPlan {
                name: r.name.clone(),
                appliance: id,
            });
        }
        for p in &t.ports {
            if let (Some(tap), Some(n)) = (&p.tap, t.network(&p.network)) {
                plan.links.push(LinkPlan {
                    name: tap.clone(),
                    kind: LinkKind::Tap,
                    network: n.name.clone(),
                    mtu: n.mtu,
                    master: Some(n.bridge.clone()),
                });
            }
            plan.ports.push(PortPlan {
                name: p.name.clone(),
                network: p.network.clone(),
                mac: p.mac.to_string(),
                ip: p.ip.as_ref().map(|a| a.ip.to_string()),
                tap: p.tap.clone(),
            });
        }
        plan
    }

    /// Adds an appliance, and a tap per NIC when the kind can run.
    fn add_appliance(
        &mut self,
        kind: ApplianceKind,
        owner: &str,
        nics: Vec<NicPlan>,
        config: Option<BootConfig>,
        networks: &[&topo::Network],
    ) -> String {
        let id = format!("{}/{owner}", kind.as_str());
        if config.is_some() {
            for nic in &nics {
                let network = networks.iter().find(|n| n.name == nic.network);
                let (bridge, mtu) = match network {
                    Some(n) => (n.bridge.clone(), n.mtu),
                    None => (
                        self.links
                            .iter()
                            .find(|l| l.network == "underlay" && l.kind == LinkKind::Bridge)
                            .map(|l| l.name.clone())
                            .unwrap_or_default(),
                        UNDERLAY_MTU,
                    ),
                };
                self.links.push(LinkPlan {
                    name: nic.tap.clone(),
                    kind: LinkKind::Tap,
                    network: nic.network.clone(),
                    mtu,
                    master: Some(bridge),
                });
            }
        }
        self.appliances.push(AppliancePlan {
            id: id.clone(),
            kind,
            owner: owner.to_owned(),
            vm_name: nics.first().map(|n| n.tap.clone()).unwrap_or_default(),
            nics,
            config,
        });
        id
    }

    pub fn appliance(&self, id: &str) -> Option<&AppliancePlan> {
        self.appliances.iter().find(|a| a.id == id)
    }

    /// Appliances the topology needs that this build cannot run yet.
    pub fn unavailable(&self) -> impl Iterator<Item = &AppliancePlan> {
        self.appliances.iter().filter(|a| a.config.is_none())
    }
}

fn segment_name(segment: &Segment) -> &'static str {
    match segment {
        Segment::Local => "local",
        Segment::Flat { .. } => "flat",
        Segment::Vlan { .. } => "vlan",
        Segment::Vxlan { .. } => "vxlan",
    }
}

fn cidr(addr: Ipv4Addr, prefix_len: u8) -> SchemaCidr {
    SchemaCidr::new(addr, prefix_len)
}

fn topo_cidr(c: &topo::Ipv4Cidr) -> SchemaCidr {
    cidr(c.network(), c.prefix_len())
}

fn routes(routes: &[topo::Route]) -> Vec<SchemaRoute> {
    routes
        .iter()
        .map(|r| SchemaRoute {
            destination: topo_cidr(&r.destination),
            nexthop: r.nexthop,
        })
        .collect()
}

fn nic(n: &topo::Network, a: &topo::Appliance) -> NicConfig {
    NicConfig {
        mac: a.mac.octets(),
        addresses: a.ips.iter().map(|ip| cidr(ip.ip, ip.prefix_len)).collect(),
        mtu: n.mtu,
    }
}

/// A router as Neutron's L3 agent builds it: a NIC per interface holding the subnet's
/// gateway address, then the external NIC. An external network without a subnet is
/// on-link as a whole (the gateway address gets prefix 0), as TOPOLOGY.md says.
fn router_config(t: &Topology, r: &topo::Router) -> BootConfig {
    let mtu = |network: &str| t.network(network).map_or(1500, |n| n.mtu);
    let mut nics: Vec<NicConfig> = r
        .interfaces
        .iter()
        .map(|i| NicConfig {
            mac: i.mac.octets(),
            addresses: vec![cidr(i.addr.ip, i.addr.prefix_len)],
            mtu: mtu(&i.network),
        })
        .collect();
    let mut external_nic = None;
    let (mut default_gateway, mut enable_snat) = (None, false);
    if let Some(gw) = &r.external_gateway {
        external_nic = u8::try_from(nics.len()).ok();
        let prefix_len = if gw.subnet.is_some() {
            gw.prefix_len
        } else {
            0
        };
        nics.push(NicConfig {
            mac: gw.mac.octets(),
            addresses: vec![cidr(gw.ip, prefix_len)],
            mtu: mtu(&gw.network),
        });
        default_gateway = gw.default_route;
        enable_snat = gw.enable_snat;
    }
    let floating_ips = r
        .floating_ips
        .iter()
        .filter_map(|&i| t.floating_ips.get(i))
        .filter_map(|f| {
            f.fixed_ip.map(|fixed| FloatingIp {
                floating: f.ip,
                fixed,
            })
        })
        .collect();
    BootConfig {
        generation: 0,
        name: format!("router-{}", r.name),
        log_level: LogLevel::Info,
        nics,
        role: Role::Router(RouterRole {
            external_nic,
            default_gateway,
            enable_snat,
            routes: routes(&r.routes),
            floating_ips,
            conntrack_capacity: DEFAULT_CONNTRACK_CAPACITY,
        }),
    }
}

/// The VTEP of a vxlan network: NIC 0 on the tenant bridge, NIC 1 on the underlay
/// holding `local_vtep`; ports declared on other hosts become static forwarding entries.
fn vxlan_config(t: &Topology, n: &topo::Network, gw: &topo::VxlanGateway) -> BootConfig {
    let Segment::Vxlan {
        vni,
        local_vtep,
        remote_vteps,
        udp_port,
        arp_responder,
    } = &n.segment
    else {
        unreachable!("vxlan_config is called for vxlan segments only")
    };
    // l2population: every port known to live behind another VTEP.
    let static_entries = t
        .ports
        .iter()
        .filter(|p| p.network == n.name)
        .filter_map(|p| {
            Some(FdbEntry {
                mac: p.mac.octets(),
                vtep: p.remote_vtep?,
                ip: p.ip.as_ref().map(|a| a.ip),
            })
        })
        .collect();
    BootConfig {
        generation: 0,
        name: format!("vxlan-{}", n.name),
        log_level: LogLevel::Info,
        nics: vec![
            NicConfig {
                mac: gw.mac.octets(),
                addresses: Vec::new(),
                mtu: n.mtu,
            },
            NicConfig {
                mac: gw.underlay_mac.octets(),
                addresses: vec![cidr(local_vtep.addr, local_vtep.prefix_len)],
                mtu: UNDERLAY_MTU,
            },
        ],
        role: Role::Vxlan(VxlanRole {
            vni: *vni,
            udp_port: *udp_port,
            remote_vteps: remote_vteps.clone(),
            underlay_gateway: None,
            static_entries,
            arp_responder: *arp_responder,
            ageing_secs: DEFAULT_AGEING_SECS,
            fdb_capacity: DEFAULT_FDB_CAPACITY,
            ttl: 64,
            df: false,
        }),
    }
}

fn dhcp_config(t: &Topology, n: &topo::Network, a: &topo::Appliance) -> BootConfig {
    let mut subnets = Vec::new();
    let mut hosts = Vec::new();
    for s in t.subnets_of(&n.name) {
        let Some(d) = &s.dhcp else { continue };
        subnets.push(DhcpSubnet {
            cidr: topo_cidr(&d.cidr),
            server_ip: d.server_ip,
            gateway: d.router,
            // The schema's convention: empty = the appliance itself, [0.0.0.0] = none.
            dns_servers: if d.dns_servers.is_empty() {
                vec![Ipv4Addr::UNSPECIFIED]
            } else {
                d.dns_servers.clone()
            },
            domain: d.domain.clone(),
            lease_secs: d.lease_seconds,
            host_routes: routes(&d.host_routes),
            other_subnets: d.other_subnets.iter().map(topo_cidr).collect(),
            metadata_ip: n.metadata.as_ref().map(|_| d.metadata_ip),
        });
        hosts.extend(d.reservations.iter().map(|r| DhcpHost {
            mac: r.mac.octets(),
            ip: r.ip,
            hostname: r.hostname.clone(),
        }));
    }
    BootConfig {
        generation: 0,
        name: format!("dhcp-{}", n.name),
        log_level: LogLevel::Info,
        nics: vec![nic(n, a)],
        role: Role::Dhcp(DhcpRole {
            subnets,
            hosts,
            upstream_resolvers: t.dns.upstream_resolvers.clone(),
        }),
    }
}

fn metadata_config(t: &Topology, n: &topo::Network, a: &topo::Appliance) -> BootConfig {
    let subnets: Vec<MetadataSubnet> = t
        .subnets_of(&n.name)
        .map(|s| MetadataSubnet {
            id: stable_uuid(&format!("subnet/{}", s.name)),
            cidr: topo_cidr(&s.cidr),
            gateway: s.gateway_ip,
            dns_servers: match &s.dhcp {
                Some(d) => d.dns_servers.clone(),
                None => s.dns_nameservers.clone(),
            },
            host_routes: routes(&s.host_routes),
        })
        .collect();
    let floating: BTreeMap<&str, Ipv4Addr> = t
        .floating_ips
        .iter()
        .filter_map(|f| Some((f.port.as_deref()?, f.ip)))
        .collect();
    let instances = t
        .ports
        .iter()
        .filter(|p| p.network == n.name)
        .filter_map(|p| {
            let ip = p.ip.as_ref()?;
            let subnet = t.subnet(&ip.subnet)?;
            let inst = p.instance.clone();
            Some(MetadataInstance {
                mac: p.mac.octets(),
                ip: ip.ip,
                port_id: stable_uuid(&format!("neutron-port/{}", p.name)),
                uuid: inst.as_ref().map_or_else(
                    || stable_uuid(&format!("port/{}", p.name)),
                    |i| i.uuid.clone(),
                ),
                name: inst
                    .as_ref()
                    .map_or_else(|| p.name.clone(), |i| i.name.clone()),
                hostname: p
                    .hostname
                    .clone()
                    .unwrap_or_else(|| default_hostname(ip.ip)),
                domain: subnet.dns_domain.clone(),
                availability_zone: inst.as_ref().map_or_else(
                    || topo::DEFAULT_AVAILABILITY_ZONE.to_owned(),
                    |i| i.availability_zone.clone(),
                ),
                project_id: inst
                    .as_ref()
                    .map(|i| i.project_id.clone())
                    .unwrap_or_default(),
                launch_index: 0,
                public_keys: inst
                    .as_ref()
                    .map(|i| i.public_keys.clone().into_iter().collect())
                    .unwrap_or_default(),
                meta: inst
                    .as_ref()
                    .map(|i| i.meta.clone().into_iter().collect())
                    .unwrap_or_default(),
                user_data: inst.as_ref().and_then(|i| i.user_data.clone()),
                floating_ip: floating.get(p.name.as_str()).copied(),
                mtu: n.mtu,
            })
        })
        .collect();
    BootConfig {
        generation: 0,
        name: format!("metadata-{}", n.name),
        log_level: LogLevel::Info,
        nics: vec![nic(n, a)],
        role: Role::Metadata(MetadataRole {
            network_id: stable_uuid(&format!("network/{}", n.name)),
            subnets,
            instances,
            // The manager adds what it kept when it boots the appliance (apply.rs).
            passwords: Vec::new(),
        }),
    }
}

/// The part of a configuration that only a reboot can change, as a string that is equal
/// exactly when that part is: the encoded config with its live items (DHCP hosts, metadata
/// instances), the passwords given back at boot and the generation left out.
pub fn shape(config: &BootConfig) -> String {
    let mut bare = config.clone();
    bare.generation = 0;
    match &mut bare.role {
        Role::Dhcp(role) => role.hosts.clear(),
        Role::Metadata(role) => {
            role.instances.clear();
            role.passwords.clear();
        }
        Role::Router(role) => role.floating_ips.clear(),
        Role::Vxlan(role) => {
            role.remote_vteps.clear();
            role.static_entries.clear();
        }
        Role::Ping | Role::Wire => {}
    }
    nanovnf_schema::encode(&bare)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The control-channel operations that turn a running appliance holding `old` into one
/// holding `new`, when only live items differ (same [`shape`]); removals first, so an
/// address can move from one MAC to another.
pub fn live_changes(old: &BootConfig, new: &BootConfig) -> Vec<Op> {
    let mut ops = Vec::new();
    match (&old.role, &new.role) {
        (Role::Dhcp(o), Role::Dhcp(n)) => {
            let old: BTreeMap<[u8; 6], &DhcpHost> = o.hosts.iter().map(|h| (h.mac, h)).collect();
            let new: BTreeMap<[u8; 6], &DhcpHost> = n.hosts.iter().map(|h| (h.mac, h)).collect();
            for (mac, host) in &old {
                if new.get(mac).is_none_or(|h| h.ip != host.ip) {
                    ops.push(Op::DhcpRemove { mac: *mac });
                }
            }
            for (mac, host) in &new {
                if old.get(mac) != Some(host) {
                    ops.push(Op::DhcpUpsert((*host).clone()));
                }
            }
        }
        (Role::Metadata(o), Role::Metadata(n)) => {
            let old: BTreeMap<[u8; 6], &MetadataInstance> =
                o.instances.iter().map(|i| (i.mac, i)).collect();
            let new: BTreeMap<[u8; 6], &MetadataInstance> =
                n.instances.iter().map(|i| (i.mac, i)).collect();
            for mac in old.keys() {
                if !new.contains_key(mac) {
                    ops.push(Op::MetadataRemove { mac: *mac });
                }
            }
            for (mac, instance) in &new {
                if old.get(mac) != Some(instance) {
                    ops.push(Op::MetadataUpsert(Box::new((*instance).clone())));
                }
            }
        }
        (Role::Router(o), Role::Router(n)) => {
            let old: BTreeMap<Ipv4Addr, Ipv4Addr> = o
                .floating_ips
                .iter()
                .map(|f| (f.floating, f.fixed))
                .collect();
            let new: BTreeMap<Ipv4Addr, Ipv4Addr> = n
                .floating_ips
                .iter()
                .map(|f| (f.floating, f.fixed))
                .collect();
            for floating in old.keys() {
                if !new.contains_key(floating) {
                    ops.push(Op::FloatingIpRemove {
                        floating: *floating,
                    });
                }
            }
            for (floating, fixed) in &new {
                if old.get(floating) != Some(fixed) {
                    ops.push(Op::FloatingIpUpsert(FloatingIp {
                        floating: *floating,
                        fixed: *fixed,
                    }));
                }
            }
        }
        (Role::Vxlan(o), Role::Vxlan(n)) => {
            if o.remote_vteps != n.remote_vteps {
                ops.push(Op::VxlanRemotes(n.remote_vteps.clone()));
            }
            let old: BTreeMap<[u8; 6], &FdbEntry> =
                o.static_entries.iter().map(|e| (e.mac, e)).collect();
            let new: BTreeMap<[u8; 6], &FdbEntry> =
                n.static_entries.iter().map(|e| (e.mac, e)).collect();
            for mac in old.keys() {
                if !new.contains_key(mac) {
                    ops.push(Op::VxlanStaticRemove { mac: *mac });
                }
            }
            for (mac, entry) in &new {
                if old.get(mac) != Some(entry) {
                    ops.push(Op::VxlanStaticUpsert(**entry));
                }
            }
        }
        _ => {}
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r##"
[[network]]
name = "net1"

[[subnet]]
name = "sub1"
network = "net1"
cidr = "192.168.1.0/24"
gateway_ip = "192.168.1.1"

[[port]]
name = "vm1"
network = "net1"
mac_address = "fa:16:3e:00:00:11"
fixed_ip = "192.168.1.11"
tap = "tap-vm1"

[port.instance]
name = "vm1"
user_data = "#cloud-config\n"
"##;

    fn plan(text: &str) -> Plan {
        let t = nanovnf_topology::parse(text, "t.toml", std::path::Path::new("."), "salt")
            .unwrap_or_else(|e| panic!("{e}"));
        Plan::from_topology(&t)
    }

    fn dhcp(plan: &Plan) -> &BootConfig {
        plan.appliance("dhcp/net1")
            .unwrap()
            .config
            .as_ref()
            .unwrap()
    }

    #[test]
    fn a_dhcp_network_gets_a_bridge_taps_and_appliances() {
        let p = plan(FILE);
        assert_eq!(p.networks.len(), 1);
        let kinds: Vec<_> = p.appliances.iter().map(|a| a.kind).collect();
        assert_eq!(kinds, [ApplianceKind::Dhcp, ApplianceKind::Metadata]);
        assert_eq!(p.links[0].kind, LinkKind::Bridge);
        let taps: Vec<&str> = p
            .links
            .iter()
            .filter(|l| l.kind == LinkKind::Tap)
            .map(|l| l.name.as_str())
            .collect();
        assert!(taps.contains(&"tap-vm1"), "{taps:?}");
        assert!(p.links.iter().all(|l| l.name.len() <= 15));
        let Role::Dhcp(role) = &dhcp(&p).role else {
            panic!()
        };
        assert_eq!(role.hosts.len(), 1);
        assert_eq!(role.hosts[0].ip, Ipv4Addr::new(192, 168, 1, 11));
        assert_eq!(role.subnets[0].gateway, Some(Ipv4Addr::new(192, 168, 1, 1)));
        assert!(role.subnets[0].metadata_ip.is_some());
    }

    #[test]
    fn a_new_port_is_a_live_change_and_a_new_subnet_is_not() {
        let old = plan(FILE);
        let added = format!(
            "{FILE}\n[[port]]\nname = \"vm2\"\nnetwork = \"net1\"\nmac_address = \"fa:16:3e:00:00:12\"\n"
        );
        let new = plan(&added);
        assert_eq!(shape(dhcp(&old)), shape(dhcp(&new)));
        let ops = live_changes(dhcp(&old), dhcp(&new));
        assert!(
            matches!(&ops[..], [Op::DhcpUpsert(h)] if h.mac == [0xfa, 0x16, 0x3e, 0, 0, 0x12]),
            "{ops:?}"
        );
        let back = live_changes(dhcp(&new), dhcp(&old));
        assert!(matches!(&back[..], [Op::DhcpRemove { .. }]), "{back:?}");

        let resubnetted = FILE.replace("192.168.1.", "192.168.2.");
        assert_ne!(shape(dhcp(&old)), shape(dhcp(&plan(&resubnetted))));
    }

    #[test]
    fn passwords_given_back_at_boot_are_neither_shape_nor_a_live_change() {
        let p = plan(FILE);
        let planned = p.appliance("metadata/net1").and_then(|a| a.config.as_ref());
        let planned = planned.expect("a metadata config");
        let mut booted = planned.clone();
        let Role::Metadata(role) = &mut booted.role else {
            panic!()
        };
        assert!(role.passwords.is_empty(), "the plan has none");
        let kept = nanovnf_schema::metadata::InstancePassword {
            mac: role.instances[0].mac,
            uuid: role.instances[0].uuid.clone(),
            password: b"c2VjcmV0".to_vec(),
        };
        role.passwords.push(kept);
        // The appliance that was given a password back is the one the plan wants.
        assert_eq!(shape(&booted), shape(planned));
        assert!(live_changes(&booted, planned).is_empty());
    }

    #[test]
    fn a_moved_address_is_removed_before_it_is_given_again() {
        let old = plan(FILE);
        let moved = plan(&FILE.replace("fa:16:3e:00:00:11", "fa:16:3e:00:00:99"));
        let ops = live_changes(dhcp(&old), dhcp(&moved));
        assert!(
            matches!(&ops[..], [Op::DhcpRemove { .. }, Op::DhcpUpsert(_)]),
            "{ops:?}"
        );
    }

    #[test]
    fn a_router_takes_each_gateway_then_the_external_nic_and_its_floating_ips() {
        let p = plan(&format!(
            "{FILE}
[[network]]
name = \"ext\"
external = true

[[router]]
name = \"r1\"
interfaces = [\"sub1\"]
external_gateway = {{ network = \"ext\", ip = \"203.0.113.101\" }}

[[floating_ip]]
ip = \"203.0.113.102\"
network = \"ext\"
port = \"vm1\"
"
        ));
        assert_eq!(p.unavailable().count(), 0, "every kind has an image now");
        assert_eq!(p.routers[0].appliance, "router/r1");
        let config = p.appliance("router/r1").unwrap().config.as_ref().unwrap();
        let Role::Router(role) = &config.role else {
            panic!("{config:?}")
        };
        let addrs: Vec<String> = config
            .nics
            .iter()
            .map(|n| n.addresses[0].to_string())
            .collect();
        // No external subnet: the external network is on-link as a whole.
        assert_eq!(addrs, ["192.168.1.1/24", "203.0.113.101/0"]);
        assert_eq!(role.external_nic, Some(1));
        assert!(role.enable_snat);
        assert_eq!(role.default_gateway, None);
        assert_eq!(
            role.floating_ips,
            [FloatingIp {
                floating: "203.0.113.102".parse().unwrap(),
                fixed: "192.168.1.11".parse().unwrap(),
            }]
        );
        // Re-pointing is a live change, not a reboot.
        let mut moved = config.clone();
        if let Role::Router(r) = &mut moved.role {
            r.floating_ips.clear();
        }
        assert_eq!(shape(config), shape(&moved));
        assert_eq!(
            live_changes(config, &moved),
            [Op::FloatingIpRemove {
                floating: "203.0.113.102".parse().unwrap()
            }]
        );
    }
}
